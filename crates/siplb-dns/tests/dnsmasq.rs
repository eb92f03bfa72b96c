//! Resolution against a real DNS server (dnsmasq on a loopback address): RFC 3263's
//! lookups, and the background task following records that change, vanish and come back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use siplb_balance::{Balancer, DestinationRow, Name, NameTransport};
use siplb_dns::{Hickory, Kick, Policy, Servers, keep_resolved, rfc3263::resolve};
use siplb_testkit::Dnsmasq;

fn dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn records(list: &[&str]) -> Vec<String> {
    list.iter().map(|r| (*r).to_owned()).collect()
}

fn hickory(server: SocketAddr) -> Hickory {
    Hickory::new(&Servers {
        servers: vec![server],
        timeout: Duration::from_millis(500),
    })
    .unwrap()
}

fn name(host: &str, port: u16, transport: NameTransport) -> Name {
    Name {
        host: host.into(),
        port,
        transport,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn rfc3263_lookups_against_dnsmasq() {
    let server: SocketAddr = "127.0.93.53:5353".parse().unwrap();
    let Some(_dns) = Dnsmasq::start(
        server,
        "mycluster.net",
        &records(&[
            "host-record=yate1.mycluster.net,127.0.93.11",
            "host-record=yate2.mycluster.net,127.0.93.12",
            "host-record=yate3.mycluster.net,127.0.93.13,::1",
            // Two targets for one service: priority 10 first, then 20.
            "srv-host=_sip._tcp.pbx.mycluster.net,yate2.mycluster.net,5072,20,0",
            "srv-host=_sip._tcp.pbx.mycluster.net,yate1.mycluster.net,5071,10,0",
        ]),
        &dir("dns-rfc3263"),
    ) else {
        return;
    };
    let dns = hickory(server);
    let got = |r: Result<siplb_dns::Resolved, siplb_dns::LookupError>| -> Vec<String> {
        r.unwrap()
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let mut draw = |_: u32| 0;
    // A name with a port: A and AAAA on that port.
    assert_eq!(
        got(resolve(
            &name("yate3.mycluster.net", 5080, NameTransport::Udp),
            &dns,
            &mut draw
        )
        .await),
        ["[::1]:5080", "127.0.93.13:5080"]
    );
    // No port: SRV after the transport, targets by priority on their ports.
    assert_eq!(
        got(resolve(
            &name("pbx.mycluster.net", 0, NameTransport::Tcp),
            &dns,
            &mut draw
        )
        .await),
        ["127.0.93.11:5071", "127.0.93.12:5072"]
    );
    // No port and no SRV record: the name's own address on 5060 (5061 for TLS).
    assert_eq!(
        got(resolve(
            &name("yate1.mycluster.net", 0, NameTransport::Udp),
            &dns,
            &mut draw
        )
        .await),
        ["127.0.93.11:5060"]
    );
    assert_eq!(
        got(resolve(
            &name("yate1.mycluster.net", 0, NameTransport::Tls),
            &dns,
            &mut draw
        )
        .await),
        ["127.0.93.11:5061"]
    );
    // A name the zone lacks: a negative answer, told apart from a failure to answer.
    let e = resolve(
        &name("nope.mycluster.net", 0, NameTransport::Udp),
        &dns,
        &mut draw,
    )
    .await
    .unwrap_err();
    assert!(e.negative, "{e:?}");
    let silent = hickory("127.0.93.54:5353".parse().unwrap());
    let e = resolve(
        &name("yate1.mycluster.net", 5060, NameTransport::Udp),
        &silent,
        &mut draw,
    )
    .await
    .unwrap_err();
    assert!(!e.negative, "{e:?}");
}

/// Polls `cond` every 50 ms for at most `limit`.
async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn names_follow_their_records() {
    let server: SocketAddr = "127.0.94.53:5353".parse().unwrap();
    let Some(mut dns) = Dnsmasq::start(
        server,
        "mycluster.net",
        &records(&["host-record=yate1.mycluster.net,127.0.94.11"]),
        &dir("dns-refresh"),
    ) else {
        return;
    };
    let (balancer, errors) = Balancer::with_rows([DestinationRow::new(
        1,
        1,
        "sip:yate1.mycluster.net",
        "vm=10",
    )]);
    assert!(errors.is_empty());
    let balancer = Arc::new(balancer);
    let kick = Kick::default();
    let task = tokio::spawn(keep_resolved(
        Arc::clone(&balancer),
        Arc::new(hickory(server)),
        Policy {
            max_retry: Duration::from_secs(1),
            ..Policy::default()
        },
        kick.clone(),
    ));
    let addresses = || {
        let d = balancer.destination(1).unwrap();
        let r = d.resolution.unwrap();
        let list: Vec<String> = r.addresses.iter().map(ToString::to_string).collect();
        (list, r.error.as_deref().map(str::to_owned))
    };
    eventually(Duration::from_secs(5), || {
        addresses().0 == ["127.0.94.11:5060"]
    })
    .await;

    // The record changes: the new address within its TTL (1 s) and a refresh.
    dns.restart(&records(&["host-record=yate1.mycluster.net,127.0.94.12"]));
    eventually(Duration::from_secs(5), || {
        addresses().0 == ["127.0.94.12:5060"]
    })
    .await;

    // The DNS server stops answering: the last addresses stay, with the error.
    dns.stop();
    eventually(Duration::from_secs(8), || addresses().1.is_some()).await;
    assert_eq!(addresses().0, ["127.0.94.12:5060"]);

    // It answers again without the name: no address, said why.
    dns.restart(&records(&["host-record=other.mycluster.net,127.0.94.13"]));
    eventually(Duration::from_secs(8), || addresses().0.is_empty()).await;
    assert!(addresses().1.is_some());

    // The name is back.
    dns.restart(&records(&["host-record=yate1.mycluster.net,127.0.94.11"]));
    eventually(Duration::from_secs(8), || {
        addresses() == (vec!["127.0.94.11:5060".to_owned()], None)
    })
    .await;

    // A reload adds a name: it resolves without waiting for the next round.
    balancer.reload([
        DestinationRow::new(1, 1, "sip:yate1.mycluster.net", "vm=10"),
        DestinationRow::new(2, 1, "sip:yate1.mycluster.net:5070", "vm=10"),
    ]);
    kick.names_changed();
    eventually(Duration::from_secs(3), || {
        balancer
            .destination(2)
            .and_then(|d| d.resolution)
            .is_some_and(|r| r.addresses.len() == 1)
    })
    .await;
    task.abort();
}
