//! A cluster's shared store, simulated: the ledger the balancer reports to, and the
//! store's answers to reservations, given in virtual time. Another node is played by
//! the calls it holds on destination 1, which this node's view does not know about
//! (a stale view, as between two heartbeats): the store refuses what this node's
//! view would grant.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use siplb_balance::{Ledger, Take, TakeKind};

/// What the balancer reported, in its order.
#[derive(Debug)]
pub(crate) enum Report {
    Taken(Take),
    Released(u64),
}

#[derive(Debug, Default)]
pub(crate) struct SimLedger(Mutex<VecDeque<Report>>);

impl Ledger for SimLedger {
    fn taken(&self, take: Take) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(Report::Taken(take));
    }

    fn released(&self, ticket: u64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(Report::Released(ticket));
    }
}

/// How the store behaves (`Knobs::cluster` modulo 4; 0 is no cluster).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Answers in 2 ms.
    Prompt,
    /// Answers in 2 ms; another node holds all but one slot of every resource of
    /// destination 1.
    Contended,
    /// Away: the node's driver gives up after its reserve timeout and lets the call
    /// through unconfirmed.
    Away,
}

impl Mode {
    pub(crate) fn of(knob: u8) -> Option<Mode> {
        match knob % 4 {
            1 => Some(Mode::Prompt),
            2 => Some(Mode::Contended),
            3 => Some(Mode::Away),
            _ => None,
        }
    }
}

/// An answer due to the core.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) after: Duration,
    pub(crate) ticket: u64,
    pub(crate) granted: bool,
}

#[derive(Debug)]
pub(crate) struct SimStore {
    pub(crate) ledger: Arc<SimLedger>,
    mode: Mode,
    /// This node's allocations: destination, resources, counted in the store.
    book: HashMap<u64, (u32, Vec<Arc<str>>, bool)>,
    /// Reservations not answered yet.
    pub(crate) pending: usize,
}

impl SimStore {
    pub(crate) fn new(mode: Mode) -> SimStore {
        SimStore {
            ledger: Arc::default(),
            mode,
            book: HashMap::new(),
            pending: 0,
        }
    }

    fn other_node(&self, destination: u32, capacity: u32) -> u32 {
        match self.mode {
            Mode::Contended if destination == 1 => capacity.saturating_sub(1),
            _ => 0,
        }
    }

    fn counted(&self, destination: u32, resource: &str) -> u32 {
        let mine = self
            .book
            .values()
            .filter(|(d, res, counted)| {
                *counted && *d == destination && res.iter().any(|r| &**r == resource)
            })
            .count();
        u32::try_from(mine).unwrap_or(u32::MAX)
    }

    /// Takes the ledger's reports: the answers due, or what broke (a release of
    /// nothing, a ticket taken twice, a grant past capacity).
    pub(crate) fn drain(&mut self) -> Result<Vec<Answer>, String> {
        let reports: Vec<Report> = self
            .ledger
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        let mut answers = Vec::new();
        for report in reports {
            match report {
                Report::Taken(take) => {
                    if self.book.contains_key(&take.ticket) {
                        return Err(format!("ledger ticket {} taken twice", take.ticket));
                    }
                    let names: Vec<Arc<str>> =
                        take.resources.iter().map(|(n, _)| Arc::clone(n)).collect();
                    let (counted, answer) = match (take.kind, self.mode) {
                        (TakeKind::Reserve, Mode::Away) => {
                            (true, Some((Duration::from_millis(250), true)))
                        }
                        (TakeKind::Reserve, _) => {
                            let room = take.resources.iter().all(|(name, capacity)| {
                                self.counted(take.destination, name)
                                    + self.other_node(take.destination, *capacity)
                                    < *capacity
                            });
                            (room, Some((Duration::from_millis(2), room)))
                        }
                        _ => (true, None),
                    };
                    self.book
                        .insert(take.ticket, (take.destination, names, counted));
                    if let Some((after, granted)) = answer {
                        self.pending += 1;
                        answers.push(Answer {
                            after,
                            ticket: take.ticket,
                            granted,
                        });
                    }
                }
                Report::Released(ticket) => {
                    if self.book.remove(&ticket).is_none() {
                        return Err(format!("ledger ticket {ticket} released but never taken"));
                    }
                }
            }
        }
        Ok(answers)
    }

    /// Allocations the store still books for this node.
    pub(crate) fn booked(&self) -> usize {
        self.book.len()
    }
}
