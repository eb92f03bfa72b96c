//! Failover: what fails a destination, what does not, thresholds and the floor.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::time::Duration;

use rig::*;

#[test]
fn failover_releases_and_moves_on_then_service_full() {
    let mut rig = Rig::new(
        &[
            (1, "sip:127.0.0.11:5060", "vm=5"),
            (2, "sip:127.0.0.12:5060", "vm=2"),
        ],
        "[failover]\nmin_enabled = 0\n",
    );
    rig.feed(CALLER, &invite("VM_1", "c4"));
    let first = rig.sent().pop().unwrap();
    assert_eq!(first.0, addr(DST1));
    rig.feed_bytes(DST1, reply(&first.1, 503, "Service Unavailable", "x"));
    let out = rig.sent();
    // The ACK to the 503 goes to destination 1, the INVITE to destination 2.
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].1.method().unwrap().as_str(), "ACK");
    assert_eq!(
        (out[1].0, out[1].1.method().unwrap().as_str()),
        (addr(DST2), "INVITE")
    );
    assert_eq!((rig.load(1), rig.load(2)), (0, 1));
    assert!(!rig.balancer.destination(1).unwrap().enabled);
    // Destination 2 times out: nothing is left, the caller gets "Service full".
    rig.advance(Duration::from_secs(6));
    let out = rig.sent();
    // The 100 Trying at 200 ms (the 503 did not go back), then the final, sent again
    // until the caller ACKs it (UDP).
    let to_caller: Vec<_> = out.iter().filter(|(to, _)| *to == addr(CALLER)).collect();
    assert!(to_caller.len() > 1);
    assert_eq!(status(&to_caller[0].1), 100);
    assert!(to_caller[1..].iter().all(|(_, m)| status(m) == 500));
    assert_eq!(to_caller[1].1.reason(), Some(&b"Service full"[..]));
    assert_eq!((rig.load(1), rig.load(2)), (0, 0));
}

#[test]
fn an_unreachable_destination_fails_over_at_once() {
    let mut rig = Rig::new(
        &[
            (1, "sip:127.0.0.11:5060", "vm=5"),
            (2, "sip:127.0.0.12:5060", "vm=2"),
        ],
        "[failover]\nmin_enabled = 0\n",
    );
    rig.feed(CALLER, &invite("VM_1", "unreachable-1"));
    let first = rig.sent().pop().unwrap();
    assert_eq!(first.0, addr(DST1));
    // The driver could not reach destination 1 (a refused TCP connect, say): no
    // waiting for the INVITE's timeout, the call moves on and 1 is blamed.
    rig.proxy
        .handle_unreachable(rig.now, siplb_proxy::Peer::udp(addr(DST1)));
    let out = rig.sent();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].0, out[0].1.method().unwrap().as_str()),
        (addr(DST2), "INVITE")
    );
    assert_eq!((rig.load(1), rig.load(2)), (0, 1));
    assert!(!rig.balancer.destination(1).unwrap().enabled);
    // An address nothing waits on changes nothing.
    rig.proxy
        .handle_unreachable(rig.now, siplb_proxy::Peer::udp(addr("127.0.0.99:5060")));
    assert!(rig.sent().is_empty());
    assert_eq!((rig.load(1), rig.load(2)), (0, 1));
    // Nor does destination 2's answer come to harm: the call completes there.
    rig.feed_bytes(DST2, reply(&out[0].1, 200, "OK", "b"));
    let to_caller: Vec<_> = rig
        .sent()
        .into_iter()
        .filter(|(to, _)| *to == addr(CALLER))
        .collect();
    assert_eq!(status(&to_caller[0].1), 200);
}

#[test]
fn a_named_destination_tries_its_next_address_before_it_fails() {
    let mut rig = Rig::new(
        &[
            (1, "sip:gw.example.net", "vm=5"),
            (2, "sip:127.0.0.12:5060", "vm=1"),
        ],
        "[failover]\nmin_enabled = 0\n",
    );
    // Not resolved yet: the call goes to the one destination siplb can reach.
    rig.feed(CALLER, &invite("VM_1", "named-0"));
    let out = rig.sent();
    assert_eq!(out.last().unwrap().0, addr(DST2), "{out:?}");
    assert_eq!((rig.load(1), rig.load(2)), (0, 1));

    let names = rig.balancer.names();
    assert_eq!(&*names[0].name().host, "gw.example.net");
    names[0].publish(siplb_balance::Resolution {
        addresses: vec![addr("127.0.0.21:5070"), addr("127.0.0.22:5080")].into(),
        error: None,
        done: true,
    });
    rig.feed(CALLER, &invite("VM_1", "named-1"));
    let first = rig.sent().pop().unwrap();
    assert_eq!(first.0, addr("127.0.0.21:5070"));
    // The first address fails at the transport: the second address of the same
    // destination gets the call, which keeps its load and blames nobody.
    rig.proxy
        .handle_unreachable(rig.now, siplb_proxy::Peer::udp(addr("127.0.0.21:5070")));
    let out = rig.sent();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].0, out[0].1.method().unwrap().as_str()),
        (addr("127.0.0.22:5080"), "INVITE")
    );
    assert_eq!(rig.load(1), 1);
    assert!(rig.balancer.destination(1).unwrap().enabled);
    // It answers; the BYE goes to the address that answered.
    rig.feed_bytes("127.0.0.22:5080", reply(&out[0].1, 200, "OK", "b"));
    let ok = rig
        .sent()
        .into_iter()
        .find(|(to, _)| *to == addr(CALLER))
        .unwrap();
    assert_eq!(status(&ok.1), 200);
    rig.feed(
        CALLER,
        &format!(
            "BYE sip:bob@127.0.0.11:5060 SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-namedbye\nMax-Forwards: 70\nFrom: <sip:alice@127.0.0.100>;tag=a-named-1\nTo: <sip:VM_1@127.0.0.1>;tag=b\nCall-ID: named-1\nCSeq: 2 BYE\nContent-Length: 0\n\n"
        ),
    );
    let bye = rig.sent().pop().unwrap();
    assert_eq!(
        (bye.0, bye.1.method().unwrap().as_str()),
        (addr("127.0.0.22:5080"), "BYE")
    );

    // Another call: both addresses fail at the transport, and only then is the
    // destination failed, its load released, and the call moved on.
    rig.feed(CALLER, &invite("VM_1", "named-2"));
    assert_eq!(rig.sent().pop().unwrap().0, addr("127.0.0.21:5070"));
    rig.proxy
        .handle_unreachable(rig.now, siplb_proxy::Peer::udp(addr("127.0.0.21:5070")));
    assert_eq!(rig.sent().pop().unwrap().0, addr("127.0.0.22:5080"));
    rig.proxy
        .handle_unreachable(rig.now, siplb_proxy::Peer::udp(addr("127.0.0.22:5080")));
    let out = rig.sent();
    let answer = out
        .iter()
        .find(|(to, m)| *to == addr(CALLER) && m.call_id() == Some("named-2"))
        .unwrap();
    assert_eq!(status(&answer.1), 500, "{out:?}");
    assert_eq!(
        rig.load(1),
        0,
        "the first call ended with its BYE, the last released"
    );
    assert!(!rig.balancer.destination(1).unwrap().enabled);
}

#[test]
fn four_hundreds_are_relayed_without_failover() {
    let mut rig = Rig::new(
        &[
            (1, "sip:127.0.0.11:5060", "vm=5"),
            (2, "sip:127.0.0.12:5060", "vm=2"),
        ],
        "",
    );
    rig.feed(CALLER, &invite("VM_1", "c5"));
    let first = rig.sent().pop().unwrap();
    rig.feed_bytes(DST1, reply(&first.1, 486, "Busy Here", "x"));
    let out = rig.sent();
    let to_caller: Vec<_> = out.iter().filter(|(to, _)| *to == addr(CALLER)).collect();
    assert_eq!(status(&to_caller[0].1), 486);
    assert!(out.iter().all(|(to, _)| *to != addr(DST2)));
    assert!(rig.balancer.destination(1).unwrap().enabled);
    assert_eq!(rig.load(1), 0);
}

#[test]
fn failover_threshold_and_floor() {
    // Three failures in a row before failover disables a destination; an answer in
    // between starts the count again; the floor keeps one enabled whatever happens.
    let mut rig = Rig::new(
        &[
            (1, "sip:127.0.0.11:5060", "vm=9"),
            (2, "sip:127.0.0.12:5060", "vm=5"),
        ],
        "[failover]\nfailures_to_disable = 3\nmin_enabled = 1\n[transaction]\ninvite_timeout = \"1s\"\n",
    );
    let enabled = |rig: &Rig| -> Vec<bool> {
        [1, 2]
            .iter()
            .map(|&id| rig.balancer.destination(id).unwrap().enabled)
            .collect()
    };
    // A call that both destinations leave unanswered: one failure each.
    let silent_call = |rig: &mut Rig, name: &str| {
        rig.feed(CALLER, &invite("VM_1", name));
        rig.advance(Duration::from_secs(3));
        rig.sent();
    };
    silent_call(&mut rig, "t1");
    silent_call(&mut rig, "t2");
    assert_eq!(
        enabled(&rig),
        [true, true],
        "two failures are below the threshold"
    );
    // Destination 1 answers one call: its count starts again.
    rig.feed(CALLER, &invite("VM_1", "ok"));
    let fwd = rig.sent().pop().unwrap().1;
    rig.feed_bytes(DST1, reply(&fwd, 486, "Busy Here", "b"));
    rig.sent();
    silent_call(&mut rig, "t3");
    assert_eq!(
        enabled(&rig),
        [true, false],
        "destination 2's third failure in a row disables it; destination 1 answered in between"
    );
    silent_call(&mut rig, "t4");
    silent_call(&mut rig, "t5");
    assert_eq!(
        enabled(&rig),
        [true, false],
        "destination 1 has failed three times in a row, but it is the last one enabled"
    );
    // Every call timed out on every destination tried: the loads are back.
    assert_eq!((rig.load(1), rig.load(2)), (0, 0));
}
