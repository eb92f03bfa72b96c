//! Every deadline of the core in one ordered table: transactions' timers, calls'
//! timers, probing and housekeeping.
//!
//! Each owner keeps the [`Slot`] of its one pending entry and cancels it when the
//! deadline moves or the owner goes, so the agenda holds exactly the live timers:
//! an ended call leaves nothing behind, however long its dialog timeout was.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::slab::Id;

/// What falls due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    Server(Id),
    Client(Id),
    Call(Id, CallTimer),
    ProbeTick,
    Housekeeping,
    /// The earliest dialog timeout (see `expiry`).
    DialogSweep,
}

/// A call's own timers. The first two have an entry each in the agenda, whose slot
/// the call keeps at their index; the dialog timeout, which every call up has, is kept
/// in `expiry` instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum CallTimer {
    /// The caller has not acknowledged a 2xx within 64*T1 (RFC 3261 13.3.1.4).
    Ack = 0,
    /// A cancelled attempt has not ended within 64*T1.
    Cancel = 1,
    /// `[dialog] timeout`.
    Dialog = 2,
}

impl CallTimer {
    /// The timers with an agenda entry of their own.
    pub(crate) const SLOTS: usize = 2;
}

/// Where one entry lies, to cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    at: Instant,
    seq: u64,
}

impl Slot {
    pub(crate) fn at(self) -> Instant {
        self.at
    }
}

#[derive(Debug, Default)]
pub(crate) struct Agenda {
    entries: BTreeMap<(Instant, u64), Due>,
    seq: u64,
}

impl Agenda {
    pub(crate) fn schedule(&mut self, at: Instant, due: Due) -> Slot {
        self.seq += 1;
        self.entries.insert((at, self.seq), due);
        Slot { at, seq: self.seq }
    }

    pub(crate) fn cancel(&mut self, slot: Slot) {
        self.entries.remove(&(slot.at, slot.seq));
    }

    /// Moves an owner's entry to `at` (or removes it), keeping `slot` current.
    pub(crate) fn rearm(&mut self, slot: &mut Option<Slot>, at: Option<Instant>, due: Due) {
        if slot.map(Slot::at) == at {
            return;
        }
        if let Some(old) = slot.take() {
            self.cancel(old);
        }
        *slot = at.map(|at| self.schedule(at, due));
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.entries.keys().next().map(|(at, _)| *at)
    }

    /// The earliest entry due at `now`, taken out of the agenda.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Slot, Due)> {
        let (&(at, seq), _) = self.entries.first_key_value()?;
        if at > now {
            return None;
        }
        let due = self.entries.remove(&(at, seq))?;
        Some((Slot { at, seq }, due))
    }

    /// Entries other than the periodic ones.
    pub(crate) fn pending(&self) -> usize {
        self.entries
            .values()
            .filter(|d| !matches!(d, Due::ProbeTick | Due::Housekeeping | Due::DialogSweep))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::slab::Slab;

    #[test]
    fn one_entry_per_owner_and_nothing_left_behind() {
        let t0 = Instant::now();
        let mut ids = Slab::default();
        let (a, b) = (ids.insert(()), ids.insert(()));
        let mut agenda = Agenda::default();
        let mut slot = None;
        agenda.rearm(&mut slot, Some(t0 + Duration::from_secs(5)), Due::Server(a));
        // Moving a deadline replaces the entry; the same deadline changes nothing.
        agenda.rearm(&mut slot, Some(t0 + Duration::from_secs(2)), Due::Server(a));
        agenda.rearm(&mut slot, Some(t0 + Duration::from_secs(2)), Due::Server(a));
        let other = agenda.schedule(t0 + Duration::from_secs(1), Due::Call(b, CallTimer::Ack));
        agenda.schedule(t0, Due::ProbeTick);
        assert_eq!(agenda.pending(), 2, "periodic entries are not counted");
        assert_eq!(agenda.next(), Some(t0));
        assert!(matches!(agenda.pop_due(t0), Some((_, Due::ProbeTick))));
        assert_eq!(agenda.pop_due(t0), None);
        agenda.cancel(other);
        assert_eq!(agenda.pending(), 1);
        let later = t0 + Duration::from_secs(3);
        assert!(matches!(agenda.pop_due(later), Some((_, Due::Server(id))) if id == a));
        // Removing an owner's entry: nothing remains.
        agenda.rearm(&mut slot, None, Due::Server(a));
        assert_eq!(agenda.pending(), 0);
        assert_eq!(agenda.next(), None);
    }
}
