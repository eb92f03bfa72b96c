//! Sharing destination statuses and capacities between nodes: each node publishes what
//! changed on it and takes what changed elsewhere. Pure; the driver reads both sides
//! at each heartbeat.

use std::collections::HashMap;

/// What this node last agreed with the store, per destination id (encoded states).
#[derive(Debug, Default)]
pub struct StatusSync {
    known: HashMap<u32, String>,
}

/// What one step decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// This node's changes, for the store.
    pub publish: Vec<(u32, String)>,
    /// The other nodes' changes, for this node.
    pub apply: Vec<(u32, String)>,
}

impl StatusSync {
    /// `local`: this node's states now; `remote`: the store's. A state that changed
    /// here since the last step is published (the latest change wins); otherwise one
    /// that changed in the store is applied. A destination seen for the first time
    /// takes the store's state if it has one: a node that joins follows the cluster.
    pub fn step(&mut self, local: &[(u32, String)], remote: &HashMap<u32, String>) -> Decision {
        let mut decision = Decision::default();
        for (id, here) in local {
            let there = remote.get(id);
            let changed_here = self.known.get(id).is_some_and(|k| k != here);
            match there {
                Some(there) if !changed_here && there != here => {
                    decision.apply.push((*id, there.clone()));
                    self.known.insert(*id, there.clone());
                }
                _ => {
                    if there != Some(here) {
                        decision.publish.push((*id, here.clone()));
                    }
                    self.known.insert(*id, here.clone());
                }
            }
        }
        self.known
            .retain(|id, _| local.iter().any(|(l, _)| l == id));
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(items: &[(u32, &str)]) -> HashMap<u32, String> {
        items.iter().map(|(i, s)| (*i, (*s).to_owned())).collect()
    }

    fn local(items: &[(u32, &str)]) -> Vec<(u32, String)> {
        items.iter().map(|(i, s)| (*i, (*s).to_owned())).collect()
    }

    #[test]
    fn a_joining_node_follows_the_store_and_publishes_what_it_lacks() {
        let mut sync = StatusSync::default();
        let d = sync.step(&local(&[(1, "a"), (2, "b")]), &remote(&[(1, "x")]));
        assert_eq!(d.apply, local(&[(1, "x")]));
        assert_eq!(d.publish, local(&[(2, "b")]));
        // Applied here, nothing more to do.
        let d = sync.step(
            &local(&[(1, "x"), (2, "b")]),
            &remote(&[(1, "x"), (2, "b")]),
        );
        assert_eq!(d, Decision::default());
    }

    #[test]
    fn changes_flow_both_ways_and_the_local_one_wins_a_tie() {
        let mut sync = StatusSync::default();
        let _ = sync.step(&local(&[(1, "a")]), &remote(&[(1, "a")]));
        let d = sync.step(&local(&[(1, "b")]), &remote(&[(1, "a")]));
        assert_eq!(d.publish, local(&[(1, "b")]));
        assert!(d.apply.is_empty());
        let d = sync.step(&local(&[(1, "b")]), &remote(&[(1, "c")]));
        assert_eq!(d.apply, local(&[(1, "c")]));
        // Both changed since: this node's change is published over the store's.
        let d = sync.step(&local(&[(1, "d")]), &remote(&[(1, "e")]));
        assert_eq!(d.publish, local(&[(1, "d")]));
        assert!(d.apply.is_empty());
    }
}
