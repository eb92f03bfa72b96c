#![no_main]
//! One datagram: parse, read every view, apply the proxy edits, and check that what
//! parsed serialises to the bytes it came from and that edits re-parse.

use libfuzzer_sys::fuzz_target;
use siplb_sip::{Datagram, Limits, Message, build_response, parse_datagram};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let msg = match parse_datagram(bytes::Bytes::copy_from_slice(data), &limits) {
        Ok(Datagram::Message(m)) => m,
        Ok(Datagram::KeepAlive) => return,
        Err(e) => {
            if let Some(m) = e.message() {
                if e.reply_status().is_some() {
                    let _ = build_response(m, 400, "Bad Request", Some("t"), &[]);
                }
            }
            return;
        }
    };
    // Lossless: the message is a prefix of the datagram, and parses to itself.
    assert!(data.ends_with(&[]) && contains(data, msg.as_bytes()));
    let again = Message::parse(msg.to_bytes()).expect("a parsed message re-parses");
    assert_eq!(again.as_bytes(), msg.as_bytes());
    assert_eq!(again.headers().count(), msg.headers().count());

    let _ = (msg.vias().count(), msg.routes().count(), msg.record_routes().count());
    let _ = (msg.contacts().count(), msg.cseq(), msg.from_tag(), msg.to_tag());
    let _ = (msg.request_uri(), msg.max_forwards(), msg.content_length());

    let mut e = msg.edit();
    e.push_via("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKfuzz");
    e.push_record_route("<sip:127.0.0.1;lr>");
    let _ = e.decrement_max_forwards();
    if msg.routes().next().is_some() {
        let _ = e.pop_route();
    }
    if let Ok(out) = e.finish() {
        let edited = Message::parse(out);
        // Edits on a valid message keep it valid, unless Max-Forwards hit zero.
        if msg.max_forwards() != Some(0) {
            let edited = edited.expect("an edited message re-parses");
            assert_eq!(edited.top_via().ok().and_then(|v| v.branch()), Some("z9hG4bKfuzz"));
            assert_eq!(edited.body(), msg.body());
        }
    }
    let _ = build_response(&msg, 100, "Trying", None, &[]);
});

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}
