//! One call's load-balancing session: the initial choice and its failovers (`lb_start`,
//! `lb_next`, `lb_reset`).

use crate::allocation::Allocation;
use crate::balancer::Balancer;
use crate::flags::Flags;
use crate::inline::InlineVec;
use crate::resources::ResourceRequest;
use crate::select::Outcome;
use crate::tie::TieBreaker;

/// The balancing state of one call: what it asks for, where it has been tried, and the load
/// it currently holds.
///
/// The first [`Session::next`] makes the initial choice; each later one is a failover that
/// gives back the current load, excludes every destination tried so far and chooses again on
/// live loads. Dropping the session (or [`Session::release`]) gives back the current load.
///
/// Tried destinations are remembered by id, so a reload between attempts does not make the
/// call retry a destination it already tried (the reference forgets them in that case).
#[derive(Debug)]
pub struct Session {
    group: u32,
    request: ResourceRequest,
    flags: Flags,
    tried: InlineVec<u32, 4>,
    current: Option<Allocation>,
}

impl Session {
    /// A session that has not chosen yet.
    pub fn new(group: u32, request: ResourceRequest, flags: Flags) -> Self {
        Self {
            group,
            request,
            flags,
            tried: InlineVec::new(),
            current: None,
        }
    }

    /// Releases the current load, if any, then chooses among the destinations not tried yet.
    ///
    /// On failure the session holds no load; it can still be asked again (for instance after
    /// calls ended or destinations were re-enabled).
    pub fn next<T: TieBreaker + ?Sized>(
        &mut self,
        balancer: &Balancer,
        tie: &mut T,
    ) -> Outcome<&Allocation> {
        if let Some(previous) = self.current.take() {
            previous.release();
        }
        let outcome = balancer.select_excluding(
            self.group,
            &self.request,
            self.flags,
            self.tried.as_slice(),
            tie,
        );
        match outcome {
            Outcome::Selected(allocation) => {
                self.tried.push(allocation.destination_id());
                Outcome::Selected(&*self.current.insert(allocation))
            }
            Outcome::NoCapacity => Outcome::NoCapacity,
            Outcome::NoDestination => Outcome::NoDestination,
            Outcome::UnknownResource => Outcome::UnknownResource,
            Outcome::RateLimited => Outcome::RateLimited,
            Outcome::Throttled => Outcome::Throttled,
        }
    }

    /// The load the call holds now, if the last choice succeeded.
    pub fn current(&self) -> Option<&Allocation> {
        self.current.as_ref()
    }

    /// Ids of the destinations chosen so far, oldest first.
    pub fn tried(&self) -> &[u32] {
        self.tried.as_slice()
    }

    /// The group asked for.
    pub fn group(&self) -> u32 {
        self.group
    }

    /// The resources asked for.
    pub fn request(&self) -> &ResourceRequest {
        &self.request
    }

    /// The flags in force.
    pub fn flags(&self) -> Flags {
        self.flags
    }

    /// Ends failover and hands the held load to the caller (for instance to the dialog, once
    /// the call is answered).
    pub fn into_allocation(mut self) -> Option<Allocation> {
        self.current.take()
    }

    /// Ends the session and gives back its load now (`lb_reset`).
    pub fn release(self) {
        drop(self);
    }
}
