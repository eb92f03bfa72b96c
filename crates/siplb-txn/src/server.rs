//! Server transactions: the INVITE machine (RFC 3261 section 17.2.1, figure 7, with
//! RFC 6026's Accepted state) and the non-INVITE machine (17.2.2, figure 8).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use siplb_sip::{Message, Method};

use crate::error::{InputError, KeyError};
use crate::key::{ServerKey, ServerProbe};
use crate::outbox::Outbox;
use crate::state::State;
use crate::timer_table::{Timer, TimerTable};
use crate::timers::{Reliability, Timers, deadline, retransmit_interval};

/// What a server transaction tells its user.
#[derive(Clone, Debug)]
pub enum ServerEvent {
    /// A retransmission of the request was absorbed; the latest response, if the
    /// machine resends one in this state, has been queued again.
    Absorbed,
    /// An ACK that arrived in the Accepted state: it acknowledges a 2xx, so it is end
    /// to end and the TU forwards it (RFC 6026).
    Ack(Message),
    /// Timer H fired: the ACK for a non-2xx final never came.
    Timeout,
    /// The TU has sent nothing within [`Timers::trying_after`] of
    /// [`ServerTransaction::defer_trying`], or the request came again before it had:
    /// the TU sends a 100 Trying now (RFC 3261 17.2.1).
    TryingDue,
    /// The transport could not send a response.
    TransportError,
    /// The transaction is over; it can be dropped once its outputs are drained.
    Terminated,
}

/// One server transaction: absorbs retransmissions of a received request and
/// carries the TU's responses back to its sender.
#[derive(Debug)]
pub struct ServerTransaction {
    key: ServerKey,
    invite: bool,
    reliability: Reliability,
    /// Shared by the transactions made with the same settings: a copy each was
    /// 128 bytes of every transaction, lingering ones included.
    timers: Arc<Timers>,
    state: State,
    /// Interval the running Timer G was armed with.
    interval: Duration,
    /// The latest response sent, resent when the request is retransmitted.
    last_response: Option<Bytes>,
    clock: TimerTable,
    outbox: Outbox<ServerEvent>,
}

impl ServerTransaction {
    /// Starts a transaction for a received request (not an ACK). Nothing is sent: the
    /// TU answers through [`ServerTransaction::send_response`], `100 Trying` included.
    pub fn new(
        request: &Message,
        reliability: Reliability,
        timers: impl Into<Arc<Timers>>,
    ) -> Result<ServerTransaction, KeyError> {
        let key = ServerKey::from_request(request)?;
        ServerTransaction::with_key(key, request, reliability, timers)
    }

    /// [`ServerTransaction::new`] for a TU that has already computed the request's key
    /// (to look for a transaction it belongs to): building one costs allocations.
    pub fn with_key(
        key: ServerKey,
        request: &Message,
        reliability: Reliability,
        timers: impl Into<Arc<Timers>>,
    ) -> Result<ServerTransaction, KeyError> {
        debug_assert!(ServerKey::from_request(request).is_ok_and(|k| k == key));
        let timers = timers.into();
        let invite = match request.method() {
            None => return Err(KeyError::NotARequest),
            Some(Method::Ack) => return Err(KeyError::Ack),
            Some(m) => m == Method::Invite,
        };
        Ok(ServerTransaction {
            key,
            invite,
            reliability,
            state: if invite {
                State::Proceeding
            } else {
                State::Trying
            },
            interval: retransmit_interval(timers.t1),
            timers,
            last_response: None,
            clock: TimerTable::default(),
            outbox: Outbox::default(),
        })
    }

    pub fn key(&self) -> &ServerKey {
        &self.key
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Past its final (its final response sent): only retransmissions and timers remain.
    fn settled(&self) -> bool {
        matches!(
            self.state,
            State::Completed | State::Confirmed | State::Accepted | State::Terminated
        )
    }

    pub fn is_invite(&self) -> bool {
        self.invite
    }

    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    /// True once the TU has sent a final response.
    pub fn has_final(&self) -> bool {
        !matches!(self.state, State::Trying | State::Proceeding)
    }

    /// For an INVITE whose TU has no response yet: a 100 Trying becomes due
    /// ([`ServerEvent::TryingDue`]) unless some response is sent within
    /// [`Timers::trying_after`]. A proxy whose next hop answers quickly (a 180 within
    /// milliseconds, typically) then sends its caller one datagram less per call, and
    /// wakes it once less.
    pub fn defer_trying(&mut self, now: Instant) {
        if self.invite && self.state == State::Proceeding && self.last_response.is_none() {
            self.clock
                .set(Timer::Provisional, deadline(now, self.timers.trying_after));
        }
    }

    /// Feeds a request that matched this transaction: a retransmission, or for an
    /// INVITE the ACK.
    pub fn handle_request(&mut self, request: Message, now: Instant) -> Result<(), InputError> {
        request.method().ok_or(InputError::NotARequest)?;
        if !ServerProbe::of_request(&request).is_ok_and(|p| self.key.matches(&p)) {
            return Err(InputError::Unmatched);
        }
        self.handle_matched_request(request, now)
    }

    /// [`handle_request`](Self::handle_request) for a caller that found this
    /// transaction by the request's [`ServerProbe`] (a table searched with
    /// [`ServerKey::matches`]), which is not read again: every call's ACK comes
    /// this way.
    pub fn handle_matched_request(
        &mut self,
        request: Message,
        now: Instant,
    ) -> Result<(), InputError> {
        let method = request.method().ok_or(InputError::NotARequest)?;
        debug_assert!(
            ServerProbe::of_request(&request).is_ok_and(|p| self.key.matches(&p)),
            "the request is not this transaction's"
        );
        if method == Method::Ack {
            self.handle_ack(request, now);
            return Ok(());
        }
        match self.state {
            State::Terminated => {}
            State::Proceeding | State::Completed => {
                if let Some(last) = &self.last_response {
                    self.outbox.transmit(last.clone());
                } else if self.clock.is_set(Timer::Provisional) {
                    // The sender has given up waiting: it needs the 100 now.
                    self.clock.stop(Timer::Provisional);
                    self.outbox.event(ServerEvent::TryingDue);
                }
                self.outbox.event(ServerEvent::Absorbed);
            }
            // Trying has nothing to resend yet; Confirmed and Accepted leave
            // retransmitting to the ACK and the 2xx sender respectively.
            _ => self.outbox.event(ServerEvent::Absorbed),
        }
        Ok(())
    }

    fn handle_ack(&mut self, ack: Message, now: Instant) {
        match self.state {
            State::Completed => {
                self.state = State::Confirmed;
                self.clock.stop_all();
                self.linger(self.timers.t4, now);
            }
            State::Confirmed => self.outbox.event(ServerEvent::Absorbed),
            State::Accepted => self.outbox.event(ServerEvent::Ack(ack)),
            _ => {}
        }
    }

    /// Sends a response from the TU (built with `siplb_sip::build_response`, or
    /// relayed from downstream). The transaction keeps the bytes to resend them.
    pub fn send_response(&mut self, response: Bytes, now: Instant) -> Result<(), InputError> {
        let status = status_code(&response).ok_or(InputError::StatusLine)?;
        let wrong_state = InputError::WrongState {
            status,
            state: self.state,
        };
        self.clock.stop(Timer::Provisional);
        match (self.state, status) {
            (State::Trying | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
            }
            (State::Proceeding, 200..=299) if self.invite => {
                // RFC 6026 Accepted: absorb INVITE retransmissions for Timer L.
                self.state = State::Accepted;
                let timer_l = deadline(now, self.timers.sixty_four_t1());
                self.clock.set(Timer::Linger, timer_l);
            }
            (State::Accepted, 200..=299) => {}
            (State::Proceeding, _) if self.invite => {
                self.state = State::Completed;
                if !self.reliability.is_reliable() {
                    self.interval = retransmit_interval(self.timers.t1);
                    self.clock
                        .set(Timer::Retransmit, deadline(now, self.interval));
                }
                let timer_h = deadline(now, self.timers.sixty_four_t1());
                self.clock.set(Timer::Timeout, timer_h);
            }
            (State::Trying | State::Proceeding, _) => {
                self.state = State::Completed;
                self.linger(self.timers.sixty_four_t1(), now);
            }
            _ => return Err(wrong_state),
        }
        if self.state == State::Accepted {
            // Nothing resends a 2xx from here (RFC 6026 leaves that to its sender), so
            // keeping it for Timer L would only hold memory: a call's largest message,
            // for 32 seconds.
            self.last_response = None;
            self.outbox.transmit(response);
        } else {
            self.outbox.transmit(response.clone());
            self.last_response = Some(response);
        }
        Ok(())
    }

    /// Waits out Timer I or J, or ends at once over a reliable transport.
    fn linger(&mut self, duration: Duration, now: Instant) {
        let duration = self.reliability.linger(duration);
        if duration.is_zero() {
            self.terminate();
        } else {
            self.clock.set(Timer::Linger, deadline(now, duration));
        }
    }

    fn terminate(&mut self) {
        if self.state != State::Terminated {
            self.state = State::Terminated;
            self.clock.stop_all();
            self.outbox.event(ServerEvent::Terminated);
        }
    }

    /// The transport could not send a response (17.2.4).
    pub fn handle_transport_error(&mut self) {
        if self.state != State::Terminated {
            self.outbox.event(ServerEvent::TransportError);
            self.terminate();
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.clock.take_due(now) {
            match timer {
                Timer::Retransmit => {
                    if self.state == State::Completed
                        && let Some(last) = &self.last_response
                    {
                        self.outbox.transmit(last.clone());
                        let next = self.interval.saturating_mul(2).min(self.timers.t2);
                        self.interval = retransmit_interval(next);
                        self.clock
                            .set(Timer::Retransmit, deadline(now, self.interval));
                    }
                }
                Timer::Timeout => {
                    self.outbox.event(ServerEvent::Timeout);
                    self.terminate();
                }
                Timer::Linger => self.terminate(),
                Timer::Provisional => {
                    if self.state == State::Proceeding && self.last_response.is_none() {
                        self.outbox.event(ServerEvent::TryingDue);
                    }
                }
            }
        }
    }

    /// The next bytes to send back towards the request's sender.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.outbox.poll_transmit(self.settled())
    }

    /// When [`ServerTransaction::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.clock.next_deadline()
    }

    /// True when the deadline of [`ServerTransaction::poll_timeout`] is the linger's
    /// (Timer I, J or L) and nothing else waits: firing it late sends nothing and
    /// only keeps the transaction's state longer, so a caller may delay it to share a
    /// wake-up with others.
    pub fn lingering(&self) -> bool {
        self.clock.only_linger()
    }

    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.outbox.poll_event(self.settled())
    }
}

/// The status code of a response's status line, without parsing the rest.
fn status_code(response: &[u8]) -> Option<u16> {
    let version = response.get(..8)?;
    let digits = response.get(8..11)?;
    if !version.eq_ignore_ascii_case(b"SIP/2.0 ") || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if !matches!(response.get(11), Some(b' ' | b'\r' | b'\n')) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    (100..700).contains(&code).then_some(code)
}

#[cfg(test)]
mod tests;
