//! Timer durations (RFC 3261 section 17 and Table 4) and transport reliability.

use std::time::{Duration, Instant};

/// Timer settings shared by every transaction.
///
/// Derived timers follow RFC 3261 Table 4: B, H, J, L and the post-timeout grace of an
/// INVITE are 64*T1; K and I are T4; retransmission intervals start at T1 and are
/// capped at T2 where the RFC caps them (E and G, not A).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// Round-trip estimate (default 500 ms).
    pub t1: Duration,
    /// Cap on non-INVITE request and INVITE response retransmission intervals (4 s).
    pub t2: Duration,
    /// How long the network may hold a message (5 s).
    pub t4: Duration,
    /// How long a forwarded INVITE waits for a first response before the TU answers
    /// `408` itself (default 5 s, like OpenSIPS's `fr_timeout`). Timer B is
    /// `min(64*T1, invite_timeout)`.
    pub invite_timeout: Duration,
    /// Timer C: how long an INVITE that got a provisional response waits for a final
    /// one (default 180 s). Reset by every provisional response other than 100
    /// (RFC 3261 section 16.7 step 2). RFC 3261 asks for more than three minutes;
    /// OpenSIPS's `fr_inv_timeout` defaults to 120 s.
    pub proceeding_timeout: Duration,
    /// Timer F: how long a non-INVITE waits for a final response (default 64*T1 =
    /// 32 s; probes use a shorter one). A field, so it does not follow `t1`: use
    /// [`Timers::with_t1`] for that.
    pub non_invite_timeout: Duration,
    /// Timer D: how long an INVITE client transaction absorbs retransmitted non-2xx
    /// finals over UDP (default 32 s, the RFC minimum).
    pub timer_d: Duration,
    /// How long an INVITE server transaction whose TU has sent nothing waits before
    /// it asks for a 100 Trying (default 200 ms, RFC 3261 17.2.1); see
    /// [`crate::ServerTransaction::defer_trying`].
    pub trying_after: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        let t1 = Duration::from_millis(500);
        Timers {
            t1,
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            invite_timeout: Duration::from_secs(5),
            proceeding_timeout: Duration::from_secs(180),
            non_invite_timeout: t1 * 64,
            timer_d: Duration::from_secs(32),
            trying_after: Duration::from_millis(200),
        }
    }
}

impl Timers {
    /// The defaults around another T1, with Timer F kept at 64*T1.
    pub fn with_t1(t1: Duration) -> Timers {
        Timers {
            t1,
            non_invite_timeout: t1.saturating_mul(64),
            ..Timers::default()
        }
    }

    /// 64*T1: Timer B, H, J, L and the upper bound on every wait for a peer.
    pub(crate) fn sixty_four_t1(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    pub(crate) fn timer_b(&self) -> Duration {
        self.sixty_four_t1().min(self.invite_timeout)
    }
}

/// The shortest retransmission interval: a zero T1 or T2 would otherwise make a
/// timer fall due again at the instant it fired, forever.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

pub(crate) fn retransmit_interval(d: Duration) -> Duration {
    d.max(MIN_INTERVAL)
}

/// `now + d`, saturating instead of panicking on an absurd configured duration. The
/// fallback, a year ahead and else `now`, only matters for such durations.
pub(crate) fn deadline(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

/// Whether the transport delivers messages itself (TCP, TLS, SCTP, WS) or may lose
/// them (UDP). Reliable transports get no retransmissions and zero-length D, I, J
/// and K timers (RFC 3261 section 17).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reliability {
    Unreliable,
    Reliable,
}

impl Reliability {
    /// From a Via transport token: only UDP is unreliable among the transports a SIP
    /// Via names.
    pub fn from_via_transport(transport: &str) -> Reliability {
        if transport.eq_ignore_ascii_case("UDP") {
            Reliability::Unreliable
        } else {
            Reliability::Reliable
        }
    }

    pub fn is_reliable(self) -> bool {
        self == Reliability::Reliable
    }

    /// `duration` over UDP, zero over a reliable transport (Timers D, I, J, K).
    pub(crate) fn linger(self, duration: Duration) -> Duration {
        match self {
            Reliability::Unreliable => duration,
            Reliability::Reliable => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_rfc_3261_table_4() {
        let t = Timers::default();
        assert_eq!(t.sixty_four_t1(), Duration::from_secs(32));
        assert_eq!(t.non_invite_timeout, Duration::from_secs(32));
        assert_eq!(t.timer_b(), Duration::from_secs(5));
        let long = Timers {
            invite_timeout: Duration::from_secs(60),
            ..t
        };
        assert_eq!(long.timer_b(), Duration::from_secs(32));
        let fast = Timers::with_t1(Duration::from_millis(100));
        assert_eq!(fast.non_invite_timeout, Duration::from_millis(6400));
        assert_eq!(fast.t2, t.t2);
    }

    #[test]
    fn reliability_from_via() {
        assert_eq!(
            Reliability::from_via_transport("udp"),
            Reliability::Unreliable
        );
        assert!(Reliability::from_via_transport("TCP").is_reliable());
        assert!(Reliability::from_via_transport("TLS").is_reliable());
    }
}
