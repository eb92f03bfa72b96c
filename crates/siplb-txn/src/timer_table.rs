//! The deadlines of one transaction, stored as data rather than as running timers.

use std::time::Instant;

/// The roles a transaction timer plays. Which RFC timer fills a role depends on the
/// machine: the retransmission timer is A, E or G; the timeout is B, C, F or H; the
/// linger before termination is D, I, J, K or L; the provisional one is the 200 ms
/// an INVITE server transaction may wait for its TU before a 100 Trying is due
/// (RFC 3261 17.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    Retransmit = 0,
    Timeout = 1,
    Linger = 2,
    Provisional = 3,
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TimerTable {
    at: [Option<Instant>; 4],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer as usize] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.at[timer as usize] = None;
    }

    pub(crate) fn is_set(&self, timer: Timer) -> bool {
        self.at[timer as usize].is_some()
    }

    pub(crate) fn stop_all(&mut self) {
        self.at = [None; 4];
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// True when the linger is the only timer set.
    pub(crate) fn only_linger(&self) -> bool {
        matches!(self.at, [None, None, Some(_), None])
    }

    /// Stops and returns the timer to fire at `now`: the earliest due timeout or
    /// linger, else a due retransmission, else a due provisional. A late wake-up with
    /// the wait already over resends nothing, as nobody is waiting for the
    /// retransmission any more.
    pub(crate) fn take_due(&mut self, now: Instant) -> Option<Timer> {
        let due = |timer: Timer| self.at[timer as usize].filter(|at| *at <= now);
        let timer = [Timer::Timeout, Timer::Linger]
            .into_iter()
            .filter_map(|t| due(t).map(|at| (at, t)))
            .min_by_key(|(at, _)| *at)
            .map(|(_, t)| t)
            .or_else(|| due(Timer::Retransmit).map(|_| Timer::Retransmit))
            .or_else(|| due(Timer::Provisional).map(|_| Timer::Provisional))?;
        self.stop(timer);
        Some(timer)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn ending_timers_fire_before_retransmissions() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        table.set(Timer::Retransmit, t0 + Duration::from_millis(500));
        table.set(Timer::Timeout, t0 + Duration::from_secs(2));
        table.set(Timer::Linger, t0 + Duration::from_secs(1));
        assert_eq!(table.next_deadline(), Some(t0 + Duration::from_millis(500)));
        assert_eq!(table.take_due(t0), None);
        let later = t0 + Duration::from_secs(3);
        assert_eq!(table.take_due(later), Some(Timer::Linger));
        assert_eq!(table.take_due(later), Some(Timer::Timeout));
        assert_eq!(table.take_due(later), Some(Timer::Retransmit));
        table.set(Timer::Retransmit, t0);
        table.set(Timer::Timeout, t0 + Duration::from_secs(1));
        assert_eq!(table.take_due(t0), Some(Timer::Retransmit));
        assert_eq!(table.take_due(t0), None);
        assert_eq!(table.take_due(later), Some(Timer::Timeout));
        assert_eq!(table.next_deadline(), None);
    }

    #[test]
    fn only_linger_means_nothing_else_is_set() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        assert!(!table.only_linger());
        table.set(Timer::Linger, t0);
        assert!(table.only_linger());
        table.set(Timer::Retransmit, t0);
        assert!(!table.only_linger());
        table.stop(Timer::Retransmit);
        table.set(Timer::Timeout, t0);
        assert!(!table.only_linger());
        table.stop(Timer::Timeout);
        table.set(Timer::Provisional, t0);
        assert!(!table.only_linger());
    }

    #[test]
    fn a_provisional_fires_last_and_alone() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        table.set(Timer::Provisional, t0 + Duration::from_millis(200));
        table.set(Timer::Timeout, t0 + Duration::from_millis(200));
        assert_eq!(table.take_due(t0), None);
        let later = t0 + Duration::from_millis(200);
        assert_eq!(table.take_due(later), Some(Timer::Timeout));
        assert_eq!(table.take_due(later), Some(Timer::Provisional));
        assert_eq!(table.take_due(later), None);
        table.set(Timer::Provisional, later);
        table.stop_all();
        assert_eq!(table.next_deadline(), None);
    }
}
