//! `[cluster]` wiring: the node's driver (siplb-cluster) between the balancer, the SIP
//! core, the reloads and the management interface.

use std::sync::Arc;

use serde_json::json;
use siplb_cluster::{Cluster, NodeState, View};
use siplb_mi::{Exposition, Kind};

/// `[cluster]` in the driver's terms.
pub(crate) fn settings(
    c: &siplb_config::Cluster,
    listen: &[siplb_proxy::Peer],
) -> siplb_cluster::Settings {
    siplb_cluster::Settings {
        redis: c.redis.clone(),
        node: c.node.clone(),
        prefix: c.prefix.clone(),
        heartbeat: c.heartbeat,
        node_timeout: c.node_timeout,
        reserve_timeout: c.reserve_timeout,
        // Where other nodes hand over requests of calls this node adopted: the first
        // listener with a concrete address.
        address: listen
            .iter()
            .copied()
            .find(|l| !l.addr.ip().is_unspecified()),
    }
}

/// The node as the management interface shows it.
pub(crate) struct ClusterInfo(pub(crate) Cluster);

impl siplb_mi::ClusterSource for ClusterInfo {
    fn describe(&self) -> serde_json::Value {
        let v = self.0.view();
        json!({
            "node": v.node,
            "store": if v.store_up { "up" } else { "down" },
            "store_error": v.store_error,
            "prober": v.prober,
            "Nodes": v.nodes.iter().map(|n| json!({
                "name": n.name,
                "state": n.state.as_str(),
                "last_heartbeat_ms_ago": u64::try_from(n.silent_for.as_millis()).unwrap_or(u64::MAX),
                "load": n.load,
                "stored_calls": n.stored_calls,
            })).collect::<Vec<_>>(),
            "reservations": {
                "granted": v.reservations_granted,
                "refused": v.reservations_refused,
                "unconfirmed": v.reservations_unconfirmed,
            },
            "adopted_calls": v.adopted_calls,
        })
    }

    fn degraded(&self) -> Option<String> {
        let v = self.0.view();
        (!v.store_up).then(|| {
            format!(
                "cluster store unreachable: {}",
                v.store_error.as_deref().unwrap_or("not connected yet")
            )
        })
    }
}

/// The node's part of `GET /metrics`.
pub(crate) fn render(v: &View) -> String {
    let count = |state| v.nodes.iter().filter(|n| n.state == state).count() as u64;
    let mut e = Exposition::new();
    e.single(
        "siplb_cluster_store_up",
        Kind::Gauge,
        "1 while the cluster's shared store answers; 0 while this node routes on its own view.",
        u64::from(v.store_up),
    )
    .by_label(
        "siplb_cluster_nodes",
        Kind::Gauge,
        "Nodes of the cluster by state at the last heartbeat (dead: silent, calls not adopted yet).",
        "state",
        &[
            ("self", count(NodeState::Me)),
            ("alive", count(NodeState::Alive)),
            ("dead", count(NodeState::Dead)),
        ],
    )
    .single(
        "siplb_cluster_prober",
        Kind::Gauge,
        "1 when this node is the one that probes destinations.",
        u64::from(v.prober),
    )
    .by_label(
        "siplb_cluster_reservations_total",
        Kind::Counter,
        "New calls' reservations of room in the store: granted, refused (another node took the last slot), unconfirmed (store away, let through).",
        "outcome",
        &[
            ("granted", v.reservations_granted),
            ("refused", v.reservations_refused),
            ("unconfirmed", v.reservations_unconfirmed),
        ],
    )
    .single(
        "siplb_cluster_adopted_calls_total",
        Kind::Counter,
        "Calls of dead nodes this node took over.",
        v.adopted_calls,
    )
    .single(
        "siplb_cluster_reconciliations_total",
        Kind::Counter,
        "Times the store (re)connected and this node's counts were written over its entry.",
        v.reconciliations,
    );
    e.finish()
}

/// Wraps a reloader so that a reload made here is made on every node.
pub(crate) fn shared_reloader(
    inner: Arc<dyn siplb_mi::Reloader>,
    cluster: Cluster,
) -> Arc<dyn siplb_mi::Reloader> {
    Arc::new(move || {
        let (inner, cluster) = (Arc::clone(&inner), cluster.clone());
        async move {
            inner.reload().await?;
            cluster.reloaded();
            Ok(())
        }
    })
}

/// What the node's driver does to the rest of the process: answers reservations to the
/// core, restores adopted calls through it, reloads the table.
pub(crate) fn hooks(
    reservations: tokio::sync::mpsc::UnboundedSender<(u64, bool)>,
    control: &siplb_net::Control,
    reloader: &Arc<dyn siplb_mi::Reloader>,
    handovers: &Arc<siplb_proxy::Handovers>,
) -> siplb_cluster::Hooks {
    let (control, reloader) = (control.clone(), Arc::clone(reloader));
    siplb_cluster::Hooks {
        reservations,
        restore: Box::new(move |calls| {
            let control = control.clone();
            Box::pin(async move { control.restore(calls).await })
        }),
        reload: Box::new(move || {
            let reloader = Arc::clone(&reloader);
            Box::pin(async move { reloader.reload().await })
        }),
        handovers: Arc::clone(handovers),
    }
}

/// Where the core's changes to answered calls go to be stored in the cluster.
pub(crate) fn dialog_sink(
    node: &Cluster,
) -> tokio::sync::mpsc::UnboundedSender<siplb_proxy::DialogChange> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let node = node.clone();
    tokio::spawn(async move {
        while let Some(change) = rx.recv().await {
            node.dialog_changed(change);
        }
    });
    tx
}
