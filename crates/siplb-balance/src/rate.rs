//! Calls-per-second caps (`max_cps=N` among a destination's `attrs`, SPEC section 8):
//! an exact sliding window of one second over the destination's last N selections.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

/// The highest `max_cps` accepted: the window keeps one timestamp per call.
pub const MAX_CPS: u32 = 100_000;

const WINDOW_NANOS: u64 = 1_000_000_000;

/// The times of a destination's last `cap` selections, oldest next to be replaced. The
/// destination has taken `cap` calls in the last second exactly when the oldest of
/// them is less than a second old. One allocation when the table loads, none per call.
#[derive(Debug)]
pub(crate) struct Window {
    cap: u32,
    ring: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    /// Nanoseconds on the balancer's clock; `u64::MAX` for a slot never used.
    stamps: Box<[u64]>,
    next: usize,
}

impl Window {
    pub(crate) fn new(cap: u32) -> Window {
        Window {
            cap,
            ring: Mutex::new(Ring {
                stamps: vec![u64::MAX; cap as usize].into(),
                next: 0,
            }),
        }
    }

    pub(crate) fn cap(&self) -> u32 {
        self.cap
    }

    /// True when `cap` calls were taken in the second before `now`.
    pub(crate) fn is_full(&self, now: u64) -> bool {
        let ring = self.ring.lock();
        let oldest = ring.stamps.get(ring.next).copied().unwrap_or(u64::MAX);
        oldest != u64::MAX && now.saturating_sub(oldest) < WINDOW_NANOS
    }

    pub(crate) fn record(&self, now: u64) {
        let mut ring = self.ring.lock();
        let next = ring.next;
        if let Some(slot) = ring.stamps.get_mut(next) {
            *slot = now;
        }
        ring.next = (next + 1) % ring.stamps.len().max(1);
    }
}

/// The balancer's notion of now for the windows, set by the thread that selects (the
/// proxy core, from the instants it is given), so that virtual time drives it in tests.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    epoch: OnceLock<Instant>,
    nanos: AtomicU64,
}

impl Clock {
    pub(crate) fn set(&self, now: Instant) {
        let epoch = *self.epoch.get_or_init(|| now);
        let nanos =
            u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX - 1);
        // A read first: this runs for every input of the core.
        if nanos > self.nanos.load(Ordering::Relaxed) {
            self.nanos.store(nanos, Ordering::Relaxed);
        }
    }

    pub(crate) fn nanos(&self) -> u64 {
        self.nanos.load(Ordering::Relaxed)
    }
}

/// `max_cps` from a row's `attrs` (`;`-separated `key=value`): `Ok(None)` without it.
pub(crate) fn max_cps(attrs: Option<&str>) -> Result<Option<u32>, String> {
    let Some(value) = attrs.into_iter().flat_map(|a| a.split(';')).find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == "max_cps").then_some(v.trim())
    }) else {
        return Ok(None);
    };
    match value.parse::<u32>() {
        Ok(n) if (1..=MAX_CPS).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "max_cps={value} is not a whole number from 1 to {MAX_CPS}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_exact() {
        let w = Window::new(3);
        let ms = |n: u64| n * 1_000_000;
        for t in [0, 100, 200] {
            assert!(!w.is_full(ms(t)));
            w.record(ms(t));
        }
        assert!(w.is_full(ms(200)));
        assert!(
            w.is_full(ms(999)),
            "the call at 0 ms is less than a second old"
        );
        assert!(!w.is_full(ms(1000)), "it is a second old: one slot free");
        w.record(ms(1000));
        assert!(w.is_full(ms(1000)));
        assert!(!w.is_full(ms(1100)));
    }

    #[test]
    fn max_cps_is_read_from_attrs() {
        assert_eq!(max_cps(None), Ok(None));
        assert_eq!(max_cps(Some("probe_interval=10")), Ok(None));
        assert_eq!(
            max_cps(Some("probe_interval=10; max_cps = 20")),
            Ok(Some(20))
        );
        for bad in ["max_cps=0", "max_cps=x", "max_cps=-1", "max_cps=100001"] {
            assert!(max_cps(Some(bad)).is_err(), "{bad}");
        }
    }
}
