//! Several siplb nodes, one view of the load (SPEC section 9).
//!
//! Each node keeps its calls as it does alone; the balancer reports every allocation
//! to this crate's ledger, and one task per node (`task.rs`) keeps the shared store,
//! a Redis, in step: it reserves room for new calls (a check-and-count script, so two
//! nodes cannot both take the last slot), releases it, writes this node's counts over
//! its entry every heartbeat (so an outage, a restart or an adoption heals by itself),
//! reads the other nodes' loads into the balancer, shares statuses and reloads, and
//! adopts the calls of a node that stopped beating. The SIP core never waits on Redis:
//! a new call waits for its reservation while the core goes on, and a store that is
//! slow or away answers "go on" after `reserve_timeout`.

mod book;
mod heartbeat;
mod records;
mod scripts;
mod status_sync;
mod store;
mod task;
mod view;

pub use book::{Book, Field, Step};
pub use records::{decode as decode_call, encode as encode_call, key as call_key};
pub use status_sync::{Decision, StatusSync};
pub use store::{Beat, NodeBeat, RedisError, Store};
pub use task::{Cluster, Hooks, Settings, stored_calls};
pub use view::{NodeState, NodeView, View};
