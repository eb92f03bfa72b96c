//! Probing destinations with OPTIONS (SPEC section 4): mode 1 probes a disabled
//! destination until it answers, mode 2 probes always and disables one that stops
//! answering. Probes are ordinary non-INVITE client transactions.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use siplb_balance::ProbeMode;
use siplb_sip::Message;
use siplb_txn::{ClientEvent, Timers};
use tracing::debug;

use crate::addr::{Peer, TargetError, peer_at, peer_of_uri_text};
use crate::agenda::Due;
use crate::events::{ChangeSource, NewStatus};
use crate::proxy::Proxy;
use crate::transactions::{ClientRole, Outgoing};

/// What siplb knows of one destination's probes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeState {
    /// A probe is on its way; no second one is sent meanwhile.
    pub(crate) pending: bool,
    pub(crate) sent_at: Option<Instant>,
    pub(crate) last_sent: Option<Instant>,
    /// Which of a named destination's addresses the pending probe went to.
    pub(crate) address: usize,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    /// The last final status (408 for a timeout, 503 for a transport error).
    pub last_status: Option<u16>,
    /// Round-trip time of probes, as a moving average (1/8 weight to the newest).
    pub rtt: Option<Duration>,
    pub sent: u64,
}

/// A per-destination probe interval from the row's `attrs`: `probe_interval=10`
/// (seconds), among other `;`- or `,`-separated `key=value` items.
pub(crate) fn probe_interval_override(attrs: &str) -> Option<Duration> {
    attrs
        .split([';', ','])
        .filter_map(|item| item.split_once('='))
        .find(|(k, _)| k.trim() == "probe_interval")
        .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
}

impl Proxy {
    /// Probe state per destination id, for `lb_list` and metrics.
    pub fn probe_states(&self) -> impl Iterator<Item = (u32, &ProbeState)> + '_ {
        self.probes.iter().map(|(id, s)| (*id, s))
    }

    pub(crate) fn probe_tick(&mut self, now: Instant) {
        let global = self.settings.probing.interval;
        let mut next_tick = global;
        // In a cluster one node probes; the others learn its results from the shared
        // status.
        let destinations = if self.balancer.probes_here() {
            self.balancer.snapshot()
        } else {
            Vec::new()
        };
        for d in destinations {
            let wanted = match ProbeMode::from_raw(d.probe_mode) {
                ProbeMode::Never => false,
                // Operator-disabled destinations are left alone until the operator acts.
                ProbeMode::WhileDisabled => !d.enabled && d.auto_reenable,
                ProbeMode::Always => d.auto_reenable,
            };
            if !wanted {
                continue;
            }
            let interval = d
                .attrs
                .as_deref()
                .and_then(probe_interval_override)
                .unwrap_or(global);
            next_tick = next_tick.min(interval);
            let state = self.probes.get(&d.id);
            let pending = state.is_some_and(|p| p.pending);
            // Ticks come at the shortest interval in use; a destination with a longer
            // one waits for its own.
            let due = state.and_then(|p| p.last_sent).is_none_or(|at| {
                now.saturating_duration_since(at) + Duration::from_millis(5) >= interval
            });
            if due && !pending {
                // A name with no address yet is not probed: that is no answer from it.
                let peer = match &d.resolution {
                    None => peer_of_uri_text(&d.uri),
                    Some(r) => match r.addresses.first() {
                        Some(&addr) => peer_at(&d.uri, addr),
                        None => continue,
                    },
                };
                self.send_probe(now, d.id, &d.uri, peer, 0);
            }
        }
        self.agenda.schedule(now + next_tick, Due::ProbeTick);
    }

    fn send_probe(
        &mut self,
        now: Instant,
        id: u32,
        uri: &str,
        peer: Result<Peer, TargetError>,
        address: usize,
    ) {
        let peer = match peer {
            Ok(p) => p,
            Err(e) => {
                debug!(destination = id, uri, error = %e, "cannot probe");
                self.probe_result(now, id, 503);
                return;
            }
        };
        let Some(via) = self.via_for(&peer) else {
            return;
        };
        let tag = self.tokens.tag();
        let call_id = self.tokens.tag();
        self.probe_seq += 1;
        let probing = &self.settings.probing;
        let mut text = String::with_capacity(400);
        let _ = write!(
            text,
            "{m} {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <{from}>;tag={tag}\r\nTo: <{uri}>\r\nCall-ID: probe-{call_id}-{seq}\r\nCSeq: 1 {m}\r\nContent-Length: 0\r\n\r\n",
            m = probing.method,
            from = probing.from,
            seq = self.probe_seq,
        );
        let Ok(request) = Message::parse(text.into_bytes()) else {
            debug!(destination = id, uri, "probe request does not parse");
            return;
        };
        let timers = Timers {
            non_invite_timeout: probing.timeout,
            ..self.settings.timers
        };
        let state = self.probes.entry(id).or_default();
        state.pending = true;
        state.address = address;
        state.sent_at = Some(now);
        state.last_sent = Some(now);
        state.sent += 1;
        self.stats.probes_sent += 1;
        if let Err(e) = self.start_client(
            Outgoing::Parsed(request),
            peer,
            ClientRole::Probe(id),
            timers,
            now,
        ) {
            debug!(destination = id, error = %e, "probe not sent");
        }
    }

    pub(crate) fn on_probe_event(&mut self, now: Instant, id: u32, event: ClientEvent) {
        let status = match event {
            ClientEvent::Final(r) => r.status().unwrap_or(500),
            ClientEvent::Timeout => 408,
            ClientEvent::TransportError if self.probe_next_address(now, id) => return,
            ClientEvent::TransportError => 503,
            _ => return,
        };
        self.probe_result(now, id, status);
    }

    /// A probe failed at the transport: a destination named by host is probed on its
    /// next address, as its calls would be, before the probe counts as failed.
    fn probe_next_address(&mut self, now: Instant, id: u32) -> bool {
        let next = self.probes.get(&id).map_or(1, |p| p.address + 1);
        let Some(d) = self.balancer.destination(id) else {
            return false;
        };
        let Some(&addr) = d.resolution.as_ref().and_then(|r| r.addresses.get(next)) else {
            return false;
        };
        debug!(destination = id, %addr, "probe failed at the transport; probing the next address");
        self.send_probe(now, id, &d.uri, peer_at(&d.uri, addr), next);
        true
    }

    fn probe_result(&mut self, now: Instant, id: u32, status: u16) {
        let probing = &self.settings.probing;
        let success = status == 200 || probing.reply_codes.contains(&status);
        // A reply between 201 and 399 that is not listed says nothing either way.
        let failure = !success && status >= 400;
        let (failures_to_disable, successes_to_enable) =
            (probing.failures_to_disable, probing.successes_to_enable);
        let state = self.probes.entry(id).or_default();
        state.pending = false;
        state.last_status = Some(status);
        if let Some(sent) = state.sent_at.take()
            && success
        {
            let sample = now.saturating_duration_since(sent);
            state.rtt = Some(match state.rtt {
                None => sample,
                Some(avg) => (avg * 7 + sample) / 8,
            });
        }
        if success {
            state.consecutive_failures = 0;
            state.consecutive_successes += 1;
        } else if failure {
            state.consecutive_successes = 0;
            state.consecutive_failures += 1;
        }
        let (fails, oks) = (state.consecutive_failures, state.consecutive_successes);
        let rtt = state.rtt;
        if self.balancer.record_probe(id, status, rtt).is_err() {
            // Reloaded away while its probe was out: nothing to record on.
            return;
        }
        if success {
            self.stats.probe_successes += 1;
        } else if failure {
            self.stats.probe_failures += 1;
        }
        let Some(d) = self.balancer.destination(id) else {
            return;
        };
        if success && !d.enabled && oks >= successes_to_enable {
            if self.balancer.enable_by_probe(id).unwrap_or(false) {
                self.status_changed(
                    id,
                    NewStatus::Enabled,
                    ChangeSource::Probe,
                    format!("{status} reply to probe"),
                );
            }
        } else if failure
            && d.enabled
            && ProbeMode::from_raw(d.probe_mode) == ProbeMode::Always
            && fails >= failures_to_disable
            && self.balancer.disable_by_probe(id).unwrap_or(false)
        {
            let reason = if status == 408 {
                "no reply to probe".to_owned()
            } else {
                format!("{status} reply to probe")
            };
            self.status_changed(id, NewStatus::Disabled, ChangeSource::Probe, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::probe_interval_override;

    #[test]
    fn attrs_override() {
        assert_eq!(
            probe_interval_override("probe_interval=10"),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            probe_interval_override("foo=bar; probe_interval = 3"),
            Some(Duration::from_secs(3))
        );
        assert_eq!(probe_interval_override("probe_interval=0"), None);
        assert_eq!(probe_interval_override("probe_interval=x"), None);
        assert_eq!(probe_interval_override("opaque"), None);
    }
}
