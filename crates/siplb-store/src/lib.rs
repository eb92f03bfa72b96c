//! siplb's destination table in a database: SQLite, MariaDB/MySQL or PostgreSQL, in exactly
//! OpenSIPS' `load_balancer` schema (version 3), so an existing OpenSIPS database works
//! unchanged (SPEC sections 1 and 5).
//!
//! The same database can also keep siplb's dialogs, the calls that hold load, in a table of
//! siplb's own, so calls survive a restart: [`Store::init_dialogs`], [`Store::save_dialogs`],
//! [`Store::load_dialogs`], [`Store::clear_dialogs`].
//!
//! One code path serves the three databases through sqlx's `Any` driver; only the SQL text
//! differs per backend (DDL, placeholders, a cast for MySQL's unsigned columns).
//!
//! ```no_run
//! # async fn run() -> Result<(), siplb_store::StoreError> {
//! use siplb_store::{RetryPolicy, connect_with_retry};
//!
//! let store = connect_with_retry("sqlite://siplb.db", "load_balancer", &RetryPolicy::default(), |e| {
//!     eprintln!("{e}");
//! })
//! .await?;
//! store.init_with_examples().await?;
//! let loaded = store.load().await?;
//! for problem in &loaded.problems {
//!     eprintln!("{problem}");
//! }
//! // loaded.rows go to siplb_balance::Balancer::reload, which checks resources and URIs.
//! # Ok(())
//! # }
//! ```

mod dialog_writer;
mod dialogs;
mod error;
mod retry;
mod rows;
mod sql;
mod table;
mod target;

use std::future::Future;
use std::time::Duration;

use siplb_balance::DestinationRow;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, ConnectOptions, Connection};

pub use dialog_writer::DialogWriter;
pub use dialogs::{
    DEFAULT_DIALOG_TABLE, DialogKey, DialogProblem, DialogRecord, MAX_ADDRESS_LEN, MAX_CALL_ID_LEN,
    MAX_RESOURCES_LEN, MAX_TAG_LEN,
};
pub use error::{CellFault, CellProblem, RowProblem, StoreError};
pub use retry::{RetryEvent, RetryPolicy, connect_with_retry};
pub use sql::SCHEMA_VERSION;
pub use table::{DEFAULT_TABLE, MAX_TABLE_NAME_LEN, TableName};
pub use target::{Backend, redact};

use target::Target;

/// Limit on establishing a connection when none is given.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Limit on one operation ([`Store::init`], [`Store::load`], ...), so a server that hangs
/// fails a reload instead of stalling it.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A pool of connections to one database, bound to one destination table.
#[derive(Debug)]
pub struct Store {
    pool: AnyPool,
    target: Target,
    table: TableName,
    query_timeout: Duration,
}

/// What [`Store::load`] read: the usable rows in id order, and the rows it had to skip.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadedTable {
    /// Rows whose columns all decoded, in `ORDER BY id` order.
    pub rows: Vec<DestinationRow>,
    /// Rows skipped for NULL, out-of-range or mistyped columns, in the same order.
    pub problems: Vec<RowProblem>,
}

/// What [`Store::init`] or [`Store::init_with_examples`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InitReport {
    /// The table did not exist and was created.
    pub table_created: bool,
    /// How many example rows were inserted (0 unless the table was empty).
    pub examples_inserted: usize,
}

/// The tutorial's four destinations, inserted by [`Store::init_with_examples`].
pub fn example_rows() -> Vec<DestinationRow> {
    [
        (1, "sip:127.0.0.1:5071", "vm=50;pstn=32"),
        (2, "sip:127.0.0.1:5072", "vm=100"),
        (3, "sip:127.0.0.1:5073", "vm=50"),
        (4, "sip:127.0.0.1:5074", "vm=10;pstn=64"),
    ]
    .into_iter()
    .map(|(id, uri, resources)| {
        let mut row = DestinationRow::new(id, 1, uri, resources);
        row.probe_mode = 1;
        row
    })
    .collect()
}

impl Store {
    /// Connects once, with [`DEFAULT_CONNECT_TIMEOUT`]. `url` is `sqlite://PATH` (the file is
    /// created if missing, unless the URL sets `mode`), `sqlite::memory:`, `mysql://`,
    /// `mariadb://`, `postgres://` or `postgresql://`. `table` must be a plain identifier
    /// (see [`TableName`]). No table is read or created yet.
    pub async fn connect(url: &str, table: &str) -> Result<Self, StoreError> {
        let table = TableName::new(table)?;
        let target = Target::parse(url)?;
        Self::connect_target(&target, &table, DEFAULT_CONNECT_TIMEOUT).await
    }

    pub(crate) async fn connect_target(
        target: &Target,
        table: &TableName,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let connect_error = |source| StoreError::Connect {
            url: target.shown.clone(),
            source,
        };
        // Installs each driver once per process; it only panics if some other code
        // installed a different driver set first, which nothing in siplb does.
        sqlx::any::install_default_drivers();
        let mut options: AnyConnectOptions = target.sqlx_url.parse().map_err(connect_error)?;
        // Statements are logged by sqlx at debug level on every reload otherwise.
        options = options.disable_statement_logging();

        // The pool retries a refused connection by itself until its acquire timeout and then
        // reports only "timed out"; one direct connection first gives the real reason.
        let probe = with_timeout(
            timeout,
            "connecting",
            target,
            AnyConnection::connect_with(&options),
        )
        .await?
        .map_err(connect_error)?;
        // Closing a healthy connection cannot fail in a way that matters here.
        let _ = probe.close().await;

        let pool_options = match target.backend {
            // One connection: SQLite serialises writers anyway, and an in-memory database
            // lives exactly as long as its connection, so that one must never be recycled.
            // Write-ahead logging: the stored calls are written several times a second,
            // and the default rollback journal created, synced and deleted a file for
            // each batch (a quarter of siplb's system calls at 100 calls/s). A commit in
            // the log survives a crash of siplb; `synchronous=NORMAL` may lose the last
            // batches on a power cut, which costs what a kill -9 does (README).
            Backend::Sqlite => AnyPoolOptions::new()
                .max_connections(1)
                .min_connections(u32::from(target.is_sqlite_memory()))
                .idle_timeout(None)
                .max_lifetime(None)
                // A local file does not go away under a connection: no ping before each
                // use (a round trip to SQLite's thread per batch of stored calls).
                .test_before_acquire(false)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        use sqlx::Executor as _;
                        // Best effort: a read-only or in-memory database keeps its mode.
                        let _ = conn.execute("PRAGMA journal_mode=WAL").await;
                        let _ = conn.execute("PRAGMA synchronous=NORMAL").await;
                        Ok(())
                    })
                }),
            // Reloads are rare and sequential: two connections leave room for an init or
            // a management write while a load runs.
            Backend::MySql | Backend::Postgres => AnyPoolOptions::new().max_connections(2),
        };
        let pool = with_timeout(
            timeout,
            "connecting",
            target,
            pool_options.acquire_timeout(timeout).connect_with(options),
        )
        .await?
        .map_err(connect_error)?;

        Ok(Self {
            pool,
            target: target.clone(),
            table: table.clone(),
            query_timeout: DEFAULT_QUERY_TIMEOUT,
        })
    }

    /// Sets the limit on each later operation (default [`DEFAULT_QUERY_TIMEOUT`]).
    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// The database kind.
    pub fn backend(&self) -> Backend {
        self.target.backend
    }

    /// The destination table.
    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// The URL, password hidden, for messages.
    pub fn url(&self) -> &str {
        &self.target.shown
    }

    /// Creates the table in OpenSIPS' schema version 3 if it does not exist, with its index,
    /// and records it in OpenSIPS' `version` table (created if missing) unless a row for it
    /// is there. An existing table is left as it is, but must have the schema-3 columns.
    /// Running it again changes nothing.
    pub async fn init(&self) -> Result<InitReport, StoreError> {
        let action = format!("creating table {}", self.table);
        self.timed(&action, self.init_inner()).await
    }

    async fn init_inner(&self) -> Result<InitReport, StoreError> {
        let backend = self.backend();
        let t = &self.table;
        let action = format!("creating table {t}");
        let query_error = |source| self.query_error(&action, source);

        // Outside the main transaction: on PostgreSQL two concurrent CREATE TABLE IF NOT
        // EXISTS can still collide, and that error would abort the transaction.
        if let Err(err) = sqlx::raw_sql(AssertSqlSafe(sql::create_version_table(backend)))
            .execute(&self.pool)
            .await
            && !created_concurrently(&err)
        {
            return Err(query_error(err));
        }

        let mut tx = self.pool.begin().await.map_err(query_error)?;
        let exists: i64 = sqlx::query_scalar(AssertSqlSafe(sql::table_exists(backend, t)))
            .fetch_one(&mut *tx)
            .await
            .map_err(query_error)?;
        // Only a table made here gets the DDL: ALTER SEQUENCE on someone else's table could
        // fail, or change it.
        let table_created = exists == 0;
        if table_created {
            for statement in sql::create_table(backend, t) {
                sqlx::raw_sql(AssertSqlSafe(statement))
                    .execute(&mut *tx)
                    .await
                    .map_err(query_error)?;
            }
        }
        sqlx::raw_sql(AssertSqlSafe(sql::check_columns(t)))
            .execute(&mut *tx)
            .await
            .map_err(|source| StoreError::Schema {
                table: t.to_string(),
                url: self.target.shown.clone(),
                source,
            })?;
        sqlx::raw_sql(AssertSqlSafe(sql::insert_version_row(backend, t)))
            .execute(&mut *tx)
            .await
            .map_err(query_error)?;
        tx.commit().await.map_err(query_error)?;
        Ok(InitReport {
            table_created,
            examples_inserted: 0,
        })
    }

    /// [`init`](Self::init), then, only if the table is empty, inserts [`example_rows`]: the
    /// embedded default configuration starts with the tutorial's destinations.
    pub async fn init_with_examples(&self) -> Result<InitReport, StoreError> {
        let mut report = self.init().await?;
        let action = format!("inserting example rows into {}", self.table);
        report.examples_inserted = self.timed(&action, self.insert_examples()).await?;
        Ok(report)
    }

    async fn insert_examples(&self) -> Result<usize, StoreError> {
        let backend = self.backend();
        let t = &self.table;
        let action = format!("inserting example rows into {t}");
        let query_error = |source| self.query_error(&action, source);

        let mut tx = self.pool.begin().await.map_err(query_error)?;
        let count: i64 = sqlx::query_scalar(AssertSqlSafe(sql::count_rows(t)))
            .fetch_one(&mut *tx)
            .await
            .map_err(query_error)?;
        if count != 0 {
            return Ok(0);
        }
        let rows = example_rows();
        for row in &rows {
            sqlx::query(AssertSqlSafe(sql::insert_row(backend, t)))
                .bind(i64::from(row.id))
                .bind(i64::from(row.group_id))
                .bind(row.dst_uri.clone())
                .bind(row.resources.clone())
                .bind(row.probe_mode)
                .bind(row.attrs.clone())
                .bind(row.description.clone())
                .execute(&mut *tx)
                .await
                .map_err(query_error)?;
        }
        if let Some(statement) = sql::advance_id_sequence(backend, t) {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
                .map_err(query_error)?;
        }
        tx.commit().await.map_err(query_error)?;
        Ok(rows.len())
    }

    /// Reads the whole table in id order. Rows with a NULL, out-of-range or mistyped value
    /// in a column that siplb needs are reported in [`LoadedTable::problems`] and the others
    /// still load. An error means nothing was read (missing table or column, server down):
    /// keep the table you have.
    ///
    /// Resource strings and URIs are not checked here; the balancer does that when it takes
    /// the rows.
    pub async fn load(&self) -> Result<LoadedTable, StoreError> {
        let action = format!("reading table {}", self.table);
        let rows = self
            .timed(&action, async {
                sqlx::query(AssertSqlSafe(sql::select_rows(self.backend(), &self.table)))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|source| self.query_error(&action, source))
            })
            .await?;
        let mut loaded = LoadedTable::default();
        for (i, row) in rows.iter().enumerate() {
            match rows::decode(row, i + 1) {
                Ok(row) => loaded.rows.push(row),
                Err(problem) => loaded.problems.push(problem),
            }
        }
        Ok(loaded)
    }

    /// Closes every connection; for SQLite this also releases the file.
    pub async fn close(self) {
        self.pool.close().await;
    }

    fn query_error(&self, action: &str, source: sqlx::Error) -> StoreError {
        match source {
            // After acquire_timeout the pool only says it timed out: name the limit.
            sqlx::Error::PoolTimedOut => StoreError::Timeout {
                action: format!("{action} (waiting for a connection)"),
                url: self.target.shown.clone(),
                after: self.pool.options().get_acquire_timeout(),
            },
            source => StoreError::Query {
                action: action.to_owned(),
                url: self.target.shown.clone(),
                source,
            },
        }
    }

    async fn timed<T>(
        &self,
        action: &str,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        with_timeout(self.query_timeout, action, &self.target, op).await?
    }
}

async fn with_timeout<F: Future>(
    limit: Duration,
    action: &str,
    target: &Target,
    op: F,
) -> Result<F::Output, StoreError> {
    tokio::time::timeout(limit, op)
        .await
        .map_err(|_| StoreError::Timeout {
            action: action.to_owned(),
            url: target.shown.clone(),
            after: limit,
        })
}

/// PostgreSQL's duplicate-table and catalog unique-violation codes, which a concurrent
/// CREATE TABLE IF NOT EXISTS of the same table can raise: the table is there either way.
fn created_concurrently(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("42P07" | "23505")))
}
