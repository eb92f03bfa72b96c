//! Enabled/disabled state of a destination and who may change it.
//!
//! Two bits, as in the reference: *disabled* keeps new calls away, *no re-enable* (set only by
//! the operator) stops probing from bringing the destination back. Operator-disabled implies
//! disabled, because only the operator sets the second bit and it sets both together.
//!
//! Two more for a drain (SPEC section 8): *draining* keeps new calls away while the
//! destination stays enabled (probes and failover leave it alone), and *drain reported*
//! makes the `drained` event fire once. An operator's `lb_status` clears both.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

const DISABLED: u8 = 1;
const NO_REENABLE: u8 = 2;
const DRAINING: u8 = 4;
const DRAIN_REPORTED: u8 = 8;

// Relaxed is enough throughout: the status guards no other data, and a selection racing a
// status change may see either state, which no ordering could prevent anyway.
#[derive(Debug, Default)]
pub(crate) struct StatusCell(AtomicU8, ProbeCell);

/// The last probe's status code and the probes' average round-trip time, packed in one
/// word so a reader never sees one without the other: `status << 32 | rtt_us + 1`
/// (0 in the low half: no round-trip time), 0 overall: never probed.
#[derive(Debug, Default)]
pub(crate) struct ProbeCell(AtomicU64);

impl ProbeCell {
    pub(crate) fn record(&self, status: u16, rtt: Option<Duration>) {
        let rtt = rtt.map_or(0, |d| {
            u64::try_from(d.as_micros())
                .unwrap_or(u64::MAX)
                .min(u64::from(u32::MAX) - 1)
                + 1
        });
        self.0
            .store(u64::from(status) << 32 | rtt, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> (Option<u16>, Option<Duration>) {
        let v = self.0.load(Ordering::Relaxed);
        let status = u16::try_from(v >> 32).ok().filter(|&s| s != 0);
        let rtt = (v & 0xffff_ffff).checked_sub(1).map(Duration::from_micros);
        (status, rtt)
    }
}

impl StatusCell {
    pub(crate) fn probe(&self) -> &ProbeCell {
        &self.1
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.0.load(Ordering::Relaxed) & DISABLED == 0
    }

    /// Enabled and not draining: a candidate for new calls.
    pub(crate) fn takes_calls(&self) -> bool {
        self.0.load(Ordering::Relaxed) & (DISABLED | DRAINING) == 0
    }

    pub(crate) fn get(&self) -> DestinationStatus {
        let bits = self.0.load(Ordering::Relaxed);
        DestinationStatus {
            enabled: bits & DISABLED == 0,
            auto_reenable: bits & NO_REENABLE == 0,
            draining: bits & DRAINING != 0,
        }
    }

    /// Starts a drain (`lb_drain`); true when it was not draining already.
    pub(crate) fn start_drain(&self) -> bool {
        let before = self.0.fetch_or(DRAINING, Ordering::Relaxed);
        before & DRAINING == 0
    }

    /// True once per drain, the first time it is asked while draining: the caller has
    /// seen the load at zero and reports the destination drained.
    pub(crate) fn report_drained(&self) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                (bits & DRAINING != 0 && bits & DRAIN_REPORTED == 0)
                    .then_some(bits | DRAIN_REPORTED)
            })
            .is_ok()
    }

    /// Draining and not reported drained yet.
    pub(crate) fn drain_pending(&self) -> bool {
        self.0.load(Ordering::Relaxed) & (DRAINING | DRAIN_REPORTED) == DRAINING
    }

    /// Script-, failover- or probe-style disable: probing may bring it back.
    pub(crate) fn disable(&self) -> bool {
        self.0.fetch_or(DISABLED, Ordering::Relaxed) & DISABLED == 0
    }

    pub(crate) fn set_by_operator(&self, enabled: bool) -> bool {
        let bits = if enabled { 0 } else { DISABLED | NO_REENABLE };
        self.0.swap(bits, Ordering::Relaxed) != bits
    }

    /// Takes the status another node of the cluster gave the destination. Returns
    /// whether it changed here; a drain taken on starts unreported.
    pub(crate) fn set_shared(&self, status: DestinationStatus) -> bool {
        let mut bits = 0;
        if !status.enabled {
            bits |= DISABLED;
        }
        if !status.auto_reenable {
            bits |= NO_REENABLE;
        }
        if status.draining {
            bits |= DRAINING;
        }
        let before = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                let reported = if status.draining {
                    old & DRAIN_REPORTED
                } else {
                    0
                };
                Some(bits | reported)
            })
            .unwrap_or_default();
        before & !DRAIN_REPORTED != bits
    }

    pub(crate) fn enable_by_probe(&self) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                (bits & DISABLED != 0 && bits & NO_REENABLE == 0).then_some(bits & !DISABLED)
            })
            .is_ok()
    }
}

/// A destination's state as shown by `lb_list` and `lb_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DestinationStatus {
    /// New calls may be sent to it.
    pub enabled: bool,
    /// Probing may re-enable it (off only after an operator disable).
    pub auto_reenable: bool,
    /// Drained by the operator: no new calls, calls up go on (`lb_drain`).
    pub draining: bool,
}

/// What a failover disable did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailoverDisable {
    /// The destination was enabled and is now disabled.
    Disabled,
    /// It was already disabled; nothing changed.
    AlreadyDisabled,
    /// Disabling it would leave its group with fewer enabled destinations than the floor, so
    /// it stays enabled.
    KeptByFloor,
}

impl FailoverDisable {
    /// Whether the status changed (worth a log line or an event).
    pub fn changed(self) -> bool {
        self == Self::Disabled
    }
}

#[cfg(test)]
mod tests {
    use super::{DestinationStatus, StatusCell};

    fn status(enabled: bool, auto_reenable: bool) -> DestinationStatus {
        DestinationStatus {
            enabled,
            auto_reenable,
            draining: false,
        }
    }

    #[test]
    fn failover_disable_keeps_auto_reenable() {
        let s = StatusCell::default();
        assert_eq!(s.get(), status(true, true));
        assert!(s.disable());
        assert!(!s.disable());
        assert_eq!(s.get(), status(false, true));
        assert!(s.enable_by_probe());
        assert!(!s.enable_by_probe());
        assert_eq!(s.get(), status(true, true));
    }

    #[test]
    fn operator_disable_blocks_probe_until_operator_enables() {
        let s = StatusCell::default();
        assert!(s.set_by_operator(false));
        assert!(!s.set_by_operator(false));
        assert_eq!(s.get(), status(false, false));
        assert!(!s.enable_by_probe());
        assert!(!s.disable());
        assert_eq!(s.get(), status(false, false));
        assert!(s.set_by_operator(true));
        assert!(!s.set_by_operator(true));
        assert_eq!(s.get(), status(true, true));
    }

    #[test]
    fn a_drain_keeps_calls_away_reports_once_and_ends_with_lb_status() {
        let s = StatusCell::default();
        assert!(!s.report_drained(), "not draining");
        assert!(s.start_drain());
        assert!(!s.start_drain());
        assert!(!s.takes_calls());
        assert!(s.is_enabled());
        assert!(s.get().draining && s.get().enabled);
        assert!(s.drain_pending());
        // Failover and probes do not end it.
        assert!(s.disable());
        assert!(s.enable_by_probe());
        assert!(!s.takes_calls());
        assert!(s.report_drained());
        assert!(!s.report_drained(), "once per drain");
        assert!(!s.drain_pending());
        assert!(s.set_by_operator(true), "lb_status ID 1 ends the drain");
        assert!(s.takes_calls());
        assert_eq!(s.get(), status(true, true));
        // A new drain reports again.
        assert!(s.start_drain());
        assert!(s.report_drained());
    }

    #[test]
    fn operator_disable_of_failover_disabled_still_changes() {
        let s = StatusCell::default();
        s.disable();
        assert!(s.set_by_operator(false), "auto-reenable turned off");
        assert!(s.set_by_operator(true));
    }
}

#[cfg(test)]
mod probe_tests {
    use std::time::Duration;

    use super::ProbeCell;

    #[test]
    fn probe_cell_round_trips() {
        let c = ProbeCell::default();
        assert_eq!(c.get(), (None, None));
        c.record(408, None);
        assert_eq!(c.get(), (Some(408), None));
        c.record(200, Some(Duration::from_micros(1234)));
        assert_eq!(c.get(), (Some(200), Some(Duration::from_micros(1234))));
        c.record(200, Some(Duration::ZERO));
        assert_eq!(c.get(), (Some(200), Some(Duration::ZERO)));
        c.record(200, Some(Duration::from_secs(1 << 40)));
        assert_eq!(
            c.get().1,
            Some(Duration::from_micros(u64::from(u32::MAX) - 1))
        );
    }
}
