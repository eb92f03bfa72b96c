//! Random interleavings of messages, transport errors and timer firings, in virtual
//! time: no panic, the event stream stays coherent, and once the inputs stop every
//! transaction reaches Terminated within a bounded time.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use proptest::prelude::*;
use siplb_sip::{Message, build_response};
use siplb_txn::{
    ClientEvent, ClientTransaction, Reliability, ServerEvent, ServerTransaction, Timers,
};

const CODES: [u16; 14] = [
    100, 180, 183, 199, 200, 202, 302, 404, 408, 486, 487, 500, 503, 603,
];

#[derive(Clone, Debug)]
enum Op {
    /// Time passes and every deadline on the way fires, as in an event loop.
    Advance(u64),
    /// One late wake-up: `handle_timeout` once, far past the due deadlines.
    Jump(u64),
    /// Client: the next hop answers. Server: the TU answers.
    Respond(u16),
    /// Client: a response for another transaction. Server: another request.
    Foreign,
    /// Server: the request again.
    Retransmit,
    /// Server: the ACK (also fed to non-INVITE transactions, where it never matches).
    Ack,
    TransportError,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..40_000).prop_map(Op::Advance),
        1 => (0u64..400_000).prop_map(Op::Jump),
        4 => prop::sample::select(&CODES[..]).prop_map(Op::Respond),
        1 => Just(Op::Foreign),
        2 => Just(Op::Retransmit),
        2 => Just(Op::Ack),
        1 => Just(Op::TransportError),
    ]
}

fn timers() -> impl Strategy<Value = Timers> {
    (
        0u64..1_000,
        0u64..8_000,
        0u64..10_000,
        0u64..40_000,
        0u64..300_000,
        0u64..64_000,
        0u64..40_000,
        0u64..1_000,
    )
        .prop_map(
            |(t1, t2, t4, invite, proceeding, non_invite, d, trying)| Timers {
                t1: Duration::from_millis(t1),
                t2: Duration::from_millis(t2),
                t4: Duration::from_millis(t4),
                invite_timeout: Duration::from_millis(invite),
                proceeding_timeout: Duration::from_millis(proceeding),
                non_invite_timeout: Duration::from_millis(non_invite),
                timer_d: Duration::from_millis(d),
                trying_after: Duration::from_millis(trying),
            },
        )
}

fn request(method: &str, branch: &str) -> Message {
    let to = if method == "ACK" { ";tag=b1" } else { "" };
    let text = format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
         To: <sip:bob@example.com>{to}\r\n\
         From: <sip:alice@example.com>;tag=a1\r\n\
         Call-ID: c1@example.com\r\n\
         CSeq: 1 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(text.into_bytes()).expect("test request parses")
}

fn response(request: &Message, code: u16) -> Message {
    let tag = (code != 100).then_some("b1");
    Message::parse(build_response(request, code, "X", tag, &[])).expect("test response parses")
}

/// The longest any transaction may outlive its last input: the longest wait for a
/// peer, then the grace after a timeout, then the longest linger.
fn bound(t: &Timers) -> Duration {
    let sixty_four_t1 = t.t1 * 64;
    let wait = t
        .invite_timeout
        .max(t.proceeding_timeout)
        .max(t.non_invite_timeout)
        .max(sixty_four_t1);
    wait + sixty_four_t1 + t.timer_d.max(t.t4).max(sixty_four_t1)
}

/// The event-stream rules both kinds share.
#[derive(Default)]
struct Tally {
    timeouts: usize,
    terminated: usize,
    finals: usize,
    after_terminated: usize,
}

impl Tally {
    fn check(&self) {
        assert!(
            self.timeouts <= 1,
            "Timeout emitted {} times",
            self.timeouts
        );
        assert!(
            self.terminated <= 1,
            "Terminated emitted {} times",
            self.terminated
        );
        assert!(self.finals <= 1, "Final emitted {} times", self.finals);
        assert_eq!(self.after_terminated, 0, "events after Terminated");
    }
}

struct Client {
    tx: ClientTransaction,
    tally: Tally,
}

impl Client {
    fn drain(&mut self) {
        while self.tx.poll_transmit().is_some() {}
        while let Some(e) = self.tx.poll_event() {
            // Late 2xx responses are the one thing a terminated INVITE still surfaces.
            if self.tally.terminated > 0 && !matches!(e, ClientEvent::Late2xx(_)) {
                self.tally.after_terminated += 1;
            }
            match e {
                ClientEvent::Timeout => self.tally.timeouts += 1,
                ClientEvent::Terminated => self.tally.terminated += 1,
                ClientEvent::Final(_) => self.tally.finals += 1,
                _ => {}
            }
        }
        self.tally.check();
        assert_eq!(self.tx.is_terminated(), self.tally.terminated == 1);
        if self.tx.is_terminated() {
            assert_eq!(self.tx.poll_timeout(), None);
        }
    }
}

struct Server {
    tx: ServerTransaction,
    tally: Tally,
    /// A response was accepted: a 100 can no longer fall due.
    responded: bool,
    tryings_due: usize,
}

impl Server {
    fn drain(&mut self) {
        while self.tx.poll_transmit().is_some() {}
        while let Some(e) = self.tx.poll_event() {
            if self.tally.terminated > 0 {
                self.tally.after_terminated += 1;
            }
            match e {
                ServerEvent::Timeout => self.tally.timeouts += 1,
                ServerEvent::Terminated => self.tally.terminated += 1,
                ServerEvent::TryingDue => {
                    assert!(!self.responded, "a 100 due after a response was sent");
                    self.tryings_due += 1;
                }
                _ => {}
            }
        }
        assert!(
            self.tryings_due <= 1,
            "a 100 due {} times",
            self.tryings_due
        );
        self.tally.check();
        assert_eq!(self.tx.is_terminated(), self.tally.terminated == 1);
        if self.tx.is_terminated() {
            assert_eq!(self.tx.poll_timeout(), None);
        }
    }
}

trait Machine {
    fn poll_timeout(&self) -> Option<Instant>;
    fn handle_timeout(&mut self, now: Instant);
    fn drain(&mut self);
    fn is_terminated(&self) -> bool;
}

impl Machine for Client {
    fn poll_timeout(&self) -> Option<Instant> {
        self.tx.poll_timeout()
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
    }
    fn drain(&mut self) {
        Client::drain(self);
    }
    fn is_terminated(&self) -> bool {
        self.tx.is_terminated()
    }
}

impl Machine for Server {
    fn poll_timeout(&self) -> Option<Instant> {
        self.tx.poll_timeout()
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
    }
    fn drain(&mut self) {
        Server::drain(self);
    }
    fn is_terminated(&self) -> bool {
        self.tx.is_terminated()
    }
}

/// Fires deadlines in order up to `until`; every call leaves nothing overdue.
fn advance(m: &mut impl Machine, now: &mut Instant, until: Instant) {
    let mut steps = 0;
    while let Some(at) = m.poll_timeout() {
        if at > until {
            break;
        }
        assert!(at >= *now, "a deadline fell in the past");
        *now = at.max(*now);
        m.handle_timeout(*now);
        m.drain();
        if let Some(next) = m.poll_timeout() {
            assert!(next > *now, "a deadline is still due after handle_timeout");
        }
        steps += 1;
        assert!(steps < 100_000, "timers never settle");
    }
    *now = until.max(*now);
}

/// With no more input, the machine must end within `bound`.
fn settle(m: &mut impl Machine, now: Instant, bound: Duration) {
    let last_input = now;
    let mut now = now;
    advance(m, &mut now, last_input + bound);
    assert!(
        m.is_terminated(),
        "not terminated {bound:?} after the last input"
    );
}

fn run_client(invite: bool, reliability: Reliability, timers: Timers, ops: &[Op]) {
    let t0 = Instant::now();
    let method = if invite { "INVITE" } else { "OPTIONS" };
    let req = request(method, "z9hG4bKlb1");
    let foreign = request(method, "z9hG4bKlb2");
    let tx = ClientTransaction::new(req.clone(), reliability, timers, t0).expect("keyed");
    let mut c = Client {
        tx,
        tally: Tally::default(),
    };
    c.drain();
    let mut now = t0;
    for op in ops {
        match op {
            Op::Advance(ms) => {
                let until = now + Duration::from_millis(*ms);
                advance(&mut c, &mut now, until);
            }
            Op::Jump(ms) => {
                now += Duration::from_millis(*ms);
                c.tx.handle_timeout(now);
                assert!(c.tx.poll_timeout().is_none_or(|at| at > now));
            }
            Op::Respond(code) => {
                c.tx.handle_response(response(&req, *code), now)
                    .expect("own responses match");
            }
            Op::Foreign => {
                assert!(c.tx.handle_response(response(&foreign, 200), now).is_err());
            }
            Op::Retransmit | Op::Ack => {}
            Op::TransportError => c.tx.handle_transport_error(),
        }
        c.drain();
    }
    settle(&mut c, now, bound(&timers));
}

fn run_server(invite: bool, reliability: Reliability, timers: Timers, ops: &[Op]) {
    let t0 = Instant::now();
    let method = if invite { "INVITE" } else { "OPTIONS" };
    let req = request(method, "z9hG4bKuac1");
    let mut tx = ServerTransaction::new(&req, reliability, timers).expect("keyed");
    tx.defer_trying(t0);
    let mut s = Server {
        tx,
        tally: Tally::default(),
        responded: false,
        tryings_due: 0,
    };
    let mut now = t0;
    for op in ops {
        match op {
            Op::Advance(ms) => {
                let until = now + Duration::from_millis(*ms);
                advance(&mut s, &mut now, until);
            }
            Op::Jump(ms) => {
                now += Duration::from_millis(*ms);
                s.tx.handle_timeout(now);
                assert!(s.tx.poll_timeout().is_none_or(|at| at > now));
            }
            // Refusals (a second final, a non-2xx after a 2xx) must leave no trace.
            Op::Respond(code) => {
                let before = s.tx.state();
                if s.tx
                    .send_response(response(&req, *code).to_bytes(), now)
                    .is_err()
                {
                    assert_eq!(s.tx.state(), before);
                } else {
                    s.drain();
                    s.responded = true;
                }
            }
            Op::Foreign => {
                let other = request(method, "z9hG4bKuac2");
                assert!(s.tx.handle_request(other, now).is_err());
            }
            Op::Retransmit => {
                s.tx.handle_request(req.clone(), now)
                    .expect("own request matches");
            }
            Op::Ack => {
                let result = s.tx.handle_request(request("ACK", "z9hG4bKuac1"), now);
                assert_eq!(result.is_ok(), invite);
            }
            Op::TransportError => s.tx.handle_transport_error(),
        }
        s.drain();
    }
    // A proxy always answers in the end (its client transaction times out at
    // worst); the bound runs from that answer.
    if !s.tx.has_final() {
        s.tx.send_response(response(&req, 408).to_bytes(), now)
            .expect("a final is accepted before any other final");
        s.drain();
    }
    settle(&mut s, now, bound(&timers));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn every_transaction_terminates(
        kind in 0u8..4,
        reliable in any::<bool>(),
        timers in timers(),
        ops in prop::collection::vec(op(), 0..40),
    ) {
        let reliability = if reliable { Reliability::Reliable } else { Reliability::Unreliable };
        match kind {
            0 => run_client(true, reliability, timers, &ops),
            1 => run_client(false, reliability, timers, &ops),
            2 => run_server(true, reliability, timers, &ops),
            _ => run_server(false, reliability, timers, &ops),
        }
    }
}
