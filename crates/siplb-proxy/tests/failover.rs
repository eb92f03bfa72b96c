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
    // (Sent again until the caller ACKs it: UDP.)
    let to_caller: Vec<_> = out.iter().filter(|(to, _)| *to == addr(CALLER)).collect();
    assert!(!to_caller.is_empty());
    assert!(to_caller.iter().all(|(_, m)| status(m) == 500));
    assert_eq!(to_caller[0].1.reason(), Some(&b"Service full"[..]));
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
