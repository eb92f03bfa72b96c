//! The dialog timeouts of answered calls, kept as whole seconds beside the calls'
//! slab indices rather than as agenda entries.
//!
//! Every answered call has one (`[dialog] timeout`, 12 hours by default) and nearly
//! none fires: the call ends first. As an entry in the agenda's B-tree (plus the slot
//! the call kept to cancel it) it cost about 100 bytes per call up, most of the
//! memory a call held besides itself (docs/BENCHMARKS-HISTORY.md, "Memory per call,
//! issue 19"). Here it costs 4 bytes, and setting or clearing one is a store. The
//! agenda keeps one entry for all of them, at the earliest deadline known; when it
//! falls due, one scan ends the calls past their deadline and finds the next earliest.
//! Deadlines are rounded up to the second, so a timeout takes effect up to a second
//! late, never early.

use std::time::{Duration, Instant};

use crate::slab::Id;

/// The deadlines, by slab index of the call.
#[derive(Debug)]
pub(crate) struct Expiries {
    epoch: Instant,
    /// Seconds after `epoch`, rounded up; 0 where a slot has none.
    deadlines: Vec<u32>,
    /// Set deadlines.
    set: usize,
    /// At most the earliest set deadline (calls that ended early leave it low until
    /// the next scan), when any is set.
    earliest: Option<u32>,
}

impl Expiries {
    pub(crate) fn new(epoch: Instant) -> Expiries {
        Expiries {
            epoch,
            deadlines: Vec::new(),
            set: 0,
            earliest: None,
        }
    }

    fn seconds(&self, at: Instant) -> u32 {
        let since = at.saturating_duration_since(self.epoch);
        let whole = since.as_secs() + u64::from(since.subsec_nanos() > 0);
        u32::try_from(whole).unwrap_or(u32::MAX).max(1)
    }

    fn instant(&self, seconds: u32) -> Instant {
        self.epoch + Duration::from_secs(u64::from(seconds))
    }

    /// Sets the call's deadline. True when it is earlier than any other: the sweep
    /// must be moved to [`Expiries::next`].
    pub(crate) fn set(&mut self, id: Id, at: Instant) -> bool {
        let index = id.index() as usize;
        if self.deadlines.len() <= index {
            self.deadlines.resize(index + 1, 0);
        }
        let seconds = self.seconds(at);
        if self.deadlines[index] == 0 {
            self.set += 1;
        }
        self.deadlines[index] = seconds;
        let earlier = self.earliest.is_none_or(|e| seconds < e);
        if earlier {
            self.earliest = Some(seconds);
        }
        earlier
    }

    pub(crate) fn clear(&mut self, id: Id) {
        if let Some(d) = self.deadlines.get_mut(id.index() as usize)
            && *d != 0
        {
            *d = 0;
            self.set -= 1;
            if self.set == 0 {
                self.earliest = None;
            }
        }
    }

    /// The call's deadline (rounded up to the second).
    pub(crate) fn get(&self, id: Id) -> Option<Instant> {
        match self.deadlines.get(id.index() as usize) {
            Some(&d) if d != 0 => Some(self.instant(d)),
            _ => None,
        }
    }

    /// When the sweep is due, if any deadline is set.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.earliest.map(|e| self.instant(e))
    }

    /// The slab indices whose deadline has passed at `now`, their deadlines cleared;
    /// the earliest deadline left is found on the way.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<u32> {
        let since = now.saturating_duration_since(self.epoch).as_secs();
        let now = u32::try_from(since).unwrap_or(u32::MAX);
        let mut due = Vec::new();
        let mut earliest = None::<u32>;
        for (index, d) in self.deadlines.iter_mut().enumerate() {
            if *d == 0 {
                continue;
            }
            if *d <= now {
                due.push(u32::try_from(index).unwrap_or(u32::MAX));
                *d = 0;
            } else {
                earliest = Some(earliest.map_or(*d, |e| e.min(*d)));
            }
        }
        self.set -= due.len();
        self.earliest = earliest;
        due
    }

    /// Gives back the room of slots the calls' slab has given back.
    pub(crate) fn shrink(&mut self, slots: usize) {
        if self.deadlines.len() > slots {
            // The slab gives back only empty slots, whose deadlines were cleared.
            self.set -= self.deadlines[slots..].iter().filter(|&&d| d != 0).count();
            self.deadlines.truncate(slots);
        }
        if let Some(room) =
            crate::slab::shrunk_room(self.deadlines.len(), self.deadlines.capacity())
        {
            self.deadlines.shrink_to(room);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slab::Slab;

    #[test]
    fn a_deadline_falls_due_at_its_second_never_before() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut calls = Slab::default();
        let (a, b, c) = (calls.insert(()), calls.insert(()), calls.insert(()));
        let mut e = Expiries::new(t0);
        assert!(
            e.set(a, t0 + ms(2500)),
            "the first deadline moves the sweep"
        );
        assert!(!e.set(b, t0 + ms(4000)), "a later one does not");
        assert!(e.set(c, t0 + ms(1000)));
        assert_eq!(e.next(), Some(t0 + ms(1000)));
        assert_eq!(e.get(a), Some(t0 + ms(3000)), "rounded up to the second");
        assert!(e.take_due(t0 + ms(999)).is_empty());
        assert_eq!(e.take_due(t0 + ms(1000)), [c.index()]);
        assert_eq!(e.next(), Some(t0 + ms(3000)));
        assert!(e.take_due(t0 + ms(2999)).is_empty(), "2.5 s is due at 3 s");
        assert_eq!(e.take_due(t0 + ms(4000)), [a.index(), b.index()]);
        assert_eq!(e.next(), None);
        assert_eq!(e.get(a), None);
    }

    #[test]
    fn a_call_that_ends_leaves_nothing_due_and_the_next_sweep_finds_the_earliest() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut calls = Slab::default();
        let ids: Vec<_> = (0..5).map(|_| calls.insert(())).collect();
        let mut e = Expiries::new(t0);
        for (i, id) in ids.iter().enumerate() {
            e.set(*id, t0 + s(10 + i as u64));
        }
        // The earliest call ends early: the sweep at its time finds nothing, and
        // moves to the next.
        e.clear(ids[0]);
        assert_eq!(e.next(), Some(t0 + s(10)), "a lower bound until the scan");
        assert!(e.take_due(t0 + s(10)).is_empty());
        assert_eq!(e.next(), Some(t0 + s(11)));
        for id in &ids[1..] {
            e.clear(*id);
        }
        assert_eq!(e.next(), None, "nothing set: no sweep");
        // Slots given back by the slab go, with their room.
        calls.remove(ids[4]);
        calls.shrink();
        e.shrink(calls.slots());
        assert!(e.take_due(t0 + s(100)).is_empty());
    }

    #[test]
    fn a_time_before_the_epoch_is_due_at_the_first_second() {
        let t0 = Instant::now();
        let mut calls = Slab::default();
        let a = calls.insert(());
        let mut e = Expiries::new(t0 + Duration::from_secs(5));
        e.set(a, t0);
        assert_eq!(e.take_due(t0 + Duration::from_secs(6)), [a.index()]);
    }
}
