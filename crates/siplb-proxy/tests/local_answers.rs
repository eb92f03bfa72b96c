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
