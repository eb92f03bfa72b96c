//! The Grafana dashboard in `contrib/grafana/` queries only what siplb exports: every
//! metric named in its queries is in the `/metrics` of a running siplb.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    dead_code
)]

mod harness;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use harness::{Node, db_init, http_get, ip, node_config, scratch};

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../contrib/grafana/siplb.json"
);

/// Every string under a key named `key`, anywhere in the document.
fn strings_at(value: &serde_json::Value, key: &str, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v {
                    serde_json::Value::String(s) if k == key => out.push(s.clone()),
                    _ => strings_at(v, key, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| strings_at(v, key, out)),
        _ => {}
    }
}

/// The metric names a PromQL expression mentions (siplb's all start with `siplb_`).
fn metric_names(expr: &str) -> impl Iterator<Item = &str> {
    expr.match_indices("siplb_").map(move |(at, _)| {
        let rest = &expr[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        &rest[..end]
    })
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let text = std::fs::read_to_string(DASHBOARD).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut exprs = Vec::new();
    strings_at(&dashboard["panels"], "expr", &mut exprs);
    strings_at(&dashboard["templating"], "query", &mut exprs);
    let wanted: BTreeSet<&str> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(wanted.len() >= 25, "{wanted:?}");

    let test = 77;
    let dir = scratch("grafana-77");
    let url = format!("sqlite://{}", dir.join("siplb.db").display());
    db_init(&["--examples", "--database", &url]);
    let mi = SocketAddr::new(ip(test, 1), 8888);
    let config = node_config(
        &dir,
        &format!("listen = [\"udp:{}:5060\"]", ip(test, 1)),
        &url,
        mi,
        "",
    );
    let _node = Node::start(&config, dir.join("siplb.log"));
    let metrics = http_get((mi.ip(), mi.port()), "/metrics");
    // A family is exported when its TYPE line is, samples or not (a histogram's
    // series carry the suffixes).
    let exported: BTreeSet<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|name| {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|base| exported.contains(base))
                .unwrap_or(name);
            !exported.contains(family)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics siplb does not export: {missing:?}"
    );
}

#[test]
fn metric_names_are_read_off_promql() {
    let names: Vec<&str> = metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(siplb_call_setup_seconds_bucket{instance=~\"$i\"}[5m]))) / siplb_calls",
    )
    .collect();
    assert_eq!(names, ["siplb_call_setup_seconds_bucket", "siplb_calls"]);
}
