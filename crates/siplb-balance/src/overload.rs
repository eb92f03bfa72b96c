//! What a destination asked of its clients with RFC 7339 overload control: a
//! reduction of new calls, in percent, until a time on the balancer's clock.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use parking_lot::Mutex;

/// The latest feedback of one destination. Kept across reloads like its status.
#[derive(Debug, Default)]
pub(crate) struct OverloadCell {
    percent: AtomicU8,
    /// Nanoseconds on the balancer's clock.
    until: AtomicU64,
    /// The `oc-seq` of the feedback in force, to leave older ones aside.
    seq: Mutex<Option<f64>>,
}

/// One response's `oc` parameters, as the destination sent them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OverloadFeedback {
    /// `oc`: the reduction asked for, 0 to 100 percent.
    pub percent: u8,
    /// `oc-validity` in milliseconds; 0 ends overload control.
    pub validity_ms: u64,
    /// `oc-seq`, when present.
    pub seq: Option<f64>,
}

impl OverloadCell {
    /// Applies feedback received at `now`; false when its `oc-seq` is older than that
    /// of the feedback in force, or the same (a copy of feedback already applied).
    pub(crate) fn apply(&self, feedback: OverloadFeedback, now: u64) -> bool {
        let mut seq = self.seq.lock();
        // Once the feedback in force has expired its sequence number goes too (RFC 7339
        // 5.4), so a destination that restarted its counter is heard again.
        if now >= self.until.load(Ordering::Relaxed) {
            *seq = None;
        }
        if let (Some(new), Some(old)) = (feedback.seq, *seq)
            && new <= old
        {
            return false;
        }
        *seq = feedback.seq.or(*seq);
        let until = now.saturating_add(feedback.validity_ms.saturating_mul(1_000_000));
        let percent = if feedback.validity_ms == 0 {
            0
        } else {
            feedback.percent.min(100)
        };
        self.percent.store(percent, Ordering::Relaxed);
        self.until.store(until, Ordering::Relaxed);
        true
    }

    /// The reduction in force at `now`, 0 when none.
    pub(crate) fn reduction(&self, now: u64) -> u8 {
        let percent = self.percent.load(Ordering::Relaxed);
        if percent == 0 || now >= self.until.load(Ordering::Relaxed) {
            0
        } else {
            percent
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fb(percent: u8, validity_ms: u64, seq: Option<f64>) -> OverloadFeedback {
        OverloadFeedback {
            percent,
            validity_ms,
            seq,
        }
    }

    #[test]
    fn feedback_holds_for_its_validity_and_older_sequences_are_left_aside() {
        let c = OverloadCell::default();
        let ms = 1_000_000;
        assert_eq!(c.reduction(0), 0);
        assert!(c.apply(fb(50, 500, Some(10.5)), 0));
        assert_eq!(c.reduction(499 * ms), 50);
        assert_eq!(c.reduction(500 * ms), 0, "expired");
        assert!(!c.apply(fb(90, 500, Some(10.4)), 400 * ms), "older");
        assert!(!c.apply(fb(90, 500, Some(10.5)), 400 * ms), "a copy");
        assert_eq!(c.reduction(400 * ms), 50);
        // Expired: the next feedback applies whatever its sequence number (a
        // destination that restarted its counter).
        assert_eq!(c.reduction(600 * ms), 0);
        assert!(c.apply(fb(70, 500, Some(1.0)), 600 * ms));
        assert_eq!(c.reduction(600 * ms), 70);
        assert!(
            !c.apply(fb(90, 500, Some(0.5)), 650 * ms),
            "older than the one in force"
        );
        assert!(c.apply(fb(120, 1000, Some(11.0)), 650 * ms));
        assert_eq!(c.reduction(700 * ms), 100, "capped at 100");
        assert!(c.apply(fb(30, 0, Some(12.0)), 800 * ms));
        assert_eq!(c.reduction(800 * ms), 0, "oc-validity=0 ends it");
        // Without oc-seq, each feedback applies.
        assert!(c.apply(fb(20, 100, None), 900 * ms));
        assert_eq!(c.reduction(900 * ms), 20);
    }
}
