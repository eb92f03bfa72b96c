//! siplb's stateful proxy core (RFC 3261 section 16), free of I/O.
//!
//! [`Proxy`] takes received messages and timer expiries, and hands back the messages
//! to send. It owns the transactions (from `siplb-txn`), the calls and their load
//! (allocations from `siplb-balance`, released when the call ends by construction),
//! routing by the configured routes, and failover. Sockets, clocks and tasks live in
//! the driver (`siplb-net`).

mod addr;
mod events;
mod persist;
mod proxy;
mod routing;
mod sdp;
mod settings;
mod stats;

pub use addr::{Peer, Transport};
pub use events::{ChangeSource, StatusChange};
pub use persist::{DialogChange, PersistedCall};
pub use proxy::{CallSummary, Incoming, ProbeState, Proxy, Transmit};
pub use settings::Settings;
pub use stats::{Histogram, SETUP_BUCKETS, Stats};
