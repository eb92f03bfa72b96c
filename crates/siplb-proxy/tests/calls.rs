//! Calls through the core: forwarding, replies, BYE from either side, CANCEL, loose routing, timeouts.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::time::Duration;

use rig::*;

#[test]
fn invite_is_forwarded_with_via_record_route_and_load() {
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=2")], "");
    rig.feed(CALLER, &invite("VM_1", "c1"));
    let out = rig.sent();
    assert_eq!(out.len(), 1, "the 100 Trying waits: {out:?}");
    let (to, fwd) = &out[0];
    assert_eq!(*to, addr(DST1));
    assert_eq!(
        fwd.request_uri_text(),
        Some("sip:VM_1@127.0.0.1:5060"),
        "the Request-URI is left alone"
    );
    let via = fwd.top_via().unwrap();
    assert_eq!(via.host_text, "127.0.0.1");
    assert!(via.has_rfc3261_branch());
    assert_eq!(fwd.vias().count(), 2);
    assert_eq!(fwd.max_forwards(), Some(69));
    assert_eq!(
        fwd.record_routes().next().unwrap().unwrap().uri_text,
        "sip:127.0.0.1:5060;lr"
    );
    assert_eq!(
        rig.load(1),
        1,
        "load is taken when the call is routed, before any reply"
    );
}

#[test]
fn the_100_trying_goes_only_to_a_caller_that_heard_nothing_within_200ms() {
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=9")], "");
    // The destination rings within 200 ms: its 180 is all the caller gets.
    rig.feed(CALLER, &invite("VM_1", "t1"));
    let fwd = rig.sent().pop().unwrap().1;
    rig.advance(Duration::from_millis(30));
    rig.feed_bytes(DST1, reply(&fwd, 180, "Ringing", "b1"));
    rig.advance(Duration::from_secs(2));
    let codes: Vec<u16> = rig.sent().iter().map(|(_, m)| status(m)).collect();
    assert_eq!(codes, [180]);

    // A slow destination: the 100 goes at 200 ms, once, with the INVITE's Via and
    // no To tag.
    rig.feed(CALLER, &invite("VM_1", "t2"));
    let fwd = rig.sent().pop().unwrap().1;
    rig.advance(Duration::from_millis(199));
    assert!(rig.sent().is_empty());
    rig.advance(Duration::from_millis(1));
    let out = rig.sent();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].0, status(&out[0].1)), (addr(CALLER), 100));
    assert!(out[0].1.to_tag().is_none());
    assert_eq!(out[0].1.call_id(), Some("t2"));
    rig.feed_bytes(DST1, reply(&fwd, 180, "Ringing", "b2"));
    let codes: Vec<u16> = rig.sent().iter().map(|(_, m)| status(m)).collect();
    assert_eq!(codes, [180]);

    // The INVITE again before 200 ms: the caller is waiting, the 100 goes now.
    rig.feed(CALLER, &invite("VM_1", "t3"));
    assert_eq!(rig.sent().len(), 1);
    rig.advance(Duration::from_millis(100));
    rig.feed(CALLER, &invite("VM_1", "t3"));
    let out = rig.sent();
    assert_eq!(out.len(), 1, "absorbed, not forwarded: {out:?}");
    assert_eq!((out[0].0, status(&out[0].1)), (addr(CALLER), 100));
    rig.advance(Duration::from_millis(200));
    assert!(rig.sent().is_empty(), "not a second time");

    // `trying_after = "0s"`: at once, ahead of the forwarded INVITE.
    let mut rig = Rig::new(
        &[(1, "sip:127.0.0.11:5060", "vm=9")],
        "[transaction]\ntrying_after = \"0s\"\n",
    );
    rig.feed(CALLER, &invite("VM_1", "t4"));
    let out = rig.sent();
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].0, status(&out[0].1)), (addr(CALLER), 100));
    assert_eq!(out[1].0, addr(DST1));
}

#[test]
fn replies_go_back_in_order_and_bye_releases_the_load() {
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=2")], "");
    rig.feed(CALLER, &invite("VM_1", "c2"));
    let fwd = rig.sent().pop().unwrap().1;
    rig.feed_bytes(DST1, reply(&fwd, 180, "Ringing", "b1"));
    rig.feed_bytes(DST1, reply(&fwd, 200, "OK", "b1"));
    let out = rig.sent();
    let codes: Vec<u16> = out.iter().map(|(_, m)| status(m)).collect();
    assert_eq!(codes, [180, 200]);
    assert!(
        out.iter()
            .all(|(to, m)| *to == addr(CALLER) && m.vias().count() == 1)
    );
    assert_eq!(rig.load(1), 1);
    // A 2xx retransmission is forwarded again.
    rig.feed_bytes(DST1, reply(&fwd, 200, "OK", "b1"));
    assert_eq!(rig.sent().len(), 1);

    // ACK and BYE from a caller that ignores Record-Route: matched by Call-ID and tags.
    let ack = format!(
        "ACK sip:bob@127.0.0.11:5060 SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-ack2\nMax-Forwards: 70\nFrom: <sip:alice@127.0.0.100>;tag=a-c2\nTo: <sip:VM_1@127.0.0.1>;tag=b1\nCall-ID: c2\nCSeq: 1 ACK\nContent-Length: 0\n\n"
    );
    rig.feed(CALLER, &ack);
    let out = rig.sent();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, addr(DST1));
    let bye = ack
        .replace("ACK sip", "BYE sip")
        .replace("1 ACK", "2 BYE")
        .replace("-ack2", "-bye2");
    rig.feed(CALLER, &bye);
    let out = rig.sent();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, addr(DST1));
    assert_eq!(rig.load(1), 0, "BYE releases the load");
    // Both sides of the BYE keep it until answered: the client to send it again, the
    // server to answer for a destination that does not.
    assert_eq!(rig.proxy.requests_held(), 2);
    rig.feed_bytes(DST1, reply(&out[0].1, 200, "OK", "b1"));
    let ok = rig.sent();
    assert_eq!((ok[0].0, status(&ok[0].1)), (addr(CALLER), 200));
    assert_eq!(
        rig.proxy.requests_held(),
        0,
        "lingering transactions keep no request"
    );
    // A retransmitted BYE gets the same final reply, not a 404 or 481.
    rig.feed(CALLER, &bye);
    let again = rig.sent();
    assert_eq!(again.len(), 1);
    assert_eq!(status(&again[0].1), 200);
    assert_eq!(rig.load(1), 0);
}

/// A reply is sent on by its transaction, not by the hops below siplb's, which go back
/// as they came even when siplb could not read them: the proxy upstream and the caller
/// own them and check them.
#[test]
fn a_reply_goes_back_with_the_hops_below_ours_as_they_came() {
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=2")], "");
    let upstream = "SIP/2.0/UDP 127.0.0.100:5060;branch=z9hG4bK-up";
    let invite = invite("VM_1", "c-hops").replacen("Via: ", &format!("Via: {upstream}\nVia: "), 1);
    rig.feed(CALLER, &invite);
    let fwd = rig.sent().pop().unwrap().1;
    assert_eq!(fwd.via_count(), 3);
    // The destination mangled the lowest hop (the caller's).
    let ringing = reply(&fwd, 180, "Ringing", "b1");
    let mangled = String::from_utf8(ringing.to_vec()).unwrap().replace(
        &format!("SIP/2.0/UDP {CALLER};branch=z9hG4bK-c-hops"),
        "SIP/2.0/UDP ;;",
    );
    rig.feed_bytes(DST1, mangled.into());
    let out = rig.sent();
    assert_eq!(out.len(), 1, "{out:?}");
    let (to, relayed) = &out[0];
    assert_eq!((*to, status(relayed)), (addr(CALLER), 180));
    assert_eq!(relayed.via_hop(0), Some(upstream));
    assert_eq!(relayed.via_hop(1), Some("SIP/2.0/UDP ;;"));
    assert_eq!(relayed.via_count(), 2);
}

#[test]
fn bye_from_the_callee_goes_to_the_caller() {
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=2")], "");
    rig.feed(CALLER, &invite("VM_1", "c3"));
    let fwd = rig.sent().pop().unwrap().1;
    rig.feed_bytes(DST1, reply(&fwd, 200, "OK", "b3"));
    rig.sent();
    let bye = "BYE sip:alice@127.0.0.100:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.11:5060;branch=z9hG4bK-cb3\nMax-Forwards: 70\nFrom: <sip:VM_1@127.0.0.1>;tag=b3\nTo: <sip:alice@127.0.0.100>;tag=a-c3\nCall-ID: c3\nCSeq: 1 BYE\nContent-Length: 0\n\n";
    rig.feed(DST1, bye);
    let out = rig.sent();
    assert_eq!(out[0].0, addr(CALLER));
    assert_eq!(rig.load(1), 0);
}

#[test]
fn loose_routing_pops_our_route_and_relays_only_within_a_known_call() {
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=2")], "");
    rig.feed(CALLER, &invite("VM_1", "lr"));
    let fwd = rig.sent().pop().unwrap().1;
    rig.feed_bytes(DST1, reply(&fwd, 200, "OK", "y"));
    rig.sent();
    // siplb's Route followed by a foreign one: the BYE still goes to the callee (and
    // only there), with siplb's own Route removed.
    let bye = format!(
        "BYE sip:bob@127.0.0.11:5060 SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-rr\nRoute: <sip:127.0.0.1:5060;lr>, <sip:192.0.2.66:5060;lr>\nMax-Forwards: 70\nFrom: <sip:alice@127.0.0.100>;tag=a-lr\nTo: <sip:bob@127.0.0.11>;tag=y\nCall-ID: lr\nCSeq: 2 BYE\nContent-Length: 0\n\n"
    );
    rig.feed(CALLER, &bye);
    let out = rig.sent();
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].0,
        addr(DST1),
        "the call's callee, whatever the Route says"
    );
    let routes: Vec<_> = out[0]
        .1
        .routes()
        .map(|r| r.unwrap().uri_text.to_owned())
        .collect();
    assert_eq!(routes, ["sip:192.0.2.66:5060;lr"]);
    assert_eq!(out[0].1.request_uri_text(), Some("sip:bob@127.0.0.11:5060"));
    assert_eq!(rig.load(1), 0);

    // No call: siplb's Route is no licence to relay to the Request-URI.
    let stranger = bye
        .replace("Call-ID: lr", "Call-ID: unknown-call")
        .replace("-rr", "-rr2");
    rig.feed(CALLER, &stranger);
    let out = rig.sent();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0, status(&out[0].1)), (addr(CALLER), 481));
}

#[test]
fn cancel_is_answered_forwarded_and_releases() {
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=5")], "");
    let inv = invite("VM_1", "c6");
    rig.feed(CALLER, &inv);
    let fwd = rig.sent().pop().unwrap().1;
    rig.feed_bytes(DST1, reply(&fwd, 180, "Ringing", "b6"));
    rig.sent();
    let cancel = cancel_of(&inv);
    rig.feed(CALLER, &cancel);
    let out = rig.sent();
    assert_eq!((out[0].0, status(&out[0].1)), (addr(CALLER), 200));
    let (to, fwd_cancel) = &out[1];
    assert_eq!(*to, addr(DST1));
    assert_eq!(fwd_cancel.method().unwrap().as_str(), "CANCEL");
    assert_eq!(
        fwd_cancel.top_via().unwrap().branch(),
        fwd.top_via().unwrap().branch(),
        "a CANCEL carries the branch of the INVITE it cancels"
    );
    rig.feed_bytes(DST1, reply(fwd_cancel, 200, "OK", "b6"));
    rig.feed_bytes(DST1, reply(&fwd, 487, "Request Terminated", "b6"));
    let out = rig.sent();
    let to_caller: Vec<_> = out.iter().filter(|(to, _)| *to == addr(CALLER)).collect();
    assert_eq!(status(&to_caller[0].1), 487);
    assert!(
        rig.balancer.destination(1).unwrap().enabled,
        "a 487 after CANCEL is no failure"
    );
    assert_eq!(rig.load(1), 0);
    // A CANCEL for nothing gets 481.
    rig.feed(CALLER, &cancel.replace("c6", "zz"));
    assert_eq!(status(&rig.sent()[0].1), 481);
}

/// RFC 3261 9.2 and 16.10: a CANCEL finds the INVITE it cancels while that INVITE's
/// transaction lasts (200, and no effect once answered), and 481 after: Timer L ended
/// it, or the call ended. (The core once kept each INVITE's key for its call until the
/// call ended, and lost it for good when Timer L came first: a long call left 150
/// bytes behind.)
#[test]
fn a_cancel_reaches_an_answered_call_only_while_its_invite_transaction_lasts() {
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=5")], "");
    let inv = invite("VM_1", "c12");
    rig.feed(CALLER, &inv);
    let fwd = rig.sent().pop().unwrap().1;
    rig.feed_bytes(DST1, reply(&fwd, 200, "OK", "b12"));
    rig.sent();
    let ack = format!(
        "ACK sip:bob@127.0.0.11:5060 SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-ack12\nMax-Forwards: 70\nFrom: <sip:alice@127.0.0.100>;tag=a-c12\nTo: <sip:VM_1@127.0.0.1>;tag=b12\nCall-ID: c12\nCSeq: 1 ACK\nContent-Length: 0\n\n"
    );
    rig.feed(CALLER, &ack);
    rig.sent();
    let cancel = cancel_of(&inv);
    rig.feed(CALLER, &cancel);
    let out = rig.sent();
    assert_eq!(out.len(), 1, "answered: nothing is cancelled downstream");
    assert_eq!(status(&out[0].1), 200);
    assert_eq!(rig.load(1), 1, "the call goes on");
    // Timer L (64*T1) ends the INVITE transaction; the call stays up.
    rig.advance(Duration::from_secs(40));
    rig.sent();
    assert_eq!(rig.load(1), 1);
    rig.feed(CALLER, &cancel.replace("z9hG4bK-c12", "z9hG4bK-c12b"));
    let out = rig.sent();
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0].1), 481, "no INVITE transaction to cancel");
    let bye = ack
        .replace("ACK sip", "BYE sip")
        .replace("1 ACK", "2 BYE")
        .replace("-ack12", "-bye12");
    rig.feed(CALLER, &bye);
    let fwd_bye = rig.sent().pop().unwrap().1;
    rig.feed_bytes(DST1, reply(&fwd_bye, 200, "OK", "b12"));
    rig.sent();
    assert_eq!((rig.load(1), rig.proxy.calls()), (0, 0));
}

#[test]
fn dialog_timeout_releases_the_load() {
    let mut rig = Rig::new(
        &[(1, "sip:127.0.0.11:5060", "vm=5")],
        "[dialog]\ntimeout = \"10s\"\n",
    );
    rig.feed(CALLER, &invite("VM_1", "c11"));
    let fwd = rig.sent().pop().unwrap().1;
    rig.feed_bytes(DST1, reply(&fwd, 200, "OK", "b11"));
    rig.sent();
    assert_eq!(rig.load(1), 1);
    rig.advance(Duration::from_secs(9));
    assert_eq!(rig.load(1), 1);
    rig.advance(Duration::from_secs(2));
    assert_eq!(rig.load(1), 0);
    assert_eq!(rig.proxy.calls(), 0);
}

#[test]
fn everything_ends_when_time_passes() {
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=50")], "");
    for i in 0..20 {
        rig.feed(CALLER, &invite("VM_1", &format!("e{i}")));
    }
    rig.sent();
    assert_eq!(rig.load(1), 20);
    // No answer at all: each INVITE times out, no destination is left, all loads return.
    rig.advance(Duration::from_secs(120));
    rig.sent();
    assert_eq!(rig.load(1), 0);
    assert_eq!(rig.proxy.calls(), 0);
    assert_eq!(rig.proxy.transactions(), 0, "every transaction is gone");
}

#[test]
fn setup_time_runs_to_the_first_reply_the_caller_sees() {
    let mut rig = Rig::new(
        &[
            (1, "sip:127.0.0.11:5060", "vm=5"),
            (2, "sip:127.0.0.12:5060", "vm=5"),
        ],
        "[failover]\nmin_enabled = 0\n",
    );
    rig.feed(CALLER, &invite("VM_1", "s1"));
    let first = rig.sent().pop().unwrap().1;
    rig.advance(Duration::from_millis(3));
    // A 503 fails over: not the caller's reply, the clock runs on.
    rig.feed_bytes(DST1, reply(&first, 503, "Busy", "x"));
    let second = rig.sent().pop().unwrap().1;
    rig.advance(Duration::from_millis(4));
    rig.feed_bytes(DST2, reply(&second, 180, "Ringing", "y"));
    rig.advance(Duration::from_millis(100));
    rig.feed_bytes(DST2, reply(&second, 200, "OK", "y"));
    let h = &rig.proxy.stats().setup;
    assert_eq!(h.count, 1);
    // 7 ms: in the 10 ms bucket and above, not in the 5 ms one.
    assert_eq!(h.buckets[..4], [0, 0, 0, 1]);
    assert_eq!(h.sum_micros, 7000);
}

#[test]
fn a_timed_out_request_does_not_hold_up_shutdown() {
    let mut rig = Rig::new(
        &[(1, "sip:127.0.0.11:5060", "vm=5")],
        "[transaction]\ninvite_timeout = \"1s\"\n",
    );
    rig.feed(CALLER, &invite("VM_1", "idle"));
    assert!(!rig.proxy.is_idle());
    rig.advance(Duration::from_millis(1500));
    // The INVITE timed out and the caller got its answer; the transaction lingers to
    // absorb late replies, but nothing is waited for any more.
    assert_eq!(rig.proxy.calls(), 0);
    assert!(rig.proxy.transactions() > 0);
    assert!(rig.proxy.is_idle());
}

/// A relay target named by host: `503` while its name has no address (and a count
/// taken goes back), then relayed to the address it resolved to, whose answer is
/// taken.
#[test]
fn a_relay_target_named_by_host_is_sent_to_its_address() {
    let mut rig = Rig::new(
        &[(1, "sip:127.0.0.11:5060", "vm=5")],
        "[[route]]\nmatch = { ruri_user = \"^R_\" }\nrelay = \"sip:relay.example.net:5080\"\n",
    );
    rig.feed(CALLER, &invite("R_1", "relay-1"));
    let out = rig.sent();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].0, status(&out[0].1)), (addr(CALLER), 503));

    let cells = rig.balancer.names();
    assert_eq!(
        cells.len(),
        1,
        "the relay's name is resolved like the table's"
    );
    assert_eq!(cells[0].name().port, 5080);
    cells[0].publish(siplb_balance::Resolution {
        addresses: vec![addr("127.0.0.50:5080")].into(),
        error: None,
        done: true,
    });
    rig.feed(CALLER, &invite("R_1", "relay-2"));
    let fwd = rig.sent().pop().unwrap();
    assert_eq!(
        (fwd.0, fwd.1.method().unwrap().as_str()),
        (addr("127.0.0.50:5080"), "INVITE")
    );
    rig.feed_bytes("127.0.0.50:5080", reply(&fwd.1, 200, "OK", "r"));
    let to_caller: Vec<_> = rig
        .sent()
        .into_iter()
        .filter(|(to, _)| *to == addr(CALLER))
        .collect();
    assert_eq!(status(&to_caller[0].1), 200);
}

/// The caller's CANCEL of an INVITE made by `invite` (same branch, CSeq number).
fn cancel_of(invite: &str) -> String {
    invite
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("1 INVITE", "1 CANCEL")
}
