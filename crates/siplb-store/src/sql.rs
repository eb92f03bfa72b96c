//! The SQL text for each backend. The DDL is OpenSIPS' own scripts
//! (`scripts/{mysql,postgres,sqlite}/load_balancer-create.sql` and `standard-create.sql`),
//! with the table name substituted and `IF NOT EXISTS` added so running it twice is harmless.

use std::fmt::Write as _;

use crate::table::TableName;
use crate::target::Backend;

/// OpenSIPS' schema version of the `load_balancer` table.
pub const SCHEMA_VERSION: i32 = 3;

/// The columns, in OpenSIPS' order.
pub(crate) const COLUMNS: [&str; 7] = [
    "id",
    "group_id",
    "dst_uri",
    "resources",
    "probe_mode",
    "attrs",
    "description",
];

/// A query whose single integer result is 1 if the table exists, else 0.
pub(crate) fn table_exists(backend: Backend, t: &TableName) -> String {
    match backend {
        Backend::Sqlite => format!(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '{t}' COLLATE NOCASE"
        ),
        Backend::MySql => format!(
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = '{t}'"
        ),
        // to_regclass folds case and follows search_path exactly as the unquoted name in
        // later statements will.
        Backend::Postgres => {
            format!("SELECT CASE WHEN to_regclass('{t}') IS NULL THEN 0 ELSE 1 END")
        }
    }
}

/// The statements that create the table and its index, run in one transaction where the
/// backend has transactional DDL.
pub(crate) fn create_table(backend: Backend, t: &TableName) -> Vec<String> {
    match backend {
        Backend::Sqlite => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    group_id INTEGER DEFAULT 0 NOT NULL,
    dst_uri CHAR(128) NOT NULL,
    resources CHAR(255) NOT NULL,
    probe_mode INTEGER DEFAULT 0 NOT NULL,
    attrs CHAR(255) DEFAULT NULL,
    description CHAR(128) DEFAULT NULL
)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {t}_dsturi_idx ON {t} (dst_uri)"),
        ],
        // MySQL (unlike MariaDB) has no CREATE INDEX IF NOT EXISTS, so the index that
        // OpenSIPS creates separately is declared inline: same name, same column.
        Backend::MySql => vec![format!(
            "CREATE TABLE IF NOT EXISTS {t} (
    id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    group_id INT(11) UNSIGNED DEFAULT 0 NOT NULL,
    dst_uri CHAR(128) NOT NULL,
    resources CHAR(255) NOT NULL,
    probe_mode INT(11) UNSIGNED DEFAULT 0 NOT NULL,
    attrs CHAR(255) DEFAULT NULL,
    description CHAR(128) DEFAULT NULL,
    INDEX dsturi_idx (dst_uri)
) ENGINE=InnoDB"
        )],
        Backend::Postgres => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (
    id SERIAL PRIMARY KEY NOT NULL,
    group_id INTEGER DEFAULT 0 NOT NULL,
    dst_uri VARCHAR(128) NOT NULL,
    resources VARCHAR(255) NOT NULL,
    probe_mode INTEGER DEFAULT 0 NOT NULL,
    attrs VARCHAR(255) DEFAULT NULL,
    description VARCHAR(128) DEFAULT NULL
)"
            ),
            // The name SERIAL gives the sequence; the name length limit keeps it
            // untruncated (PostgreSQL truncates identifiers at 63 bytes).
            format!("ALTER SEQUENCE {t}_id_seq MAXVALUE 2147483647 CYCLE"),
            format!("CREATE INDEX IF NOT EXISTS {t}_dsturi_idx ON {t} (dst_uri)"),
        ],
    }
}

/// OpenSIPS' `version` table, shared by all its modules.
pub(crate) fn create_version_table(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "CREATE TABLE IF NOT EXISTS version (
    table_name CHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_t_name_idx UNIQUE (table_name)
)"
        }
        Backend::MySql => {
            "CREATE TABLE IF NOT EXISTS version (
    table_name CHAR(32) NOT NULL,
    table_version INT UNSIGNED DEFAULT 0 NOT NULL,
    CONSTRAINT t_name_idx UNIQUE (table_name)
) ENGINE=InnoDB"
        }
        Backend::Postgres => {
            "CREATE TABLE IF NOT EXISTS version (
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_t_name_idx UNIQUE (table_name)
)"
        }
    }
}

/// Records the table's schema version unless a row for it is there already. The
/// `NOT EXISTS` keeps a `version` table without the unique constraint free of duplicates;
/// the conflict clause covers two inits racing.
pub(crate) fn insert_version_row(backend: Backend, t: &TableName) -> String {
    let select = format!(
        "SELECT '{t}', {SCHEMA_VERSION} {from} \
         WHERE NOT EXISTS (SELECT 1 FROM version WHERE table_name = '{t}')",
        from = if backend == Backend::MySql {
            "FROM DUAL"
        } else {
            ""
        },
    );
    match backend {
        Backend::Sqlite => {
            format!("INSERT OR IGNORE INTO version (table_name, table_version) {select}")
        }
        Backend::MySql => {
            format!("INSERT IGNORE INTO version (table_name, table_version) {select}")
        }
        Backend::Postgres => format!(
            "INSERT INTO version (table_name, table_version) {select} ON CONFLICT DO NOTHING"
        ),
    }
}

/// Reads nothing, but fails unless every schema-3 column is there.
pub(crate) fn check_columns(t: &TableName) -> String {
    format!("SELECT {} FROM {t} WHERE 1 = 0", COLUMNS.join(", "))
}

/// The load query. Every value comes back in a type sqlx's Any driver can decode, with
/// nothing lost before it is range-checked:
/// - integers as signed 64-bit: the Any driver reads MySQL's `INT UNSIGNED` as a signed
///   32-bit number, which would turn 4294967295 into -1;
/// - strings as plain text: Any cannot decode PostgreSQL's `CHAR` (bpchar) at all, nor
///   MySQL strings in a binary collation, and a hand-made table may use either.
pub(crate) fn select_rows(backend: Backend, t: &TableName) -> String {
    let (int, text) = match backend {
        Backend::MySql => ("SIGNED", "CHAR"),
        Backend::Postgres => ("", "TEXT"),
        Backend::Sqlite => ("", ""),
    };
    let cast = |column: &str, to: &str| {
        if to.is_empty() {
            column.to_owned()
        } else {
            format!("CAST({column} AS {to}) AS {column}")
        }
    };
    format!(
        "SELECT {}, {}, {}, {}, {}, {}, {} FROM {t} ORDER BY {t}.id",
        cast("id", int),
        cast("group_id", int),
        cast("dst_uri", text),
        cast("resources", text),
        cast("probe_mode", int),
        cast("attrs", text),
        cast("description", text),
    )
}

pub(crate) fn count_rows(t: &TableName) -> String {
    format!("SELECT COUNT(*) FROM {t}")
}

/// Parameter `n` (1-based): PostgreSQL numbers them, the others take `?` (sqlx's Any driver
/// does not rewrite them).
pub(crate) fn placeholder(backend: Backend, n: usize) -> String {
    let mut out = String::new();
    push_placeholder(&mut out, backend, n);
    out
}

/// Appends [`placeholder`] to `sql`: a batch's statement has one per value, and a
/// string made for each was a third of what writing the statement cost.
pub(crate) fn push_placeholder(sql: &mut String, backend: Backend, n: usize) {
    match backend {
        Backend::Postgres => {
            let _ = write!(sql, "${n}");
        }
        Backend::Sqlite | Backend::MySql => sql.push('?'),
    }
}

/// Inserts one row with an explicit id; parameters in [`COLUMNS`] order.
pub(crate) fn insert_row(backend: Backend, t: &TableName) -> String {
    let params: Vec<String> = (1..=COLUMNS.len())
        .map(|n| placeholder(backend, n))
        .collect();
    format!(
        "INSERT INTO {t} ({}) VALUES ({})",
        COLUMNS.join(", "),
        params.join(", ")
    )
}

/// After rows were inserted with explicit ids, moves PostgreSQL's sequence past them so the
/// next insert without an id does not collide. MySQL and SQLite do this by themselves.
/// `setval(NULL, ..)` is a no-op, so a table without a serial id is left alone.
pub(crate) fn advance_id_sequence(backend: Backend, t: &TableName) -> Option<String> {
    (backend == Backend::Postgres)
        .then(|| format!("SELECT setval(pg_get_serial_sequence('{t}', 'id'), MAX(id)) FROM {t}"))
}

#[cfg(test)]
mod tests {
    use super::{insert_row, insert_version_row, select_rows};
    use crate::table::TableName;
    use crate::target::Backend;

    #[test]
    fn placeholders_follow_the_backend() {
        let t = TableName::default();
        assert!(insert_row(Backend::Postgres, &t).ends_with("($1, $2, $3, $4, $5, $6, $7)"));
        assert!(insert_row(Backend::MySql, &t).ends_with("(?, ?, ?, ?, ?, ?, ?)"));
    }

    #[test]
    fn mysql_reads_unsigned_columns_as_signed_64_bit() {
        let sql = select_rows(Backend::MySql, &TableName::default());
        assert!(
            sql.contains("CAST(group_id AS SIGNED) AS group_id"),
            "{sql}"
        );
        assert!(sql.ends_with("ORDER BY load_balancer.id"), "{sql}");
    }

    #[test]
    fn version_row_is_opensips_one() {
        let sql = insert_version_row(Backend::Postgres, &TableName::default());
        assert!(sql.contains("SELECT 'load_balancer', 3"), "{sql}");
    }
}
