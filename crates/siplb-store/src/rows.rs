//! Turning result rows into [`DestinationRow`]s, one problem report per unusable row.

use siplb_balance::DestinationRow;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{CellFault, CellProblem, RowProblem};

/// Decodes one row, or says every column that is unusable. Only the columns that must hold a
/// value are range-checked; the resources string and the URI are checked by the balancer.
pub(crate) fn decode(row: &AnyRow, position: usize) -> Result<DestinationRow, RowProblem> {
    let mut cells = Vec::new();
    let raw_id = int(row, "id", &mut cells);
    let id = raw_id.and_then(|v| in_range::<u32>("id", v, &mut cells));
    let group_id =
        int(row, "group_id", &mut cells).and_then(|v| in_range::<u32>("group_id", v, &mut cells));
    let dst_uri = text(row, "dst_uri", &mut cells).and_then(|v| required("dst_uri", v, &mut cells));
    let resources =
        text(row, "resources", &mut cells).and_then(|v| required("resources", v, &mut cells));
    let probe_mode = int(row, "probe_mode", &mut cells)
        .and_then(|v| in_range::<i32>("probe_mode", v, &mut cells));
    let attrs = text(row, "attrs", &mut cells);
    let description = text(row, "description", &mut cells);

    match (
        id,
        group_id,
        dst_uri,
        resources,
        probe_mode,
        attrs,
        description,
    ) {
        (
            Some(id),
            Some(group_id),
            Some(dst_uri),
            Some(resources),
            Some(probe_mode),
            Some(attrs),
            Some(description),
        ) if cells.is_empty() => {
            let mut out = DestinationRow::new(id, group_id, dst_uri, resources);
            out.probe_mode = probe_mode;
            out.attrs = attrs;
            out.description = description;
            Ok(out)
        }
        _ => Err(RowProblem {
            id: raw_id.flatten(),
            position,
            cells,
        }),
    }
}

/// An integer column: `Some(None)` for NULL, `None` (with a problem noted) when unreadable.
pub(crate) fn int(
    row: &AnyRow,
    column: &'static str,
    cells: &mut Vec<CellProblem>,
) -> Option<Option<i64>> {
    match row.try_get::<Option<i64>, _>(column) {
        Ok(v) => Some(v),
        Err(err) => {
            cells.push(wrong_type(column, &err));
            None
        }
    }
}

/// A text column, as [`int`].
pub(crate) fn text(
    row: &AnyRow,
    column: &'static str,
    cells: &mut Vec<CellProblem>,
) -> Option<Option<String>> {
    match row.try_get::<Option<String>, _>(column) {
        Ok(v) => Some(v),
        Err(err) => {
            cells.push(wrong_type(column, &err));
            None
        }
    }
}

fn wrong_type(column: &'static str, err: &sqlx::Error) -> CellProblem {
    // sqlx wraps the decode failure with the column name, which the problem already says.
    let reason = match err {
        sqlx::Error::ColumnDecode { source, .. } => source.to_string(),
        other => other.to_string(),
    };
    CellProblem {
        column,
        fault: CellFault::WrongType { reason },
    }
}

pub(crate) fn required<T>(
    column: &'static str,
    v: Option<T>,
    cells: &mut Vec<CellProblem>,
) -> Option<T> {
    if v.is_none() {
        cells.push(CellProblem {
            column,
            fault: CellFault::Null,
        });
    }
    v
}

pub(crate) fn in_range<T>(
    column: &'static str,
    v: Option<i64>,
    cells: &mut Vec<CellProblem>,
) -> Option<T>
where
    T: TryFrom<i64> + Bounded,
{
    let v = required(column, v, cells)?;
    match T::try_from(v) {
        Ok(t) => Some(t),
        Err(_) => {
            cells.push(CellProblem {
                column,
                fault: CellFault::OutOfRange {
                    value: v,
                    min: T::MIN,
                    max: T::MAX,
                },
            });
            None
        }
    }
}

/// The accepted range of a column's Rust type, for the problem report.
pub(crate) trait Bounded {
    const MIN: i64;
    const MAX: i64;
}

impl Bounded for u32 {
    const MIN: i64 = 0;
    const MAX: i64 = u32::MAX as i64;
}

impl Bounded for i32 {
    const MIN: i64 = i32::MIN as i64;
    const MAX: i64 = i32::MAX as i64;
}
