//! The proxy core's counters in Prometheus text format, appended to what the
//! management interface serves at `GET /metrics`.

use std::fmt::Write as _;

use siplb_net::Report;

fn counter(out: &mut String, name: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

pub(crate) fn render(r: &Report, persist: &crate::persist::PersistStats) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &r.stats;
    let mut out = String::with_capacity(2048);
    counter(
        &mut out,
        "siplb_calls_routed_total",
        "Calls sent to a destination.",
        &[("", s.calls_routed)],
    );
    counter(
        &mut out,
        "siplb_failovers_total",
        "Calls moved to another destination after a failure.",
        &[("", s.failovers)],
    );
    counter(
        &mut out,
        "siplb_rejected_calls_total",
        "Calls answered by siplb because nothing fits, by cause.",
        &[
            ("{cause=\"full\"}", s.rejected_no_capacity),
            ("{cause=\"no_destination\"}", s.rejected_no_destination),
            ("{cause=\"unknown_resource\"}", s.rejected_unknown_resource),
            ("{cause=\"no_route\"}", s.rejected_no_route),
            ("{cause=\"limit\"}", s.rejected_limit),
        ],
    );
    counter(
        &mut out,
        "siplb_tcp_connections_refused_total",
        "TCP connections closed at accept: over [tcp] max_connections or max_connections_per_source.",
        &[("", r.tcp_refused)],
    );
    counter(
        &mut out,
        "siplb_tcp_connections_timed_out_total",
        "TCP connections closed for idling, or for a message not completed within [tcp] message_timeout.",
        &[("", r.tcp_timed_out)],
    );
    let _ = writeln!(
        out,
        "# HELP siplb_tcp_connections Open SIP TCP connections.\n# TYPE siplb_tcp_connections gauge\nsiplb_tcp_connections {}",
        r.tcp_open
    );
    counter(
        &mut out,
        "siplb_ack_timeouts_total",
        "Dialogs siplb ended (BYE both ways) because the caller never acknowledged the 2xx.",
        &[("", s.ack_timeouts)],
    );
    counter(
        &mut out,
        "siplb_late_answers_ended_total",
        "2xx from attempts that were over (timed out, failed over, cancelled), acknowledged and ended by siplb.",
        &[("", s.refused_2xx)],
    );
    counter(
        &mut out,
        "siplb_responses_dropped_total",
        "Responses dropped: from another address than their request went to, or matching nothing.",
        &[
            ("{reason=\"wrong_source\"}", s.responses_from_elsewhere),
            ("{reason=\"stray\"}", s.stray_responses),
        ],
    );
    let classes: Vec<(String, u64)> = (1..=6)
        .map(|c| (format!("{{class=\"{c}xx\"}}"), s.local_replies[c]))
        .collect();
    let local: Vec<(&str, u64)> = classes.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    counter(
        &mut out,
        "siplb_local_replies_total",
        "Replies siplb generated, by class.",
        &local,
    );
    let classes: Vec<(String, u64)> = (1..=6)
        .map(|c| (format!("{{class=\"{c}xx\"}}"), s.relayed_replies[c]))
        .collect();
    let relayed: Vec<(&str, u64)> = classes.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    counter(
        &mut out,
        "siplb_relayed_replies_total",
        "Replies relayed from destinations, by class.",
        &relayed,
    );
    counter(
        &mut out,
        "siplb_malformed_messages_total",
        "Messages that did not parse.",
        &[("", s.malformed)],
    );
    counter(
        &mut out,
        "siplb_dialog_timeouts_total",
        "Calls ended by the dialog timeout.",
        &[("", s.dialog_timeouts)],
    );
    counter(
        &mut out,
        "siplb_status_changes_total",
        "Destination status changes made by failover and probes.",
        &[
            ("{to=\"disabled\"}", s.destinations_disabled),
            ("{to=\"enabled\"}", s.destinations_enabled),
        ],
    );
    counter(
        &mut out,
        "siplb_probes_total",
        "Probes by result.",
        &[
            ("{result=\"sent\"}", s.probes_sent),
            ("{result=\"success\"}", s.probe_successes),
            ("{result=\"failure\"}", s.probe_failures),
        ],
    );
    let _ = writeln!(
        out,
        "# HELP siplb_call_setup_seconds Time from the INVITE to the first reply the caller sees from a destination.\n# TYPE siplb_call_setup_seconds histogram"
    );
    for (bound, count) in siplb_proxy::SETUP_BUCKETS.iter().zip(s.setup.buckets) {
        let _ = writeln!(
            out,
            "siplb_call_setup_seconds_bucket{{le=\"{bound}\"}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "siplb_call_setup_seconds_bucket{{le=\"+Inf\"}} {}\nsiplb_call_setup_seconds_sum {}\nsiplb_call_setup_seconds_count {}",
        s.setup.count,
        s.setup.sum_micros as f64 / 1e6,
        s.setup.count
    );
    let _ = writeln!(
        out,
        "# HELP siplb_calls Calls being set up or up.\n# TYPE siplb_calls gauge\nsiplb_calls {}",
        r.calls
    );
    let _ = writeln!(
        out,
        "# HELP siplb_transactions SIP transactions alive.\n# TYPE siplb_transactions gauge\nsiplb_transactions {}",
        r.transactions
    );
    counter(
        &mut out,
        "siplb_dialog_store_batches_total",
        "Batches of call changes written to the database.",
        &[("", persist.batches.load(Relaxed))],
    );
    counter(
        &mut out,
        "siplb_dialog_store_failures_total",
        "Failed writes of call changes (they stay queued and are retried).",
        &[("", persist.failures.load(Relaxed))],
    );
    let _ = writeln!(
        out,
        "# HELP siplb_dialog_store_pending Call changes waiting to be written.\n# TYPE siplb_dialog_store_pending gauge\nsiplb_dialog_store_pending {}",
        persist.pending.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP siplb_dialog_store_journaled Of those, changes kept in the local journal while the database cannot take them.\n# TYPE siplb_dialog_store_journaled gauge\nsiplb_dialog_store_journaled {}",
        persist.journaled.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP siplb_probe_rtt_seconds Moving average of probe round-trip times.\n# TYPE siplb_probe_rtt_seconds gauge"
    );
    for (id, p) in &r.probes {
        if let Some(rtt) = p.rtt {
            let _ = writeln!(
                out,
                "siplb_probe_rtt_seconds{{id=\"{id}\"}} {}",
                rtt.as_secs_f64()
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP siplb_probe_last_status Status code of the last probe reply (408: no reply).\n# TYPE siplb_probe_last_status gauge"
    );
    for (id, p) in &r.probes {
        if let Some(status) = p.last_status {
            let _ = writeln!(out, "siplb_probe_last_status{{id=\"{id}\"}} {status}");
        }
    }
    out
}
