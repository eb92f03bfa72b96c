//! A row of the destination table as read from the database, and why a row can be skipped.

use crate::resources::ResourceListError;
use crate::uri::UriError;

/// One row of the `load_balancer` table (OpenSIPS schema version 3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationRow {
    /// Unique destination id: the key for management commands and for carrying state over a
    /// reload.
    pub id: u32,
    /// The group a call asks for.
    pub group_id: u32,
    /// SIP URI the call is sent to (`sip:` or `sips:`).
    pub dst_uri: String,
    /// Capacity list, e.g. `vm=50; pstn=32`.
    pub resources: String,
    /// Raw probing mode; see [`ProbeMode::from_raw`].
    pub probe_mode: i32,
    /// Opaque string handed back to the routing layer.
    pub attrs: Option<String>,
    /// Free text for operators; unused by selection.
    pub description: Option<String>,
}

impl DestinationRow {
    /// A row with no probing, attrs or description.
    pub fn new(
        id: u32,
        group_id: u32,
        dst_uri: impl Into<String>,
        resources: impl Into<String>,
    ) -> Self {
        Self {
            id,
            group_id,
            dst_uri: dst_uri.into(),
            resources: resources.into(),
            ..Self::default()
        }
    }
}

/// When a destination is probed, decoded from the raw column as the reference does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeMode {
    /// `0`: never probed.
    Never,
    /// `1` (and, like the reference, negative values): probed only while disabled and not
    /// disabled by the operator; the first success re-enables it.
    WhileDisabled,
    /// `2` and above: probed always; a failure disables it, a success re-enables it.
    Always,
}

impl ProbeMode {
    /// Decodes the `probe_mode` column.
    pub fn from_raw(raw: i32) -> Self {
        match raw {
            0 => Self::Never,
            2.. => Self::Always,
            _ => Self::WhileDisabled,
        }
    }
}

/// A row that was skipped while loading the table; the other rows still load.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("destination {id} skipped: {fault}")]
pub struct RowError {
    /// The `id` of the skipped row.
    pub id: u32,
    /// What was wrong with it.
    pub fault: RowFault,
}

/// Why a row was skipped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RowFault {
    /// The `resources` column did not parse.
    #[error("bad resources {value:?}: {reason}")]
    Resources {
        /// The column as read.
        value: String,
        /// The parse failure.
        reason: ResourceListError,
    },
    /// An earlier row already used this id. The first row claims the id even if it was
    /// itself skipped, so which row loads never depends on which ones are valid.
    #[error("duplicate id")]
    DuplicateId,
    /// The `attrs` column sets `max_cps` to something else than 1 to 100000.
    #[error("bad attrs {value:?}: {reason}")]
    Attrs {
        /// The column as read.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The `dst_uri` column is not a routable SIP URI.
    #[error("bad dst_uri {value:?}: {reason}")]
    Uri {
        /// The column as read.
        value: String,
        /// The parse failure.
        reason: UriError,
    },
}

#[cfg(test)]
mod tests {
    use super::{ProbeMode, RowError, RowFault};
    use crate::resources::ResourceListError;

    #[test]
    fn probe_mode_decodes_like_the_reference() {
        assert_eq!(ProbeMode::from_raw(0), ProbeMode::Never);
        assert_eq!(ProbeMode::from_raw(1), ProbeMode::WhileDisabled);
        assert_eq!(ProbeMode::from_raw(-3), ProbeMode::WhileDisabled);
        assert_eq!(ProbeMode::from_raw(2), ProbeMode::Always);
        assert_eq!(ProbeMode::from_raw(12), ProbeMode::Always);
    }

    #[test]
    fn row_error_names_id_and_fault() {
        let err = RowError {
            id: 7,
            fault: RowFault::Resources {
                value: "vm=x".into(),
                reason: ResourceListError::InvalidCapacity {
                    name: "vm".into(),
                    value: "x".into(),
                },
            },
        };
        assert_eq!(
            err.to_string(),
            "destination 7 skipped: bad resources \"vm=x\": capacity \"x\" of resource \"vm\" is not a non-negative integer"
        );
    }
}
