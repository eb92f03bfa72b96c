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
