//! Failure counting: a destination that failed `failures_to_disable` times in a row
//! is disabled by failover, never below `min_enabled` in its group; each change is
//! logged and published as a status event.

use std::fmt;

use tracing::{debug, info};

use crate::addr::TargetError;
use crate::events::{ChangeSource, NewStatus, StatusChange};
use crate::proxy::Proxy;

/// Why a destination is blamed for a call; its text is the reason of the status
/// event when the destination is disabled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Its URI gives nothing siplb can send to.
    Unreachable(TargetError),
    /// It answered the INVITE with this 5xx or 6xx.
    Status(u16),
    /// No final response to the INVITE in time (a local 408), before it rang.
    Timeout,
    /// The transport could not deliver the INVITE.
    Transport,
    /// siplb has no listener to reach it from.
    NoListener,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Unreachable(e) => write!(f, "cannot send to it: {e}"),
            Fault::Status(code) => write!(f, "{code} reply to INVITE"),
            Fault::Timeout => f.write_str("no reply to INVITE (local 408)"),
            Fault::Transport => f.write_str("transport error"),
            Fault::NoListener => f.write_str("no listener for its transport and address family"),
        }
    }
}

impl Proxy {
    /// A destination failed a call: an error response of its own, or silence or a
    /// transport failure towards a request siplb had checked.
    pub(crate) fn blame(&mut self, id: u32, fault: &Fault) {
        let count = self.failures.entry(id).or_insert(0);
        *count += 1;
        if *count < self.settings.failures_to_disable {
            return;
        }
        *count = 0;
        match self
            .balancer
            .disable_by_failover(id, self.settings.min_enabled)
        {
            Ok(outcome) if outcome.changed() => {
                self.status_changed(
                    id,
                    NewStatus::Disabled,
                    ChangeSource::Failover,
                    fault.to_string(),
                );
            }
            Ok(siplb_balance::FailoverDisable::KeptByFloor) => {
                info!(
                    destination = id,
                    reason = %fault,
                    "destination failed but kept enabled: the group is at its min_enabled floor"
                );
            }
            Ok(_) => {}
            Err(e) => debug!(error = %e, "failed destination no longer in the table"),
        }
    }

    /// A destination answered: its count of failures in a row starts again.
    pub(crate) fn absolve(&mut self, id: u32) {
        self.failures.remove(&id);
    }

    /// Logs a status change and queues it for publication.
    pub(crate) fn status_changed(
        &mut self,
        id: u32,
        status: NewStatus,
        source: ChangeSource,
        reason: String,
    ) {
        let (group, uri) = self
            .balancer
            .destination(id)
            .map(|d| (d.group, d.uri.to_string()))
            .unwrap_or_default();
        info!(
            destination = id,
            group,
            uri,
            new = %status,
            %source,
            reason,
            "destination status changed"
        );
        match status {
            NewStatus::Enabled => self.stats.destinations_enabled += 1,
            NewStatus::Disabled => self.stats.destinations_disabled += 1,
            NewStatus::Drained => self.stats.destinations_drained += 1,
        }
        self.status_event(StatusChange {
            id,
            group,
            uri,
            status,
            source,
            reason,
        });
    }

    /// Publishes each draining destination that carries no call, once per drain. The
    /// core calls it after every input; the driver calls it when an operator has just
    /// started a drain, so that an idle destination is reported at once.
    pub fn report_drains(&mut self) {
        for id in self.balancer.newly_drained() {
            self.status_changed(
                id,
                NewStatus::Drained,
                ChangeSource::Operator,
                "its last call ended".to_owned(),
            );
        }
    }
}
