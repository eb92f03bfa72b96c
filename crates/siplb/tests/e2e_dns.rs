//! Destinations named by host, as in the tutorial's own table, resolved through a real
//! DNS server (dnsmasq on a loopback address) by siplb running as a process, with SIPp
//! callers and destinations.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    dead_code
)]

mod harness;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use harness::{
    Node, Sipp, ctl_json, db_init, insert_destinations, ip, listed, node_config, scratch, uac_to,
    uas_at, wait_until,
};
use serde_json::Value;
use siplb_testkit::Dnsmasq;

/// The tutorial's table (section "Configuration" of the source tutorial), with the
/// destinations written as `host` gives them.
fn tutorial_table(url: &str, host: impl Fn(u8) -> String) {
    db_init(&["--database", url]);
    let uris: Vec<String> = (1..=4).map(|id| format!("sip:{}", host(id))).collect();
    insert_destinations(
        url,
        &[
            (1, 1, &uris[0], "vm=50; pstn=32"),
            (2, 1, &uris[1], "vm=100"),
            (3, 1, &uris[2], "vm=50"),
            (4, 1, &uris[3], "vm=10;pstn=64"),
        ],
    );
}

fn destinations(mi_addr: SocketAddr) -> Vec<Value> {
    ctl_json(mi_addr, &["lb_list"])["Destinations"]
        .as_array()
        .unwrap()
        .clone()
}

/// Per destination id, its `vm` load.
fn vm_loads(mi_addr: SocketAddr) -> BTreeMap<u64, u64> {
    destinations(mi_addr)
        .iter()
        .map(|d| {
            let vm = d["Resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == "vm")
                .unwrap();
            (d["id"].as_u64().unwrap(), vm["load"].as_u64().unwrap())
        })
        .collect()
}

const RELATIVE_VM: &str = "[[route]]\nmatch = { ruri_user = \"^VM_\" }\nbalance = { group = 1, resources = \"vm\", flags = \"r\" }\n";

fn start_node(
    dir: &Path,
    test: u8,
    url: &str,
    dns: SocketAddr,
    rest: &str,
) -> (Node, SocketAddr, SocketAddr) {
    let sip = SocketAddr::new(ip(test, 1), 5060);
    let mi_addr = SocketAddr::new(ip(test, 1), 8888);
    let config = node_config(
        dir,
        &format!("listen = [\"udp:{sip}\", \"tcp:{sip}\"]\ndrain = \"1s\""),
        url,
        mi_addr,
        &format!("[dns]\nservers = [\"{dns}\"]\ntimeout = \"1s\"\n{rest}"),
    );
    (Node::start(&config, dir.join("siplb.log")), sip, mi_addr)
}

/// Places `calls` held calls, waits until they are all up, returns the loads and the
/// destination of each call in the order they were placed (SIPp numbers its Call-IDs),
/// then waits for them to end and checks that every load is back to 0.
fn loads_of_held_calls(
    dir: &Path,
    test: u8,
    sip: SocketAddr,
    mi_addr: SocketAddr,
    calls: u32,
) -> (BTreeMap<u64, u64>, Vec<u64>) {
    let caller = uac_to(
        dir,
        "uac",
        sip,
        ip(test, 100),
        5060,
        "VM_1",
        (calls, 20, 4000),
    );
    wait_until(Duration::from_secs(15), || {
        vm_loads(mi_addr).values().sum::<u64>() == u64::from(calls)
    });
    let loads = vm_loads(mi_addr);
    let mut order: Vec<(u64, u64)> = ctl_json(mi_addr, &["lb_calls"])["Calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let id = c["callid"].as_str().unwrap();
            let n = id.split('-').next().unwrap().parse::<u64>().unwrap();
            (n, c["destination_id"].as_u64().unwrap())
        })
        .collect();
    order.sort_unstable();
    let sequence = order.into_iter().map(|(_, d)| d).collect();
    let report = caller.finish(Duration::from_secs(30));
    assert!(report.success, "{}", report.output);
    assert_eq!(report.successful_calls, u64::from(calls));
    wait_until(Duration::from_secs(5), || {
        vm_loads(mi_addr).values().all(|&l| l == 0)
    });
    (loads, sequence)
}

#[test]
fn the_tutorial_table_by_name_routes_as_by_address() {
    let test = 90;
    let dir = scratch("dns-tutorial-90");
    let server = SocketAddr::new(ip(test, 53), 5353);
    let records: Vec<String> = (1..=4)
        .map(|i| format!("host-record=yate{i}.mycluster.net,{}", ip(test, 10 + i)))
        .collect();
    let Some(dns) = Dnsmasq::start(server, "mycluster.net", &records, &dir) else {
        return;
    };
    let _destinations = uas_at(&dir, &(11..=14).map(|h| ip(test, h)).collect::<Vec<_>>());

    // The same table twice: by address, then by name (no port: SRV first, which the
    // zone lacks, then A on 5060). Relative selection spreads the calls over all four.
    let mut runs = Vec::new();
    for (label, by_name) in [("ip", false), ("name", true)] {
        let run_dir = dir.join(label);
        std::fs::create_dir_all(&run_dir).unwrap();
        let url = format!("sqlite://{}", run_dir.join("siplb.db").display());
        tutorial_table(&url, |id| {
            if by_name {
                format!("yate{id}.mycluster.net")
            } else {
                ip(test, 10 + id).to_string()
            }
        });
        let (mut node, sip, mi_addr) = start_node(&run_dir, test, &url, server, RELATIVE_VM);
        if by_name {
            let yate3 = listed(mi_addr, 3);
            assert_eq!(yate3["uri"], "sip:yate3.mycluster.net");
            assert_eq!(
                yate3["addresses"],
                serde_json::json!([format!("{}:5060", ip(test, 13))]),
                "{yate3}"
            );
            assert!(yate3.get("resolve_error").is_none(), "{yate3}");
        }
        runs.push(loads_of_held_calls(&run_dir, test, sip, mi_addr, 15));
        let status = node.signal("-TERM");
        assert!(status.success(), "siplb exited with {status}");
    }
    assert_eq!(
        runs[0], runs[1],
        "the same destinations took the calls, in the same order"
    );
    assert_eq!(runs[0].1.len(), 15);
    assert!(runs[0].0.values().all(|&l| l > 0), "{:?}", runs[0]);
    // siplb asked the DNS server (SRV, then A/AAAA) for the names.
    let asked = dns.log_text();
    assert!(asked.contains("_sip._udp.yate1.mycluster.net"), "{asked}");
    assert!(asked.contains("query[A] yate4.mycluster.net"), "{asked}");
}

#[test]
fn srv_targets_fail_over_inside_the_destination() {
    let test = 91;
    let dir = scratch("dns-srv-91");
    let server = SocketAddr::new(ip(test, 53), 5353);
    let records = vec![
        format!("host-record=a.mycluster.net,{}", ip(test, 11)),
        format!("host-record=b.mycluster.net,{}", ip(test, 12)),
        format!("host-record=relay.mycluster.net,{}", ip(test, 12)),
        // The first target refuses TCP connections (nothing listens on 5070).
        "srv-host=_sip._tcp.pbx.mycluster.net,a.mycluster.net,5070,10,0".to_owned(),
        "srv-host=_sip._tcp.pbx.mycluster.net,b.mycluster.net,5060,20,0".to_owned(),
        // Over UDP, the first target's closed port answers ICMP port unreachable.
        "srv-host=_sip._udp.pbx-udp.mycluster.net,a.mycluster.net,5070,10,0".to_owned(),
        "srv-host=_sip._udp.pbx-udp.mycluster.net,b.mycluster.net,5060,20,0".to_owned(),
    ];
    let Some(_dns) = Dnsmasq::start(server, "mycluster.net", &records, &dir) else {
        return;
    };
    let b = ip(test, 12).to_string();
    let _destination = Sipp::spawn(
        &dir,
        "uas-b-tcp",
        &["-sn", "uas", "-aa", "-t", "t1", "-i", &b, "-p", "5060"],
    );
    let _destination_udp = Sipp::spawn(
        &dir,
        "uas-b-udp",
        &["-sn", "uas", "-aa", "-i", &b, "-p", "5060"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let url = format!("sqlite://{}", dir.join("siplb.db").display());
    db_init(&["--database", &url]);
    insert_destinations(
        &url,
        &[
            (1, 1, "sip:pbx.mycluster.net;transport=tcp", "vm=10"),
            (2, 2, "sip:pbx-udp.mycluster.net", "vm=10"),
        ],
    );
    // One destination per group: were the failing address to fail the destination,
    // the call would get "Service full". The INVITE timeout is far beyond SIPp's
    // patience, so only the transport error (refused connection, ICMP) moves a call.
    let (node, sip, mi_addr) = start_node(
        &dir,
        test,
        &url,
        server,
        "[transaction]\ninvite_timeout = \"60s\"\n[failover]\nmin_enabled = 0\n[[route]]\nmatch = { ruri_user = \"^VM_\" }\nbalance = { group = 1, resources = \"vm\" }\n[[route]]\nmatch = { ruri_user = \"^UDP_\" }\nbalance = { group = 2, resources = \"vm\" }\n[[route]]\nmatch = { ruri_user = \"^R_\" }\nrelay = \"sip:relay.mycluster.net\"\n",
    );
    let pbx = listed(mi_addr, 1);
    assert_eq!(
        pbx["addresses"],
        serde_json::json!([format!("{}:5070", ip(test, 11)), format!("{b}:5060")]),
        "{pbx}"
    );
    let callers = [
        uac_to(
            &dir,
            "uac-tcp",
            sip,
            ip(test, 100),
            5060,
            "VM_1",
            (2, 10, 3000),
        ),
        uac_to(
            &dir,
            "uac-udp",
            sip,
            ip(test, 100),
            5061,
            "UDP_1",
            (2, 10, 3000),
        ),
    ];
    wait_until(Duration::from_secs(10), || {
        let loads = vm_loads(mi_addr);
        loads.get(&1) == Some(&2) && loads.get(&2) == Some(&2)
    });
    // The calls are up on the second address of each.
    let calls = ctl_json(mi_addr, &["lb_calls"]);
    let mut addresses: Vec<&str> = calls["Calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["address"].as_str().unwrap())
        .collect();
    addresses.sort_unstable();
    let (tcp, udp) = (format!("tcp:{b}:5060"), format!("udp:{b}:5060"));
    assert_eq!(addresses, [&tcp, &tcp, &udp, &udp], "{calls}");
    for caller in callers {
        let report = caller.finish(Duration::from_secs(30));
        assert!(report.success, "{}", report.output);
        assert_eq!(report.successful_calls, 2);
    }
    wait_until(Duration::from_secs(5), || {
        vm_loads(mi_addr).values().all(|&l| l == 0)
    });
    assert_eq!(listed(mi_addr, 1)["enabled"], "yes");
    assert_eq!(listed(mi_addr, 2)["enabled"], "yes");
    // A relay target named by host, resolved like the table's names.
    let report = uac_to(
        &dir,
        "uac-relay",
        sip,
        ip(test, 100),
        5062,
        "R_1",
        (1, 1, 200),
    )
    .finish(Duration::from_secs(20));
    assert!(report.success, "{}", report.output);
    assert_eq!(report.successful_calls, 1);
    assert!(
        node.log_text()
            .contains("trying the destination's next address"),
        "{}",
        node.log_text()
    );
}

#[test]
fn names_that_change_vanish_and_come_back() {
    let test = 92;
    let dir = scratch("dns-change-92");
    let server = SocketAddr::new(ip(test, 53), 5353);
    let _destinations = uas_at(&dir, &[ip(test, 11), ip(test, 12), ip(test, 13)]);
    let url = format!("sqlite://{}", dir.join("siplb.db").display());
    db_init(&["--database", &url]);
    let second = format!("sip:{}:5060", ip(test, 12));
    insert_destinations(
        &url,
        &[
            (1, 1, "sip:yate1.mycluster.net", "vm=100"),
            (2, 1, &second, "vm=5"),
        ],
    );
    // The DNS server is not there yet: siplb starts all the same and routes to what it
    // can reach, saying why the named destination takes no calls.
    let (node, sip, mi_addr) = start_node(
        &dir,
        test,
        &url,
        server,
        "[[route]]\nmatch = { ruri_user = \"^VM_\" }\nbalance = { group = 1, resources = \"vm\" }\n",
    );
    let yate1 = listed(mi_addr, 1);
    assert_eq!(yate1["addresses"], serde_json::json!([]), "{yate1}");
    assert!(yate1["resolve_error"].is_string(), "{yate1}");
    let one_call = |name: &str| {
        let report = uac_to(&dir, name, sip, ip(test, 100), 5060, "VM_1", (1, 1, 100))
            .finish(Duration::from_secs(20));
        assert!(report.success, "{}", report.output);
    };
    // Each held call from a port of its own: they overlap.
    let held =
        |name: &str, port: u16| uac_to(&dir, name, sip, ip(test, 100), port, "VM_1", (1, 1, 6000));
    one_call("uac-before");
    assert!(
        node.log_text()
            .contains("some destination names have no address yet")
    );
    let metrics = harness::http_get((ip(test, 1), 8888), "/metrics");
    assert!(
        metrics.contains(
            r#"siplb_destination_addresses{id="1",group="1",uri="sip:yate1.mycluster.net"} 0"#
        ),
        "{metrics}"
    );

    // The server comes: the name resolves within a refresh, and takes the calls (it has
    // the most room).
    let Some(mut dns) = Dnsmasq::start(
        server,
        "mycluster.net",
        &[format!("host-record=yate1.mycluster.net,{}", ip(test, 11))],
        &dir,
    ) else {
        return;
    };
    let at = |h: u8| format!("udp:{}:5060", ip(test, h));
    wait_until(Duration::from_secs(15), || {
        listed(mi_addr, 1)["addresses"] == serde_json::json!([format!("{}:5060", ip(test, 11))])
    });
    let first = held("uac-held-11", 5061);
    let address_of_calls = || -> Vec<String> {
        ctl_json(mi_addr, &["lb_calls"])["Calls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["state"] == "confirmed")
            .map(|c| c["address"].as_str().unwrap().to_owned())
            .collect()
    };
    wait_until(Duration::from_secs(10), || address_of_calls() == [at(11)]);

    // The record changes: new calls follow within its TTL; the call up stays where it is.
    dns.restart(&[format!("host-record=yate1.mycluster.net,{}", ip(test, 13))]);
    wait_until(Duration::from_secs(10), || {
        listed(mi_addr, 1)["addresses"] == serde_json::json!([format!("{}:5060", ip(test, 13))])
    });
    let second = held("uac-held-13", 5062);
    wait_until(Duration::from_secs(10), || {
        let mut now = address_of_calls();
        now.sort();
        now == [at(11), at(13)]
    });
    for caller in [first, second] {
        let report = caller.finish(Duration::from_secs(30));
        assert!(report.success, "{}", report.output);
    }

    // The name stops resolving: the destination stops being a candidate and says so;
    // calls go to destination 2.
    dns.restart(&[format!("host-record=other.mycluster.net,{}", ip(test, 13))]);
    wait_until(Duration::from_secs(15), || {
        let d = listed(mi_addr, 1);
        d["addresses"] == serde_json::json!([]) && d["resolve_error"].is_string()
    });
    let third = held("uac-held-2", 5063);
    wait_until(Duration::from_secs(10), || address_of_calls() == [at(12)]);
    assert!(third.finish(Duration::from_secs(30)).success);

    // It comes back.
    dns.restart(&[format!("host-record=yate1.mycluster.net,{}", ip(test, 11))]);
    wait_until(Duration::from_secs(15), || {
        listed(mi_addr, 1).get("resolve_error").is_none()
    });
    one_call("uac-after");
    wait_until(Duration::from_secs(5), || {
        vm_loads(mi_addr).values().all(|&l| l == 0)
    });
}
