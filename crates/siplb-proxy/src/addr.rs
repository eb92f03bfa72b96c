//! Where messages go: peers, siplb's own listeners, and SIP URIs turned into addresses.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use siplb_balance::NameTransport;
use siplb_sip::{Host, SentBy, Uri};
use siplb_txn::Reliability;

/// The transports siplb speaks SIP over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    /// TCP under TLS (RFC 3261 26.2), `sips:` URIs or `;transport=tls`.
    Tls,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}

impl std::str::FromStr for Transport {
    type Err = PeerSyntaxError;

    /// `udp`, `tcp` or `tls`, in any case (as in a URI's `transport` parameter).
    fn from_str(s: &str) -> Result<Transport, PeerSyntaxError> {
        if s.eq_ignore_ascii_case("udp") {
            Ok(Transport::Udp)
        } else if s.eq_ignore_ascii_case("tcp") {
            Ok(Transport::Tcp)
        } else if s.eq_ignore_ascii_case("tls") {
            Ok(Transport::Tls)
        } else {
            Err(PeerSyntaxError::Transport(s.to_owned()))
        }
    }
}

/// The other end of a hop: transport and address. Over TCP the address names the
/// connection (the driver reuses the one open to that address, or opens one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl Peer {
    pub fn udp(addr: SocketAddr) -> Peer {
        Peer {
            transport: Transport::Udp,
            addr,
        }
    }

    /// The largest message one send can carry to this peer: over UDP, what one datagram
    /// holds (65,535 bytes less the UDP header, and over IPv4 the IP header too); over
    /// a stream, no bound of the transport's own.
    pub(crate) fn max_message_len(&self) -> usize {
        match (self.transport, self.addr) {
            (Transport::Udp, SocketAddr::V4(_)) => 65_507,
            (Transport::Udp, SocketAddr::V6(_)) => 65_527,
            (Transport::Tcp | Transport::Tls, _) => usize::MAX,
        }
    }

    pub(crate) fn reliability(&self) -> Reliability {
        match self.transport {
            Transport::Udp => Reliability::Unreliable,
            Transport::Tcp | Transport::Tls => Reliability::Reliable,
        }
    }
}

impl fmt::Display for Peer {
    /// `udp:192.0.2.1:5060`, `tcp:[::1]:5060`. IPv4 is written digit by digit into one
    /// buffer: every stored call writes two peers, and `SocketAddr`'s own formatting
    /// cost more than the rest of the record.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let SocketAddr::V4(v4) = self.addr else {
            return write!(f, "{}:{}", self.transport, self.addr);
        };
        let mut text = [0u8; 25]; // tls:255.255.255.255:65535
        let mut len = 0;
        let mut put = |byte: u8| {
            if let Some(b) = text.get_mut(len) {
                *b = byte;
                len += 1;
            }
        };
        let transport: &[u8] = match self.transport {
            Transport::Udp => b"udp",
            Transport::Tcp => b"tcp",
            Transport::Tls => b"tls",
        };
        transport.iter().for_each(|&b| put(b));
        for (i, octet) in v4.ip().octets().into_iter().enumerate() {
            put(if i == 0 { b':' } else { b'.' });
            put_decimal(&mut put, u32::from(octet));
        }
        put(b':');
        put_decimal(&mut put, u32::from(v4.port()));
        f.write_str(std::str::from_utf8(&text[..len]).map_err(|_| fmt::Error)?)
    }
}

fn put_decimal(put: &mut impl FnMut(u8), n: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    let mut rest = n;
    loop {
        digits[len] = b'0' + (rest % 10) as u8;
        len += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    digits[..len].iter().rev().for_each(|&d| put(d));
}

impl std::str::FromStr for Peer {
    type Err = PeerSyntaxError;

    /// What `Display` writes: `udp:127.0.0.1:5060`, `tcp:[::1]:5060`.
    fn from_str(s: &str) -> Result<Peer, PeerSyntaxError> {
        let (transport, addr) = s
            .split_once(':')
            .ok_or_else(|| PeerSyntaxError::Shape(s.to_owned()))?;
        Ok(Peer {
            transport: transport.parse()?,
            addr: addr
                .parse()
                .map_err(|_| PeerSyntaxError::Address(addr.to_owned()))?,
        })
    }
}

/// Why a text is not a `transport:address:port`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerSyntaxError {
    #[error("`{0}` is not like \"udp:127.0.0.1:5060\"")]
    Shape(String),
    #[error("`{0}` is not a supported transport (udp, tcp, tls)")]
    Transport(String),
    #[error("`{0}` is not an address:port (IPv6 in brackets)")]
    Address(String),
}

/// Why a URI cannot be sent to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetError {
    Uri,
    /// A host name where an IP literal is needed (a relay).
    Unresolved(String),
    /// A destination's name with no address (left) to try.
    NoAddress(String),
    Transport(String),
}

impl std::error::Error for TargetError {}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::Uri => f.write_str("not a SIP URI"),
            TargetError::Unresolved(h) => write!(f, "host {h} is not an IP address"),
            TargetError::NoAddress(h) => write!(f, "host {h} has no address (left) to send to"),
            TargetError::Transport(t) => write!(f, "unsupported transport {t}"),
        }
    }
}

/// The peer a SIP URI designates: its IP literal and port (5060 by default) over the
/// transport its `transport` parameter names (UDP by default).
pub(crate) fn peer_of_uri(uri: &Uri<'_>) -> Result<Peer, TargetError> {
    let ip = match uri.host {
        Host::V4(a) => IpAddr::V4(a),
        Host::V6(a) => IpAddr::V6(a),
        Host::Domain(d) => return Err(TargetError::Unresolved(d.to_owned())),
    };
    let transport = transport_of_uri(uri)?;
    let port = match uri.port {
        Some(0) | None => 5060,
        Some(p) => p,
    };
    Ok(Peer {
        transport,
        addr: SocketAddr::new(ip, port),
    })
}

fn transport_of_uri(uri: &Uri<'_>) -> Result<Transport, TargetError> {
    if uri.scheme == siplb_sip::Scheme::Sips {
        return Ok(Transport::Tls);
    }
    match uri.param("transport").flatten() {
        None => Ok(Transport::Udp),
        Some(t) => t.parse().map_err(|_| TargetError::Transport(t.to_owned())),
    }
}

/// The peer at `addr` (one its host name resolved to) over the transport a URI written
/// out asks for.
pub(crate) fn peer_at(text: &str, addr: SocketAddr) -> Result<Peer, TargetError> {
    let uri = Uri::parse(text).map_err(|_| TargetError::Uri)?;
    Ok(Peer {
        transport: transport_of_uri(&uri)?,
        addr,
    })
}

/// The peer a SIP URI written out designates (as a route's `relay`): its IP literal
/// and port (5060 by default) over its `transport` (UDP by default).
pub fn peer_of_uri_text(text: &str) -> Result<Peer, TargetError> {
    let uri = Uri::parse(text).map_err(|_| TargetError::Uri)?;
    peer_of_uri(&uri)
}

/// The peers of the destination URIs written with an IP literal, each parsed once: the
/// chosen destination's URI was parsed again for every call (about 1,000 instructions
/// per call). Keyed by the URI's text, whose peer never changes, so a reloaded table
/// needs no invalidation; a URI that names no peer is not kept.
#[derive(Debug, Default)]
pub(crate) struct LiteralPeers {
    known: HashMap<Box<str>, Peer>,
}

impl LiteralPeers {
    /// More URIs than any table holds: reached only through many reloads with new
    /// URIs, and then the cache starts afresh.
    const MAX: usize = 4096;

    pub(crate) fn peer(&mut self, uri: &str) -> Result<Peer, TargetError> {
        if let Some(&peer) = self.known.get(uri) {
            return Ok(peer);
        }
        let peer = peer_of_uri_text(uri)?;
        if self.known.len() >= Self::MAX {
            self.known.clear();
        }
        self.known.insert(uri.into(), peer);
        Ok(peer)
    }
}

/// The peer of a balanced destination's `index`-th address: its URI's IP literal (index
/// 0 only), or the `index`-th address its host name resolved to, over the URI's transport.
pub(crate) fn peer_of_destination(
    allocation: &siplb_balance::Allocation,
    index: usize,
    literals: &mut LiteralPeers,
) -> Result<Peer, TargetError> {
    let Some(addresses) = allocation.addresses() else {
        return match index {
            0 => literals.peer(allocation.uri()),
            _ => Err(TargetError::NoAddress(allocation.uri().to_owned())),
        };
    };
    let transport = match allocation.transport() {
        NameTransport::Udp => Transport::Udp,
        NameTransport::Tcp => Transport::Tcp,
        NameTransport::Tls => Transport::Tls,
    };
    let addr = addresses
        .get(index)
        .ok_or_else(|| TargetError::NoAddress(allocation.host().to_string()))?;
    Ok(Peer {
        transport,
        addr: *addr,
    })
}

/// siplb's listeners, to pick the address it sends from and to recognise itself.
#[derive(Clone, Debug)]
pub(crate) struct Listeners {
    listen: Vec<Peer>,
    /// `host:port` of each listener, written once: every forwarded request carries
    /// it in its Via, and every INVITE in its Record-Route.
    sent_bys: Vec<SentBy>,
    /// Addresses that are siplb's own without a listener here (the other nodes of a
    /// cluster).
    aliases: Vec<SocketAddr>,
    /// The URIs siplb writes in its own Record-Route, each one that [`Listeners::is_me`]
    /// accepts: a Route or Record-Route coming back as written is known to be siplb's
    /// without parsing it again (two Routes and a Record-Route per call).
    own_route_uris: Vec<Box<str>>,
}

/// The parameters of siplb's Record-Route URI over `transport`.
pub(crate) fn record_route_params(transport: Transport) -> &'static str {
    match transport {
        Transport::Udp => ";lr",
        Transport::Tcp => ";transport=tcp;lr",
        Transport::Tls => ";transport=tls;lr",
    }
}

impl Listeners {
    pub(crate) fn new(listen: Vec<Peer>) -> Listeners {
        let sent_bys: Vec<SentBy> = listen.iter().map(|l| SentBy::new(l.addr)).collect();
        let mut listeners = Listeners {
            listen,
            sent_bys,
            aliases: Vec::new(),
            own_route_uris: Vec::new(),
        };
        let transports = [Transport::Udp, Transport::Tcp, Transport::Tls];
        let written: Vec<Box<str>> = listeners
            .sent_bys
            .iter()
            .flat_map(|sb| {
                transports.map(|t| {
                    ["sip:", sb.as_str(), record_route_params(t)]
                        .concat()
                        .into_boxed_str()
                })
            })
            .filter(|text| Uri::parse(text).is_ok_and(|u| listeners.is_me(&u)))
            .collect();
        listeners.own_route_uris = written;
        listeners
    }

    /// True when the URI text names siplb: a URI as siplb wrote it, or any other
    /// spelling [`Listeners::is_me`] accepts.
    pub(crate) fn names_me(&self, uri_text: &str) -> bool {
        self.own_route_uris.iter().any(|own| **own == *uri_text)
            || Uri::parse(uri_text).is_ok_and(|u| self.is_me(&u))
    }

    pub(crate) fn with_aliases(mut self, aliases: &[SocketAddr]) -> Listeners {
        self.aliases = aliases
            .iter()
            .map(|a| SocketAddr::new(canonical(a.ip()), a.port()))
            .collect();
        self
    }

    /// The listener that sends to `peer` (same transport and address family), with
    /// its `host:port`.
    pub(crate) fn local_for(&self, peer: &Peer) -> Option<(Peer, &SentBy)> {
        let same_family = |l: &Peer| l.addr.is_ipv4() == peer.addr.is_ipv4();
        let i = self
            .listen
            .iter()
            .position(|l| l.transport == peer.transport && same_family(l))
            .or_else(|| self.listen.iter().position(same_family))?;
        Some((self.listen[i], self.sent_bys.get(i)?))
    }

    /// True when `uri` points at one of siplb's listeners, however the port is
    /// written (absent and 0 both mean 5060, where siplb would send it). An
    /// unspecified listen address matches any IP on its port.
    pub(crate) fn is_me(&self, uri: &Uri<'_>) -> bool {
        let Some(ip) = uri.host.ip() else {
            return false;
        };
        let port = match uri.port {
            None | Some(0) => 5060,
            Some(p) => p,
        };
        self.is_my_address(SocketAddr::new(ip, port))
    }

    /// True when sending to `addr` would reach siplb itself.
    pub(crate) fn is_my_address(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        if self.aliases.contains(&SocketAddr::new(ip, addr.port())) {
            return true;
        }
        self.listen.iter().any(|l| {
            l.addr.port() == addr.port()
                && (canonical(l.addr.ip()) == ip
                    || (l.addr.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified())))
        })
    }
}

impl Listeners {
    /// The route from siplb on towards whoever sent `response`: the Record-Route
    /// entries above siplb's own (proxies after siplb), nearest first. Empty when
    /// siplb's own entry is missing, as nothing is then known to come after it.
    pub(crate) fn route_beyond(&self, response: &siplb_sip::Message) -> Vec<Box<str>> {
        let mut above = Vec::new();
        for rr in response.record_routes() {
            let Ok(rr) = rr else {
                return Vec::new();
            };
            if self.names_me(rr.uri_text) {
                above.reverse();
                return above;
            }
            above.push(Box::<str>::from(rr.uri_text));
        }
        Vec::new()
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// How a listener writes itself in a Via sent-by or a Record-Route URI.
pub(crate) fn host_port(addr: SocketAddr) -> String {
    SentBy::new(addr).into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The cache of literal destinations gives what a parse gives, every time, keeps
    /// no URI that names no peer, and starts afresh past its bound.
    #[test]
    fn literal_peers_are_what_their_uri_says() {
        let mut literals = LiteralPeers::default();
        for uri in [
            "sip:127.0.0.11",
            "sip:127.0.0.12:5070;transport=tcp",
            "sips:[2001:db8::7]:5061",
            "sip:user@192.0.2.1;transport=TLS;lr",
            "sip:192.0.2.1:0",
        ] {
            for _ in 0..2 {
                assert_eq!(
                    literals.peer(uri).map_err(|e| e.to_string()),
                    peer_of_uri_text(uri).map_err(|e| e.to_string()),
                    "{uri}"
                );
            }
        }
        for bad in [
            "sip:gw.example.com",
            "sip:192.0.2.1;transport=sctp",
            "tel:+1",
        ] {
            assert!(literals.peer(bad).is_err(), "{bad}");
        }
        assert_eq!(literals.known.len(), 5);
        for port in 0..LiteralPeers::MAX + 10 {
            let uri = format!("sip:192.0.2.9:{}", port % 65536);
            assert_eq!(
                literals.peer(&uri).unwrap().addr.ip().to_string(),
                "192.0.2.9"
            );
            assert!(literals.known.len() <= LiteralPeers::MAX);
        }
    }

    fn listeners(listen: &[(Transport, &str)]) -> Listeners {
        Listeners::new(
            listen
                .iter()
                .map(|&(transport, addr)| Peer {
                    transport,
                    addr: addr.parse().unwrap(),
                })
                .collect(),
        )
    }

    /// A Route or Request-URI naming siplb is recognised however its port is spelled,
    /// so it is consumed rather than sent to siplb itself (a loop until Max-Forwards
    /// runs out).
    #[test]
    fn every_spelling_of_my_address_is_me() {
        let me = listeners(&[
            (Transport::Udp, "127.0.0.1:5060"),
            (Transport::Tcp, "0.0.0.0:5070"),
        ]);
        let is_me = |text: &str| me.is_me(&Uri::parse(text).unwrap());
        for text in [
            "sip:127.0.0.1",
            "sip:127.0.0.1:5060;lr",
            "sip:127.0.0.1:0;lr",
            "sip:127.0.0.1:05060",
            "sip:x@127.0.0.1;transport=tcp",
            "sip:127.0.0.9:5070;lr",
        ] {
            assert!(is_me(text), "{text}");
        }
        for text in [
            "sip:127.0.0.1:5061",
            "sip:127.0.0.2",
            "sip:10.0.0.1:5070",
            "sip:siplb.example.com",
        ] {
            assert!(!is_me(text), "{text}");
        }
    }

    /// The texts taken as siplb's without a parse are siplb's by the parse too, every
    /// Record-Route URI siplb writes is among them, and any other spelling still gets
    /// the parse's answer.
    #[test]
    fn a_uri_as_siplb_wrote_it_names_siplb_as_its_parse_does() {
        let me = listeners(&[
            (Transport::Udp, "127.0.0.1:5060"),
            (Transport::Tls, "[::1]:5061"),
            (Transport::Tcp, "0.0.0.0:5070"),
        ]);
        let by_parse = |text: &str| Uri::parse(text).is_ok_and(|u| me.is_me(&u));
        assert_eq!(me.own_route_uris.len(), 9);
        assert!(!by_parse("sip:127.0.0.1:5060;lr bad"));
        for own in &me.own_route_uris {
            assert!(by_parse(own), "{own}");
        }
        for (i, sent_by) in me.sent_bys.iter().enumerate() {
            let transport = me.listen[i].transport;
            let written = format!("sip:{}{}", sent_by.as_str(), record_route_params(transport));
            assert!(
                me.own_route_uris.iter().any(|o| **o == *written),
                "{written}"
            );
        }
        for text in [
            "sip:127.0.0.1:5060;lr",
            "SIP:127.0.0.1:5060;LR",
            "sip:127.0.0.1;lr",
            "sip:127.0.0.1:5060;lr;x=%",
            // Starts as siplb writes it, but the parse refuses it.
            "sip:127.0.0.1:5060;lr;a=\"q\"",
            "sip:127.0.0.1:5060;lr bad",
            "sip:127.0.0.1:5061;lr",
            "sip:[::1]:5061;transport=tls;lr",
            "sip:[0:0:0:0:0:0:0:1]:5061;lr",
            "sip:127.0.0.9:5070;lr",
            "sip:0.0.0.0:5070;transport=tcp;lr",
            "sip:siplb.example.com;lr",
            "tel:+1",
            "",
        ] {
            assert_eq!(me.names_me(text), by_parse(text), "{text}");
        }
    }

    #[test]
    fn a_peer_is_written_as_its_transport_and_address() {
        let addrs = [
            "0.0.0.0:0",
            "127.0.0.1:5060",
            "255.255.255.255:65535",
            "10.20.3.199:9",
            "[::1]:5060",
            "[2001:db8::7]:5061",
        ];
        for transport in [Transport::Udp, Transport::Tcp, Transport::Tls] {
            for addr in addrs {
                let peer = Peer {
                    transport,
                    addr: addr.parse().unwrap(),
                };
                assert_eq!(peer.to_string(), format!("{transport}:{}", peer.addr));
                assert_eq!(peer.to_string().parse::<Peer>().unwrap(), peer);
            }
        }
    }

    #[test]
    fn a_peer_reads_back_what_it_writes() {
        for text in ["udp:127.0.0.1:5060", "tcp:[::1]:5070"] {
            let peer: Peer = text.parse().unwrap();
            assert_eq!(peer.to_string(), text);
        }
        assert_eq!(
            "TCP:127.0.0.1:5060".parse::<Peer>().unwrap().transport,
            Transport::Tcp
        );
        for (text, error) in [
            ("127.0.0.1", PeerSyntaxError::Shape("127.0.0.1".into())),
            (
                "sctp:127.0.0.1:5060",
                PeerSyntaxError::Transport("sctp".into()),
            ),
            ("udp:::1:5060", PeerSyntaxError::Address("::1:5060".into())),
            (
                "udp:127.0.0.1",
                PeerSyntaxError::Address("127.0.0.1".into()),
            ),
        ] {
            assert_eq!(text.parse::<Peer>(), Err(error), "{text}");
        }
    }
}
