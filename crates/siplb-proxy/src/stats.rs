//! Counters the proxy keeps for metrics and logs.

/// What the proxy has done since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub calls_routed: u64,
    pub failovers: u64,
    pub destinations_disabled: u64,
    pub destinations_enabled: u64,
    pub probes_sent: u64,
    pub probe_successes: u64,
    pub probe_failures: u64,
    pub rejected_no_capacity: u64,
    pub rejected_no_destination: u64,
    pub rejected_unknown_resource: u64,
    pub rejected_no_route: u64,
    pub malformed: u64,
    pub dialog_timeouts: u64,
    /// Replies siplb generated, by class (index 1 = 1xx ... 6 = 6xx).
    pub local_replies: [u64; 7],
    /// Replies relayed from downstream, by class.
    pub relayed_replies: [u64; 7],
}

impl Stats {
    pub(crate) fn count_rejection(&mut self, why: &str) {
        match why {
            "no capacity" => self.rejected_no_capacity += 1,
            "unknown resource" => self.rejected_unknown_resource += 1,
            _ => self.rejected_no_destination += 1,
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
