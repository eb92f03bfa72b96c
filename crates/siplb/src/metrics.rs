//! The proxy core's counters, the TCP transport's and the persistence task's, in
//! Prometheus text, appended to what the management interface serves at
//! `GET /metrics`.

use std::sync::atomic::Ordering::Relaxed;

use siplb_mi::{Exposition, Kind};
use siplb_net::Report;

use crate::persist::PersistStats;

/// The counters the dashboard charts, from the same report.
pub(crate) fn pulse(r: &Report) -> siplb_mi::Pulse {
    siplb_mi::Pulse {
        calls_routed: r.stats.calls_routed,
        failovers: r.stats.failovers,
        rejected: rejections(r),
        calls_up: r.calls as u64,
    }
}

/// Calls siplb answered itself, by the cause the metrics and the dashboard name.
fn rejections(r: &Report) -> Vec<(&'static str, u64)> {
    let s = &r.stats;
    vec![
        ("full", s.rejected_no_capacity),
        ("no_destination", s.rejected_no_destination),
        ("unknown_resource", s.rejected_unknown_resource),
        ("no_route", s.rejected_no_route),
        ("limit", s.rejected_limit),
        ("shed", s.rejected_shed),
        ("cps", s.rejected_rate),
        ("overload", s.rejected_overload),
    ]
}

pub(crate) fn render(r: &Report, persist: &PersistStats) -> String {
    let s = &r.stats;
    let mut e = Exposition::new();
    e.single(
        "siplb_calls_routed_total",
        Kind::Counter,
        "Calls sent to a destination (once each, however many attempts).",
        s.calls_routed,
    )
    .single(
        "siplb_failovers_total",
        Kind::Counter,
        "Calls moved to another destination after a failure.",
        s.failovers,
    )
    .single(
        "siplb_overflows_total",
        Kind::Counter,
        "Moves of a call to its route's next overflow group.",
        s.overflows,
    )
    .by_label(
        "siplb_rejected_calls_total",
        Kind::Counter,
        "Calls answered by siplb because nothing fits, by cause.",
        "cause",
        &rejections(r),
    )
    .single(
        "siplb_tcp_connections_refused_total",
        Kind::Counter,
        "TCP connections closed at accept: over [tcp] max_connections or max_connections_per_source.",
        r.tcp_refused,
    )
    .single(
        "siplb_tcp_connections_timed_out_total",
        Kind::Counter,
        "TCP connections closed for idling, or for a message not completed within [tcp] message_timeout.",
        r.tcp_timed_out,
    )
    .single(
        "siplb_tcp_connections",
        Kind::Gauge,
        "Open SIP TCP connections.",
        r.tcp_open,
    )
    .single(
        "siplb_ack_timeouts_total",
        Kind::Counter,
        "Dialogs siplb ended (BYE both ways) because the caller never acknowledged the 2xx.",
        s.ack_timeouts,
    )
    .single(
        "siplb_late_answers_ended_total",
        Kind::Counter,
        "2xx from attempts that were over (timed out, failed over, cancelled), acknowledged and ended by siplb.",
        s.refused_2xx,
    )
    .by_label(
        "siplb_responses_dropped_total",
        Kind::Counter,
        "Responses dropped: from another address than their request went to, or matching nothing.",
        "reason",
        &[
            ("wrong_source", s.responses_from_elsewhere),
            ("stray", s.stray_responses),
        ],
    );
    let classes = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];
    let local: Vec<(&str, u64)> = classes
        .iter()
        .zip(&s.local_replies[1..])
        .map(|(c, n)| (*c, *n))
        .collect();
    let relayed: Vec<(&str, u64)> = classes
        .iter()
        .zip(&s.relayed_replies[1..])
        .map(|(c, n)| (*c, *n))
        .collect();
    e.by_label(
        "siplb_local_replies_total",
        Kind::Counter,
        "Replies siplb generated, by class.",
        "class",
        &local,
    )
    .by_label(
        "siplb_relayed_replies_total",
        Kind::Counter,
        "Replies relayed from destinations, by class.",
        "class",
        &relayed,
    )
    .single(
        "siplb_malformed_messages_total",
        Kind::Counter,
        "Messages that did not parse.",
        s.malformed,
    )
    .single(
        "siplb_dialog_timeouts_total",
        Kind::Counter,
        "Calls ended by the dialog timeout.",
        s.dialog_timeouts,
    )
    .by_label(
        "siplb_status_changes_total",
        Kind::Counter,
        "Destination status changes made by failover and probes, and drains ended.",
        "to",
        &[
            ("disabled", s.destinations_disabled),
            ("enabled", s.destinations_enabled),
            ("drained", s.destinations_drained),
        ],
    )
    .by_label(
        "siplb_probes_total",
        Kind::Counter,
        "Probes by result.",
        "result",
        &[
            ("sent", s.probes_sent),
            ("success", s.probe_successes),
            ("failure", s.probe_failures),
        ],
    );
    histogram(
        &mut e,
        "siplb_call_setup_seconds",
        "Time from the INVITE to the first reply the caller sees from a destination.",
        &siplb_proxy::SETUP_BUCKETS,
        &s.setup,
    );
    if s.reservation_wait.count > 0 {
        histogram(
            &mut e,
            "siplb_cluster_reservation_wait_seconds",
            "Time a new call waited for the cluster's store to reserve its destination's room.",
            &siplb_proxy::RESERVATION_BUCKETS,
            &s.reservation_wait,
        );
    }
    e.single(
            "siplb_calls",
            Kind::Gauge,
            "Calls being set up or up.",
            r.calls,
        )
        .single(
            "siplb_transactions",
            Kind::Gauge,
            "SIP transactions alive.",
            r.transactions,
        )
        .single(
            "siplb_core_busy_ratio",
            Kind::Gauge,
            "Share of wall time the proxy core spent handling input, over its last measuring window.",
            r.core.busy,
        )
        .single(
            "siplb_overload_feedback_percent",
            Kind::Gauge,
            "Reduction of new calls siplb asks of its callers while its core is overloaded (RFC 7339; 0 when not).",
            r.core.reduction,
        )
        .single(
            "siplb_dialog_store_batches_total",
            Kind::Counter,
            "Batches of call changes written to the database.",
            persist.batches.load(Relaxed),
        )
        .family(
            "siplb_dialog_store_changes_total",
            Kind::Counter,
            "Calls' rows the batches wrote (upsert) and deleted (delete).",
        );
    e.sample(
        "siplb_dialog_store_changes_total",
        &[("change", "upsert")],
        persist.upserts.load(Relaxed),
    );
    e.sample(
        "siplb_dialog_store_changes_total",
        &[("change", "delete")],
        persist.deletes.load(Relaxed),
    );
    e.single(
            "siplb_dialog_store_failures_total",
            Kind::Counter,
            "Failed writes of call changes (they go to the journal and are retried).",
            persist.failures.load(Relaxed),
        )
        .single(
            "siplb_dialog_store_waiting",
            Kind::Gauge,
            "Answered calls that have not lasted [dialog] persist_interval yet, so are not handed to the store: a crash loses them.",
            r.calls_to_store,
        )
        .single(
            "siplb_dialog_store_pending",
            Kind::Gauge,
            "Call changes waiting to be written.",
            persist.pending.load(Relaxed),
        )
        .single(
            "siplb_dialog_store_journaled",
            Kind::Gauge,
            "Of those, changes kept in the local journal while the database cannot take them.",
            persist.journaled.load(Relaxed),
        )
        .family(
            "siplb_probe_rtt_seconds",
            Kind::Gauge,
            "Moving average of probe round-trip times.",
        );
    for (id, p) in &r.probes {
        if let Some(rtt) = p.rtt {
            e.sample(
                "siplb_probe_rtt_seconds",
                &[("id", &id.to_string())],
                rtt.as_secs_f64(),
            );
        }
    }
    e.family(
        "siplb_probe_last_status",
        Kind::Gauge,
        "Status code of the last probe reply (408: no reply).",
    );
    for (id, p) in &r.probes {
        if let Some(status) = p.last_status {
            e.sample(
                "siplb_probe_last_status",
                &[("id", &id.to_string())],
                status,
            );
        }
    }
    e.finish()
}

/// A Prometheus histogram from one of the core's.
fn histogram(
    e: &mut Exposition,
    name: &str,
    help: &str,
    bounds: &[f64; 10],
    h: &siplb_proxy::Histogram,
) {
    e.family(name, Kind::Histogram, help);
    let bucket = format!("{name}_bucket");
    for (bound, count) in bounds.iter().zip(h.buckets) {
        e.sample(&bucket, &[("le", &bound.to_string())], count);
    }
    e.sample(&bucket, &[("le", "+Inf")], h.count)
        .sample(&format!("{name}_sum"), &[], h.sum_micros as f64 / 1e6)
        .sample(&format!("{name}_count"), &[], h.count);
}
