use std::time::{Duration, Instant};

use bytes::Bytes;
use siplb_sip::Message;

use super::*;
use crate::test_messages::{request_with, response};

const UAC_VIA: &str = "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKuac1";

/// An INVITE from the same caller with a branch of its own: another transaction's.
fn another_invite() -> Message {
    request_with(
        "INVITE",
        "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKuac2",
        "",
    )
}

fn upstream(method: &str) -> Message {
    let to = if method == "ACK" { ";tag=bob1" } else { "" };
    request_with(method, UAC_VIA, to)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

struct Harness {
    t0: Instant,
    tx: ServerTransaction,
    sent: Vec<(Duration, Bytes)>,
    events: Vec<(Duration, ServerEvent)>,
}

impl Harness {
    fn new(method: &str, reliability: Reliability) -> Harness {
        let tx = ServerTransaction::new(&upstream(method), reliability, Timers::default()).unwrap();
        Harness {
            t0: Instant::now(),
            tx,
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    fn drain(&mut self, at: Duration) {
        while let Some(b) = self.tx.poll_transmit() {
            self.sent.push((at, b));
        }
        while let Some(e) = self.tx.poll_event() {
            self.events.push((at, e));
        }
    }

    fn request(&mut self, at: Duration, method: &str) {
        self.tx
            .handle_request(upstream(method), self.t0 + at)
            .unwrap();
        self.drain(at);
    }

    /// The TU answers the original request with `code`.
    fn respond(&mut self, at: Duration, code: u16) -> Bytes {
        let method = if self.tx.is_invite() {
            "INVITE"
        } else {
            "OPTIONS"
        };
        let bytes = response(&upstream(method), code).to_bytes();
        self.tx.send_response(bytes.clone(), self.t0 + at).unwrap();
        self.drain(at);
        bytes
    }

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

    fn count(&self, pred: impl Fn(&ServerEvent) -> bool) -> usize {
        self.events.iter().filter(|(_, e)| pred(e)).count()
    }

    fn at(&self, pred: impl Fn(&ServerEvent) -> bool) -> Vec<Duration> {
        self.events
            .iter()
            .filter(|(_, e)| pred(e))
            .map(|(t, _)| *t)
            .collect()
    }
}

#[test]
fn invite_retransmissions_get_the_latest_response_again() {
    let mut h = Harness::new("INVITE", Reliability::Unreliable);
    assert_eq!(h.tx.state(), State::Proceeding);
    // Before the TU answered there is nothing to resend.
    h.request(ms(100), "INVITE");
    assert!(h.sent.is_empty());
    assert_eq!(h.count(|e| matches!(e, ServerEvent::Absorbed)), 1);

    let trying = h.respond(ms(150), 100);
    h.request(ms(600), "INVITE");
    let ringing = h.respond(ms(700), 180);
    h.request(ms(1600), "INVITE");
    let sent: Vec<_> = h.sent.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(sent, vec![trying.clone(), trying, ringing.clone(), ringing]);
    assert_eq!(h.count(|e| matches!(e, ServerEvent::Absorbed)), 3);
    // Provisionals arm no timer: the TU's final is awaited.
    assert_eq!(h.tx.poll_timeout(), None);
}

#[test]
fn a_deferred_trying_falls_due_only_when_nothing_was_sent() {
    let trying_due = |e: &ServerEvent| matches!(e, ServerEvent::TryingDue);
    // Nothing from the TU within 200 ms: the 100 is due then, once.
    let mut h = Harness::new("INVITE", Reliability::Unreliable);
    h.tx.defer_trying(h.t0);
    assert_eq!(h.tx.poll_timeout(), Some(h.t0 + ms(200)));
    h.run_until(ms(199));
    assert_eq!(h.count(trying_due), 0);
    h.run_until(secs(10.0));
    assert_eq!(h.at(trying_due), vec![ms(200)]);
    assert_eq!(h.tx.poll_timeout(), None);

    // A 180 (or a final) first: no 100 at all, and no timer left.
    let mut h = Harness::new("INVITE", Reliability::Unreliable);
    h.tx.defer_trying(h.t0);
    h.respond(ms(3), 180);
    assert_eq!(h.tx.poll_timeout(), None);
    h.run_until(secs(10.0));
    assert_eq!(h.count(trying_due), 0);

    let mut h = Harness::new("INVITE", Reliability::Unreliable);
    h.tx.defer_trying(h.t0);
    h.respond(ms(3), 486);
    h.run_until(secs(100.0));
    assert_eq!(h.count(trying_due), 0);
    assert!(h.tx.is_terminated());

    // The INVITE again before the 100 was due: the caller is waiting, it is due now
    // (and not a second time at 200 ms).
    let mut h = Harness::new("INVITE", Reliability::Unreliable);
    h.tx.defer_trying(h.t0);
    h.request(ms(150), "INVITE");
    assert_eq!(h.at(trying_due), vec![ms(150)]);
    assert_eq!(h.tx.poll_timeout(), None);
    h.run_until(secs(10.0));
    assert_eq!(h.count(trying_due), 1);

    // Only an INVITE's transaction defers, and only before any response.
    let mut h = Harness::new("OPTIONS", Reliability::Unreliable);
    h.tx.defer_trying(h.t0);
    assert_eq!(h.tx.poll_timeout(), None);
    let mut h = Harness::new("INVITE", Reliability::Unreliable);
    h.respond(ms(1), 100);
    h.tx.defer_trying(h.t0);
    assert_eq!(h.tx.poll_timeout(), None);
}

#[test]
fn timer_g_doubles_up_to_t2_until_timer_h() {
    let mut h = Harness::new("INVITE", Reliability::Unreliable);
    let busy = h.respond(Duration::ZERO, 486);
    assert_eq!(h.tx.state(), State::Completed);
    h.run_until(Duration::from_secs(100));
    let at: Vec<_> = h.sent.iter().map(|(t, _)| *t).collect();
    let expected: Vec<_> = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        .into_iter()
        .map(secs)
        .collect();
    assert_eq!(at, expected);
    assert!(h.sent.iter().all(|(_, b)| b == &busy));
    assert_eq!(
        h.at(|e| matches!(e, ServerEvent::Timeout)),
        vec![secs(32.0)]
    );
    assert_eq!(
        h.at(|e| matches!(e, ServerEvent::Terminated)),
        vec![secs(32.0)]
    );
    assert!(h.tx.is_terminated());
}

#[test]
fn ack_stops_timer_g_and_timer_i_ends_the_transaction() {
    let mut h = Harness::new("INVITE", Reliability::Unreliable);
    let busy = h.respond(Duration::ZERO, 486);
    h.run_until(secs(2.0));
    assert_eq!(h.sent.len(), 3);
    // An INVITE retransmission in Completed gets the final again.
    h.request(secs(2.0), "INVITE");
    assert_eq!(h.sent.len(), 4);
    assert_eq!(h.sent[3].1, busy);

    h.request(secs(2.5), "ACK");
    assert_eq!(h.tx.state(), State::Confirmed);
    h.request(secs(3.0), "ACK");
    h.request(secs(3.1), "INVITE");
    h.run_until(Duration::from_secs(100));
    assert_eq!(h.sent.len(), 4);
    assert_eq!(h.count(|e| matches!(e, ServerEvent::Timeout)), 0);
    assert_eq!(
        h.at(|e| matches!(e, ServerEvent::Terminated)),
        vec![secs(7.5)]
    );
}

#[test]
fn reliable_invite_server_waits_for_ack_without_retransmitting() {
    let mut h = Harness::new("INVITE", Reliability::Reliable);
    h.respond(Duration::ZERO, 603);
    assert_eq!(h.tx.poll_timeout(), Some(h.t0 + Duration::from_secs(32)));
    h.request(secs(1.0), "ACK");
    // Timer I is zero.
    assert!(h.tx.is_terminated());
    assert_eq!(h.sent.len(), 1);

    let mut h = Harness::new("INVITE", Reliability::Reliable);
    h.respond(Duration::ZERO, 603);
    h.run_until(Duration::from_secs(100));
    assert_eq!(h.sent.len(), 1);
    assert_eq!(
        h.at(|e| matches!(e, ServerEvent::Timeout)),
        vec![secs(32.0)]
    );
}

#[test]
fn two_xx_enters_accepted_for_timer_l() {
    let mut h = Harness::new("INVITE", Reliability::Unreliable);
    h.respond(ms(10), 180);
    let ok = h.respond(ms(20), 200);
    assert_eq!(h.tx.state(), State::Accepted);
    // INVITE retransmissions are absorbed without a resend: retransmitting the 2xx is
    // the UAS's job, and its retransmissions come through the TU.
    h.request(ms(500), "INVITE");
    assert_eq!(h.sent.len(), 2);
    let again = h.respond(ms(520), 200);
    assert_eq!(again, ok);
    assert_eq!(h.sent.len(), 3);
    let tu = response(&upstream("INVITE"), 486).to_bytes();
    assert_eq!(
        h.tx.send_response(tu, h.t0 + ms(600)),
        Err(InputError::WrongState {
            status: 486,
            state: State::Accepted
        })
    );
    // An ACK matching in Accepted acknowledges the 2xx: the TU forwards it.
    h.request(secs(1.0), "ACK");
    assert_eq!(h.count(|e| matches!(e, ServerEvent::Ack(_))), 1);
    assert_eq!(h.tx.state(), State::Accepted);
    h.run_until(Duration::from_secs(100));
    assert_eq!(
        h.at(|e| matches!(e, ServerEvent::Terminated)),
        vec![ms(20) + Duration::from_secs(32)]
    );
    assert_eq!(h.count(|e| matches!(e, ServerEvent::Timeout)), 0);
}

#[test]
fn non_invite_server_absorbs_and_lingers_for_timer_j() {
    let mut h = Harness::new("OPTIONS", Reliability::Unreliable);
    assert_eq!(h.tx.state(), State::Trying);
    h.request(ms(100), "OPTIONS");
    assert!(h.sent.is_empty());
    let trying = h.respond(ms(200), 100);
    assert_eq!(h.tx.state(), State::Proceeding);
    h.request(ms(700), "OPTIONS");
    let ok = h.respond(ms(800), 200);
    assert_eq!(h.tx.state(), State::Completed);
    h.request(ms(1300), "OPTIONS");
    let sent: Vec<_> = h.sent.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(sent, vec![trying.clone(), trying, ok.clone(), ok.clone()]);
    assert_eq!(h.count(|e| matches!(e, ServerEvent::Absorbed)), 3);
    assert_eq!(
        h.tx.send_response(ok.clone(), h.t0 + ms(900)),
        Err(InputError::WrongState {
            status: 200,
            state: State::Completed
        })
    );
    h.run_until(Duration::from_secs(100));
    // Timer J: no retransmissions of its own, only the wait.
    assert_eq!(h.sent.len(), 4);
    assert_eq!(
        h.at(|e| matches!(e, ServerEvent::Terminated)),
        vec![ms(800) + Duration::from_secs(32)]
    );

    let mut h = Harness::new("OPTIONS", Reliability::Reliable);
    h.respond(ms(5), 404);
    assert!(h.tx.is_terminated());
}

/// A caller that found the transaction by the request's probe hands the request in
/// alone: the key matches the probes of its own requests (the INVITE again, its ACK)
/// only, and a request so found is taken as `handle_request` takes it.
#[test]
fn a_request_found_by_its_probe_is_taken_as_handle_request_takes_it() {
    let mut h = Harness::new("INVITE", Reliability::Unreliable);
    let now = h.t0;
    let other = another_invite();
    assert!(
        !h.tx
            .key()
            .matches(&ServerProbe::of_request(&other).unwrap())
    );
    let ringing =
        h.tx.send_response(response(&upstream("INVITE"), 180).to_bytes(), now);
    assert_eq!(ringing, Ok(()));
    while h.tx.poll_transmit().is_some() {}
    let again = upstream("INVITE");
    assert!(
        h.tx.key()
            .matches(&ServerProbe::of_request(&again).unwrap())
    );
    assert_eq!(h.tx.handle_matched_request(again, now), Ok(()));
    assert!(h.tx.poll_transmit().is_some(), "the 180 is sent again");
    let ok =
        h.tx.send_response(response(&upstream("INVITE"), 200).to_bytes(), now);
    assert_eq!(ok, Ok(()));
    let ack = upstream("ACK");
    assert!(h.tx.key().matches(&ServerProbe::of_request(&ack).unwrap()));
    assert_eq!(h.tx.handle_matched_request(ack, now), Ok(()));
    assert!(std::iter::from_fn(|| h.tx.poll_event()).any(|e| matches!(e, ServerEvent::Ack(_))));
}

#[test]
fn refuses_what_is_not_its_own() {
    let mut h = Harness::new("INVITE", Reliability::Unreliable);
    let now = h.t0;
    let other = another_invite();
    assert_eq!(h.tx.handle_request(other, now), Err(InputError::Unmatched));
    assert_eq!(
        h.tx.handle_request(upstream("CANCEL"), now),
        Err(InputError::Unmatched)
    );
    let resp = response(&upstream("INVITE"), 200);
    assert_eq!(h.tx.handle_request(resp, now), Err(InputError::NotARequest));
    assert_eq!(
        h.tx.send_response(Bytes::from_static(b"INVITE sip:x SIP/2.0\r\n"), now),
        Err(InputError::StatusLine)
    );
    assert_eq!(h.tx.state(), State::Proceeding);
    assert!(
        ServerTransaction::new(&upstream("ACK"), Reliability::Unreliable, Timers::default())
            .is_err()
    );
}

#[test]
fn transport_error_terminates() {
    let mut h = Harness::new("INVITE", Reliability::Unreliable);
    h.respond(Duration::ZERO, 500);
    h.tx.handle_transport_error();
    h.drain(Duration::ZERO);
    assert!(h.tx.is_terminated());
    assert_eq!(h.count(|e| matches!(e, ServerEvent::TransportError)), 1);
    assert_eq!(h.count(|e| matches!(e, ServerEvent::Terminated)), 1);
    assert_eq!(h.tx.poll_timeout(), None);
}

#[test]
fn status_line_parsing() {
    assert_eq!(status_code(b"SIP/2.0 180 Ringing\r\n"), Some(180));
    assert_eq!(status_code(b"sip/2.0 699\r\n"), Some(699));
    assert_eq!(status_code(b"SIP/2.0 099 x\r\n"), None);
    assert_eq!(status_code(b"SIP/2.0 1800 x\r\n"), None);
    assert_eq!(status_code(b"SIP/2.0 18"), None);
    assert_eq!(status_code(b"SIP/3.0 200 OK\r\n"), None);
}
