//! Requests siplb sends: a call's INVITE to each attempt's destination, CANCELs,
//! and the ACK and BYE with which siplb itself ends dialogs nobody else will (a 2xx
//! from an attempt that is over, a 2xx never acknowledged, the operator's end).

use std::fmt::Write as _;
use std::time::Instant;

use bytes::Bytes;
use siplb_sip::{EditError, Editor, HeaderName, Message, Method, OwnVia};
use siplb_txn::{KeyError, Timers};
use tracing::{debug, warn};

use crate::addr::{Peer, Transport};
use crate::call::{Dialog, Failure, Phase, Target};
use crate::proxy::Proxy;
use crate::slab::Id;
use crate::transactions::{ClientRole, Outgoing};

impl Proxy {
    /// siplb's Via towards `peer`, with a fresh branch; `None` without a listener of
    /// the peer's address family.
    pub(crate) fn via_for(&mut self, peer: &Peer) -> Option<OwnVia> {
        let branch = self.tokens.branch();
        let (_, sent_by) = self.listeners.local_for(peer)?;
        let transport = match peer.transport {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        };
        let params = [";rport", crate::overload::VIA_PARAMS];
        Some(OwnVia::new(transport, sent_by, &branch, &params))
    }

    pub(crate) fn record_route_for(&self, peer: &Peer) -> Option<String> {
        let (_, sent_by) = self.listeners.local_for(peer)?;
        let host_port = sent_by.as_str();
        let params = crate::addr::record_route_params(peer.transport);
        let mut rr = String::with_capacity(32 + host_port.len());
        for part in ["<sip:", host_port, params, ">"] {
            rr.push_str(part);
        }
        Some(rr)
    }

    /// Sends attempt `target.n` of a call's INVITE.
    pub(crate) fn forward_attempt(
        &mut self,
        now: Instant,
        id: Id,
        target: Target,
    ) -> Result<(), Failure> {
        let peer = target.peer;
        if self.listeners.is_my_address(peer.addr) {
            warn!(%peer, "a destination is siplb itself; not sending to it");
            return Err(Failure::Transport);
        }
        let via = self.via_for(&peer).ok_or(Failure::NoListener)?;
        let rr_out = self.record_route_for(&peer).ok_or(Failure::NoListener)?;
        let Some(call) = self.calls.get(id) else {
            return Ok(());
        };
        let rr_in = self.record_route_for(&call.caller.peer);
        let Some(invite) = call.invite.as_deref() else {
            return Ok(());
        };
        let mut edit = invite.edit();
        edit.decrement_max_forwards().map_err(unsendable_edit)?;
        if call.own_routes > 0 {
            edit.pop_routes(usize::from(call.own_routes))
                .map_err(unsendable_edit)?;
        }
        // Two Record-Routes when the call changes transport or address family, so each
        // side reaches siplb the way it first did (RFC 5658). Fields pushed at one spot
        // come out in push order: the one facing the callee goes first, on top, where
        // the callee's route set starts; the caller's starts from the bottom.
        edit.push_record_route(&rr_out);
        if let Some(rr_in) = rr_in.filter(|r| *r != rr_out) {
            edit.push_record_route(&rr_in);
        }
        edit.push_own_via(&via);
        let request = self
            .relayed(edit, &peer)
            .map_err(|(code, reason)| Failure::Unsendable(code, reason))?;
        let role = ClientRole::Attempt {
            call: id,
            n: target.n,
        };
        let request = Outgoing::Relayed {
            bytes: request,
            method: Method::Invite,
            branch: via.branch(),
        };
        let client = self
            .start_client(request, peer, role, self.settings.timers, now)
            .map_err(|_| Failure::Unsendable(400, "Bad Request"))?;
        if let Some(call) = self.calls.get_mut(id)
            && let Phase::Attempting { attempt, .. } = &mut call.phase
            && attempt.target.n == target.n
        {
            attempt.client = Some(client);
        }
        if target.n == 0 {
            self.stats.calls_routed += 1;
        }
        Ok(())
    }

    /// Adds a client transaction for `request` to `peer` and lets it send. What it
    /// reports comes back through the work queue, so its role may be recorded after.
    pub(crate) fn start_client(
        &mut self,
        request: Outgoing<'_>,
        peer: Peer,
        role: ClientRole,
        timers: Timers,
        now: Instant,
    ) -> Result<Id, KeyError> {
        let id = self.txns.add_client(request, peer, role, timers, now)?;
        self.txns
            .drain_client(id, &mut self.agenda, &mut self.out, &mut self.work);
        Ok(id)
    }

    /// What `edit` writes, a request siplb relays to `to`. It is not parsed again: it
    /// was validated before the edits, which keep it valid (the property test
    /// `relay_edits_keep_a_message_valid` in siplb-sip, the `datagram` fuzz target)
    /// unless it grows past the limits, which [`Proxy::admit`] turned away before
    /// editing and the size is checked against once more here. A request that came
    /// over TCP may also be larger than a datagram can carry to a UDP hop: sent, it
    /// would fail in the kernel each time until Timer B, and the hop be blamed for it.
    pub(crate) fn relayed(
        &self,
        edit: Editor<'_>,
        to: &Peer,
    ) -> Result<Bytes, (u16, &'static str)> {
        let bytes = edit.finish().map_err(edit_refusal)?;
        if bytes.len()
            > self
                .settings
                .limits
                .max_message_size
                .min(to.max_message_len())
        {
            return Err((513, "Message Too Large"));
        }
        Ok(bytes)
    }

    /// CANCELs an INVITE client transaction (once).
    pub(crate) fn send_cancel(&mut self, now: Instant, invite: Id) {
        let Some(ctx) = self.txns.clients.get_mut(invite) else {
            return;
        };
        if ctx.cancel_sent {
            return;
        }
        ctx.cancel_sent = true;
        let peer = ctx.peer;
        let Some(cancel) = ctx.tx.request().as_ref().and_then(build_cancel) else {
            return;
        };
        let Ok(cancel) = Message::parse(cancel) else {
            return;
        };
        let _ = self.start_client(
            Outgoing::Parsed(cancel),
            peer,
            ClientRole::Cancel,
            self.settings.timers,
            now,
        );
    }

    /// A 2xx from an attempt that is over, or for a call that is gone: acknowledged
    /// (so the destination stops resending it) and ended with BYE (so it keeps no
    /// call that nobody counts), towards the peer it came from.
    pub(crate) fn refuse_2xx(&mut self, now: Instant, response: &Message, peer: Peer, bye: bool) {
        self.stats.refused_2xx += 1;
        let route = self.listeners.route_beyond(response);
        let Some(seq) = response.cseq().map(|c| c.seq) else {
            return;
        };
        let from = response.header_text(HeaderName::From).unwrap_or_default();
        let to = response.header_text(HeaderName::To).unwrap_or_default();
        let call_id = response.call_id().unwrap_or_default();
        let target = response
            .contacts()
            .next()
            .and_then(Result::ok)
            .map(|c| c.uri_text.to_owned())
            .unwrap_or_else(|| format!("sip:{}", crate::addr::host_port(peer.addr)));
        debug!(call_id, %peer, "2xx of an attempt that is over: ACK and BYE");
        let Some(via) = self.via_for(&peer) else {
            return;
        };
        let ack = uac_request("ACK", &target, via.as_str(), &route, from, to, call_id, seq);
        self.send(peer, ack);
        if bye {
            self.own_request(
                now,
                "BYE",
                &target,
                &route,
                from,
                to,
                call_id,
                seq + 1,
                peer,
            );
        }
    }

    /// siplb ends one dialog of a call itself: BYE to the callee and to the caller.
    pub(crate) fn end_dialog(&mut self, now: Instant, id: Id, dialog: &Dialog) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let Some(callee) = call.callee() else {
            return;
        };
        let caller = &call.caller;
        let caller_peer = caller.peer;
        // A restored call kept neither side's fields: the tags are what identify the
        // dialog (RFC 3261 12.2.2), so a From and To built from the addresses do.
        let caller_from: String = match caller.from_and_target.first() {
            "" => format!(
                "<sip:{}>;tag={}",
                crate::addr::host_port(caller_peer.addr),
                call.key.caller_tag()
            ),
            from => from.to_owned(),
        };
        let caller_target = match caller.from_and_target.second() {
            "" => format!("sip:{}", crate::addr::host_port(caller_peer.addr)),
            target => target.to_owned(),
        };
        let caller_route: Vec<Box<str>> = caller.route.to_vec();
        let caller_cseq = caller.cseq.saturating_add(1);
        let callee_cseq = caller.callee_cseq.saturating_add(1);
        let call_id = call.key.call_id().to_owned();
        let callee_to: String = match dialog.to() {
            "" => format!(
                "<sip:{}>;tag={}",
                crate::addr::host_port(callee.addr),
                dialog.tag()
            ),
            to => to.to_owned(),
        };
        let callee_target = match dialog.target() {
            "" => format!("sip:{}", crate::addr::host_port(callee.addr)),
            target => target.to_owned(),
        };
        debug!(
            call_id,
            tag = dialog.tag(),
            "siplb ends the dialog: BYE to both sides"
        );
        // Towards the callee as if from the caller, towards the caller as if from the
        // callee: each side sees the dialog's own From and To.
        self.own_request(
            now,
            "BYE",
            &callee_target,
            &dialog.route,
            &caller_from,
            &callee_to,
            &call_id,
            caller_cseq,
            callee,
        );
        self.own_request(
            now,
            "BYE",
            &caller_target,
            &caller_route,
            &callee_to,
            &caller_from,
            &call_id,
            callee_cseq,
            caller_peer,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn own_request(
        &mut self,
        now: Instant,
        method: &str,
        target: &str,
        route: &[Box<str>],
        from: &str,
        to: &str,
        call_id: &str,
        seq: u32,
        peer: Peer,
    ) {
        let Some(via) = self.via_for(&peer) else {
            return;
        };
        let data = uac_request(method, target, via.as_str(), route, from, to, call_id, seq);
        let Ok(request) = Message::parse(data) else {
            debug!(call_id, "siplb's own request does not parse; not sent");
            return;
        };
        let _ = self.start_client(
            Outgoing::Parsed(request),
            peer,
            ClientRole::Own,
            self.settings.timers,
            now,
        );
    }
}

/// A request of siplb's own within a dialog.
#[allow(clippy::too_many_arguments)]
fn uac_request(
    method: &str,
    target: &str,
    via: &str,
    route: &[Box<str>],
    from: &str,
    to: &str,
    call_id: &str,
    seq: u32,
) -> Bytes {
    let mut out = String::with_capacity(300 + from.len() + to.len() + call_id.len());
    let _ = write!(
        out,
        "{method} {target} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
    );
    for r in route {
        let _ = write!(out, "Route: <{r}>\r\n");
    }
    let _ = write!(
        out,
        "From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
    );
    Bytes::from(out)
}

/// What the caller sent cannot be forwarded after siplb's edits.
fn unsendable_edit(e: EditError) -> Failure {
    let (code, reason) = edit_refusal(e);
    Failure::Unsendable(code, reason)
}

/// The answer to a request that siplb's edits could not be made on.
fn edit_refusal(e: EditError) -> (u16, &'static str) {
    match e {
        EditError::TooManyHops => (483, "Too Many Hops"),
        _ => (400, "Bad Request"),
    }
}

/// The CANCEL for a forwarded request (RFC 3261 section 9.1): same Request-URI, top
/// Via, Call-ID, From, To and CSeq number, method CANCEL, and the Routes it carried.
pub(crate) fn build_cancel(request: &Message) -> Option<Bytes> {
    let uri = request.request_uri_text()?;
    let via = request.header(HeaderName::Via)?;
    // The CANCEL repeats siplb's own top Via, which must be one that parses.
    request.top_via().ok()?;
    let cseq = request.cseq()?;
    let mut out = String::with_capacity(512);
    let _ = write!(out, "CANCEL {uri} SIP/2.0\r\n");
    // The first Via field, up to its first hop, is siplb's own.
    let via = std::str::from_utf8(via).ok()?;
    let first_hop = via.split(',').next()?.trim();
    let _ = write!(out, "Via: {first_hop}\r\n");
    for (name, hname) in [
        ("From", HeaderName::From),
        ("To", HeaderName::To),
        ("Call-ID", HeaderName::CallId),
    ] {
        let v = request.header_text(hname)?;
        let _ = write!(out, "{name}: {v}\r\n");
    }
    for route in request.header_values(HeaderName::Route) {
        let v = std::str::from_utf8(route).ok()?;
        let _ = write!(out, "Route: {v}\r\n");
    }
    let _ = write!(
        out,
        "CSeq: {} CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        cseq.seq
    );
    Some(Bytes::from(out))
}
