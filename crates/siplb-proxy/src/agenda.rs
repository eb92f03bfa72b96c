//! Every deadline of the core in one ordered table: transactions' timers, calls'
//! timers, probing and housekeeping.
//!
//! Each owner keeps the [`Slot`] of its one pending entry and cancels it when the
//! deadline moves or the owner goes, so the agenda holds exactly the live timers:
//! an ended call leaves nothing behind, however long its dialog timeout was.
//!
//! Two kinds of storage behind one order. Deadlines in general go in a B-tree.
//! Lingers on the grid (see [`Agenda::rearm_lax`]) go in lanes instead: queues,
//! one per linger length, each filled in the order of its deadlines, since a linger
//! of one length set later ends later. They are most of the agenda (three of the
//! four lingers of every call last 32 s, so at 100 calls/s about 10,000 entries), and
//! a queue takes one at its back and gives it at its front where the B-tree walked
//! and rebalanced cold nodes both times.

use std::collections::{BTreeMap, VecDeque};
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
    /// The first answered call waiting to be stored (see `Proxy::store_later`).
    StoreSweep,
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
    /// The entry's sequence number in its low 56 bits, and where it lies in its top 8
    /// ([`Slot::lane`]): a call keeps two slots, and a field of its own would have
    /// taken it past its allocation class (`call::tests::a_call_stays_small`).
    seq: u64,
}

const LANE_SHIFT: u32 = 56;

impl Slot {
    pub(crate) fn at(self) -> Instant {
        self.at
    }

    /// 0: the B-tree; `n`: lane `n - 1`.
    fn lane(self) -> usize {
        (self.seq >> LANE_SHIFT) as usize
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

/// At most this many lanes; a linger that fits none goes in the B-tree. Lingers come
/// in two lengths (T4, and 64*T1 or Timer D), three if Timer D is set apart.
const LANES: usize = 4;

/// A lane's entry; `due` is `None` once cancelled (it goes when it reaches the front).
#[derive(Debug)]
struct Queued {
    at: Instant,
    seq: u64,
    due: Option<Due>,
}

#[derive(Debug, Default)]
pub(crate) struct Agenda {
    entries: BTreeMap<(Instant, u64), Due>,
    /// Lingers on the grid, each lane in the order of (`at`, `seq`), its front never
    /// cancelled.
    lanes: Vec<VecDeque<Queued>>,
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

    /// Schedules a linger that falls due on a tick of the grid: at the back of the
    /// lane whose last deadline is the latest not after `at` (so lingers of one
    /// length keep to one lane), else in the B-tree.
    fn queue(&mut self, at: Instant, due: Due) -> Slot {
        let mut best: Option<(usize, Option<Instant>)> = None;
        for (i, lane) in self.lanes.iter().enumerate() {
            let last = lane.back().map(|q| q.at);
            if last.is_none_or(|last| last <= at) && best.is_none_or(|(_, b)| last > b) {
                best = Some((i, last));
            }
        }
        let lane = match best {
            Some((i, _)) => i,
            None if self.lanes.len() < LANES => {
                self.lanes.push(VecDeque::new());
                self.lanes.len() - 1
            }
            None => return self.schedule(at, due),
        };
        self.seq += 1;
        // At most LANES (4) lanes: the number fits its 8 bits.
        let seq = self.seq | ((lane as u64 + 1) << LANE_SHIFT);
        self.lanes[lane].push_back(Queued {
            at,
            seq,
            due: Some(due),
        });
        Slot { at, seq }
    }

    pub(crate) fn cancel(&mut self, slot: Slot) {
        let Some(lane) = slot
            .lane()
            .checked_sub(1)
            .and_then(|i| self.lanes.get_mut(i))
        else {
            self.entries.remove(&(slot.at, slot.seq));
            return;
        };
        let i = lane.partition_point(|q| (q.at, q.seq) < (slot.at, slot.seq));
        if let Some(q) = lane.get_mut(i)
            && q.seq == slot.seq
        {
            q.due = None;
        }
        trim(lane);
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
        if kept {
            return;
        }
        if let Some(old) = slot.take() {
            self.cancel(old);
        }
        *slot = Some(match self.linger_tick(at) {
            Some(tick) => self.queue(tick, due),
            // Off the grid, so out of its lane's order.
            None => self.schedule(at, due),
        });
    }

    /// The tick of the grid at or after `at`, counted; none once that tick has
    /// [`LINGER_BATCH`] lingers.
    fn linger_tick(&mut self, at: Instant) -> Option<Instant> {
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
        let tick = tick?;
        if let Some(entry) = self.ticks.iter_mut().find(|(t, _)| *t == Some(tick)) {
            if entry.1 >= LINGER_BATCH {
                return None;
            }
            entry.1 += 1;
        } else if let Some(oldest) = self.ticks.iter_mut().min_by_key(|(t, _)| *t) {
            // A tick that is no longer among the latest is past or nearly so: its count
            // can go.
            *oldest = (Some(tick), 1);
        }
        Some(tick)
    }

    /// The earliest entry. The sequence numbers of the lanes' entries carry their
    /// lane above those of the B-tree, so at equal deadlines the B-tree's come first.
    fn first(&self) -> Option<Slot> {
        let tree = self
            .entries
            .keys()
            .next()
            .map(|&(at, seq)| Slot { at, seq });
        let lanes = self.lanes.iter().filter_map(|lane| {
            lane.front().map(|q| Slot {
                at: q.at,
                seq: q.seq,
            })
        });
        tree.into_iter().chain(lanes).min_by_key(|s| (s.at, s.seq))
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.first().map(Slot::at)
    }

    /// The earliest entry due at `now`, taken out of the agenda.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Slot, Due)> {
        let slot = self.first()?;
        let Slot { at, seq } = slot;
        if at > now {
            return None;
        }
        let due = match slot.lane().checked_sub(1) {
            None => self.entries.remove(&(at, seq))?,
            Some(i) => {
                let queue = self.lanes.get_mut(i)?;
                let due = queue.pop_front().and_then(|q| q.due);
                trim(queue);
                due?
            }
        };
        Some((slot, due))
    }

    /// Entries other than the periodic ones.
    pub(crate) fn pending(&self) -> usize {
        let tree = self
            .entries
            .values()
            .filter(|d| {
                !matches!(
                    d,
                    Due::ProbeTick | Due::Housekeeping | Due::DialogSweep | Due::StoreSweep
                )
            })
            .count();
        let lanes = self.lanes.iter().flatten().filter(|q| q.due.is_some());
        tree + lanes.count()
    }

    /// Gives back the room of lanes a burst left mostly empty.
    pub(crate) fn shrink(&mut self) {
        for lane in &mut self.lanes {
            if let Some(room) = crate::slab::shrunk_room(lane.len(), lane.capacity()) {
                lane.shrink_to(room);
            }
        }
    }
}

/// Drops the cancelled entries at the front of a lane, so that its front is live.
fn trim(lane: &mut VecDeque<Queued>) {
    while lane.front().is_some_and(|q| q.due.is_none()) {
        lane.pop_front();
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

    /// Lingers of two lengths, set in turn, keep to a lane each and come out with
    /// the B-tree's entries in the order of their deadlines; those cancelled in the
    /// middle of a lane never come out.
    #[test]
    fn lingers_come_out_in_deadline_order_whatever_their_lanes() {
        let t0 = Instant::now();
        let mut ids = Slab::default();
        let mut agenda = Agenda::default();
        let mut expected = Vec::new();
        for step in 0..300u64 {
            let now = t0 + Duration::from_millis(step * 10);
            for length in [5_000, 32_000] {
                let id = ids.insert(());
                let mut slot = None;
                let at = now + Duration::from_millis(length);
                agenda.rearm_lax(&mut slot, at, Due::Server(id));
                let slot = slot.expect("scheduled");
                assert_ne!(slot.lane(), 0, "a linger on the grid is queued");
                if step % 7 == 3 {
                    agenda.cancel(slot);
                } else {
                    expected.push((slot.at(), id));
                }
            }
            if step % 50 == 0 {
                let id = ids.insert(());
                let slot = agenda.schedule(now + Duration::from_secs(4), Due::Client(id));
                expected.push((slot.at(), id));
            }
        }
        assert_eq!(agenda.lanes.len(), 2);
        assert_eq!(agenda.pending(), expected.len());
        let mut came = Vec::new();
        while let Some((slot, due)) = agenda.pop_due(t0 + Duration::from_secs(40)) {
            let (Due::Server(id) | Due::Client(id)) = due else {
                panic!("{due:?}");
            };
            came.push((slot.at(), id));
        }
        assert!(came.windows(2).all(|w| w[0].0 <= w[1].0), "out of order");
        came.sort();
        expected.sort();
        assert_eq!(came, expected);
        assert_eq!((agenda.pending(), agenda.next()), (0, None));
    }

    /// A linger earlier than the last of every lane starts a lane of its own while
    /// there are fewer than [`LANES`], then goes in the B-tree; all still come out
    /// in order, and a cancelled one at a lane's front leaves the next one first.
    #[test]
    fn lingers_that_fit_no_lane_go_in_the_tree() {
        let t0 = Instant::now();
        let mut ids = Slab::default();
        let mut agenda = Agenda::default();
        let mut slots = Vec::new();
        for secs in (5..=10).rev() {
            let id = ids.insert(());
            slots.push((
                agenda.queue(t0 + Duration::from_secs(secs), Due::Server(id)),
                id,
            ));
        }
        let lanes: Vec<usize> = slots.iter().map(|(s, _)| s.lane()).collect();
        assert_eq!(lanes, [1, 2, 3, 4, 0, 0]);
        let seven = slots[3].0;
        agenda.cancel(seven);
        assert_eq!(agenda.lanes[3].len(), 0, "a cancelled front goes at once");
        assert_eq!(agenda.next(), Some(t0 + Duration::from_secs(5)));
        let came: Vec<u64> = std::iter::from_fn(|| agenda.pop_due(t0 + Duration::from_secs(11)))
            .map(|(slot, _)| (slot.at() - t0).as_secs())
            .collect();
        assert_eq!(came, [5, 6, 8, 9, 10]);
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
