//! RFC 4475 torture messages, read from the shared test data that sits beside the
//! checkout (`../shared/testdata/rfc4475`).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use siplb_sip::{CSeq, ErrorKind, HeaderName, Host, Message, ParseError};

fn corpus_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SIPLB_RFC4475_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/rfc4475")
}

fn read(name: &str) -> Vec<u8> {
    let path = corpus_dir().join(format!("{name}.dat"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn parse(name: &str) -> Result<Message, ParseError> {
    Message::parse(read(name))
}

fn ok(name: &str) -> Message {
    parse(name).unwrap_or_else(|e| panic!("{name} must parse: {e}"))
}

fn branches(m: &Message) -> Vec<String> {
    m.vias()
        .map(|v| v.unwrap().branch().unwrap_or("").to_owned())
        .collect()
}

const VALID: [&str; 13] = [
    "wsinv",
    "intmeth",
    "esc01",
    "escnull",
    "esc02",
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
    "unreason",
    "noreason",
];

#[test]
fn all_fifty_messages_are_present() {
    let n = std::fs::read_dir(corpus_dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "dat"))
        })
        .count();
    assert_eq!(n, 50);
}

#[test]
fn valid_messages_round_trip_byte_exactly() {
    for name in VALID {
        let raw = read(name);
        let m = ok(name);
        if name == "dblreq" {
            // One datagram, two requests: the first, per Content-Length, is the message.
            assert!(raw.starts_with(m.as_bytes()));
            assert!(raw[m.as_bytes().len()..].starts_with(b"\r\nINVITE sip:"));
            assert_eq!(m.method().unwrap().as_str(), "REGISTER");
        } else {
            assert_eq!(m.as_bytes(), &raw[..], "{name} must round-trip");
        }
        // Re-parsing the serialised form gives the same view.
        let again = Message::parse(m.to_bytes()).unwrap();
        assert_eq!(again.as_bytes(), m.as_bytes());
        assert_eq!(again.headers().count(), m.headers().count());
    }
}

#[test]
fn wsinv_whitespace_folding_and_compact_forms() {
    let m = ok("wsinv");
    assert_eq!(
        m.request_uri().unwrap().host,
        Host::Domain("chair-dnrc.example.com")
    );
    assert_eq!(branches(&m), ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]);
    let vias: Vec<_> = m.vias().map(|v| v.unwrap()).collect();
    assert_eq!(vias[1].transport, "TCP");
    assert_eq!(vias[1].host, Host::Domain("spindle.example.com"));
    assert_eq!(vias[2].host, Host::V4("192.168.255.111".parse().unwrap()));
    assert_eq!(m.from_tag(), Some("98asjd8"));
    assert_eq!(m.to_tag(), Some("1918181833n"));
    assert_eq!(m.call_id(), Some("wsinv.ndaksdj@192.0.2.1"));
    let cseq = m.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method.as_str()), (9, "INVITE"));
    assert_eq!(m.max_forwards(), Some(68));
    assert_eq!(m.content_length(), Some(150));
    assert_eq!(m.body().len(), 150);
    let route = m.routes().next().unwrap().unwrap();
    assert!(route.uri().unwrap().is_loose_router());
    let contact = m.contacts().next().unwrap().unwrap();
    assert_eq!(contact.params.get("q"), Some(Some("0.33")));
    assert_eq!(m.header(HeaderName::Subject), Some(&b""[..]));
    assert_eq!(
        m.header_by_name("newfangledheader"),
        Some(&b"newfangled value\r\n continued newfangled value"[..])
    );
}

#[test]
fn unusual_tokens_escapes_and_long_values() {
    let m = ok("intmeth");
    assert_eq!(
        m.method().unwrap().as_str(),
        "!interesting-Method0123456789_*+`.%indeed'~"
    );
    assert_eq!(branches(&m), ["z9hG4bK-.!%66*_+`'~"]);
    assert_eq!(m.from_tag(), Some("_token~1'+`*%!-."));
    assert_eq!(m.to_tag(), None);
    assert_eq!(
        m.request_uri().unwrap().user,
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );

    let m = ok("esc02");
    assert_eq!(m.method().unwrap().as_str(), "RE%47IST%45R");
    assert_eq!(
        m.contacts().count(),
        2,
        "C%6Fntact is an unknown header, not Contact"
    );
    assert_eq!(
        m.header_by_name("C%6Fntact"),
        Some(&b"<sip:alias2@host2.example.com>"[..])
    );

    let m = ok("escnull");
    assert_eq!(m.to().unwrap().uri().unwrap().user, Some("null-%00-null"));
    assert_eq!(m.content_length(), Some(0));

    let m = ok("esc01");
    assert_eq!(
        m.from().unwrap().uri().unwrap().user,
        Some("I%20have%20spaces")
    );
    assert_eq!(m.call_id(), Some("esc01.239409asdfakjkn23onasd0-3234"));

    let m = ok("longreq");
    let hosts: Vec<_> = m.vias().map(|v| v.unwrap().host_text.to_owned()).collect();
    assert_eq!(hosts.len(), 34);
    assert_eq!(hosts[0], "sip33.example.com");
    assert_eq!(hosts[33], "host.example.com");
    let last = m.vias().last().unwrap().unwrap();
    assert_eq!(last.received(), Some("192.0.2.5"));
    assert!(last.branch().unwrap().starts_with("verylong"));
    assert_eq!(m.to().unwrap().uri().unwrap().port, Some(6000));

    let m = ok("lwsdisp");
    assert_eq!(m.from().unwrap().display_name, Some("caller"));
    assert_eq!(m.from_tag(), Some("323"));

    let m = ok("semiuri");
    assert_eq!(
        m.request_uri().unwrap().user,
        Some("user;par=u%40example.net")
    );
    assert_eq!(m.request_uri().unwrap().host, Host::Domain("example.com"));

    let m = ok("transports");
    let transports: Vec<_> = m.vias().map(|v| v.unwrap().transport.to_owned()).collect();
    assert_eq!(transports, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
    assert_eq!(m.call_id(), Some("transports.kijh4akdnaqjkwendsasfdj"));

    let m = ok("mpart01");
    assert_eq!(m.top_via().unwrap().rport(), Some(None));
    assert_eq!(m.body().len(), 553);

    let m = ok("unreason");
    assert_eq!(m.status(), Some(200));
    assert!(
        std::str::from_utf8(m.reason().unwrap())
            .unwrap()
            .starts_with("= 2**3 * 5**2 ")
    );
    assert_eq!(m.to_tag(), Some("2229"));

    let m = ok("noreason");
    assert_eq!(m.status(), Some(100));
    assert_eq!(m.reason(), Some(&b""[..]));
    assert_eq!(branches(&m), ["z9hG4bK2398ndaoe"]);
}

/// Section 3.1.2: each invalid message, the error it gets, and the reply it is worth.
#[test]
fn invalid_messages_are_rejected_with_the_right_answer() {
    use ErrorKind::*;
    let cases: [(&str, ErrorKind, Option<u16>); 18] = [
        // The only Via is unusable, so there is nowhere to send a 400.
        ("badinv01", Malformed(HeaderName::Via), None),
        ("clerr", BodyTruncated, Some(400)),
        ("ncl", Malformed(HeaderName::ContentLength), Some(400)),
        ("scalar02", Malformed(HeaderName::CSeq), Some(400)),
        ("scalarlg", Malformed(HeaderName::CSeq), None),
        ("quotbal", Malformed(HeaderName::To), Some(400)),
        ("ltgtruri", RequestUri, Some(400)),
        ("lwsruri", StartLine, Some(400)),
        ("lwsstart", StartLine, Some(400)),
        ("trws", StartLine, Some(400)),
        ("escruri", RequestUri, Some(400)),
        ("badaspec", Malformed(HeaderName::To), Some(400)),
        ("baddn", Malformed(HeaderName::From), Some(400)),
        ("badvers", Version, Some(505)),
        ("mismatch01", CSeqMethod, Some(400)),
        ("mismatch02", CSeqMethod, Some(400)),
        ("bigcode", StatusCode, None),
        ("insuf", Missing(HeaderName::CallId), Some(400)),
    ];
    for (name, kind, reply) in cases {
        let err = parse(name).expect_err(name);
        assert_eq!(err.kind(), kind, "{name}");
        assert_eq!(err.reply_status().map(|r| r.0), reply, "{name}");
    }
}

#[test]
fn invalid_but_relayable_messages() {
    // A proxy has no business with Date or a REGISTER Contact: relay, but the typed
    // view still reports the fault.
    let m = ok("baddate");
    assert_eq!(
        m.header_by_name("date"),
        Some(&b"Fri, 01 Jan 2010 16:00:00 EST"[..])
    );
    let m = ok("regbadct");
    assert!(m.contacts().next().unwrap().is_err());
}

#[test]
fn application_layer_messages() {
    assert_eq!(ok("zeromf").max_forwards(), Some(0));
    let err = parse("mcl01").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Duplicate(HeaderName::ContentLength));
    assert_eq!(err.reply_status(), Some((400, "Bad Request")));
    assert_eq!(
        parse("multi01").unwrap_err().kind(),
        ErrorKind::Duplicate(HeaderName::CSeq)
    );
    let m = ok("inv2543");
    assert!(!m.top_via().unwrap().has_rfc3261_branch());
    assert_eq!(m.max_forwards(), None);
    assert_eq!(m.content_length(), None);
    assert!(!m.body().is_empty());
    for scheme_test in ["unkscm", "novelsc"] {
        let m = ok(scheme_test);
        assert!(m.request_uri().is_none());
        assert!(m.request_uri_text().is_some());
    }
    let m = ok("bcast");
    assert_eq!(
        m.vias().nth(1).unwrap().unwrap().host,
        Host::V4("255.255.255.255".parse().unwrap())
    );
}

#[test]
fn every_message_parses_or_fails_without_panic() {
    let mut parsed = 0;
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "dat") {
            continue;
        }
        let raw = std::fs::read(&path).unwrap();
        if let Ok(m) = Message::parse(raw.clone()) {
            parsed += 1;
            // Views never panic either.
            let _ = (m.vias().count(), m.routes().count(), m.contacts().count());
            // The top hop kept from validation is the one the hops parse to, and what
            // transaction keys read of it (`top_via_id`) is what the whole hop says.
            assert_eq!(Some(m.top_via()), m.vias().next(), "{}", path.display());
            let whole = m.top_via().map(|v| siplb_sip::ViaId::from(&v));
            assert_eq!(m.top_via_id(), whole, "{}", path.display());
            // So are the tags, the CSeq and the hop count.
            let fresh_cseq = m
                .header(HeaderName::CSeq)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(CSeq::parse);
            assert_eq!(m.cseq(), fresh_cseq, "{}", path.display());
            assert_eq!(
                m.from_tag(),
                m.from().and_then(|a| a.tag()),
                "{}",
                path.display()
            );
            assert_eq!(
                m.to_tag(),
                m.to().and_then(|a| a.tag()),
                "{}",
                path.display()
            );
            assert_eq!(m.via_count(), m.vias().count(), "{}", path.display());
            let _ = (
                m.from(),
                m.to(),
                m.cseq(),
                m.request_uri(),
                m.max_forwards(),
            );
            assert!(raw.starts_with(m.as_bytes()));
        }
        // A stream delivers the same verdict on messages that carry Content-Length.
        let mut dec = siplb_sip::StreamDecoder::new(Default::default());
        dec.extend(&raw);
        let _ = dec.decode();
    }
    assert!(parsed >= 13 + 15, "only {parsed} parsed");
}
