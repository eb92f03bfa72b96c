//! Requests within a dialog (ACK, BYE, re-INVITE...), loose-routed or not: matched to
//! their call by Call-ID and tags, whatever Route they carry, and sent only to the
//! call's other party. A request for no call siplb knows gets `481` and goes nowhere:
//! siplb's Route on it is no licence to relay it to its Request-URI.

use std::time::Instant;

use siplb_sip::{Message, Method};
use siplb_txn::ServerKey;
use tracing::debug;

use crate::addr::Peer;
use crate::call::{InDialog, Side, call_env};
use crate::keys::CallKey;
use crate::proxy::Proxy;
use crate::transactions::ClientRole;

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
        let forward = CallKey::new(call_id, from_tag);
        let (id, side, tag) = if let Some(&id) = self.call_keys.get(&forward) {
            (Some(id), Side::Caller, to_tag)
        } else {
            let backward = CallKey::new(call_id, to_tag);
            match self.call_keys.get(&backward) {
                Some(&id) => (Some(id), Side::Callee, from_tag),
                None => (None, Side::Caller, to_tag),
            }
        };
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
            InDialog::Forward(target) => self.forward_in_dialog(now, msg, key, peer, target),
        }
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
    ) {
        let is_ack = msg.method() == Some(Method::Ack);
        if let Err(refusal) = self.admit(&msg) {
            self.refuse(&msg, peer, refusal);
            return;
        }
        if self.listeners.is_my_address(target.addr) {
            return;
        }
        let Some(via) = self.via_for(&target) else {
            self.reply_stateless(&msg, peer, 503, "Service Unavailable", &[]);
            return;
        };
        let (mine, _) = self.own_routes(&msg);
        let mut edit = msg.edit();
        if edit.pop_routes(mine).is_err() {
            self.reply_stateless(&msg, peer, 400, "Bad Request", &[]);
            return;
        }
        if edit.decrement_max_forwards().is_err() {
            self.reply_stateless(&msg, peer, 483, "Too Many Hops", &[]);
            return;
        }
        edit.push_via(&via);
        if is_ack {
            if let Ok(bytes) = edit.finish() {
                self.send(target, bytes);
            }
            return;
        }
        let Ok(request) = edit.finish_message(&self.settings.limits) else {
            self.reply_stateless(&msg, peer, 513, "Message Too Large", &[]);
            return;
        };
        let Some(Ok(server)) = key.map(|k| {
            self.txns
                .add_server(k, &msg, peer, self.settings.timers, true)
        }) else {
            self.reply_stateless(&msg, peer, 400, "Bad Request", &[]);
            return;
        };
        match self.txns.add_client(
            request,
            target,
            ClientRole::Relay { server },
            self.settings.timers,
            now,
        ) {
            Ok(client) => {
                self.txns
                    .drain_client(client, &mut self.agenda, &mut self.out, &mut self.work);
            }
            Err(_) => self.local_final(now, server, 400, "Bad Request"),
        }
    }
}
