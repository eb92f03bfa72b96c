//! What the proxy core runs on, in its own types: routes with their resource requests
//! parsed and their relay targets resolved, reply texts, timers, bounds. `siplb-config`
//! compiles a configuration file into these once; tests and the simulator may build
//! them by hand.

use std::sync::Arc;
use std::time::Duration;

use siplb_balance::{Flags, Name, ResourceRequest};
use siplb_sip::Limits;
use siplb_txn::Timers;

use crate::addr::{Peer, Transport};
use crate::routing::RouteMatch;

/// A group a balanced call may go to, with what it asks of it.
#[derive(Clone, Debug)]
pub struct GroupChoice {
    pub group: u32,
    pub request: ResourceRequest,
    pub flags: Flags,
}

/// Where a `relay` route sends: an address, or a host name resolved in the
/// background like the table's (its first address is used).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relay {
    Address(Peer),
    Name { name: Name, transport: Transport },
}

impl std::fmt::Display for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Relay::Address(peer) => write!(f, "{peer}"),
            Relay::Name { name, transport } => match name.port {
                0 => write!(f, "{transport}:{} (by DNS)", name.host),
                port => write!(f, "{transport}:{}:{port} (by DNS)", name.host),
            },
        }
    }
}

/// What a route does with the requests it matches.
#[derive(Clone, Debug)]
pub enum RouteAction {
    /// Pick a destination of `first.group` by load; when that group has no room, no
    /// destination or failover exhausts it, the `overflow` groups in turn.
    Balance {
        first: GroupChoice,
        overflow: Arc<[GroupChoice]>,
    },
    /// Count the call against the destination of `group` it comes from, then relay it.
    CountAndRelay {
        group: u32,
        request: ResourceRequest,
        relay: Relay,
    },
    Relay(Relay),
    Reply {
        code: u16,
        reason: String,
    },
}

/// A route: the first whose match holds applies its action.
#[derive(Clone, Debug)]
pub struct Route {
    pub matcher: RouteMatch,
    pub action: RouteAction,
}

/// Everything the proxy core needs from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The listeners SIP is served on.
    pub listen: Vec<Peer>,
    /// Other addresses that are siplb's own for routing: in a cluster, every node's
    /// (a Route naming any of them is consumed, so a call another node set up is routed
    /// by whichever node its request reaches).
    pub aliases: Vec<std::net::SocketAddr>,
    pub timers: Timers,
    pub dialog_timeout: Duration,
    /// What a caller gets when no destination can take the call.
    pub full_reply: (u16, String),
    /// Failover never disables a group below this many enabled destinations.
    pub min_enabled: usize,
    /// Consecutive failures that disable a destination.
    pub failures_to_disable: u32,
    pub routes: Vec<Route>,
    /// Bounds on what a peer may make siplb buffer or index (the transports frame
    /// streams with them too).
    pub limits: Limits,
    pub probing: Probing,
    /// Report answered calls as [`DialogChange`](crate::DialogChange)s to be stored.
    pub persist_dialogs: bool,
    /// How long an answered call must have lasted before it is reported (zero: when
    /// answered). A call that ends sooner is reported neither stored nor ended, so
    /// short calls cost the store nothing; a crash loses the calls younger than this.
    pub store_after: Duration,
    /// Calls at once; beyond, new calls get 503 with Retry-After.
    pub max_calls: usize,
    /// Transactions at once; beyond, new requests get 503.
    pub max_transactions: usize,
    /// What siplb does when its own core is overloaded (RFC 7339, server side).
    pub overload: OwnOverloadSettings,
}

/// siplb's own overload control (RFC 7339 server side, `own_overload.rs`).
#[derive(Clone, Debug)]
pub struct OwnOverloadSettings {
    /// Ask callers that announce support for fewer new calls, and turn away the same
    /// share of the others' new calls, when the core is busier than `target`.
    pub feedback: bool,
    /// The share of wall time the core may spend handling input (0 to 1).
    pub target: f64,
    /// How long a reduction holds at the caller (`oc-validity`) unless renewed.
    pub validity: Duration,
}

impl Default for OwnOverloadSettings {
    fn default() -> Self {
        OwnOverloadSettings {
            feedback: true,
            target: 0.9,
            validity: Duration::from_secs(2),
        }
    }
}

/// OPTIONS probing of destinations (SPEC section 4).
#[derive(Clone, Debug)]
pub struct Probing {
    /// Zero: no probing.
    pub interval: Duration,
    pub method: String,
    pub from: String,
    /// Codes that count as success besides 200.
    pub reply_codes: Vec<u16>,
    pub timeout: Duration,
    pub failures_to_disable: u32,
    pub successes_to_enable: u32,
}

impl RouteAction {
    /// Where it relays to, for a `relay` route (with or without `count`).
    pub fn relay(&self) -> Option<&Relay> {
        match self {
            RouteAction::CountAndRelay { relay, .. } | RouteAction::Relay(relay) => Some(relay),
            _ => None,
        }
    }
}

impl Settings {
    /// Where `relay` routes send: with the destination table, the only places new
    /// calls go.
    pub(crate) fn relay_targets(&self) -> impl Iterator<Item = &Relay> + '_ {
        self.routes.iter().filter_map(|r| r.action.relay())
    }
}
