//! The answering side: a destination (or the relay target) as a real media server
//! behaves. It answers each INVITE as the call's script says for that attempt,
//! copies Record-Route into its dialog-forming responses, retransmits its 2xx until
//! the ACK comes (and hangs up after 64*T1 without one, RFC 3261 13.3.1.4), answers
//! CANCEL, BYE (487 for an INVITE still pending), re-INVITE and OPTIONS, and drops
//! what a strict parser would refuse.
//!
//! It also tells the world when it failed on purpose (a 5xx/6xx, silence, an outage),
//! so that a destination siplb disables without cause is caught, and it flags any
//! in-dialog request for a dialog it never had.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use siplb_sip::{Message, build_response};

use crate::script::{Answer, Ending};
use crate::sip::{self, Proto, Request};
use crate::world::{Ctx, Event, GRACE, T1, T2};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Send the next planned response of an INVITE (by its branch).
    Respond(String, Step),
    /// Retransmit the final of an INVITE (by branch): a non-2xx until its ACK, a 2xx
    /// until the dialog's ACK.
    Retransmit(String),
    /// Hang up the dialog (Call-ID, local tag), as the call's script says.
    Bye(String, String),
    /// Retransmit our BYE (by branch).
    ByeRetransmit(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Ring,
    Answer,
    SecondFork,
    Reject(u16),
}

/// One received INVITE (initial or re-INVITE).
#[derive(Debug)]
struct InviteTx {
    request: Message,
    source: (Proto, SocketAddr),
    local_tag: String,
    last: Option<Bytes>,
    final_code: Option<u16>,
    /// A non-2xx final waits for its ACK (a 2xx waits for the dialog's).
    acked: bool,
    interval: Duration,
    finished_at: Duration,
    /// Local tags of the dialogs this INVITE's 2xx formed (two when forked).
    forks: Vec<String>,
    /// A re-INVITE, answered within its dialog.
    reinvite: bool,
    silent: bool,
    /// Does not hang up a 2xx that is never acknowledged.
    lax: bool,
    ending: Option<Ending>,
}

#[derive(Debug)]
struct Dialog {
    call_id: String,
    local_tag: String,
    remote_tag: String,
    remote_uri: String,
    local_uri: String,
    route: Vec<String>,
    target: String,
    /// The latest 2xx sent in this dialog, retransmitted until its ACK.
    two_xx: Bytes,
    /// The CSeq of the INVITE that 2xx answers: only its ACK acknowledges it.
    invite_cseq: u32,
    acked: bool,
    ended: bool,
    cseq: u32,
}

#[derive(Debug)]
struct Bye {
    data: Bytes,
    proto: Proto,
    to: SocketAddr,
    interval: Duration,
    sent_at: Duration,
    done: bool,
    call_id: String,
}

/// What the script says a destination does with one INVITE of a call.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) answer: Answer,
    pub(crate) ending: Option<Ending>,
}

#[derive(Debug)]
pub(crate) struct Callee {
    pub(crate) addr: SocketAddr,
    invites: HashMap<String, InviteTx>,
    /// Other server transactions: (branch, method) -> their response.
    others: HashMap<(String, String), Bytes>,
    dialogs: HashMap<(String, String), Dialog>,
    /// Every (Call-ID, local tag) this destination ever put in a response.
    ever: HashSet<(String, String)>,
    byes: HashMap<String, Bye>,
    /// (from, to, refused): down between the two; refusing TCP connections, or hanging.
    outages: Vec<(Duration, Duration, bool)>,
    next: u64,
    /// RFC 7339 feedback put in the top Via of every response: percent, and the
    /// `oc-seq` of the last one.
    overload: Option<(u8, std::cell::Cell<u64>)>,
}

fn ms(v: u16, modulo: u64) -> Duration {
    Duration::from_millis(u64::from(v) % modulo)
}

impl Callee {
    pub(crate) fn new(addr: SocketAddr) -> Callee {
        Callee {
            addr,
            invites: HashMap::new(),
            others: HashMap::new(),
            dialogs: HashMap::new(),
            ever: HashSet::new(),
            byes: HashMap::new(),
            outages: Vec::new(),
            next: 0,
            overload: None,
        }
    }

    /// Asks for `percent` fewer calls in every response from now on.
    pub(crate) fn ask_for_fewer(&mut self, percent: u8) {
        self.overload = Some((percent, std::cell::Cell::new(0)));
    }

    pub(crate) fn add_outage(&mut self, from: Duration, to: Duration, refused: bool) {
        self.outages.push((from, to, refused));
    }

    fn down(&self, now: Duration) -> bool {
        self.outages.iter().any(|(a, b, _)| *a <= now && now < *b)
    }

    /// Whether a TCP connection to it is refused at `now` (up, nothing listening).
    pub(crate) fn refuses(&self, now: Duration) -> bool {
        self.outages
            .iter()
            .any(|(a, b, refused)| *refused && *a <= now && now < *b)
    }

    /// When the outage in force at `now` ends: a box that hangs keeps its TCP
    /// connections, and reads what waits on them once it is back.
    pub(crate) fn back_at(&self, now: Duration) -> Option<Duration> {
        self.outages
            .iter()
            .filter(|(a, b, _)| *a <= now && now < *b)
            .map(|(_, b, _)| *b)
            .max()
    }

    pub(crate) fn on_message(
        &mut self,
        ctx: &mut Ctx<'_>,
        proto: Proto,
        from: SocketAddr,
        data: &Bytes,
        plan: &mut dyn FnMut(&str) -> Plan,
    ) {
        if sip::has_bare_lf(data) {
            ctx.note(format!(
                "{} drops a message with bare LF line ends",
                self.addr
            ));
            return;
        }
        let msg = match Message::parse(data.clone()) {
            Ok(m) => m,
            Err(e) => {
                ctx.note(format!(
                    "{} drops a message it cannot parse: {e}",
                    self.addr
                ));
                return;
            }
        };
        if self.down(ctx.now) {
            if msg.is_request() {
                ctx.failed(self.addr);
            }
            return;
        }
        if msg.is_request() {
            self.on_request(ctx, (proto, from), msg, plan);
        } else if msg.status().unwrap_or(0) >= 200
            && let Some(bye) = self.byes.get_mut(&sip::branch(&msg))
        {
            bye.done = true;
        }
    }

    fn reply(&self, ctx: &mut Ctx<'_>, source: (Proto, SocketAddr), data: Bytes) {
        let data = match &self.overload {
            Some((percent, seq)) => {
                seq.set(seq.get() + 1);
                let feedback = format!(";oc={percent};oc-validity=2000;oc-seq={}", seq.get());
                sip::with_top_via_params(&data, &feedback)
            }
            None => data,
        };
        ctx.send(source.0, self.addr, source.1, data);
    }

    fn on_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        source: (Proto, SocketAddr),
        msg: Message,
        plan: &mut dyn FnMut(&str) -> Plan,
    ) {
        let method = msg
            .method()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        let branch = sip::branch(&msg);
        match method.as_str() {
            "INVITE" => {
                if let Some(tx) = self.invites.get(&branch) {
                    if let Some(last) = tx.last.clone() {
                        self.reply(ctx, source, last);
                    }
                    return;
                }
                match msg.to_tag().map(str::to_owned) {
                    None => self.new_invite(ctx, source, msg, plan),
                    Some(tag) => self.reinvite(ctx, source, msg, &tag),
                }
            }
            "ACK" => self.on_ack(ctx, &msg, &branch),
            "CANCEL" => {
                let pending = match self.invites.get(&branch) {
                    Some(tx) => tx.final_code.is_none() && !tx.silent,
                    None => {
                        let r =
                            build_response(&msg, 481, "Call/Transaction Does Not Exist", None, &[]);
                        self.reply(ctx, source, r);
                        return;
                    }
                };
                self.reply(ctx, source, build_response(&msg, 200, "OK", None, &[]));
                if pending {
                    self.reject(ctx, &branch, 487, "Request Terminated");
                }
            }
            _ => {
                let key = (branch, method.clone());
                if let Some(last) = self.others.get(&key).cloned() {
                    self.reply(ctx, source, last);
                    return;
                }
                let response = match msg.to_tag().map(str::to_owned) {
                    Some(tag) => self.in_dialog(ctx, &msg, &method, &tag),
                    None if method == "OPTIONS" => build_response(&msg, 200, "OK", None, &[]),
                    None => build_response(&msg, 405, "Method Not Allowed", None, &[]),
                };
                self.others.insert(key, response.clone());
                self.reply(ctx, source, response);
            }
        }
    }

    /// SPEC 3: the top Record-Route (this side's first route) reaches siplb the way
    /// the request came.
    fn check_route(&self, ctx: &mut Ctx<'_>, msg: &Message, proto: Proto) {
        if let Some(first) = sip::record_routes(msg).first()
            && let Some((p, addr)) = sip::hop(first)
            && addr == crate::world::PROXY
            && p != proto
        {
            ctx.violation(format!(
                "{}: INVITE came over {proto:?} but the top Record-Route is {first}",
                msg.call_id().unwrap_or_default()
            ));
        }
    }

    fn new_invite(
        &mut self,
        ctx: &mut Ctx<'_>,
        source: (Proto, SocketAddr),
        msg: Message,
        plan: &mut dyn FnMut(&str) -> Plan,
    ) {
        let branch = sip::branch(&msg);
        let call_id = msg.call_id().unwrap_or_default().to_owned();
        let Plan { answer, ending } = plan(&call_id);
        self.next += 1;
        let local_tag = format!(
            "d{}n{}",
            self.addr.ip().to_string().replace('.', ""),
            self.next
        );
        self.check_route(ctx, &msg, source.0);
        self.invites.insert(
            branch.clone(),
            InviteTx {
                request: msg,
                source,
                local_tag,
                last: None,
                final_code: None,
                acked: false,
                interval: T1,
                finished_at: Duration::ZERO,
                forks: Vec::new(),
                reinvite: false,
                silent: false,
                lax: matches!(answer, Answer::OkNoAckGuard { .. }),
                ending,
            },
        );
        let addr = self.addr;
        let respond = |step| Event::Callee(addr, Timer::Respond(branch.clone(), step));
        match answer {
            Answer::Ok { ring, answer } => {
                self.provisional(ctx, &branch, 100, "Trying");
                let ring_at = ring.map(|r| ms(r, 4000));
                if let Some(at) = ring_at {
                    ctx.after(at, respond(Step::Ring));
                }
                ctx.after(
                    ring_at.unwrap_or_default() + ms(answer, 4000),
                    respond(Step::Answer),
                );
            }
            Answer::Reject { code, after } => {
                self.provisional(ctx, &branch, 100, "Trying");
                ctx.after(ms(after, 4000), respond(Step::Reject(400 + code % 300)));
            }
            Answer::Silent => {
                ctx.failed(self.addr);
                if let Some(tx) = self.invites.get_mut(&branch) {
                    tx.silent = true;
                }
            }
            Answer::Slow { after } => {
                let at = ms(after, 8000);
                if at >= Duration::from_secs(4) {
                    // siplb gives up on it at invite_timeout (5 s): its failure.
                    ctx.failed(self.addr);
                }
                ctx.after(at, respond(Step::Answer));
            }
            Answer::Forked { answer } => {
                self.provisional(ctx, &branch, 100, "Trying");
                ctx.after(ms(answer, 4000), respond(Step::Answer));
                ctx.after(
                    ms(answer, 4000) + Duration::from_millis(10),
                    respond(Step::SecondFork),
                );
            }
            Answer::RingForever => {
                self.provisional(ctx, &branch, 100, "Trying");
                self.provisional(ctx, &branch, 180, "Ringing");
            }
            Answer::OkNoAckGuard { answer } => {
                self.provisional(ctx, &branch, 100, "Trying");
                ctx.after(ms(answer, 4000), respond(Step::Answer));
            }
        }
    }

    pub(crate) fn on_timer(&mut self, ctx: &mut Ctx<'_>, timer: Timer) {
        if let Some(back) = self.back_at(ctx.now) {
            // A box that hangs sends nothing; its timers fire once it is back.
            let addr = self.addr;
            ctx.after(back.saturating_sub(ctx.now), Event::Callee(addr, timer));
            return;
        }
        match timer {
            Timer::Respond(branch, step) => match step {
                Step::Ring => self.provisional(ctx, &branch, 180, "Ringing"),
                Step::Answer => self.answer(ctx, &branch, None),
                Step::SecondFork => {
                    self.next += 1;
                    let tag = format!(
                        "f{}n{}",
                        self.addr.ip().to_string().replace('.', ""),
                        self.next
                    );
                    self.answer(ctx, &branch, Some(tag));
                }
                Step::Reject(code) => self.reject(ctx, &branch, code, "Rejected"),
            },
            Timer::Retransmit(branch) => self.retransmit(ctx, &branch),
            Timer::Bye(call_id, tag) => {
                let key = (call_id, tag);
                let Some(d) = self.dialogs.get(&key) else {
                    return;
                };
                if d.ended {
                    return;
                }
                if !d.acked {
                    // RFC 3261 15: not before the ACK (the 64*T1 rule covers a lost one).
                    let addr = self.addr;
                    ctx.after(T1, Event::Callee(addr, Timer::Bye(key.0, key.1)));
                    return;
                }
                self.send_bye(ctx, &key);
            }
            Timer::ByeRetransmit(branch) => {
                let now = ctx.now;
                let addr = self.addr;
                let Some(bye) = self.byes.get_mut(&branch) else {
                    return;
                };
                if bye.done {
                    return;
                }
                if now.saturating_sub(bye.sent_at) >= T1 * 64 + GRACE {
                    bye.done = true;
                    let what = format!("BYE {}: the destination's request", bye.call_id);
                    ctx.unanswered(addr, branch, what);
                    return;
                }
                if bye.proto == Proto::Udp {
                    ctx.send(bye.proto, addr, bye.to, bye.data.clone());
                    bye.interval = (bye.interval * 2).min(T2);
                }
                let next = if bye.proto == Proto::Udp {
                    bye.interval
                } else {
                    T1 * 64 + GRACE
                };
                ctx.after(next, Event::Callee(addr, Timer::ByeRetransmit(branch)));
            }
        }
    }

    fn extra_headers(tx: &InviteTx, me: SocketAddr) -> Vec<(String, String)> {
        let mut extra: Vec<(String, String)> = tx
            .request
            .header_values(siplb_sip::HeaderName::RecordRoute)
            .map(|v| {
                (
                    "Record-Route".to_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        extra.push((
            "Contact".to_owned(),
            format!("<sip:callee@{me}{}>", tx.source.0.uri_param()),
        ));
        extra
    }

    fn build(
        tx: &InviteTx,
        me: SocketAddr,
        code: u16,
        reason: &str,
        tag: Option<&str>,
        dialog: bool,
    ) -> Bytes {
        let extra = if dialog {
            Self::extra_headers(tx, me)
        } else {
            Vec::new()
        };
        let extra: Vec<(&str, &str)> = extra
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        build_response(&tx.request, code, reason, tag, &extra)
    }

    fn provisional(&mut self, ctx: &mut Ctx<'_>, branch: &str, code: u16, reason: &str) {
        let addr = self.addr;
        let Some(tx) = self.invites.get_mut(branch) else {
            return;
        };
        if tx.final_code.is_some() {
            return;
        }
        let tagged = code > 100;
        let data = Self::build(
            tx,
            addr,
            code,
            reason,
            tagged.then_some(tx.local_tag.as_str()),
            tagged,
        );
        if tagged {
            let call_id = tx.request.call_id().unwrap_or_default().to_owned();
            self.ever.insert((call_id, tx.local_tag.clone()));
        }
        tx.last = Some(data.clone());
        let source = tx.source;
        self.reply(ctx, source, data);
    }

    fn answer(&mut self, ctx: &mut Ctx<'_>, branch: &str, fork: Option<String>) {
        let addr = self.addr;
        let Some(tx) = self.invites.get_mut(branch) else {
            return;
        };
        match tx.final_code {
            Some(code) if code >= 300 => return,
            Some(_) if fork.is_none() => return,
            None if fork.is_some() => return,
            _ => {}
        }
        let tag = fork.unwrap_or_else(|| tx.local_tag.clone());
        let data = Self::build(tx, addr, 200, "OK", Some(&tag), true);
        let first = tx.final_code.is_none();
        tx.final_code = Some(200);
        tx.finished_at = ctx.now;
        tx.last = Some(data.clone());
        tx.forks.push(tag.clone());
        let req = &tx.request;
        let call_id = req.call_id().unwrap_or_default().to_owned();
        let dialog = Dialog {
            call_id: call_id.clone(),
            local_tag: tag.clone(),
            remote_tag: req.from_tag().unwrap_or_default().to_owned(),
            remote_uri: sip::uri_of(req.from()),
            local_uri: sip::uri_of(req.to()),
            route: sip::record_routes(req),
            target: sip::contact(req).unwrap_or_default(),
            two_xx: data.clone(),
            invite_cseq: req.cseq().map_or(0, |c| c.seq),
            acked: false,
            ended: false,
            cseq: 0,
        };
        let ending = tx.ending;
        let source = tx.source;
        self.ever.insert((call_id.clone(), tag.clone()));
        self.dialogs.insert((call_id.clone(), tag.clone()), dialog);
        self.reply(ctx, source, data);
        if first {
            ctx.after(
                T1,
                Event::Callee(addr, Timer::Retransmit(branch.to_owned())),
            );
        }
        if let Some(Ending::CalleeBye(hold)) = ending {
            ctx.after(
                Duration::from_millis(u64::from(hold) % 20_000),
                Event::Callee(addr, Timer::Bye(call_id, tag)),
            );
        }
    }

    fn reject(&mut self, ctx: &mut Ctx<'_>, branch: &str, code: u16, reason: &str) {
        let addr = self.addr;
        let Some(tx) = self.invites.get_mut(branch) else {
            return;
        };
        if tx.final_code.is_some() {
            return;
        }
        let data = Self::build(tx, addr, code, reason, Some(&tx.local_tag.clone()), false);
        tx.final_code = Some(code);
        tx.finished_at = ctx.now;
        tx.last = Some(data.clone());
        let source = tx.source;
        if code >= 500 {
            ctx.failed(addr);
        }
        self.reply(ctx, source, data);
        if source.0 == Proto::Udp {
            ctx.after(
                T1,
                Event::Callee(addr, Timer::Retransmit(branch.to_owned())),
            );
        }
    }

    fn retransmit(&mut self, ctx: &mut Ctx<'_>, branch: &str) {
        let addr = self.addr;
        let now = ctx.now;
        let Some(tx) = self.invites.get_mut(branch) else {
            return;
        };
        let call_id = tx.request.call_id().unwrap_or_default().to_owned();
        let two_xx = tx.final_code.is_some_and(|c| c < 300);
        let expired = now.saturating_sub(tx.finished_at) >= T1 * 64;
        if !two_xx {
            if tx.acked || expired {
                return;
            }
            if let Some(last) = tx.last.clone() {
                let source = tx.source;
                tx.interval = (tx.interval * 2).min(T2);
                let next = tx.interval;
                ctx.send(source.0, addr, source.1, last);
                ctx.after(
                    next,
                    Event::Callee(addr, Timer::Retransmit(branch.to_owned())),
                );
            }
            return;
        }
        let source = tx.source;
        let lax = tx.lax;
        tx.interval = (tx.interval * 2).min(T2);
        let next = tx.interval;
        let forks = tx.forks.clone();
        let mut waiting = false;
        let mut unacked = Vec::new();
        for tag in forks {
            let key = (call_id.clone(), tag);
            if let Some(d) = self.dialogs.get(&key)
                && !d.acked
                && !d.ended
            {
                if expired {
                    unacked.push(key);
                } else {
                    waiting = true;
                    ctx.send(source.0, addr, source.1, d.two_xx.clone());
                }
            }
        }
        for key in unacked {
            if lax {
                ctx.note(format!(
                    "{}: no ACK for the 2xx; the destination waits on",
                    key.0
                ));
                continue;
            }
            ctx.note(format!(
                "{}: no ACK for the 2xx in 64*T1; the destination hangs up",
                key.0
            ));
            if let Some(d) = self.dialogs.get_mut(&key) {
                d.acked = true;
            }
            self.send_bye(ctx, &key);
        }
        if waiting {
            ctx.after(
                next,
                Event::Callee(addr, Timer::Retransmit(branch.to_owned())),
            );
        }
    }

    fn on_ack(&mut self, ctx: &mut Ctx<'_>, msg: &Message, branch: &str) {
        if let Some(tx) = self.invites.get_mut(branch)
            && tx.final_code.is_some_and(|c| c >= 300)
        {
            tx.acked = true;
            return;
        }
        let Some(tag) = msg.to_tag() else {
            return;
        };
        let key = (msg.call_id().unwrap_or_default().to_owned(), tag.to_owned());
        let seq = msg.cseq().map_or(0, |c| c.seq);
        match self.dialogs.get_mut(&key) {
            Some(d) => {
                if seq == d.invite_cseq {
                    d.acked = true;
                }
            }
            None if self.ever.contains(&key) => {}
            None => ctx.violation(format!(
                "{}: ACK reached {}, which never had this dialog",
                key.0, self.addr
            )),
        }
    }

    fn reinvite(
        &mut self,
        ctx: &mut Ctx<'_>,
        source: (Proto, SocketAddr),
        msg: Message,
        tag: &str,
    ) {
        let addr = self.addr;
        let seq = msg.cseq().map_or(0, |c| c.seq);
        let branch = sip::branch(&msg);
        let key = (msg.call_id().unwrap_or_default().to_owned(), tag.to_owned());
        let known = self.dialogs.get(&key).is_some_and(|d| !d.ended);
        if !known {
            if !self.ever.contains(&key) {
                ctx.violation(format!(
                    "{}: re-INVITE reached {addr}, which never had this dialog",
                    key.0
                ));
            }
            let r = build_response(&msg, 481, "Call/Transaction Does Not Exist", None, &[]);
            self.reply(ctx, source, r);
            return;
        }
        let mut tx = InviteTx {
            request: msg,
            source,
            local_tag: tag.to_owned(),
            last: None,
            final_code: Some(200),
            acked: false,
            interval: T1,
            finished_at: ctx.now,
            forks: vec![tag.to_owned()],
            reinvite: true,
            silent: false,
            lax: false,
            ending: None,
        };
        let data = Self::build(&tx, addr, 200, "OK", None, true);
        tx.last = Some(data.clone());
        self.invites.insert(branch.clone(), tx);
        if let Some(d) = self.dialogs.get_mut(&key) {
            d.acked = false;
            d.two_xx = data.clone();
            d.invite_cseq = seq;
        }
        self.reply(ctx, source, data);
        ctx.after(T1, Event::Callee(addr, Timer::Retransmit(branch)));
    }

    fn in_dialog(&mut self, ctx: &mut Ctx<'_>, msg: &Message, method: &str, tag: &str) -> Bytes {
        let key = (msg.call_id().unwrap_or_default().to_owned(), tag.to_owned());
        if let Some(d) = self.dialogs.get_mut(&key) {
            if d.ended {
                return build_response(msg, 481, "Call/Transaction Does Not Exist", None, &[]);
            }
            if method == "BYE" {
                d.ended = true;
            }
            return build_response(msg, 200, "OK", None, &[]);
        }
        // A BYE in an early dialog: 200 to it, 487 to the INVITE (RFC 3261 15.1.2).
        let early = self
            .invites
            .iter()
            .find(|(_, tx)| {
                !tx.reinvite
                    && tx.local_tag == tag
                    && tx.final_code.is_none()
                    && tx.request.call_id() == Some(key.0.as_str())
            })
            .map(|(b, _)| b.clone());
        if let Some(branch) = early {
            if method == "BYE" {
                self.reject(ctx, &branch, 487, "Request Terminated");
            }
            return build_response(msg, 200, "OK", None, &[]);
        }
        if !self.ever.contains(&key) {
            ctx.violation(format!(
                "{}: in-dialog {method} reached {}, which never had this dialog",
                key.0, self.addr
            ));
        }
        build_response(msg, 481, "Call/Transaction Does Not Exist", None, &[])
    }

    fn send_bye(&mut self, ctx: &mut Ctx<'_>, key: &(String, String)) {
        let addr = self.addr;
        let Some(d) = self.dialogs.get_mut(key) else {
            return;
        };
        if d.ended {
            return;
        }
        d.ended = true;
        d.cseq += 1;
        self.next += 1;
        let branch = format!(
            "z9hG4bKd{}b{}",
            addr.ip().to_string().replace('.', ""),
            self.next
        );
        let first = d.route.first().cloned().unwrap_or_else(|| d.target.clone());
        let Some((proto, to)) = sip::hop(&first) else {
            ctx.violation(format!(
                "{}: the destination cannot reach {first}",
                d.call_id
            ));
            return;
        };
        let data = Request {
            method: "BYE",
            uri: &d.target,
            via: sip::via(proto, addr, &branch),
            routes: &d.route,
            from: format!("<{}>;tag={}", d.local_uri, d.local_tag),
            to: format!("<{}>;tag={}", d.remote_uri, d.remote_tag),
            call_id: &d.call_id,
            cseq: d.cseq,
            contact: None,
            body: "",
        }
        .write();
        let call_id = d.call_id.clone();
        ctx.send(proto, addr, to, data.clone());
        let first_wait = if proto == Proto::Udp {
            T1
        } else {
            T1 * 64 + GRACE
        };
        ctx.after(
            first_wait,
            Event::Callee(addr, Timer::ByeRetransmit(branch.clone())),
        );
        self.byes.insert(
            branch,
            Bye {
                data,
                proto,
                to,
                interval: T1,
                sent_at: ctx.now,
                done: false,
                call_id,
            },
        );
    }
}
