//! Requests within a dialog (ACK, BYE, re-INVITE...), loose-routed or not: matched to
//! their call by Call-ID and tags, whatever Route they carry, and sent only to the
//! call's other party. A request for no call siplb knows gets `481` and goes nowhere:
//! siplb's Route on it is no licence to relay it to its Request-URI. In a cluster, the
//! one exception: a request whose Route names a dead node goes to the node that adopted
//! that node's calls (`handover.rs`).

use std::time::Instant;

use siplb_sip::{Message, Method};
use siplb_txn::ServerKey;
use tracing::debug;

use crate::addr::Peer;
use crate::call::{InDialog, Side, call_env};
use crate::proxy::Proxy;
use crate::transactions::{ClientRole, Outgoing};

impl Proxy {
    /// `key` is the request's server transaction key; an ACK (which needs none) may
    /// come without.
    pub(crate) fn on_in_dialog(
        &mut self,
        now: Instant,
        msg: Message,
        key: Option<ServerKey>,
        peer: Peer,
    ) {
        let Some(method) = msg.method() else {
            return;
        };
        let is_ack = method == Method::Ack;
        let call_id = msg.call_id().unwrap_or_default();
        let from_tag = msg.from_tag().unwrap_or_default();
        let to_tag = msg.to_tag().unwrap_or_default();
        let (id, side, tag) = if let Some(id) = self.call_index.find(&self.calls, call_id, from_tag)
        {
            (Some(id), Side::Caller, to_tag)
        } else {
            match self.call_index.find(&self.calls, call_id, to_tag) {
                Some(id) => (Some(id), Side::Callee, from_tag),
                None => (None, Side::Caller, to_tag),
            }
        };
        let known = id.is_some_and(|id| self.calls.get(id).is_some());
        if !known && let Some(adopter) = self.handover(&msg, peer) {
            debug!(call_id, method = method.as_str(), %adopter, "request of a dead node's call: to the node that adopted it");
            self.forward_in_dialog(now, msg, key, peer, adopter, false);
            return;
        }
        let decision = match id.and_then(|id| self.calls.get_mut(id).map(|c| (id, c))) {
            None => {
                debug!(
                    call_id,
                    method = method.as_str(),
                    "in-dialog request for no call"
                );
                if is_ack {
                    InDialog::Drop
                } else {
                    InDialog::Reply(481, "Call/Transaction Does Not Exist")
                }
            }
            Some((id, call)) => {
                let cseq = msg.cseq().map_or(0, |c| c.seq);
                let mut env = call_env!(self, now);
                let tag = tag.to_owned();
                let d = call.route_in_dialog(&mut env, method, &tag, side, cseq);
                self.apply_effects(now, id);
                d
            }
        };
        match decision {
            InDialog::Drop => {}
            InDialog::Reply(code, reason) => self.reply_stateless(&msg, peer, code, reason, &[]),
            InDialog::Forward(target) => self.forward_in_dialog(now, msg, key, peer, target, true),
        }
    }

    /// The node that adopted the call of this request, when one of siplb's Routes on it
    /// names a dead node of the cluster whose calls another node adopted. Never for a
    /// request that comes from another node: two nodes must not hand it back and forth.
    fn handover(&self, msg: &Message, peer: Peer) -> Option<Peer> {
        let handovers = self.handovers.as_ref()?;
        if self.listeners.is_my_address(peer.addr) {
            return None;
        }
        msg.routes()
            .map_while(|r| r.ok().and_then(|r| r.uri().ok()))
            .take_while(|u| self.listeners.is_me(u))
            .filter_map(|u| {
                let ip = u.host.ip()?;
                let port = match u.port {
                    None | Some(0) => 5060,
                    Some(p) => p,
                };
                handovers.get(std::net::SocketAddr::new(ip, port))
            })
            .next()
    }

    /// Sends an in-dialog request on to `target`: siplb's own Routes come off, its Via
    /// goes on; ACK statelessly, anything else through a server and a client
    /// transaction.
    fn forward_in_dialog(
        &mut self,
        now: Instant,
        msg: Message,
        key: Option<ServerKey>,
        peer: Peer,
        target: Peer,
        consume_routes: bool,
    ) {
        let Some(method) = msg.method() else {
            return;
        };
        let is_ack = method == Method::Ack;
        if let Err(refusal) = self.admit(&msg) {
            self.refuse(&msg, peer, refusal);
            return;
        }
        // A handover goes to another node of the cluster, which is one of siplb's own
        // addresses by design, and which consumes the Routes itself.
        if consume_routes && self.listeners.is_my_address(target.addr) {
            return;
        }
        let Some(via) = self.via_for(&target) else {
            self.reply_stateless(&msg, peer, 503, "Service Unavailable", &[]);
            return;
        };
        let mine = if consume_routes {
            self.own_routes(&msg).0
        } else {
            0
        };
        let mut edit = msg.edit();
        if edit.pop_routes(mine).is_err() {
            self.reply_stateless(&msg, peer, 400, "Bad Request", &[]);
            return;
        }
        if edit.decrement_max_forwards().is_err() {
            self.reply_stateless(&msg, peer, 483, "Too Many Hops", &[]);
            return;
        }
        edit.push_own_via(&via);
        if is_ack {
            if let Ok(bytes) = edit.finish() {
                self.send(target, bytes);
            }
            return;
        }
        let request = match self.relayed(edit, &target) {
            Ok(request) => request,
            Err((code, reason)) => {
                self.reply_stateless(&msg, peer, code, reason, &[]);
                return;
            }
        };
        let Some(Ok(server)) = key.map(|k| {
            self.txns
                .add_server(k, &msg, peer, self.settings.timers, true)
        }) else {
            self.reply_stateless(&msg, peer, 400, "Bad Request", &[]);
            return;
        };
        let request = Outgoing::Relayed {
            bytes: request,
            method,
            branch: via.branch(),
        };
        let role = ClientRole::Relay { server };
        if self
            .start_client(request, target, role, self.settings.timers, now)
            .is_err()
        {
            self.local_final(now, server, 400, "Bad Request");
        }
    }
}
