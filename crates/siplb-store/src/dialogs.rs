//! Dialogs (calls that hold load) kept in a table of their own, so that siplb can take its
//! calls back after a restart.
//!
//! The table is siplb's, not OpenSIPS': it is not recorded in OpenSIPS' `version` table.
//! Keys are compared byte for byte on every backend (MySQL's table uses `utf8mb4_bin`), as
//! SIP compares Call-IDs.

use std::collections::HashSet;

use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;

use crate::error::{CellList, CellProblem, StoreError};
use crate::rows::{in_range, int, required, text};
use crate::sql::{placeholder, push_placeholder};
use crate::table::TableName;
use crate::target::Backend;
use crate::{Store, created_concurrently};

/// siplb's default dialog table.
pub const DEFAULT_DIALOG_TABLE: &str = "siplb_dialogs";

/// The longest Call-ID that can be stored, in characters.
pub const MAX_CALL_ID_LEN: usize = 255;
/// The longest caller or callee tag that can be stored, in characters.
pub const MAX_TAG_LEN: usize = 128;
/// The longest resource list that can be stored, in characters.
pub const MAX_RESOURCES_LEN: usize = 255;
/// The longest caller or callee address that can be stored, in characters.
pub const MAX_ADDRESS_LEN: usize = 128;

/// Rows per multi-row INSERT: 9 parameters a row, 900 in all, under every backend's limit
/// (SQLite's historical 999 included).
const UPSERT_CHUNK: usize = 100;
/// Keys per DELETE: 2 parameters a key.
const DELETE_CHUNK: usize = 200;

/// The columns, in table order; the upsert binds its parameters in this order.
const COLUMNS: [&str; 9] = [
    "call_id",
    "caller_tag",
    "callee_tag",
    "destination_id",
    "resources",
    "caller",
    "callee",
    "started_ms",
    "expires_ms",
];

/// One call that holds load, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialogRecord {
    /// The Call-ID, up to [`MAX_CALL_ID_LEN`] characters.
    pub call_id: String,
    /// The caller's (From) tag, up to [`MAX_TAG_LEN`] characters.
    pub caller_tag: String,
    /// The callee's (To) tag once known, up to [`MAX_TAG_LEN`] characters.
    pub callee_tag: Option<String>,
    /// The destination the call went to.
    pub destination_id: u32,
    /// The requested resource list, e.g. `vm;pstn`, up to [`MAX_RESOURCES_LEN`] characters.
    pub resources: String,
    /// Where the caller is, e.g. `udp:192.0.2.1:5060` or `tcp:[::1]:5060`, up to
    /// [`MAX_ADDRESS_LEN`] characters.
    pub caller: String,
    /// Where the destination is, in the same form.
    pub callee: String,
    /// When the call started, Unix epoch milliseconds.
    pub started_ms: i64,
    /// When the dialog times out, Unix epoch milliseconds.
    pub expires_ms: i64,
}

/// What identifies a stored dialog: its Call-ID and caller tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DialogKey {
    /// The Call-ID.
    pub call_id: String,
    /// The caller's (From) tag.
    pub caller_tag: String,
}

impl DialogRecord {
    /// The record's key.
    pub fn key(&self) -> DialogKey {
        DialogKey {
            call_id: self.call_id.clone(),
            caller_tag: self.caller_tag.clone(),
        }
    }

    /// Whether [`Store::save_dialogs`] can store the record on every backend: no value
    /// longer than its column, no NUL character (PostgreSQL refuses it in text). A record
    /// that fails this fails its whole batch, so check before batching.
    pub fn check(&self) -> Result<(), StoreError> {
        let fields = [
            ("call_id", self.call_id.as_str(), MAX_CALL_ID_LEN),
            ("caller_tag", self.caller_tag.as_str(), MAX_TAG_LEN),
            (
                "callee_tag",
                self.callee_tag.as_deref().unwrap_or(""),
                MAX_TAG_LEN,
            ),
            ("resources", self.resources.as_str(), MAX_RESOURCES_LEN),
            ("caller", self.caller.as_str(), MAX_ADDRESS_LEN),
            ("callee", self.callee.as_str(), MAX_ADDRESS_LEN),
        ];
        for (column, value, max) in fields {
            let reason = if value.contains('\0') {
                format!("{column} contains a NUL character")
            } else if value.len() > max && value.chars().count() > max {
                format!(
                    "{column} is {} characters long, more than {max}",
                    value.chars().count()
                )
            } else {
                continue;
            };
            return Err(StoreError::InvalidDialog {
                call_id: self.call_id.clone(),
                caller_tag: self.caller_tag.clone(),
                reason,
            });
        }
        Ok(())
    }
}

/// A stored dialog that could not be read back (a NULL, out-of-range or mistyped value, which
/// only a table changed by hand can hold). The other dialogs still load.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} skipped: {}", ProblemLabel(self), CellList(&self.cells))]
pub struct DialogProblem {
    /// The Call-ID, if it could be read.
    pub call_id: Option<String>,
    /// The caller tag, if it could be read.
    pub caller_tag: Option<String>,
    /// 1-based position of the row in the result.
    pub position: usize,
    /// Every unusable column of the row, in table order.
    pub cells: Vec<CellProblem>,
}

struct ProblemLabel<'a>(&'a DialogProblem);

impl std::fmt::Display for ProblemLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.0.call_id, &self.0.caller_tag) {
            (Some(call_id), Some(tag)) => write!(f, "dialog {}", ShownKey(call_id, tag)),
            _ => write!(f, "dialog row {} (no usable key)", self.0.position),
        }
    }
}

/// A dialog key for messages, each part quoted and cut at 64 characters (a Call-ID is up to
/// 255, and a rejected one may be anything).
pub(crate) struct ShownKey<'a>(pub(crate) &'a str, pub(crate) &'a str);

impl std::fmt::Display for ShownKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn cut(s: &str) -> String {
            match s.char_indices().nth(64) {
                Some((end, _)) => format!("{:?}...", &s[..end]),
                None => format!("{s:?}"),
            }
        }
        write!(f, "{} (from-tag {})", cut(self.0), cut(self.1))
    }
}

/// The upserts and deletes that make a batch's effect: the last upsert of each key, none for
/// a key that is also deleted (deletes apply after upserts), and each delete once.
pub(crate) fn coalesce<'a>(
    upserts: &'a [DialogRecord],
    deletes: &'a [DialogKey],
) -> (Vec<&'a DialogRecord>, Vec<&'a DialogKey>) {
    let mut deleted = HashSet::with_capacity(deletes.len());
    let deletes: Vec<&DialogKey> = deletes
        .iter()
        .filter(|k| deleted.insert((k.call_id.as_str(), k.caller_tag.as_str())))
        .collect();
    let mut seen = HashSet::with_capacity(upserts.len());
    let mut kept: Vec<&DialogRecord> = upserts
        .iter()
        .rev()
        .filter(|d| {
            let key = (d.call_id.as_str(), d.caller_tag.as_str());
            !deleted.contains(&key) && seen.insert(key)
        })
        .collect();
    kept.reverse();
    (kept, deletes)
}

/// A batch's upserts and deletes, after [`coalesce`].
pub(crate) type Batch<'a> = (Vec<&'a DialogRecord>, Vec<&'a DialogKey>);

/// The batch to write ([`coalesce`]d), or none if it has nothing to write; an error if a
/// record to write does not fit its columns.
pub(crate) fn checked_batch<'a>(
    upserts: &'a [DialogRecord],
    deletes: &'a [DialogKey],
) -> Result<Option<Batch<'a>>, StoreError> {
    let (upserts, deletes) = coalesce(upserts, deletes);
    Ok(worth_writing(&upserts, deletes.len())?.then_some((upserts, deletes)))
}

/// Whether a batch of `upserts` and `deletes` deletes has anything to write; an error if
/// a record to write does not fit its columns.
pub(crate) fn worth_writing<R: std::borrow::Borrow<DialogRecord>>(
    upserts: &[R],
    deletes: usize,
) -> Result<bool, StoreError> {
    if upserts.is_empty() && deletes == 0 {
        return Ok(false);
    }
    for dialog in upserts {
        dialog.borrow().check()?;
    }
    Ok(true)
}

// ---------------------------------------------------------------------------------------
// SQL

/// The column definitions and key, the same on every backend.
const COLUMN_DEFS: &str = "    call_id VARCHAR(255) NOT NULL,\n    caller_tag VARCHAR(128) NOT NULL,\n    callee_tag VARCHAR(128) DEFAULT NULL,\n    destination_id BIGINT NOT NULL,\n    resources VARCHAR(255) NOT NULL,\n    caller VARCHAR(128) NOT NULL,\n    callee VARCHAR(128) NOT NULL,\n    started_ms BIGINT NOT NULL,\n    expires_ms BIGINT NOT NULL,\n    PRIMARY KEY (call_id, caller_tag)";

/// The CREATE TABLE. No index beside the key: `expires_ms` is read only when siplb
/// starts, where a scan of a table that holds the calls up is quick, while an index
/// would be written twice by every call (its upsert and its delete) and was most of
/// what storing calls cost the database (docs/BENCHMARKS-HISTORY.md, issue 19's
/// eighth round). A table made by an earlier version keeps its index.
pub(crate) fn create_table(backend: Backend, t: &TableName) -> String {
    match backend {
        // WITHOUT ROWID: the text key is the table's B-tree, not a second index beside it.
        Backend::Sqlite => {
            format!("CREATE TABLE IF NOT EXISTS {t} (\n{COLUMN_DEFS}\n) WITHOUT ROWID")
        }
        // Binary collation: Call-IDs and tags are case-sensitive, and MySQL's default
        // collations are not. The key is at most (255 + 128) * 4 bytes, under InnoDB's
        // 3072-byte limit.
        Backend::MySql => format!(
            "CREATE TABLE IF NOT EXISTS {t} (\n{COLUMN_DEFS}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        ),
        Backend::Postgres => format!("CREATE TABLE IF NOT EXISTS {t} (\n{COLUMN_DEFS}\n)"),
    }
}

fn check_columns(t: &TableName) -> String {
    format!("SELECT {} FROM {t} WHERE 1 = 0", COLUMNS.join(", "))
}

/// Inserts `rows` rows, each replacing a stored row with its key.
pub(crate) fn upsert(backend: Backend, t: &TableName, rows: usize) -> String {
    let mut sql = format!("INSERT INTO {t} ({}) VALUES ", COLUMNS.join(", "));
    let mut n = 0;
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..COLUMNS.len() {
            if column > 0 {
                sql.push_str(", ");
            }
            n += 1;
            push_placeholder(&mut sql, backend, n);
        }
        sql.push(')');
    }
    let values = COLUMNS[2..].iter().map(|c| match backend {
        // VALUES() is deprecated in MySQL 8.0.20 in favour of a row alias, which MariaDB
        // does not have.
        Backend::MySql => format!("{c} = VALUES({c})"),
        Backend::Sqlite | Backend::Postgres => format!("{c} = excluded.{c}"),
    });
    let values: Vec<String> = values.collect();
    match backend {
        Backend::MySql => sql.push_str(" ON DUPLICATE KEY UPDATE "),
        Backend::Sqlite | Backend::Postgres => {
            sql.push_str(" ON CONFLICT (call_id, caller_tag) DO UPDATE SET ");
        }
    }
    sql.push_str(&values.join(", "));
    sql
}

/// Deletes `keys` keys.
pub(crate) fn delete_keys(backend: Backend, t: &TableName, keys: usize) -> String {
    let mut sql = format!("DELETE FROM {t} WHERE ");
    for key in 0..keys {
        if key > 0 {
            sql.push_str(" OR ");
        }
        sql.push_str("(call_id = ");
        push_placeholder(&mut sql, backend, 2 * key + 1);
        sql.push_str(" AND caller_tag = ");
        push_placeholder(&mut sql, backend, 2 * key + 2);
        sql.push(')');
    }
    sql
}

fn delete_expired(backend: Backend, t: &TableName) -> String {
    format!(
        "DELETE FROM {t} WHERE expires_ms <= {}",
        placeholder(backend, 1)
    )
}

fn select_live(backend: Backend, t: &TableName) -> String {
    format!(
        "SELECT {} FROM {t} WHERE expires_ms > {} ORDER BY call_id, caller_tag",
        COLUMNS.join(", "),
        placeholder(backend, 1)
    )
}

fn decode(row: &AnyRow, position: usize) -> Result<DialogRecord, DialogProblem> {
    let mut cells = Vec::new();
    let string = |column: &'static str, cells: &mut Vec<CellProblem>| {
        text(row, column, cells).and_then(|v| required(column, v, cells))
    };
    let call_id = string("call_id", &mut cells);
    let caller_tag = string("caller_tag", &mut cells);
    let callee_tag = text(row, "callee_tag", &mut cells);
    let destination_id = int(row, "destination_id", &mut cells)
        .and_then(|v| in_range::<u32>("destination_id", v, &mut cells));
    let resources = string("resources", &mut cells);
    let caller = string("caller", &mut cells);
    let callee = string("callee", &mut cells);
    let time = |column: &'static str, cells: &mut Vec<CellProblem>| {
        int(row, column, cells).and_then(|v| required(column, v, cells))
    };
    let started_ms = time("started_ms", &mut cells);
    let expires_ms = time("expires_ms", &mut cells);

    match (
        call_id,
        caller_tag,
        callee_tag,
        destination_id,
        resources,
        caller,
        callee,
        started_ms,
        expires_ms,
    ) {
        (
            Some(call_id),
            Some(caller_tag),
            Some(callee_tag),
            Some(destination_id),
            Some(resources),
            Some(caller),
            Some(callee),
            Some(started_ms),
            Some(expires_ms),
        ) if cells.is_empty() => Ok(DialogRecord {
            call_id,
            caller_tag,
            callee_tag,
            destination_id,
            resources,
            caller,
            callee,
            started_ms,
            expires_ms,
        }),
        (call_id, caller_tag, ..) => Err(DialogProblem {
            call_id,
            caller_tag,
            position,
            cells,
        }),
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds each dialog's columns, in [`COLUMNS`] order (the upsert's parameters).
fn bind_dialogs<'q>(mut query: AnyQuery<'q>, dialogs: &[&'q DialogRecord]) -> AnyQuery<'q> {
    for d in dialogs {
        query = query
            .bind(d.call_id.as_str())
            .bind(d.caller_tag.as_str())
            .bind(d.callee_tag.as_deref())
            .bind(i64::from(d.destination_id))
            .bind(d.resources.as_str())
            .bind(d.caller.as_str())
            .bind(d.callee.as_str())
            .bind(d.started_ms)
            .bind(d.expires_ms);
    }
    query
}

/// Binds each key's Call-ID and tag (the delete's parameters).
fn bind_keys<'q>(mut query: AnyQuery<'q>, keys: &[&'q DialogKey]) -> AnyQuery<'q> {
    for key in keys {
        query = query
            .bind(key.call_id.as_str())
            .bind(key.caller_tag.as_str());
    }
    query
}

// ---------------------------------------------------------------------------------------
// The operations

impl Store {
    /// Creates the dialog table `table` (see [`DEFAULT_DIALOG_TABLE`]) if it does not
    /// exist. An existing table is left as it is, but must have
    /// the dialog columns ([`StoreError::DialogSchema`] otherwise). Running it again changes
    /// nothing.
    pub async fn init_dialogs(&self, table: &TableName) -> Result<(), StoreError> {
        let action = format!("creating table {table}");
        self.timed(&action, async {
            // Not in a transaction: MySQL commits DDL anyway, and on PostgreSQL two
            // concurrent CREATE ... IF NOT EXISTS can still collide, which would abort it.
            let run = |statement: String| async move {
                match sqlx::raw_sql(AssertSqlSafe(statement))
                    .execute(&self.pool)
                    .await
                {
                    Err(err) if !created_concurrently(&err) => Err(err),
                    _ => Ok(()),
                }
            };
            run(create_table(self.backend(), table))
                .await
                .map_err(|source| self.query_error(&action, source))?;
            sqlx::raw_sql(AssertSqlSafe(check_columns(table)))
                .execute(&self.pool)
                .await
                .map_err(|source| StoreError::DialogSchema {
                    table: table.to_string(),
                    url: self.target.shown.clone(),
                    source,
                })?;
            Ok(())
        })
        .await
    }

    /// Applies one batch in one transaction: each of `upserts` is inserted, replacing a
    /// stored dialog with its key, then each of `deletes` is removed (a key that is not
    /// stored is no error). Within the batch the last upsert of a key wins, and a key that is
    /// both upserted and deleted ends up absent. An empty batch does not reach the database.
    ///
    /// Every record that is written is [checked](DialogRecord::check) first; one that does
    /// not fit fails the batch with [`StoreError::InvalidDialog`] before anything is sent.
    /// On an error nothing of the batch is stored, unless the error came while the commit
    /// itself was under way (a timeout, a lost connection); saving the same batch again is
    /// harmless either way, since upserts and deletes are idempotent.
    pub async fn save_dialogs(
        &self,
        table: &TableName,
        upserts: &[DialogRecord],
        deletes: &[DialogKey],
    ) -> Result<(), StoreError> {
        let Some((upserts, deletes)) = checked_batch(upserts, deletes)? else {
            return Ok(());
        };
        let backend = self.backend();
        let action = format!("saving dialogs into {table}");
        let query_error = |source| self.query_error(&action, source);
        if backend == Backend::Sqlite
            && upserts.len() <= UPSERT_CHUNK
            && deletes.len() <= DELETE_CHUNK
        {
            return self
                .timed(
                    &action,
                    self.save_in_one_command(table, &upserts, &deletes, &action),
                )
                .await;
        }
        self.timed(&action, async {
            let mut tx = self.pool.begin().await.map_err(query_error)?;
            for chunk in upserts.chunks(UPSERT_CHUNK) {
                let query = sqlx::query(AssertSqlSafe(upsert(backend, table, chunk.len())));
                bind_dialogs(query, chunk)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_error)?;
            }
            for chunk in deletes.chunks(DELETE_CHUNK) {
                let query = sqlx::query(AssertSqlSafe(delete_keys(backend, table, chunk.len())));
                bind_keys(query, chunk)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_error)?;
            }
            tx.commit().await.map_err(query_error)
        })
        .await
    }

    /// A batch written to SQLite as one command: the transaction, the upsert and the
    /// delete in one string of statements. SQLite runs on a thread of its own, and each
    /// command is a round trip to it (two thread wake-ups); a batch in separate commands
    /// (begin, upsert, delete, commit) cost about ten wake-ups. siplb writes a SQLite
    /// file through a [`DialogWriter`](crate::DialogWriter) of its own now; this path
    /// serves the databases the pool alone may write (in memory, read-only).
    async fn save_in_one_command(
        &self,
        table: &TableName,
        upserts: &[&DialogRecord],
        deletes: &[&DialogKey],
        action: &str,
    ) -> Result<(), StoreError> {
        let backend = self.backend();
        let mut sql = String::from("BEGIN;");
        if !upserts.is_empty() {
            sql.push_str(&upsert(backend, table, upserts.len()));
            sql.push(';');
        }
        if !deletes.is_empty() {
            sql.push_str(&delete_keys(backend, table, deletes.len()));
            sql.push(';');
        }
        sql.push_str("COMMIT;");
        let query = bind_keys(
            bind_dialogs(sqlx::query(AssertSqlSafe(sql)), upserts),
            deletes,
        );
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| self.query_error(action, e))?;
        match query.execute(&mut *conn).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // A statement after BEGIN failed: leave no transaction open on the
                // connection for the next batch.
                let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
                Err(self.query_error(action, e))
            }
        }
    }

    /// Deletes the dialogs that expired (`expires_ms <= now_ms`) and returns the others, in
    /// key order as the database sorts it, all in one transaction. Rows that cannot be
    /// decoded (only a table changed by hand has them) are skipped and reported as
    /// [`DialogProblem`]s, and stay in the table; the others still load. An error means
    /// nothing was read.
    pub async fn load_dialogs(
        &self,
        table: &TableName,
        now_ms: i64,
    ) -> Result<(Vec<DialogRecord>, Vec<DialogProblem>), StoreError> {
        let backend = self.backend();
        let action = format!("reading dialogs from {table}");
        let query_error = |source| self.query_error(&action, source);
        let rows = self
            .timed(&action, async {
                let mut tx = self.pool.begin().await.map_err(query_error)?;
                sqlx::query(AssertSqlSafe(delete_expired(backend, table)))
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_error)?;
                let rows = sqlx::query(AssertSqlSafe(select_live(backend, table)))
                    .bind(now_ms)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(query_error)?;
                tx.commit().await.map_err(query_error)?;
                Ok(rows)
            })
            .await?;
        let mut dialogs = Vec::with_capacity(rows.len());
        let mut problems = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            match decode(row, i + 1) {
                Ok(dialog) => dialogs.push(dialog),
                Err(problem) => problems.push(problem),
            }
        }
        Ok((dialogs, problems))
    }

    /// Deletes every stored dialog and says how many there were.
    pub async fn clear_dialogs(&self, table: &TableName) -> Result<u64, StoreError> {
        let action = format!("clearing table {table}");
        self.timed(&action, async {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table}")))
                .execute(&self.pool)
                .await
                .map(|done| done.rows_affected())
                .map_err(|source| self.query_error(&action, source))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::{DialogKey, DialogRecord, coalesce, delete_keys, upsert};
    use crate::error::StoreError;
    use crate::table::TableName;
    use crate::target::Backend;

    fn dialog(call_id: &str, tag: &str, expires_ms: i64) -> DialogRecord {
        DialogRecord {
            call_id: call_id.into(),
            caller_tag: tag.into(),
            callee_tag: None,
            destination_id: 1,
            resources: "vm".into(),
            caller: "udp:192.0.2.1:5060".into(),
            callee: "udp:192.0.2.2:5060".into(),
            started_ms: 0,
            expires_ms,
        }
    }

    #[test]
    fn upsert_sql_per_backend() {
        let t = TableName::new("d").unwrap();
        let pg = upsert(Backend::Postgres, &t, 2);
        assert!(
            pg.contains("($10, $11, $12, $13, $14, $15, $16, $17, $18)"),
            "{pg}"
        );
        assert!(
            pg.contains(
                "ON CONFLICT (call_id, caller_tag) DO UPDATE SET callee_tag = excluded.callee_tag"
            ),
            "{pg}"
        );
        assert!(pg.ends_with("expires_ms = excluded.expires_ms"), "{pg}");
        let my = upsert(Backend::MySql, &t, 1);
        assert!(
            my.contains("VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE"),
            "{my}"
        );
        assert!(my.ends_with("expires_ms = VALUES(expires_ms)"), "{my}");
        assert!(
            !my.contains("call_id = VALUES"),
            "the key is not updated: {my}"
        );
        assert_eq!(
            delete_keys(Backend::Postgres, &t, 2),
            "DELETE FROM d WHERE (call_id = $1 AND caller_tag = $2) OR (call_id = $3 AND caller_tag = $4)"
        );
    }

    #[test]
    fn a_batch_keeps_the_last_upsert_and_deletes_win() {
        let mut later = dialog("a", "1", 20);
        later.callee_tag = Some("x".into());
        let upserts = [
            dialog("a", "1", 10),
            dialog("b", "1", 10),
            later.clone(),
            dialog("c", "1", 10),
        ];
        let deletes = [
            DialogKey {
                call_id: "b".into(),
                caller_tag: "1".into(),
            },
            DialogKey {
                call_id: "b".into(),
                caller_tag: "1".into(),
            },
            DialogKey {
                call_id: "z".into(),
                caller_tag: "1".into(),
            },
        ];
        let (kept, deleted) = coalesce(&upserts, &deletes);
        assert_eq!(kept, [&later, &upserts[3]]);
        assert_eq!(deleted, [&deletes[0], &deletes[2]]);
    }

    #[test]
    fn records_that_do_not_fit_are_refused() {
        assert!(dialog("a", "1", 0).check().is_ok());
        let mut d = dialog(&"é".repeat(255), &"t".repeat(128), 0);
        d.callee_tag = Some("u".repeat(128));
        assert!(d.check().is_ok(), "lengths count characters, not bytes");
        d.call_id.push('x');
        let err = d.check().unwrap_err();
        assert!(matches!(err, StoreError::InvalidDialog { .. }));
        assert!(!err.is_retryable());
        let message = err.to_string();
        assert!(
            message.contains("call_id is 256 characters long, more than 255"),
            "{message}"
        );
        assert!(
            message.len() < 400,
            "the Call-ID is cut in messages: {message}"
        );
        let mut d = dialog("a", "1", 0);
        d.callee = "udp:\0".into();
        let message = d.check().unwrap_err().to_string();
        assert_eq!(
            message,
            "dialog \"a\" (from-tag \"1\") cannot be stored: callee contains a NUL character"
        );
    }
}
