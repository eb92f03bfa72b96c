//! Calls stored for a restart, restored, and ended by the operator.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::time::Duration;

use rig::*;

#[test]
fn answered_calls_are_stored_and_a_restored_call_routes_its_bye() {
    use siplb_proxy::DialogChange;
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=5")], "");
    rig.feed(CALLER, &invite("VM_1", "p1"));
    let fwd = rig.sent().pop().unwrap().1;
    assert!(
        rig.dialog_change().is_none(),
        "calls are stored once answered"
    );
    rig.advance(Duration::from_millis(20));
    rig.feed_bytes(DST1, reply(&fwd, 200, "OK", "b-p1"));
    rig.sent();
    // Stored once it has lasted the store interval (100 ms by default), on the
    // lingers' 100 ms grid.
    rig.advance(Duration::from_millis(99));
    assert!(
        rig.dialog_change().is_none(),
        "a call is stored once it has lasted the interval"
    );
    rig.advance(Duration::from_millis(101));
    let Some(DialogChange::Upsert(stored)) = rig.dialog_change() else {
        panic!("no upsert");
    };
    assert_eq!(
        (
            stored.call_id.as_str(),
            stored.caller_tag.as_str(),
            stored.callee_tag.as_deref()
        ),
        ("p1", "a-p1", Some("b-p1"))
    );
    assert_eq!(
        (stored.destination_id, stored.resources.as_str()),
        (1, "vm")
    );
    assert_eq!(
        (stored.caller.addr, stored.callee.addr),
        (addr(CALLER), addr(DST1))
    );
    assert!(
        (Duration::from_millis(120)..Duration::from_millis(220)).contains(&stored.age),
        "stored at {:?} of age, not within a grid step of 120 ms",
        stored.age
    );

    // A new process: the stored call comes back with its load.
    let mut after = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=5")], "");
    after.proxy.restore_call(after.now, stored.clone()).unwrap();
    assert_eq!(after.load(1), 1);
    after.feed(CALLER, &bye("p1"));
    let out = after.sent();
    assert_eq!(
        out[0].0,
        addr(DST1),
        "the restored call's BYE goes to its destination"
    );
    assert_eq!(after.load(1), 0);
    assert_eq!(
        after.dialog_change(),
        Some(DialogChange::Delete {
            call_id: "p1".into(),
            caller_tag: "a-p1".into()
        })
    );
    // A destination gone from the table cannot take a call back.
    let mut gone = Rig::new(&[(2, "sip:127.0.0.12:5060", "vm=5")], "");
    assert!(gone.proxy.restore_call(gone.now, stored).is_err());
    assert_eq!(gone.proxy.calls(), 0);
}

#[test]
fn the_operator_can_end_a_call_siplb_still_counts() {
    use siplb_proxy::DialogChange;
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=5")], "");
    rig.feed(CALLER, &invite("VM_1", "stale"));
    let fwd = rig.sent().pop().unwrap().1;
    rig.feed_bytes(DST1, reply(&fwd, 200, "OK", "b"));
    rig.sent();
    rig.advance(Duration::from_millis(300));
    assert!(matches!(rig.dialog_change(), Some(DialogChange::Upsert(_))));
    assert_eq!(rig.load(1), 1);
    assert_eq!(rig.proxy.end_calls_with_id(rig.now, "nothing"), 0);
    assert_eq!(rig.proxy.end_calls_with_id(rig.now, "stale"), 1);
    assert_eq!(rig.load(1), 0);
    assert!(matches!(
        rig.dialog_change(),
        Some(DialogChange::Delete { .. })
    ));
}

fn bye(call: &str) -> String {
    format!(
        "BYE sip:bob@127.0.0.11:5060 SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-bye-{call}\nMax-Forwards: 70\nFrom: <sip:alice@127.0.0.100>;tag=a-{call}\nTo: <sip:VM_1@127.0.0.1>;tag=b-{call}\nCall-ID: {call}\nCSeq: 2 BYE\nContent-Length: 0\n\n"
    )
}

/// A call that ends before it has lasted the store interval costs the store nothing:
/// neither its row nor the row's deletion is reported. One that outlasts it is stored
/// once and deleted once.
#[test]
fn a_call_shorter_than_the_store_interval_is_never_stored() {
    use siplb_proxy::DialogChange;
    let mut rig = Rig::new(
        &[(1, "sip:127.0.0.11:5060", "vm=5")],
        "[dialog]\npersist_interval = \"1s\"",
    );
    rig.answer("short");
    rig.advance(Duration::from_millis(500));
    rig.answer("long");
    assert_eq!(rig.proxy.calls_to_store(), 2, "both wait for the interval");
    rig.advance(Duration::from_millis(400));
    rig.feed(CALLER, &bye("short"));
    assert_eq!(rig.proxy.calls_to_store(), 1, "an ended call waits no more");
    assert_eq!(
        rig.sent()[0].0,
        addr(DST1),
        "the short call's BYE is routed"
    );
    assert_eq!(rig.load(1), 1, "the short call let its load go");
    assert!(
        rig.dialog_change().is_none(),
        "nothing reported for the short call"
    );
    // The long call has lasted the interval by then.
    rig.advance(Duration::from_millis(800));
    let Some(DialogChange::Upsert(stored)) = rig.dialog_change() else {
        panic!("the long call was not stored");
    };
    assert_eq!(stored.call_id, "long");
    assert_eq!(rig.proxy.calls_to_store(), 0);
    assert!(
        rig.dialog_change().is_none(),
        "the short call is not stored late"
    );
    rig.feed(CALLER, &bye("long"));
    rig.sent();
    assert_eq!(
        rig.dialog_change(),
        Some(DialogChange::Delete {
            call_id: "long".into(),
            caller_tag: "a-long".into()
        })
    );
    // Past every transaction (the BYEs get no answer here), the agenda holds only the
    // dialog timeouts' sweep (12 hours ahead): no store sweep is left to wake the core.
    rig.advance(Duration::from_secs(100));
    assert!(rig.dialog_change().is_none());
    assert_eq!(rig.proxy.timers(), 0);
    let next = rig.proxy.poll_timeout().unwrap();
    assert!(next > rig.now + Duration::from_secs(11 * 3600), "{next:?}");
}

/// A graceful shutdown restores every call up after the restart: draining stores the
/// calls still waiting for the interval at once, and calls answered while draining
/// as they are answered.
#[test]
fn draining_stores_the_waiting_calls_at_once() {
    use siplb_proxy::DialogChange;
    let mut rig = Rig::new(
        &[(1, "sip:127.0.0.11:5060", "vm=5")],
        "[dialog]\npersist_interval = \"10s\"",
    );
    rig.answer("waiting");
    rig.feed(CALLER, &invite("VM_1", "ringing"));
    let out = rig.sent();
    let ringing = out
        .iter()
        .rfind(|(to, _)| *to == addr(DST1))
        .unwrap()
        .1
        .clone();
    assert!(rig.dialog_change().is_none());
    rig.proxy.set_draining(true);
    assert!(matches!(
        rig.dialog_change(),
        Some(DialogChange::Upsert(c)) if c.call_id == "waiting"
    ));
    rig.feed_bytes(DST1, reply(&ringing, 200, "OK", "b-ringing"));
    assert!(matches!(
        rig.dialog_change(),
        Some(DialogChange::Upsert(c)) if c.call_id == "ringing"
    ));
}

/// The same call restored twice (a cluster's store read again, say) is one call with
/// one unit of load, under the later record's dialog timeout, which the sweep honours
/// even when it is earlier than the first one's.
#[test]
fn a_call_restored_again_replaces_itself_and_keeps_the_later_timeout() {
    use siplb_proxy::{Peer, PersistedCall, Transport};
    let peer = |a: &str| Peer {
        transport: Transport::Udp,
        addr: addr(a),
    };
    let stored = |expires_in| PersistedCall {
        call_id: "r1".into(),
        caller_tag: "a-r1".into(),
        callee_tag: Some("b-r1".into()),
        destination_id: 1,
        resources: "vm".into(),
        caller: peer(CALLER),
        callee: peer(DST1),
        age: Duration::from_secs(5),
        expires_in,
    };
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=5")], "");
    let now = rig.now;
    rig.proxy
        .restore_call(now, stored(Duration::from_secs(60)))
        .unwrap();
    rig.proxy
        .restore_call(now, stored(Duration::from_secs(10)))
        .unwrap();
    assert_eq!((rig.load(1), rig.proxy.calls()), (1, 1));
    rig.advance(Duration::from_secs(9));
    assert_eq!(rig.load(1), 1);
    rig.advance(Duration::from_secs(2));
    assert_eq!(
        (rig.load(1), rig.proxy.calls()),
        (0, 0),
        "ended at 10 s, not 60"
    );
    // siplb's BYEs went to both sides, with the dialog's Call-ID and tags although a
    // restored call keeps neither side's From or To.
    let out = rig.sent();
    assert_eq!(out.len(), 2);
    for (to, bye, from_tag, to_tag) in [
        (DST1, &out[0].1, "a-r1", "b-r1"),
        (CALLER, &out[1].1, "b-r1", "a-r1"),
    ] {
        assert_eq!(out.iter().filter(|(a, _)| *a == addr(to)).count(), 1);
        assert_eq!(bye.method().unwrap().as_str(), "BYE");
        assert_eq!(bye.call_id(), Some("r1"));
        assert_eq!(
            (bye.from_tag(), bye.to_tag()),
            (Some(from_tag), Some(to_tag))
        );
    }
}
