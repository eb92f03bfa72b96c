//! Requests in: retransmissions to their transaction, CANCEL to its call, in-dialog
//! requests to their dialog, new INVITEs through admission and the routes to a new
//! call, and everything else a local answer.

use std::time::Instant;

use siplb_balance::ResourceRequest;
use siplb_sip::{Message, Method};
use siplb_txn::{ServerKey, ServerProbe};
use tracing::{debug, warn};

use crate::addr::Peer;
use crate::call::{
    Attempt, Balancing, Call, CallerSide, Effect, Load, Pair, Phase, Target, call_env, first_target,
};
use crate::keys::CallKey;
use crate::own_overload::sender_announces;
use crate::proxy::Proxy;
use crate::routing;
use crate::settings::RouteAction;
use crate::stats::Rejection;

const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS";

impl Proxy {
    pub(crate) fn on_request(&mut self, now: Instant, msg: Message, peer: Peer) {
        let Some(method) = msg.method() else {
            return;
        };
        let is_ack = method == Method::Ack;
        let probe = match ServerProbe::of_request(&msg) {
            Ok(probe) => probe,
            Err(e) => {
                // Not after validation, which checks what a key is made of; but a
                // request without one could never be answered through a transaction.
                debug!(error = %e, "request without a transaction key");
                if !is_ack {
                    self.reply_stateless(&msg, peer, 400, "Bad Request", &[]);
                }
                return;
            }
        };
        // Retransmissions, and the ACK of a non-2xx final, belong to a transaction.
        if let Some(id) = self.txns.server_id(&probe) {
            if let Some(ctx) = self.txns.servers.get_mut(id)
                && let Err(e) = ctx.tx.handle_matched_request(msg, now)
            {
                debug!(error = %e, "request not taken by its transaction");
            }
            self.txns
                .drain_server(id, &mut self.agenda, &mut self.out, &mut self.work);
            return;
        }
        if method == Method::Invite
            && msg.to_tag().is_none()
            && self.repeat_rejection(now, probe.digest(), peer)
        {
            return;
        }
        // Copied out of the message only for the requests that make a transaction
        // (every one but ACK).
        let key = (!is_ack).then(|| probe.to_key());
        // Ceilings (`[sip] max_transactions`, `max_calls`) rather than memory that grows
        // without bound: a new call is turned away first, an in-dialog request only at
        // the transaction ceiling.
        if self.txns.len() >= self.settings.max_transactions {
            self.refuse_at_limit(&msg, peer);
            return;
        }
        if method == Method::Cancel {
            if let Some(key) = key {
                self.on_cancel(now, &msg, key, peer);
            }
            return;
        }
        if !is_ack && msg.max_forwards() == Some(0) {
            self.reply_stateless(&msg, peer, 483, "Too Many Hops", &[]);
            return;
        }
        // A request without To tag is a new one even when it carries a Route naming
        // siplb (a preloaded outbound proxy): that Route is siplb's to consume (RFC 3261
        // 16.4), and the request is balanced, counted and record-routed like any other.
        if msg.to_tag().is_some() {
            self.on_in_dialog(now, msg, key, peer);
            return;
        }
        let Some(key) = key else {
            // An ACK outside any dialog or transaction: nothing to acknowledge.
            return;
        };
        match method {
            Method::Invite if self.draining => {
                self.reply_stateless(
                    &msg,
                    peer,
                    503,
                    "Service Unavailable",
                    &[("Retry-After", "5")],
                );
            }
            Method::Invite => self.on_initial_invite(now, msg, key, peer),
            Method::Options if self.addressed_to_me(&msg) => {
                self.reply_stateless(
                    &msg,
                    peer,
                    200,
                    "OK",
                    &[("Allow", ALLOW), ("Accept", "application/sdp")],
                );
            }
            _ => {
                self.reply_stateless(&msg, peer, 405, "Method Not Allowed", &[("Allow", ALLOW)]);
            }
        }
    }

    /// While siplb's own core is overloaded, a share of the new calls of callers that
    /// take no overload feedback is turned away, the share the others are asked to
    /// hold back; callers that take it hold back themselves.
    fn sheds(&mut self, msg: &Message) -> bool {
        if self.own_overload.load().reduction == 0 || sender_announces(msg) {
            return false;
        }
        let draw = self.tokens.next_u64();
        self.own_overload.sheds(draw)
    }

    fn addressed_to_me(&self, msg: &Message) -> bool {
        msg.request_uri().is_some_and(|u| self.listeners.is_me(&u))
    }

    /// How many Route entries on top name siplb itself, and whether any other follows.
    pub(crate) fn own_routes(&self, msg: &Message) -> (usize, bool) {
        let mut mine = 0;
        for route in msg.routes() {
            match route {
                Ok(r) if self.listeners.names_me(r.uri_text) => mine += 1,
                _ => return (mine, true),
            }
        }
        (mine, false)
    }

    fn on_cancel(&mut self, now: Instant, msg: &Message, key: ServerKey, peer: Peer) {
        let call = ServerProbe::invite_for_cancel(msg)
            .ok()
            .and_then(|probe| self.txns.server_id(&probe))
            .and_then(|server| self.txns.servers.get(server))
            .and_then(|ctx| ctx.call)
            .filter(|&id| self.calls.get(id).is_some());
        let Some(call) = call else {
            self.reply_stateless(msg, peer, 481, "Call/Transaction Does Not Exist", &[]);
            return;
        };
        self.reply_stateful(now, msg, key, peer, 200, "OK");
        self.call_input(now, call, crate::call::Input::Cancel);
    }

    fn on_initial_invite(&mut self, now: Instant, msg: Message, server_key: ServerKey, peer: Peer) {
        if let Err(refusal) = self.admit(&msg) {
            self.refuse(&msg, peer, refusal);
            return;
        }
        let (Some(call_id), Some(caller_tag)) = (msg.call_id(), msg.from_tag()) else {
            self.reply_stateless(
                &msg,
                peer,
                400,
                "Bad Request",
                &[("Warning", "399 siplb \"From tag required\"")],
            );
            return;
        };
        let (own_routes, foreign_route) = self.own_routes(&msg);
        if foreign_route {
            // siplb sends new calls only where its routes say: a Route to elsewhere
            // would have the destination relay it on.
            self.reply_stateless(
                &msg,
                peer,
                403,
                "Forbidden",
                &[("Warning", "399 siplb \"Route to another host\"")],
            );
            return;
        }
        if self
            .call_index
            .find(&self.calls, call_id, caller_tag)
            .is_some()
        {
            // Same call, new transaction (a forked or resent INVITE with a new branch).
            self.reply_stateless(&msg, peer, 482, "Loop Detected", &[]);
            return;
        }
        // After the checks that answer a bad request 4xx, which a caller must hear
        // whatever the load, before anything is kept.
        if self.sheds(&msg) {
            // RFC 7339 section 5.10.2: no Retry-After, which would keep the caller
            // away from every call for that long.
            self.stats.rejected_shed += 1;
            self.reply_stateless(&msg, peer, 503, "Service Unavailable", &[]);
            return;
        }
        if self.calls.len() >= self.settings.max_calls {
            self.refuse_at_limit(&msg, peer);
            return;
        }
        let route = routing::select(&self.settings.routes, &msg, peer.addr, &self.balancer)
            .map(|(i, r)| (i, r.action.clone()));
        let Some((index, action)) = route else {
            self.stats.count_rejection(Rejection::NoRoute);
            self.reply_stateless(&msg, peer, 404, "Not Found", &[]);
            return;
        };
        let (mut load, fixed) = match action {
            RouteAction::Reply { code, reason } => {
                self.reply_stateless(&msg, peer, code, &reason, &[]);
                return;
            }
            RouteAction::Balance { first, overflow } => (
                Load::Balanced(Box::new(Balancing::new(&first, overflow))),
                None,
            ),
            RouteAction::CountAndRelay {
                group,
                request,
                relay,
            } => (self.count_call(&msg, peer, group, &request), Some(relay)),
            RouteAction::Relay(relay) => (Load::None, Some(relay)),
        };
        let fixed = match fixed.map(|relay| (self.relay_peer(&relay), relay)) {
            None => None,
            Some((Some(peer), _)) => Some(peer),
            Some((None, relay)) => {
                // Its name has no address (yet): nothing to send to. A count taken goes
                // back with `load`.
                warn!(call_id, %relay, "relay target has no address; answering 503");
                self.stats.count_rejection(Rejection::NoDestination);
                self.reply_stateless(&msg, peer, 503, "Service Unavailable", &[]);
                return;
            }
        };
        // The first destination is chosen before anything is kept: a call nothing can
        // take gets its answer once, statelessly.
        let target = match fixed {
            Some(peer) => Target {
                n: 0,
                peer,
                destination: load.allocation().map(|a| a.destination_id()),
                address: 0,
                reservation: None,
            },
            None => {
                let mut env = call_env!(self, now);
                let chosen = first_target(&mut load, &mut env, 0);
                self.apply_blames();
                match chosen {
                    Ok(t) => t,
                    Err(rejection) => {
                        warn!(call_id, outcome = %rejection, "no destination for call");
                        self.stats.count_rejection(rejection);
                        let (code, reason) = match rejection.own_reply() {
                            Some((code, reason)) => (code, reason.to_owned()),
                            None => self.settings.full_reply.clone(),
                        };
                        self.reply_stateless(&msg, peer, code, &reason, &[]);
                        return;
                    }
                }
            }
        };
        debug!(call_id, route = index + 1, destination = ?target.destination, peer = %target.peer, "routing decision");
        // The server transaction exists before anything is sent, so that INVITE
        // retransmissions are absorbed from now on.
        let Ok(server) = self
            .txns
            .add_server(server_key, &msg, peer, self.settings.timers, false)
        else {
            return;
        };
        // RFC 3261 17.2.1: the 100 only if no other answer goes back within 200 ms.
        // Destinations usually ring within milliseconds, and their 180 does its work.
        if self.settings.timers.trying_after.is_zero() {
            let trying = self.own_response(&msg, 100, "Trying", None, &[]);
            self.server_send(now, server, trying);
        } else if let Some(ctx) = self.txns.servers.get_mut(server) {
            ctx.tx.defer_trying(now);
            self.txns
                .drain_server(server, &mut self.agenda, &mut self.out, &mut self.work);
        }
        let caller = CallerSide {
            peer,
            from_and_target: Pair::new(&[
                msg.header_text(siplb_sip::HeaderName::From)
                    .unwrap_or_default(),
                msg.contacts()
                    .next()
                    .and_then(Result::ok)
                    .map(|c| c.uri_text)
                    .unwrap_or_default(),
            ]),
            route: msg
                .record_routes()
                .filter_map(Result::ok)
                .map(|r| Box::<str>::from(r.uri_text))
                .collect(),
            cseq: msg.cseq().map_or(1, |c| c.seq),
            callee_cseq: 0,
        };
        let call = Call {
            key: CallKey::new(call_id, caller_tag),
            caller,
            server: Some(server),
            invite: Some(Box::new(msg)),
            own_routes: u8::try_from(own_routes).unwrap_or(u8::MAX),
            load,
            phase: Phase::Attempting {
                attempt: Box::new(Attempt::new(target)),
                ending: None,
            },
            started: now,
            setup_seen: false,
            timers: [None; crate::agenda::CallTimer::SLOTS],
            persisted: false,
        };
        let id = self.calls.insert(call);
        self.call_index.insert(&self.calls, id);
        if let Some(ctx) = self.txns.servers.get_mut(server) {
            ctx.call = Some(id);
        }
        self.effects.push(Effect::Forward(target));
        self.apply_effects(now, id);
    }

    /// Blames recorded while choosing a first destination, before the call exists.
    fn apply_blames(&mut self) {
        let mut effects = std::mem::take(&mut self.effects);
        for e in effects.drain(..) {
            if let Effect::Blame(id, fault) = e {
                self.blame(id, &fault);
            }
        }
        self.effects = effects;
    }

    /// A call from the cluster counted against the destination it came from.
    fn count_call(&self, msg: &Message, peer: Peer, group: u32, request: &ResourceRequest) -> Load {
        match self
            .balancer
            .count_call(peer.addr.ip(), peer.addr.port(), Some(group), request)
        {
            Ok(a) => Load::Held(a),
            Err(e) => {
                warn!(call_id = msg.call_id().unwrap_or_default(), error = %e, "call from the cluster not counted");
                Load::None
            }
        }
    }
}
