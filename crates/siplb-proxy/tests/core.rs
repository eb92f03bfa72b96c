//! The proxy core driven by hand: messages in, messages out, virtual time. No sockets.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use siplb_balance::{Balancer, DestinationRow};
use siplb_config::Config;
use siplb_proxy::{Incoming, Peer, Proxy, Settings, Transmit};
use siplb_sip::Message;

const LB: &str = "127.0.0.1:5060";
const CALLER: &str = "127.0.0.100:5060";
const DST1: &str = "127.0.0.11:5060";
const DST2: &str = "127.0.0.12:5060";

struct Rig {
    proxy: Proxy,
    balancer: Arc<Balancer>,
    now: Instant,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

impl Rig {
    fn new(rows: &[(u32, &str, &str)], extra: &str) -> Rig {
        let text = format!(
            "[sip]\nlisten = [\"udp:{LB}\"]\n{extra}\n[[route]]\nmatch = {{ ruri_user = \"^VM_\" }}\nbalance = {{ group = 1, resources = \"vm\" }}\n[[route]]\nreply = {{ code = 404, reason = \"Destination not found\" }}\n"
        );
        let config = Config::parse(&text).unwrap();
        let balancer = Arc::new(Balancer::new());
        let rows: Vec<_> = rows
            .iter()
            .map(|&(id, uri, res)| DestinationRow::new(id, 1, uri, res))
            .collect();
        assert!(balancer.reload(rows).is_empty());
        let proxy = Proxy::new(
            Settings::from_config(&config).unwrap(),
            Arc::clone(&balancer),
        );
        Rig {
            proxy,
            balancer,
            now: Instant::now(),
        }
    }

    fn feed(&mut self, from: &str, text: &str) {
        self.proxy.handle(
            self.now,
            Incoming {
                peer: Peer::udp(addr(from)),
                data: Bytes::copy_from_slice(text.replace('\n', "\r\n").as_bytes()),
            },
        );
    }

    fn feed_bytes(&mut self, from: &str, data: Bytes) {
        self.proxy.handle(
            self.now,
            Incoming {
                peer: Peer::udp(addr(from)),
                data,
            },
        );
    }

    fn sent(&mut self) -> Vec<(SocketAddr, Message)> {
        let mut out = Vec::new();
        while let Some(Transmit { peer, data }) = self.proxy.poll_transmit() {
            out.push((peer.addr, Message::parse(data).unwrap()));
        }
        out
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.proxy.poll_timeout() {
            if t > end {
                break;
            }
            self.now = t.max(self.now);
            self.proxy.handle_timeout(self.now);
        }
        self.now = end;
    }

    /// The next change to the stored calls (status changes skipped).
    fn dialog_change(&mut self) -> Option<siplb_proxy::DialogChange> {
        while let Some(e) = self.proxy.poll_event() {
            if let siplb_proxy::CoreEvent::Dialog(c) = e {
                return Some(c);
            }
        }
        None
    }

    fn load(&self, id: u32) -> u32 {
        self.balancer.destination(id).unwrap().resources[0].load
    }
}

fn invite(user: &str, call: &str) -> String {
    format!(
        "INVITE sip:{user}@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-{call}
Max-Forwards: 70
From: <sip:alice@127.0.0.100>;tag=a-{call}
To: <sip:{user}@127.0.0.1>
Call-ID: {call}
CSeq: 1 INVITE
Contact: <sip:alice@{CALLER}>
Content-Length: 0

"
    )
}

/// A response to a forwarded request, as the destination would send it.
fn reply(req: &Message, code: u16, reason: &str, tag: &str) -> Bytes {
    siplb_sip::build_response(
        req,
        code,
        reason,
        Some(tag),
        &[("Contact", "<sip:bob@127.0.0.11:5060>")],
    )
}

fn status(m: &Message) -> u16 {
    m.status().unwrap()
}

#[test]
fn invite_is_forwarded_with_via_record_route_and_load() {
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=2")], "");
    rig.feed(CALLER, &invite("VM_1", "c1"));
    let out = rig.sent();
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].0, status(&out[0].1)), (addr(CALLER), 100));
    let (to, fwd) = &out[1];
    assert_eq!(*to, addr(DST1));
    assert_eq!(
        fwd.request_uri_text(),
        Some("sip:VM_1@127.0.0.1:5060"),
        "the Request-URI is left alone"
    );
    let via = fwd.top_via().unwrap();
    assert_eq!(via.host_text, "127.0.0.1");
    assert!(via.has_rfc3261_branch());
    assert_eq!(fwd.vias().count(), 2);
    assert_eq!(fwd.max_forwards(), Some(69));
    assert_eq!(
        fwd.record_routes().next().unwrap().unwrap().uri_text,
        "sip:127.0.0.1:5060;lr"
    );
    assert_eq!(
        rig.load(1),
        1,
        "load is taken when the call is routed, before any reply"
    );
}

#[test]
fn replies_go_back_in_order_and_bye_releases_the_load() {
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=2")], "");
    rig.feed(CALLER, &invite("VM_1", "c2"));
    let fwd = rig.sent().pop().unwrap().1;
    rig.feed_bytes(DST1, reply(&fwd, 180, "Ringing", "b1"));
    rig.feed_bytes(DST1, reply(&fwd, 200, "OK", "b1"));
    let out = rig.sent();
    let codes: Vec<u16> = out.iter().map(|(_, m)| status(m)).collect();
    assert_eq!(codes, [180, 200]);
    assert!(
        out.iter()
            .all(|(to, m)| *to == addr(CALLER) && m.vias().count() == 1)
    );
    assert_eq!(rig.load(1), 1);
    // A 2xx retransmission is forwarded again.
    rig.feed_bytes(DST1, reply(&fwd, 200, "OK", "b1"));
    assert_eq!(rig.sent().len(), 1);

    // ACK and BYE from a caller that ignores Record-Route: matched by Call-ID and tags.
    let ack = format!(
        "ACK sip:bob@127.0.0.11:5060 SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-ack2\nMax-Forwards: 70\nFrom: <sip:alice@127.0.0.100>;tag=a-c2\nTo: <sip:VM_1@127.0.0.1>;tag=b1\nCall-ID: c2\nCSeq: 1 ACK\nContent-Length: 0\n\n"
    );
    rig.feed(CALLER, &ack);
    let out = rig.sent();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, addr(DST1));
    let bye = ack
        .replace("ACK sip", "BYE sip")
        .replace("1 ACK", "2 BYE")
        .replace("-ack2", "-bye2");
    rig.feed(CALLER, &bye);
    let out = rig.sent();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, addr(DST1));
    assert_eq!(rig.load(1), 0, "BYE releases the load");
    rig.feed_bytes(DST1, reply(&out[0].1, 200, "OK", "b1"));
    let ok = rig.sent();
    assert_eq!((ok[0].0, status(&ok[0].1)), (addr(CALLER), 200));
    // A retransmitted BYE gets the same final reply, not a 404 or 481.
    rig.feed(CALLER, &bye);
    let again = rig.sent();
    assert_eq!(again.len(), 1);
    assert_eq!(status(&again[0].1), 200);
    assert_eq!(rig.load(1), 0);
}

#[test]
fn bye_from_the_callee_goes_to_the_caller() {
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=2")], "");
    rig.feed(CALLER, &invite("VM_1", "c3"));
    let fwd = rig.sent().pop().unwrap().1;
    rig.feed_bytes(DST1, reply(&fwd, 200, "OK", "b3"));
    rig.sent();
    let bye = "BYE sip:alice@127.0.0.100:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.11:5060;branch=z9hG4bK-cb3\nMax-Forwards: 70\nFrom: <sip:VM_1@127.0.0.1>;tag=b3\nTo: <sip:alice@127.0.0.100>;tag=a-c3\nCall-ID: c3\nCSeq: 1 BYE\nContent-Length: 0\n\n";
    rig.feed(DST1, bye);
    let out = rig.sent();
    assert_eq!(out[0].0, addr(CALLER));
    assert_eq!(rig.load(1), 0);
}

#[test]
fn loose_routing_pops_our_route_and_relays_only_within_a_known_call() {
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=2")], "");
    rig.feed(CALLER, &invite("VM_1", "lr"));
    let fwd = rig.sent().pop().unwrap().1;
    rig.feed_bytes(DST1, reply(&fwd, 200, "OK", "y"));
    rig.sent();
    // siplb's Route followed by a foreign one: the BYE still goes to the callee (and
    // only there), with siplb's own Route removed.
    let bye = format!(
        "BYE sip:bob@127.0.0.11:5060 SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-rr\nRoute: <sip:127.0.0.1:5060;lr>, <sip:192.0.2.66:5060;lr>\nMax-Forwards: 70\nFrom: <sip:alice@127.0.0.100>;tag=a-lr\nTo: <sip:bob@127.0.0.11>;tag=y\nCall-ID: lr\nCSeq: 2 BYE\nContent-Length: 0\n\n"
    );
    rig.feed(CALLER, &bye);
    let out = rig.sent();
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].0,
        addr(DST1),
        "the call's callee, whatever the Route says"
    );
    let routes: Vec<_> = out[0]
        .1
        .routes()
        .map(|r| r.unwrap().uri_text.to_owned())
        .collect();
    assert_eq!(routes, ["sip:192.0.2.66:5060;lr"]);
    assert_eq!(out[0].1.request_uri_text(), Some("sip:bob@127.0.0.11:5060"));
    assert_eq!(rig.load(1), 0);

    // No call: siplb's Route is no licence to relay to the Request-URI.
    let stranger = bye
        .replace("Call-ID: lr", "Call-ID: unknown-call")
        .replace("-rr", "-rr2");
    rig.feed(CALLER, &stranger);
    let out = rig.sent();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0, status(&out[0].1)), (addr(CALLER), 481));
}

#[test]
fn failover_releases_and_moves_on_then_service_full() {
    let mut rig = Rig::new(
        &[
            (1, "sip:127.0.0.11:5060", "vm=5"),
            (2, "sip:127.0.0.12:5060", "vm=2"),
        ],
        "[failover]\nmin_enabled = 0\n",
    );
    rig.feed(CALLER, &invite("VM_1", "c4"));
    let first = rig.sent().pop().unwrap();
    assert_eq!(first.0, addr(DST1));
    rig.feed_bytes(DST1, reply(&first.1, 503, "Service Unavailable", "x"));
    let out = rig.sent();
    // The ACK to the 503 goes to destination 1, the INVITE to destination 2.
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].1.method().unwrap().as_str(), "ACK");
    assert_eq!(
        (out[1].0, out[1].1.method().unwrap().as_str()),
        (addr(DST2), "INVITE")
    );
    assert_eq!((rig.load(1), rig.load(2)), (0, 1));
    assert!(!rig.balancer.destination(1).unwrap().enabled);
    // Destination 2 times out: nothing is left, the caller gets "Service full".
    rig.advance(Duration::from_secs(6));
    let out = rig.sent();
    // (Sent again until the caller ACKs it: UDP.)
    let to_caller: Vec<_> = out.iter().filter(|(to, _)| *to == addr(CALLER)).collect();
    assert!(!to_caller.is_empty());
    assert!(to_caller.iter().all(|(_, m)| status(m) == 500));
    assert_eq!(to_caller[0].1.reason(), Some(&b"Service full"[..]));
    assert_eq!((rig.load(1), rig.load(2)), (0, 0));
}

#[test]
fn four_hundreds_are_relayed_without_failover() {
    let mut rig = Rig::new(
        &[
            (1, "sip:127.0.0.11:5060", "vm=5"),
            (2, "sip:127.0.0.12:5060", "vm=2"),
        ],
        "",
    );
    rig.feed(CALLER, &invite("VM_1", "c5"));
    let first = rig.sent().pop().unwrap();
    rig.feed_bytes(DST1, reply(&first.1, 486, "Busy Here", "x"));
    let out = rig.sent();
    let to_caller: Vec<_> = out.iter().filter(|(to, _)| *to == addr(CALLER)).collect();
    assert_eq!(status(&to_caller[0].1), 486);
    assert!(out.iter().all(|(to, _)| *to != addr(DST2)));
    assert!(rig.balancer.destination(1).unwrap().enabled);
    assert_eq!(rig.load(1), 0);
}

#[test]
fn cancel_is_answered_forwarded_and_releases() {
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=5")], "");
    let inv = invite("VM_1", "c6");
    rig.feed(CALLER, &inv);
    let fwd = rig.sent().pop().unwrap().1;
    rig.feed_bytes(DST1, reply(&fwd, 180, "Ringing", "b6"));
    rig.sent();
    let cancel = inv
        .replace(
            "INVITE sip:VM_1@127.0.0.1:5060",
            "CANCEL sip:VM_1@127.0.0.1:5060",
        )
        .replace("1 INVITE", "1 CANCEL");
    rig.feed(CALLER, &cancel);
    let out = rig.sent();
    assert_eq!((out[0].0, status(&out[0].1)), (addr(CALLER), 200));
    let (to, fwd_cancel) = &out[1];
    assert_eq!(*to, addr(DST1));
    assert_eq!(fwd_cancel.method().unwrap().as_str(), "CANCEL");
    assert_eq!(
        fwd_cancel.top_via().unwrap().branch(),
        fwd.top_via().unwrap().branch(),
        "a CANCEL carries the branch of the INVITE it cancels"
    );
    rig.feed_bytes(DST1, reply(fwd_cancel, 200, "OK", "b6"));
    rig.feed_bytes(DST1, reply(&fwd, 487, "Request Terminated", "b6"));
    let out = rig.sent();
    let to_caller: Vec<_> = out.iter().filter(|(to, _)| *to == addr(CALLER)).collect();
    assert_eq!(status(&to_caller[0].1), 487);
    assert!(
        rig.balancer.destination(1).unwrap().enabled,
        "a 487 after CANCEL is no failure"
    );
    assert_eq!(rig.load(1), 0);
    // A CANCEL for nothing gets 481.
    rig.feed(CALLER, &cancel.replace("c6", "zz"));
    assert_eq!(status(&rig.sent()[0].1), 481);
}

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

#[test]
fn dialog_timeout_releases_the_load() {
    let mut rig = Rig::new(
        &[(1, "sip:127.0.0.11:5060", "vm=5")],
        "[dialog]\ntimeout = \"10s\"\n",
    );
    rig.feed(CALLER, &invite("VM_1", "c11"));
    let fwd = rig.sent().pop().unwrap().1;
    rig.feed_bytes(DST1, reply(&fwd, 200, "OK", "b11"));
    rig.sent();
    assert_eq!(rig.load(1), 1);
    rig.advance(Duration::from_secs(9));
    assert_eq!(rig.load(1), 1);
    rig.advance(Duration::from_secs(2));
    assert_eq!(rig.load(1), 0);
    assert_eq!(rig.proxy.calls(), 0);
}

#[test]
fn everything_ends_when_time_passes() {
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=50")], "");
    for i in 0..20 {
        rig.feed(CALLER, &invite("VM_1", &format!("e{i}")));
    }
    rig.sent();
    assert_eq!(rig.load(1), 20);
    // No answer at all: each INVITE times out, no destination is left, all loads return.
    rig.advance(Duration::from_secs(120));
    rig.sent();
    assert_eq!(rig.load(1), 0);
    assert_eq!(rig.proxy.calls(), 0);
    assert_eq!(rig.proxy.transactions(), 0, "every transaction is gone");
}

/// The probes sent so far, retransmissions left out: (destination address, request).
fn probes(out: &[(SocketAddr, Message)]) -> Vec<(SocketAddr, Message)> {
    let mut seen = Vec::new();
    out.iter()
        .filter(|(_, m)| m.method().is_some_and(|x| x.as_str() == "OPTIONS"))
        .filter(|(_, m)| {
            let id = m.call_id().unwrap_or_default().to_owned();
            let new = !seen.contains(&id);
            seen.push(id);
            new
        })
        .cloned()
        .collect()
}

fn probing_rig(modes: &[(u32, i32)], probing: &str) -> Rig {
    let text = format!(
        "[probing]\ninterval = \"1s\"\ntimeout = \"500ms\"\nfrom = \"sip:prober@127.0.0.1\"\n{probing}\n"
    );
    let mut rig = Rig::new(
        &[
            (1, "sip:127.0.0.11:5060", "vm=5"),
            (2, "sip:127.0.0.12:5060", "vm=5"),
        ],
        &text,
    );
    let rows: Vec<_> = [(1, DST1), (2, DST2)]
        .iter()
        .map(|&(id, a)| {
            let mut row = DestinationRow::new(id, 1, format!("sip:{a}"), "vm=5");
            row.probe_mode = modes.iter().find(|m| m.0 == id).map_or(0, |m| m.1);
            row
        })
        .collect();
    assert!(rig.balancer.reload(rows).is_empty());
    rig.proxy.start(rig.now);
    rig
}

#[test]
fn mode_one_probes_only_while_disabled_and_reenables() {
    let mut rig = probing_rig(&[(1, 1), (2, 1)], "");
    rig.advance(Duration::from_millis(10));
    assert!(
        probes(&rig.sent()).is_empty(),
        "enabled mode-1 destinations are not probed"
    );
    rig.balancer.disable_by_failover(1, 0).unwrap();
    rig.balancer.set_status_by_operator(2, false).unwrap();
    rig.advance(Duration::from_secs(1));
    let sent = probes(&rig.sent());
    assert_eq!(
        sent.len(),
        1,
        "operator-disabled destinations are not probed"
    );
    let (to, probe) = &sent[0];
    assert_eq!(*to, addr(DST1));
    assert_eq!(probe.request_uri_text(), Some("sip:127.0.0.11:5060"));
    assert_eq!(probe.from().unwrap().uri_text, "sip:prober@127.0.0.1");
    // No second probe while one is pending.
    rig.advance(Duration::from_millis(200));
    assert!(probes(&rig.sent()).is_empty());
    rig.feed_bytes(
        DST1,
        siplb_sip::build_response(probe, 200, "OK", Some("p"), &[]),
    );
    assert!(rig.balancer.destination(1).unwrap().enabled);
    assert!(!rig.balancer.destination(2).unwrap().enabled);
    let state = rig
        .proxy
        .probe_states()
        .find(|(id, _)| *id == 1)
        .unwrap()
        .1
        .clone();
    assert_eq!(state.last_status, Some(200));
    assert!(state.rtt.is_some());
    // Enabled again: probing stops.
    rig.advance(Duration::from_secs(3));
    assert!(probes(&rig.sent()).is_empty());
}

#[test]
fn mode_two_disables_on_failure_after_the_threshold_and_honours_reply_codes() {
    let mut rig = probing_rig(
        &[(1, 2), (2, 2)],
        "reply_codes = [404]\nfailures_to_disable = 2\n",
    );
    // The first round goes out at start, then one every interval.
    rig.advance(Duration::from_millis(10));
    for round in 0..3 {
        let sent = probes(&rig.sent());
        assert_eq!(sent.len(), 2, "round {round}");
        for (to, probe) in sent {
            // Destination 1 answers 404 (listed, so a success); 2 answers 503.
            let (code, from) = if to == addr(DST1) {
                (404, DST1)
            } else {
                (503, DST2)
            };
            rig.feed_bytes(
                from,
                siplb_sip::build_response(&probe, code, "X", Some("p"), &[]),
            );
        }
        // Two consecutive failures are needed.
        assert_eq!(
            rig.balancer.destination(2).unwrap().enabled,
            round == 0,
            "round {round}"
        );
        assert!(rig.balancer.destination(1).unwrap().enabled);
        rig.advance(Duration::from_secs(1));
    }
    // A probe that gets no answer at all counts as a failure too.
    let mut rig = probing_rig(&[(1, 2)], "");
    rig.advance(Duration::from_millis(10));
    assert_eq!(probes(&rig.sent()).len(), 1);
    rig.advance(Duration::from_millis(600));
    assert!(
        !rig.balancer.destination(1).unwrap().enabled,
        "timeout disables"
    );
    assert_eq!(
        rig.proxy.probe_states().next().unwrap().1.last_status,
        Some(408)
    );
    // The next round's success brings it back.
    rig.sent();
    rig.advance(Duration::from_millis(400));
    let sent = probes(&rig.sent());
    assert_eq!(sent.len(), 1);
    rig.feed_bytes(
        DST1,
        siplb_sip::build_response(&sent[0].1, 200, "OK", Some("p"), &[]),
    );
    assert!(rig.balancer.destination(1).unwrap().enabled);
}

#[test]
fn an_operator_disable_is_never_undone_by_probes() {
    let mut rig = probing_rig(&[(1, 2)], "");
    rig.balancer.set_status_by_operator(1, false).unwrap();
    rig.advance(Duration::from_secs(5));
    assert!(probes(&rig.sent()).is_empty());
    assert!(!rig.balancer.destination(1).unwrap().enabled);
}

#[test]
fn failover_threshold_and_floor() {
    // Three failures in a row before failover disables a destination; an answer in
    // between starts the count again; the floor keeps one enabled whatever happens.
    let mut rig = Rig::new(
        &[
            (1, "sip:127.0.0.11:5060", "vm=9"),
            (2, "sip:127.0.0.12:5060", "vm=5"),
        ],
        "[failover]\nfailures_to_disable = 3\nmin_enabled = 1\n[transaction]\ninvite_timeout = \"1s\"\n",
    );
    let enabled = |rig: &Rig| -> Vec<bool> {
        [1, 2]
            .iter()
            .map(|&id| rig.balancer.destination(id).unwrap().enabled)
            .collect()
    };
    // A call that both destinations leave unanswered: one failure each.
    let silent_call = |rig: &mut Rig, name: &str| {
        rig.feed(CALLER, &invite("VM_1", name));
        rig.advance(Duration::from_secs(3));
        rig.sent();
    };
    silent_call(&mut rig, "t1");
    silent_call(&mut rig, "t2");
    assert_eq!(
        enabled(&rig),
        [true, true],
        "two failures are below the threshold"
    );
    // Destination 1 answers one call: its count starts again.
    rig.feed(CALLER, &invite("VM_1", "ok"));
    let fwd = rig.sent().pop().unwrap().1;
    rig.feed_bytes(DST1, reply(&fwd, 486, "Busy Here", "b"));
    rig.sent();
    silent_call(&mut rig, "t3");
    assert_eq!(
        enabled(&rig),
        [true, false],
        "destination 2's third failure in a row disables it; destination 1 answered in between"
    );
    silent_call(&mut rig, "t4");
    silent_call(&mut rig, "t5");
    assert_eq!(
        enabled(&rig),
        [true, false],
        "destination 1 has failed three times in a row, but it is the last one enabled"
    );
    // Every call timed out on every destination tried: the loads are back.
    assert_eq!((rig.load(1), rig.load(2)), (0, 0));
}

#[test]
fn attrs_can_set_a_destination_probe_interval() {
    let mut rig = probing_rig(&[], "");
    let mut slow = DestinationRow::new(1, 1, format!("sip:{DST1}"), "vm=5");
    slow.probe_mode = 2;
    slow.attrs = Some("probe_interval=3".into());
    let mut fast = DestinationRow::new(2, 1, format!("sip:{DST2}"), "vm=5");
    fast.probe_mode = 2;
    assert!(rig.balancer.reload([slow, fast]).is_empty());
    let mut counts = [0, 0];
    for _ in 0..6 {
        rig.advance(Duration::from_millis(1000));
        for (to, probe) in probes(&rig.sent()) {
            counts[usize::from(to == addr(DST2))] += 1;
            let from = if to == addr(DST1) { DST1 } else { DST2 };
            rig.feed_bytes(
                from,
                siplb_sip::build_response(&probe, 200, "OK", Some("p"), &[]),
            );
        }
    }
    // From start to 6 s: every second for the default (0..=6 s), every 3 s for the
    // override (0, 3 and 6 s).
    assert_eq!(counts, [3, 7]);
}

#[test]
fn setup_time_runs_to_the_first_reply_the_caller_sees() {
    let mut rig = Rig::new(
        &[
            (1, "sip:127.0.0.11:5060", "vm=5"),
            (2, "sip:127.0.0.12:5060", "vm=5"),
        ],
        "[failover]\nmin_enabled = 0\n",
    );
    rig.feed(CALLER, &invite("VM_1", "s1"));
    let first = rig.sent().pop().unwrap().1;
    rig.advance(Duration::from_millis(3));
    // A 503 fails over: not the caller's reply, the clock runs on.
    rig.feed_bytes(DST1, reply(&first, 503, "Busy", "x"));
    let second = rig.sent().pop().unwrap().1;
    rig.advance(Duration::from_millis(4));
    rig.feed_bytes(DST2, reply(&second, 180, "Ringing", "y"));
    rig.advance(Duration::from_millis(100));
    rig.feed_bytes(DST2, reply(&second, 200, "OK", "y"));
    let h = &rig.proxy.stats().setup;
    assert_eq!(h.count, 1);
    // 7 ms: in the 10 ms bucket and above, not in the 5 ms one.
    assert_eq!(h.buckets[..4], [0, 0, 0, 1]);
    assert_eq!(h.sum_micros, 7000);
}

#[test]
fn answered_calls_are_stored_and_a_restored_call_routes_its_bye() {
    use siplb_proxy::DialogChange;
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=5")], "");
    rig.feed(CALLER, &invite("VM_1", "p1"));
    let fwd = rig.sent().pop().unwrap().1;
    assert!(
        rig.dialog_change().is_none(),
        "calls are stored once answered"
    );
    rig.advance(Duration::from_millis(20));
    rig.feed_bytes(DST1, reply(&fwd, 200, "OK", "b-p1"));
    rig.sent();
    let Some(DialogChange::Upsert(stored)) = rig.dialog_change() else {
        panic!("no upsert");
    };
    assert_eq!(
        (
            stored.call_id.as_str(),
            stored.caller_tag.as_str(),
            stored.callee_tag.as_deref()
        ),
        ("p1", "a-p1", Some("b-p1"))
    );
    assert_eq!(
        (stored.destination_id, stored.resources.as_str()),
        (1, "vm")
    );
    assert_eq!(
        (stored.caller.addr, stored.callee.addr),
        (addr(CALLER), addr(DST1))
    );
    assert_eq!(stored.age, Duration::from_millis(20));

    // A new process: the stored call comes back with its load.
    let mut after = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=5")], "");
    after.proxy.restore_call(after.now, stored.clone()).unwrap();
    assert_eq!(after.load(1), 1);
    let bye = format!(
        "BYE sip:bob@127.0.0.11:5060 SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-pbye\nMax-Forwards: 70\nFrom: <sip:alice@127.0.0.100>;tag=a-p1\nTo: <sip:VM_1@127.0.0.1>;tag=b-p1\nCall-ID: p1\nCSeq: 2 BYE\nContent-Length: 0\n\n"
    );
    after.feed(CALLER, &bye);
    let out = after.sent();
    assert_eq!(
        out[0].0,
        addr(DST1),
        "the restored call's BYE goes to its destination"
    );
    assert_eq!(after.load(1), 0);
    assert_eq!(
        after.dialog_change(),
        Some(DialogChange::Delete {
            call_id: "p1".into(),
            caller_tag: "a-p1".into()
        })
    );
    // A destination gone from the table cannot take a call back.
    let mut gone = Rig::new(&[(2, "sip:127.0.0.12:5060", "vm=5")], "");
    assert!(gone.proxy.restore_call(gone.now, stored).is_err());
    assert_eq!(gone.proxy.calls(), 0);
}

#[test]
fn the_operator_can_end_a_call_siplb_still_counts() {
    use siplb_proxy::DialogChange;
    let mut rig = Rig::new(&[(1, "sip:127.0.0.11:5060", "vm=5")], "");
    rig.feed(CALLER, &invite("VM_1", "stale"));
    let fwd = rig.sent().pop().unwrap().1;
    rig.feed_bytes(DST1, reply(&fwd, 200, "OK", "b"));
    rig.sent();
    assert!(matches!(rig.dialog_change(), Some(DialogChange::Upsert(_))));
    assert_eq!(rig.load(1), 1);
    assert_eq!(rig.proxy.end_calls_with_id(rig.now, "nothing"), 0);
    assert_eq!(rig.proxy.end_calls_with_id(rig.now, "stale"), 1);
    assert_eq!(rig.load(1), 0);
    assert!(matches!(
        rig.dialog_change(),
        Some(DialogChange::Delete { .. })
    ));
}

#[test]
fn a_timed_out_request_does_not_hold_up_shutdown() {
    let mut rig = Rig::new(
        &[(1, "sip:127.0.0.11:5060", "vm=5")],
        "[transaction]\ninvite_timeout = \"1s\"\n",
    );
    rig.feed(CALLER, &invite("VM_1", "idle"));
    assert!(!rig.proxy.is_idle());
    rig.advance(Duration::from_millis(1500));
    // The INVITE timed out and the caller got its answer; the transaction lingers to
    // absorb late replies, but nothing is waited for any more.
    assert_eq!(rig.proxy.calls(), 0);
    assert!(rig.proxy.transactions() > 0);
    assert!(rig.proxy.is_idle());
}
