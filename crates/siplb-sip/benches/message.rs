//! What one relayed message costs in siplb-sip: parse, the edits a stateful proxy
//! makes, and writing the result. Target: under 2 us per message on one core.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use siplb_sip::{Datagram, Limits, parse_datagram};

const INVITE: &[u8] = b"INVITE sip:+15551234567@lb.example.net SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---8c2b3a3b4e0d9e2a;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:alice@192.0.2.10:5060;transport=udp>\r\n\
To: <sip:+15551234567@lb.example.net>\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=8a7e4c11\r\n\
Call-ID: 4f8a2c1e9b3d7a60@192.0.2.10\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n\
Content-Type: application/sdp\r\n\
Supported: replaces, norefersub, timer\r\n\
User-Agent: Z 5.6.1 v2.10.20.3\r\n\
Allow-Events: presence, kpml, talk\r\n\
Content-Length: 239\r\n\
\r\n\
v=0\r\n\
o=Z 0 0 IN IP4 192.0.2.10\r\n\
s=Z\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 8000 RTP/AVP 0 8 101 9\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=rtpmap:9 G722/8000\r\n\
a=sendrecv\r\n\
a=ptime:20\r\n";

const OK: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKlb.0a1b2c3d.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---8c2b3a3b4e0d9e2a;rport=5060;received=192.0.2.10\r\n\
Record-Route: <sip:127.0.0.1;lr>\r\n\
Contact: <sip:+15551234567@127.0.0.11:5060>\r\n\
To: <sip:+15551234567@lb.example.net>;tag=as1f2e3d4c\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=8a7e4c11\r\n\
Call-ID: 4f8a2c1e9b3d7a60@192.0.2.10\r\n\
CSeq: 1 INVITE\r\n\
Server: Asterisk PBX 20.5.0\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO, PUBLISH, MESSAGE\r\n\
Supported: replaces, timer\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 170\r\n\
\r\n\
v=0\r\n\
o=- 1 1 IN IP4 127.0.0.11\r\n\
s=Asterisk\r\n\
c=IN IP4 127.0.0.11\r\n\
t=0 0\r\n\
m=audio 10000 RTP/AVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=ptime:20\r\n";

fn parse(b: &'static [u8], limits: &Limits) -> siplb_sip::Message {
    match parse_datagram(Bytes::from_static(b), limits) {
        Ok(Datagram::Message(m)) => m,
        other => panic!("benchmark input must parse: {other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("relay");
    g.throughput(Throughput::Elements(1));

    g.bench_function("invite_parse_edit_serialize", |b| {
        b.iter(|| {
            let m = parse(black_box(INVITE), &limits);
            // What the proxy reads to route it...
            let via = m.top_via().ok().and_then(|v| v.branch()).map(str::len);
            let key = (m.call_id().map(str::len), m.from_tag().map(str::len), via);
            let user = m.request_uri().and_then(|u| u.user).map(str::len);
            // ...and the edits it makes before sending it on.
            let mut e = m.edit();
            e.set_via_received(
                "192.0.2.10"
                    .parse()
                    .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
                5060,
            )
            .ok();
            e.push_via("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKlb.0a1b2c3d.0");
            e.push_record_route("<sip:127.0.0.1;lr>");
            let mf = e.decrement_max_forwards().ok();
            black_box((key, user, mf, e.finish().ok()))
        })
    });

    g.bench_function("ok_parse_edit_serialize", |b| {
        b.iter(|| {
            let m = parse(black_box(OK), &limits);
            let key = (
                m.top_via().ok().and_then(|v| v.branch()).map(str::len),
                m.cseq().map(|c| c.seq),
                m.status(),
                m.to_tag().map(str::len),
            );
            let mut e = m.edit();
            e.remove_top_via().ok();
            black_box((key, e.finish().ok()))
        })
    });

    g.bench_function("invite_parse_only", |b| {
        b.iter(|| black_box(parse(black_box(INVITE), &limits)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
