//! Property tests: generated messages with every legal quirk (compact and odd-case
//! names, whitespace around colons, folded values, hops sharing a line) round-trip
//! byte for byte, each edit changes only what it names, and nothing panics.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use siplb_sip::{HeaderName, Limits, Message, StreamDecoder, parse_datagram};

#[derive(Clone, Debug)]
struct Generated {
    bytes: Vec<u8>,
    call_id: String,
    branch: String,
    routes: usize,
    max_forwards: Option<u32>,
    body: Vec<u8>,
}

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9.!%*_+`'~-]{0,11}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}(\\.[a-z]{1,6}){0,2}",
        (0u8..=255, 0u8..=255).prop_map(|(a, b)| format!("192.0.{a}.{b}")),
        Just("[2001:db8::7]".to_owned()),
    ]
}

/// A header name as a peer might spell it: compact or long, in any case.
fn spelled(long: &'static str, compact: Option<char>) -> impl Strategy<Value = String> {
    let forms: Vec<String> = std::iter::once(long.to_owned())
        .chain(compact.map(|c| c.to_string()))
        .collect();
    (proptest::sample::select(forms), any::<u64>()).prop_map(|(name, bits)| {
        name.chars()
            .enumerate()
            .map(|(i, c)| {
                if bits >> (i % 64) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    })
}

/// Whitespace before and after the colon, sometimes folding the value onto a new line.
fn colon() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(": ".to_owned()),
        Just(":".to_owned()),
        Just(" :  ".to_owned()),
        Just(":\r\n ".to_owned()),
        Just("\t: ".to_owned()),
    ]
}

fn line(name: impl Strategy<Value = String>, value: String) -> impl Strategy<Value = String> {
    (name, colon()).prop_map(move |(n, c)| format!("{n}{c}{value}\r\n"))
}

fn message() -> impl Strategy<Value = Generated> {
    (
        prop_oneof![
            Just("INVITE"),
            Just("OPTIONS"),
            Just("BYE"),
            Just("X-CUSTOM")
        ],
        token(),
        host(),
        proptest::option::of(1u16..65535),
        proptest::collection::vec((token(), host()), 1..4),
        any::<bool>(),
        proptest::collection::vec(host(), 0..4),
        proptest::option::of(0u32..=255),
        proptest::collection::vec((token(), proptest::collection::vec(token(), 1..4)), 0..4),
        proptest::collection::vec(32u8..127, 0..40),
        any::<bool>(),
        0u32..(1 << 31),
    )
        .prop_flat_map(
            |(method, user, h, port, hops, same_line, routes, mf, extra, body, tagged_to, seq)| {
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                let start = format!("{method} sip:{user}@{h}{port} SIP/2.0\r\n");
                let branch = format!("z9hG4bK{}", hops[0].0);
                let hop_text: Vec<String> = hops
                    .iter()
                    .map(|(b, host)| format!("SIP/2.0/UDP {host};branch=z9hG4bK{b}"))
                    .collect();
                let mut lines: Vec<BoxedStrategy<String>> = Vec::new();
                // Via lines keep their relative order: they move as one block.
                if same_line {
                    lines.push(line(spelled("Via", Some('v')), hop_text.join(" , ")).boxed());
                } else {
                    let block: Vec<BoxedStrategy<String>> = hop_text
                        .into_iter()
                        .map(|hop| line(spelled("Via", Some('v')), hop).boxed())
                        .collect();
                    lines.push(block.prop_map(|ls| ls.concat()).boxed());
                }
                let call_id = format!("{user}@{h}");
                lines.push(line(spelled("Call-ID", Some('i')), call_id.clone()).boxed());
                lines.push(line(spelled("CSeq", None), format!("{seq} {method}")).boxed());
                lines.push(
                    line(
                        spelled("From", Some('f')),
                        format!("\"A\" <sip:a@{h}>;tag=f{seq}"),
                    )
                    .boxed(),
                );
                let to_tag = if tagged_to { ";tag=t1" } else { "" };
                lines.push(
                    line(
                        spelled("To", Some('t')),
                        format!("<sip:{user}@{h}>{to_tag}"),
                    )
                    .boxed(),
                );
                for r in &routes {
                    lines.push(line(spelled("Route", None), format!("<sip:{r};lr>")).boxed());
                }
                if let Some(mf) = mf {
                    lines.push(line(spelled("Max-Forwards", None), mf.to_string()).boxed());
                }
                for (name, words) in extra {
                    lines.push(line(Just(format!("X-{name}")), words.join("\r\n  ")).boxed());
                }
                lines.push(
                    line(spelled("Content-Length", Some('l')), body.len().to_string()).boxed(),
                );
                let n_routes = routes.len();
                (lines, Just(start), Just(call_id), Just(branch), Just(body))
                    .prop_flat_map(|(lines, start, call_id, branch, body)| {
                        (
                            Just(lines).prop_shuffle(),
                            Just(start),
                            Just(call_id),
                            Just(branch),
                            Just(body),
                        )
                    })
                    .prop_map(move |(lines, start, call_id, branch, body)| {
                        let mut bytes = start.into_bytes();
                        for l in &lines {
                            bytes.extend_from_slice(l.as_bytes());
                        }
                        bytes.extend_from_slice(b"\r\n");
                        bytes.extend_from_slice(&body);
                        Generated {
                            bytes,
                            call_id,
                            branch,
                            routes: n_routes,
                            max_forwards: mf,
                            body,
                        }
                    })
            },
        )
}

/// Every header except those named, as (raw name, value) pairs.
fn others(m: &Message, except: &[HeaderName]) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.headers()
        .filter(|h| !except.contains(&h.name))
        .map(|h| (h.raw_name.to_vec(), h.value.to_vec()))
        .collect()
}

fn reparse(b: bytes::Bytes) -> Message {
    Message::parse(b).expect("edited message parses")
}

/// An edit a proxy makes to a message it relays.
#[derive(Clone, Debug)]
enum Edit {
    MaxForwards,
    PopRoutes(usize),
    RecordRoute(String),
    Via(String),
    /// The proxy's own hop, written from its parts (`OwnVia`): port, branch, and
    /// whether it is IPv6.
    OwnVia(u16, String, bool),
}

impl Edit {
    /// The Via hops this edit pushes.
    fn vias_pushed(&self) -> usize {
        usize::from(matches!(self, Edit::Via(_) | Edit::OwnVia(..)))
    }
}

/// The edits of one relayed request, in the order `forward.rs` and `in_dialog.rs` make
/// them, each kind at most once but the pushed fields.
fn relay_edits() -> impl Strategy<Value = Vec<Edit>> {
    let via = prop_oneof![
        1 => (host(), token()).prop_map(|(h, b)| Edit::Via(format!("SIP/2.0/UDP {h};branch=z9hG4bK{b}"))),
        2 => (any::<u16>(), token(), any::<bool>()).prop_map(|(p, b, v6)| Edit::OwnVia(p, b, v6)),
    ];
    (
        any::<bool>(),
        0usize..3,
        proptest::collection::vec(
            host().prop_map(|h| Edit::RecordRoute(format!("<sip:{h};lr>"))),
            0..3,
        ),
        proptest::collection::vec(via, 0..3),
    )
        .prop_map(|(max_forwards, pop, record_routes, vias)| {
            let mut edits = Vec::new();
            if max_forwards {
                edits.push(Edit::MaxForwards);
            }
            if pop > 0 {
                edits.push(Edit::PopRoutes(pop));
            }
            edits.extend(record_routes);
            edits.extend(vias);
            edits
        })
}

/// Applies `edits` in order; `None` when one of them is refused.
fn apply<'m>(m: &'m Message, edits: &[Edit]) -> Option<siplb_sip::Editor<'m>> {
    let mut e = m.edit();
    for edit in edits {
        match edit {
            Edit::MaxForwards => e.decrement_max_forwards().map(|_| ()).ok()?,
            Edit::PopRoutes(n) => e.pop_routes(*n).map(|_| ()).ok()?,
            Edit::RecordRoute(r) => {
                e.push_record_route(r);
            }
            Edit::Via(v) => {
                e.push_via(v);
            }
            Edit::OwnVia(port, branch, v6) => {
                let ip: std::net::IpAddr = if *v6 {
                    "2001:db8::7".parse().unwrap()
                } else {
                    "127.0.0.9".parse().unwrap()
                };
                let sent_by = siplb_sip::SentBy::new(std::net::SocketAddr::new(ip, *port));
                let branch = format!("z9hG4bK{branch}");
                e.push_own_via(&siplb_sip::OwnVia::new(
                    "UDP",
                    &sent_by,
                    &branch,
                    &[";rport", ";oc;oc-algo=\"loss\""],
                ));
            }
        }
    }
    Some(e)
}

proptest! {
    // More cases than the rest: the edits that break a message are a few in many.
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// The edits of a relayed request keep a valid message valid: siplb sends what
    /// they write without parsing it again (`Proxy::relayed` in siplb-proxy). They are
    /// refused only when Max-Forwards is 0 or a Route to pop is missing; the limits are
    /// `Proxy::admit`'s to keep, before editing. The result parses, with the pushed hops
    /// on top of the original's in the order they were pushed, and the body as it was.
    #[test]
    fn relay_edits_keep_a_message_valid(
        g in message(),
        edits in relay_edits(),
    ) {
        let limits = Limits::default();
        let m = Message::parse(g.bytes.clone()).unwrap();
        let Some(e) = apply(&m, &edits) else {
            let popped: usize = edits.iter().map(|e| match e { Edit::PopRoutes(n) => *n, _ => 0 }).sum();
            prop_assert!(g.max_forwards == Some(0) || popped > g.routes, "refused: {:?}", edits);
            return Ok(());
        };
        let bytes = e.finish().expect("relay edits never overlap");
        let edited = match parse_datagram(bytes, &limits) {
            Ok(siplb_sip::Datagram::Message(p)) => p,
            other => return Err(TestCaseError::fail(format!("relayed bytes give {other:?}"))),
        };
        let pushed: usize = edits.iter().map(Edit::vias_pushed).sum();
        prop_assert_eq!(edited.via_count(), m.via_count() + pushed);
        let first_branch = edits.iter().find_map(|e| match e {
            Edit::Via(v) => v.split("branch=").nth(1).map(str::to_owned),
            Edit::OwnVia(_, b, _) => Some(format!("z9hG4bK{b}")),
            _ => None,
        });
        let top = edited.top_via().unwrap();
        prop_assert_eq!(top.branch(), Some(first_branch.as_deref().unwrap_or(g.branch.as_str())));
        prop_assert!(!edited.has_bare_lf());
        prop_assert_eq!(edited.body(), m.body());
        prop_assert_eq!(edited.call_id(), m.call_id());
        prop_assert_eq!(edited.cseq(), m.cseq());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parse_serialize_parse_is_identity(g in message()) {
        let m = Message::parse(g.bytes.clone()).unwrap();
        prop_assert_eq!(m.as_bytes(), &g.bytes[..]);
        prop_assert_eq!(m.call_id(), Some(g.call_id.as_str()));
        prop_assert_eq!(m.top_via().unwrap().branch(), Some(g.branch.as_str()));
        // The hop kept from validation reads the same as one parsed afresh.
        prop_assert_eq!(m.top_via(), m.vias().next().unwrap());
        prop_assert_eq!(m.routes().count(), g.routes);
        prop_assert_eq!(m.max_forwards(), g.max_forwards);
        prop_assert_eq!(m.body(), &g.body[..]);
        let again = Message::parse(m.to_bytes()).unwrap();
        prop_assert_eq!(others(&again, &[]), others(&m, &[]));
        // The same bytes over a stream, in pieces, give the same message.
        let mut dec = StreamDecoder::new(Limits::default());
        let mut found = None;
        for piece in g.bytes.chunks(13) {
            dec.extend(piece);
            if let Some(siplb_sip::Frame::Message(m)) = dec.decode().unwrap() {
                found = Some(m);
            }
        }
        let found = found.unwrap();
        prop_assert_eq!(found.as_bytes(), &g.bytes[..]);
    }

    #[test]
    fn push_then_remove_via_restores_the_original(g in message(), b in token()) {
        let m = Message::parse(g.bytes.clone()).unwrap();
        let mut e = m.edit();
        e.push_via(&format!("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK{b}"));
        let pushed = reparse(e.finish().unwrap());
        let expected_branch = format!("z9hG4bK{b}");
        prop_assert_eq!(pushed.top_via().unwrap().branch(), Some(expected_branch.as_str()));
        prop_assert_eq!(pushed.vias().count(), m.vias().count() + 1);
        let mut e = pushed.edit();
        e.remove_top_via().unwrap();
        prop_assert_eq!(&e.finish().unwrap()[..], &g.bytes[..]);
    }

    #[test]
    fn removing_top_via_keeps_other_hops(g in message()) {
        let m = Message::parse(g.bytes.clone()).unwrap();
        let before: Vec<String> = m.vias().map(|v| v.unwrap().branch().unwrap().to_owned()).collect();
        let mut e = m.edit();
        e.remove_top_via().unwrap();
        let out = e.finish().unwrap();
        // A message whose only Via is gone is no longer valid SIP; check the bytes.
        if before.len() > 1 {
            let after = reparse(out);
            let rest: Vec<String> = after.vias().map(|v| v.unwrap().branch().unwrap().to_owned()).collect();
            prop_assert_eq!(&rest[..], &before[1..]);
            prop_assert_eq!(others(&after, &[HeaderName::Via]), others(&m, &[HeaderName::Via]));
        } else {
            prop_assert!(out.len() < g.bytes.len());
        }
    }

    #[test]
    fn each_edit_touches_only_its_field(g in message(), uri_user in token(), body in proptest::collection::vec(32u8..127, 0..30)) {
        let m = Message::parse(g.bytes.clone()).unwrap();

        let mut e = m.edit();
        if g.routes > 0 {
            e.pop_route().unwrap();
            let out = reparse(e.finish().unwrap());
            prop_assert_eq!(out.routes().count(), g.routes - 1);
            prop_assert_eq!(others(&out, &[HeaderName::Route]), others(&m, &[HeaderName::Route]));
        }
        // Any number of Routes at once, however they share lines: the rest stay, in order.
        let before: Vec<String> = m.routes().map(|r| r.unwrap().uri_text.to_owned()).collect();
        for n in 0..=g.routes {
            let mut e = m.edit();
            e.pop_routes(n).unwrap();
            let out = reparse(e.finish().unwrap());
            let after: Vec<String> = out.routes().map(|r| r.unwrap().uri_text.to_owned()).collect();
            prop_assert_eq!(&after[..], &before[n..]);
            prop_assert_eq!(others(&out, &[HeaderName::Route]), others(&m, &[HeaderName::Route]));
        }
        prop_assert!(m.edit().pop_routes(g.routes + 1).is_err());

        let mut e = m.edit();
        match (e.decrement_max_forwards(), g.max_forwards) {
            (Ok(n), Some(mf)) => {
                prop_assert_eq!(n, mf - 1);
                let out = reparse(e.finish().unwrap());
                prop_assert_eq!(out.max_forwards(), Some(mf - 1));
                prop_assert_eq!(others(&out, &[HeaderName::MaxForwards]), others(&m, &[HeaderName::MaxForwards]));
            }
            (Err(siplb_sip::EditError::TooManyHops), Some(0)) => {}
            (Ok(70), None) => {
                let out = reparse(e.finish().unwrap());
                prop_assert_eq!(out.max_forwards(), Some(70));
            }
            (r, mf) => prop_assert!(false, "decrement gave {:?} for {:?}", r, mf),
        }

        let mut e = m.edit();
        e.push_record_route("<sip:10.0.0.1;lr>");
        let out = reparse(e.finish().unwrap());
        prop_assert_eq!(out.record_routes().next().unwrap().unwrap().uri_text, "sip:10.0.0.1;lr");
        prop_assert_eq!(others(&out, &[HeaderName::RecordRoute]), others(&m, &[]));

        let mut e = m.edit();
        let new_uri = format!("sip:{uri_user}@127.0.0.2:5070");
        e.set_request_uri(&new_uri).unwrap();
        let out = reparse(e.finish().unwrap());
        prop_assert_eq!(out.request_uri_text(), Some(new_uri.as_str()));
        prop_assert_eq!(others(&out, &[]), others(&m, &[]));

        let mut e = m.edit();
        e.set_body(&body);
        let out = reparse(e.finish().unwrap());
        prop_assert_eq!(out.body(), &body[..]);
        prop_assert_eq!(out.content_length(), Some(body.len() as u32));
        prop_assert_eq!(others(&out, &[HeaderName::ContentLength]), others(&m, &[HeaderName::ContentLength]));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_datagram(data.clone().into(), &Limits::default());
        let mut dec = StreamDecoder::new(Limits::default());
        dec.extend(&data);
        for _ in 0..4 {
            if !matches!(dec.decode(), Ok(Some(_))) {
                break;
            }
        }
    }

    /// What transaction keys read of the top Via is what the whole hop says, on
    /// generated messages and on ones with bytes changed (some of them no longer text).
    #[test]
    fn the_top_via_id_is_what_the_top_via_says(g in message(), edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
        let mut bytes = g.bytes.clone();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if let Ok(m) = Message::parse(bytes) {
            let whole = m.top_via().map(|v| siplb_sip::ViaId::from(&v));
            prop_assert_eq!(m.top_via_id(), whole);
        }
    }

    #[test]
    fn mutated_messages_never_panic(g in message(), edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        let mut bytes = g.bytes.clone();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        bytes.truncate(cut.index(bytes.len() + 1).max(1));
        if let Ok(m) = Message::parse(bytes.clone()) {
            let _ = (m.vias().count(), m.routes().count(), m.cseq(), m.from(), m.to(), m.request_uri());
            let mut e = m.edit();
            let _ = e.remove_top_via();
            let _ = e.decrement_max_forwards();
            let _ = e.finish();
        }
    }
}
