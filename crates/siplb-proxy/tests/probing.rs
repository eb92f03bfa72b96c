//! OPTIONS probing of destinations (SPEC section 4).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::time::Duration;

use rig::*;
use siplb_balance::DestinationRow;

#[test]
fn mode_one_probes_only_while_disabled_and_reenables() {
    let mut rig = probing_rig(&[(1, 1), (2, 1)], "");
    rig.advance(Duration::from_millis(10));
    assert!(
        probes(&rig.sent()).is_empty(),
        "enabled mode-1 destinations are not probed"
    );
    rig.balancer.disable_by_failover(1, 0).unwrap();
    rig.balancer.set_status_by_operator(2, false).unwrap();
    rig.advance(Duration::from_secs(1));
    let sent = probes(&rig.sent());
    assert_eq!(
        sent.len(),
        1,
        "operator-disabled destinations are not probed"
    );
    let (to, probe) = &sent[0];
    assert_eq!(*to, addr(DST1));
    assert_eq!(probe.request_uri_text(), Some("sip:127.0.0.11:5060"));
    assert_eq!(probe.from().unwrap().uri_text, "sip:prober@127.0.0.1");
    // No second probe while one is pending.
    rig.advance(Duration::from_millis(200));
    assert!(probes(&rig.sent()).is_empty());
    rig.feed_bytes(
        DST1,
        siplb_sip::build_response(probe, 200, "OK", Some("p"), &[]),
    );
    assert!(rig.balancer.destination(1).unwrap().enabled);
    assert!(!rig.balancer.destination(2).unwrap().enabled);
    let state = rig
        .proxy
        .probe_states()
        .find(|(id, _)| *id == 1)
        .unwrap()
        .1
        .clone();
    assert_eq!(state.last_status, Some(200));
    assert!(state.rtt.is_some());
    // Enabled again: probing stops.
    rig.advance(Duration::from_secs(3));
    assert!(probes(&rig.sent()).is_empty());
}

#[test]
fn mode_two_disables_on_failure_after_the_threshold_and_honours_reply_codes() {
    let mut rig = probing_rig(
        &[(1, 2), (2, 2)],
        "reply_codes = [404]\nfailures_to_disable = 2\n",
    );
    // The first round goes out at start, then one every interval.
    rig.advance(Duration::from_millis(10));
    for round in 0..3 {
        let sent = probes(&rig.sent());
        assert_eq!(sent.len(), 2, "round {round}");
        for (to, probe) in sent {
            // Destination 1 answers 404 (listed, so a success); 2 answers 503.
            let (code, from) = if to == addr(DST1) {
                (404, DST1)
            } else {
                (503, DST2)
            };
            rig.feed_bytes(
                from,
                siplb_sip::build_response(&probe, code, "X", Some("p"), &[]),
            );
        }
        // Two consecutive failures are needed.
        assert_eq!(
            rig.balancer.destination(2).unwrap().enabled,
            round == 0,
            "round {round}"
        );
        assert!(rig.balancer.destination(1).unwrap().enabled);
        rig.advance(Duration::from_secs(1));
    }
    // A probe that gets no answer at all counts as a failure too.
    let mut rig = probing_rig(&[(1, 2)], "");
    rig.advance(Duration::from_millis(10));
    assert_eq!(probes(&rig.sent()).len(), 1);
    rig.advance(Duration::from_millis(600));
    assert!(
        !rig.balancer.destination(1).unwrap().enabled,
        "timeout disables"
    );
    assert_eq!(
        rig.proxy.probe_states().next().unwrap().1.last_status,
        Some(408)
    );
    // The next round's success brings it back.
    rig.sent();
    rig.advance(Duration::from_millis(400));
    let sent = probes(&rig.sent());
    assert_eq!(sent.len(), 1);
    rig.feed_bytes(
        DST1,
        siplb_sip::build_response(&sent[0].1, 200, "OK", Some("p"), &[]),
    );
    assert!(rig.balancer.destination(1).unwrap().enabled);
}

#[test]
fn an_operator_disable_is_never_undone_by_probes() {
    let mut rig = probing_rig(&[(1, 2)], "");
    rig.balancer.set_status_by_operator(1, false).unwrap();
    rig.advance(Duration::from_secs(5));
    assert!(probes(&rig.sent()).is_empty());
    assert!(!rig.balancer.destination(1).unwrap().enabled);
}

#[test]
fn attrs_can_set_a_destination_probe_interval() {
    let mut rig = probing_rig(&[], "");
    let mut slow = DestinationRow::new(1, 1, format!("sip:{DST1}"), "vm=5");
    slow.probe_mode = 2;
    slow.attrs = Some("probe_interval=3".into());
    let mut fast = DestinationRow::new(2, 1, format!("sip:{DST2}"), "vm=5");
    fast.probe_mode = 2;
    assert!(rig.balancer.reload([slow, fast]).is_empty());
    let mut counts = [0, 0];
    for _ in 0..6 {
        rig.advance(Duration::from_millis(1000));
        for (to, probe) in probes(&rig.sent()) {
            counts[usize::from(to == addr(DST2))] += 1;
            let from = if to == addr(DST1) { DST1 } else { DST2 };
            rig.feed_bytes(
                from,
                siplb_sip::build_response(&probe, 200, "OK", Some("p"), &[]),
            );
        }
    }
    // From start to 6 s: every second for the default (0..=6 s), every 3 s for the
    // override (0, 3 and 6 s).
    assert_eq!(counts, [3, 7]);
}

/// A probe whose destination cannot be reached (the driver's refused connection)
/// counts as a failed probe at once, without waiting for the probe timeout.
#[test]
fn an_unreachable_probe_target_fails_its_probe_at_once() {
    let mut rig = probing_rig(&[(1, 2), (2, 2)], "");
    rig.advance(Duration::from_millis(10));
    assert_eq!(probes(&rig.sent()).len(), 2);
    rig.proxy
        .handle_unreachable(rig.now, siplb_proxy::Peer::udp(addr(DST1)));
    assert!(!rig.balancer.destination(1).unwrap().enabled);
    assert!(rig.balancer.destination(2).unwrap().enabled);
}

/// A destination named by host is probed on its next address when the first fails at
/// the transport, as its calls would be: it is disabled only when every address fails.
#[test]
fn a_named_destination_is_probed_on_its_next_address() {
    let text =
        "[probing]\ninterval = \"1s\"\ntimeout = \"500ms\"\nfrom = \"sip:prober@127.0.0.1\"\n";
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=5")], text);
    let mut row = DestinationRow::new(1, 1, "sip:gw.example.net", "vm=5");
    row.probe_mode = 2;
    assert!(rig.balancer.reload([row]).is_empty());
    rig.balancer.names()[0].publish(siplb_balance::Resolution {
        addresses: vec![addr("127.0.0.21:5060"), addr("127.0.0.22:5060")].into(),
        error: None,
        done: true,
    });
    rig.proxy.start(rig.now);
    rig.advance(Duration::from_millis(10));
    let sent = probes(&rig.sent());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, addr("127.0.0.21:5060"));
    rig.proxy
        .handle_unreachable(rig.now, siplb_proxy::Peer::udp(addr("127.0.0.21:5060")));
    let again = probes(&rig.sent());
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].0, addr("127.0.0.22:5060"));
    assert!(rig.balancer.destination(1).unwrap().enabled);
    rig.feed_bytes("127.0.0.22:5060", reply(&again[0].1, 200, "OK", "p"));
    let d = rig.balancer.destination(1).unwrap();
    assert!(d.enabled);
    assert_eq!(d.last_probe, Some(200));

    // A later round: both addresses refuse; only then is the probe a failure.
    rig.advance(Duration::from_secs(2));
    assert_eq!(probes(&rig.sent())[0].0, addr("127.0.0.21:5060"));
    rig.proxy
        .handle_unreachable(rig.now, siplb_proxy::Peer::udp(addr("127.0.0.21:5060")));
    assert_eq!(probes(&rig.sent())[0].0, addr("127.0.0.22:5060"));
    rig.proxy
        .handle_unreachable(rig.now, siplb_proxy::Peer::udp(addr("127.0.0.22:5060")));
    let d = rig.balancer.destination(1).unwrap();
    assert!(!d.enabled);
    assert_eq!(d.last_probe, Some(503));
}

/// In a cluster one node probes: the others send nothing, and start when the cluster
/// makes them the prober (its prober died, or the store is away).
#[test]
fn a_node_that_is_not_the_prober_sends_no_probe() {
    let mut rig = probing_rig(&[(1, 2), (2, 2)], "");
    rig.balancer.set_probes_here(false);
    rig.advance(Duration::from_secs(5));
    assert!(probes(&rig.sent()).is_empty());
    rig.balancer.set_probes_here(true);
    rig.advance(Duration::from_secs(2));
    let mut probed: Vec<_> = probes(&rig.sent()).iter().map(|(to, _)| *to).collect();
    probed.sort();
    probed.dedup();
    assert_eq!(probed, [addr(DST1), addr(DST2)]);
}
