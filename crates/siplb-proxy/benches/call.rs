//! What one call costs the proxy core, from the INVITE in to the BYE's 200 out: the
//! six datagrams a record-route-aware SIPp caller and destination send (INVITE, 180,
//! 200, ACK, BYE, 200), parsed, routed and written, and the core's timers as they fall
//! due, in virtual time at 100 calls/s.
//!
//! Two figures: `warm`, one message after the other, as at high rates where every
//! turn of the core finds its code and data in the caches; and `cold`, where the
//! caches are overwritten before each message and each timer turn. The second is the
//! low-rate case: at 100 calls/s the core sleeps between datagrams while SIPp and the
//! kernel use the CPU, and its own code ran about five times slower per instruction
//! than at 3000 calls/s (docs/BENCHMARKS.md, "What limits siplb now"). A change that
//! touches less code and memory per message shows here, where the full run's trials
//! at 100 calls/s spread too widely to tell a few per cent.
//!
//! `SIPLB_BENCH_EVICT_KB` sets how much memory is written between messages in the cold
//! case (default 4096, more than a core's L2 on the machines of docs/BENCHMARKS.md).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use siplb_balance::{Balancer, DestinationRow};
use siplb_config::Config;
use siplb_proxy::{Incoming, Peer, Proxy};
use siplb_sip::{HeaderName, Message, build_response};

const LB: &str = "127.0.0.1:5060";
const CALLER: &str = "127.0.0.1:5061";
const DESTINATIONS: [&str; 4] = [
    "127.0.0.11:5060",
    "127.0.0.12:5060",
    "127.0.0.13:5060",
    "127.0.0.14:5060",
];

// siplb's allocator (`crates/siplb/src/main.rs`): what a call costs depends on it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Virtual time between calls: 100 calls/s.
const CALL_GAP: Duration = Duration::from_millis(10);

/// The core with its destinations, virtual time, and what the peers need to answer.
struct Core {
    proxy: Proxy,
    now: Instant,
    calls: u64,
    evict: Vec<u8>,
    cold: bool,
}

impl Core {
    fn new() -> Core {
        let config = Config::parse(&format!(
            "[sip]\nlisten = [\"udp:{LB}\"]\n[[route]]\nmatch = {{ ruri_user = \"^[0-9]+$\" }}\n\
             balance = {{ group = 1, resources = \"pstn\" }}\n[[route]]\n\
             reply = {{ code = 404, reason = \"Not found\" }}\n"
        ))
        .unwrap();
        let balancer = Arc::new(Balancer::new());
        let rows: Vec<_> = DESTINATIONS
            .iter()
            .zip(1..)
            .map(|(addr, id)| DestinationRow::new(id, 1, format!("sip:{addr}"), "pstn=100000"))
            .collect();
        assert!(balancer.reload(rows).is_empty());
        let kb = std::env::var("SIPLB_BENCH_EVICT_KB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(4096);
        Core {
            proxy: Proxy::new(config.settings(), balancer),
            now: Instant::now(),
            calls: 0,
            evict: vec![0; kb * 1024],
            cold: false,
        }
    }

    /// Overwrites the caches, as the processes that run while the core sleeps do.
    #[inline(never)]
    fn evict(&mut self) {
        if self.cold {
            for line in self.evict.chunks_mut(64) {
                line[0] = line[0].wrapping_add(1);
            }
            black_box(&mut self.evict);
        }
    }

    /// Hands one datagram to the core; the time it took, and what the core sent.
    /// (Never inlined, so that a profiler can count the core's work alone, e.g.
    /// callgrind's `--toggle-collect` on this and [`Core::advance`].)
    #[inline(never)]
    fn feed(&mut self, from: &str, data: Bytes) -> (Duration, Vec<(SocketAddr, Bytes)>) {
        self.evict();
        let mut sent = Vec::new();
        let start = Instant::now();
        self.proxy.handle(
            self.now,
            Incoming {
                peer: Peer::udp(from.parse().unwrap()),
                data,
            },
        );
        while let Some(t) = self.proxy.poll_transmit() {
            sent.push((t.peer.addr, t.data));
        }
        while let Some(e) = self.proxy.poll_event() {
            black_box(e);
        }
        (start.elapsed(), sent)
    }

    /// Moves virtual time on by `by`, firing the timers that fall due in it.
    #[inline(never)]
    fn advance(&mut self, by: Duration) -> Duration {
        let end = self.now + by;
        let mut spent = Duration::ZERO;
        while let Some(due) = self.proxy.poll_timeout().filter(|&t| t <= end) {
            self.evict();
            self.now = due.max(self.now);
            let start = Instant::now();
            self.proxy.handle_timeout(self.now);
            while let Some(t) = self.proxy.poll_transmit() {
                black_box(t);
            }
            while let Some(e) = self.proxy.poll_event() {
                black_box(e);
            }
            spent += start.elapsed();
        }
        self.now = end;
        spent
    }

    /// One whole call; the core's time for it.
    fn call(&mut self) -> Duration {
        self.calls += 1;
        let n = self.calls;
        let mut spent = Duration::ZERO;

        let (t, sent) = self.feed(CALLER, invite(n));
        spent += t;
        let (dest, forwarded) = sent
            .into_iter()
            .find(|(_, d)| d.starts_with(b"INVITE"))
            .expect("the INVITE went to a destination");
        let dest_text = dest.to_string();
        let forwarded = Message::parse(forwarded).unwrap();
        let record_route = forwarded
            .header_text(HeaderName::RecordRoute)
            .expect("siplb record-routes")
            .to_owned();
        let contact = format!("<sip:{dest}>");
        let tag = format!("uas-{n}");
        let extra = [
            ("Record-Route", record_route.as_str()),
            ("Contact", contact.as_str()),
        ];

        let (t, _) = self.feed(
            &dest_text,
            build_response(&forwarded, 180, "Ringing", Some(&tag), &extra),
        );
        spent += t;
        let (t, sent) = self.feed(
            &dest_text,
            build_response(&forwarded, 200, "OK", Some(&tag), &extra),
        );
        spent += t;
        assert!(sent.iter().any(|(_, d)| d.starts_with(b"SIP/2.0 200")));

        let (t, _) = self.feed(
            CALLER,
            in_dialog("ACK", 1, n, &dest_text, &record_route, &tag),
        );
        spent += t;
        // The call lasts 100 ms; calls overlap as at 100 calls/s.
        spent += self.advance(CALL_GAP);
        let (t, sent) = self.feed(
            CALLER,
            in_dialog("BYE", 2, n, &dest_text, &record_route, &tag),
        );
        spent += t;
        let (_, bye) = sent
            .into_iter()
            .find(|(_, d)| d.starts_with(b"BYE"))
            .expect("the BYE went on");
        let bye = Message::parse(bye).unwrap();
        let (t, sent) = self.feed(&dest_text, build_response(&bye, 200, "OK", None, &[]));
        spent += t;
        assert!(sent.iter().any(|(_, d)| d.starts_with(b"SIP/2.0 200")));
        spent
    }
}

/// The INVITE of SIPp's built-in `uac` scenario.
fn invite(n: u64) -> Bytes {
    let sdp = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    Bytes::from(format!(
        "INVITE sip:{n}@{LB} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-4242-{n}-0\r\n\
         From: sipp <sip:sipp@{CALLER}>;tag=4242SIPpTag00{n}\r\n\
         To: {n} <sip:{n}@{LB}>\r\n\
         Call-ID: {n}-4242@127.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: sip:sipp@{CALLER}\r\n\
         Max-Forwards: 70\r\n\
         Subject: Performance Test\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    ))
}

/// The ACK or BYE of that scenario, sent along the 200's route set.
fn in_dialog(method: &str, cseq: u32, n: u64, dest: &str, routes: &str, tag: &str) -> Bytes {
    Bytes::from(format!(
        "{method} sip:{dest} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-4242-{n}-{cseq}\r\n\
         Route: {routes}\r\n\
         From: sipp <sip:sipp@{CALLER}>;tag=4242SIPpTag00{n}\r\n\
         To: {n} <sip:{n}@{LB}>;tag={tag}\r\n\
         Call-ID: {n}-4242@127.0.0.1\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: sip:sipp@{CALLER}\r\n\
         Max-Forwards: 70\r\n\
         Subject: Performance Test\r\n\
         Content-Length: 0\r\n\r\n"
    ))
}

fn one_call(c: &mut Criterion) {
    let mut group = c.benchmark_group("call");
    for (name, cold) in [("warm", false), ("cold", true)] {
        // Made on the first sample (criterion calls the closure once per sample), so
        // that a filtered-out case costs nothing.
        let mut core = None;
        group.bench_function(name, |b| {
            let core = core.get_or_insert_with(|| {
                let mut core = Core::new();
                // Past the first 32 s of virtual time, as many transactions linger
                // as at a steady 100 calls/s.
                for _ in 0..4000 {
                    core.call();
                }
                core.cold = cold;
                core
            });
            b.iter_custom(|iters| (0..iters).map(|_| core.call()).sum())
        });
    }
    group.finish();
}

criterion_group!(benches, one_call);
criterion_main!(benches);
