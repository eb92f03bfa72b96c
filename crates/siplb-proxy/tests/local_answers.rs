//! What siplb answers itself.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod rig;

use rig::*;

#[test]
fn local_answers() {
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=5")], "");
    // Retransmitted INVITE: absorbed, the 100 Trying is sent again, nothing forwarded.
    rig.feed(CALLER, &invite("VM_1", "c7"));
    rig.sent();
    rig.feed(CALLER, &invite("VM_1", "c7"));
    let out = rig.sent();
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0].1), 100);
    assert_eq!(rig.load(1), 1);

    rig.feed(
        CALLER,
        &invite("VM_1", "c8").replace("Max-Forwards: 70", "Max-Forwards: 0"),
    );
    assert_eq!(status(&rig.sent()[0].1), 483);

    rig.feed(CALLER, &invite("nobody", "c9"));
    let out = rig.sent();
    assert_eq!(status(&out[0].1), 404);
    assert_eq!(out[0].1.reason(), Some(&b"Destination not found"[..]));

    let options = format!(
        "OPTIONS sip:127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-o1\nMax-Forwards: 70\nFrom: <sip:ping@127.0.0.100>;tag=p\nTo: <sip:127.0.0.1>\nCall-ID: o1\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n"
    );
    rig.feed(CALLER, &options);
    assert_eq!(status(&rig.sent()[0].1), 200);
    rig.feed(
        CALLER,
        &options.replace("OPTIONS", "MESSAGE").replace("-o1", "-m1"),
    );
    let out = rig.sent();
    assert_eq!(status(&out[0].1), 405);
    assert!(out[0].1.header_by_name("Allow").is_some());

    // Malformed: a 400 when it can be routed, silence when not.
    rig.feed(
        CALLER,
        &invite("VM_1", "c10").replace("CSeq: 1 INVITE", "CSeq: 1 BYE"),
    );
    assert_eq!(status(&rig.sent()[0].1), 400);
    rig.feed(CALLER, "garbage\n\n");
    assert!(rig.sent().is_empty());
}

/// A request that came over TCP may be larger than one datagram can carry, and its next
/// hop reached over UDP: sent, it would fail in the kernel at every retransmission until
/// Timer B, and the destination would be blamed and disabled for a caller's message.
/// siplb answers 513 at once instead, new call or in a dialog; one that fits a datagram
/// goes over UDP as ever.
#[test]
fn a_request_too_large_for_a_datagram_to_a_udp_hop_is_answered_513() {
    use siplb_proxy::{Incoming, Peer, Transport};
    let mut rig = Rig::new(
        &[(1, "sip:127.0.0.11:5060", "vm=5")],
        "max_message_size = 200000",
    );
    let over_tcp = |rig: &mut Rig, text: &str, body_len: usize| {
        let body = "a".repeat(body_len);
        let text = text
            .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
            .replace("\n", "\r\n")
            .replace(
                "Content-Length: 0\r\n\r\n",
                &format!("Content-Type: text/plain\r\nContent-Length: {body_len}\r\n\r\n{body}"),
            );
        let peer = Peer {
            transport: Transport::Tcp,
            addr: addr(CALLER),
        };
        let now = rig.now;
        rig.proxy.handle(
            now,
            Incoming {
                peer,
                data: text.into(),
            },
        );
    };
    let codes = |out: &[(std::net::SocketAddr, siplb_sip::Message)]| -> Vec<(String, u16)> {
        out.iter()
            .map(|(to, m)| (to.to_string(), m.status().unwrap_or(0)))
            .collect()
    };

    over_tcp(&mut rig, &invite("VM_1", "big"), 70_000);
    let out = rig.sent();
    assert_eq!(codes(&out), [(CALLER.to_owned(), 513)]);
    assert_eq!(rig.load(1), 0, "no load kept");
    assert!(
        rig.balancer.destination(1).unwrap().enabled,
        "nobody blamed"
    );

    // In a dialog: a MESSAGE with a large body.
    rig.answer("c1");
    let message = format!(
        "MESSAGE sip:bob@127.0.0.11:5060 SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-m1\nRoute: <sip:127.0.0.1:5060;lr>\nMax-Forwards: 70\nFrom: <sip:alice@127.0.0.100>;tag=a-c1\nTo: <sip:VM_1@127.0.0.1>;tag=b-c1\nCall-ID: c1\nCSeq: 2 MESSAGE\nContent-Length: 0\n\n"
    );
    over_tcp(&mut rig, &message, 70_000);
    assert_eq!(codes(&rig.sent()), [(CALLER.to_owned(), 513)]);
    assert_eq!(rig.load(1), 1, "the call stays up");

    // What fits one datagram is relayed over UDP.
    over_tcp(&mut rig, &message.replace("-m1", "-m2"), 60_000);
    let out = rig.sent();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, addr(DST1));
    assert!(out[0].1.as_bytes().len() > 60_000);
}
