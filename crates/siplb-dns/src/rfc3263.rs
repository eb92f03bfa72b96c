//! Which lookups turn a destination's name into addresses (RFC 3263 section 4), given
//! something that answers them: the real resolver in production, a table in tests.
//!
//! A name with a port is looked up for A/AAAA. A name without one is looked up for SRV
//! after the URI's transport; its targets, in RFC 2782 order, are looked up for A/AAAA on
//! their ports. Without SRV records, the name's own A/AAAA are used on the transport's
//! default port. NAPTR is not consulted: destinations name their transport in the URI.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use siplb_balance::Name;

use crate::srv::{self, SrvRecord};

/// Why a lookup gave nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupError {
    /// The DNS answered that there is no such record (NXDOMAIN or no data): the name
    /// really has no address, unlike a timeout or an unreachable server.
    pub negative: bool,
    pub text: String,
}

/// Records and until when they may be used.
pub type Answer<T> = Result<(Vec<T>, Instant), LookupError>;

/// Answers DNS questions; implemented over hickory for real.
pub trait Lookups {
    /// SRV records of `name` (a full name such as `_sip._udp.example.net`).
    fn srv(&self, name: &str) -> impl Future<Output = Answer<SrvRecord>> + Send;
    /// A and AAAA records of `name`.
    fn ip(&self, name: &str) -> impl Future<Output = Answer<IpAddr>> + Send;
}

/// Addresses to try in order, and until when they hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub addresses: Vec<SocketAddr>,
    pub valid_until: Instant,
}

/// Resolves `name` as RFC 3263 says. `draw` orders SRV targets of equal priority.
pub async fn resolve(
    name: &Name,
    dns: &impl Lookups,
    draw: &mut (dyn FnMut(u32) -> u32 + Send),
) -> Result<Resolved, LookupError> {
    let host = name.host.trim_end_matches('.');
    if name.port != 0 {
        let (ips, valid_until) = dns.ip(host).await?;
        return with_port(ips, name.port, valid_until);
    }
    // Both asked at once: a name with no SRV records (the common case for a box named in
    // /etc/hosts) gets its addresses without waiting for the SRV answer first.
    let service = format!("{}.{host}", name.transport.srv_prefix());
    let (srv, own) = tokio::join!(dns.srv(&service), dns.ip(host));
    match srv {
        Ok((records, _)) if srv::refused(&records) => Err(LookupError {
            negative: true,
            text: format!("{service}: the SRV record says the service is not offered"),
        }),
        Ok((records, srv_until)) if !records.is_empty() => {
            targets(service, records, srv_until, dns, draw).await
        }
        // No SRV records (or no answer for them): the name's own addresses on the
        // default port.
        Ok(_) | Err(_) => {
            let (ips, valid_until) = own?;
            with_port(ips, name.transport.default_port(), valid_until)
        }
    }
}

async fn targets(
    service: String,
    records: Vec<SrvRecord>,
    srv_until: Instant,
    dns: &impl Lookups,
    draw: &mut (dyn FnMut(u32) -> u32 + Send),
) -> Result<Resolved, LookupError> {
    let mut addresses = Vec::new();
    let mut valid_until = srv_until;
    let mut last_error = None;
    for record in srv::order(records, draw) {
        match dns.ip(&record.target).await {
            Ok((ips, until)) => {
                valid_until = valid_until.min(until);
                for ip in ips {
                    let address = SocketAddr::new(ip, record.port);
                    if !addresses.contains(&address) {
                        addresses.push(address);
                    }
                }
            }
            Err(e) => last_error = Some(e),
        }
    }
    match (addresses.is_empty(), last_error) {
        (false, _) => Ok(Resolved {
            addresses,
            valid_until,
        }),
        (true, Some(e)) => Err(LookupError {
            negative: e.negative,
            text: format!("{service}: no target resolved: {}", e.text),
        }),
        (true, None) => Err(LookupError {
            negative: true,
            text: format!("{service}: no target has an address"),
        }),
    }
}

fn with_port(ips: Vec<IpAddr>, port: u16, valid_until: Instant) -> Result<Resolved, LookupError> {
    let mut addresses: Vec<SocketAddr> = Vec::with_capacity(ips.len());
    for ip in ips {
        let address = SocketAddr::new(ip, port);
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    if addresses.is_empty() {
        return Err(LookupError {
            negative: true,
            text: "no A or AAAA record".to_owned(),
        });
    }
    Ok(Resolved {
        addresses,
        valid_until,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use siplb_balance::NameTransport;

    use super::*;

    /// A zone as a table of answers; asked names are recorded.
    #[derive(Default)]
    struct Zone {
        srv: HashMap<String, Answer<SrvRecord>>,
        ip: HashMap<String, Answer<IpAddr>>,
        asked: Mutex<Vec<String>>,
    }

    fn nx(name: &str) -> LookupError {
        LookupError {
            negative: true,
            text: format!("{name}: NXDOMAIN"),
        }
    }

    impl Lookups for Zone {
        async fn srv(&self, name: &str) -> Answer<SrvRecord> {
            self.asked.lock().unwrap().push(format!("SRV {name}"));
            self.srv.get(name).cloned().unwrap_or_else(|| Err(nx(name)))
        }
        async fn ip(&self, name: &str) -> Answer<IpAddr> {
            self.asked.lock().unwrap().push(format!("A {name}"));
            self.ip.get(name).cloned().unwrap_or_else(|| Err(nx(name)))
        }
    }

    fn name(host: &str, port: u16, transport: NameTransport) -> Name {
        Name {
            host: host.into(),
            port,
            transport,
        }
    }

    fn at(secs: u64) -> Instant {
        // Instants only compare here; a fixed base keeps them apart by `secs`.
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(Instant::now) + Duration::from_secs(secs)
    }

    fn ips(list: &[&str], until: u64) -> Answer<IpAddr> {
        Ok((list.iter().map(|s| s.parse().unwrap()).collect(), at(until)))
    }

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    fn run(zone: &Zone, n: &Name) -> Result<Resolved, LookupError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(resolve(n, zone, &mut |_| 0))
    }

    fn addrs(r: &Resolved) -> Vec<String> {
        r.addresses.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_port_means_addresses_only() {
        let mut zone = Zone::default();
        zone.ip.insert(
            "gw.example.net".into(),
            ips(&["192.0.2.1", "2001:db8::1"], 30),
        );
        let r = run(&zone, &name("gw.example.net.", 5080, NameTransport::Udp)).unwrap();
        assert_eq!(addrs(&r), ["192.0.2.1:5080", "[2001:db8::1]:5080"]);
        assert_eq!(r.valid_until, at(30));
        assert_eq!(*zone.asked.lock().unwrap(), ["A gw.example.net"]);
    }

    #[test]
    fn srv_targets_in_priority_order_on_their_ports() {
        let mut zone = Zone::default();
        zone.srv.insert(
            "_sip._tcp.pbx.example.net".into(),
            Ok((
                vec![
                    srv(20, 0, 5070, "b.example.net"),
                    srv(10, 0, 5060, "a.example.net"),
                ],
                at(300),
            )),
        );
        zone.ip
            .insert("a.example.net".into(), ips(&["192.0.2.10"], 60));
        zone.ip
            .insert("b.example.net".into(), ips(&["192.0.2.20"], 90));
        zone.ip
            .insert("pbx.example.net".into(), ips(&["192.0.2.99"], 90));
        let r = run(&zone, &name("pbx.example.net", 0, NameTransport::Tcp)).unwrap();
        assert_eq!(addrs(&r), ["192.0.2.10:5060", "192.0.2.20:5070"]);
        assert_eq!(r.valid_until, at(60), "the shortest TTL of the chain");
    }

    #[test]
    fn without_srv_the_name_itself_on_the_default_port() {
        let mut zone = Zone::default();
        zone.ip
            .insert("yate1.mycluster.net".into(), ips(&["10.0.0.1"], 5));
        let r = run(&zone, &name("yate1.mycluster.net", 0, NameTransport::Udp)).unwrap();
        assert_eq!(addrs(&r), ["10.0.0.1:5060"]);
        let r = run(&zone, &name("yate1.mycluster.net", 0, NameTransport::Tls)).unwrap();
        assert_eq!(addrs(&r), ["10.0.0.1:5061"]);
        let asked = zone.asked.lock().unwrap();
        assert!(asked.contains(&"SRV _sips._tcp.yate1.mycluster.net".to_owned()));
    }

    #[test]
    fn failures_say_whether_the_name_has_no_address() {
        let mut zone = Zone::default();
        let e = run(&zone, &name("gone.example.net", 0, NameTransport::Udp)).unwrap_err();
        assert!(e.negative, "{e:?}");
        zone.ip.insert(
            "slow.example.net".into(),
            Err(LookupError {
                negative: false,
                text: "request timed out".into(),
            }),
        );
        let e = run(&zone, &name("slow.example.net", 5060, NameTransport::Udp)).unwrap_err();
        assert!(!e.negative);
        // A lone "." target: the service is not offered there, whatever A records say.
        zone.srv.insert(
            "_sip._udp.no.example.net".into(),
            Ok((vec![srv(0, 0, 0, "")], at(60))),
        );
        zone.ip
            .insert("no.example.net".into(), ips(&["192.0.2.5"], 60));
        let e = run(&zone, &name("no.example.net", 0, NameTransport::Udp)).unwrap_err();
        assert!(e.negative && e.text.contains("not offered"), "{e:?}");
        // SRV targets that do not resolve.
        zone.srv.insert(
            "_sip._udp.dangling.example.net".into(),
            Ok((vec![srv(0, 0, 5060, "nowhere.example.net")], at(60))),
        );
        let e = run(&zone, &name("dangling.example.net", 0, NameTransport::Udp)).unwrap_err();
        assert!(e.negative && e.text.contains("no target resolved"), "{e:?}");
    }
}
