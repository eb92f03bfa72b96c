//! This node's book of its allocations: which the shared store counts, and the counts
//! it must hold for this node. Pure: the driver feeds it the ledger's reports in the
//! order they were made and writes to the store what it says.
//!
//! The book is the truth the store is reconciled to: every allocation alive on this
//! node that the store is meant to count (granted, forced or adopted; refused ones
//! excepted) is in it, so after an outage, a node's restart or an adoption, writing
//! [`Book::counts`] over the node's entry makes the store read the true load again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use siplb_balance::{Take, TakeKind};

/// A load counter in the store: one resource of one destination.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Field {
    pub destination: u32,
    pub resource: Arc<str>,
}

impl Field {
    /// `id:resource`, the field's name in the store's hashes.
    pub fn key(&self) -> String {
        format!("{}:{}", self.destination, self.resource)
    }

    /// Reads [`Field::key`]'s form.
    pub fn parse(key: &str) -> Option<Field> {
        let (id, resource) = key.split_once(':')?;
        Some(Field {
            destination: id.parse().ok()?,
            resource: Arc::from(resource),
        })
    }
}

#[derive(Debug)]
struct Entry {
    fields: Vec<Field>,
    /// The store counts it (or will, at the next reconciliation).
    counted: bool,
}

/// What the store must do for one report of the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Check that the cluster has room on every field (capacity given) and count it.
    Reserve {
        ticket: u64,
        fields: Vec<(Field, u32)>,
    },
    /// Count it whatever the room.
    Increment(Vec<Field>),
    /// Uncount it.
    Decrement(Vec<Field>),
    /// Nothing to do in the store.
    Nothing,
}

/// This node's allocations, by ticket.
#[derive(Debug, Default)]
pub struct Book {
    entries: HashMap<u64, Entry>,
}

impl Book {
    /// An allocation was taken: what to ask of the store.
    pub fn taken(&mut self, take: Take) -> Step {
        let fields: Vec<Field> = take
            .resources
            .iter()
            .map(|(resource, _)| Field {
                destination: take.destination,
                resource: Arc::clone(resource),
            })
            .collect();
        let step = match take.kind {
            TakeKind::Reserve => Step::Reserve {
                ticket: take.ticket,
                fields: fields
                    .iter()
                    .cloned()
                    .zip(take.resources.iter().map(|(_, capacity)| *capacity))
                    .collect(),
            },
            TakeKind::Count => Step::Increment(fields.clone()),
            TakeKind::Counted => Step::Nothing,
        };
        // Counted from the start; a refused reservation is uncounted when the store
        // says so.
        self.entries.insert(
            take.ticket,
            Entry {
                fields,
                counted: true,
            },
        );
        step
    }

    /// The store refused reservation `ticket`: it does not count it.
    pub fn refused(&mut self, ticket: u64) {
        if let Some(entry) = self.entries.get_mut(&ticket) {
            entry.counted = false;
        }
    }

    /// An allocation was released: what to ask of the store.
    pub fn released(&mut self, ticket: u64) -> Step {
        match self.entries.remove(&ticket) {
            Some(Entry {
                fields,
                counted: true,
            }) => Step::Decrement(fields),
            _ => Step::Nothing,
        }
    }

    /// What the store must count for this node: per field, its allocations alive and
    /// counted.
    pub fn counts(&self) -> BTreeMap<Field, u32> {
        let mut counts = BTreeMap::new();
        for entry in self.entries.values().filter(|e| e.counted) {
            for field in &entry.fields {
                *counts.entry(field.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Allocations alive on this node.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No allocation alive on this node.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(ticket: u64, kind: TakeKind) -> Take {
        Take {
            ticket,
            kind,
            destination: 7,
            resources: vec![(Arc::from("vm"), 2), (Arc::from("pstn"), 5)],
        }
    }

    fn field(resource: &str) -> Field {
        Field {
            destination: 7,
            resource: Arc::from(resource),
        }
    }

    #[test]
    fn a_refused_reservation_is_never_uncounted() {
        let mut book = Book::default();
        assert_eq!(
            book.taken(take(1, TakeKind::Reserve)),
            Step::Reserve {
                ticket: 1,
                fields: vec![(field("vm"), 2), (field("pstn"), 5)]
            }
        );
        book.refused(1);
        assert!(book.counts().is_empty());
        assert_eq!(book.released(1), Step::Nothing);
        assert!(book.is_empty());
    }

    #[test]
    fn counts_follow_what_is_alive_and_counted() {
        let mut book = Book::default();
        let _ = book.taken(take(1, TakeKind::Reserve));
        assert_eq!(
            book.taken(take(2, TakeKind::Count)),
            Step::Increment(vec![field("vm"), field("pstn")])
        );
        assert_eq!(book.taken(take(3, TakeKind::Counted)), Step::Nothing);
        assert_eq!(book.counts()[&field("vm")], 3);
        assert_eq!(
            book.released(2),
            Step::Decrement(vec![field("vm"), field("pstn")])
        );
        assert_eq!(book.released(2), Step::Nothing, "released once");
        assert_eq!(book.counts()[&field("pstn")], 2);
    }

    #[test]
    fn field_keys_read_back() {
        let f = field("pstn");
        assert_eq!(f.key(), "7:pstn");
        assert_eq!(Field::parse(&f.key()), Some(f));
        assert_eq!(Field::parse("x:vm"), None);
        assert_eq!(Field::parse("7"), None);
    }
}
