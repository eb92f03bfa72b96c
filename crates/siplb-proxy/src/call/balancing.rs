//! A balanced call's choice of destination: its group's failover session, then the
//! route's overflow groups in turn (SPEC section 8) before the caller gets
//! `full_reply`.

use std::sync::Arc;

use siplb_balance::{Allocation, Balancer, Outcome, Session, TieBreaker};

use crate::settings::GroupChoice;
use crate::stats::Rejection;

#[derive(Debug)]
pub(crate) struct Balancing {
    session: Session,
    overflow: Arc<[GroupChoice]>,
    /// The next overflow group to try.
    next: usize,
}

/// One step of choosing: a destination, or why there is none in any group.
pub(crate) enum Choice<'a> {
    Chosen(&'a Allocation),
    Exhausted(Rejection),
}

impl Balancing {
    pub(crate) fn new(first: &GroupChoice, overflow: Arc<[GroupChoice]>) -> Balancing {
        Balancing {
            session: first.session(),
            overflow,
            next: 0,
        }
    }

    pub(crate) fn current(&self) -> Option<&Allocation> {
        self.session.current()
    }

    pub(crate) fn into_allocation(self) -> Option<Allocation> {
        self.session.into_allocation()
    }

    /// The next destination not tried yet in the current group, or in the next
    /// overflow group once this one has no room, no destination left, or only ones at
    /// their calls-per-second cap. `overflowed` counts each move to another group.
    pub(crate) fn next<T: TieBreaker + ?Sized>(
        &mut self,
        balancer: &Balancer,
        tie: &mut T,
        overflowed: &mut u64,
    ) -> Choice<'_> {
        loop {
            let why = match self.session.next(balancer, tie) {
                Outcome::Selected(_) => break,
                Outcome::NoCapacity => Rejection::NoCapacity,
                Outcome::NoDestination => Rejection::NoDestination,
                Outcome::UnknownResource => Rejection::UnknownResource,
                Outcome::RateLimited => Rejection::RateLimited,
                Outcome::Throttled => Rejection::Throttled,
            };
            let Some(choice) = self.overflow.get(self.next) else {
                return Choice::Exhausted(why);
            };
            tracing::debug!(from = self.session.group(), to = choice.group, %why, "overflow to the next group");
            self.next += 1;
            *overflowed += 1;
            self.session = choice.session();
        }
        match self.session.current() {
            Some(a) => Choice::Chosen(a),
            // `next` just selected, so the session holds the allocation.
            None => Choice::Exhausted(Rejection::NoDestination),
        }
    }
}

impl GroupChoice {
    fn session(&self) -> Session {
        Session::new(self.group, self.request.clone(), self.flags)
    }
}
