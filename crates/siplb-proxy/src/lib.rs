//! siplb's stateful proxy core (RFC 3261 section 16), free of I/O.
//!
//! [`Proxy`] takes received messages and timer expiries and hands back the messages
//! to send and the events to publish; its module doc gives the polling contract. Where
//! each concern lives:
//!
//! - [`proxy`](crate::Proxy): inputs, the work loop, effects carried out;
//! - `requests`: requests in, admission and the routes to a new call;
//! - `call`: a call's state machine (attempts, failover, cancel, dialogs), the only
//!   place load is taken, moved or released;
//! - `in_dialog`: where in-dialog requests go;
//! - `responses`: responses in and transaction events, attempts that are over;
//! - `forward`: requests siplb sends (attempts, CANCEL, its own ACK and BYE);
//! - `local`: siplb's own answers and what a request must be to be forwarded;
//! - `overload`, `own_overload`: RFC 7339, the destinations' feedback and siplb's own;
//! - `failures`, `probe`: destination health;
//! - `lifecycle`: restored calls, the operator's view, stored calls;
//! - `transactions`, `agenda`, `expiry`, `slab`, `id_table`, `tokens`, `keys`: the
//!   tables underneath.
//!
//! Sockets, clocks and tasks live in the driver (`siplb-net`).

mod addr;
mod agenda;
mod call;
mod events;
mod expiry;
mod failures;
mod forward;
mod handover;
mod id_table;
mod in_dialog;
mod keys;
mod lifecycle;
mod local;
mod overload;
mod own_overload;
mod persist;
mod probe;
mod proxy;
mod relay;
mod requests;
mod responses;
mod routing;
mod sdp;
mod settings;
mod slab;
mod stats;
mod tokens;
mod transactions;

pub use addr::{Peer, PeerSyntaxError, TargetError, Transport, peer_of_uri_text};
pub use events::{ChangeSource, CoreEvent, NewStatus, StatusChange};
pub use handover::Handovers;
pub use lifecycle::CallSummary;
pub use own_overload::CoreLoad;
pub use persist::{DialogChange, PersistedCall, RestoreError};
pub use probe::ProbeState;
pub use proxy::{Incoming, Proxy, Transmit};
pub use routing::RouteMatch;
pub use settings::{
    GroupChoice, OwnOverloadSettings, Probing, Relay, Route, RouteAction, Settings,
};
pub use stats::{Histogram, RESERVATION_BUCKETS, SETUP_BUCKETS, Stats};
