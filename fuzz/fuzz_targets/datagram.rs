#![no_main]
//! One datagram: parse, read every view, apply the proxy edits, and check that what
//! parsed serialises to the bytes it came from and that a relay's edits re-parse:
//! siplb sends them without parsing them again.

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
    // Lossless: the message is the datagram's bytes after any leading CR/LF run
    // (up to its Content-Length), and parses to itself.
    let skip = data.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    assert!(data[skip..].starts_with(msg.as_bytes()));
    let again = Message::parse(msg.to_bytes()).expect("a parsed message re-parses");
    assert_eq!(again.as_bytes(), msg.as_bytes());
    assert_eq!(again.headers().count(), msg.headers().count());

    let _ = (msg.vias().count(), msg.routes().count(), msg.record_routes().count());
    let _ = (msg.contacts().count(), msg.cseq(), msg.from_tag(), msg.to_tag());
    let _ = (msg.request_uri(), msg.max_forwards(), msg.content_length());

    let relay_edits = || {
        let mut e = msg.edit();
        e.push_via("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKfuzz");
        e.push_record_route("<sip:127.0.0.1;lr>");
        let _ = e.decrement_max_forwards();
        if msg.routes().next().is_some() {
            let _ = e.pop_route();
        }
        e
    };
    if let Ok(out) = relay_edits().finish() {
        let grown_past_limits = out.len() > limits.max_message_size
            || msg.header_count() + 2 > limits.max_headers;
        let edited = Message::parse(out);
        // Edits on a valid message keep it valid, unless Max-Forwards hit zero or
        // the added fields took it past the limits (siplb refuses such a request
        // before editing it: see `admit` in siplb-proxy).
        if msg.max_forwards() != Some(0) && !grown_past_limits {
            let edited = edited.expect("an edited message re-parses");
            assert_eq!(edited.top_via().ok().and_then(|v| v.branch()), Some("z9hG4bKfuzz"));
            assert_eq!(edited.body(), msg.body());
        }
    }
    let _ = build_response(&msg, 100, "Trying", None, &[]);
});
