//! Operator controls beyond the reference (SPEC section 8), seen from the SIP side.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod rig;

use rig::*;
use siplb_proxy::{ChangeSource, CoreEvent, NewStatus};

/// Sends a new call and returns the address it was forwarded to, with the request.
fn route(rig: &mut Rig, call: &str) -> (std::net::SocketAddr, siplb_sip::Message) {
    rig.feed(CALLER, &invite("VM_1", call));
    rig.sent()
        .into_iter()
        .find(|(_, m)| m.method().is_some_and(|x| x.as_str() == "INVITE"))
        .unwrap()
}

fn drained(rig: &mut Rig) -> Vec<u32> {
    let mut ids = Vec::new();
    while let Some(e) = rig.proxy.poll_event() {
        if let CoreEvent::Status(c) = e
            && c.status == NewStatus::Drained
        {
            assert_eq!(c.source, ChangeSource::Operator);
            ids.push(c.id);
        }
    }
    ids
}

/// Destination 1 (vm=10, chosen first) and destination 2 (vm=5), both in group 1.
fn two_destinations() -> Rig {
    Rig::new(
        &[
            (1, "sip:127.0.0.11:5060", "vm=10"),
            (2, "sip:127.0.0.12:5060", "vm=5"),
        ],
        "",
    )
}

#[test]
fn a_drained_destination_keeps_its_call_gets_no_new_one_and_is_reported_when_the_call_ends() {
    let mut rig = two_destinations();
    let (to, fwd) = route(&mut rig, "d1");
    assert_eq!(to, addr(DST1));
    rig.feed_bytes(DST1, reply(&fwd, 200, "OK", "b"));
    rig.sent();

    assert!(rig.balancer.drain(1).unwrap());
    let (to, _) = route(&mut rig, "d2");
    assert_eq!(to, addr(DST2), "the drained destination had more room");
    assert_eq!(rig.load(1), 1);
    assert!(drained(&mut rig).is_empty(), "its call is still up");

    let bye = format!(
        "BYE sip:bob@127.0.0.11:5060 SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-d1bye\nMax-Forwards: 70\nFrom: <sip:alice@127.0.0.100>;tag=a-d1\nTo: <sip:VM_1@127.0.0.1>;tag=b\nCall-ID: d1\nCSeq: 2 BYE\nContent-Length: 0\n\n"
    );
    rig.feed(CALLER, &bye);
    let out = rig.sent();
    assert_eq!(out[0].0, addr(DST1), "calls up go on where they are");
    assert_eq!(rig.load(1), 0);
    assert_eq!(drained(&mut rig), [1]);
    rig.feed_bytes(DST1, reply(&out[0].1, 200, "OK", "b"));
    rig.sent();
    assert!(drained(&mut rig).is_empty(), "reported once");
    assert_eq!(rig.proxy.stats().destinations_drained, 1);
}

#[test]
fn an_idle_destination_is_reported_drained_when_the_driver_asks_after_lb_drain() {
    let mut rig = two_destinations();
    assert!(rig.balancer.drain(2).unwrap());
    rig.proxy.report_drains();
    assert_eq!(drained(&mut rig), [2]);
    rig.proxy.report_drains();
    assert!(drained(&mut rig).is_empty(), "once per drain");
    assert_eq!(rig.proxy.stats().destinations_drained, 1);
}

#[test]
fn a_calls_per_second_cap_sends_the_excess_elsewhere_and_never_blames_the_destination() {
    let mut rig = Rig::new(&[], "");
    let mut capped = siplb_balance::DestinationRow::new(1, 1, "sip:127.0.0.11:5060", "vm=100");
    capped.attrs = Some("max_cps=2".into());
    let other = siplb_balance::DestinationRow::new(2, 1, "sip:127.0.0.12:5060", "vm=5");
    assert!(rig.balancer.reload([capped, other]).is_empty());

    let routed: Vec<_> = ["r1", "r2", "r3"]
        .iter()
        .map(|c| route(&mut rig, c).0)
        .collect();
    assert_eq!(routed, [addr(DST1), addr(DST1), addr(DST2)]);

    // With the other one out, the fourth call of the second has nowhere to go.
    rig.balancer.set_status_by_operator(2, false).unwrap();
    rig.feed(CALLER, &invite("VM_1", "r4"));
    let out = rig.sent();
    assert_eq!(
        out.iter()
            .map(|(to, m)| (*to, m.status()))
            .collect::<Vec<_>>(),
        [(addr(CALLER), Some(500))],
        "the full reply, and nothing sent to the capped destination"
    );
    assert_eq!(rig.proxy.stats().rejected_rate, 1);
    assert_eq!(rig.proxy.stats().rejected_no_capacity, 0);

    // A second later it takes calls again; it was never disabled.
    rig.advance(std::time::Duration::from_secs(1));
    assert_eq!(route(&mut rig, "r5").0, addr(DST1));
    assert!(rig.balancer.status(1).unwrap().enabled);
    assert_eq!(rig.proxy.stats().destinations_disabled, 0);
}

const OVERFLOW_ROUTE: &str = "[[route]]\nmatch = { ruri_user = \"^OV_\" }\nbalance = { group = 1, resources = \"vm\", overflow = [{ group = 2, resources = \"vm\" }] }\n";

/// Destination 1 (vm=1) alone in group 1, destination 2 (vm=5) in group 2.
fn overflow_rig() -> Rig {
    let rig = Rig::new(&[], OVERFLOW_ROUTE);
    let first = siplb_balance::DestinationRow::new(1, 1, "sip:127.0.0.11:5060", "vm=1");
    let second = siplb_balance::DestinationRow::new(2, 2, "sip:127.0.0.12:5060", "vm=5");
    assert!(rig.balancer.reload([first, second]).is_empty());
    rig
}

fn invite_to(
    rig: &mut Rig,
    user: &str,
    call: &str,
) -> Vec<(std::net::SocketAddr, siplb_sip::Message)> {
    rig.feed(CALLER, &invite(user, call));
    rig.sent()
}

#[test]
fn a_full_group_overflows_to_the_next_and_a_full_chain_gets_the_full_reply() {
    let mut rig = overflow_rig();
    let out = invite_to(&mut rig, "OV_1", "o1");
    assert_eq!(out.last().unwrap().0, addr(DST1));
    let out = invite_to(&mut rig, "OV_1", "o2");
    assert_eq!(out.last().unwrap().0, addr(DST2), "group 1 is full");
    assert_eq!(rig.proxy.stats().overflows, 1);
    assert_eq!((rig.load(1), rig.load(2)), (1, 1));
    // A route without overflow does not move.
    let out = invite_to(&mut rig, "VM_1", "o3");
    assert_eq!(
        out.iter()
            .map(|(to, m)| (*to, m.status()))
            .collect::<Vec<_>>(),
        [(addr(CALLER), Some(500))]
    );
    for call in ["o4", "o5", "o6", "o7"] {
        invite_to(&mut rig, "OV_1", call);
    }
    assert_eq!(rig.load(2), 5);
    let out = invite_to(&mut rig, "OV_1", "o8");
    assert_eq!(
        out.iter()
            .map(|(to, m)| (*to, m.status()))
            .collect::<Vec<_>>(),
        [(addr(CALLER), Some(500))],
        "every group full"
    );
    assert_eq!(rig.proxy.stats().rejected_no_capacity, 2);
}

#[test]
fn failover_that_exhausts_a_group_moves_to_the_overflow_group() {
    let mut rig = overflow_rig();
    let out = invite_to(&mut rig, "OV_1", "f1");
    let (to, fwd) = out.last().unwrap().clone();
    assert_eq!(to, addr(DST1));
    rig.feed_bytes(DST1, reply(&fwd, 503, "Service Unavailable", "x"));
    let out = rig.sent();
    let next = out
        .iter()
        .find(|(_, m)| m.method().is_some_and(|x| x.as_str() == "INVITE"))
        .unwrap();
    assert_eq!(next.0, addr(DST2));
    assert_eq!((rig.load(1), rig.load(2)), (0, 1));
    assert_eq!(rig.proxy.stats().overflows, 1);
    assert_eq!(rig.proxy.stats().failovers, 1);
    rig.feed_bytes(DST2, reply(&next.1, 200, "OK", "y"));
    let out = rig.sent();
    assert!(
        out.iter()
            .any(|(to, m)| *to == addr(CALLER) && m.status() == Some(200))
    );
    assert_eq!(rig.load(2), 1, "the call's load is where it was answered");
}

#[test]
fn overload_feedback_in_a_destinations_answer_sends_the_next_calls_elsewhere() {
    let mut rig = two_destinations();
    let (to, fwd) = route(&mut rig, "k1");
    assert_eq!(to, addr(DST1));
    let via = String::from_utf8_lossy(fwd.header(siplb_sip::HeaderName::Via).unwrap()).into_owned();
    assert!(
        via.ends_with(";oc;oc-algo=\"loss\""),
        "siplb announces support: {via}"
    );
    // Its answer asks for all calls to go elsewhere for 2 s.
    let answer = reply(&fwd, 200, "OK", "b");
    let answer = String::from_utf8_lossy(&answer).replacen(
        ";oc;oc-algo=\"loss\"",
        ";oc=100;oc-algo=\"loss\";oc-validity=2000;oc-seq=1.5",
        1,
    );
    rig.feed_bytes(DST1, bytes::Bytes::from(answer));
    let relayed = rig.sent();
    let to_caller = relayed.iter().find(|(to, _)| *to == addr(CALLER)).unwrap();
    let via = String::from_utf8_lossy(to_caller.1.header(siplb_sip::HeaderName::Via).unwrap())
        .into_owned();
    assert!(
        !via.contains("oc="),
        "siplb's own Via, with the feedback, stays with siplb"
    );
    assert_eq!(rig.balancer.destination(1).unwrap().overload, Some(100));

    assert_eq!(route(&mut rig, "k2").0, addr(DST2));
    rig.balancer.set_status_by_operator(2, false).unwrap();
    rig.feed(CALLER, &invite("VM_1", "k3"));
    let out = rig.sent();
    assert_eq!(
        out.iter()
            .map(|(to, m)| (*to, m.status()))
            .collect::<Vec<_>>(),
        [(addr(CALLER), Some(503))],
        "the only destination with room asked for no calls: 503 (RFC 7339 5.10)"
    );
    assert_eq!(rig.proxy.stats().rejected_overload, 1);
    assert!(
        rig.balancer.status(1).unwrap().enabled,
        "feedback is no failure"
    );

    rig.advance(std::time::Duration::from_secs(2));
    rig.sent(); // the retransmissions of the unanswered INVITE to destination 2
    assert_eq!(route(&mut rig, "k4").0, addr(DST1), "the validity ran out");
}

/// An INVITE whose sender takes overload feedback (RFC 7339: `oc` in its Via).
fn oc_invite(call: &str) -> String {
    invite("VM_1", call).replacen(
        &format!("branch=z9hG4bK-{call}"),
        &format!("branch=z9hG4bK-{call};oc;oc-algo=\"loss\""),
        1,
    )
}

fn top_via(m: &siplb_sip::Message) -> String {
    m.via_hop(0).unwrap().to_owned()
}

/// The core reports being busy for `share` of each of `windows` 200 ms windows.
fn busy(rig: &mut Rig, share: f64, windows: u32) {
    rig.proxy.note_busy(rig.now, std::time::Duration::ZERO);
    for _ in 0..windows {
        let window = std::time::Duration::from_millis(200);
        rig.now += window;
        rig.proxy.note_busy(rig.now, window.mul_f64(share));
    }
}

#[test]
fn an_overloaded_core_asks_callers_that_take_feedback_for_less_and_sheds_the_others() {
    // The feedback is read off the 100 Trying, sent at once here.
    let mut rig = Rig::new(
        &[
            (1, "sip:127.0.0.11:5060", "vm=500"),
            (2, "sip:127.0.0.12:5060", "vm=400"),
        ],
        "[transaction]\ntrying_after = \"0s\"\n",
    );
    rig.proxy
        .set_wall_clock(rig.now, std::time::Duration::from_secs(1_700_000_000));
    // Not overloaded: a caller that announced support hears "0, for no time".
    rig.feed(CALLER, &oc_invite("o1"));
    let out = rig.sent();
    let trying = out.iter().find(|(_, m)| m.status() == Some(100)).unwrap();
    assert!(
        top_via(&trying.1).ends_with(
            ";branch=z9hG4bK-o1;oc=0;oc-algo=\"loss\";oc-validity=0;oc-seq=1700000000.000"
        ),
        "{}",
        top_via(&trying.1)
    );
    let (_, fwd) = out.iter().find(|(to, _)| *to == addr(DST1)).unwrap();
    assert_eq!(fwd.vias().count(), 2);

    // Busy 95 % of three windows against a target of 90 %: (0.9 / 0.95)^3 of new
    // calls admitted, 15 % asked off.
    busy(&mut rig, 0.95, 3);
    assert_eq!(rig.proxy.core_load().reduction, 15);
    // The destination's answer goes back with siplb's own feedback for the caller in
    // place of the caller's announcement, and siplb's Via, with the destination's
    // feedback, stays with siplb.
    let answer = String::from_utf8_lossy(&reply(fwd, 200, "OK", "b")).replacen(
        ";oc;oc-algo=\"loss\"",
        ";oc=40;oc-algo=\"loss\";oc-seq=3.0",
        1,
    );
    rig.feed_bytes(DST1, bytes::Bytes::from(answer));
    let relayed = rig.sent();
    let (_, ok) = relayed.iter().find(|(to, _)| *to == addr(CALLER)).unwrap();
    assert_eq!(ok.vias().count(), 1);
    assert!(
        top_via(ok).ends_with(
            ";branch=z9hG4bK-o1;oc=15;oc-algo=\"loss\";oc-validity=2000;oc-seq=1700000000.600"
        ),
        "{}",
        top_via(ok)
    );
    assert_eq!(rig.balancer.destination(1).unwrap().overload, Some(40));

    // Callers that take feedback hold back themselves: none of theirs is shed. Of the
    // others' new calls, the share asked for is turned away with 503 and no
    // Retry-After, and nothing is kept for them.
    for n in 0..20 {
        rig.feed(CALLER, &oc_invite(&format!("oc{n}")));
        assert!(rig.sent().iter().any(|(to, _)| *to != addr(CALLER)));
    }
    assert_eq!(rig.proxy.stats().rejected_shed, 0);
    let calls = rig.proxy.calls();
    let mut shed = 0;
    for n in 0..200 {
        rig.feed(CALLER, &invite("VM_1", &format!("p{n}")));
        let out = rig.sent();
        if let Some((_, r)) = out.iter().find(|(_, m)| m.status() == Some(503)) {
            assert!(r.header_by_name("retry-after").is_none());
            assert!(
                !top_via(r).contains("oc="),
                "no feedback to who did not ask"
            );
            shed += 1;
        }
    }
    assert_eq!(rig.proxy.stats().rejected_shed, shed);
    assert!((10..=60).contains(&shed), "about 15 % of 200: {shed}");
    assert_eq!(rig.proxy.calls(), calls + 200 - shed as usize);

    // Idle again: the reduction returns in steps, and then ends at the callers.
    busy(&mut rig, 0.0, 3);
    assert_eq!(rig.proxy.core_load().reduction, 0);
    rig.feed(CALLER, &oc_invite("o2"));
    let out = rig.sent();
    let trying = out.iter().find(|(_, m)| m.status() == Some(100)).unwrap();
    assert!(
        top_via(&trying.1).contains(";oc=0;oc-algo=\"loss\";oc-validity=0;oc-seq=1700000001.000"),
        "{}",
        top_via(&trying.1)
    );
    rig.feed(CALLER, &invite("VM_1", "p-after"));
    assert!(rig.sent().iter().all(|(_, m)| m.status() != Some(503)));
}

#[test]
fn with_feedback_off_an_overloaded_core_neither_asks_nor_sheds() {
    let mut rig = Rig::new(
        &[(1, "sip:127.0.0.11:5060", "vm=500")],
        "[overload]\nfeedback = false\n[transaction]\ntrying_after = \"0s\"\n",
    );
    busy(&mut rig, 1.0, 10);
    assert_eq!(rig.proxy.core_load().reduction, 0);
    rig.feed(CALLER, &oc_invite("f1"));
    let out = rig.sent();
    let trying = out.iter().find(|(_, m)| m.status() == Some(100)).unwrap();
    assert!(
        top_via(&trying.1).ends_with(";oc;oc-algo=\"loss\""),
        "as it came"
    );
    for n in 0..50 {
        rig.feed(CALLER, &invite("VM_1", &format!("g{n}")));
    }
    assert!(rig.sent().iter().all(|(_, m)| m.status() != Some(503)));
}

/// The smallest INVITE siplb answers gets a reply a few dozen bytes larger (the reply
/// copies its routing fields and adds a To tag, and, for a caller that announced
/// overload control, the feedback): a bounded overhead, never a multiple of what a
/// large request sends (README, trust model).
#[test]
fn a_rejection_outgrows_the_smallest_request_by_a_bounded_few_bytes() {
    let mut rig = two_destinations();
    for (n, via) in ["", ";oc"].into_iter().enumerate() {
        let request = format!(
            "INVITE sip:nobody@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKsmall{n}{via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:n@c>\r\nCall-ID: small{n}\r\nCSeq: 1 INVITE\r\n\r\n"
        );
        rig.feed_bytes(CALLER, bytes::Bytes::from(request.clone()));
        let replies: Vec<_> = std::iter::from_fn(|| rig.proxy.poll_transmit()).collect();
        assert_eq!(replies.len(), 1, "{via}");
        let (asked, got) = (request.len(), replies[0].data.len());
        assert!(got <= asked + 100, "{via}: {got} bytes for {asked}");
    }
}
