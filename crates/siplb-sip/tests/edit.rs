//! Proxy edits leave every byte they do not touch as received.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use siplb_sip::{
    EditError, HeaderName, Limits, Message, build_response, build_response_with_top_via,
};

const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa ,SIP/2.0/TCP 192.0.2.9;branch=z9hG4bKb\r\n\
Via: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKc\r\n\
Route: <sip:lb.example.com;lr>, <sip:next.example.com;lr>\r\n\
Route: <sip:last.example.com;lr>\r\n\
Max-Forwards: 70\r\n\
From: Alice <sip:alice@example.com>;tag=a1\r\n\
t: <sip:bob@example.com>\r\n\
Call-ID: c1@example.com\r\n\
CSeq: 1 INVITE\r\n\
Content-Type: application/sdp\r\n\
l: 4\r\n\
\r\n\
v=0\n";

fn invite() -> Message {
    Message::parse(INVITE.as_bytes().to_vec()).unwrap()
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap()
}

#[test]
fn typical_forwarding_edits() {
    let m = invite();
    let mut e = m.edit();
    e.push_via("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKlb1");
    e.push_record_route("<sip:10.0.0.1;lr>");
    assert_eq!(e.decrement_max_forwards(), Ok(69));
    e.pop_route().unwrap();
    let out = e.finish().unwrap();
    let expected = INVITE
        .replace(
            "INVITE sip:bob@example.com SIP/2.0\r\n",
            "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKlb1\r\nRecord-Route: <sip:10.0.0.1;lr>\r\n",
        )
        .replace("Route: <sip:lb.example.com;lr>, <sip:next", "Route: <sip:next")
        .replace("Max-Forwards: 70", "Max-Forwards: 69");
    assert_eq!(text(&out), expected);
    let again = Message::parse(out).unwrap();
    assert_eq!(again.top_via().unwrap().branch(), Some("z9hG4bKlb1"));
    assert_eq!(again.vias().count(), 4);
}

#[test]
fn removing_the_top_via_hop_keeps_the_rest_of_its_line() {
    let m = invite();
    let mut e = m.edit();
    e.remove_top_via().unwrap();
    let out = e.finish().unwrap();
    assert_eq!(
        text(&out),
        INVITE.replace("v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa ,", "v: ")
    );
    // Then the line with a single hop goes as a whole.
    let m = Message::parse(out).unwrap();
    let mut e = m.edit();
    e.remove_top_via().unwrap();
    let out = Message::parse(e.finish().unwrap()).unwrap();
    let b: Vec<_> = out
        .vias()
        .map(|v| v.unwrap().branch().unwrap().to_owned())
        .collect();
    assert_eq!(b, ["z9hG4bKc"]);
    assert!(!text(out.as_bytes()).contains("v: "));
}

#[test]
fn pop_route_removes_whole_line_when_single() {
    let m = invite();
    let mut e = m.edit();
    e.pop_route().unwrap();
    let m = e.finish_message(&Limits::default()).unwrap();
    let mut e = m.edit();
    e.pop_route().unwrap();
    let m = e.finish_message(&Limits::default()).unwrap();
    let routes: Vec<_> = m.routes().map(|r| r.unwrap().uri_text.to_owned()).collect();
    assert_eq!(routes, ["sip:last.example.com;lr"]);
    let mut e = m.edit();
    e.pop_route().unwrap();
    let m = e.finish_message(&Limits::default()).unwrap();
    assert_eq!(m.routes().count(), 0);
    let mut e = m.edit();
    assert_eq!(
        e.pop_route().err(),
        Some(EditError::NothingToRemove(HeaderName::Route))
    );
}

#[test]
fn pop_routes_removes_several_at_once() {
    let routes = |m: &Message| -> Vec<String> {
        m.routes().map(|r| r.unwrap().uri_text.to_owned()).collect()
    };
    let original = invite();
    // Both entries of the first line: the line goes.
    let mut e = original.edit();
    e.pop_routes(2).unwrap();
    let m = e.finish_message(&Limits::default()).unwrap();
    assert_eq!(routes(&m), ["sip:last.example.com;lr"]);
    assert!(!text(m.as_bytes()).contains("lb.example.com"));
    // Across lines.
    let mut e = original.edit();
    e.pop_routes(3).unwrap();
    let m = e.finish_message(&Limits::default()).unwrap();
    assert_eq!(m.routes().count(), 0);
    // One: only the first element of the line.
    let mut e = original.edit();
    e.pop_routes(1).unwrap();
    let m = e.finish_message(&Limits::default()).unwrap();
    assert_eq!(
        routes(&m),
        ["sip:next.example.com;lr", "sip:last.example.com;lr"]
    );
    // Popping one twice would remove the same entry twice.
    let m = invite();
    let mut e = m.edit();
    e.pop_route().unwrap();
    e.pop_route().unwrap();
    assert_eq!(e.finish().err(), Some(EditError::Overlap));
    assert_eq!(
        original.edit().pop_routes(4).err(),
        Some(EditError::NothingToRemove(HeaderName::Route))
    );
}

#[test]
fn request_uri_body_and_max_forwards() {
    let m = invite();
    let mut e = m.edit();
    e.set_request_uri("sip:bob@192.0.2.50:5070").unwrap();
    e.set_body(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n");
    let m2 = e.finish_message(&Limits::default()).unwrap();
    assert_eq!(m2.request_uri_text(), Some("sip:bob@192.0.2.50:5070"));
    assert_eq!(m2.content_length(), Some(31));
    assert_eq!(m2.body(), b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n");
    // The compact `l:` stays compact.
    assert!(text(m2.as_bytes()).contains("\r\nl: 31\r\n"));

    let zero = INVITE.replace("Max-Forwards: 70", "Max-Forwards: 0");
    let m = Message::parse(zero.into_bytes()).unwrap();
    assert_eq!(
        m.edit().decrement_max_forwards(),
        Err(EditError::TooManyHops)
    );

    let none = INVITE.replace("Max-Forwards: 70\r\n", "");
    let m = Message::parse(none.into_bytes()).unwrap();
    let mut e = m.edit();
    assert_eq!(e.decrement_max_forwards(), Ok(70));
    let m = e.finish_message(&Limits::default()).unwrap();
    assert_eq!(m.max_forwards(), Some(70));
}

#[test]
fn body_without_content_length_gets_one() {
    let raw = "MESSAGE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\n\r\nhi";
    let m = Message::parse(raw.as_bytes().to_vec()).unwrap();
    let mut e = m.edit();
    e.set_body(b"hello");
    let out = e.finish().unwrap();
    assert!(text(&out).ends_with("CSeq: 1 MESSAGE\r\nContent-Length: 5\r\n\r\nhello"));
}

#[test]
fn via_received_and_rport() {
    let raw = INVITE.replace(
        "192.0.2.1:5060;branch=z9hG4bKa",
        "192.0.2.1:5060;rport;branch=z9hG4bKa",
    );
    let m = Message::parse(raw.into_bytes()).unwrap();
    let mut e = m.edit();
    e.set_via_received("198.51.100.7".parse().unwrap(), 40000)
        .unwrap();
    let m = e.finish_message(&Limits::default()).unwrap();
    let v = m.top_via().unwrap();
    assert_eq!(v.received(), Some("198.51.100.7"));
    assert_eq!(v.rport(), Some(Some(40000)));
    assert_eq!(v.branch(), Some("z9hG4bKa"));
    assert_eq!(m.vias().count(), 3);

    // Same address and no rport: nothing to record.
    let m = invite();
    let mut e = m.edit();
    e.set_via_received("192.0.2.1".parse().unwrap(), 5060)
        .unwrap();
    assert_eq!(text(&e.finish().unwrap()), INVITE);
}

#[test]
fn overlapping_edits_are_refused() {
    let m = invite();
    let mut e = m.edit();
    e.remove_headers(HeaderName::MaxForwards);
    e.decrement_max_forwards().unwrap();
    assert_eq!(e.finish(), Err(EditError::Overlap));
}

#[test]
fn generated_response_copies_routing_fields() {
    let m = invite();
    let r = build_response(&m, 100, "Trying", None, &[]);
    let r = Message::parse(r).unwrap();
    assert_eq!(r.status(), Some(100));
    assert_eq!(r.vias().count(), 3);
    assert_eq!(r.call_id(), Some("c1@example.com"));
    assert_eq!(r.to_tag(), None);

    let r = build_response(
        &m,
        500,
        "Service full",
        Some("lb7"),
        &[("Retry-After", "5")],
    );
    let r = Message::parse(r).unwrap();
    assert_eq!(r.reason(), Some(&b"Service full"[..]));
    assert_eq!(r.to_tag(), Some("lb7"));
    assert_eq!(r.from_tag(), Some("a1"));
    assert_eq!(r.header_by_name("retry-after"), Some(&b"5"[..]));
    assert_eq!(r.cseq().unwrap().seq, 1);
}

#[test]
fn a_via_hop_is_replaced_alone_in_its_field() {
    let m = invite();
    assert_eq!(m.via_hop(1), Some("SIP/2.0/TCP 192.0.2.9;branch=z9hG4bKb"));
    assert_eq!(m.via_hop(3), None);
    // A response on its way back: siplb's hop off, the next one (the sender's) edited,
    // in the same field.
    let mut e = m.edit();
    e.remove_top_via().unwrap();
    e.replace_via(1, "SIP/2.0/TCP 192.0.2.9;branch=z9hG4bKb;oc=20")
        .unwrap();
    let out = e.finish().unwrap();
    let expected = INVITE.replace(
        "v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa ,SIP/2.0/TCP 192.0.2.9;branch=z9hG4bKb",
        "v: SIP/2.0/TCP 192.0.2.9;branch=z9hG4bKb;oc=20",
    );
    assert_eq!(text(&out), expected);
    let mut e = m.edit();
    assert_eq!(e.replace_via(3, "x").err(), Some(EditError::NoSuchVia(3)));
}

#[test]
fn a_generated_response_may_carry_a_new_top_via_hop() {
    let m = invite();
    let top = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa;oc=0";
    let r = build_response_with_top_via(&m, 100, "Trying", None, &[], Some(top));
    let r = Message::parse(r).unwrap();
    let hops: Vec<_> = (0..3).map(|n| r.via_hop(n).unwrap().to_owned()).collect();
    assert_eq!(
        hops,
        [
            top,
            "SIP/2.0/TCP 192.0.2.9;branch=z9hG4bKb",
            "SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKc"
        ]
    );
    assert_eq!(
        build_response_with_top_via(&m, 404, "Not Found", Some("t"), &[], None),
        build_response(&m, 404, "Not Found", Some("t"), &[])
    );
}
