//! The host and port of a destination's `dst_uri`, needed to match the source of a call
//! against the table (`lb_is_destination`, `lb_count_call`).
//!
//! Only what matching needs is parsed: scheme, host and port. URI parameters (`transport`,
//! ...) and headers are left to the SIP layer, which sends to the URI as written.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::names::NameTransport;

/// The host part of a destination URI.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A literal IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A DNS name; it matches source addresses only through the resolver given at (re)load.
    Name(Arc<str>),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Self::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Self::Name(name) => f.write_str(name),
        }
    }
}

/// A `dst_uri` that siplb cannot route to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// Not a `sip:` or `sips:` URI.
    #[error("scheme must be sip: or sips:")]
    Scheme,
    /// Nothing between the scheme (or user part) and the port or parameters.
    #[error("missing host")]
    MissingHost,
    /// The host is neither an IP literal nor a valid host name.
    #[error("invalid host {host:?}")]
    InvalidHost {
        /// The host as written.
        host: String,
    },
    /// The port is empty, not decimal, or above 65535.
    #[error("invalid port {port:?}")]
    InvalidPort {
        /// The port as written.
        port: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostPort {
    pub(crate) host: Host,
    /// 0 when the URI has no port: it then matches a source on any port.
    pub(crate) port: u16,
    /// `sips:` or the `transport` parameter, for resolving a host name.
    pub(crate) transport: NameTransport,
}

/// The text after the scheme, and whether the scheme is `sips`.
fn strip_scheme(uri: &str) -> Option<(&str, bool)> {
    let (scheme, rest) = uri.split_once(':')?;
    if scheme.eq_ignore_ascii_case("sips") {
        Some((rest, true))
    } else {
        scheme.eq_ignore_ascii_case("sip").then_some((rest, false))
    }
}

/// `sips:` means TLS whatever the parameters say; otherwise `transport=tcp` or `tls`. Other
/// transports (sctp, ws) are left to the SIP layer, which refuses them when sending.
fn transport_of(secure: bool, params: &str) -> NameTransport {
    if secure {
        return NameTransport::Tls;
    }
    params
        .split(';')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("transport"))
        .map_or(NameTransport::Udp, |(_, v)| {
            let v = v.trim();
            if v.eq_ignore_ascii_case("tcp") {
                NameTransport::Tcp
            } else if v.eq_ignore_ascii_case("tls") {
                NameTransport::Tls
            } else {
                NameTransport::Udp
            }
        })
}

pub(crate) fn parse_dst_uri(uri: &str) -> Result<HostPort, UriError> {
    let (rest, secure) = strip_scheme(uri).ok_or(UriError::Scheme)?;
    // Headers may legitimately contain '@', so the user part is looked for before them only.
    let before_headers = rest.split('?').next().unwrap_or_default();
    let after_user = match before_headers.rfind('@') {
        Some(at) => &before_headers[at + 1..],
        None => before_headers,
    };
    let (hostport, params) = after_user.split_once(';').unwrap_or((after_user, ""));

    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (v6, after) = bracketed
            .split_once(']')
            .ok_or_else(|| UriError::InvalidHost {
                host: hostport.into(),
            })?;
        let ip: Ipv6Addr = v6.parse().map_err(|_| UriError::InvalidHost {
            host: format!("[{v6}]"),
        })?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| UriError::InvalidPort { port: after.into() })?,
            ),
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        if hostport.matches(':').count() > 1 {
            // A bare IPv6 address; RFC 3261 requires the brackets.
            return Err(UriError::InvalidHost {
                host: hostport.into(),
            });
        }
        let (host, port) = match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        };
        (parse_host(host)?, port)
    };

    let port = match port {
        None => 0,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => p
            .parse::<u16>()
            .map_err(|_| UriError::InvalidPort { port: p.into() })?,
        Some(p) => return Err(UriError::InvalidPort { port: p.into() }),
    };
    Ok(HostPort {
        host,
        port,
        transport: transport_of(secure, params),
    })
}

fn parse_host(host: &str) -> Result<Host, UriError> {
    if host.is_empty() {
        return Err(UriError::MissingHost);
    }
    let invalid = || UriError::InvalidHost { host: host.into() };
    // All digits and dots can only be an IPv4 address: a host name's top label starts with a
    // letter (RFC 3261 `toplabel`), so 999.1.1.1 is an error rather than a name to resolve.
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let ip: Ipv4Addr = host.parse().map_err(|_| invalid())?;
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    let labels_ok = host.trim_end_matches('.').split('.').all(|label| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !labels_ok {
        return Err(invalid());
    }
    Ok(Host::Name(Arc::from(host.to_ascii_lowercase())))
}

#[cfg(test)]
mod tests {
    use super::{Host, HostPort, NameTransport, UriError, parse_dst_uri};
    use std::net::IpAddr;

    fn ip(host: &str, port: u16) -> HostPort {
        HostPort {
            host: Host::Ip(host.parse::<IpAddr>().unwrap()),
            port,
            transport: NameTransport::Udp,
        }
    }

    #[test]
    fn parses_ip_hosts_and_ports() {
        assert_eq!(
            parse_dst_uri("sip:127.0.0.1:5071").unwrap(),
            ip("127.0.0.1", 5071)
        );
        assert_eq!(parse_dst_uri("sip:10.0.0.1").unwrap(), ip("10.0.0.1", 0));
        assert_eq!(
            parse_dst_uri("SIPS:[::1]:5061").unwrap(),
            HostPort {
                transport: NameTransport::Tls,
                ..ip("::1", 5061)
            }
        );
        assert_eq!(
            parse_dst_uri("sip:[2001:db8::5]").unwrap(),
            ip("2001:db8::5", 0)
        );
        assert_eq!(
            parse_dst_uri("sip:gw@10.0.0.2:5080;transport=tcp?h=a@b").unwrap(),
            HostPort {
                transport: NameTransport::Tcp,
                ..ip("10.0.0.2", 5080)
            }
        );
        assert_eq!(parse_dst_uri("sip:10.0.0.3:0").unwrap(), ip("10.0.0.3", 0));
    }

    #[test]
    fn parses_host_names() {
        assert_eq!(
            parse_dst_uri("sip:Yate1.MyCluster.net").unwrap(),
            HostPort {
                host: Host::Name("yate1.mycluster.net".into()),
                port: 0,
                transport: NameTransport::Udp,
            }
        );
        assert_eq!(
            parse_dst_uri("sip:gw.example.com;lr;Transport=TLS")
                .unwrap()
                .transport,
            NameTransport::Tls
        );
        assert_eq!(
            parse_dst_uri("sip:gw-2.example.com.:5060").unwrap().port,
            5060
        );
    }

    #[test]
    fn rejects_bad_uris() {
        assert_eq!(parse_dst_uri("tel:+123"), Err(UriError::Scheme));
        assert_eq!(parse_dst_uri("127.0.0.1:5060"), Err(UriError::Scheme));
        assert_eq!(parse_dst_uri("sip:"), Err(UriError::MissingHost));
        assert_eq!(parse_dst_uri("sip::5060"), Err(UriError::MissingHost));
        assert_eq!(parse_dst_uri("sip:user@;x=y"), Err(UriError::MissingHost));
        assert!(matches!(
            parse_dst_uri("sip:999.1.1.1"),
            Err(UriError::InvalidHost { .. })
        ));
        assert!(matches!(
            parse_dst_uri("sip:::1"),
            Err(UriError::InvalidHost { .. })
        ));
        assert!(matches!(
            parse_dst_uri("sip:[::1"),
            Err(UriError::InvalidHost { .. })
        ));
        assert!(matches!(
            parse_dst_uri("sip:[zz]"),
            Err(UriError::InvalidHost { .. })
        ));
        assert!(matches!(
            parse_dst_uri("sip:a b"),
            Err(UriError::InvalidHost { .. })
        ));
        assert!(matches!(
            parse_dst_uri("sip:a..b"),
            Err(UriError::InvalidHost { .. })
        ));
        assert!(matches!(
            parse_dst_uri("sip:1.2.3.4:"),
            Err(UriError::InvalidPort { .. })
        ));
        assert!(matches!(
            parse_dst_uri("sip:1.2.3.4:65536"),
            Err(UriError::InvalidPort { .. })
        ));
        assert!(matches!(
            parse_dst_uri("sip:1.2.3.4:5x"),
            Err(UriError::InvalidPort { .. })
        ));
        assert!(matches!(
            parse_dst_uri("sip:[::1]5060"),
            Err(UriError::InvalidPort { .. })
        ));
        assert!(matches!(
            parse_dst_uri("sip:h:1:2"),
            Err(UriError::InvalidHost { .. })
        ));
    }
}
