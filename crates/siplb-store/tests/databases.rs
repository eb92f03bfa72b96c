//! The store against real databases: a SQLite file in the temp directory, and the MariaDB
//! (or MySQL) and PostgreSQL servers named by `SIPLB_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`) and `SIPLB_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`).
//!
//! A server that cannot be reached fails its tests; `SIPLB_SKIP_DB_TESTS=1` (or `mysql`,
//! `postgres`) reports those tests skipped instead (SQLite always runs). Every test works on its own
//! table, dropped at the end, so the tests run in parallel and can be repeated. They leave
//! OpenSIPS' shared `version` table in place (without their rows) once it exists.
//!
//! Every scenario runs on each backend: `cargo test -p siplb-store -- mysql` runs one.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use siplb_balance::DestinationRow;
use siplb_store::{
    Backend, CellFault, CellProblem, DialogKey, DialogRecord, DialogWriter, RetryPolicy,
    RowProblem, Store, StoreError, TableName, connect_with_retry, example_rows,
};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, AssertSqlSafe, Row};
use tokio::runtime::Handle;

// ---------------------------------------------------------------------------------------
// OpenSIPS' own scripts (scripts/<db>/load_balancer-create.sql, schema version 3, and
// standard-create.sql for `version`), verbatim but for the table name, which is substituted
// for `load_balancer`. `version` gets IF NOT EXISTS because all tests share it.

const OPENSIPS_MYSQL: &str =
    "INSERT INTO version (table_name, table_version) values ('load_balancer','3');
CREATE TABLE load_balancer (
    id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    group_id INT(11) UNSIGNED DEFAULT 0 NOT NULL,
    dst_uri CHAR(128) NOT NULL,
    resources CHAR(255) NOT NULL,
    probe_mode INT(11) UNSIGNED DEFAULT 0 NOT NULL,
    attrs CHAR(255) DEFAULT NULL,
    description CHAR(128) DEFAULT NULL
) ENGINE=InnoDB;
CREATE INDEX dsturi_idx ON load_balancer (dst_uri);";

const OPENSIPS_MYSQL_VERSION: &str = "CREATE TABLE IF NOT EXISTS version (
    table_name CHAR(32) NOT NULL,
    table_version INT UNSIGNED DEFAULT 0 NOT NULL,
    CONSTRAINT t_name_idx UNIQUE (table_name)
) ENGINE=InnoDB";

const OPENSIPS_POSTGRES: &str =
    "INSERT INTO version (table_name, table_version) values ('load_balancer','3');
CREATE TABLE load_balancer (
    id SERIAL PRIMARY KEY NOT NULL,
    group_id INTEGER DEFAULT 0 NOT NULL,
    dst_uri VARCHAR(128) NOT NULL,
    resources VARCHAR(255) NOT NULL,
    probe_mode INTEGER DEFAULT 0 NOT NULL,
    attrs VARCHAR(255) DEFAULT NULL,
    description VARCHAR(128) DEFAULT NULL
);
ALTER SEQUENCE load_balancer_id_seq MAXVALUE 2147483647 CYCLE;
CREATE INDEX load_balancer_dsturi_idx ON load_balancer (dst_uri);";

const OPENSIPS_POSTGRES_VERSION: &str = "CREATE TABLE IF NOT EXISTS version (
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_t_name_idx UNIQUE (table_name)
)";

const OPENSIPS_SQLITE: &str =
    "INSERT INTO version (table_name, table_version) values ('load_balancer','3');
CREATE TABLE load_balancer (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    group_id INTEGER DEFAULT 0 NOT NULL,
    dst_uri CHAR(128) NOT NULL,
    resources CHAR(255) NOT NULL,
    probe_mode INTEGER DEFAULT 0 NOT NULL,
    attrs CHAR(255) DEFAULT NULL,
    description CHAR(128) DEFAULT NULL
);
CREATE INDEX load_balancer_dsturi_idx  ON load_balancer (dst_uri);";

const OPENSIPS_SQLITE_VERSION: &str = "CREATE TABLE IF NOT EXISTS version (
    table_name CHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_t_name_idx  UNIQUE (table_name)
)";

// ---------------------------------------------------------------------------------------
// Harness

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test, concurrent or earlier, uses: pid, a per-process counter, and the
/// clock in case a pid comes back while a failed run's table is still there.
fn unique_table() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
        % 1_000_000;
    format!("lbt_{}_{n}_{micros}", std::process::id())
}

/// One test's database and table, plus a separate admin connection for setting up and
/// inspecting behind the store's back.
struct Db {
    backend: Backend,
    url: String,
    table: String,
    admin: AnyPool,
    sqlite_file: Option<PathBuf>,
}

impl Db {
    async fn sqlite() -> Self {
        sqlx::any::install_default_drivers();
        let table = unique_table();
        let path = std::env::temp_dir().join(format!("siplb-store-{table}.db"));
        assert!(!path.exists());
        let url = format!("sqlite://{}", path.display());
        // The store must create the file by itself.
        let store = Store::connect(&url, &table).await.unwrap();
        assert!(path.exists(), "sqlite:// did not create {}", path.display());
        store.close().await;
        let admin = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        Self {
            backend: Backend::Sqlite,
            url,
            table,
            admin,
            sqlite_file: Some(path),
        }
    }

    async fn mysql() -> Option<Self> {
        Self::server(
            Backend::MySql,
            "SIPLB_TEST_MYSQL_URL",
            "mysql://root@127.0.0.1:3306/test",
        )
        .await
    }

    async fn postgres() -> Option<Self> {
        Self::server(
            Backend::Postgres,
            "SIPLB_TEST_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/test",
        )
        .await
    }

    async fn server(backend: Backend, var: &str, default: &str) -> Option<Self> {
        let server = siplb_testkit::db_server_of(var);
        if siplb_testkit::db_server_skipped(server) {
            siplb_testkit::skip(&format!(
                "SIPLB_SKIP_DB_TESTS: no {server} server to test against"
            ));
            return None;
        }
        sqlx::any::install_default_drivers();
        let url = std::env::var(var).unwrap_or_else(|_| default.to_owned());
        let admin = match AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
        {
            Ok(pool) => pool,
            Err(err) => panic!(
                "cannot reach the {backend} test server at {url} ({var}): {err}; start it, \
                 point {var} at one, or set SIPLB_SKIP_DB_TESTS={server}"
            ),
        };
        Some(Self {
            backend,
            url,
            table: unique_table(),
            admin,
            sqlite_file: None,
        })
    }

    fn t(&self) -> &str {
        &self.table
    }

    async fn store(&self) -> Store {
        Store::connect(&self.url, &self.table).await.unwrap()
    }

    async fn exec(&self, sql: &str) {
        if let Err(err) = sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&self.admin)
            .await
        {
            panic!("{sql}: {err}");
        }
    }

    async fn strings(&self, sql: &str) -> Vec<String> {
        sqlx::query(AssertSqlSafe(sql.to_owned()))
            .fetch_all(&self.admin)
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"))
            .iter()
            .map(|row| row.try_get::<String, _>(0).unwrap())
            .collect()
    }

    async fn int(&self, sql: &str) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.admin)
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"))
    }

    /// Creates `table` with OpenSIPS' own script, version row included.
    async fn create_opensips_table(&self, table: &str) {
        let (script, version) = match self.backend {
            Backend::Sqlite => (OPENSIPS_SQLITE, OPENSIPS_SQLITE_VERSION),
            Backend::MySql => (OPENSIPS_MYSQL, OPENSIPS_MYSQL_VERSION),
            Backend::Postgres => (OPENSIPS_POSTGRES, OPENSIPS_POSTGRES_VERSION),
        };
        // Two tests creating `version` at once can collide on PostgreSQL; either way the
        // table is there afterwards, which the INSERT below checks.
        let _ = sqlx::raw_sql(version).execute(&self.admin).await;
        for statement in script.replace("load_balancer", table).split(";\n") {
            self.exec(statement.trim().trim_end_matches(';')).await;
        }
    }

    /// `(rows, value)` of the table's entries in `version`.
    async fn version_rows(&self, table: &str) -> (i64, i64) {
        let count = self
            .int(&format!(
                "SELECT COUNT(*) FROM version WHERE table_name = '{table}'"
            ))
            .await;
        // MySQL widens MAX of an unsigned column to DECIMAL, which the Any driver lacks.
        let signed = match self.backend {
            Backend::MySql => "SIGNED",
            Backend::Sqlite | Backend::Postgres => "BIGINT",
        };
        let value = self
            .int(&format!(
                "SELECT CAST(COALESCE(MAX(table_version), 0) AS {signed}) \
                 FROM version WHERE table_name = '{table}'"
            ))
            .await;
        (count, value)
    }

    /// Columns, indexes and id generation of `table`, in a form comparable across tables
    /// (`table` itself replaced by `T`).
    async fn describe(&self, table: &str) -> Vec<String> {
        let queries = match self.backend {
            Backend::Sqlite => vec![
                format!(
                    "SELECT name || ' ' || type || ' notnull=' || \"notnull\" || ' default=' \
                     || COALESCE(dflt_value, '-') || ' pk=' || pk \
                     FROM pragma_table_info('{table}') ORDER BY cid"
                ),
                format!(
                    "SELECT 'index ' || name FROM sqlite_master \
                     WHERE type = 'index' AND tbl_name = '{table}' ORDER BY name"
                ),
                format!(
                    "SELECT 'autoincrement ' || (instr(sql, 'AUTOINCREMENT') > 0) \
                     FROM sqlite_master WHERE type = 'table' AND name = '{table}'"
                ),
            ],
            Backend::MySql => vec![
                format!(
                    "SELECT CAST(CONCAT_WS(' ', column_name, column_type, is_nullable, \
                     IFNULL(column_default, '-'), column_key, extra) AS CHAR) \
                     FROM information_schema.columns \
                     WHERE table_schema = DATABASE() AND table_name = '{table}' \
                     ORDER BY ordinal_position"
                ),
                format!(
                    "SELECT CAST(CONCAT_WS(' ', 'index', index_name, column_name, non_unique) AS CHAR) \
                     FROM information_schema.statistics \
                     WHERE table_schema = DATABASE() AND table_name = '{table}' \
                     ORDER BY index_name, seq_in_index"
                ),
                format!(
                    "SELECT CAST(CONCAT_WS(' ', 'engine', engine) AS CHAR) \
                     FROM information_schema.tables \
                     WHERE table_schema = DATABASE() AND table_name = '{table}'"
                ),
            ],
            Backend::Postgres => vec![
                format!(
                    "SELECT column_name || ' ' || data_type || ' ' \
                     || COALESCE(character_maximum_length::text, '-') || ' ' || is_nullable \
                     || ' ' || COALESCE(column_default, '-') \
                     FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = '{table}' \
                     ORDER BY ordinal_position"
                ),
                format!(
                    "SELECT indexdef FROM pg_indexes \
                     WHERE schemaname = current_schema() AND tablename = '{table}' \
                     ORDER BY indexname"
                ),
                format!(
                    "SELECT 'sequence max=' || seqmax::text || ' cycle=' || seqcycle::text \
                     FROM pg_sequence WHERE seqrelid = '{table}_id_seq'::regclass"
                ),
            ],
        };
        let mut out = Vec::new();
        for query in queries {
            out.extend(
                self.strings(&query)
                    .await
                    .into_iter()
                    .map(|s| s.replace(table, "T")),
            );
        }
        out
    }
}

/// Drops the test's tables and version rows even when the test failed. That runs on a fresh
/// connection in a thread of its own: the test's runtime is unwinding or finishing and
/// cannot be blocked on.
impl Drop for Db {
    fn drop(&mut self) {
        let url = self.url.clone();
        let tables = [self.table.clone(), format!("{}_ref", self.table)];
        let sqlite_file = self.sqlite_file.take();
        let cleaner = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let Ok(pool) = AnyPoolOptions::new().max_connections(1).connect(&url).await else {
                    return;
                };
                for table in &tables {
                    // Ignored: the table or `version` may never have been created.
                    let _ = sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
                        .execute(&pool)
                        .await;
                    let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                        "DELETE FROM version WHERE table_name = '{table}'"
                    )))
                    .execute(&pool)
                    .await;
                }
                pool.close().await;
            });
            if let Some(path) = sqlite_file {
                for suffix in ["", "-journal", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
        });
        let _ = cleaner.join();
    }
}

/// Runs a scenario on SQLite, MySQL/MariaDB and PostgreSQL, as three tests named after the
/// backend inside a module named after the scenario.
macro_rules! on_every_backend {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test]
            async fn sqlite() {
                let db = super::Db::sqlite().await;
                super::$scenario(&db).await;
            }

            #[tokio::test]
            async fn mysql() {
                let Some(db) = super::Db::mysql().await else { return };
                super::$scenario(&db).await;
            }

            #[tokio::test]
            async fn postgres() {
                let Some(db) = super::Db::postgres().await else { return };
                super::$scenario(&db).await;
            }
        }
    )*};
}

on_every_backend!(
    init_creates_the_opensips_schema_once,
    a_table_made_by_opensips_loads_unchanged,
    load_follows_inserts_updates_and_deletes_in_id_order,
    bad_values_are_reported_by_id_while_good_rows_load,
    bad_values_in_an_opensips_table,
    an_unreadable_table_is_an_error,
    examples_are_inserted_once_into_an_empty_table,
    dialogs_init_creates_the_table_once,
    dialogs_expire_on_load,
    dialogs_undecodable_rows_are_reported,
);

/// Runs a scenario that writes dialogs on every backend, once through the store's own
/// [`Store::save_dialogs`] and once through the [`DialogWriter`] siplb's persistence
/// thread uses (on SQLite, a connection of its own), so both keep the same contract.
macro_rules! on_every_backend_both_ways {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::Via;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = super::Db::sqlite().await;
                super::$scenario(&db, Via::Store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_writer() {
                let db = super::Db::sqlite().await;
                super::$scenario(&db, Via::Writer).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() {
                let Some(db) = super::Db::mysql().await else { return };
                super::$scenario(&db, Via::Store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql_writer() {
                let Some(db) = super::Db::mysql().await else { return };
                super::$scenario(&db, Via::Writer).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = super::Db::postgres().await else { return };
                super::$scenario(&db, Via::Store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_writer() {
                let Some(db) = super::Db::postgres().await else { return };
                super::$scenario(&db, Via::Writer).await;
            }
        }
    )*};
}

on_every_backend_both_ways!(
    dialogs_round_trip_and_replace_by_key,
    dialogs_batch_applies_upserts_then_deletes,
    dialogs_thousand_row_batches,
    dialogs_batch_is_one_transaction,
    dialogs_small_failed_batch_stores_nothing_and_the_next_lands,
    dialogs_that_do_not_fit_fail_the_batch_before_sending,
);

fn row(
    id: u32,
    group_id: u32,
    uri: &str,
    resources: &str,
    probe_mode: i32,
    attrs: Option<&str>,
    description: Option<&str>,
) -> DestinationRow {
    let mut row = DestinationRow::new(id, group_id, uri, resources);
    row.probe_mode = probe_mode;
    row.attrs = attrs.map(str::to_owned);
    row.description = description.map(str::to_owned);
    row
}

fn ids(rows: &[DestinationRow]) -> Vec<u32> {
    rows.iter().map(|r| r.id).collect()
}

fn cell(column: &'static str, fault: CellFault) -> CellProblem {
    CellProblem { column, fault }
}

fn out_of_range(value: i64, min: i64, max: i64) -> CellFault {
    CellFault::OutOfRange { value, min, max }
}

const U32_MAX: i64 = u32::MAX as i64;
const I32_MIN: i64 = i32::MIN as i64;
const I32_MAX: i64 = i32::MAX as i64;

// ---------------------------------------------------------------------------------------
// Scenarios

/// `init` creates the table with the very columns, types, defaults, index and id sequence
/// that OpenSIPS' script creates, records version 3 once, and changes nothing when repeated.
async fn init_creates_the_opensips_schema_once(db: &Db) {
    let store = db.store().await;
    assert_eq!(store.backend(), db.backend);
    let first = store.init().await.unwrap();
    assert!(first.table_created);
    assert_eq!(first.examples_inserted, 0);
    assert_eq!(db.version_rows(db.t()).await, (1, 3));

    let again = store.init().await.unwrap();
    assert!(!again.table_created);
    assert_eq!(db.version_rows(db.t()).await, (1, 3));
    assert_eq!(store.load().await.unwrap(), Default::default());

    let reference = format!("{}_ref", db.t());
    db.create_opensips_table(&reference).await;
    let ours = db.describe(db.t()).await;
    assert!(ours.len() >= 8, "{ours:#?}");
    assert_eq!(ours, db.describe(&reference).await);
    store.close().await;
}

/// A table created and filled the OpenSIPS way (its script, auto-increment ids) loads as
/// is; `init` on it creates nothing and adds no second version row.
async fn a_table_made_by_opensips_loads_unchanged(db: &Db) {
    db.create_opensips_table(db.t()).await;
    db.exec(&format!(
        "INSERT INTO {} (group_id, dst_uri, resources, probe_mode, attrs, description) VALUES \
         (1, 'sip:10.0.0.1:5060', 'vm=50;pstn=32', 0, NULL, NULL), \
         (1, 'sip:10.0.0.2:5060', 'vm=100', 2, 'region=eu', 'Media server B'), \
         (2, 'sips:gw.example.com', 'pstn=64', 1, '', 'Gateway')",
        db.t()
    ))
    .await;
    let expected = vec![
        row(1, 1, "sip:10.0.0.1:5060", "vm=50;pstn=32", 0, None, None),
        row(
            2,
            1,
            "sip:10.0.0.2:5060",
            "vm=100",
            2,
            Some("region=eu"),
            Some("Media server B"),
        ),
        row(
            3,
            2,
            "sips:gw.example.com",
            "pstn=64",
            1,
            Some(""),
            Some("Gateway"),
        ),
    ];

    let store = db.store().await;
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.rows, expected);
    assert!(loaded.problems.is_empty());

    assert!(!store.init().await.unwrap().table_created);
    assert_eq!(db.version_rows(db.t()).await, (1, 3));
    assert_eq!(store.load().await.unwrap().rows, expected);
    store.close().await;
}

/// Every load reads the table as it is now, whatever changed in between, in id order
/// whatever the insertion order.
async fn load_follows_inserts_updates_and_deletes_in_id_order(db: &Db) {
    let store = db.store().await;
    store.init().await.unwrap();
    let t = db.t();
    db.exec(&format!(
        "INSERT INTO {t} (id, group_id, dst_uri, resources, probe_mode, attrs, description) \
         VALUES (30, 2, 'sip:c@10.0.0.3', 'pstn=10', 1, 'a=1', NULL)"
    ))
    .await;
    db.exec(&format!(
        "INSERT INTO {t} (id, group_id, dst_uri, resources, probe_mode) \
         VALUES (10, 1, 'sip:a@10.0.0.1', 'vm=5', 0)"
    ))
    .await;
    db.exec(&format!(
        "INSERT INTO {t} (id, group_id, dst_uri, resources, probe_mode, description) \
         VALUES (20, 1, 'sip:b@10.0.0.2', 'vm=7; pstn=3', 2, 'second')"
    ))
    .await;
    let loaded = store.load().await.unwrap();
    assert_eq!(
        loaded.rows,
        [
            row(10, 1, "sip:a@10.0.0.1", "vm=5", 0, None, None),
            row(
                20,
                1,
                "sip:b@10.0.0.2",
                "vm=7; pstn=3",
                2,
                None,
                Some("second")
            ),
            row(30, 2, "sip:c@10.0.0.3", "pstn=10", 1, Some("a=1"), None),
        ]
    );

    db.exec(&format!(
        "UPDATE {t} SET resources = 'vm=70', attrs = 'x=y', description = NULL WHERE id = 20"
    ))
    .await;
    db.exec(&format!("UPDATE {t} SET attrs = NULL WHERE id = 30"))
        .await;
    db.exec(&format!("DELETE FROM {t} WHERE id = 10")).await;
    db.exec(&format!(
        "INSERT INTO {t} (id, group_id, dst_uri, resources) VALUES (5, 3, 'sip:d@10.0.0.4', 'vm=1')"
    ))
    .await;
    let loaded = store.load().await.unwrap();
    assert_eq!(
        loaded.rows,
        [
            row(5, 3, "sip:d@10.0.0.4", "vm=1", 0, None, None),
            row(20, 1, "sip:b@10.0.0.2", "vm=70", 2, Some("x=y"), None),
            row(30, 2, "sip:c@10.0.0.3", "pstn=10", 1, None, None),
        ]
    );
    assert!(loaded.problems.is_empty());

    db.exec(&format!("DELETE FROM {t}")).await;
    assert_eq!(store.load().await.unwrap(), Default::default());
    store.close().await;
}

/// In a table without OpenSIPS' constraints (signed, 64-bit, nullable columns), each row
/// with a NULL or out-of-range value is reported by its id, every bad column named, and the
/// other rows still load. A negative probe_mode is valid (OpenSIPS reads it as 1), and
/// resource strings pass through unchecked: the balancer checks them.
async fn bad_values_are_reported_by_id_while_good_rows_load(db: &Db) {
    let t = db.t();
    let big_int = match db.backend {
        Backend::Sqlite => "INTEGER",
        Backend::MySql | Backend::Postgres => "BIGINT",
    };
    db.exec(&format!(
        "CREATE TABLE {t} (id {big_int}, group_id {big_int}, dst_uri CHAR(128), \
         resources CHAR(255), probe_mode {big_int}, attrs CHAR(255), description CHAR(128))"
    ))
    .await;
    db.exec(&format!(
        "INSERT INTO {t} (id, group_id, dst_uri, resources, probe_mode) VALUES \
         (1, 1, 'sip:a', 'vm=1', 0), \
         (2, -3, 'sip:b', 'vm=1', 0), \
         (3, 1, NULL, 'vm=1', 0), \
         (4, 1, 'sip:d', 'vm=1', 3000000000), \
         (5, 1, 'sip:e', 'vm=1', -1), \
         (6000000000, 1, 'sip:f', 'vm=1', 0), \
         (NULL, 1, 'sip:g', NULL, 0), \
         (7, 2, 'sip:h', 'bogus', 1), \
         (8, 4294967295, 'sip:i', 'vm=1', NULL), \
         (-9, 4294967296, NULL, NULL, NULL)"
    ))
    .await;

    let store = db.store().await;
    let loaded = store.load().await.unwrap();
    assert_eq!(
        loaded.rows,
        [
            row(1, 1, "sip:a", "vm=1", 0, None, None),
            row(5, 1, "sip:e", "vm=1", -1, None, None),
            row(7, 2, "sip:h", "bogus", 1, None, None),
        ]
    );

    let by_id = |id: Option<i64>| -> Vec<CellProblem> {
        let found: Vec<&RowProblem> = loaded.problems.iter().filter(|p| p.id == id).collect();
        assert_eq!(found.len(), 1, "{id:?} in {:#?}", loaded.problems);
        found[0].cells.clone()
    };
    assert_eq!(loaded.problems.len(), 7, "{:#?}", loaded.problems);
    assert_eq!(
        by_id(Some(2)),
        [cell("group_id", out_of_range(-3, 0, U32_MAX))]
    );
    assert_eq!(by_id(Some(3)), [cell("dst_uri", CellFault::Null)]);
    assert_eq!(
        by_id(Some(4)),
        [cell(
            "probe_mode",
            out_of_range(3_000_000_000, I32_MIN, I32_MAX)
        )]
    );
    assert_eq!(
        by_id(Some(6_000_000_000)),
        [cell("id", out_of_range(6_000_000_000, 0, U32_MAX))]
    );
    assert_eq!(
        by_id(None),
        [
            cell("id", CellFault::Null),
            cell("resources", CellFault::Null)
        ]
    );
    assert_eq!(by_id(Some(8)), [cell("probe_mode", CellFault::Null)]);
    assert_eq!(
        by_id(Some(-9)),
        [
            cell("id", out_of_range(-9, 0, U32_MAX)),
            cell("group_id", out_of_range(4_294_967_296, 0, U32_MAX)),
            cell("dst_uri", CellFault::Null),
            cell("resources", CellFault::Null),
            cell("probe_mode", CellFault::Null),
        ]
    );
    // Positions are 1-based places in the id-ordered result.
    let problem_2 = loaded.problems.iter().find(|p| p.id == Some(2)).unwrap();
    let rank_of_2 = if db.backend == Backend::Postgres {
        // PostgreSQL sorts NULL ids last, the others first; -9 sorts before 1 everywhere.
        3
    } else {
        4
    };
    assert_eq!(problem_2.position, rank_of_2);
    assert_eq!(
        problem_2.to_string(),
        "destination 2 skipped: group_id is -3, outside 0..=4294967295"
    );
    store.close().await;
}

/// The same through OpenSIPS' own tables, where the column types let through different bad
/// values: PostgreSQL's signed INTEGER a negative group_id, MySQL's INT UNSIGNED a
/// probe_mode above i32 (which must not wrap around to -1), SQLite any value of any type.
async fn bad_values_in_an_opensips_table(db: &Db) {
    let t = db.t();
    db.create_opensips_table(t).await;
    // The largest group each schema can hold must load.
    let max_group = match db.backend {
        Backend::Postgres => 2_147_483_647,
        Backend::MySql | Backend::Sqlite => u32::MAX,
    };
    db.exec(&format!(
        "INSERT INTO {t} (id, group_id, dst_uri, resources, probe_mode) VALUES \
         (1, 1, 'sip:a', 'vm=1', 1), (2, {max_group}, 'sip:b', 'vm=1', 2147483647)"
    ))
    .await;
    let (bad_values, column) = match db.backend {
        Backend::Postgres => ("-1, 'sip:c', 'vm=1', -5", "group_id"),
        Backend::MySql => ("1, 'sip:c', 'vm=1', 4294967295", "probe_mode"),
        Backend::Sqlite => ("'abc', 'sip:c', 'vm=1', 1", "group_id"),
    };
    db.exec(&format!(
        "INSERT INTO {t} (id, group_id, dst_uri, resources, probe_mode) VALUES (3, {bad_values})"
    ))
    .await;

    let store = db.store().await;
    let loaded = store.load().await.unwrap();
    assert_eq!(ids(&loaded.rows), [1, 2]);
    assert_eq!(loaded.rows[1].group_id, max_group);
    assert_eq!(loaded.rows[1].probe_mode, i32::MAX);
    assert_eq!(loaded.problems.len(), 1, "{:#?}", loaded.problems);
    let problem = &loaded.problems[0];
    assert_eq!((problem.id, problem.position), (Some(3), 3));
    assert_eq!(problem.cells.len(), 1, "{problem}");
    assert_eq!(problem.cells[0].column, column);
    let fault = &problem.cells[0].fault;
    match db.backend {
        Backend::Postgres => assert_eq!(*fault, out_of_range(-1, 0, U32_MAX)),
        Backend::MySql => assert_eq!(
            *fault,
            out_of_range(4_294_967_295, I32_MIN, I32_MAX),
            "an INT UNSIGNED above i32 must not wrap around"
        ),
        Backend::Sqlite => {
            assert!(
                matches!(fault, CellFault::WrongType { reason } if !reason.is_empty()),
                "{fault:?}"
            );
        }
    }
    assert!(problem.to_string().starts_with("destination 3 skipped: "));
    store.close().await;
}

/// A table that is missing, or lacks schema-3 columns, cannot be loaded at all: an error
/// naming the table, so the caller keeps what it has. `init` refuses the latter too.
async fn an_unreadable_table_is_an_error(db: &Db) {
    let t = db.t();
    let store = db.store().await;
    let err = store.load().await.unwrap_err();
    assert!(matches!(err, StoreError::Query { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&format!("reading table {t}")), "{message}");
    assert!(message.contains(t), "{message}");

    // OpenSIPS' version-2 table: no probe_mode, no attrs.
    db.exec(&format!(
        "CREATE TABLE {t} (id INTEGER PRIMARY KEY, group_id INTEGER NOT NULL, \
         dst_uri CHAR(128) NOT NULL, resources CHAR(255) NOT NULL, description CHAR(128))"
    ))
    .await;
    db.exec(&format!(
        "INSERT INTO {t} (id, group_id, dst_uri, resources) VALUES (1, 1, 'sip:a', 'vm=1')"
    ))
    .await;
    let err = store.load().await.unwrap_err();
    assert!(matches!(err, StoreError::Query { .. }), "{err:?}");
    assert!(err.to_string().contains("probe_mode"), "{err}");

    let err = store.init().await.unwrap_err();
    assert!(matches!(err, StoreError::Schema { .. }), "{err:?}");
    assert!(err.to_string().contains("schema version 3"), "{err}");
    // A failed init must not claim the table is at version 3.
    assert_eq!(db.version_rows(t).await.0, 0);
    store.close().await;
}

/// The embedded default's tutorial rows go into an empty table only: never twice, never
/// next to an operator's rows, and later inserts without an id continue after them.
async fn examples_are_inserted_once_into_an_empty_table(db: &Db) {
    let t = db.t();
    let store = db.store().await;
    let first = store.init_with_examples().await.unwrap();
    assert!(first.table_created);
    assert_eq!(first.examples_inserted, 4);
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.rows, example_rows());
    assert_eq!(
        loaded.rows[0],
        row(1, 1, "sip:127.0.0.1:5071", "vm=50;pstn=32", 1, None, None)
    );

    let again = store.init_with_examples().await.unwrap();
    assert!(!again.table_created);
    assert_eq!(again.examples_inserted, 0);
    assert_eq!(store.load().await.unwrap().rows, example_rows());

    db.exec(&format!("DELETE FROM {t} WHERE id = 2")).await;
    assert_eq!(
        store.init_with_examples().await.unwrap().examples_inserted,
        0
    );
    db.exec(&format!(
        "INSERT INTO {t} (group_id, dst_uri, resources) VALUES (2, 'sip:new', 'vm=1')"
    ))
    .await;
    assert_eq!(ids(&store.load().await.unwrap().rows), [1, 3, 4, 5]);
    assert_eq!(db.version_rows(t).await, (1, 3));
    store.close().await;
}

// ---------------------------------------------------------------------------------------
// Connecting

fn fast_policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(50),
        attempt_timeout: Duration::from_secs(3),
    }
}

/// A server that refuses connections is tried exactly as the policy says, every failure is
/// reported, and the final error says that it gave up and why, without the password.
async fn unreachable(url: &str) {
    let started = Instant::now();
    let mut events = Vec::new();
    let err = connect_with_retry(url, "load_balancer", &fast_policy(4), |event| {
        events.push((event.attempt, event.max_attempts, event.retry_in));
        assert!(event.to_string().contains("127.0.0.1:1"), "{event}");
    })
    .await
    .unwrap_err();
    let ms = |n| Some(Duration::from_millis(n));
    assert_eq!(
        events,
        [(1, 4, ms(20)), (2, 4, ms(40)), (3, 4, ms(50)), (4, 4, None)]
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let StoreError::GaveUp { attempts, last, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*attempts, 4);
    assert!(matches!(**last, StoreError::Connect { .. }), "{last:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("gave up after 4 attempt(s) over "),
        "{message}"
    );
    assert!(message.contains("cannot connect to "), "{message}");
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn unreachable_mysql_fails_within_the_retry_policy() {
    unreachable("mysql://root:hunter2@127.0.0.1:1/test").await;
}

#[tokio::test]
async fn unreachable_postgres_fails_within_the_retry_policy() {
    unreachable("postgres://postgres:hunter2@127.0.0.1:1/test").await;
}

#[tokio::test]
async fn unopenable_sqlite_file_fails_within_the_retry_policy() {
    let dir = std::env::temp_dir().join(format!("siplb-store-missing-{}", unique_table()));
    let url = format!("sqlite://{}/siplb.db", dir.display());
    let mut attempts = 0;
    let err = connect_with_retry(&url, "load_balancer", &fast_policy(2), |_| attempts += 1)
        .await
        .unwrap_err();
    assert_eq!(attempts, 2);
    let message = err.to_string();
    assert!(
        message.starts_with("gave up after 2 attempt(s)"),
        "{message}"
    );
    assert!(
        message.contains("unable to open database file"),
        "{message}"
    );
    assert!(!dir.exists());
}

#[tokio::test]
async fn configuration_errors_are_not_retried() {
    let mut attempts = 0;
    let err = connect_with_retry("sqlite::memory:", "lb;drop", &fast_policy(5), |_| {
        attempts += 1;
    })
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::InvalidTableName { .. }), "{err}");
    let err = connect_with_retry(
        "oracle://u:pw@h/db",
        "load_balancer",
        &fast_policy(5),
        |_| attempts += 1,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::InvalidUrl { .. }), "{err}");
    assert!(!err.to_string().contains("pw@"), "{err}");
    let err = connect_with_retry(
        "sqlite://x.db?bogus=1",
        "load_balancer",
        &fast_policy(5),
        |_| attempts += 1,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Connect { .. }), "{err}");
    assert_eq!(
        attempts, 1,
        "a bad URL parameter is reported once, not retried"
    );
}

#[tokio::test]
async fn in_memory_sqlite_keeps_its_data_for_the_store_lifetime() {
    let store = connect_with_retry(
        "sqlite::memory:",
        "load_balancer",
        &RetryPolicy::default(),
        |e| panic!("{e}"),
    )
    .await
    .unwrap();
    assert_eq!(
        store.init_with_examples().await.unwrap().examples_inserted,
        4
    );
    // Several round trips: each would see an empty database if the connection were
    // replaced.
    for _ in 0..3 {
        assert_eq!(store.load().await.unwrap().rows, example_rows());
    }
    assert_eq!(store.url(), "sqlite::memory:");
    assert_eq!(store.table().as_str(), "load_balancer");
    store.close().await;
}

// ---------------------------------------------------------------------------------------
// A server that goes away after startup

/// A TCP relay in front of a test server, to cut and restore the connection at will.
struct Relay {
    port: u16,
    upstream: String,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(upstream: &str, port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let upstream_addr = upstream.to_owned();
        let connections = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream_addr = upstream_addr.clone();
                let relay = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream_addr).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                connections.lock().unwrap().push(relay);
            }
        });
        tasks.lock().unwrap().push(accept);
        Self {
            port,
            upstream: upstream.to_owned(),
            tasks,
        }
    }

    /// Closes the listener and every relayed connection, as a server that died would.
    async fn stop(&self) {
        let tasks: Vec<_> = self.tasks.lock().unwrap().drain(..).collect();
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// `host:port` of a URL's authority.
fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split('/').next().unwrap();
    authority.rsplit('@').next().unwrap()
}

/// After startup the server goes away: a load fails with an error (the caller keeps its
/// table) within the connect timeout instead of hanging, and once the server is back the
/// next load works without a new Store.
async fn server_going_away(db: &Db) {
    let upstream = host_port(&db.url).to_owned();
    let relay = Relay::start(&upstream, 0).await;
    let url = db
        .url
        .replacen(&upstream, &format!("127.0.0.1:{}", relay.port), 1);
    let policy = RetryPolicy {
        attempt_timeout: Duration::from_secs(1),
        ..fast_policy(3)
    };
    let store = connect_with_retry(&url, db.t(), &policy, |e| panic!("{e}"))
        .await
        .unwrap()
        .with_query_timeout(Duration::from_secs(5));
    store.init_with_examples().await.unwrap();
    assert_eq!(store.load().await.unwrap().rows, example_rows());

    relay.stop().await;
    let started = Instant::now();
    let err = store.load().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(4), "{err}");
    assert!(
        matches!(err, StoreError::Timeout { .. } | StoreError::Query { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("reading table {}", db.t())),
        "{message}"
    );
    assert!(
        message.contains(&format!("127.0.0.1:{}", relay.port)),
        "{message}"
    );

    let relay = Relay::start(&relay.upstream, relay.port).await;
    assert_eq!(store.load().await.unwrap().rows, example_rows());
    relay.stop().await;
    store.close().await;
}

#[tokio::test]
async fn mysql_going_away_fails_a_load_and_recovers() {
    if let Some(db) = Db::mysql().await {
        server_going_away(&db).await;
    }
}

#[tokio::test]
async fn postgres_going_away_fails_a_load_and_recovers() {
    if let Some(db) = Db::postgres().await {
        server_going_away(&db).await;
    }
}

// ---------------------------------------------------------------------------------------
// Dialogs

/// "Now" for the dialog scenarios: expiry is decided by the caller's clock, not the server's.
const NOW: i64 = 1_700_000_000_000;

fn dialog(call_id: &str, tag: &str, destination_id: u32, expires_ms: i64) -> DialogRecord {
    DialogRecord {
        call_id: call_id.into(),
        caller_tag: tag.into(),
        callee_tag: None,
        destination_id,
        resources: "vm;pstn".into(),
        caller: "udp:192.0.2.1:5060".into(),
        callee: "tcp:[2001:db8::1]:5060".into(),
        started_ms: expires_ms.saturating_sub(3_600_000),
        expires_ms,
    }
}

fn key(call_id: &str, tag: &str) -> DialogKey {
    DialogKey {
        call_id: call_id.into(),
        caller_tag: tag.into(),
    }
}

/// In key order as Rust sorts it: the databases' order depends on their collation.
fn sorted(mut dialogs: Vec<DialogRecord>) -> Vec<DialogRecord> {
    dialogs.sort_by(|a, b| (&a.call_id, &a.caller_tag).cmp(&(&b.call_id, &b.caller_tag)));
    dialogs
}

fn dialog_table(db: &Db) -> TableName {
    TableName::new(db.t()).unwrap()
}

/// Every live dialog, sorted; fails on any problem row.
async fn live(store: &Store, t: &TableName) -> Vec<DialogRecord> {
    let (dialogs, problems) = store.load_dialogs(t, NOW).await.unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    sorted(dialogs)
}

/// How a scenario writes dialogs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// [`Store::save_dialogs`].
    Store,
    /// A [`DialogWriter`], on a blocking thread as siplb runs it.
    Writer,
}

/// What a scenario writes dialogs with.
struct Saver {
    writer: Option<Arc<Mutex<DialogWriter>>>,
}

impl Via {
    /// The saver for table `t` of `db`; a writer gets a store of its own, as in siplb.
    async fn saver(self, db: &Db, t: &TableName) -> Saver {
        let writer = match self {
            Via::Store => None,
            Via::Writer => {
                let store = Arc::new(db.store().await);
                let writer = DialogWriter::new(store, t, Handle::current()).unwrap();
                assert_eq!(
                    writer.owns_connection(),
                    db.backend == Backend::Sqlite,
                    "{writer:?}"
                );
                Some(Arc::new(Mutex::new(writer)))
            }
        };
        Saver { writer }
    }
}

impl Saver {
    async fn save(
        &self,
        store: &Store,
        t: &TableName,
        upserts: &[DialogRecord],
        deletes: &[DialogKey],
    ) -> Result<(), StoreError> {
        let Some(writer) = &self.writer else {
            return store.save_dialogs(t, upserts, deletes).await;
        };
        let (writer, upserts, deletes) = (Arc::clone(writer), upserts.to_vec(), deletes.to_vec());
        // A batch that names each key once goes the way siplb's persistence sends its
        // batches (`save_distinct`), which must keep `save`'s contract for them.
        let mut keys = std::collections::HashSet::new();
        let distinct = upserts
            .iter()
            .map(DialogRecord::key)
            .chain(deletes.iter().cloned())
            .all(|key| keys.insert(key));
        tokio::task::spawn_blocking(move || {
            let mut writer = writer.lock().unwrap();
            if distinct {
                writer.save_distinct(&upserts, &deletes)
            } else {
                writer.save(&upserts, &deletes)
            }
        })
        .await
        .unwrap()
    }
}

/// The dialog columns without any constraint, for tables made by hand.
const LOOSE_DIALOG_COLUMNS: &str = "call_id VARCHAR(255), caller_tag VARCHAR(128), \
     callee_tag VARCHAR(128), destination_id BIGINT, resources VARCHAR(255), \
     caller VARCHAR(128), callee VARCHAR(128), started_ms BIGINT, expires_ms BIGINT";

/// `init_dialogs` creates the table with sized key columns and no index beside the key,
/// changes nothing when repeated (stored dialogs survive), uses a table an earlier version
/// made (with an expiry index) as it is, and refuses a table of another shape with an
/// error that is not worth retrying.
async fn dialogs_init_creates_the_table_once(db: &Db) {
    let store = db.store().await;
    let t = dialog_table(db);
    store.init_dialogs(&t).await.unwrap();
    store.init_dialogs(&t).await.unwrap();

    let name = db.t();
    let expiry_indexes = match db.backend {
        Backend::Sqlite => format!(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = '{name}' \
             AND sql LIKE '%(expires_ms)%'"
        ),
        Backend::MySql => format!(
            "SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() \
             AND table_name = '{name}' AND column_name = 'expires_ms' AND seq_in_index = 1"
        ),
        Backend::Postgres => format!(
            "SELECT COUNT(*) FROM pg_indexes WHERE schemaname = current_schema() \
             AND tablename = '{name}' AND indexdef LIKE '%(expires_ms)%'"
        ),
    };
    // `expires_ms` is read at start only: no index that every call would write twice.
    assert_eq!(db.int(&expiry_indexes).await, 0);
    if db.backend != Backend::Sqlite {
        let signed = if db.backend == Backend::MySql {
            "SIGNED"
        } else {
            "BIGINT"
        };
        let schema = if db.backend == Backend::MySql {
            "DATABASE()"
        } else {
            "current_schema()"
        };
        for (column, len) in [("call_id", 255), ("caller_tag", 128), ("callee_tag", 128)] {
            let sql = format!(
                "SELECT CAST(character_maximum_length AS {signed}) FROM information_schema.columns \
                 WHERE table_schema = {schema} AND table_name = '{name}' AND column_name = '{column}'"
            );
            assert_eq!(db.int(&sql).await, len, "{column}");
        }
    }

    let stored = dialog("a", "1", 1, NOW + 1000);
    store
        .save_dialogs(&t, std::slice::from_ref(&stored), &[])
        .await
        .unwrap();
    store.init_dialogs(&t).await.unwrap();
    assert_eq!(live(&store, &t).await, std::slice::from_ref(&stored));

    db.exec(&format!(
        "CREATE INDEX {name}_expires_idx ON {name} (expires_ms)"
    ))
    .await;
    store.init_dialogs(&t).await.unwrap();
    assert_eq!(
        db.int(&expiry_indexes).await,
        1,
        "an earlier version's index is kept"
    );
    let second = dialog("b", "2", 1, NOW + 2000);
    store
        .save_dialogs(&t, std::slice::from_ref(&second), &[])
        .await
        .unwrap();
    assert_eq!(live(&store, &t).await, [stored, second]);

    let other = format!("{name}_ref");
    db.exec(&format!(
        "CREATE TABLE {other} (call_id VARCHAR(255) NOT NULL, caller_tag VARCHAR(128) NOT NULL, \
         PRIMARY KEY (call_id, caller_tag))"
    ))
    .await;
    let err = store
        .init_dialogs(&TableName::new(&other).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DialogSchema { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains(&other), "{err}");
    store.close().await;
}

/// A batch of upserts reads back exactly (keys compared case- and accent-sensitively, values
/// at their full sizes and ranges), an upsert of a stored key replaces the row, deletes
/// remove (an unknown key is no error), and clear empties the table. An empty batch never
/// reaches the database: it succeeds even on a table that does not exist.
async fn dialogs_round_trip_and_replace_by_key(db: &Db, via: Via) {
    let store = db.store().await;
    let t = dialog_table(db);
    store.init_dialogs(&t).await.unwrap();
    let saver = via.saver(db, &t).await;
    let missing = TableName::new(&format!("{}_ref", db.t())).unwrap();
    store.save_dialogs(&missing, &[], &[]).await.unwrap();
    assert!(store.load_dialogs(&missing, NOW).await.is_err());

    let a = dialog(
        "a84b4c76e66710@pc33.example.com",
        "1928301774",
        1,
        NOW + 60_000,
    );
    let mut b = dialog(
        "A84B4C76E66710@pc33.example.com",
        "1928301774",
        2,
        NOW + 60_000,
    );
    b.callee_tag = Some("a6c85cf".into());
    let c = dialog("a84b4c76e66710@pc33.example.com", "1928301775", 3, NOW + 1);
    let d = dialog("á84b4c76e66710@pc33.example.com", "1928301774", 0, NOW + 2);
    let mut big = dialog(&"é".repeat(255), &"ü".repeat(128), u32::MAX, i64::MAX);
    big.callee_tag = Some("ß".repeat(128));
    big.resources = "r".repeat(255);
    big.caller = "c".repeat(128);
    big.callee = "€".repeat(128);
    big.started_ms = i64::MIN;
    let all = [a.clone(), b.clone(), c.clone(), d.clone(), big.clone()];
    saver.save(&store, &t, &all, &[]).await.unwrap();
    assert_eq!(live(&store, &t).await, sorted(all.to_vec()));

    let mut a2 = a.clone();
    a2.callee_tag = Some("314159".into());
    a2.expires_ms += 3_600_000;
    a2.destination_id = 7;
    a2.resources = "pstn".into();
    a2.callee = "udp:198.51.100.9:5080".into();
    saver
        .save(&store, &t, std::slice::from_ref(&a2), &[])
        .await
        .unwrap();
    assert_eq!(
        live(&store, &t).await,
        sorted(vec![
            a2.clone(),
            b.clone(),
            c.clone(),
            d.clone(),
            big.clone()
        ])
    );

    saver
        .save(
            &store,
            &t,
            &[],
            &[key(&b.call_id, &b.caller_tag), key("never", "stored")],
        )
        .await
        .unwrap();
    assert_eq!(live(&store, &t).await, sorted(vec![a2, c, d, big.clone()]));

    assert_eq!(store.clear_dialogs(&t).await.unwrap(), 4);
    assert!(live(&store, &t).await.is_empty());
    assert_eq!(store.clear_dialogs(&t).await.unwrap(), 0);
    store.close().await;
}

/// Within one batch the last upsert of a key wins and deletes apply after upserts: a key
/// that is upserted and deleted in the same batch ends up absent, whether it was stored
/// before or not.
async fn dialogs_batch_applies_upserts_then_deletes(db: &Db, via: Via) {
    let store = db.store().await;
    let t = dialog_table(db);
    store.init_dialogs(&t).await.unwrap();
    let saver = via.saver(db, &t).await;
    let one = dialog("one", "t", 1, NOW + 10_000);
    let three = dialog("three", "t", 3, NOW + 10_000);
    saver
        .save(&store, &t, &[one.clone(), three.clone()], &[])
        .await
        .unwrap();

    let mut one_again = one.clone();
    one_again.callee_tag = Some("answered".into());
    let two_first = dialog("two", "t", 2, NOW + 10_000);
    let mut two_last = two_first.clone();
    two_last.destination_id = 22;
    let four = dialog("four", "t", 4, NOW + 10_000);
    saver
        .save(
            &store,
            &t,
            &[one_again, two_first, four, two_last.clone()],
            &[key("one", "t"), key("three", "t"), key("four", "t")],
        )
        .await
        .unwrap();
    assert_eq!(live(&store, &t).await, [two_last]);
    store.close().await;
}

/// A load returns only the dialogs that expire after `now_ms` and deletes the others: a
/// later load with an earlier clock does not bring them back.
async fn dialogs_expire_on_load(db: &Db) {
    let store = db.store().await;
    let t = dialog_table(db);
    store.init_dialogs(&t).await.unwrap();
    let past = dialog("past", "t", 1, NOW - 1);
    let edge = dialog("edge", "t", 1, NOW);
    let future = dialog("future", "t", 1, NOW + 1);
    store
        .save_dialogs(&t, &[past, edge, future.clone()], &[])
        .await
        .unwrap();
    assert_eq!(live(&store, &t).await, std::slice::from_ref(&future));
    assert_eq!(db.int(&format!("SELECT COUNT(*) FROM {}", db.t())).await, 1);
    let (earlier, _) = store.load_dialogs(&t, NOW - 1000).await.unwrap();
    assert_eq!(earlier, [future]);
    store.close().await;
}

/// 1000 new dialogs, then 1000 replacements, then 1000 deletes, each in one batch: every
/// one arrives, and each batch stays well under a second (times printed for the record;
/// the bound is loose for a loaded machine and a debug build).
async fn dialogs_thousand_row_batches(db: &Db, via: Via) {
    let store = db.store().await;
    let t = dialog_table(db);
    store.init_dialogs(&t).await.unwrap();
    let saver = via.saver(db, &t).await;
    let batch: Vec<DialogRecord> = (0..1000u32)
        .map(|i| {
            let mut d = dialog(
                &format!("{i:04}-3848276298220188511@198.51.100.7"),
                &format!("{:08x}", i.wrapping_mul(2_654_435_761)),
                i % 50,
                NOW + 60_000 + i64::from(i),
            );
            if i % 2 == 0 {
                d.callee_tag = Some(format!("as{i:06}"));
            }
            d
        })
        .collect();

    let started = Instant::now();
    saver.save(&store, &t, &batch, &[]).await.unwrap();
    let insert = started.elapsed();
    let started = Instant::now();
    let loaded = live(&store, &t).await;
    let load = started.elapsed();
    assert_eq!(loaded, sorted(batch.clone()));

    let replaced: Vec<DialogRecord> = batch
        .iter()
        .map(|d| {
            let mut d = d.clone();
            d.expires_ms += 30_000;
            d.callee_tag = Some("final".into());
            d
        })
        .collect();
    let started = Instant::now();
    saver.save(&store, &t, &replaced, &[]).await.unwrap();
    let replace = started.elapsed();
    assert_eq!(live(&store, &t).await, sorted(replaced));

    let keys: Vec<DialogKey> = batch.iter().map(DialogRecord::key).collect();
    let started = Instant::now();
    saver.save(&store, &t, &[], &keys).await.unwrap();
    let delete = started.elapsed();
    assert!(live(&store, &t).await.is_empty());

    eprintln!(
        "{}: 1000 dialogs inserted in {insert:?}, loaded in {load:?}, replaced in \
         {replace:?}, deleted in {delete:?}",
        db.backend
    );
    for (what, took) in [("insert", insert), ("replace", replace), ("delete", delete)] {
        assert!(
            took < Duration::from_secs(3),
            "{what} of 1000 took {took:?}"
        );
    }

    saver.save(&store, &t, &batch, &[]).await.unwrap();
    assert_eq!(store.clear_dialogs(&t).await.unwrap(), 1000);
    store.close().await;
}

/// A dialog table whose `expires_ms` refuses `i64::MAX`: a batch holding such a record
/// fails in the database, halfway through.
async fn create_bounded_dialog_table(db: &Db) {
    let name = db.t();
    db.exec(&format!(
        "CREATE TABLE {name} ({LOOSE_DIALOG_COLUMNS}, \
         CONSTRAINT {name}_bounded CHECK (expires_ms < 9000000000000000000), \
         PRIMARY KEY (call_id, caller_tag))"
    ))
    .await;
}

/// A batch is one transaction: when a statement fails after others succeeded (here the
/// second chunk of upserts, against a CHECK constraint of a table made by hand), nothing of
/// the batch stays, deletes included.
async fn dialogs_batch_is_one_transaction(db: &Db, via: Via) {
    let name = db.t();
    create_bounded_dialog_table(db).await;
    let store = db.store().await;
    let t = dialog_table(db);
    store.init_dialogs(&t).await.unwrap();
    let saver = via.saver(db, &t).await;
    let kept = dialog("kept", "t", 1, NOW + 10_000);
    saver
        .save(&store, &t, std::slice::from_ref(&kept), &[])
        .await
        .unwrap();

    let mut batch: Vec<DialogRecord> = (0..150)
        .map(|i| dialog(&format!("call-{i:03}"), "t", 1, NOW + 10_000))
        .collect();
    batch[120].expires_ms = i64::MAX;
    let err = saver
        .save(&store, &t, &batch, &[key("kept", "t")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Query { .. } | StoreError::Sqlite { .. }) && err.is_retryable(),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&format!("saving dialogs into {name}")),
        "{err}"
    );
    assert_eq!(live(&store, &t).await, [kept]);
    store.close().await;
}

/// A small batch (on SQLite, one command of statements) that fails halfway stores nothing,
/// and leaves no transaction open: the next batch on the same connection lands.
async fn dialogs_small_failed_batch_stores_nothing_and_the_next_lands(db: &Db, via: Via) {
    create_bounded_dialog_table(db).await;
    let store = db.store().await;
    let t = dialog_table(db);
    store.init_dialogs(&t).await.unwrap();
    let saver = via.saver(db, &t).await;
    let kept = dialog("kept", "t", 1, NOW + 10_000);
    saver
        .save(&store, &t, std::slice::from_ref(&kept), &[])
        .await
        .unwrap();
    let mut bad = dialog("bad", "t", 1, NOW + 10_000);
    bad.expires_ms = i64::MAX;
    let good = dialog("good", "t", 2, NOW + 10_000);
    let err = saver
        .save(&store, &t, &[good.clone(), bad], &[key("kept", "t")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Query { .. } | StoreError::Sqlite { .. }) && err.is_retryable(),
        "{err:?}"
    );
    assert_eq!(live(&store, &t).await, std::slice::from_ref(&kept));
    let other = dialog("other", "t", 3, NOW + 10_000);
    saver
        .save(
            &store,
            &t,
            &[good.clone(), other.clone()],
            &[key("kept", "t")],
        )
        .await
        .unwrap();
    assert_eq!(live(&store, &t).await, sorted(vec![good, other]));
    store.close().await;
}

/// A record that does not fit its columns fails the batch before anything is sent, with an
/// error that retrying cannot cure; one that is also deleted in the batch is never written,
/// so it does not count.
async fn dialogs_that_do_not_fit_fail_the_batch_before_sending(db: &Db, via: Via) {
    let store = db.store().await;
    let t = dialog_table(db);
    store.init_dialogs(&t).await.unwrap();
    let saver = via.saver(db, &t).await;
    let good = dialog("good", "t", 1, NOW + 10_000);
    let long = dialog(&"x".repeat(256), "t", 1, NOW + 10_000);
    let err = saver
        .save(&store, &t, &[good.clone(), long.clone()], &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidDialog { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(
        err.to_string()
            .contains("call_id is 256 characters long, more than 255"),
        "{err}"
    );
    assert!(live(&store, &t).await.is_empty());

    let mut nul = good.clone();
    nul.resources = "vm\0".into();
    let err = saver.save(&store, &t, &[nul], &[]).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidDialog { .. }), "{err:?}");

    saver
        .save(
            &store,
            &t,
            &[good.clone(), long],
            &[key(&"x".repeat(256), "t")],
        )
        .await
        .unwrap();
    assert_eq!(live(&store, &t).await, [good]);
    store.close().await;
}

/// Rows that a hand-edited table can hold but siplb cannot use (NULLs, a destination id
/// beyond u32, text in a number column on SQLite) are reported with their key and every bad
/// column, stay in the table, and the good rows still load.
async fn dialogs_undecodable_rows_are_reported(db: &Db) {
    let name = db.t();
    db.exec(&format!("CREATE TABLE {name} ({LOOSE_DIALOG_COLUMNS})"))
        .await;
    let store = db.store().await;
    let t = dialog_table(db);
    store.init_dialogs(&t).await.unwrap();
    let live_at = NOW + 10_000;
    db.exec(&format!(
        "INSERT INTO {name} VALUES \
         ('good', '1', NULL, 1, 'vm', 'udp:a:1', 'udp:b:2', 5, {live_at}), \
         ('big', '1', NULL, 5000000000, 'vm', 'udp:a:1', 'udp:b:2', 5, {live_at}), \
         ('neg', '1', 'x', -1, NULL, 'udp:a:1', 'udp:b:2', 5, {live_at}), \
         (NULL, '1', NULL, 1, 'vm', 'udp:a:1', 'udp:b:2', NULL, {live_at})"
    ))
    .await;
    if db.backend == Backend::Sqlite {
        db.exec(&format!(
            "INSERT INTO {name} VALUES ('text', '1', NULL, 1, 'vm', 'udp:a:1', 'udp:b:2', \
             'abc', {live_at})"
        ))
        .await;
    }

    let (dialogs, problems) = store.load_dialogs(&t, NOW).await.unwrap();
    let mut good = dialog("good", "1", 1, live_at);
    good.started_ms = 5;
    good.resources = "vm".into();
    good.caller = "udp:a:1".into();
    good.callee = "udp:b:2".into();
    assert_eq!(dialogs, [good]);
    let by_call_id = |call_id: Option<&str>| {
        let found: Vec<_> = problems
            .iter()
            .filter(|p| p.call_id.as_deref() == call_id)
            .collect();
        assert_eq!(found.len(), 1, "{call_id:?} in {problems:#?}");
        found[0].clone()
    };
    let big = by_call_id(Some("big"));
    assert_eq!(
        big.cells,
        [cell(
            "destination_id",
            out_of_range(5_000_000_000, 0, U32_MAX)
        )]
    );
    assert_eq!(
        big.to_string(),
        "dialog \"big\" (from-tag \"1\") skipped: destination_id is 5000000000, outside \
         0..=4294967295"
    );
    assert_eq!(
        by_call_id(Some("neg")).cells,
        [
            cell("destination_id", out_of_range(-1, 0, U32_MAX)),
            cell("resources", CellFault::Null)
        ]
    );
    let no_key = by_call_id(None);
    assert_eq!(no_key.caller_tag.as_deref(), Some("1"));
    assert_eq!(
        no_key.cells,
        [
            cell("call_id", CellFault::Null),
            cell("started_ms", CellFault::Null)
        ]
    );
    assert!(no_key.to_string().contains("(no usable key)"), "{no_key}");
    if db.backend == Backend::Sqlite {
        let text = by_call_id(Some("text"));
        assert_eq!(text.cells.len(), 1, "{text}");
        assert_eq!(text.cells[0].column, "started_ms");
        assert!(
            matches!(&text.cells[0].fault, CellFault::WrongType { .. }),
            "{text}"
        );
        assert_eq!(problems.len(), 4);
    } else {
        assert_eq!(problems.len(), 3);
    }
    // Skipped, not deleted.
    let rows = if db.backend == Backend::Sqlite { 5 } else { 4 };
    assert_eq!(db.int(&format!("SELECT COUNT(*) FROM {name}")).await, rows);
    store.close().await;
}

/// The server goes away after startup: saving and loading dialogs fail with retryable
/// errors instead of hanging. A server that accepts connections but never answers is cut
/// off by the store's query timeout. Once the server is back, the same Store saves again.
async fn dialogs_when_the_server_goes_away(db: &Db) {
    let upstream = host_port(&db.url).to_owned();
    let relay = Relay::start(&upstream, 0).await;
    let url = db
        .url
        .replacen(&upstream, &format!("127.0.0.1:{}", relay.port), 1);
    let policy = RetryPolicy {
        attempt_timeout: Duration::from_secs(2),
        ..fast_policy(3)
    };
    let query_timeout = Duration::from_millis(700);
    let store = connect_with_retry(&url, db.t(), &policy, |e| panic!("{e}"))
        .await
        .unwrap()
        .with_query_timeout(query_timeout);
    let t = dialog_table(db);
    store.init_dialogs(&t).await.unwrap();
    let a = dialog("a", "t", 1, NOW + 10_000);
    let b = dialog("b", "t", 2, NOW + 10_000);
    store
        .save_dialogs(&t, std::slice::from_ref(&a), &[])
        .await
        .unwrap();

    relay.stop().await;
    let started = Instant::now();
    let err = store
        .save_dialogs(&t, std::slice::from_ref(&b), &[])
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "{err}");
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        matches!(err, StoreError::Timeout { .. } | StoreError::Query { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&format!("saving dialogs into {}", db.t())),
        "{err}"
    );
    let err = store.load_dialogs(&t, NOW).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("reading dialogs from {}", db.t())),
        "{err}"
    );

    // Connections are accepted and then nothing happens.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", relay.port))
        .await
        .unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let err = store
        .save_dialogs(&t, std::slice::from_ref(&b), &[])
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, StoreError::Timeout { after, .. } if *after == query_timeout),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(took < Duration::from_secs(2), "{took:?}");
    silent.abort();
    let _ = silent.await;

    let relay = Relay::start(&relay.upstream, relay.port).await;
    store
        .save_dialogs(&t, std::slice::from_ref(&b), &[])
        .await
        .unwrap();
    assert_eq!(live(&store, &t).await, [a, b]);
    relay.stop().await;
    store.close().await;
}

#[tokio::test]
async fn mysql_going_away_fails_dialog_writes_retryably() {
    if let Some(db) = Db::mysql().await {
        dialogs_when_the_server_goes_away(&db).await;
    }
}

#[tokio::test]
async fn postgres_going_away_fails_dialog_writes_retryably() {
    if let Some(db) = Db::postgres().await {
        dialogs_when_the_server_goes_away(&db).await;
    }
}

/// siplb's writer has a connection of its own to a SQLite file, beside the store's: while
/// another connection holds the file's write lock past the query timeout, a batch fails
/// with an error worth retrying, and once the lock is gone the same batch lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_file_fails_a_writer_batch_retryably() {
    let db = Db::sqlite().await;
    let t = dialog_table(&db);
    let timeout = Duration::from_millis(300);
    let store = Arc::new(db.store().await.with_query_timeout(timeout));
    store.init_dialogs(&t).await.unwrap();
    let saver = Saver {
        writer: Some(Arc::new(Mutex::new(
            DialogWriter::new(Arc::clone(&store), &t, Handle::current()).unwrap(),
        ))),
    };
    let a = dialog("a", "t", 1, NOW + 10_000);

    let mut holder = db.admin.acquire().await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let started = Instant::now();
    let err = saver
        .save(&store, &t, std::slice::from_ref(&a), &[])
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, StoreError::Sqlite { .. }), "{err:?}");
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("database is locked"), "{err}");
    assert!(took >= timeout && took < Duration::from_secs(3), "{took:?}");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut *holder)
        .await
        .unwrap();
    drop(holder);

    saver
        .save(&store, &t, std::slice::from_ref(&a), &[])
        .await
        .unwrap();
    assert_eq!(live(&store, &t).await, [a]);
}

/// A database that lives in the store's one connection (`sqlite::memory:`), or that the
/// operator opened read-only, is written through the store's pool, not a connection of
/// the writer's own: the rows are where the store reads them, and read-only stays so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_urls_a_writer_leaves_to_the_pool() {
    let t = TableName::new(&unique_table()).unwrap();
    let memory = Arc::new(Store::connect("sqlite::memory:", "lb").await.unwrap());
    memory.init_dialogs(&t).await.unwrap();
    let writer = DialogWriter::new(Arc::clone(&memory), &t, Handle::current()).unwrap();
    assert!(!writer.owns_connection(), "{writer:?}");
    let saver = Saver {
        writer: Some(Arc::new(Mutex::new(writer))),
    };
    let a = dialog("a", "t", 1, NOW + 10_000);
    saver
        .save(&memory, &t, std::slice::from_ref(&a), &[])
        .await
        .unwrap();
    assert_eq!(live(&memory, &t).await, std::slice::from_ref(&a));

    let db = Db::sqlite().await;
    let t = dialog_table(&db);
    db.store().await.init_dialogs(&t).await.unwrap();
    let read_only = Arc::new(
        Store::connect(&format!("{}?mode=ro", db.url), db.t())
            .await
            .unwrap(),
    );
    let writer = DialogWriter::new(Arc::clone(&read_only), &t, Handle::current()).unwrap();
    assert!(!writer.owns_connection(), "{writer:?}");
    let saver = Saver {
        writer: Some(Arc::new(Mutex::new(writer))),
    };
    let err = saver
        .save(&read_only, &t, std::slice::from_ref(&a), &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("readonly"), "{err}");
    assert_eq!(db.int(&format!("SELECT COUNT(*) FROM {}", db.t())).await, 0);
}

#[tokio::test]
async fn sqlite_files_use_write_ahead_logging() {
    let db = Db::sqlite().await;
    // The mode is stored in the file: any later connection sees what the store set.
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&db.admin)
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, "wal");
}
