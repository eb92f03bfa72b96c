//! Failure counting: a destination that failed `failures_to_disable` times in a row
//! is disabled by failover, never below `min_enabled` in its group; each change is
//! logged and published as a status event.

use tracing::{debug, info};

use crate::events::{ChangeSource, StatusChange};
use crate::proxy::Proxy;

impl Proxy {
    /// A destination failed a call: an error response of its own, or silence or a
    /// transport failure towards a request siplb had checked.
    pub(crate) fn blame(&mut self, id: u32, reason: &str) {
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
                self.status_changed(id, false, ChangeSource::Failover, reason.to_owned());
            }
            Ok(siplb_balance::FailoverDisable::KeptByFloor) => {
                info!(
                    destination = id,
                    reason,
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
        enabled: bool,
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
            old = if enabled { "disabled" } else { "enabled" },
            new = if enabled { "enabled" } else { "disabled" },
            %source,
            reason,
            "destination status changed"
        );
        if enabled {
            self.stats.destinations_enabled += 1;
        } else {
            self.stats.destinations_disabled += 1;
        }
        self.status_event(StatusChange {
            id,
            group,
            uri,
            enabled,
            source,
            reason,
        });
    }
}
