//! End to end with a real SIP peer: SIPp callers and destinations on loopback, the
//! proxy core and its UDP/TCP transports running in this process, so the tests can
//! read the balancer's loads while calls are up.
//!
//! Each test uses its own loopback addresses (127.0.x.y) and ports, so they run in
//! parallel; every SIPp run is bounded in calls and time.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    dead_code
)]

mod harness;

use std::time::Duration;

use harness::{Lb, Sipp, scenario, wait_until};

const STUDY: &[(u32, &str, &str)] = &[
    (1, "vm=50;pstn=32", "uas"),
    (2, "vm=100", "uas"),
    (3, "vm=50", "uas"),
    (4, "vm=10;pstn=64", "uas"),
];

#[test]
fn calls_are_balanced_and_load_is_released() {
    let lb = Lb::start(1, STUDY, "", "");
    let _uas = lb.start_destinations();
    // 20 calls of 3 s: all up at once, then all hung up by the caller.
    let uac = Sipp::uac(&lb, "VM_1", 20, 20, 3000, &[]);
    wait_until(Duration::from_secs(8), || lb.total_load("vm") == 20);
    // Destination 2 has the most free vm slots (100): the first 20 calls all go there.
    assert_eq!(lb.load(2, "vm"), 20);
    assert_eq!(lb.load(1, "vm") + lb.load(3, "vm") + lb.load(4, "vm"), 0);
    let report = uac.finish(Duration::from_secs(20));
    assert!(
        report.success,
        "SIPp reported failed calls:\n{}",
        report.output
    );
    assert_eq!(report.successful_calls, 20);
    wait_until(Duration::from_secs(3), || lb.total_load("vm") == 0);
}

#[test]
fn full_group_gets_service_full_and_never_exceeds_capacity() {
    let lb = Lb::start(2, &[(1, "pstn=3", "uas"), (2, "pstn=2", "uas")], "", "");
    let _uas = lb.start_destinations();
    // 8 long calls on 5 slots: 5 connect, 3 get "500 Service full".
    let uac = Sipp::uac(&lb, "12345", 8, 20, 3000, &[]);
    wait_until(Duration::from_secs(8), || lb.total_load("pstn") == 5);
    assert_eq!((lb.load(1, "pstn"), lb.load(2, "pstn")), (3, 2));
    let report = uac.finish(Duration::from_secs(20));
    assert_eq!(report.successful_calls, 5, "{}", report.output);
    assert_eq!(report.failed_calls, 3, "{}", report.output);
    assert!(report.output.contains("500"), "{}", report.output);
    wait_until(Duration::from_secs(3), || lb.total_load("pstn") == 0);
}

#[test]
fn failover_on_503_disables_the_destination() {
    // Destination 1 has the most room but refuses every call.
    let lb = Lb::start(3, &[(1, "vm=100", "503"), (2, "vm=10", "uas")], "", "");
    let _uas = lb.start_destinations();
    let report = Sipp::uac(&lb, "VM_1", 5, 10, 200, &[]).finish(Duration::from_secs(20));
    assert!(report.success, "{}", report.output);
    assert_eq!(report.successful_calls, 5);
    let d1 = lb.destination(1);
    assert!(!d1.enabled, "a destination that answers 503 is disabled");
    assert!(
        d1.auto_reenable,
        "failover disables script-style: probing may re-enable"
    );
    // The floor keeps the last enabled destination of the group in service.
    assert!(lb.destination(2).enabled);
    wait_until(Duration::from_secs(3), || lb.total_load("vm") == 0);
}

#[test]
fn failover_on_timeout_to_a_silent_destination() {
    // Nothing listens for destination 1; the INVITE times out after 1 s.
    let lb = Lb::start(
        4,
        &[(1, "vm=100", "silent"), (2, "vm=10", "uas")],
        "",
        "[transaction]\ninvite_timeout = \"1s\"\n",
    );
    let _uas = lb.start_destinations();
    let report = Sipp::uac(&lb, "VM_1", 2, 10, 200, &[]).finish(Duration::from_secs(20));
    assert!(report.success, "{}", report.output);
    assert!(!lb.destination(1).enabled);
    wait_until(Duration::from_secs(3), || lb.total_load("vm") == 0);
}

#[test]
fn callers_over_tcp() {
    let lb = Lb::start(5, &[(1, "vm=10", "uas")], "", "");
    let _uas = lb.start_destinations();
    let report = Sipp::uac(&lb, "VM_1", 5, 10, 200, &["-t", "t1"]).finish(Duration::from_secs(20));
    assert!(report.success, "{}", report.output);
    assert_eq!(report.successful_calls, 5);
    wait_until(Duration::from_secs(3), || lb.total_load("vm") == 0);
}

/// A record-route-aware caller on TCP, destinations on UDP: siplb record-routes
/// twice (RFC 5658), the entry facing each side where that side's route set starts,
/// and the caller's ACK and BYE (which carry both entries) reach the destination.
#[test]
fn record_route_aware_callers_over_tcp_reach_udp_destinations() {
    let lb = Lb::start(7, &[(1, "vm=10", "uas"), (2, "vm=10", "uas")], "", "");
    let _uas = lb.start_destinations();
    let sf = scenario("uac_rr.xml");
    let sf = sf.to_str().unwrap();
    let uac = Sipp::caller(
        &lb,
        lb.caller_ip(),
        "VM_1",
        6,
        20,
        &["-sf", sf, "-d", "1500", "-t", "t1"],
    );
    wait_until(Duration::from_secs(8), || lb.total_load("vm") == 6);
    let report = uac.finish(Duration::from_secs(20));
    assert!(report.success, "{}", report.output);
    assert_eq!(report.successful_calls, 6);
    // Released by the BYEs, not by timeouts.
    wait_until(Duration::from_secs(2), || lb.total_load("vm") == 0);
}

/// A caller with siplb as its outbound proxy (a preloaded Route): the call is
/// balanced and counted like any other, its ACK and BYE come back through siplb.
#[test]
fn a_preloaded_route_is_consumed_and_the_call_balanced() {
    let lb = Lb::start(19, &[(1, "vm=2", "uas"), (2, "vm=5", "uas")], "", "");
    let _uas = lb.start_destinations();
    let sf = scenario("uac_preloaded_route.xml");
    let sf = sf.to_str().unwrap();
    let uac = Sipp::caller(
        &lb,
        lb.caller_ip(),
        "VM_1",
        4,
        20,
        &["-sf", sf, "-d", "1500"],
    );
    // Balanced: destination 2 has the most room.
    wait_until(Duration::from_secs(8), || lb.total_load("vm") == 4);
    assert_eq!((lb.load(1, "vm"), lb.load(2, "vm")), (1, 3));
    let report = uac.finish(Duration::from_secs(20));
    assert!(report.success, "{}", report.output);
    assert_eq!(report.successful_calls, 4);
    wait_until(Duration::from_secs(2), || lb.total_load("vm") == 0);
}

/// SIP over TCP within bounds: connections beyond the per-source limit are closed at
/// once, a message begun and not finished closes its connection, so does silence;
/// callers from elsewhere are served all along.
#[test]
fn tcp_connections_are_bounded() {
    use std::io::{Read as _, Write as _};
    let lb = Lb::start(
        29,
        &[(1, "vm=10", "uas")],
        "",
        "[tcp]\nmax_connections_per_source = 5\nidle_timeout = \"3s\"\nmessage_timeout = \"1s\"\n",
    );
    let _uas = lb.start_destinations();
    let connect = || {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&std::net::SocketAddr::new(lb.ip(200), 0).into())
            .unwrap();
        socket.connect(&lb.addr.into()).unwrap();
        let stream: std::net::TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(6)))
            .unwrap();
        stream
    };
    let closed_within = |s: &mut std::net::TcpStream, limit: Duration| {
        let started = std::time::Instant::now();
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(0) | Err(_)) && started.elapsed() <= limit
    };
    let mut held: Vec<std::net::TcpStream> = (0..5).map(|_| connect()).collect();
    // A sixth from the same address is closed at once.
    let mut sixth = connect();
    assert!(closed_within(&mut sixth, Duration::from_secs(1)));
    // Half a message: closed after message_timeout.
    held[0]
        .write_all(b"INVITE sip:VM_1@127.0.29.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.29.200")
        .unwrap();
    assert!(closed_within(&mut held[0], Duration::from_millis(2500)));
    // Callers elsewhere are served meanwhile.
    let report = Sipp::uac(&lb, "VM_1", 3, 10, 200, &["-t", "t1"]).finish(Duration::from_secs(20));
    assert!(report.success, "{}", report.output);
    // Silence: closed after idle_timeout.
    assert!(closed_within(&mut held[1], Duration::from_secs(5)));
    // Their places are free again.
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    let mut again = connect();
    again.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    again.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"\r\n", "a keep-alive ping is answered");
    wait_until(Duration::from_secs(3), || lb.total_load("vm") == 0);
}

#[test]
fn unknown_numbers_get_the_route_reply() {
    let lb = Lb::start(6, STUDY, "", "");
    let _uas = lb.start_destinations();
    // The default routes answer 404 for a user that is neither VM_ nor digits.
    let report = Sipp::uac(&lb, "nobody", 2, 10, 200, &[]).finish(Duration::from_secs(20));
    assert_eq!(report.failed_calls, 2, "{}", report.output);
    assert!(report.output.contains("404"), "{}", report.output);
    assert_eq!(lb.total_load("vm"), 0);
}

#[test]
fn shutdown_drains_calls_that_are_up_and_refuses_new_ones() {
    let lb = Lb::start(8, &[(1, "vm=10", "uas")], "", "");
    let _uas = lb.start_destinations();
    let up = Sipp::uac(&lb, "VM_1", 2, 10, 2500, &[]);
    wait_until(Duration::from_secs(5), || lb.total_load("vm") == 2);
    lb.shutdown();
    let refused = Sipp::uac(&lb, "VM_2", 1, 10, 100, &[]).finish(Duration::from_secs(20));
    assert_eq!(refused.failed_calls, 1, "{}", refused.output);
    assert!(
        refused.output.contains("503 Service Unavailable"),
        "{}",
        refused.output
    );
    let report = up.finish(Duration::from_secs(20));
    assert!(
        report.success,
        "calls up during the drain end normally:\n{}",
        report.output
    );
    wait_until(Duration::from_secs(3), || lb.total_load("vm") == 0);
}

#[test]
fn bye_from_the_destination_releases_the_load() {
    let lb = Lb::start(9, &[(1, "vm=10", "bye")], "", "");
    let _uas = lb.start_destinations();
    let sf = scenario("uac_bye_received.xml");
    let report = Sipp::caller(
        &lb,
        lb.caller_ip(),
        "VM_1",
        4,
        10,
        &["-sf", sf.to_str().unwrap()],
    )
    .finish(Duration::from_secs(20));
    assert!(report.success, "{}", report.output);
    assert_eq!(report.successful_calls, 4);
    wait_until(Duration::from_secs(3), || lb.total_load("vm") == 0);
}

#[test]
fn busy_destination_is_relayed_not_failed_over() {
    let lb = Lb::start(10, &[(1, "vm=100", "486"), (2, "vm=10", "uas")], "", "");
    let _uas = lb.start_destinations();
    let report = Sipp::uac(&lb, "VM_1", 3, 10, 100, &[]).finish(Duration::from_secs(20));
    assert_eq!(report.failed_calls, 3, "{}", report.output);
    assert!(report.output.contains("486 Busy Here"), "{}", report.output);
    assert!(
        lb.destination(1).enabled,
        "a 4xx is the callee's answer, not a failure"
    );
    assert_eq!(lb.load(2, "vm"), 0, "no failover on 4xx");
    wait_until(Duration::from_secs(3), || lb.total_load("vm") == 0);
}

#[test]
fn calls_from_the_cluster_are_counted_and_relayed() {
    // Destination 1 (127.0.11.11, any port) is a gateway that also sends calls in: they
    // count against its pstn and go to the proxy at 127.0.11.50.
    let routes = "[[route]]\nmatch = { source_group = 1 }\ncount = { group = 1, resources = \"pstn\" }\nrelay = \"sip:127.0.11.50:5060\"\n";
    let lb = Lb::start(
        11,
        &[(1, "pstn=2", "none"), (2, "pstn=5", "none")],
        routes,
        "",
    );
    // The table row's port is 0 (any port), so a caller on any port of that IP matches.
    lb.balancer
        .reload([
            siplb_balance::DestinationRow::new(1, 1, "sip:127.0.11.11:0", "pstn=2"),
            siplb_balance::DestinationRow::new(2, 1, "sip:127.0.11.12", "pstn=5"),
        ])
        .is_empty()
        .then_some(())
        .unwrap();
    let next_hop = lb.ip(50).to_string();
    let _proxy = Sipp::spawn(
        lb.dir(),
        "next-hop",
        &["-sn", "uas", "-i", &next_hop, "-p", "5060"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let calls = Sipp::caller(
        &lb,
        lb.ip(11),
        "12345",
        3,
        10,
        &["-sn", "uac", "-d", "2000"],
    );
    wait_until(Duration::from_secs(5), || lb.load(1, "pstn") == 3);
    // Counting ignores capacity: 3 calls on 2 slots, and the other destination is untouched.
    assert_eq!(lb.load(2, "pstn"), 0);
    let report = calls.finish(Duration::from_secs(20));
    assert!(report.success, "{}", report.output);
    wait_until(Duration::from_secs(3), || lb.total_load("pstn") == 0);
}

#[test]
fn malformed_datagrams_do_not_disturb_calls() {
    let lb = Lb::start(12, &[(1, "vm=20", "uas")], "", "");
    let _uas = lb.start_destinations();
    let calls = Sipp::uac(&lb, "VM_1", 10, 20, 1500, &[]);
    wait_until(Duration::from_secs(5), || lb.total_load("vm") == 10);
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/rfc4475");
    let socket = std::net::UdpSocket::bind((lb.ip(200), 0)).unwrap();
    let mut sent = 0;
    for round in 0..3 {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "dat") {
                let data = std::fs::read(&path).unwrap();
                socket.send_to(&data, lb.addr).unwrap();
                // Truncated and garbled copies too.
                socket
                    .send_to(&data[..data.len() / (round + 2)], lb.addr)
                    .unwrap();
                sent += 2;
            }
        }
    }
    assert!(sent >= 300);
    let report = calls.finish(Duration::from_secs(20));
    assert!(report.success, "{}", report.output);
    assert_eq!(report.successful_calls, 10);
    assert_eq!(lb.destination(1).resources[0].max, 20);
    wait_until(Duration::from_secs(3), || lb.total_load("vm") == 0);
}

const PROBING: &str = "[probing]\ninterval = \"500ms\"\ntimeout = \"300ms\"\n";

#[test]
fn a_disabled_destination_comes_back_when_it_answers_probes() {
    let lb = Lb::start(
        13,
        &[(1, "vm=50", "silent:1"), (2, "vm=10", "uas:1")],
        "",
        PROBING,
    );
    let _uas = lb.start_destinations();
    lb.balancer.disable_by_failover(1, 0).unwrap();
    // Not answering: it stays disabled.
    std::thread::sleep(Duration::from_millis(1200));
    assert!(!lb.destination(1).enabled);
    // Operator-disabled destinations are left alone by probes.
    lb.balancer.set_status_by_operator(2, false).unwrap();
    let _late = lb.start_uas(1);
    let _late2 = lb.start_uas(2);
    // Back within two intervals of answering (with slack for a loaded machine).
    wait_until(Duration::from_millis(2500), || lb.destination(1).enabled);
    std::thread::sleep(Duration::from_millis(1200));
    assert!(!lb.destination(2).enabled);
    let report = Sipp::uac(&lb, "VM_1", 3, 10, 100, &[]).finish(Duration::from_secs(20));
    assert!(report.success, "{}", report.output);
}

#[test]
fn an_always_probed_destination_that_stops_answering_is_disabled() {
    let lb = Lb::start(
        14,
        &[(1, "vm=50", "uas:2"), (2, "vm=10", "uas:2")],
        "",
        PROBING,
    );
    let mut uas = lb.start_destinations();
    std::thread::sleep(Duration::from_millis(1200));
    assert!(lb.destination(1).enabled && lb.destination(2).enabled);
    // Destination 1's process stops: disabled within interval + timeout.
    drop(uas.remove(0));
    wait_until(Duration::from_millis(2500), || !lb.destination(1).enabled);
    assert!(lb.destination(2).enabled);
    // New calls go to destination 2 only.
    let calls = Sipp::uac(&lb, "VM_1", 3, 10, 1500, &[]);
    wait_until(Duration::from_secs(5), || lb.load(2, "vm") == 3);
    assert_eq!(lb.load(1, "vm"), 0);
    assert!(calls.finish(Duration::from_secs(20)).success);
}

#[test]
fn probe_replies_count_by_their_code() {
    // Mode 2 everywhere: 404 disables unless listed, 503 always disables.
    let rows = [
        (1, "vm=5", "options404:2"),
        (2, "vm=5", "options503:2"),
        (3, "vm=5", "uas:2"),
    ];
    let lb = Lb::start(15, &rows, "", PROBING);
    let _uas = lb.start_destinations();
    // The first round may go out before SIPp listens: a destination can be down for a
    // round, and its first reply can be a timeout (408) rather than its own code.
    wait_until(Duration::from_millis(5000), || {
        let (one, two, three) = (lb.destination(1), lb.destination(2), lb.destination(3));
        !one.enabled
            && !two.enabled
            && three.enabled
            && one.last_probe == Some(404)
            && two.last_probe == Some(503)
            && three.last_probe == Some(200)
    });
    assert_eq!(lb.destination(1).last_probe, Some(404));
    assert_eq!(lb.destination(2).last_probe, Some(503));
    assert_eq!(lb.destination(3).last_probe, Some(200));
    assert!(lb.destination(3).probe_rtt.is_some());

    let listed = format!("{PROBING}reply_codes = [404]\n");
    let lb = Lb::start(16, &rows, "", &listed);
    let _uas = lb.start_destinations();
    wait_until(Duration::from_millis(5000), || {
        !lb.destination(2).enabled && lb.destination(1).last_probe == Some(404)
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert!(lb.destination(1).enabled, "a listed 404 counts as success");
    assert_eq!(lb.destination(1).last_probe, Some(404));
}

#[test]
fn cancel_before_answer_releases_the_load() {
    let lb = Lb::start(17, &[(1, "vm=10", "cancel")], "", "");
    let _uas = lb.start_destinations();
    let sf = scenario("uac_cancel.xml");
    let calls = Sipp::caller(
        &lb,
        lb.caller_ip(),
        "VM_1",
        3,
        10,
        &["-sf", sf.to_str().unwrap()],
    );
    // Ringing: the load is held until the CANCEL.
    wait_until(Duration::from_secs(5), || lb.load(1, "vm") >= 1);
    let report = calls.finish(Duration::from_secs(20));
    assert!(report.success, "{}", report.output);
    assert_eq!(report.successful_calls, 3);
    wait_until(Duration::from_secs(3), || lb.total_load("vm") == 0);
    assert!(
        lb.destination(1).enabled,
        "a 487 after CANCEL is no failure"
    );
}

/// Five calls to VM_1 from a caller tracing its messages into `trace` (a name in the
/// test's directory); all must succeed. The 100 Trying responses the caller received.
fn tryings_heard(lb: &Lb, trace: &str) -> usize {
    let trace = lb.dir().join(trace);
    let trace_arg = trace.to_str().unwrap().to_owned();
    let report = Sipp::uac(
        lb,
        "VM_1",
        5,
        10,
        100,
        &["-trace_msg", "-message_file", &trace_arg],
    )
    .finish(Duration::from_secs(30));
    assert!(report.success, "{}", report.output);
    assert_eq!(report.successful_calls, 5);
    let text =
        std::fs::read_to_string(&trace).unwrap_or_else(|e| panic!("{}: {e}", trace.display()));
    let received: Vec<&str> = text.split("message received").skip(1).collect();
    // A trace that lost the caller's messages would count no 100 either: every call
    // must show its 180 in it.
    let ringing = received
        .iter()
        .filter(|m| m.contains("SIP/2.0 180 Ringing"))
        .count();
    assert!(ringing >= 5, "{ringing} 180s in {}", trace.display());
    received
        .iter()
        .filter(|m| m.contains("SIP/2.0 100 Trying"))
        .count()
}

#[test]
fn the_caller_hears_100_trying_only_from_a_destination_slow_to_ring() {
    let lb = Lb::start(33, &[(1, "vm=20", "uas"), (2, "vm=8", "slow")], "", "");
    let _uas = lb.start_destinations();
    // Destination 1 has the most room (20 against 8) and rings at once: its 180 is all
    // the caller needs, no 100 is sent.
    assert_eq!(tryings_heard(&lb, "trace-quick.log"), 0);
    wait_until(Duration::from_secs(3), || lb.total_load("vm") == 0);
    // Destination 1 drained: destination 2 rings after 400 ms, the 100 went at 200 ms.
    lb.balancer.drain(1).unwrap();
    assert_eq!(tryings_heard(&lb, "trace-slow.log"), 5);
    wait_until(Duration::from_secs(3), || lb.total_load("vm") == 0);

    // `trying_after = "0s"`: every caller hears it at once.
    let lb = Lb::start(
        34,
        &[(1, "vm=10", "uas")],
        "",
        "[transaction]\ntrying_after = \"0s\"\n",
    );
    let _uas = lb.start_destinations();
    assert_eq!(tryings_heard(&lb, "trace.log"), 5);
}

#[test]
fn service_full_then_calls_accepted_again_as_others_end() {
    let lb = Lb::start(18, &[(1, "vm=2", "uas")], "", "");
    let _uas = lb.start_destinations();
    let long = Sipp::uac(&lb, "VM_1", 2, 20, 1500, &[]);
    wait_until(Duration::from_secs(5), || lb.load(1, "vm") == 2);
    let refused = Sipp::uac(&lb, "VM_2", 1, 10, 100, &[]).finish(Duration::from_secs(20));
    assert_eq!(refused.failed_calls, 1, "{}", refused.output);
    assert!(
        refused.output.contains("500 Service full"),
        "{}",
        refused.output
    );
    assert!(long.finish(Duration::from_secs(20)).success);
    wait_until(Duration::from_secs(3), || lb.load(1, "vm") == 0);
    let again = Sipp::uac(&lb, "VM_3", 2, 10, 100, &[]).finish(Duration::from_secs(20));
    assert!(again.success, "{}", again.output);
    assert_eq!(again.successful_calls, 2);
}

#[test]
fn the_binary_runs_a_call_from_its_config_file() {
    harness::binary_smoke(7);
}
