//! `[cluster]`: several siplb nodes sharing one view of the load through Redis
//! (SPEC section 9). Absent, siplb is one process and connects to no store.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::duration;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// The shared store: `redis://[user:password@]host[:port][/db]`.
    pub redis: String,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// How often the node says it is alive and reads the others' loads and statuses.
    #[serde(with = "duration", default = "default_heartbeat")]
    pub heartbeat: Duration,
    /// A node silent this long is dead: a survivor adopts its calls.
    #[serde(with = "duration", default = "default_node_timeout")]
    pub node_timeout: Duration,
    /// Every node's SIP address (the floating addresses): each node takes a Route
    /// naming any of them as its own.
    #[serde(deserialize_with = "addresses", default)]
    pub addresses: Vec<SocketAddr>,
    /// Prefix of every key siplb writes in the store, so that several clusters (or
    /// test runs) can share one Redis.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// How long a new call waits for the store to reserve its room before it goes on
    /// on this node's own view (the store being slow or away must fail no call).
    #[serde(with = "duration", default = "default_reserve_timeout")]
    pub reserve_timeout: Duration,
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(1)
}

fn default_node_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_prefix() -> String {
    "siplb".to_owned()
}

fn default_reserve_timeout() -> Duration {
    Duration::from_millis(250)
}

impl Cluster {
    /// What is wrong with the section, if anything (key and reason).
    pub(crate) fn problem(&self) -> Option<String> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if !name_ok(&self.node) {
            return Some(
                "cluster.node: 1 to 64 letters, digits, '-', '_' or '.' naming this node".into(),
            );
        }
        if !name_ok(&self.prefix) {
            return Some("cluster.prefix: 1 to 64 letters, digits, '-', '_' or '.'".into());
        }
        if !self.redis.starts_with("redis://") {
            return Some("cluster.redis: a redis://host[:port][/db] URL".into());
        }
        if self.heartbeat < Duration::from_millis(50) || self.heartbeat > Duration::from_secs(60) {
            return Some("cluster.heartbeat: from 50ms to 60s".into());
        }
        if self.node_timeout < self.heartbeat.saturating_mul(2) {
            return Some("cluster.node_timeout: at least two heartbeats".into());
        }
        if self.reserve_timeout.is_zero() || self.reserve_timeout > Duration::from_secs(5) {
            return Some("cluster.reserve_timeout: above 0 and at most 5s".into());
        }
        None
    }
}

/// `sip:IP[:PORT]` (or plain `IP:PORT`); the port defaults to 5060.
fn addresses<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            let bare = s.strip_prefix("sip:").unwrap_or(s);
            bare.parse::<SocketAddr>()
                .or_else(|_| {
                    bare.trim_matches(['[', ']'])
                        .parse::<IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 5060))
                })
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{s}` is not sip:IP[:PORT] (a node's SIP address; IPv6 in brackets)"
                    ))
                })
        })
        .collect()
}
