//! Client transactions: the INVITE machine (RFC 3261 section 17.1.1, figure 5) and the
//! non-INVITE machine (17.1.2, figure 6).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use siplb_sip::{Datagram, Limits, Message, Method, parse_datagram};

use crate::ack::hop_by_hop_ack;
use crate::error::{InputError, KeyError};
use crate::key::{ClientKey, ClientProbe};
use crate::outbox::Outbox;
use crate::state::State;
use crate::timer_table::{Timer, TimerTable};
use crate::timers::{Reliability, Timers, deadline, retransmit_interval};

/// What a client transaction tells its user.
#[derive(Clone, Debug)]
pub enum ClientEvent {
    /// A 1xx, every one of them, retransmissions included (17.1.1.2).
    Provisional(Message),
    /// The first final response. For a non-2xx to an INVITE the ACK has already
    /// been queued.
    Final(Message),
    /// A 2xx to an INVITE after a final was passed up: a retransmission, or another
    /// fork's answer, while the transaction is Accepted (RFC 6026 Timer M) or
    /// Completed. Never absorbed, so the proxy can forward it.
    Late2xx(Message),
    /// No final response in time (Timer B, `invite_timeout`, Timer C or Timer F).
    /// Emitted at most once; the TU answers `408` in the transaction's place.
    Timeout,
    /// The transport could not send the request before any final response arrived.
    TransportError,
    /// A retransmitted final response was absorbed (and, for an INVITE, the ACK
    /// resent).
    Absorbed,
    /// The transaction is over; it can be dropped once its outputs are drained.
    Terminated,
}

/// One client transaction: sends a request and sees it through to its final
/// response or its timeout.
#[derive(Debug)]
pub struct ClientTransaction {
    key: ClientKey,
    invite: bool,
    /// The request's bytes, what a retransmission sends. Parsed again only to build a
    /// CANCEL or an ACK from it, which most transactions never do: a relayed request
    /// is not indexed after its edits (docs/BENCHMARKS-HISTORY.md, "Issue 19,
    /// eighteenth round"). Dropped once Accepted or past a non-INVITE's final, and
    /// boxed, so that a transaction lingering without it keeps no room for it.
    request: Option<Box<Bytes>>,
    reliability: Reliability,
    /// Shared by the transactions made with the same settings: a copy each was
    /// 128 bytes of every transaction, lingering ones included.
    timers: Arc<Timers>,
    state: State,
    /// Interval the running retransmission timer was armed with.
    interval: Duration,
    started: Instant,
    timed_out: bool,
    clock: TimerTable,
    outbox: Outbox<ClientEvent>,
}

impl ClientTransaction {
    /// Starts a transaction for `request`, whose top Via carries this element's
    /// branch. The request is queued for transmission at once.
    pub fn new(
        request: Message,
        reliability: Reliability,
        timers: impl Into<Arc<Timers>>,
        now: Instant,
    ) -> Result<ClientTransaction, KeyError> {
        let method = request.method().ok_or(KeyError::NotARequest)?;
        let key = ClientKey::from_request(&request)?;
        ClientTransaction::start(request.to_bytes(), method, key, reliability, timers, now)
    }

    /// [`ClientTransaction::new`] for a request known by its bytes, its method and the
    /// branch of its top Via, which this element wrote: a request it relays, whose
    /// edits it made itself on a message it had validated, so indexing the result
    /// again would tell nothing the transaction needs.
    pub fn from_sent(
        request: Bytes,
        method: Method<'_>,
        branch: &str,
        reliability: Reliability,
        timers: impl Into<Arc<Timers>>,
        now: Instant,
    ) -> Result<ClientTransaction, KeyError> {
        let key = ClientKey::new(branch, method)?;
        ClientTransaction::start(request, method, key, reliability, timers, now)
    }

    fn start(
        request: Bytes,
        method: Method<'_>,
        key: ClientKey,
        reliability: Reliability,
        timers: impl Into<Arc<Timers>>,
        now: Instant,
    ) -> Result<ClientTransaction, KeyError> {
        let invite = match method {
            Method::Ack => return Err(KeyError::Ack),
            m => m == Method::Invite,
        };
        let timers = timers.into();
        let mut tx = ClientTransaction {
            key,
            invite,
            reliability,
            state: if invite {
                State::Calling
            } else {
                State::Trying
            },
            interval: retransmit_interval(timers.t1),
            timers,
            started: now,
            timed_out: false,
            clock: TimerTable::default(),
            outbox: Outbox::default(),
            request: Some(Box::new(request)),
        };
        if let Some(r) = &tx.request {
            tx.outbox.transmit(Bytes::clone(r));
        }
        if !reliability.is_reliable() {
            tx.clock.set(Timer::Retransmit, deadline(now, tx.interval));
        }
        let timeout = if invite {
            tx.timers.timer_b()
        } else {
            tx.timers.non_invite_timeout
        };
        tx.clock.set(Timer::Timeout, deadline(now, timeout));
        Ok(tx)
    }

    pub fn key(&self) -> &ClientKey {
        &self.key
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Past its final (its final response passed up): only retransmissions and timers remain.
    fn settled(&self) -> bool {
        matches!(
            self.state,
            State::Completed | State::Accepted | State::Terminated
        )
    }

    pub fn is_invite(&self) -> bool {
        self.invite
    }

    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    /// True once [`ClientEvent::Timeout`] has been emitted.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// The request this transaction sends, parsed (a CANCEL is built from it); gone
    /// once a 2xx has Accepted an INVITE, or a non-INVITE has its final. `None` too
    /// if its bytes do not parse, which a relay's edits of a validated request rule
    /// out.
    pub fn request(&self) -> Option<Message> {
        let bytes = self.request.as_deref()?;
        // Room for its own size: it went out under the operator's limits, which may
        // allow more than the defaults (`sip.max_message_size`, up to 1 MB over TCP).
        let limits = Limits {
            max_message_size: bytes.len().max(Limits::default().max_message_size),
            ..Limits::default()
        };
        match parse_datagram(Bytes::clone(bytes), &limits) {
            Ok(Datagram::Message(m)) => Some(m),
            _ => None,
        }
    }

    /// True while the transaction holds its request (see [`ClientTransaction::request`]).
    pub fn holds_request(&self) -> bool {
        self.request.is_some()
    }

    /// Feeds a response that matched this transaction's key.
    pub fn handle_response(&mut self, response: Message, now: Instant) -> Result<(), InputError> {
        response.status().ok_or(InputError::NotAResponse)?;
        if !ClientProbe::of_response(&response).is_ok_and(|p| self.key.matches(&p)) {
            return Err(InputError::Unmatched);
        }
        self.handle_matched_response(response, now)
    }

    /// [`handle_response`](Self::handle_response) for a caller that found this
    /// transaction by the response's [`ClientProbe`] (a table searched with
    /// [`ClientKey::matches`]), which is not read again: a proxy reads it once per
    /// response this way; reading it twice was about 1% of a relayed call's
    /// instructions.
    pub fn handle_matched_response(
        &mut self,
        response: Message,
        now: Instant,
    ) -> Result<(), InputError> {
        let status = response.status().ok_or(InputError::NotAResponse)?;
        debug_assert!(
            ClientProbe::of_response(&response).is_ok_and(|p| self.key.matches(&p)),
            "the response is not this transaction's"
        );
        if self.invite {
            self.invite_response(status, response, now);
        } else {
            self.non_invite_response(status, response, now);
        }
        Ok(())
    }

    fn invite_response(&mut self, status: u16, response: Message, now: Instant) {
        match (self.state, status) {
            (State::Calling | State::Proceeding, 100..=199) => {
                let entering = self.state == State::Calling;
                self.state = State::Proceeding;
                self.clock.stop(Timer::Retransmit);
                // Timer C runs from the first provisional and restarts on each but 100
                // (16.7 step 2); after a timeout the give-up deadline stands instead.
                if !self.timed_out && (entering || status > 100) {
                    let timer_c = deadline(now, self.timers.proceeding_timeout);
                    self.clock.set(Timer::Timeout, timer_c);
                }
                self.outbox.event(ClientEvent::Provisional(response));
            }
            (State::Calling | State::Proceeding, 200..=299) => {
                // RFC 6026 Accepted: further 2xx (retransmissions, other forks) still
                // match this transaction for Timer M and go up as Late2xx, over any
                // transport, since 2xx retransmission is end to end.
                self.outbox.event(ClientEvent::Final(response));
                self.state = State::Accepted;
                self.clock.stop_all();
                self.request = None;
                self.clock
                    .set(Timer::Linger, deadline(now, self.timers.sixty_four_t1()));
            }
            (State::Calling | State::Proceeding, _) => {
                self.send_ack(&response);
                self.outbox.event(ClientEvent::Final(response));
                self.complete(self.timers.timer_d, now);
            }
            (State::Accepted | State::Completed | State::Terminated, 200..=299) => {
                self.outbox.event(ClientEvent::Late2xx(response));
            }
            (State::Completed, 300..) => {
                self.send_ack(&response);
                self.outbox.event(ClientEvent::Absorbed);
            }
            _ => {}
        }
    }

    fn non_invite_response(&mut self, status: u16, response: Message, now: Instant) {
        match (self.state, status) {
            (State::Trying | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                self.outbox.event(ClientEvent::Provisional(response));
            }
            (State::Trying | State::Proceeding, _) => {
                self.outbox.event(ClientEvent::Final(response));
                // Completed only absorbs retransmitted finals (Timer K): the request,
                // a BYE's whole text, would otherwise stay in memory for nothing.
                self.request = None;
                self.complete(self.timers.t4, now);
            }
            (State::Completed, 200..) => self.outbox.event(ClientEvent::Absorbed),
            _ => {}
        }
    }

    /// Built anew for each final so that its To tag is always the one acknowledged.
    fn send_ack(&mut self, response: &Message) {
        if let Some(request) = self.request()
            && let Some(ack) = hop_by_hop_ack(&request, response)
        {
            self.outbox.transmit(ack);
        }
    }

    /// Enters Completed, lingering (Timer D or K) only where retransmissions can come.
    fn complete(&mut self, linger: Duration, now: Instant) {
        self.state = State::Completed;
        self.clock.stop_all();
        let linger = self.reliability.linger(linger);
        if linger.is_zero() {
            self.terminate();
        } else {
            self.clock.set(Timer::Linger, deadline(now, linger));
        }
    }

    fn terminate(&mut self) {
        if self.state != State::Terminated {
            self.state = State::Terminated;
            self.clock.stop_all();
            self.outbox.event(ClientEvent::Terminated);
        }
    }

    /// The transport failed to send. Before a final response this ends the
    /// transaction (17.1.4); once Completed it is ignored, so that retransmitted
    /// finals are still absorbed rather than leaking to the TU.
    pub fn handle_transport_error(&mut self) {
        match self.state {
            State::Calling | State::Trying | State::Proceeding => {
                if !self.timed_out {
                    self.outbox.event(ClientEvent::TransportError);
                }
                self.terminate();
            }
            _ => {}
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.clock.take_due(now) {
            match timer {
                Timer::Retransmit => self.retransmit(now),
                Timer::Timeout => self.timeout(now),
                Timer::Linger => self.terminate(),
                // Only server transactions owe their sender a 100.
                Timer::Provisional => {}
            }
        }
    }

    fn retransmit(&mut self, now: Instant) {
        let waiting = matches!(
            self.state,
            State::Calling | State::Trying | State::Proceeding
        );
        if !waiting || self.timed_out {
            return;
        }
        if let Some(r) = &self.request {
            self.outbox.transmit(Bytes::clone(r));
        }
        // Timer A doubles without bound (Timer B ends it); Timer E doubles up to T2,
        // and runs at T2 once a provisional has arrived.
        let next = if self.invite {
            self.interval.saturating_mul(2)
        } else if self.state == State::Proceeding {
            self.timers.t2
        } else {
            self.interval.saturating_mul(2).min(self.timers.t2)
        };
        self.interval = retransmit_interval(next);
        self.clock
            .set(Timer::Retransmit, deadline(now, self.interval));
    }

    fn timeout(&mut self, now: Instant) {
        if self.timed_out {
            // The grace period after the timeout is over.
            self.terminate();
            return;
        }
        self.timed_out = true;
        self.outbox.event(ClientEvent::Timeout);
        self.clock.stop(Timer::Retransmit);
        let give_up = match self.state {
            State::Calling => deadline(self.started, self.timers.sixty_four_t1()),
            State::Proceeding if self.invite => deadline(now, self.timers.sixty_four_t1()),
            _ => now,
        };
        if give_up <= now {
            self.terminate();
        } else {
            self.clock.set(Timer::Timeout, give_up);
        }
    }

    /// The next bytes to send to the next hop.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.outbox.poll_transmit(self.settled())
    }

    /// When [`ClientTransaction::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.clock.next_deadline()
    }

    /// True when the deadline of [`ClientTransaction::poll_timeout`] is the linger's
    /// (Timer D, K or M) and nothing else waits: firing it late sends nothing and
    /// only keeps the transaction's state longer, so a caller may delay it to share a
    /// wake-up with others.
    pub fn lingering(&self) -> bool {
        self.clock.only_linger()
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.outbox.poll_event(self.settled())
    }
}

#[cfg(test)]
mod tests;
