//! Answers siplb gives itself, and what a request must be for siplb to pass it on.
//!
//! A new request siplb turns down is answered once, statelessly (as the references'
//! `sl` replies are): no server transaction resends the reply to a source that may
//! be spoofed and never acknowledges, so a rejected request cannot be made to come
//! back many times over. A request is refused before anything is forwarded when a
//! destination would refuse it for how the caller wrote it (bare LF line ends), or
//! when siplb's own fields would push it past the limits: otherwise the destination's
//! silence would be blamed on the destination.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use siplb_sip::{Message, Method, build_response_with_top_via};
use siplb_txn::{ServerKey, ServerProbe};
use tracing::debug;

use crate::addr::Peer;
use crate::own_overload::sender_announces;
use crate::proxy::Proxy;
use crate::slab::Id;

/// More Via hops than any real path has (Max-Forwards starts at 70): a reply to such
/// a request would only carry them back.
const MAX_VIAS: usize = 70;

/// Bytes siplb may add to a request it forwards: its Via (with a 39-byte branch) and
/// two Record-Routes, with room for IPv6 listeners.
const FORWARD_GROWTH: usize = 400;

/// Header fields siplb may add: a Via and two Record-Routes.
const FORWARD_FIELDS: usize = 3;

/// INVITEs siplb turned down lately, with the reply each got: a retransmission (its
/// caller missed the reply) gets the same reply again, rather than being taken for a
/// new call that could end differently. Kept for 64*T1, within a bound on the bytes
/// held (a flood of rejected INVITEs evicts the oldest); no reply is ever resent
/// without a copy of its request coming in.
#[derive(Debug, Default)]
pub(crate) struct Rejections {
    /// Reply by key hash, with the instant its entry in `order` expires.
    replies: HashMap<u64, (Instant, Bytes)>,
    order: VecDeque<(Instant, u64)>,
    bytes: usize,
}

const REJECTIONS_MAX_BYTES: usize = 8 << 20;

impl Rejections {
    fn key(request: &Message) -> Option<u64> {
        ServerProbe::of_request(request).ok().map(|p| p.digest())
    }

    pub(crate) fn remember(
        &mut self,
        now: Instant,
        keep: Duration,
        request: &Message,
        reply: &Bytes,
    ) {
        let Some(key) = Self::key(request) else {
            return;
        };
        self.expire(now);
        while self.bytes + reply.len() > REJECTIONS_MAX_BYTES {
            let Some((at, old)) = self.order.pop_front() else {
                break;
            };
            self.forget(at, old);
        }
        let until = now + keep;
        if let Some((_, old)) = self.replies.insert(key, (until, reply.clone())) {
            self.bytes -= old.len();
        }
        self.bytes += reply.len();
        self.order.push_back((until, key));
    }

    /// The reply remembered for the request whose key hashes to `key`.
    pub(crate) fn lookup(&mut self, now: Instant, key: u64) -> Option<Bytes> {
        if self.replies.is_empty() {
            return None;
        }
        self.expire(now);
        self.replies.get(&key).map(|(_, b)| b.clone())
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.order.front() {
            if at > now {
                break;
            }
            self.order.pop_front();
            self.forget(at, key);
        }
    }

    /// Drops the reply of `key` if `at` is its latest entry's expiry.
    fn forget(&mut self, at: Instant, key: u64) {
        if self
            .replies
            .get(&key)
            .is_some_and(|(until, _)| *until == at)
            && let Some((_, b)) = self.replies.remove(&key)
        {
            self.bytes -= b.len();
        }
    }

    pub(crate) fn shrink(&mut self) {
        crate::transactions::shrink_map(&mut self.replies);
        self.order.shrink_to_fit();
    }
}

/// Why a request is refused before anything is forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) warning: &'static str,
}

impl Proxy {
    /// Checks that a request can be forwarded as it is, once siplb's fields are in.
    pub(crate) fn admit(&self, msg: &Message) -> Result<(), Refusal> {
        if msg.has_bare_lf() {
            return Err(Refusal {
                code: 400,
                reason: "Bad Request",
                warning: "lines must end in CRLF",
            });
        }
        if msg.via_count() > MAX_VIAS {
            return Err(Refusal {
                code: 400,
                reason: "Bad Request",
                warning: "too many Via hops",
            });
        }
        let limits = &self.settings.limits;
        if msg.header_count() + FORWARD_FIELDS > limits.max_headers {
            return Err(Refusal {
                code: 513,
                reason: "Message Too Large",
                warning: "too many header fields to forward",
            });
        }
        if msg.as_bytes().len() + FORWARD_GROWTH > limits.max_message_size {
            return Err(Refusal {
                code: 513,
                reason: "Message Too Large",
                warning: "too large to forward",
            });
        }
        Ok(())
    }

    /// Refuses a request as [`Proxy::admit`] said.
    pub(crate) fn refuse(&mut self, msg: &Message, peer: Peer, refusal: Refusal) {
        let warning = format!("399 siplb \"{}\"", refusal.warning);
        self.reply_stateless(
            msg,
            peer,
            refusal.code,
            refusal.reason,
            &[("Warning", &warning)],
        );
    }

    /// A request over `[sip] max_calls` or `max_transactions`: the caller may retry
    /// soon, elsewhere or here.
    pub(crate) fn refuse_at_limit(&mut self, request: &Message, peer: Peer) {
        self.stats.rejected_limit += 1;
        self.reply_stateless(
            request,
            peer,
            503,
            "Service Unavailable",
            &[("Retry-After", "5")],
        );
    }

    /// Answers a request once, without a transaction. ACKs get nothing. A rejected
    /// INVITE is remembered, so that its retransmissions get the same answer.
    pub(crate) fn reply_stateless(
        &mut self,
        request: &Message,
        peer: Peer,
        code: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) {
        let method = request.method();
        if method == Some(Method::Ack) {
            return;
        }
        let tag =
            (code > 100 && request.to_tag().is_none()).then(|| self.tokens.reply_tag(request));
        let reply = self.own_response(request, code, reason, tag.as_deref(), extra);
        self.stats.count_local_reply(code);
        if method == Some(Method::Invite) && code >= 300 && request.to_tag().is_none() {
            let keep = self.settings.timers.t1.saturating_mul(64);
            self.rejections.remember(self.clock, keep, request, &reply);
        }
        self.send(peer, reply);
    }

    /// A copy of an INVITE siplb turned down lately: the same answer again.
    /// `key`: the hash of the request's transaction key.
    pub(crate) fn repeat_rejection(&mut self, now: Instant, key: u64, peer: Peer) -> bool {
        match self.rejections.lookup(now, key) {
            Some(reply) => {
                self.send(peer, reply);
                true
            }
            None => false,
        }
    }

    /// Answers through a server transaction (retransmissions of the request get the
    /// answer again), for requests siplb has taken on: CANCEL.
    pub(crate) fn reply_stateful(
        &mut self,
        now: Instant,
        request: &Message,
        key: ServerKey,
        peer: Peer,
        code: u16,
        reason: &str,
    ) {
        let Ok(id) = self
            .txns
            .add_server(key, request, peer, self.settings.timers, false)
        else {
            self.reply_stateless(request, peer, code, reason, &[]);
            return;
        };
        let tag = (code > 100 && request.to_tag().is_none()).then(|| self.tokens.tag());
        let reply = self.own_response(request, code, reason, tag.as_deref(), &[]);
        self.stats.count_local_reply(code);
        self.server_send(now, id, reply);
    }

    /// A final of siplb's own to a call's INVITE, through its server transaction.
    pub(crate) fn reply_in_call(&mut self, now: Instant, call: Id, code: u16, reason: &str) {
        let Some(c) = self.calls.get(call) else {
            return;
        };
        let (Some(server), Some(invite)) = (c.server, c.invite.as_deref()) else {
            return;
        };
        let tag = self.tokens.reply_tag(invite);
        let reply = self.own_response(invite, code, reason, Some(&tag), &[]);
        self.stats.count_local_reply(code);
        self.server_send(now, server, reply);
    }

    /// The 100 Trying of a call's INVITE, once its server transaction says it is due.
    pub(crate) fn trying_in_call(&mut self, now: Instant, server: Id) {
        let Some(call) = self.txns.servers.get(server).and_then(|ctx| ctx.call) else {
            return;
        };
        let Some(invite) = self.calls.get(call).and_then(|c| c.invite.as_deref()) else {
            return;
        };
        let trying = self.own_response(invite, 100, "Trying", None, &[]);
        self.server_send(now, server, trying);
    }

    /// Sends a response from downstream on towards the request's sender: siplb's
    /// Via comes off.
    pub(crate) fn relay_response(&mut self, now: Instant, server: Id, response: &Message) {
        let mut edit = response.edit();
        if edit.remove_top_via().is_err() {
            return;
        }
        // The next hop is the caller's: siplb's own overload feedback goes there, in
        // place of the destination's, which was for siplb.
        let caller_oc = self.txns.servers.get(server).is_some_and(|c| c.caller_oc);
        if caller_oc
            && self.own_overload.enabled()
            && let Some(hop) = response
                .via_hop(1)
                .and_then(|h| self.own_overload.feedback_hop(h))
        {
            let _ = edit.replace_via(1, &hop);
        }
        let Ok(bytes) = edit.finish() else {
            return;
        };
        if let Some(status) = response.status() {
            self.stats.count_relayed_reply(status);
        }
        self.server_send(now, server, bytes);
    }

    /// Answers a relayed request whose next hop failed (timeout, transport error).
    pub(crate) fn local_final(&mut self, now: Instant, server: Id, code: u16, reason: &str) {
        let Some(ctx) = self.txns.servers.get(server) else {
            return;
        };
        if ctx.tx.has_final() {
            return;
        }
        let Some(request) = &ctx.request else {
            return;
        };
        let tag = (request.to_tag().is_none()).then(|| self.tokens.tag());
        let reply = self.own_response(request, code, reason, tag.as_deref(), &[]);
        self.stats.count_local_reply(code);
        self.server_send(now, server, reply);
    }

    /// A response of siplb's own to `request`, carrying its overload feedback when
    /// the sender asked for it (RFC 7339: every response to such a sender does).
    pub(crate) fn own_response(
        &self,
        request: &Message,
        code: u16,
        reason: &str,
        to_tag: Option<&str>,
        extra: &[(&str, &str)],
    ) -> bytes::Bytes {
        let feedback = (self.own_overload.enabled() && sender_announces(request))
            .then(|| request.via_hop(0))
            .flatten()
            .and_then(|hop| self.own_overload.feedback_hop(hop));
        build_response_with_top_via(request, code, reason, to_tag, extra, feedback.as_deref())
    }

    pub(crate) fn server_send(&mut self, now: Instant, server: Id, response: bytes::Bytes) {
        if let Some(ctx) = self.txns.servers.get_mut(server) {
            if let Err(e) = ctx.tx.send_response(response, now) {
                // A final after a final (a relayed 2xx after siplb's own answer, say):
                // the transaction keeps the first, as RFC 3261 16.7 asks.
                debug!(error = %e, "response not sent: its transaction is past it");
            }
            if ctx.tx.has_final() {
                // Kept only to answer for a next hop that fails; once answered, the
                // request would sit out Timer J (32 s over UDP) for nothing.
                ctx.request = None;
            }
        }
        self.txns
            .drain_server(server, &mut self.agenda, &mut self.out, &mut self.work);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(m: &Message) -> u64 {
        ServerKey::from_request(m).unwrap().digest()
    }

    fn invite(branch: &str) -> Message {
        Message::parse(format!(
            "INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5060;branch={branch}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ))
        .unwrap()
    }

    #[test]
    fn rejections_are_remembered_for_a_while_within_bounds() {
        let t0 = Instant::now();
        let keep = Duration::from_secs(32);
        let mut r = Rejections::default();
        let (a, b) = (invite("z9hG4bKa"), invite("z9hG4bKb"));
        r.remember(t0, keep, &a, &Bytes::from_static(b"404"));
        assert_eq!(r.lookup(t0, key(&a)), Some(Bytes::from_static(b"404")));
        assert_eq!(r.lookup(t0, key(&b)), None);
        // Remembered again later: the later expiry holds.
        r.remember(
            t0 + Duration::from_secs(20),
            keep,
            &a,
            &Bytes::from_static(b"500"),
        );
        assert_eq!(
            r.lookup(t0 + Duration::from_secs(40), key(&a)),
            Some(Bytes::from_static(b"500"))
        );
        assert_eq!(r.lookup(t0 + Duration::from_secs(53), key(&a)), None);
        assert_eq!(r.bytes, 0);
        // A flood evicts the oldest rather than growing past the bound.
        let big = Bytes::from(vec![b'x'; 1 << 20]);
        for i in 0..20 {
            r.remember(t0, keep, &invite(&format!("z9hG4bKf{i}")), &big);
        }
        assert!(r.bytes <= REJECTIONS_MAX_BYTES);
        assert_eq!(r.lookup(t0, key(&invite("z9hG4bKf0"))), None);
        assert!(r.lookup(t0, key(&invite("z9hG4bKf19"))).is_some());
    }
}
