//! The background task that keeps every name of the table resolved: each name is looked
//! up when first seen, again when its records expire, and after a failure with a growing
//! pause; what it finds is published into the name's cell, where calls read it. Nothing
//! waits on it but itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use siplb_balance::{Balancer, Name, NameCell, Resolution, SplitMix64};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::rfc3263::{LookupError, Lookups, Resolved, resolve};

/// How often names are looked up again.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Records with a shorter TTL (or none) are refreshed this often at most.
    pub min_refresh: Duration,
    /// Records with a longer TTL are refreshed this often all the same, so a change in
    /// /etc/hosts or a zone with huge TTLs is seen within it.
    pub max_refresh: Duration,
    /// The first pause after a failure; it doubles up to `max_retry`.
    pub first_retry: Duration,
    pub max_retry: Duration,
    /// Lookups in flight at once.
    pub parallel: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_refresh: Duration::from_secs(1),
            max_refresh: Duration::from_secs(300),
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(10),
            parallel: 16,
        }
    }
}

/// Wakes the task when the table may have new names (after a reload), so they resolve
/// at once rather than at its next round.
#[derive(Clone, Debug, Default)]
pub struct Kick(Arc<Notify>);

impl Kick {
    pub fn names_changed(&self) {
        self.0.notify_one();
    }
}

/// Where the task stands with one name.
#[derive(Debug)]
struct Entry {
    due: Instant,
    busy: bool,
    failures: u32,
}

/// Keeps `balancer`'s names resolved with `dns` until the task is dropped or aborted.
pub async fn keep_resolved<L>(balancer: Arc<Balancer>, dns: Arc<L>, policy: Policy, kick: Kick)
where
    L: Lookups + Send + Sync + 'static,
{
    let mut schedule: HashMap<Name, Entry> = HashMap::new();
    let mut lookups: JoinSet<(Arc<NameCell>, Result<Resolved, LookupError>)> = JoinSet::new();
    let mut draw = SplitMix64::from_entropy();
    loop {
        let now = Instant::now();
        let cells = balancer.names();
        schedule.retain(|name, _| cells.iter().any(|c| c.name() == name));
        // Looked at again within a second whatever happens, so a reload without a kick
        // (a test's, say) is seen too.
        let mut wake = now + Duration::from_secs(1);
        for cell in cells {
            let entry = schedule.entry(cell.name().clone()).or_insert(Entry {
                due: now,
                busy: false,
                failures: 0,
            });
            if entry.busy {
                continue;
            }
            if entry.due > now || lookups.len() >= policy.parallel {
                wake = wake.min(entry.due.max(now + Duration::from_millis(10)));
                continue;
            }
            entry.busy = true;
            let dns = Arc::clone(&dns);
            let mut seed = SplitMix64::new(draw.next_u64());
            lookups.spawn(async move {
                let mut pick = |n: u32| (seed.next_u64() % (u64::from(n) + 1)) as u32;
                let outcome = resolve(cell.name(), &*dns, &mut pick).await;
                (cell, outcome)
            });
        }
        tokio::select! {
            () = kick.0.notified() => {}
            () = tokio::time::sleep_until(wake.into()) => {}
            Some(done) = lookups.join_next() => {
                let Ok((cell, outcome)) = done else { continue };
                if let Some(entry) = schedule.get_mut(cell.name()) {
                    entry.busy = false;
                    publish(&cell, outcome, entry, &policy, Instant::now());
                }
            }
        }
    }
}

fn publish(
    cell: &NameCell,
    outcome: Result<Resolved, LookupError>,
    entry: &mut Entry,
    policy: &Policy,
    now: Instant,
) {
    let before = cell.resolution();
    let name = cell.name();
    let resolution = match outcome {
        Ok(resolved) => {
            entry.failures = 0;
            entry.due = resolved
                .valid_until
                .clamp(now + policy.min_refresh, now + policy.max_refresh);
            Resolution {
                addresses: resolved.addresses.into(),
                error: None,
                done: true,
            }
        }
        Err(error) => {
            let pause = policy
                .first_retry
                .saturating_mul(1 << entry.failures.min(16))
                .min(policy.max_retry);
            entry.failures = entry.failures.saturating_add(1);
            entry.due = now + pause;
            // A negative answer means the name has no address now. A failure to get an
            // answer keeps the last addresses: a DNS outage must not empty the cluster.
            let addresses = if error.negative {
                Arc::from(Vec::new())
            } else {
                Arc::clone(&before.addresses)
            };
            Resolution {
                addresses,
                error: Some(error.text.into()),
                done: true,
            }
        }
    };
    if resolution.addresses != before.addresses || resolution.error != before.error {
        match (&resolution.error, resolution.addresses.is_empty()) {
            (None, _) => info!(%name, addresses = ?resolution.addresses, "name resolved"),
            (Some(error), true) => {
                warn!(%name, %error, "name has no address; its destinations take no calls")
            }
            (Some(error), false) => {
                warn!(%name, %error, addresses = ?resolution.addresses, "name not refreshed; keeping its last addresses")
            }
        }
    }
    cell.publish(resolution);
}
