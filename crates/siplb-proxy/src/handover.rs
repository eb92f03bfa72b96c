//! In a cluster, where the in-dialog requests of a dead node's calls go when they reach
//! a node that did not adopt them: to the node that did. The cluster's driver keeps
//! the table; the core reads it only for requests of calls it does not know.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{PoisonError, RwLock};

use crate::addr::Peer;

/// A dead node's SIP address -> the node that adopted its calls.
#[derive(Debug, Default)]
pub struct Handovers(RwLock<HashMap<SocketAddr, Peer>>);

impl Handovers {
    /// Replaces the table.
    pub fn set(&self, table: HashMap<SocketAddr, Peer>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = table;
    }

    pub(crate) fn get(&self, dead: SocketAddr) -> Option<Peer> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&dead)
            .copied()
    }
}
