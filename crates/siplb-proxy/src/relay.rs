//! Where `relay` routes send now: an address as written, or the first address a host
//! name resolved to (kept fresh by whoever resolves the balancer's names).

use std::net::SocketAddr;

use crate::addr::Peer;
use crate::proxy::Proxy;
use crate::settings::Relay;

impl Proxy {
    /// The peer `relay` designates now; `None` while its name has no address.
    pub(crate) fn relay_peer(&self, relay: &Relay) -> Option<Peer> {
        match relay {
            Relay::Address(peer) => Some(*peer),
            Relay::Name { name, transport } => {
                let cell = self.relay_names.iter().find(|c| c.name() == name)?;
                let addr = *cell.resolution().addresses.first()?;
                Some(Peer {
                    transport: *transport,
                    addr,
                })
            }
        }
    }

    /// Whether `addr` is where a relay route sends (any address of a named one).
    pub(crate) fn is_relay_target(&self, addr: SocketAddr) -> bool {
        self.settings.relay_targets().any(|r| match r {
            Relay::Address(peer) => peer.addr == addr,
            Relay::Name { .. } => false,
        }) || self
            .relay_names
            .iter()
            .any(|c| c.resolution().addresses.contains(&addr))
    }
}
