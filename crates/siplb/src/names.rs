//! Host-named destinations: the resolver task beside the core (SPEC section 7).

use std::sync::Arc;
use std::time::{Duration, Instant};

use siplb_balance::Balancer;
use siplb_config::Dns;
use siplb_dns::{Hickory, Kick, Policy, Servers};
use tracing::{info, warn};

/// Starts keeping the table's host names resolved, and gives the first round up to the
/// query timeout, so that a table of names routes from the first call when its DNS
/// answers; siplb starts all the same when it does not. Returns what wakes the task
/// after a reload.
pub(crate) async fn start_resolver(balancer: &Arc<Balancer>, dns: &Dns) -> Result<Kick, String> {
    let servers = Servers {
        servers: dns.servers.clone(),
        timeout: dns.timeout,
    };
    let resolver =
        Hickory::new(&servers).map_err(|e| format!("cannot set the DNS resolver up: {e}"))?;
    let kick = Kick::default();
    tokio::spawn(siplb_dns::keep_resolved(
        Arc::clone(balancer),
        Arc::new(resolver),
        Policy::default(),
        kick.clone(),
    ));
    let names = balancer.names();
    if names.is_empty() {
        return Ok(kick);
    }
    let deadline = Instant::now() + dns.timeout + Duration::from_millis(500);
    let done = || names.iter().all(|n| n.resolution().done);
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resolved = names
        .iter()
        .filter(|n| !n.resolution().addresses.is_empty())
        .count();
    if resolved == names.len() {
        info!(names = names.len(), "destination names resolved");
    } else {
        warn!(
            resolved,
            names = names.len(),
            "some destination names have no address yet; their destinations take no calls until they do"
        );
    }
    Ok(kick)
}

/// `[tls]` as the driver takes it.
pub(crate) fn tls_files(tls: &siplb_config::Tls) -> siplb_net::TlsFiles {
    siplb_net::TlsFiles {
        certificate: tls.certificate.as_ref().map(Into::into),
        private_key: tls.private_key.as_ref().map(Into::into),
        ca_certificates: tls.ca_certificates.as_ref().map(Into::into),
        verify_client: tls.verify_client,
    }
}

/// Reads the certificates; a destination's certificate must carry the host name its
/// URI gives (the name whose resolution holds the address siplb connects to), or, for
/// an IP address, that address.
pub(crate) fn start_tls(
    balancer: &Arc<Balancer>,
    files: &siplb_net::TlsFiles,
) -> Result<Arc<siplb_net::Tls>, String> {
    let balancer = Arc::clone(balancer);
    let names: siplb_net::ServerNames = Arc::new(move |addr| {
        balancer
            .names()
            .iter()
            .find(|cell| cell.resolution().addresses.contains(&addr))
            .map(|cell| cell.name().host.trim_end_matches('.').to_owned())
    });
    siplb_net::Tls::load(files, names).map(Arc::new)
}

/// What a reload (`lb_reload`, SIGHUP) refreshes beside the table: new names are
/// looked up at once, certificates read again.
#[derive(Clone, Debug)]
pub(crate) struct Refresh {
    pub(crate) names: Kick,
    pub(crate) tls: Arc<siplb_net::Tls>,
    pub(crate) tls_files: siplb_net::TlsFiles,
}

impl Refresh {
    pub(crate) fn after_reload(&self) -> Result<(), String> {
        self.names.names_changed();
        if self.tls_files.certificate.is_some() || self.tls_files.ca_certificates.is_some() {
            self.tls.reload(&self.tls_files)?;
            info!("TLS certificates read again");
        }
        Ok(())
    }
}
