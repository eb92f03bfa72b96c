use std::time::{Duration, Instant};

use bytes::Bytes;
use siplb_sip::{HeaderName, Message, Method};

use super::*;
use crate::test_messages::{invite, options, request_with, response};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What came out of a transaction, stamped with the offset from the start.
#[derive(Debug, Default)]
struct Log {
    sent: Vec<(Duration, Bytes)>,
    events: Vec<(Duration, ClientEvent)>,
}

impl Log {
    fn sent_at(&self) -> Vec<Duration> {
        self.sent.iter().map(|(t, _)| *t).collect()
    }

    fn count(&self, pred: impl Fn(&ClientEvent) -> bool) -> usize {
        self.events.iter().filter(|(_, e)| pred(e)).count()
    }

    fn at(&self, pred: impl Fn(&ClientEvent) -> bool) -> Vec<Duration> {
        self.events
            .iter()
            .filter(|(_, e)| pred(e))
            .map(|(t, _)| *t)
            .collect()
    }
}

struct Harness {
    t0: Instant,
    tx: ClientTransaction,
    log: Log,
}

impl Harness {
    fn new(request: Message, reliability: Reliability, timers: Timers) -> Harness {
        let t0 = Instant::now();
        let tx = ClientTransaction::new(request, reliability, timers, t0).unwrap();
        let mut h = Harness {
            t0,
            tx,
            log: Log::default(),
        };
        h.drain(Duration::ZERO);
        h
    }

    fn drain(&mut self, at: Duration) {
        while let Some(b) = self.tx.poll_transmit() {
            self.log.sent.push((at, b));
        }
        while let Some(e) = self.tx.poll_event() {
            self.log.events.push((at, e));
        }
    }

    /// Fires timers as they fall due, up to `end` after the start.
    fn run_until(&mut self, end: Duration) {
        while let Some(at) = self.tx.poll_timeout() {
            let offset = at - self.t0;
            if offset > end {
                break;
            }
            self.tx.handle_timeout(at);
            self.drain(offset);
        }
    }

    fn respond(&mut self, at: Duration, response: Message) {
        self.tx.handle_response(response, self.t0 + at).unwrap();
        self.drain(at);
    }

    fn deadline(&self) -> Option<Duration> {
        self.tx.poll_timeout().map(|at| at - self.t0)
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn long_invite_timeout() -> Timers {
    Timers {
        invite_timeout: Duration::from_secs(300),
        ..Timers::default()
    }
}

#[test]
fn timer_a_doubles_until_timer_b() {
    let mut h = Harness::new(invite(), Reliability::Unreliable, long_invite_timeout());
    h.run_until(Duration::from_secs(100));
    // The first send, then T1, 2*T1, 4*T1... after the previous one.
    let expected: Vec<_> = [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
        .into_iter()
        .map(secs)
        .collect();
    assert_eq!(h.log.sent_at(), expected);
    assert!(h.log.sent.iter().all(|(_, b)| b == &invite().to_bytes()));
    assert_eq!(
        h.log.at(|e| matches!(e, ClientEvent::Timeout)),
        vec![secs(32.0)]
    );
    assert_eq!(
        h.log.at(|e| matches!(e, ClientEvent::Terminated)),
        vec![secs(32.0)]
    );
    assert_eq!(h.tx.state(), State::Terminated);
    assert_eq!(h.tx.poll_timeout(), None);
}

#[test]
fn invite_timeout_fires_once_then_waits_out_timer_b() {
    let mut h = Harness::new(invite(), Reliability::Unreliable, Timers::default());
    h.run_until(Duration::from_secs(10));
    assert_eq!(
        h.log.sent_at(),
        vec![secs(0.0), secs(0.5), secs(1.5), secs(3.5)]
    );
    assert_eq!(
        h.log.at(|e| matches!(e, ClientEvent::Timeout)),
        vec![secs(5.0)]
    );
    assert!(h.tx.timed_out());
    assert_eq!(h.tx.state(), State::Calling);
    // No retransmission after giving up; the transaction lingers until 64*T1.
    assert_eq!(h.deadline(), Some(secs(32.0)));

    // A late provisional still reaches the TU, which may now CANCEL (RFC 3261 9.1).
    let inv = invite();
    h.respond(secs(12.0), response(&inv, 180));
    assert_eq!(h.tx.state(), State::Proceeding);
    assert_eq!(h.log.count(|e| matches!(e, ClientEvent::Provisional(_))), 1);
    assert_eq!(h.deadline(), Some(secs(32.0)));
    // Its 487 is acknowledged and passed up.
    h.respond(secs(13.0), response(&inv, 487));
    assert_eq!(h.log.sent.len(), 5);
    let ack = Message::parse(h.log.sent[4].1.clone()).unwrap();
    assert_eq!(ack.method(), Some(Method::Ack));
    assert_eq!(h.log.count(|e| matches!(e, ClientEvent::Final(_))), 1);
    h.run_until(Duration::from_secs(100));
    assert_eq!(h.log.count(|e| matches!(e, ClientEvent::Timeout)), 1);
    assert_eq!(
        h.log.at(|e| matches!(e, ClientEvent::Terminated)),
        vec![secs(45.0)]
    );
}

#[test]
fn timed_out_invite_without_answer_ends_at_timer_b_silently() {
    let mut h = Harness::new(invite(), Reliability::Unreliable, Timers::default());
    h.run_until(Duration::from_secs(100));
    assert_eq!(h.log.count(|e| matches!(e, ClientEvent::Timeout)), 1);
    assert_eq!(
        h.log.at(|e| matches!(e, ClientEvent::Terminated)),
        vec![secs(32.0)]
    );
    assert_eq!(h.log.events.len(), 2);
}

#[test]
fn late_wakeup_still_times_out_once() {
    let mut h = Harness::new(invite(), Reliability::Unreliable, long_invite_timeout());
    h.tx.handle_timeout(h.t0 + Duration::from_secs(1000));
    h.drain(Duration::from_secs(1000));
    assert_eq!(h.log.count(|e| matches!(e, ClientEvent::Timeout)), 1);
    assert_eq!(h.log.count(|e| matches!(e, ClientEvent::Terminated)), 1);
    // Timer B is overdue too, so the overdue Timer A resends nothing.
    assert_eq!(h.log.sent.len(), 1);
    assert!(h.tx.is_terminated());
}

#[test]
fn timer_e_doubles_up_to_t2_then_timer_f() {
    let mut h = Harness::new(options(), Reliability::Unreliable, Timers::default());
    h.run_until(Duration::from_secs(100));
    let expected: Vec<_> = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        .into_iter()
        .map(secs)
        .collect();
    assert_eq!(h.log.sent_at(), expected);
    assert_eq!(
        h.log.at(|e| matches!(e, ClientEvent::Timeout)),
        vec![secs(32.0)]
    );
    assert_eq!(
        h.log.at(|e| matches!(e, ClientEvent::Terminated)),
        vec![secs(32.0)]
    );
}

#[test]
fn timer_e_runs_at_t2_in_proceeding() {
    let mut h = Harness::new(options(), Reliability::Unreliable, Timers::default());
    h.respond(ms(200), response(&options(), 100));
    assert_eq!(h.tx.state(), State::Proceeding);
    h.run_until(Duration::from_secs(14));
    let expected: Vec<_> = [0.0, 0.5, 4.5, 8.5, 12.5].into_iter().map(secs).collect();
    assert_eq!(h.log.sent_at(), expected);
}

#[test]
fn short_non_invite_timeout_for_probes() {
    let timers = Timers {
        non_invite_timeout: Duration::from_secs(5),
        ..Timers::default()
    };
    let mut h = Harness::new(options(), Reliability::Unreliable, timers);
    h.run_until(Duration::from_secs(100));
    assert_eq!(
        h.log.sent_at(),
        vec![secs(0.0), secs(0.5), secs(1.5), secs(3.5)]
    );
    assert_eq!(
        h.log.at(|e| matches!(e, ClientEvent::Timeout)),
        vec![secs(5.0)]
    );
    assert!(h.tx.is_terminated());
}

#[test]
fn reliable_transports_never_retransmit() {
    for request in [invite(), options()] {
        let mut h = Harness::new(request, Reliability::Reliable, long_invite_timeout());
        h.run_until(Duration::from_secs(100));
        assert_eq!(h.log.sent_at(), vec![Duration::ZERO]);
        assert_eq!(
            h.log.at(|e| matches!(e, ClientEvent::Timeout)),
            vec![secs(32.0)]
        );
        assert!(h.tx.is_terminated());
    }
}

#[test]
fn non_2xx_final_is_acked_and_retransmissions_absorbed_until_timer_d() {
    let inv = invite();
    let mut h = Harness::new(inv.clone(), Reliability::Unreliable, Timers::default());
    h.respond(ms(100), response(&inv, 100));
    h.respond(ms(300), response(&inv, 486));
    assert_eq!(h.tx.state(), State::Completed);
    assert_eq!(
        h.log
            .count(|e| matches!(e, ClientEvent::Final(m) if m.status() == Some(486))),
        1
    );
    assert_eq!(h.log.sent.len(), 2);
    let ack_bytes = h.log.sent[1].1.clone();
    let ack = Message::parse(ack_bytes.clone()).unwrap();
    assert_eq!(ack.method(), Some(Method::Ack));
    assert_eq!(ack.request_uri_text(), inv.request_uri_text());
    assert_eq!(ack.vias().count(), 1);
    assert_eq!(ack.top_via().unwrap().branch(), Some("z9hG4bKlb1"));
    assert_eq!(ack.to_tag(), Some("bob1"));
    assert_eq!(ack.header_values(HeaderName::Route).count(), 2);
    assert_eq!(
        ack.cseq().map(|c| (c.seq, c.method)),
        Some((314159, Method::Ack))
    );

    // Each retransmitted final gets the same ACK again and nothing goes up.
    h.respond(secs(1.0), response(&inv, 486));
    h.respond(secs(2.0), response(&inv, 486));
    assert_eq!(h.log.sent.len(), 4);
    assert!(h.log.sent[2..].iter().all(|(_, b)| b == &ack_bytes));
    assert_eq!(h.log.count(|e| matches!(e, ClientEvent::Final(_))), 1);
    assert_eq!(h.log.count(|e| matches!(e, ClientEvent::Absorbed)), 2);
    // Provisionals after the final are dropped.
    h.respond(secs(3.0), response(&inv, 180));
    assert_eq!(h.log.count(|e| matches!(e, ClientEvent::Provisional(_))), 1);

    assert_eq!(h.deadline(), Some(ms(300) + Duration::from_secs(32)));
    h.run_until(Duration::from_secs(100));
    assert_eq!(
        h.log.at(|e| matches!(e, ClientEvent::Terminated)),
        vec![ms(300) + Duration::from_secs(32)]
    );
    assert_eq!(h.log.count(|e| matches!(e, ClientEvent::Timeout)), 0);
}

#[test]
fn timer_d_is_zero_over_reliable_transports() {
    let inv = invite();
    let mut h = Harness::new(inv.clone(), Reliability::Reliable, Timers::default());
    h.respond(ms(300), response(&inv, 503));
    assert_eq!(h.log.sent.len(), 2);
    assert!(h.tx.is_terminated());
    assert!(matches!(
        h.log.events.last(),
        Some((_, ClientEvent::Terminated))
    ));
}

#[test]
fn two_xx_accepts_and_later_2xx_are_surfaced_until_timer_m() {
    let inv = invite();
    let mut h = Harness::new(inv.clone(), Reliability::Unreliable, Timers::default());
    h.respond(ms(100), response(&inv, 180));
    h.respond(ms(200), response(&inv, 200));
    assert_eq!(h.tx.state(), State::Accepted);
    assert!(
        h.tx.request().is_none(),
        "nothing is built from the request any more"
    );
    assert_eq!(
        h.tx.outbox.buffered(),
        0,
        "drained while Accepted: the queues give their buffers back"
    );
    assert_eq!(
        h.log
            .count(|e| matches!(e, ClientEvent::Final(m) if m.status() == Some(200))),
        1
    );
    // No ACK: the 2xx ACK is end to end.
    assert_eq!(h.log.sent.len(), 1);
    h.respond(ms(700), response(&inv, 200));
    h.respond(ms(1700), response(&inv, 200));
    assert_eq!(h.log.count(|e| matches!(e, ClientEvent::Late2xx(_))), 2);
    assert_eq!(h.log.sent.len(), 1);
    // Timer M (64*T1) after the first 2xx, whatever the transport.
    assert_eq!(h.deadline(), Some(ms(200) + secs(32.0)));
    h.run_until(secs(40.0));
    assert_eq!(
        h.log.at(|e| matches!(e, ClientEvent::Terminated)),
        [ms(200) + secs(32.0)]
    );
    assert_eq!(h.tx.poll_timeout(), None);
}

#[test]
fn timer_m_runs_over_reliable_transports_too() {
    let inv = invite();
    let mut h = Harness::new(inv.clone(), Reliability::Reliable, Timers::default());
    h.respond(ms(100), response(&inv, 200));
    assert_eq!(h.tx.state(), State::Accepted);
    assert_eq!(h.deadline(), Some(ms(100) + secs(32.0)));
}

#[test]
fn two_xx_after_a_non_2xx_final_is_surfaced() {
    let inv = invite();
    let mut h = Harness::new(inv.clone(), Reliability::Unreliable, Timers::default());
    h.respond(ms(100), response(&inv, 480));
    h.respond(ms(200), response(&inv, 200));
    assert_eq!(h.log.count(|e| matches!(e, ClientEvent::Late2xx(_))), 1);
    assert_eq!(h.tx.state(), State::Completed);
}

#[test]
fn timer_c_restarts_on_provisionals_other_than_100() {
    let inv = invite();
    let mut h = Harness::new(inv.clone(), Reliability::Unreliable, Timers::default());
    h.respond(ms(100), response(&inv, 100));
    // Proceeding stops Timer A and replaces Timer B with Timer C.
    assert_eq!(h.deadline(), Some(ms(100) + Duration::from_secs(180)));
    h.respond(secs(10.0), response(&inv, 100));
    assert_eq!(h.deadline(), Some(ms(100) + Duration::from_secs(180)));
    h.respond(secs(20.0), response(&inv, 180));
    h.respond(secs(20.5), response(&inv, 180));
    assert_eq!(h.log.count(|e| matches!(e, ClientEvent::Provisional(_))), 4);
    assert_eq!(h.deadline(), Some(secs(200.5)));
    h.run_until(Duration::from_secs(1000));
    assert_eq!(h.log.sent.len(), 1);
    assert_eq!(
        h.log.at(|e| matches!(e, ClientEvent::Timeout)),
        vec![secs(200.5)]
    );
    // After Timer C the TU cancels; without a final the transaction ends 64*T1 later.
    assert_eq!(
        h.log.at(|e| matches!(e, ClientEvent::Terminated)),
        vec![secs(232.5)]
    );
}

#[test]
fn non_invite_final_then_timer_k() {
    let opt = options();
    let mut h = Harness::new(opt.clone(), Reliability::Unreliable, Timers::default());
    assert!(
        h.tx.request().is_some(),
        "kept while it may be retransmitted"
    );
    h.respond(ms(100), response(&opt, 200));
    assert_eq!(h.tx.state(), State::Completed);
    assert!(
        h.tx.request().is_none(),
        "Timer K only absorbs: the request is not kept for it"
    );
    h.respond(ms(600), response(&opt, 200));
    assert_eq!(h.log.count(|e| matches!(e, ClientEvent::Final(_))), 1);
    assert_eq!(h.log.count(|e| matches!(e, ClientEvent::Absorbed)), 1);
    h.run_until(Duration::from_secs(100));
    assert_eq!(h.log.sent.len(), 1);
    assert_eq!(
        h.log.at(|e| matches!(e, ClientEvent::Terminated)),
        vec![ms(100) + Duration::from_secs(5)]
    );

    let mut h = Harness::new(opt.clone(), Reliability::Reliable, Timers::default());
    h.respond(ms(100), response(&opt, 404));
    assert!(h.tx.is_terminated());
}

/// An INVITE of another transaction: another branch of the same element.
fn another_invite() -> Message {
    request_with(
        "INVITE",
        "SIP/2.0/UDP lb.example.com:5060;branch=z9hG4bKlb2",
        "",
    )
}

#[test]
fn foreign_responses_are_refused() {
    let (inv, other) = (invite(), another_invite());
    let mut h = Harness::new(inv.clone(), Reliability::Unreliable, Timers::default());
    assert_eq!(
        h.tx.handle_response(response(&other, 200), h.t0),
        Err(InputError::Unmatched)
    );
    let cancel = request_with(
        "CANCEL",
        "SIP/2.0/UDP lb.example.com:5060;branch=z9hG4bKlb1",
        "",
    );
    assert_eq!(
        h.tx.handle_response(response(&cancel, 200), h.t0),
        Err(InputError::Unmatched)
    );
    assert_eq!(
        h.tx.handle_response(inv, h.t0),
        Err(InputError::NotAResponse)
    );
    assert_eq!(h.tx.state(), State::Calling);
}

/// A caller that found the transaction by the response's probe hands the response in
/// alone: the key matches the probes of its own responses only, and a response so
/// found is taken as `handle_response` takes it.
#[test]
fn a_response_found_by_its_probe_is_taken_as_handle_response_takes_it() {
    let (inv, other) = (invite(), another_invite());
    let mut h = Harness::new(inv.clone(), Reliability::Unreliable, Timers::default());
    let foreign = response(&other, 180);
    assert!(
        !h.tx
            .key()
            .matches(&ClientProbe::of_response(&foreign).unwrap())
    );
    assert_eq!(
        h.tx.handle_response(foreign, h.t0),
        Err(InputError::Unmatched)
    );
    assert_eq!(h.tx.state(), State::Calling);
    let ringing = response(&inv, 180);
    assert!(
        h.tx.key()
            .matches(&ClientProbe::of_response(&ringing).unwrap())
    );
    assert_eq!(h.tx.handle_matched_response(ringing, h.t0), Ok(()));
    assert_eq!(h.tx.state(), State::Proceeding);
}

#[test]
fn ack_and_responses_cannot_start_a_client_transaction() {
    let t0 = Instant::now();
    let ack = request_with(
        "ACK",
        "SIP/2.0/UDP lb.example.com:5060;branch=z9hG4bKlb1",
        "",
    );
    assert_eq!(
        ClientTransaction::new(ack, Reliability::Unreliable, Timers::default(), t0).err(),
        Some(KeyError::Ack)
    );
    let resp = response(&invite(), 200);
    assert_eq!(
        ClientTransaction::new(resp, Reliability::Unreliable, Timers::default(), t0).err(),
        Some(KeyError::NotARequest)
    );
}

#[test]
fn transport_error_before_a_final_ends_the_transaction() {
    let mut h = Harness::new(invite(), Reliability::Unreliable, Timers::default());
    h.tx.handle_transport_error();
    h.drain(Duration::ZERO);
    assert!(h.tx.is_terminated());
    assert_eq!(h.log.count(|e| matches!(e, ClientEvent::TransportError)), 1);
    assert_eq!(h.tx.poll_timeout(), None);

    // Once Completed the error is ignored: retransmitted finals stay absorbed.
    let inv = invite();
    let mut h = Harness::new(inv.clone(), Reliability::Unreliable, Timers::default());
    h.respond(ms(100), response(&inv, 486));
    h.tx.handle_transport_error();
    h.drain(ms(100));
    assert_eq!(h.tx.state(), State::Completed);
    assert_eq!(h.log.count(|e| matches!(e, ClientEvent::TransportError)), 0);
}

/// A relayed request larger than the default size limit (an operator may raise it, and
/// TCP carries it) is still read back for the ACK of a non-2xx and for a CANCEL.
#[test]
fn a_request_kept_as_bytes_is_read_back_whatever_its_size() {
    let small = invite();
    let text = String::from_utf8(small.as_bytes().to_vec()).unwrap();
    let body = "v=0\r\n".repeat(14_000);
    let text = text.replace(
        "Content-Length: 0\r\n\r\n",
        &format!("Content-Length: {}\r\n\r\n{body}", body.len()),
    );
    assert!(text.len() > Limits::default().max_message_size);
    let t0 = Instant::now();
    let mut tx = ClientTransaction::from_sent(
        Bytes::from(text),
        Method::Invite,
        "z9hG4bKlb1",
        Reliability::Reliable,
        Timers::default(),
        t0,
    )
    .unwrap();
    assert!(tx.poll_transmit().is_some());
    assert_eq!(tx.request().map(|r| r.body().len()), Some(body.len()));
    tx.handle_response(response(&small, 486), t0 + ms(10))
        .unwrap();
    let ack = tx.poll_transmit().expect("the ACK of the 486");
    assert!(ack.starts_with(b"ACK "));
}
