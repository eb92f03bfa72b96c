//! Read-only views of the table for the management interface, metrics and probing.

use std::sync::Arc;

use crate::names::Resolution;
use crate::status::DestinationStatus;
use crate::table::Destination;
use crate::uri::Host;

/// One destination as `lb_list` shows it, plus what probing and metrics need.
///
/// Loads are read one by one without stopping calls, so a snapshot taken under traffic is
/// consistent per counter, not across counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationSnapshot {
    /// The row's `dst_uri`.
    pub uri: Arc<str>,
    /// The row's `id`.
    pub id: u32,
    /// The row's `group_id`.
    pub group: u32,
    /// Enabled for new calls.
    pub enabled: bool,
    /// Probing may re-enable it.
    pub auto_reenable: bool,
    /// Drained by the operator: enabled, but no new calls.
    pub draining: bool,
    /// The reduction of new calls it asked for (RFC 7339), in percent, while in force.
    pub overload: Option<u8>,
    /// Per resource, in the row's written order.
    pub resources: Vec<ResourceSnapshot>,
    /// The row's `attrs`.
    pub attrs: Option<Arc<str>>,
    /// The row's raw `probe_mode`; decode with [`crate::ProbeMode::from_raw`].
    pub probe_mode: i32,
    /// Status code of the last probe reply (408 when none came), if probed.
    pub last_probe: Option<u16>,
    /// Average round-trip time of successful probes.
    pub probe_rtt: Option<std::time::Duration>,
    /// The row's `description`.
    pub description: Option<Arc<str>>,
    /// Host of the URI.
    pub host: Host,
    /// Port of the URI, 0 when absent.
    pub port: u16,
    /// For a URI naming a host: what it last resolved to, in the order they are tried.
    pub resolution: Option<Arc<Resolution>>,
}

/// One resource of a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceSnapshot {
    /// Resource name.
    pub name: Arc<str>,
    /// Current capacity (the row's value, or the last resize).
    pub max: u32,
    /// Calls currently holding it (in a cluster, every node's).
    pub load: u32,
    /// Of those, this node's calls.
    pub local: u32,
}

/// Identity of a destination found by address (`lb_is_destination`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationInfo {
    /// The row's `id`.
    pub id: u32,
    /// The row's `group_id`.
    pub group: u32,
    /// The row's `dst_uri`.
    pub uri: Arc<str>,
    /// The row's `attrs`.
    pub attrs: Option<Arc<str>>,
}

impl DestinationSnapshot {
    pub(crate) fn of(d: &Destination, now: u64) -> Self {
        let DestinationStatus {
            enabled,
            auto_reenable,
            draining,
        } = d.status.get();
        let (last_probe, probe_rtt) = d.status.probe().get();
        Self {
            last_probe,
            probe_rtt,
            uri: Arc::clone(&d.uri),
            id: d.id,
            group: d.group,
            enabled,
            auto_reenable,
            draining,
            overload: Some(d.overload.reduction(now)).filter(|&r| r > 0),
            resources: d
                .slots
                .iter()
                .map(|s| ResourceSnapshot {
                    name: Arc::clone(&s.name),
                    max: s.capacity(),
                    load: s.load(),
                    local: s.local(),
                })
                .collect(),
            attrs: d.attrs.clone(),
            probe_mode: d.probe_mode,
            description: d.description.clone(),
            host: d.host.clone(),
            port: d.port,
            resolution: d.name.as_ref().map(|n| n.resolution()),
        }
    }
}

impl DestinationInfo {
    pub(crate) fn of(d: &Destination) -> Self {
        Self {
            id: d.id,
            group: d.group,
            uri: Arc::clone(&d.uri),
            attrs: d.attrs.clone(),
        }
    }
}
