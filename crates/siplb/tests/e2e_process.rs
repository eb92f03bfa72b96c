//! siplb as an operator runs it: the binary as a separate process, its destination
//! table in SQLite, SIPp callers and destinations, and the management interface over
//! HTTP changing things while calls are up.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    dead_code
)]

mod harness;

use std::net::SocketAddr;
use std::time::Duration;

use harness::{
    Node, VM_ROUTE, db_init, http_get, ip, node_config, scratch, sql, uac_to, uas_at, wait_until,
};
use serde_json::Value;

const TEST: u8 = 20;

struct Mi {
    url: String,
    rt: tokio::runtime::Runtime,
}

impl Mi {
    fn call(&self, method: &str, args: &[&str]) -> Value {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        self.rt
            .block_on(siplb_mi::call(&self.url, method, &args))
            .unwrap_or_else(|e| panic!("{method} {args:?}: {e}"))
    }

    /// (max, load) of a destination's resource.
    fn slot(&self, id: u64, resource: &str) -> (u64, u64) {
        let list = self.call("lb_list", &[]);
        let d = list["Destinations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("destination {id} not in {list}"));
        let r = d["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == resource)
            .unwrap();
        (r["max"].as_u64().unwrap(), r["load"].as_u64().unwrap())
    }

    fn enabled(&self, id: u64) -> String {
        self.call("lb_status", &[&id.to_string()])["enable"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn metrics(&self) -> prometheus_parse::Scrape {
        let body = http_get((ip(TEST, 1), 8888), "/metrics");
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap()
    }
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"));
    match &s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("{name}: unexpected {other:?}"),
    }
}

#[test]
fn operator_changes_while_calls_are_up() {
    let dir = scratch("process-20");
    let db = dir.join("siplb.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    db_init(&["--database", &url]);
    let (d1, d2, d3) = (ip(TEST, 11), ip(TEST, 12), ip(TEST, 13));
    sql(
        &url,
        &[
            &format!(
                "INSERT INTO load_balancer (id, group_id, dst_uri, resources, probe_mode) VALUES (1, 1, 'sip:{d1}:5060', 'vm=5', 0)"
            ),
            &format!(
                "INSERT INTO load_balancer (id, group_id, dst_uri, resources, probe_mode) VALUES (2, 1, 'sip:{d2}:5060', 'vm=3', 0)"
            ),
        ],
    );
    let sip = SocketAddr::new(ip(TEST, 1), 5060);
    let config = node_config(
        &dir,
        &format!("listen = [\"udp:{sip}\"]\ndrain = \"2s\""),
        &url,
        SocketAddr::new(ip(TEST, 1), 8888),
        VM_ROUTE,
    );
    let mut node = Node::start(&config, dir.join("siplb.log"));
    let mi = Mi {
        url: format!("http://{}:8888/mi", ip(TEST, 1)),
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    };
    let _uas = uas_at(&dir, &[d1, d2, d3]);
    let uac = |name: &str, port: u16, calls: u32, ms: u32| {
        uac_to(
            &dir,
            name,
            sip,
            ip(TEST, 100),
            port,
            "VM_1",
            (calls, 20, ms),
        )
    };

    // Four calls: 5 free on 1 against 3 on 2 -> 1, 1, then a tie (3 and 3) to the
    // lowest id -> 1, then 2 (2 free against 3).
    let first = uac("uac1", 5101, 4, 6000);
    wait_until(Duration::from_secs(5), || {
        mi.slot(1, "vm").1 + mi.slot(2, "vm").1 == 4
    });
    assert_eq!((mi.slot(1, "vm"), mi.slot(2, "vm")), ((5, 3), (3, 1)));
    let calls = mi.call("lb_calls", &[]);
    assert_eq!(calls["Calls"].as_array().unwrap().len(), 4, "{calls}");

    // The operator takes destination 1 out and gives 2 more room: the next call goes to
    // 2, and 1 keeps its calls.
    assert_eq!(mi.call("lb_status", &["1", "0"]), "OK");
    assert_eq!(mi.enabled(1), "no");
    assert_eq!(mi.call("lb_resize", &["2", "vm", "10"]), "OK");
    let second = uac("uac2", 5102, 1, 6000);
    wait_until(Duration::from_secs(5), || mi.slot(2, "vm").1 == 2);
    assert_eq!(mi.slot(1, "vm"), (5, 3));

    // The table changes in the database; a reload reads it while the calls stay counted.
    sql(
        &url,
        &[
            "UPDATE load_balancer SET resources = 'vm=7' WHERE id = 2",
            &format!(
                "INSERT INTO load_balancer (id, group_id, dst_uri, resources, probe_mode) VALUES (3, 1, 'sip:{d3}:5060', 'vm=4', 0)"
            ),
        ],
    );
    assert_eq!(mi.call("lb_reload", &[]), "OK");
    assert_eq!(
        mi.slot(2, "vm"),
        (7, 2),
        "capacity from the table, load carried over"
    );
    assert_eq!(mi.slot(1, "vm"), (5, 3));
    assert_eq!(
        mi.enabled(1),
        "no",
        "the operator's disable survives the reload"
    );
    assert_eq!(mi.slot(3, "vm"), (4, 0));

    // The metrics, read by a Prometheus parser, agree with the live state.
    let m = mi.metrics();
    assert_eq!(
        sample(&m, "siplb_load", &[("id", "2"), ("resource", "vm")]),
        2.0
    );
    assert_eq!(
        sample(&m, "siplb_capacity", &[("id", "2"), ("resource", "vm")]),
        7.0
    );
    assert_eq!(sample(&m, "siplb_destination_enabled", &[("id", "1")]), 0.0);
    assert_eq!(sample(&m, "siplb_calls", &[]), 5.0);
    assert_eq!(sample(&m, "siplb_calls_routed_total", &[]), 5.0);
    let setup = m
        .samples
        .iter()
        .find(|s| s.metric == "siplb_call_setup_seconds")
        .unwrap_or_else(|| {
            let names: Vec<_> = m.samples.iter().map(|s| s.metric.as_str()).collect();
            panic!("no setup histogram in {names:?}")
        });
    let prometheus_parse::Value::Histogram(buckets) = &setup.value else {
        panic!("not a histogram: {setup:?}")
    };
    assert_eq!(buckets.last().map(|b| b.count), Some(5.0));

    // Ending a call that does not exist is an error object, not a crash.
    let missing = mi
        .rt
        .block_on(siplb_mi::call(
            &mi.url,
            "lb_end_call",
            &["no-such-call".to_owned()],
        ))
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("404") && missing.contains("Call not found"),
        "{missing}"
    );

    // A table that cannot be read leaves the one in force.
    sql(&url, &["ALTER TABLE load_balancer RENAME TO lb_away"]);
    let failed = mi
        .rt
        .block_on(siplb_mi::call(&mi.url, "lb_reload", &[]))
        .unwrap_err()
        .to_string();
    assert!(
        failed.contains("500") && failed.contains("Failed to reload"),
        "{failed}"
    );
    assert_eq!(mi.slot(3, "vm"), (4, 0));
    sql(&url, &["ALTER TABLE lb_away RENAME TO load_balancer"]);

    // The calls end: every load returns to 0.
    assert!(first.finish(Duration::from_secs(20)).success);
    assert!(second.finish(Duration::from_secs(20)).success);
    wait_until(Duration::from_secs(3), || {
        (1..=3).all(|id| mi.slot(id, "vm").1 == 0)
    });
    let status = node.signal("-TERM");
    assert!(status.success());
}

/// A destination whose port is closed (the box is up, nothing listens), `uri_params`
/// saying how it is reached, fails at once at the transport: the call fails over to
/// the next destination long before the INVITE timeout (60 s, beyond SIPp's 20 s of
/// patience), and the failed one is disabled.
fn a_closed_port_fails_over_at_once(test: u8, name: &str, uri_params: &str) {
    let dir = scratch(&format!("{name}-{test}"));
    let url = format!("sqlite://{}", dir.join("siplb.db").display());
    db_init(&["--database", &url]);
    // Destination 1 has the most room, so it is tried first.
    let (closed, open) = (
        format!("sip:{}:5060{uri_params}", ip(test, 11)),
        format!("sip:{}:5060", ip(test, 12)),
    );
    harness::insert_destinations(&url, &[(1, 1, &closed, "vm=50"), (2, 1, &open, "vm=10")]);
    let sip = SocketAddr::new(ip(test, 1), 5060);
    let mi_listen = SocketAddr::new(ip(test, 1), 8888);
    let config = node_config(
        &dir,
        &format!("listen = [\"udp:{sip}\", \"tcp:{sip}\"]\ndrain = \"1s\""),
        &url,
        mi_listen,
        &format!(
            "[transaction]\ninvite_timeout = \"60s\"\n[failover]\nmin_enabled = 0\n{VM_ROUTE}"
        ),
    );
    let node = Node::start(&config, dir.join("siplb.log"));
    let _destination = uas_at(&dir, &[ip(test, 12)]);
    let started = std::time::Instant::now();
    let report = uac_to(&dir, "uac", sip, ip(test, 100), 5060, "VM_1", (1, 1, 200))
        .finish(Duration::from_secs(30));
    assert!(report.success, "{}", report.output);
    assert_eq!(report.successful_calls, 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let list = harness::ctl(&format!("http://{mi_listen}/mi"), &["lb_list"]);
    assert!(
        list.contains(&format!(
            r#""uri":"{closed}","id":1,"group":1,"enabled":"no""#
        )),
        "{list}"
    );
    assert!(
        node.log_text().contains("transport error"),
        "{}",
        node.log_text()
    );
}

/// Over TCP, the connection is refused.
#[test]
fn a_refused_tcp_connection_fails_over_at_once() {
    a_closed_port_fails_over_at_once(81, "refused-tcp", ";transport=tcp");
}

/// Over UDP, an ICMP port unreachable comes back, read off the socket's error queue.
#[test]
fn a_closed_udp_port_fails_over_at_once() {
    a_closed_port_fails_over_at_once(82, "closed-udp", "");
}
