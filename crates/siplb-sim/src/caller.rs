//! The calling side: one user agent client per scripted call, sending its INVITE to
//! siplb and acting on what comes back as its script says (hang up, cancel, hang up
//! early, re-INVITE, never acknowledge...). Like a real phone it retransmits over UDP,
//! acknowledges every final, and (when record-route aware) sends in-dialog requests
//! along the route set siplb's Record-Route gave it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use siplb_sip::{Message, build_response};

use crate::script::{Call, Ending};
use crate::sip::{self, Proto, Request};
use crate::world::{Ctx, Event, GRACE, PROXY, T1, T2};

/// A caller's timers, by what they are for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Retransmit the INVITE (Timer A) while nothing has come back.
    InviteRetransmit,
    /// Retransmit a non-INVITE request or re-INVITE still without a final.
    Retransmit(String),
    /// The scripted action falls due.
    Act,
    /// Hang up when the callee was supposed to and has not.
    Fallback,
}

/// One dialog the call has (several when the answer forked).
#[derive(Debug)]
struct Dialog {
    to_tag: String,
    /// Record-Route reversed (the caller's route set).
    route: Vec<String>,
    target: String,
    /// The ACK of the 2xx, resent when the 2xx is.
    ack: Option<(Proto, SocketAddr, Bytes)>,
    confirmed: bool,
    ended: bool,
    cseq: u32,
}

/// A request the caller sent and waits a final for.
#[derive(Debug)]
struct Pending {
    branch: String,
    method: &'static str,
    to_tag: String,
    data: Bytes,
    proto: Proto,
    to: SocketAddr,
    interval: Duration,
    sent_at: Duration,
    done: bool,
}

#[derive(Debug)]
pub(crate) struct CallerCall {
    pub(crate) idx: usize,
    pub(crate) me: SocketAddr,
    proto: Proto,
    script: Call,
    pub(crate) call_id: String,
    from_tag: String,
    user: String,
    invite: Bytes,
    invite_branch: String,
    invite_started: Duration,
    interval: Duration,
    /// Something came back for the INVITE (retransmissions stop).
    heard: bool,
    pub(crate) final_status: Option<u16>,
    early: Option<Dialog>,
    dialogs: Vec<Dialog>,
    pending: Vec<Pending>,
    cancelled: bool,
    acted: bool,
    answered_at: Option<Duration>,
    next_branch: u32,
}

impl CallerCall {
    pub(crate) fn new(idx: usize, me: SocketAddr, script: Call, user: String) -> CallerCall {
        let proto = if script.tcp { Proto::Tcp } else { Proto::Udp };
        CallerCall {
            idx,
            me,
            proto,
            call_id: format!("sim-{idx}"),
            from_tag: format!("c{idx}"),
            user,
            script,
            invite: Bytes::new(),
            invite_branch: format!("z9hG4bKc{idx}i"),
            invite_started: Duration::ZERO,
            interval: T1,
            heard: false,
            final_status: None,
            early: None,
            dialogs: Vec::new(),
            pending: Vec::new(),
            cancelled: false,
            acted: false,
            answered_at: None,
            next_branch: 0,
        }
    }

    /// The caller's Via: odd callers announce RFC 7339 overload control, so that
    /// siplb's feedback to them, and its absence for the others, is checked.
    fn via(&self, proto: Proto, branch: &str) -> String {
        let mut via = sip::via(proto, self.me, branch);
        if announces_oc(self.idx) {
            via.push_str(";oc");
        }
        via
    }

    fn from(&self) -> String {
        format!("<sip:caller@{}>;tag={}", self.me, self.from_tag)
    }

    fn request_uri(&self) -> String {
        format!("sip:{}@{PROXY}", self.user)
    }

    fn to(&self, tag: Option<&str>) -> String {
        match tag {
            Some(t) => format!("<sip:{}@{PROXY}>;tag={t}", self.user),
            None => format!("<sip:{}@{PROXY}>", self.user),
        }
    }

    fn preloaded(&self) -> Vec<String> {
        if self.script.preloaded_route {
            vec![format!("sip:{PROXY}{};lr", self.proto.uri_param())]
        } else {
            Vec::new()
        }
    }

    fn contact(&self) -> String {
        format!("sip:caller@{}{}", self.me, self.proto.uri_param())
    }

    pub(crate) fn start(&mut self, ctx: &mut Ctx<'_>) {
        let uri = self.request_uri();
        let routes = self.preloaded();
        self.invite = Request {
            method: "INVITE",
            uri: &uri,
            via: self.via(self.proto, &self.invite_branch),
            routes: &routes,
            from: self.from(),
            to: self.to(None),
            call_id: &self.call_id,
            cseq: 1,
            contact: Some(self.contact()),
            body: sip::SDP,
        }
        .write();
        self.invite_started = ctx.now;
        ctx.send(self.proto, self.me, PROXY, self.invite.clone());
        if self.proto == Proto::Udp {
            ctx.after(
                self.interval,
                Event::Caller(self.idx, Timer::InviteRetransmit),
            );
        }
        match self.script.ending {
            Ending::Cancel(ms) => ctx.after(
                Duration::from_millis(u64::from(ms % 6000)),
                Event::Caller(self.idx, Timer::Act),
            ),
            Ending::Operator(ms) => {
                let at = Duration::from_millis(u64::from(ms % 10_000));
                ctx.after(at, Event::EndCall(self.idx));
                ctx.after(at * 2, Event::Caller(self.idx, Timer::Act));
            }
            _ => {}
        }
    }

    pub(crate) fn on_timer(&mut self, ctx: &mut Ctx<'_>, timer: Timer) {
        match timer {
            Timer::InviteRetransmit => {
                if self.heard || self.final_status.is_some() {
                    return;
                }
                if ctx.now.saturating_sub(self.invite_started) >= T1 * 64 {
                    ctx.note(format!(
                        "{}: INVITE got no response (Timer B)",
                        self.call_id
                    ));
                    return;
                }
                ctx.send(self.proto, self.me, PROXY, self.invite.clone());
                self.interval *= 2;
                ctx.after(
                    self.interval,
                    Event::Caller(self.idx, Timer::InviteRetransmit),
                );
            }
            Timer::Retransmit(branch) => self.retransmit(ctx, &branch),
            Timer::Act => self.act(ctx),
            Timer::Fallback => {
                let open: Vec<String> = self
                    .dialogs
                    .iter()
                    .filter(|d| !d.ended && d.confirmed)
                    .map(|d| d.to_tag.clone())
                    .collect();
                for tag in open {
                    ctx.note(format!(
                        "{}: the callee never hung up; caller does",
                        self.call_id
                    ));
                    self.send_in_dialog(ctx, &tag, "BYE", "");
                }
            }
        }
    }

    fn retransmit(&mut self, ctx: &mut Ctx<'_>, branch: &str) {
        let now = ctx.now;
        let Some(p) = self.pending.iter_mut().find(|p| p.branch == branch) else {
            return;
        };
        if p.done {
            return;
        }
        if now.saturating_sub(p.sent_at) >= T1 * 64 + GRACE {
            p.done = true;
            let what = format!("{} {}: the caller's request", p.method, self.call_id);
            let reinvite = p.method == "INVITE";
            ctx.unanswered(self.me, p.branch.clone(), what);
            if reinvite {
                // The re-INVITE went nowhere: hang up all the same.
                self.acted = false;
                self.script.ending = Ending::Bye(0);
                ctx.after(T1, Event::Caller(self.idx, Timer::Act));
            }
            return;
        }
        if p.proto == Proto::Udp {
            ctx.send(p.proto, self.me, p.to, p.data.clone());
            p.interval = if p.method == "INVITE" {
                p.interval * 2
            } else {
                (p.interval * 2).min(T2)
            };
        }
        let next = if p.proto == Proto::Udp {
            p.interval
        } else {
            T1 * 64 + GRACE
        };
        ctx.after(
            next,
            Event::Caller(self.idx, Timer::Retransmit(branch.to_owned())),
        );
    }

    /// The scripted action, when its time comes.
    fn act(&mut self, ctx: &mut Ctx<'_>) {
        if self.acted {
            return;
        }
        match self.script.ending {
            Ending::Cancel(_) | Ending::Operator(_) => {
                self.acted = true;
                if self.final_status.is_none() {
                    self.send_cancel(ctx);
                } else {
                    // Answered before the caller gave up: it hangs up instead.
                    self.hang_up_all(ctx);
                }
            }
            Ending::EarlyBye(_) => {
                self.acted = true;
                if self.final_status.is_none() {
                    if let Some(tag) = self.early.as_ref().map(|d| d.to_tag.clone()) {
                        self.send_in_dialog(ctx, &tag, "BYE", "");
                    }
                } else {
                    self.hang_up_all(ctx);
                }
            }
            Ending::Reinvite(_) => {
                self.acted = true;
                let open = self
                    .dialogs
                    .iter()
                    .find(|d| !d.ended)
                    .map(|d| d.to_tag.clone());
                if let Some(tag) = open {
                    self.send_in_dialog(ctx, &tag, "INVITE", sip::SDP);
                }
            }
            Ending::Bye(_) | Ending::CalleeBye(_) | Ending::NeverAck => {
                self.acted = true;
                self.hang_up_all(ctx);
            }
        }
    }

    fn hang_up_all(&mut self, ctx: &mut Ctx<'_>) {
        let open: Vec<String> = self
            .dialogs
            .iter()
            .filter(|d| !d.ended && d.confirmed)
            .map(|d| d.to_tag.clone())
            .collect();
        for tag in open {
            self.send_in_dialog(ctx, &tag, "BYE", "");
        }
    }

    fn send_cancel(&mut self, ctx: &mut Ctx<'_>) {
        if self.cancelled {
            return;
        }
        self.cancelled = true;
        let uri = self.request_uri();
        let routes = self.preloaded();
        let data = Request {
            method: "CANCEL",
            uri: &uri,
            via: self.via(self.proto, &self.invite_branch),
            routes: &routes,
            from: self.from(),
            to: self.to(None),
            call_id: &self.call_id,
            cseq: 1,
            contact: None,
            body: "",
        }
        .write();
        self.track(
            ctx,
            self.invite_branch.clone(),
            "CANCEL",
            String::new(),
            self.proto,
            PROXY,
            data,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn track(
        &mut self,
        ctx: &mut Ctx<'_>,
        branch: String,
        method: &'static str,
        to_tag: String,
        proto: Proto,
        to: SocketAddr,
        data: Bytes,
    ) {
        ctx.send(proto, self.me, to, data.clone());
        let interval = if proto == Proto::Udp {
            T1
        } else {
            T1 * 64 + GRACE
        };
        ctx.after(
            interval,
            Event::Caller(self.idx, Timer::Retransmit(branch.clone())),
        );
        self.pending.push(Pending {
            branch,
            method,
            to_tag,
            data,
            proto,
            to,
            interval: T1,
            sent_at: ctx.now,
            done: false,
        });
    }

    /// Where an in-dialog request goes: along the route set when the caller honours
    /// Record-Route, else straight to siplb on the INVITE's transport.
    fn next_hop(&self, route: &[String], target: &str) -> (Proto, SocketAddr) {
        if self.script.rr_aware {
            let first = route.first().map(String::as_str).unwrap_or(target);
            if let Some(h) = sip::hop(first) {
                return h;
            }
        }
        (self.proto, PROXY)
    }

    fn send_in_dialog(&mut self, ctx: &mut Ctx<'_>, tag: &str, method: &'static str, body: &str) {
        self.next_branch += 1;
        let branch = format!("z9hG4bKc{}r{}", self.idx, self.next_branch);
        let (route, target, cseq) = {
            let d = match self.dialogs.iter_mut().find(|d| d.to_tag == tag) {
                Some(d) => d,
                None => match self.early.as_mut().filter(|d| d.to_tag == tag) {
                    Some(d) => d,
                    None => return,
                },
            };
            d.cseq += 1;
            if method == "BYE" {
                d.ended = true;
            }
            (d.route.clone(), d.target.clone(), d.cseq)
        };
        let (proto, to) = self.next_hop(&route, &target);
        let routes: Vec<String> = if self.script.rr_aware {
            route
        } else {
            Vec::new()
        };
        let data = Request {
            method,
            uri: &target,
            via: self.via(proto, &branch),
            routes: &routes,
            from: self.from(),
            to: self.to(Some(tag)),
            call_id: &self.call_id,
            cseq,
            contact: (method == "INVITE").then(|| self.contact()),
            body,
        }
        .write();
        self.track(ctx, branch, method, tag.to_owned(), proto, to, data);
    }

    pub(crate) fn on_message(
        &mut self,
        ctx: &mut Ctx<'_>,
        proto: Proto,
        from: SocketAddr,
        msg: Message,
    ) {
        if msg.is_request() {
            self.on_request(ctx, proto, from, &msg);
            return;
        }
        let status = msg.status().unwrap_or(0);
        let branch = sip::branch(&msg);
        let (_, method) = sip::cseq(&msg);
        if branch == self.invite_branch && method == "INVITE" {
            self.on_invite_response(ctx, status, &msg);
            return;
        }
        if method == "INVITE" && (200..300).contains(&status) {
            // A 2xx to the re-INVITE (retransmitted or not): acknowledge it.
            if let Some(p) = self.pending.iter_mut().find(|p| p.branch == branch) {
                p.done = true;
                let tag = p.to_tag.clone();
                self.ack_2xx(ctx, &tag, &msg, true);
                if let Ending::Reinvite(ms) = self.script.ending {
                    self.acted = false;
                    self.script.ending = Ending::Bye(ms);
                    ctx.after(hold(ms), Event::Caller(self.idx, Timer::Act));
                }
            }
            return;
        }
        if status >= 200
            && let Some(p) = self
                .pending
                .iter_mut()
                .find(|p| p.branch == branch && p.method == method)
        {
            p.done = true;
            if p.method == "INVITE" && status >= 300 {
                // A failed re-INVITE: the call goes on; hang up later.
                self.acted = false;
                self.script.ending = Ending::Bye(500);
                ctx.after(T1, Event::Caller(self.idx, Timer::Act));
            }
        }
    }

    fn on_invite_response(&mut self, ctx: &mut Ctx<'_>, status: u16, msg: &Message) {
        self.heard = true;
        let tag = msg.to_tag().map(str::to_owned);
        if status < 200 {
            if let (Some(tag), None) = (tag, &self.early) {
                let mut route = sip::record_routes(msg);
                route.reverse();
                self.check_route(ctx, &route);
                let target = sip::contact(msg).unwrap_or_else(|| self.request_uri());
                self.early = Some(Dialog {
                    to_tag: tag,
                    route,
                    target,
                    ack: None,
                    confirmed: false,
                    ended: false,
                    cseq: 1,
                });
                if let Ending::EarlyBye(ms) = self.script.ending
                    && self.final_status.is_none()
                {
                    ctx.after(
                        Duration::from_millis(u64::from(ms % 4000)),
                        Event::Caller(self.idx, Timer::Act),
                    );
                }
            }
            return;
        }
        if status >= 300 {
            if self.final_status.is_none() {
                self.final_status = Some(status);
            }
            self.ack_non_2xx(ctx, msg);
            return;
        }
        let Some(tag) = tag else {
            ctx.violation(format!("{}: a 2xx without To tag", self.call_id));
            return;
        };
        if self.final_status.is_none() {
            self.final_status = Some(status);
        }
        if let Some(d) = self.dialogs.iter().find(|d| d.to_tag == tag) {
            // A retransmission: the same ACK again (none when the script never ACKs).
            if let Some((proto, to, ack)) = d.ack.clone() {
                ctx.send(proto, self.me, to, ack);
            }
            return;
        }
        let mut route = sip::record_routes(msg);
        route.reverse();
        self.check_route(ctx, &route);
        let target = sip::contact(msg).unwrap_or_else(|| self.request_uri());
        let early_bye_sent = self
            .early
            .as_ref()
            .is_some_and(|d| d.to_tag == tag && d.ended);
        self.dialogs.push(Dialog {
            to_tag: tag.clone(),
            route,
            target,
            ack: None,
            confirmed: true,
            ended: false,
            cseq: self
                .early
                .as_ref()
                .filter(|d| d.to_tag == tag)
                .map_or(1, |d| d.cseq),
        });
        let first = self.dialogs.len() == 1;
        if self.script.ending == Ending::NeverAck {
            return;
        }
        self.ack_2xx(ctx, &tag, msg, false);
        let answered_now = self.answered_at.is_none();
        if answered_now {
            self.answered_at = Some(ctx.now);
        }
        if !first || self.cancelled || early_bye_sent || self.acted {
            // A second fork, or an answer that crossed our CANCEL or BYE: end it.
            self.send_in_dialog(ctx, &tag, "BYE", "");
            return;
        }
        match self.script.ending {
            Ending::Bye(ms) | Ending::Reinvite(ms) => {
                ctx.after(hold(ms), Event::Caller(self.idx, Timer::Act));
            }
            Ending::EarlyBye(ms) => {
                ctx.after(
                    Duration::from_millis(u64::from(ms % 4000)),
                    Event::Caller(self.idx, Timer::Act),
                );
            }
            Ending::CalleeBye(ms) => {
                ctx.after(hold(ms) + T1 * 80, Event::Caller(self.idx, Timer::Fallback));
            }
            Ending::Cancel(_) | Ending::Operator(_) | Ending::NeverAck => {}
        }
    }

    /// SPEC 3: each side's route set reaches siplb the way that side reached it.
    fn check_route(&self, ctx: &mut Ctx<'_>, route: &[String]) {
        if !self.script.rr_aware {
            return;
        }
        if let Some(first) = route.first()
            && let Some((proto, addr)) = sip::hop(first)
            && addr == PROXY
            && proto != self.proto
        {
            ctx.violation(format!(
                "{}: the caller used {:?} but its route set starts with {first}",
                self.call_id, self.proto
            ));
        }
    }

    fn ack_2xx(&mut self, ctx: &mut Ctx<'_>, tag: &str, msg: &Message, reinvite: bool) {
        let (seq, _) = sip::cseq(msg);
        let Some(d) = self.dialogs.iter().find(|d| d.to_tag == tag) else {
            return;
        };
        let (proto, to) = self.next_hop(&d.route, &d.target);
        let routes: Vec<String> = if self.script.rr_aware {
            d.route.clone()
        } else {
            Vec::new()
        };
        let branch = format!(
            "z9hG4bKc{}a{seq}{}",
            self.idx,
            if reinvite { "r" } else { "" }
        );
        let data = Request {
            method: "ACK",
            uri: &d.target,
            via: self.via(proto, &branch),
            routes: &routes,
            from: self.from(),
            to: self.to(Some(tag)),
            call_id: &self.call_id,
            cseq: seq,
            contact: None,
            body: "",
        }
        .write();
        ctx.send(proto, self.me, to, data.clone());
        if !reinvite && let Some(d) = self.dialogs.iter_mut().find(|d| d.to_tag == tag) {
            d.ack = Some((proto, to, data));
        }
    }

    /// The ACK of a non-2xx final: hop by hop, on the INVITE's branch.
    fn ack_non_2xx(&mut self, ctx: &mut Ctx<'_>, msg: &Message) {
        let to = match msg.to_tag() {
            Some(t) => self.to(Some(t)),
            None => self.to(None),
        };
        let uri = self.request_uri();
        let routes = self.preloaded();
        let data = Request {
            method: "ACK",
            uri: &uri,
            via: self.via(self.proto, &self.invite_branch),
            routes: &routes,
            from: self.from(),
            to,
            call_id: &self.call_id,
            cseq: 1,
            contact: None,
            body: "",
        }
        .write();
        ctx.send(self.proto, self.me, PROXY, data);
    }

    fn on_request(&mut self, ctx: &mut Ctx<'_>, proto: Proto, from: SocketAddr, msg: &Message) {
        let method = msg
            .method()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        if method == "ACK" {
            return;
        }
        // From the callee, the dialog's To tag is the callee's From tag.
        let tag = msg.from_tag().unwrap_or_default().to_owned();
        let known = self.dialogs.iter_mut().find(|d| d.to_tag == tag);
        let (code, reason) = match known {
            Some(d) => {
                if method == "BYE" {
                    d.ended = true;
                }
                (200, "OK")
            }
            None if self.early.as_ref().is_some_and(|d| d.to_tag == tag) => (200, "OK"),
            None => (481, "Call/Transaction Does Not Exist"),
        };
        ctx.send(
            proto,
            self.me,
            from,
            build_response(msg, code, reason, None, &[]),
        );
    }
}

fn hold(ms: u16) -> Duration {
    Duration::from_millis(u64::from(ms % 20_000))
}

/// Whether caller call `idx` announces overload control in its Via.
pub(crate) fn announces_oc(idx: usize) -> bool {
    idx % 2 == 1
}

/// The call index in a branch of one of the callers' requests (`z9hG4bKc{idx}...`).
pub(crate) fn call_of_branch(branch: &str) -> Option<usize> {
    let digits = branch.strip_prefix("z9hG4bKc")?;
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}
