//! The stored calls' writer for a thread of its own: [`DialogWriter::save`] blocks, so
//! siplb's persistence runs on a plain thread that sleeps between batches.
//!
//! On a SQLite file the writer owns a connection of its own and runs its statements in
//! place, each prepared once. Through sqlx, a batch cost about a dozen thread switches
//! (the task, sqlx's SQLite thread and back, per result), which at low call rates was
//! most of what storing calls cost (docs/BENCHMARKS-HISTORY.md, issue 19's ninth round);
//! here a batch costs the one wake-up of the thread that writes it. Other databases,
//! and an in-memory SQLite database (which lives in the pool's connection), are written
//! through the [`Store`]'s pool, driven from the calling thread.

use std::borrow::Borrow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};
use tokio::runtime::Handle;

use crate::Store;
use crate::dialogs::{DialogKey, DialogRecord, coalesce, delete_keys, upsert, worth_writing};
use crate::error::StoreError;
use crate::table::TableName;
use crate::target::Backend;

/// The longest a batch waits for a lock another connection holds on a SQLite file.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Writes batches of dialog changes to one table, blocking the calling thread.
pub struct DialogWriter {
    table: TableName,
    /// What failures name, as [`Store::save_dialogs`] names them.
    action: String,
    url: String,
    way: Way,
}

enum Way {
    /// A SQLite file: a connection of this writer's own.
    Sqlite(OwnConnection),
    /// Any other database: the store's pool, on the runtime of `handle`.
    Pool { store: Arc<Store>, handle: Handle },
}

impl std::fmt::Debug for DialogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let way = match self.way {
            Way::Sqlite(_) => "sqlite connection",
            Way::Pool { .. } => "pool",
        };
        f.debug_struct("DialogWriter")
            .field("table", &self.table)
            .field("url", &self.url)
            .field("way", &way)
            .finish()
    }
}

impl DialogWriter {
    /// A writer for `table` of `store`'s database, which must exist
    /// ([`Store::init_dialogs`]). A SQLite file is opened here, with the pool's
    /// write-ahead log and `synchronous=NORMAL`, waiting up to 5 s (or the store's query
    /// timeout if shorter) for a lock; other databases use `store`'s pool, whose futures
    /// are driven on `handle`'s runtime. Call [`save`](Self::save) only from a thread
    /// outside any runtime (a blocking one, or a plain thread).
    pub fn new(store: Arc<Store>, table: &TableName, handle: Handle) -> Result<Self, StoreError> {
        let action = format!("saving dialogs into {table}");
        let url = store.target.shown.clone();
        let way = match store.target.sqlite_file() {
            Some(path) => open_sqlite(path, table, &store)
                .map_err(|source| sqlite_error(&format!("opening {table}"), &url, source))?,
            None => Way::Pool { store, handle },
        };
        Ok(Self {
            table: table.clone(),
            action,
            url,
            way,
        })
    }

    /// Whether the writer has a SQLite connection of its own (rather than the pool).
    pub fn owns_connection(&self) -> bool {
        matches!(self.way, Way::Sqlite(_))
    }

    /// Applies one batch in one transaction, exactly as [`Store::save_dialogs`] does (the
    /// same coalescing, checks and errors); blocks until it is done.
    pub fn save(
        &mut self,
        upserts: &[DialogRecord],
        deletes: &[DialogKey],
    ) -> Result<(), StoreError> {
        match &mut self.way {
            Way::Pool { store, handle } => {
                handle.block_on(store.save_dialogs(&self.table, upserts, deletes))
            }
            Way::Sqlite(own) => {
                let (upserts, deletes) = coalesce(upserts, deletes);
                own.write(&upserts, &deletes, &self.action, &self.url)
            }
        }
    }

    /// As [`save`](Self::save), for a batch that names each key once, among its upserts
    /// and deletes together (as a map of pending changes gives it): the same checks and
    /// errors, without the pass that coalesces, which hashed every key twice per batch.
    pub fn save_distinct(
        &mut self,
        upserts: &[DialogRecord],
        deletes: &[DialogKey],
    ) -> Result<(), StoreError> {
        debug_assert!(distinct(upserts, deletes), "a batch names a key twice");
        let Way::Sqlite(own) = &mut self.way else {
            return self.save(upserts, deletes);
        };
        own.write(upserts, deletes, &self.action, &self.url)
    }
}

/// The writer's own connection to a SQLite file, with its two statements.
struct OwnConnection {
    conn: Connection,
    upsert: String,
    delete: String,
}

impl OwnConnection {
    /// Writes a coalesced batch in one transaction, if it has anything to write and
    /// every record fits; failures are named by `action` and `url`.
    fn write<R: Borrow<DialogRecord>, K: Borrow<DialogKey>>(
        &mut self,
        upserts: &[R],
        deletes: &[K],
        action: &str,
        url: &str,
    ) -> Result<(), StoreError> {
        if !worth_writing(upserts, deletes.len())? {
            return Ok(());
        }
        write_sqlite(&mut self.conn, &self.upsert, &self.delete, upserts, deletes)
            .map_err(|source| sqlite_error(action, url, source))
    }
}

/// Whether no key appears twice in a batch.
fn distinct(upserts: &[DialogRecord], deletes: &[DialogKey]) -> bool {
    let mut seen = std::collections::HashSet::new();
    upserts
        .iter()
        .map(|r| (r.call_id.as_str(), r.caller_tag.as_str()))
        .chain(
            deletes
                .iter()
                .map(|k| (k.call_id.as_str(), k.caller_tag.as_str())),
        )
        .all(|key| seen.insert(key))
}

fn open_sqlite(path: PathBuf, table: &TableName, store: &Store) -> rusqlite::Result<Way> {
    // No mutex of SQLite's own: the connection is used by one thread at a time.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    // Another connection may hold the file's write lock (the pool's, briefly, or a
    // backup's for long): wait as long as the pool's connections do (sqlx's 5 s), and no
    // longer than any operation may take. Changes arriving meanwhile queue in memory
    // until the failed batch sends them to the journal.
    conn.busy_timeout(store.query_timeout.min(LOCK_WAIT))?;
    // The log mode belongs to the file (the pool set it), the sync level to the connection.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let upsert = upsert(Backend::Sqlite, table, 1);
    let delete = delete_keys(Backend::Sqlite, table, 1);
    // Prepared now so that a table of the wrong shape fails here, not at the first call.
    conn.prepare_cached(&upsert)?;
    conn.prepare_cached(&delete)?;
    Ok(Way::Sqlite(OwnConnection {
        conn,
        upsert,
        delete,
    }))
}

fn write_sqlite<R: Borrow<DialogRecord>, K: Borrow<DialogKey>>(
    conn: &mut Connection,
    upsert: &str,
    delete: &str,
    upserts: &[R],
    deletes: &[K],
) -> rusqlite::Result<()> {
    // BEGIN and COMMIT are cached statements like the batch's own: through
    // `Connection::transaction` both were parsed again for every batch.
    let written = conn
        .prepare_cached("BEGIN")
        .and_then(|mut begin| begin.execute([]))
        .and_then(|_| write_rows(conn, upsert, delete, upserts, deletes))
        .and_then(|()| conn.prepare_cached("COMMIT")?.execute([]).map(drop));
    if written.is_err() && !conn.is_autocommit() {
        // A failed batch leaves nothing, and no transaction open for the next one to
        // trip on. (Should the rollback fail too, SQLite has rolled back already or the
        // connection is gone: the batch's error tells.)
        let _ = conn.execute_batch("ROLLBACK");
    }
    written
}

fn write_rows<R: Borrow<DialogRecord>, K: Borrow<DialogKey>>(
    conn: &Connection,
    upsert: &str,
    delete: &str,
    upserts: &[R],
    deletes: &[K],
) -> rusqlite::Result<()> {
    if !upserts.is_empty() {
        let mut statement = conn.prepare_cached(upsert)?;
        for d in upserts {
            let d = d.borrow();
            statement.execute(params![
                d.call_id,
                d.caller_tag,
                d.callee_tag,
                i64::from(d.destination_id),
                d.resources,
                d.caller,
                d.callee,
                d.started_ms,
                d.expires_ms,
            ])?;
        }
    }
    if !deletes.is_empty() {
        let mut statement = conn.prepare_cached(delete)?;
        for k in deletes {
            let k = k.borrow();
            statement.execute(params![k.call_id, k.caller_tag])?;
        }
    }
    Ok(())
}

fn sqlite_error(action: &str, url: &str, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        action: action.to_owned(),
        url: url.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::dialogs::create_table;

    fn own_connection(table: &TableName) -> OwnConnection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&create_table(Backend::Sqlite, table))
            .unwrap();
        OwnConnection {
            conn,
            upsert: upsert(Backend::Sqlite, table, 1),
            delete: delete_keys(Backend::Sqlite, table, 1),
        }
    }

    fn record(call_id: &str) -> DialogRecord {
        DialogRecord {
            call_id: call_id.into(),
            caller_tag: "t".into(),
            callee_tag: None,
            destination_id: 1,
            resources: "pstn".into(),
            caller: "udp:192.0.2.1:5060".into(),
            callee: "udp:192.0.2.2:5060".into(),
            started_ms: 0,
            expires_ms: 1,
        }
    }

    /// A transaction left open on the connection (however it came to be) fails the
    /// batch that finds it, which closes it: the next batch lands.
    #[test]
    fn a_transaction_left_open_fails_one_batch_only() {
        let table = TableName::new("d").unwrap();
        let mut own = own_connection(&table);
        own.conn.execute_batch("BEGIN").unwrap();
        let none: &[DialogKey] = &[];
        let err = own
            .write(&[record("a")], none, "saving", "sqlite:x")
            .unwrap_err();
        assert!(err.to_string().contains("within a transaction"), "{err}");
        assert!(own.conn.is_autocommit());
        own.write(&[record("a")], none, "saving", "sqlite:x")
            .unwrap();
        let rows: i64 = own
            .conn
            .query_row("SELECT COUNT(*) FROM d", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }
}
