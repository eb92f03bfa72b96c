//! Failures of a whole operation ([`StoreError`]) and of single rows ([`RowProblem`]).

use std::time::Duration;

/// An operation on the store that failed as a whole. For [`Store::load`](crate::Store::load)
/// this means nothing was read, and the caller keeps the table it has.
///
/// URLs in messages never show a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The configured table name cannot be used.
    #[error("invalid table name {name:?}: {reason}")]
    InvalidTableName {
        /// The name as configured.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The URL cannot name a database siplb supports.
    #[error("invalid database URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, password hidden.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The database refused or failed the connection.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL, password hidden.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// Connecting, or a statement, took longer than allowed.
    #[error("{action} on {url} timed out after {}", humanize(*after))]
    Timeout {
        /// What was being done, e.g. `connecting`, `reading table load_balancer`.
        action: String,
        /// The URL, password hidden.
        url: String,
        /// The limit that was hit.
        after: Duration,
    },
    /// Every attempt of [`connect_with_retry`](crate::connect_with_retry) failed.
    #[error("gave up after {attempts} attempt(s) over {}: {last}", humanize(*elapsed))]
    GaveUp {
        /// How many connections were tried.
        attempts: u32,
        /// Time from the first attempt to the last failure.
        elapsed: Duration,
        /// Why the last attempt failed.
        last: Box<StoreError>,
    },
    /// A statement failed: the table is missing or the server went away, for instance.
    #[error("{action} failed on {url}: {source}")]
    Query {
        /// What was being done, e.g. `reading table load_balancer`.
        action: String,
        /// The URL, password hidden.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// A statement of the [`DialogWriter`](crate::DialogWriter)'s own SQLite connection
    /// failed: another process held the file's lock for longer than the writer waits (5 s
    /// at most), or the disk is full, for instance.
    #[error("{action} failed on {url}: {source}")]
    Sqlite {
        /// What was being done, e.g. `saving dialogs into siplb_dialogs`.
        action: String,
        /// The URL.
        url: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The table exists but lacks the columns of OpenSIPS' schema version 3.
    #[error(
        "table {table} on {url} does not have the columns of OpenSIPS load_balancer schema \
         version 3 (id, group_id, dst_uri, resources, probe_mode, attrs, description): {source}"
    )]
    Schema {
        /// The table name.
        table: String,
        /// The URL, password hidden.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The dialog table exists but lacks a column that
    /// [`Store::save_dialogs`](crate::Store::save_dialogs) and
    /// [`Store::load_dialogs`](crate::Store::load_dialogs) need.
    #[error(
        "table {table} on {url} does not have siplb's dialog columns (call_id, caller_tag, \
         callee_tag, destination_id, resources, caller, callee, started_ms, expires_ms): {source}"
    )]
    DialogSchema {
        /// The table name.
        table: String,
        /// The URL, password hidden.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// A dialog handed to [`Store::save_dialogs`](crate::Store::save_dialogs) cannot be
    /// stored as it is (a value longer than its column, or a NUL character); nothing of the
    /// batch was written. Saving the same batch again fails again.
    #[error(
        "dialog {} cannot be stored: {reason}",
        crate::dialogs::ShownKey(call_id, caller_tag)
    )]
    InvalidDialog {
        /// The dialog's Call-ID.
        call_id: String,
        /// The dialog's caller (From) tag.
        caller_tag: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl StoreError {
    /// Whether trying again later could succeed: not so for a bad table name or URL, a table
    /// of the wrong shape, or a dialog that does not fit its columns.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::InvalidTableName { .. }
            | Self::InvalidUrl { .. }
            | Self::Schema { .. }
            | Self::DialogSchema { .. }
            | Self::InvalidDialog { .. } => false,
            Self::Connect { source, .. } => !matches!(source, sqlx::Error::Configuration(_)),
            Self::Timeout { .. } | Self::Query { .. } | Self::Sqlite { .. } => true,
            Self::GaveUp { last, .. } => last.is_retryable(),
        }
    }
}

/// Whole milliseconds, as people read them in a log ("1.5s", "250ms").
fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

/// A row that could not be turned into a [`DestinationRow`](siplb_balance::DestinationRow)
/// because a column holds NULL, an out-of-range number or a value of the wrong type. The
/// other rows still load.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} skipped: {}", RowLabel(self), CellList(&self.cells))]
pub struct RowProblem {
    /// The row's `id` as stored; `None` when the id itself is NULL or not a number.
    pub id: Option<i64>,
    /// 1-based position of the row in the `ORDER BY id` result, to find a row without a
    /// usable id.
    pub position: usize,
    /// Every unusable column of the row, in table order.
    pub cells: Vec<CellProblem>,
}

/// One unusable column of a [`RowProblem`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{column} {fault}")]
pub struct CellProblem {
    /// The column name.
    pub column: &'static str,
    /// What is wrong with its value.
    pub fault: CellFault,
}

/// What is wrong with a column's value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CellFault {
    /// NULL in a column that must have a value.
    #[error("is NULL")]
    Null,
    /// A number outside what siplb accepts for the column.
    #[error("is {value}, outside {min}..={max}")]
    OutOfRange {
        /// The stored value.
        value: i64,
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// A value that does not decode as the column's type, e.g. text in an integer column
    /// (SQLite allows it).
    #[error("cannot be read: {reason}")]
    WrongType {
        /// The driver's message.
        reason: String,
    },
}

struct RowLabel<'a>(&'a RowProblem);

impl std::fmt::Display for RowLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.id {
            Some(id) => write!(f, "destination {id}"),
            None => write!(f, "row {} (no usable id)", self.0.position),
        }
    }
}

pub(crate) struct CellList<'a>(pub(crate) &'a [CellProblem]);

impl std::fmt::Display for CellList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, cell) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{cell}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{CellFault, CellProblem, RowProblem, StoreError};

    #[test]
    fn row_problem_names_the_id_and_every_bad_column() {
        let problem = RowProblem {
            id: Some(7),
            position: 3,
            cells: vec![
                CellProblem {
                    column: "group_id",
                    fault: CellFault::OutOfRange {
                        value: -3,
                        min: 0,
                        max: u32::MAX.into(),
                    },
                },
                CellProblem {
                    column: "dst_uri",
                    fault: CellFault::Null,
                },
            ],
        };
        assert_eq!(
            problem.to_string(),
            "destination 7 skipped: group_id is -3, outside 0..=4294967295; dst_uri is NULL"
        );
        let no_id = RowProblem {
            id: None,
            position: 1,
            cells: vec![CellProblem {
                column: "id",
                fault: CellFault::Null,
            }],
        };
        assert_eq!(
            no_id.to_string(),
            "row 1 (no usable id) skipped: id is NULL"
        );
    }

    #[test]
    fn durations_read_well() {
        let timeout = StoreError::Timeout {
            action: "connecting".into(),
            url: "mysql://h/db".into(),
            after: Duration::from_millis(1500),
        };
        assert_eq!(
            timeout.to_string(),
            "connecting on mysql://h/db timed out after 1.5s"
        );
        let gave_up = StoreError::GaveUp {
            attempts: 3,
            elapsed: Duration::from_millis(250),
            last: Box::new(timeout),
        };
        assert!(
            gave_up
                .to_string()
                .starts_with("gave up after 3 attempt(s) over 250ms: connecting")
        );
        assert!(gave_up.is_retryable());
    }
}
