//! Responses in, and what client transactions report: each goes to what its
//! transaction was for. A response is accepted only from where its request went
//! (branches are unpredictable, and the source must match), and the answers of
//! attempts that are over never reach the caller: they are cancelled, or acknowledged
//! and ended.

use std::time::Instant;

use siplb_sip::Message;
use siplb_txn::{ClientEvent, ClientProbe};
use tracing::debug;

use crate::addr::{Peer, Transport};
use crate::call::{Failure, Input, Phase};
use crate::proxy::Proxy;
use crate::slab::Id;
use crate::transactions::ClientRole;

/// Where an attempt stands in its call.
enum AttemptIs {
    /// The call's attempt in flight.
    Current,
    /// The attempt that answered the call.
    Answering,
    /// Given up, or its call is over.
    Over,
}

impl Proxy {
    pub(crate) fn on_response(&mut self, now: Instant, msg: Message, peer: Peer) {
        let Ok(probe) = ClientProbe::of_response(&msg) else {
            return;
        };
        let Some(id) = self.txns.client_id(&probe) else {
            self.on_stray_response(now, &msg, peer);
            return;
        };
        let Some(ctx) = self.txns.clients.get_mut(id) else {
            return;
        };
        if !same_source(&ctx.peer, &peer) {
            self.stats.responses_from_elsewhere += 1;
            debug!(expected = %ctx.peer, from = %peer, "response from elsewhere than its request went: dropped");
            return;
        }
        if let Some(feedback) = crate::overload::feedback(&msg)
            && let Some(id) =
                self.balancer
                    .overload_feedback(peer.addr.ip(), peer.addr.port(), feedback)
        {
            debug!(
                destination = id,
                percent = feedback.percent,
                validity_ms = feedback.validity_ms,
                "overload feedback"
            );
        }
        if let Err(e) = ctx.tx.handle_matched_response(msg, now) {
            debug!(error = %e, "response not taken by its transaction");
        }
        self.txns
            .drain_client(id, &mut self.agenda, &mut self.out, &mut self.work);
    }

    /// A response no transaction waits for. A 2xx to an INVITE can still matter:
    /// the callee resending the answer of a call that is up (its caller's ACK was
    /// lost), or a destination answering an attempt long given up.
    fn on_stray_response(&mut self, now: Instant, msg: &Message, peer: Peer) {
        let is_invite_2xx = msg.status().is_some_and(|s| (200..300).contains(&s))
            && msg
                .cseq()
                .is_some_and(|c| c.method == siplb_sip::Method::Invite);
        if !is_invite_2xx {
            self.stats.stray_responses += 1;
            return;
        }
        let (Some(call_id), Some(from_tag)) = (msg.call_id(), msg.from_tag()) else {
            return;
        };
        let call = self
            .call_index
            .find(&self.calls, call_id, from_tag)
            .and_then(|id| self.calls.get(id));
        let known = call.is_some_and(|c| match &c.phase {
            Phase::Answered {
                callee, dialogs, ..
            } => *callee == peer && msg.to_tag().is_some_and(|t| dialogs.contains(t)),
            Phase::Attempting { .. } => false,
        });
        if let (true, Some(caller)) = (known, call.map(|c| c.caller.peer)) {
            let mut edit = msg.edit();
            if edit.remove_top_via().is_ok()
                && let Ok(bytes) = edit.finish()
            {
                self.send(caller, bytes);
            }
            return;
        }
        if self.is_destination(peer) {
            self.refuse_2xx(now, msg, peer, true);
        } else {
            self.stats.stray_responses += 1;
        }
    }

    /// A destination of the table or a relay target: where siplb sends calls.
    fn is_destination(&self, peer: Peer) -> bool {
        self.balancer
            .is_destination(peer.addr.ip(), peer.addr.port(), None, false)
            .is_some()
            || self.is_relay_target(peer.addr)
    }

    pub(crate) fn on_client_event(
        &mut self,
        now: Instant,
        id: Id,
        peer: Peer,
        role: ClientRole,
        event: ClientEvent,
    ) {
        match role {
            ClientRole::Attempt { call, n } => self.on_attempt_event(now, id, peer, call, n, event),
            ClientRole::Relay { server } => match event {
                ClientEvent::Provisional(r) | ClientEvent::Final(r) | ClientEvent::Late2xx(r) => {
                    if r.status() != Some(100) {
                        self.relay_response(now, server, &r);
                    }
                }
                ClientEvent::Timeout => self.local_final(now, server, 408, "Request Timeout"),
                ClientEvent::TransportError => {
                    self.local_final(now, server, 503, "Service Unavailable");
                }
                ClientEvent::Absorbed | ClientEvent::Terminated => {}
            },
            ClientRole::Probe(dest) => self.on_probe_event(now, dest, event),
            ClientRole::Cancel | ClientRole::Own => {}
        }
    }

    fn attempt_is(&self, call: Id, n: u16) -> AttemptIs {
        match self.calls.get(call).map(|c| &c.phase) {
            Some(Phase::Attempting { attempt, .. }) if attempt.target.n == n => AttemptIs::Current,
            Some(Phase::Answered { attempt, .. }) if *attempt == n => AttemptIs::Answering,
            _ => AttemptIs::Over,
        }
    }

    fn on_attempt_event(
        &mut self,
        now: Instant,
        id: Id,
        peer: Peer,
        call: Id,
        n: u16,
        event: ClientEvent,
    ) {
        let input = match (self.attempt_is(call, n), event) {
            (AttemptIs::Current, ClientEvent::Provisional(r)) => Input::Provisional(r),
            (AttemptIs::Current, ClientEvent::Final(r)) => Input::Final(r),
            (AttemptIs::Current, ClientEvent::Timeout) => Input::Failed(Failure::Timeout),
            (AttemptIs::Current, ClientEvent::TransportError) => Input::Failed(Failure::Transport),
            (AttemptIs::Answering, ClientEvent::Late2xx(r) | ClientEvent::Final(r)) => {
                Input::Late2xx(r)
            }
            (AttemptIs::Over, ClientEvent::Provisional(_)) => {
                // It rang after all: cancel it.
                self.send_cancel(now, id);
                return;
            }
            (AttemptIs::Over, ClientEvent::Final(r) | ClientEvent::Late2xx(r))
                if r.status().is_some_and(|s| (200..300).contains(&s)) =>
            {
                // ACK every copy; BYE once.
                let bye = self
                    .txns
                    .clients
                    .get_mut(id)
                    .map(|c| !std::mem::replace(&mut c.refused, true))
                    .unwrap_or(true);
                self.refuse_2xx(now, &r, peer, bye);
                return;
            }
            _ => return,
        };
        self.call_input(now, call, input);
    }
}

/// A response counts as coming from where its request went: the same address over
/// UDP; over TCP the same host, whose answer may come on a connection of its own.
fn same_source(sent_to: &Peer, from: &Peer) -> bool {
    match (sent_to.transport, from.transport) {
        (Transport::Udp, Transport::Udp) => sent_to.addr == from.addr,
        (Transport::Tcp, Transport::Tcp) | (Transport::Tls, Transport::Tls) => {
            sent_to.addr.ip() == from.addr.ip()
        }
        _ => false,
    }
}
