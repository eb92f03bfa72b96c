//! A proxy core driven by hand for the tests beside it: messages in, messages out,
//! virtual time. No sockets.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    dead_code
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use siplb_balance::{Balancer, DestinationRow};
use siplb_config::Config;
use siplb_proxy::{Incoming, Peer, Proxy, Transmit};
use siplb_sip::Message;

pub const LB: &str = "127.0.0.1:5060";

pub const CALLER: &str = "127.0.0.100:5060";

pub const DST1: &str = "127.0.0.11:5060";

pub const DST2: &str = "127.0.0.12:5060";

pub struct Rig {
    pub proxy: Proxy,
    pub balancer: Arc<Balancer>,
    pub now: Instant,
}

impl Rig {
    pub fn new(rows: &[(u32, &str, &str)], extra: &str) -> Rig {
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
        let proxy = Proxy::new(config.settings(), Arc::clone(&balancer));
        Rig {
            proxy,
            balancer,
            now: Instant::now(),
        }
    }

    pub fn feed(&mut self, from: &str, text: &str) {
        self.proxy.handle(
            self.now,
            Incoming {
                peer: Peer::udp(addr(from)),
                data: Bytes::copy_from_slice(text.replace('\n', "\r\n").as_bytes()),
            },
        );
    }

    pub fn feed_bytes(&mut self, from: &str, data: Bytes) {
        self.proxy.handle(
            self.now,
            Incoming {
                peer: Peer::udp(addr(from)),
                data,
            },
        );
    }

    pub fn sent(&mut self) -> Vec<(SocketAddr, Message)> {
        let mut out = Vec::new();
        while let Some(Transmit { peer, data }) = self.proxy.poll_transmit() {
            out.push((peer.addr, Message::parse(data).unwrap()));
        }
        out
    }

    pub fn advance(&mut self, d: Duration) {
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

    /// A call to `VM_1` with Call-ID `call`, answered by destination 1 with To tag
    /// `b-{call}` (the caller's tag is `a-{call}`).
    pub fn answer(&mut self, call: &str) {
        self.feed(CALLER, &invite("VM_1", call));
        let fwd = self.sent().pop().unwrap().1;
        self.feed_bytes(DST1, reply(&fwd, 200, "OK", &format!("b-{call}")));
        self.sent();
    }

    /// The next change to the stored calls (status changes skipped).
    pub fn dialog_change(&mut self) -> Option<siplb_proxy::DialogChange> {
        while let Some(e) = self.proxy.poll_event() {
            if let siplb_proxy::CoreEvent::Dialog(c) = e {
                return Some(c);
            }
        }
        None
    }

    pub fn load(&self, id: u32) -> u32 {
        self.balancer.destination(id).unwrap().resources[0].load
    }
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn invite(user: &str, call: &str) -> String {
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
pub fn reply(req: &Message, code: u16, reason: &str, tag: &str) -> Bytes {
    siplb_sip::build_response(
        req,
        code,
        reason,
        Some(tag),
        &[("Contact", "<sip:bob@127.0.0.11:5060>")],
    )
}

pub fn status(m: &Message) -> u16 {
    m.status().unwrap()
}

/// The probes sent so far, retransmissions left out: (destination address, request).
pub fn probes(out: &[(SocketAddr, Message)]) -> Vec<(SocketAddr, Message)> {
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

pub fn probing_rig(modes: &[(u32, i32)], probing: &str) -> Rig {
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
