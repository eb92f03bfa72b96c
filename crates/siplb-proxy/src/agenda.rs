//! Every deadline of the core in one ordered table: transactions' timers, calls'
//! timers, probing and housekeeping.
//!
//! Each owner keeps the [`Slot`] of its one pending entry and cancels it when the
//! deadline moves or the owner goes, so the agenda holds exactly the live timers:
//! an ended call leaves nothing behind, however long its dialog timeout was.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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

/// Lingering transactions (see [`Agenda::rearm_lax`]) fall due on the ticks of this
/// grid, late by less than one step. Every call leaves four of them (its INVITE's and
/// its BYE's, each a server and a client side), and at a low call rate each would
/// otherwise wake the core on its own.
pub(crate) const LINGER_GRID: Duration = Duration::from_millis(100);

/// At most this many lingers share one tick: past it, a busy core ends them at their
/// own deadlines rather than all in one turn that would hold up the messages behind it.
pub(crate) const LINGER_BATCH: u32 = 128;

#[derive(Debug, Default)]
pub(crate) struct Agenda {
    entries: BTreeMap<(Instant, u64), Due>,
    seq: u64,
    /// The origin of [`LINGER_GRID`]'s ticks: the first linger scheduled.
    grid_origin: Option<Instant>,
    /// The latest ticks given to lingers and how many each got. Lingers come in two
    /// lengths (T4 and 64*T1), so two ticks are filling at any time.
    ticks: [(Option<Instant>, u32); 4],
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

    /// [`Agenda::rearm`] for a deadline that may come late: one that only ends a
    /// lingering transaction. It falls due at the next tick of [`LINGER_GRID`], with
    /// the others of that tick, unless that tick is full.
    pub(crate) fn rearm_lax(&mut self, slot: &mut Option<Slot>, at: Instant, due: Due) {
        let kept =
            slot.is_some_and(|s| s.at >= at && s.at.saturating_duration_since(at) < LINGER_GRID);
        if !kept {
            let at = self.linger_tick(at);
            self.rearm(slot, Some(at), due);
        }
    }

    /// The tick of the grid at or after `at`, counted; `at` itself once that tick has
    /// [`LINGER_BATCH`] lingers.
    fn linger_tick(&mut self, at: Instant) -> Instant {
        let origin = *self.grid_origin.get_or_insert(at);
        let step = LINGER_GRID.as_nanos();
        let tick = if at >= origin {
            let steps = (at - origin).as_nanos().div_ceil(step);
            u64::try_from(steps * step)
                .ok()
                .and_then(|nanos| origin.checked_add(Duration::from_nanos(nanos)))
        } else {
            // Before the origin (a T4 linger after a first one of 64*T1): the ticks
            // run back from it too.
            let steps = (origin - at).as_nanos() / step;
            u64::try_from(steps * step)
                .ok()
                .and_then(|nanos| origin.checked_sub(Duration::from_nanos(nanos)))
        };
        let Some(tick) = tick else {
            return at;
        };
        if let Some(entry) = self.ticks.iter_mut().find(|(t, _)| *t == Some(tick)) {
            if entry.1 >= LINGER_BATCH {
                return at;
            }
            entry.1 += 1;
        } else if let Some(oldest) = self.ticks.iter_mut().min_by_key(|(t, _)| *t) {
            // A tick that is no longer among the latest is past or nearly so: its count
            // can go.
            *oldest = (Some(tick), 1);
        }
        tick
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

    #[test]
    fn lingers_share_ticks_of_the_grid_until_one_is_full() {
        let t0 = Instant::now();
        let mut ids = Slab::default();
        let mut agenda = Agenda::default();
        let mut linger = |agenda: &mut Agenda, at: Instant| {
            let mut slot = None;
            agenda.rearm_lax(&mut slot, at, Due::Server(ids.insert(())));
            slot.map(Slot::at).unwrap_or(at)
        };
        // The first sets the grid; later ones, before it (a T4 linger after a 64*T1
        // one) or after it, fall due on a tick: never early, less than a step late.
        let long = t0 + Duration::from_secs(32);
        assert_eq!(linger(&mut agenda, long), long);
        let mut ticks = std::collections::BTreeSet::new();
        for ms in (5000..5300).step_by(7).chain((32_001..32_300).step_by(7)) {
            let at = t0 + Duration::from_millis(ms);
            let tick = linger(&mut agenda, at);
            assert!(tick >= at && tick - at < LINGER_GRID, "{ms} ms");
            ticks.insert(tick);
        }
        assert!(
            ticks.len() <= 8,
            "86 lingers over 0.6 s on {} ticks",
            ticks.len()
        );
        // A full tick takes no more: the next lingers keep their own deadlines.
        let at = t0 + Duration::from_millis(40_001);
        let tick = linger(&mut agenda, at);
        assert!(tick > at);
        for _ in 1..LINGER_BATCH {
            assert_eq!(linger(&mut agenda, at), tick);
        }
        assert_eq!(linger(&mut agenda, at), at);
    }

    #[test]
    fn a_linger_already_on_its_tick_stays_put() {
        let t0 = Instant::now();
        let mut ids = Slab::default();
        let id = ids.insert(());
        let mut agenda = Agenda::default();
        let mut slot = None;
        let at = t0 + Duration::from_millis(5001);
        agenda.rearm_lax(&mut slot, at, Due::Client(id));
        let first = slot;
        agenda.rearm_lax(&mut slot, at, Due::Client(id));
        assert_eq!(slot, first, "rescheduled");
        assert_eq!(agenda.pending(), 1);
        // A later deadline past that tick moves it.
        agenda.rearm_lax(&mut slot, at + LINGER_GRID * 2, Due::Client(id));
        assert_ne!(slot, first);
        assert_eq!(agenda.pending(), 1);
    }
}
