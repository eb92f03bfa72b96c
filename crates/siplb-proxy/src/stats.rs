//! Counters the proxy keeps for metrics and logs.

/// What the proxy has done since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub calls_routed: u64,
    pub failovers: u64,
    /// New calls whose destination the cluster's shared store found full when it was
    /// asked to reserve (another node took the last slot first); they chose again.
    pub reservations_refused: u64,
    /// How long new calls waited for the store's reservation (buckets:
    /// [`RESERVATION_BUCKETS`]).
    pub reservation_wait: Histogram,
    pub destinations_disabled: u64,
    pub destinations_enabled: u64,
    /// Drains that ended (their last call did).
    pub destinations_drained: u64,
    pub probes_sent: u64,
    pub probe_successes: u64,
    pub probe_failures: u64,
    pub rejected_no_capacity: u64,
    pub rejected_no_destination: u64,
    pub rejected_unknown_resource: u64,
    pub rejected_no_route: u64,
    /// Moves of a call to a route's next overflow group.
    pub overflows: u64,
    /// Calls that found room only on destinations at their `max_cps`.
    pub rejected_rate: u64,
    /// Calls that found room only on destinations that asked for fewer (RFC 7339).
    pub rejected_overload: u64,
    /// New calls turned away because siplb holds as many calls or transactions as
    /// it allows.
    pub rejected_limit: u64,
    /// New calls turned away while siplb's own core was overloaded, from callers
    /// that take no overload feedback (RFC 7339 section 5.10.2).
    pub rejected_shed: u64,
    pub malformed: u64,
    pub dialog_timeouts: u64,
    /// Dialogs siplb ended because the caller never acknowledged the 2xx.
    pub ack_timeouts: u64,
    /// 2xx of attempts that were over, acknowledged and ended by siplb.
    pub refused_2xx: u64,
    /// Responses from another address than their request went to: dropped.
    pub responses_from_elsewhere: u64,
    /// Responses that matched no transaction and meant nothing.
    pub stray_responses: u64,
    /// Replies siplb generated, by class (index 1 = 1xx ... 6 = 6xx).
    pub local_replies: [u64; 7],
    /// Replies relayed from downstream, by class.
    pub relayed_replies: [u64; 7],
    /// Call setup time: from the INVITE to the first reply other than 100 from a
    /// destination (ringing or final), failovers included.
    pub setup: Histogram,
}

/// Upper bounds of the setup-time buckets, in seconds (Prometheus `le`).
pub const SETUP_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0];

/// A cumulative-bucket histogram, as Prometheus exposes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Count of samples at or below each of [`SETUP_BUCKETS`].
    pub buckets: [u64; 10],
    pub count: u64,
    pub sum_micros: u64,
}

/// Upper bounds of the buckets of [`Stats::reservation_wait`], in seconds: a
/// reservation is a round trip to the cluster's store, well under a millisecond on a
/// LAN.
pub const RESERVATION_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
];

impl Histogram {
    pub(crate) fn observe(&mut self, d: std::time::Duration) {
        self.observe_in(&SETUP_BUCKETS, d);
    }

    pub(crate) fn observe_in(&mut self, bounds: &[f64; 10], d: std::time::Duration) {
        let secs = d.as_secs_f64();
        for (bucket, bound) in self.buckets.iter_mut().zip(bounds) {
            if secs <= *bound {
                *bucket += 1;
            }
        }
        self.count += 1;
        self.sum_micros = self
            .sum_micros
            .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }
}

/// Why a new call got no destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    NoCapacity,
    NoDestination,
    UnknownResource,
    NoRoute,
    /// Room only on destinations at their calls-per-second cap.
    RateLimited,
    /// Room only on destinations that asked for fewer calls (RFC 7339), and the draw
    /// spared them this one.
    Throttled,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rejection::NoCapacity => "no capacity",
            Rejection::NoDestination => "no destination",
            Rejection::UnknownResource => "unknown resource",
            Rejection::NoRoute => "no route",
            Rejection::RateLimited => "calls-per-second caps reached",
            Rejection::Throttled => "destinations asked for fewer calls",
        })
    }
}

impl Rejection {
    /// The answer of its own a rejection gets instead of the configured `full_reply`:
    /// calls spared to destinations that asked for fewer, which RFC 7339 (section
    /// 5.10) has rejected with 503 without Retry-After.
    pub(crate) fn own_reply(self) -> Option<(u16, &'static str)> {
        match self {
            Rejection::Throttled => Some((503, "Service Unavailable")),
            _ => None,
        }
    }
}

impl Stats {
    pub(crate) fn count_rejection(&mut self, why: Rejection) {
        match why {
            Rejection::NoCapacity => self.rejected_no_capacity += 1,
            Rejection::UnknownResource => self.rejected_unknown_resource += 1,
            Rejection::NoDestination => self.rejected_no_destination += 1,
            Rejection::NoRoute => self.rejected_no_route += 1,
            Rejection::RateLimited => self.rejected_rate += 1,
            Rejection::Throttled => self.rejected_overload += 1,
        }
    }

    pub(crate) fn count_local_reply(&mut self, code: u16) {
        if let Some(c) = self.local_replies.get_mut(usize::from(code / 100)) {
            *c += 1;
        }
    }

    pub(crate) fn count_relayed_reply(&mut self, code: u16) {
        if let Some(c) = self.relayed_replies.get_mut(usize::from(code / 100)) {
            *c += 1;
        }
    }
}
