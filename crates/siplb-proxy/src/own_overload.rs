//! RFC 7339 overload control, server side: when siplb's own core cannot keep up, it
//! asks callers that announced support (`oc` in their Via) to send fewer new calls,
//! and turns away the same share of new calls from callers that did not (section
//! 5.10.2), so that what it does take it finishes.
//!
//! The signal is how busy the core thread is: the driver reports the time it had work
//! (handling input, or with input left waiting) and the controller compares that share
//! of wall time, per window, with a target. Wall time, not CPU time: a core starved of CPU by
//! other processes or a quota is as overloaded as one with too much to do, and shows
//! it the same way, as time spent not waiting.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use siplb_sip::{Message, Via};
use tracing::{info, warn};

use crate::settings::OwnOverloadSettings;

/// How long the busy share is measured before the reduction is revised: long enough
/// to hold hundreds of messages at the rates where it matters, short enough that a
/// burst is answered within a few retransmission intervals.
const WINDOW: Duration = Duration::from_millis(200);

/// The share of new calls always admitted: a controller that admitted none would see
/// no traffic and learn nothing.
const MIN_ADMITTED: f64 = 0.05;

/// A busy share at which the core had no idle time worth the name.
const SATURATED: f64 = 0.98;

/// The most the admitted share grows per window: it falls as fast as the busy share
/// says, and climbs back in steps, so that callers held back do not all return at once.
const MAX_STEP_UP: f64 = 0.1;

/// The controller and the feedback it gives.
#[derive(Debug)]
pub(crate) struct OwnOverload {
    settings: OwnOverloadSettings,
    window_start: Option<Instant>,
    busy: Duration,
    /// The share of new calls admitted (1 when not overloaded).
    admitted: f64,
    /// The reduction asked of callers, in percent: `round(100 * (1 - admitted))`.
    percent: u8,
    /// The busy share of the last window.
    last_busy: f64,
    /// `oc-seq`, in milliseconds: the time the reduction last changed.
    seq_ms: u64,
    /// An instant and the Unix time at it, so `oc-seq` reads as a timestamp and grows
    /// across restarts (RFC 7339 section 4.4). Without one, time since the first report.
    wall: Option<(Instant, u64)>,
}

/// What the controller reports about siplb's own load.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CoreLoad {
    /// The share of the last window the core spent handling input (0 to 1).
    pub busy: f64,
    /// The reduction of new calls asked for, in percent (0 when not overloaded).
    pub reduction: u8,
}

impl OwnOverload {
    pub(crate) fn new(settings: OwnOverloadSettings) -> OwnOverload {
        OwnOverload {
            settings,
            window_start: None,
            busy: Duration::ZERO,
            admitted: 1.0,
            percent: 0,
            last_busy: 0.0,
            seq_ms: 0,
            wall: None,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.settings.feedback
    }

    pub(crate) fn set_wall_clock(&mut self, now: Instant, unix_ms: u64) {
        self.wall = Some((now, unix_ms));
        // From the start, so that a restart's first "not overloaded" outranks what the
        // previous run said last.
        self.seq_ms = self.seq_ms.max(unix_ms);
    }

    pub(crate) fn load(&self) -> CoreLoad {
        CoreLoad {
            busy: self.last_busy,
            reduction: self.percent,
        }
    }

    /// The core spent `busy` handling input, ending at `now`.
    pub(crate) fn note_busy(&mut self, now: Instant, busy: Duration) {
        let start = *self.window_start.get_or_insert(now);
        self.busy += busy;
        let elapsed = now.saturating_duration_since(start);
        if elapsed < WINDOW {
            return;
        }
        let share = (self.busy.as_secs_f64() / elapsed.as_secs_f64()).min(1.0);
        self.window_start = Some(now);
        self.busy = Duration::ZERO;
        self.last_busy = share;
        if !self.settings.feedback {
            return;
        }
        let target = self.settings.target;
        // The occupancy rule: admit in proportion to how far the busy share is from
        // the target. A share of 1 says only "at least saturated", and input queued
        // meanwhile still has to be worked off: halve then, which a load of twice what
        // the core can do needs at once.
        let scaled = self.admitted * target / share.max(0.01);
        let admitted = if share >= SATURATED {
            self.admitted / 2.0
        } else if share > target {
            scaled
        } else {
            scaled.min(self.admitted + MAX_STEP_UP)
        };
        self.admitted = admitted.clamp(MIN_ADMITTED, 1.0);
        let percent = percent_of(1.0 - self.admitted);
        if percent > 0 && self.percent == 0 {
            warn!(
                busy = share,
                reduction = percent,
                "core overloaded: asking callers for fewer new calls, shedding those of callers without overload control"
            );
        } else if percent == 0 && self.percent > 0 {
            info!(
                busy = share,
                "core no longer overloaded: all new calls admitted"
            );
        }
        if percent != self.percent {
            self.percent = percent;
            // Values that change carry a new, larger sequence number, or the caller
            // keeps the old ones (section 5.2).
            self.seq_ms = self.unix_ms(now).max(self.seq_ms + 1);
        }
    }

    fn unix_ms(&mut self, now: Instant) -> u64 {
        let (at, base) = *self.wall.get_or_insert((now, 0));
        let since = now.saturating_duration_since(at).as_millis();
        base.saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    /// Turns away this new call of a caller that gives no overload control, `draw`
    /// being uniform: the same share callers that do are asked to hold back.
    pub(crate) fn sheds(&self, draw: u64) -> bool {
        self.percent > 0 && draw % 100 < u64::from(self.percent)
    }

    /// `hop` (the caller's Via, as it sent it) with siplb's feedback in place of the
    /// overload parameters it carried.
    pub(crate) fn feedback_hop(&self, hop: &str) -> Option<String> {
        let mut out = Via::parse(hop)
            .ok()?
            .text_without_params(hop, is_overload_param);
        // Not overloaded: a reduction of 0 that holds no time, which ends any in force
        // (section 5.2), under the sequence number of the last change.
        let validity = if self.percent == 0 {
            0
        } else {
            self.settings.validity.as_millis()
        };
        let _ = write!(
            out,
            ";oc={};oc-algo=\"loss\";oc-validity={validity};oc-seq={}.{:03}",
            self.percent,
            self.seq_ms / 1000,
            self.seq_ms % 1000
        );
        Some(out)
    }
}

fn percent_of(share: f64) -> u8 {
    // `share` is within 0..=0.95 by construction; the clamp keeps the cast exact.
    (share * 100.0).round().clamp(0.0, 100.0) as u8
}

fn is_overload_param(name: &str) -> bool {
    ["oc", "oc-algo", "oc-validity", "oc-seq"]
        .iter()
        .any(|p| name.eq_ignore_ascii_case(p))
}

/// The sender of `request` takes overload feedback (see [`announces_support`]). Most
/// top Vias have no `oc` at all, which one scan of their bytes tells before any
/// parameter is parsed.
pub(crate) fn sender_announces(request: &Message) -> bool {
    if let Some(params) = request.top_via_params_bytes()
        && !mentions_oc(params)
    {
        return false;
    }
    request.top_via().is_ok_and(|via| announces_support(&via))
}

fn mentions_oc(params: &[u8]) -> bool {
    memchr::memchr2_iter(b'o', b'O', params).any(|at| {
        params
            .get(at + 1)
            .is_some_and(|c| c.eq_ignore_ascii_case(&b'c'))
    })
}

/// The sender of a request with this top Via takes overload feedback with the loss
/// algorithm: `oc` is present, and `oc-algo`, when given, lists `loss`.
pub(crate) fn announces_support(via: &Via<'_>) -> bool {
    let mut oc = false;
    let mut loss = true;
    for (name, value) in via.params.iter() {
        if name.eq_ignore_ascii_case("oc") {
            oc = true;
        } else if name.eq_ignore_ascii_case("oc-algo") {
            loss = value.is_some_and(|v| {
                v.trim_matches('"')
                    .split(',')
                    .any(|a| a.trim().eq_ignore_ascii_case("loss"))
            });
        }
    }
    oc && loss
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn controller() -> OwnOverload {
        OwnOverload::new(OwnOverloadSettings {
            feedback: true,
            target: 0.9,
            validity: Duration::from_secs(2),
        })
    }

    /// A controller that has had its first report at `t`.
    fn started(t: Instant) -> OwnOverload {
        let mut c = controller();
        c.set_wall_clock(t, 1_700_000_000_000);
        c.note_busy(t, Duration::ZERO);
        c
    }

    /// Reports `windows` whole windows of `busy_share` from `*t` on.
    fn run(c: &mut OwnOverload, t: &mut Instant, busy_share: f64, windows: u32) {
        for _ in 0..windows {
            *t += WINDOW;
            c.note_busy(*t, WINDOW.mul_f64(busy_share));
        }
    }

    #[test]
    fn the_reduction_follows_the_busy_share_and_returns_in_steps() {
        let mut t = Instant::now();
        let mut c = started(t);
        run(&mut c, &mut t, 0.5, 5);
        assert_eq!(c.load().reduction, 0, "under the target: nothing asked");
        run(&mut c, &mut t, 0.95, 1);
        assert_eq!(c.load().reduction, 5, "0.9 / 0.95 of what was admitted");
        run(&mut c, &mut t, 1.0, 1);
        assert_eq!(c.load().reduction, 53, "saturated: half of it");
        run(&mut c, &mut t, 1.0, 100);
        assert_eq!(c.load().reduction, 95, "never below the floor");
        assert!((c.load().busy - 1.0).abs() < 1e-9);
        // Idle again: back by at most 10 points per window.
        run(&mut c, &mut t, 0.05, 1);
        assert_eq!(c.load().reduction, 85);
        run(&mut c, &mut t, 0.05, 9);
        assert_eq!(c.load().reduction, 0);
    }

    #[test]
    fn each_change_gets_a_larger_sequence_number() {
        let mut t = Instant::now();
        let mut c = started(t);
        let hop = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa;oc;oc-algo=\"loss,rate\"";
        run(&mut c, &mut t, 0.5, 2);
        assert_eq!(
            c.feedback_hop(hop).unwrap(),
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa;oc=0;oc-algo=\"loss\";oc-validity=0;oc-seq=1700000000.000"
        );
        run(&mut c, &mut t, 1.0, 1);
        assert_eq!(
            c.feedback_hop(hop).unwrap(),
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa;oc=50;oc-algo=\"loss\";oc-validity=2000;oc-seq=1700000000.600"
        );
        // A wall clock stepped back still moves the sequence on.
        c.set_wall_clock(t, 0);
        run(&mut c, &mut t, 1.0, 1);
        assert_eq!(c.load().reduction, 75);
        assert_eq!(c.seq_ms, 1_700_000_000_601);
    }

    #[test]
    fn shedding_takes_the_share_asked_of_others() {
        let mut t = Instant::now();
        let mut c = started(t);
        assert!(!(0..100).any(|d| c.sheds(d)));
        run(&mut c, &mut t, 1.0, 3);
        let shed = (0..1000).filter(|&d| c.sheds(d)).count();
        assert_eq!(shed, usize::from(c.load().reduction) * 10);
    }

    #[test]
    fn off_it_measures_but_never_asks_nor_sheds() {
        let mut c = OwnOverload::new(OwnOverloadSettings {
            feedback: false,
            ..controller().settings
        });
        let mut t = Instant::now();
        c.note_busy(t, Duration::ZERO);
        run(&mut c, &mut t, 1.0, 10);
        assert_eq!(
            c.load(),
            CoreLoad {
                busy: 1.0,
                reduction: 0
            },
            "measured all the same"
        );
        assert!(!c.sheds(0));
    }

    #[test]
    fn the_quick_look_never_misses_an_announcement() {
        let request = |p: &str| {
            Message::parse(format!(
                "INVITE sip:x@192.0.2.9 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa{p}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@192.0.2.9>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            ))
            .unwrap()
        };
        for (p, yes) in [
            (";oc", true),
            (";rport;OC", true),
            (";rport", false),
            (";doc=1", false),
            (";oc;oc-algo=\"rate\"", false),
        ] {
            assert_eq!(sender_announces(&request(p)), yes, "{p}");
        }
        assert!(!mentions_oc(b";branch=z9hG4bKa;rport"));
        assert!(mentions_oc(b";branch=z9hG4bKoC1"));
    }

    #[test]
    fn support_is_oc_with_loss_among_the_algorithms() {
        let via = |p: &str| format!("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa{p}");
        for yes in [";oc", ";OC;oc-algo=\"loss\"", ";oc;oc-algo=\"rate, loss\""] {
            assert!(announces_support(&Via::parse(&via(yes)).unwrap()), "{yes}");
        }
        for no in ["", ";oc-algo=\"loss\"", ";oc;oc-algo=\"rate\"", ";doc"] {
            assert!(!announces_support(&Via::parse(&via(no)).unwrap()), "{no}");
        }
    }
}
