//! Where a node of a cluster reports the load its calls take and give back, so that the
//! shared store counts every node's calls (siplb-cluster keeps that store).
//!
//! The balancer calls the ledger from the allocation's own constructor and destructor,
//! so a call's load reaches the cluster exactly as often as it is taken and released
//! locally, by construction. Without a ledger (one node) nothing of this runs.

use std::fmt;
use std::sync::Arc;

/// Receives every take and release of this node's allocations, in the order they
/// happen on the thread that makes them (the core's).
pub trait Ledger: Send + Sync + fmt::Debug {
    /// An allocation was taken. Must not block: called under the group's lock.
    fn taken(&self, take: Take);
    /// The allocation with this ticket was released.
    fn released(&self, ticket: u64);
}

/// How an allocation came to be, which says what the shared store does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakeKind {
    /// Chosen by load for a new call: the store must confirm that the cluster still has
    /// room (another node may have taken the last slot), and the call waits for it.
    Reserve,
    /// A call that arrived from a destination, counted against it whatever its room.
    Count,
    /// A call the store already counts (restored after a restart, adopted from a dead
    /// node): recorded as this node's without counting it again.
    Counted,
}

/// One allocation, as the ledger sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Take {
    /// Unique per balancer; the release names it.
    pub ticket: u64,
    pub kind: TakeKind,
    /// The destination's `id`.
    pub destination: u32,
    /// Each resource held and the destination's capacity of it when taken.
    pub resources: Vec<(Arc<str>, u32)>,
}

/// An allocation's entry in the ledger: released through it on drop.
#[derive(Debug)]
pub(crate) struct Booking {
    pub(crate) ledger: Arc<dyn Ledger>,
    pub(crate) ticket: u64,
    pub(crate) kind: TakeKind,
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::{Allocation, Balancer, DestinationRow, Flags, ResourceRequest, SplitMix64};

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<(u64, TakeKind, bool)>>);

    impl Ledger for Recorder {
        fn taken(&self, take: Take) {
            if let Ok(mut seen) = self.0.lock() {
                seen.push((take.ticket, take.kind, true));
            }
        }

        fn released(&self, ticket: u64) {
            if let Ok(mut seen) = self.0.lock() {
                seen.push((ticket, TakeKind::Counted, false));
            }
        }
    }

    #[test]
    fn each_allocation_is_reported_taken_then_released_once_and_flag_n_counts() {
        let (balancer, errors) =
            Balancer::with_rows([DestinationRow::new(1, 1, "sip:127.0.0.1:5070", "vm=1")]);
        assert!(errors.is_empty());
        let recorder = Arc::new(Recorder::default());
        assert!(balancer.set_ledger(recorder.clone()).is_ok());
        assert!(balancer.set_ledger(recorder.clone()).is_err(), "set once");
        let vm = ResourceRequest::parse("vm").unwrap_or_else(|_| unreachable!());
        let mut tie = SplitMix64::new(1);
        let reserved = balancer
            .select(1, &vm, Flags::default(), &mut tie)
            .selected();
        let ticket = reserved.as_ref().and_then(Allocation::reservation);
        assert!(ticket.is_some());
        // Flag n takes it past capacity: counted, no reservation to wait for.
        let flags: Flags = "n".parse().unwrap_or_else(|_| unreachable!());
        let forced = balancer.select(1, &vm, flags, &mut tie).selected();
        assert_eq!(forced.as_ref().and_then(Allocation::reservation), None);
        drop(reserved);
        drop(forced);
        let seen = recorder.0.lock().map(|s| s.clone()).unwrap_or_default();
        let kinds: Vec<(TakeKind, bool)> = seen.iter().map(|(_, k, t)| (*k, *t)).collect();
        assert_eq!(
            kinds,
            [
                (TakeKind::Reserve, true),
                (TakeKind::Count, true),
                (TakeKind::Counted, false),
                (TakeKind::Counted, false),
            ]
        );
        assert_eq!(seen[0].0, seen[2].0, "released under its own ticket");
        assert_eq!(seen[1].0, seen[3].0);
    }
}
