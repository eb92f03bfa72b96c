//! `[dns]`: where host-named destinations are resolved (SPEC section 7).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::duration;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// Name servers to ask instead of /etc/resolv.conf's: `"IP:PORT"`, or `"IP"` for
    /// port 53. /etc/hosts answers first either way.
    #[serde(deserialize_with = "servers")]
    pub servers: Vec<SocketAddr>,
    /// How long one query waits for its answer.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            servers: Vec::new(),
            timeout: Duration::from_secs(2),
        }
    }
}

fn servers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            s.parse::<SocketAddr>()
                .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{s}` is not an IP address or IP:PORT (IPv6 in brackets with a port)"
                    ))
                })
        })
        .collect()
}
