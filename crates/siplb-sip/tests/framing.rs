//! Datagram and stream framing, with the limits a peer cannot exceed.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use siplb_sip::{Datagram, ErrorKind, Frame, Limits, Message, StreamDecoder, parse_datagram};

const OPTIONS: &str = "OPTIONS sip:lb@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
From: <sip:probe@127.0.0.1>;tag=p1\r\n\
To: <sip:lb@127.0.0.1>\r\n\
Call-ID: o1\r\n\
CSeq: 1 OPTIONS\r\n\
Content-Length: 5\r\n\
\r\n\
hello";

fn msg(frame: Frame) -> Message {
    match frame {
        Frame::Message(m) => m,
        Frame::Ping => panic!("expected a message"),
    }
}

#[test]
fn datagram_body_rules() {
    let l = Limits::default();
    // Content-Length shorter than the datagram: the rest is ignored.
    let extra = format!("{OPTIONS}trailing junk");
    let Datagram::Message(m) = parse_datagram(Bytes::from(extra), &l).unwrap() else {
        panic!()
    };
    assert_eq!(m.as_bytes(), OPTIONS.as_bytes());
    // Longer: an error worth a 400.
    let short = &OPTIONS[..OPTIONS.len() - 2];
    let err = parse_datagram(Bytes::copy_from_slice(short.as_bytes()), &l).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BodyTruncated);
    assert_eq!(err.reply_status(), Some((400, "Bad Request")));
    // Absent: the body runs to the end of the datagram.
    let no_cl = OPTIONS.replace("Content-Length: 5\r\n", "");
    let Datagram::Message(m) = parse_datagram(Bytes::from(no_cl), &l).unwrap() else {
        panic!()
    };
    assert_eq!(m.body(), b"hello");
    // Keep-alives.
    assert!(matches!(
        parse_datagram(Bytes::from_static(b"\r\n\r\n"), &l),
        Ok(Datagram::KeepAlive)
    ));
    assert!(matches!(
        parse_datagram(Bytes::from_static(b"\0"), &l),
        Ok(Datagram::KeepAlive)
    ));
    // Leading CRLFs before the start line are skipped.
    let lead = format!("\r\n{OPTIONS}");
    let Datagram::Message(m) = parse_datagram(Bytes::from(lead), &l).unwrap() else {
        panic!()
    };
    assert_eq!(m.as_bytes(), OPTIONS.as_bytes());
}

#[test]
fn stream_reassembles_across_any_split() {
    let two = format!("{OPTIONS}\r\n\r\n{OPTIONS}");
    for chunk in [1, 2, 3, 7, 64, two.len()] {
        let mut dec = StreamDecoder::new(Limits::default());
        let mut frames = Vec::new();
        for piece in two.as_bytes().chunks(chunk) {
            dec.extend(piece);
            while let Some(f) = dec.decode().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 3, "chunk size {chunk}");
        assert!(matches!(frames[1], Frame::Ping));
        let a = msg(frames.remove(0));
        assert_eq!(a.as_bytes(), OPTIONS.as_bytes());
        assert_eq!(a.body(), b"hello");
        assert_eq!(dec.buffered(), 0);
    }
}

#[test]
fn stream_needs_content_length() {
    let mut dec = StreamDecoder::new(Limits::default());
    dec.extend(OPTIONS.replace("Content-Length: 5\r\n", "").as_bytes());
    let err = dec.decode().unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Missing(siplb_sip::HeaderName::ContentLength)
    );
    assert_eq!(err.reply_status().map(|r| r.0), Some(400));
}

#[test]
fn limits_bound_what_a_peer_can_make_us_hold() {
    let tight = Limits {
        max_message_size: 300,
        max_headers: 5,
        max_line_len: 60,
    };
    // A head that never ends.
    let mut dec = StreamDecoder::new(tight);
    let mut result = Ok(None);
    for _ in 0..100 {
        dec.extend(b"X-Filler: aaaaaaaaaa\r\n");
        result = dec.decode();
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(
        result.map_err(|e| e.kind()),
        Err(ErrorKind::TooLarge(300))
    ));
    // A body larger than allowed is refused before it is buffered.
    let roomy = Limits {
        max_headers: 50,
        max_line_len: 200,
        ..tight
    };
    let mut dec = StreamDecoder::new(roomy);
    dec.extend(
        OPTIONS
            .replace("Content-Length: 5", "Content-Length: 99999")
            .as_bytes(),
    );
    assert_eq!(dec.decode().unwrap_err().kind(), ErrorKind::TooLarge(300));

    let err = parse_datagram(Bytes::from(OPTIONS), &tight).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooManyHeaders(5));

    let long = OPTIONS.replace("Call-ID: o1", &format!("Call-ID: {}", "x".repeat(100)));
    assert!(parse_datagram(Bytes::from(long.clone()), &Limits::default()).is_ok());
    let narrow = Limits {
        max_line_len: 60,
        ..Limits::default()
    };
    let err = parse_datagram(Bytes::from(long), &narrow).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LineTooLong(60));

    let huge = vec![b'a'; 70_000];
    let err = parse_datagram(Bytes::from(huge), &Limits::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge(65_535));
}

/// Found by the stream fuzz target: a ping cut by a read after a run of stray CRs and
/// LFs was lost, while the same bytes in one read gave a ping.
#[test]
fn ping_split_after_a_run_of_line_ends_is_still_a_ping() {
    let data = b"\r\r\r\r\r\r\r\r\n\n\r\n\r\n\r\rOPTIONS";
    for step in 1..data.len() {
        let mut dec = StreamDecoder::new(Limits::default());
        let mut pings = 0;
        for piece in data.chunks(step) {
            dec.extend(piece);
            while let Ok(Some(f)) = dec.decode() {
                assert!(matches!(f, Frame::Ping));
                pings += 1;
            }
        }
        assert_eq!(pings, 1, "step {step}");
    }
}

/// Bare LFs are seen wherever they are in the head (start line, a field, the blank
/// line), and nowhere else (a body may hold what it likes).
#[test]
fn bare_lf_in_the_head_is_noticed() {
    let l = Limits::default();
    let parse = |text: String| match parse_datagram(Bytes::from(text), &l).unwrap() {
        Datagram::Message(m) => m,
        other => panic!("{other:?}"),
    };
    assert!(!parse(OPTIONS.to_owned()).has_bare_lf());
    let body = OPTIONS.replace("hello", "he\nlo");
    assert!(!parse(body).has_bare_lf());
    for (from, to) in [
        ("SIP/2.0\r\n", "SIP/2.0\n"),
        ("Call-ID: o1\r\n", "Call-ID: o1\n"),
        ("\r\n\r\nhello", "\r\n\nhello"),
    ] {
        let m = parse(OPTIONS.replacen(from, to, 1));
        assert!(m.has_bare_lf(), "{from:?}");
        assert_eq!(m.call_id(), Some("o1"));
    }
}

/// What validation keeps (tags, CSeq, hop count) reads as the fields do.
#[test]
fn fields_kept_from_validation_match_the_fields() {
    let text = OPTIONS
        .replace("To: <sip:lb@127.0.0.1>", "To: <sip:lb@127.0.0.1>;tag=x9")
        .replace("CSeq: 1 OPTIONS", "CSeq:  42   OPTIONS ")
        .replace(
            "From: ",
            "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK2, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK3\r\nFrom: ",
        );
    let Datagram::Message(m) = parse_datagram(Bytes::from(text), &Limits::default()).unwrap()
    else {
        panic!()
    };
    assert_eq!(m.from_tag(), Some("p1"));
    assert_eq!(m.to_tag(), Some("x9"));
    let cseq = m.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method.as_str()), (42, "OPTIONS"));
    assert_eq!(m.via_count(), 3);
    assert_eq!(m.via_count(), m.vias().count());
}
