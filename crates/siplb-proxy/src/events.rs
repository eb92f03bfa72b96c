//! Status changes of destinations, as siplb publishes them (log, webhook, metrics).

use std::fmt;

use crate::persist::DialogChange;

/// What the core reports besides the messages it sends (see the polling contract in
/// [`crate::Proxy`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreEvent {
    /// A destination was disabled or enabled by failover or probing, or drained.
    Status(StatusChange),
    /// A call that holds load was answered or ended (with `[dialog] persist`).
    Dialog(DialogChange),
}

/// Who changed a destination's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeSource {
    Failover,
    Probe,
    Operator,
    Reload,
}

impl fmt::Display for ChangeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChangeSource::Failover => "failover",
            ChangeSource::Probe => "probe",
            ChangeSource::Operator => "operator",
            ChangeSource::Reload => "reload",
        })
    }
}

/// What a destination became.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewStatus {
    Enabled,
    Disabled,
    /// Draining, and its last call has ended (SPEC section 8).
    Drained,
}

impl NewStatus {
    pub fn enabled(enabled: bool) -> NewStatus {
        if enabled {
            NewStatus::Enabled
        } else {
            NewStatus::Disabled
        }
    }
}

impl fmt::Display for NewStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NewStatus::Enabled => "enabled",
            NewStatus::Disabled => "disabled",
            NewStatus::Drained => "drained",
        })
    }
}

/// One destination went from enabled to disabled or back, or finished draining.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    pub id: u32,
    pub group: u32,
    pub uri: String,
    pub status: NewStatus,
    pub source: ChangeSource,
    pub reason: String,
}
