//! The real resolver: hickory's stub resolver, on the system's configuration
//! (/etc/resolv.conf, /etc/hosts) or on the servers `[dns] servers` names.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use tracing::warn;

use crate::rfc3263::{Answer, LookupError, Lookups};
use crate::srv::SrvRecord;

/// Where to ask.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Servers {
    /// Name servers to ask instead of /etc/resolv.conf's; /etc/hosts is read either way.
    pub servers: Vec<SocketAddr>,
    /// How long one query waits for its answer (0: the resolver's default).
    pub timeout: Duration,
}

/// hickory, answering [`Lookups`].
#[derive(Debug)]
pub struct Hickory(TokioResolver);

impl Hickory {
    /// A resolver on `servers`, or on the system's configuration. A system configuration
    /// that cannot be read leaves /etc/hosts alone to answer, and says so: siplb starts
    /// all the same and routes to what it can.
    pub fn new(servers: &Servers) -> Result<Hickory, NetError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if servers.servers.is_empty() {
            match TokioResolver::builder(provider.clone()) {
                Ok(builder) => builder,
                Err(error) => {
                    warn!(%error, "the system's DNS configuration cannot be read; only /etc/hosts will answer");
                    TokioResolver::builder_with_config(
                        ResolverConfig::from_name_servers(Vec::new()),
                        provider,
                    )
                }
            }
        } else {
            let name_servers = servers
                .servers
                .iter()
                .map(|server| {
                    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                        .into_iter()
                        .map(|mut c| {
                            c.port = server.port();
                            c
                        })
                        .collect();
                    NameServerConfig::new(server.ip(), true, connections)
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                provider,
            )
        };
        let options = builder.options_mut();
        options.use_hosts_file = ResolveHosts::Always;
        if !servers.timeout.is_zero() {
            options.timeout = servers.timeout;
        }
        builder.build().map(Hickory)
    }
}

fn failed(error: &NetError) -> LookupError {
    LookupError {
        negative: error.is_no_records_found(),
        text: error.to_string(),
    }
}

impl Lookups for Hickory {
    async fn srv(&self, name: &str) -> Answer<SrvRecord> {
        let lookup = self.0.srv_lookup(name).await.map_err(|e| failed(&e))?;
        let records = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => Some(SrvRecord {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target: srv.target.to_string().trim_end_matches('.').to_owned(),
                }),
                _ => None,
            })
            .collect();
        Ok((records, lookup.valid_until()))
    }

    async fn ip(&self, name: &str) -> Answer<IpAddr> {
        let lookup = self.0.lookup_ip(name).await.map_err(|e| failed(&e))?;
        Ok((lookup.iter().collect(), lookup.valid_until()))
    }
}
