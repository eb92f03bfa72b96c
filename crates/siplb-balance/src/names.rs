//! Destinations named by host name: what the resolver must look up for them, and the
//! addresses it last found, shared between the resolver (writer) and selection, matching
//! and the listing (readers).
//!
//! This crate does no DNS. A destination whose URI names a host holds a [`NameCell`]; the
//! driver layer resolves the cell's [`Name`] in the background and publishes a
//! [`Resolution`] into it. Until one with an address is published, the destination is not a
//! candidate: a call never waits on DNS. Destinations (of any group, across reloads) with
//! the same name, port and transport share one cell, so a reload neither forgets what was
//! resolved nor asks twice.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

/// How a URI asks to be reached, which decides the SRV service (RFC 3263 section 4.1) and
/// the default port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NameTransport {
    /// No `transport` parameter on a `sip:` URI, or `transport=udp`.
    Udp,
    /// `transport=tcp`.
    Tcp,
    /// A `sips:` URI or `transport=tls`.
    Tls,
}

impl NameTransport {
    /// The SRV service and protocol labels, e.g. `_sip._udp`.
    pub fn srv_prefix(self) -> &'static str {
        match self {
            Self::Udp => "_sip._udp",
            Self::Tcp => "_sip._tcp",
            Self::Tls => "_sips._tcp",
        }
    }

    /// The port A/AAAA answers are used on when the URI has none and no SRV record exists.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Tls => 5061,
            Self::Udp | Self::Tcp => 5060,
        }
    }
}

/// What to resolve for a destination: the URI's host name, its port (0: none, so SRV first)
/// and its transport.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Name {
    /// The host as written in the URI, lowercased.
    pub host: Arc<str>,
    /// The URI's port; 0 when it has none.
    pub port: u16,
    /// How the URI asks to be reached.
    pub transport: NameTransport,
}

impl Name {
    /// What a SIP URI written out asks to resolve: `None` for an IP literal.
    pub fn of_uri(uri: &str) -> Result<Option<Name>, crate::UriError> {
        let hostport = crate::uri::parse_dst_uri(uri.trim())?;
        Ok(match hostport.host {
            crate::Host::Ip(_) => None,
            crate::Host::Name(host) => Some(Name {
                host,
                port: hostport.port,
                transport: hostport.transport,
            }),
        })
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            0 => write!(f, "{} ({})", self.host, self.transport.srv_prefix()),
            p => write!(f, "{}:{p}", self.host),
        }
    }
}

/// The last outcome of resolving a [`Name`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// In the order to try them (SRV priority, then weight; A before AAAA as answered).
    pub addresses: Arc<[SocketAddr]>,
    /// Why the last lookup gave no (new) address; kept beside stale addresses when the
    /// lookup failed for want of an answer rather than by a negative one.
    pub error: Option<Arc<str>>,
    /// False until the first lookup finished, so the listing can tell "not yet" apart.
    pub done: bool,
}

/// The addresses of one name, swapped whole by the resolver and read without a lock.
#[derive(Debug)]
pub struct NameCell {
    name: Name,
    resolution: ArcSwap<Resolution>,
}

impl NameCell {
    fn new(name: Name) -> NameCell {
        NameCell {
            name,
            resolution: ArcSwap::from_pointee(Resolution::default()),
        }
    }

    /// What to look up.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The last resolution published.
    pub fn resolution(&self) -> Arc<Resolution> {
        self.resolution.load_full()
    }

    /// Replaces the addresses; selection sees them with its next call.
    pub fn publish(&self, resolution: Resolution) {
        self.resolution.store(Arc::new(resolution));
    }

    /// Whether there is any address to send to.
    pub(crate) fn has_address(&self) -> bool {
        !self.resolution.load().addresses.is_empty()
    }

    /// Whether `ip` is one of the addresses the name resolved to.
    pub(crate) fn contains_ip(&self, ip: IpAddr) -> bool {
        self.resolution
            .load()
            .addresses
            .iter()
            .any(|a| a.ip().to_canonical() == ip)
    }
}

/// The cells of every name the table uses, kept across reloads.
#[derive(Debug, Default)]
pub(crate) struct Names {
    cells: Mutex<HashMap<Name, Arc<NameCell>>>,
}

impl Names {
    /// The cell for `name`, shared with every other destination (and earlier table) that
    /// names the same host, port and transport.
    pub(crate) fn cell(&self, name: Name) -> Arc<NameCell> {
        Arc::clone(
            self.cells
                .lock()
                .entry(name.clone())
                .or_insert_with(|| Arc::new(NameCell::new(name))),
        )
    }

    /// Forgets cells no table holds any more, and lists the others.
    pub(crate) fn live(&self) -> Vec<Arc<NameCell>> {
        let mut cells = self.cells.lock();
        cells.retain(|_, c| Arc::strong_count(c) > 1);
        cells.values().cloned().collect()
    }
}
