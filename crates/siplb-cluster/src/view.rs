//! What a node knows of the cluster, for the management interface and metrics.

use std::time::Duration;

/// A node as the last heartbeat showed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// This node.
    Me,
    Alive,
    /// Silent for longer than `node_timeout`; its calls stay counted until adopted.
    Dead,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Me => "self",
            NodeState::Alive => "alive",
            NodeState::Dead => "dead",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub state: NodeState,
    /// Since its last heartbeat, by the store's clock.
    pub silent_for: Duration,
    /// Answered calls it has stored (what a survivor would adopt).
    pub stored_calls: u64,
    /// Its load counters, summed.
    pub load: u64,
}

/// What the node knows of the cluster, for `cluster`, `/health` and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    pub node: String,
    /// The last operation on the store succeeded.
    pub store_up: bool,
    /// Why the store is down.
    pub store_error: Option<String>,
    pub nodes: Vec<NodeView>,
    /// This node sends the probes.
    pub prober: bool,
    pub reservations_granted: u64,
    pub reservations_refused: u64,
    /// Reservations let through without the store (it was down or slow).
    pub reservations_unconfirmed: u64,
    /// Calls adopted from dead nodes.
    pub adopted_calls: u64,
    /// Times the store came back and this node's counts were written over its entry.
    pub reconciliations: u64,
}
