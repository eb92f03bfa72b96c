//! The stateful proxy: requests in, routing decisions, transactions, calls and their
//! load, responses back. Driven by [`Proxy::handle`] and [`Proxy::handle_timeout`];
//! everything it wants sent comes out of [`Proxy::poll_transmit`].

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use siplb_balance::{Allocation, Balancer, Outcome, ResourceRequest, Session, SplitMix64};
use siplb_sip::{Datagram, Message, Method, build_response, parse_datagram};
use siplb_txn::{
    ClientEvent, ClientKey, ClientTransaction, Prehashed, ServerEvent, ServerKey,
    ServerTransaction, prehash,
};
use tracing::{debug, info, warn};

use crate::addr::{Listeners, Peer, peer_of_uri, peer_of_uri_text};
use crate::events::{ChangeSource, StatusChange};
use crate::persist::{DialogChange, PersistedCall};
use crate::routing;
use crate::settings::{RouteAction, Settings};
use crate::stats::Stats;

mod probe;

pub use probe::ProbeState;

/// A message that arrived, with where from and on which listener.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub peer: Peer,
    pub data: Bytes,
}

/// One call as the management interface lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSummary {
    pub call_id: String,
    /// The destination whose load the call holds (none for a plain relay).
    pub destination: Option<u32>,
    pub uri: Option<String>,
    pub resources: Vec<String>,
    /// `early` until answered, then `confirmed`.
    pub state: &'static str,
    pub age: std::time::Duration,
}

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub peer: Peer,
    pub data: Bytes,
}

/// Identifies a call: its Call-ID and the caller's From tag. Carries its hash, like
/// the transaction keys (see `siplb_txn::prehash`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct CallKey {
    hash: u64,
    call_id: Box<str>,
    caller_tag: Box<str>,
}

impl CallKey {
    fn new(call_id: &str, caller_tag: &str) -> CallKey {
        CallKey {
            hash: prehash(&(call_id, caller_tag)),
            call_id: call_id.into(),
            caller_tag: caller_tag.into(),
        }
    }
}

impl std::hash::Hash for CallKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// The load a call holds. Dropping it releases the load, exactly once.
#[derive(Debug)]
enum Load {
    /// Chosen by load, with the failover state of the call.
    Balanced(Session),
    /// Held without failover: a call from the cluster counted against the destination
    /// it came from, or a call restored after a restart.
    Held(Allocation),
    /// Relayed without load.
    None,
}

impl Load {
    /// The destination whose load the call holds.
    fn destination(&self) -> Option<u32> {
        match self {
            Load::Balanced(session) => session.current().map(Allocation::destination_id),
            Load::Held(allocation) => Some(allocation.destination_id()),
            Load::None => None,
        }
    }
}

#[derive(Debug)]
struct Call {
    /// The caller's INVITE server transaction (none for a call restored after a restart).
    server: Option<ServerKey>,
    caller: Peer,
    /// The INVITE as received: each attempt is forwarded from it. Dropped once the
    /// call is answered, as nothing is built from it any more (it is most of a call's
    /// memory).
    /// Boxed: a slot the size of a `Message` would stay in every answered call.
    invite: Option<Box<Message>>,
    load: Load,
    /// The INVITE client transaction of the current attempt.
    branch: Option<ClientKey>,
    callee: Option<Peer>,
    destination: Option<u32>,
    provisional: bool,
    cancel_pending: bool,
    cancelled: bool,
    confirmed: bool,
    expires: Option<Instant>,
    started: Instant,
    /// The first reply other than 100 has been seen (setup time recorded).
    answered_once: bool,
    callee_tag: Option<String>,
    /// Stored for a restart: its end must be stored too.
    persisted: bool,
}

#[derive(Debug)]
struct ServerCtx {
    tx: ServerTransaction,
    peer: Peer,
    /// The request, kept for relayed non-INVITE requests so that siplb can answer it
    /// itself when the next hop fails.
    request: Option<Message>,
    scheduled: Option<Instant>,
}

#[derive(Debug)]
enum ClientRole {
    /// An attempt of a call's INVITE.
    Invite(CallKey),
    /// A CANCEL for an attempt; its response stays here.
    Cancel,
    /// Any other forwarded request: responses go to this server transaction.
    Relay(ServerKey),
    /// An OPTIONS probe of this destination.
    Probe(u32),
}

#[derive(Debug)]
struct ClientCtx {
    tx: ClientTransaction,
    peer: Peer,
    role: ClientRole,
    scheduled: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerRef {
    Server(ServerKey),
    Client(ClientKey),
    Call(CallKey),
    ProbeTick,
    /// Gives back table space after a burst (hash tables never shrink by themselves).
    Housekeeping,
}

/// The proxy core. Single-threaded by design: one owner processes every message in
/// arrival order, so the replies of a transaction leave in the order they came.
#[derive(Debug)]
pub struct Proxy {
    settings: Settings,
    listeners: Listeners,
    balancer: Arc<Balancer>,
    /// Values are boxed and keys carry their hash, so that growing a table of a
    /// hundred thousand transactions moves small entries and reads no string: the
    /// message that makes it grow is not held up for milliseconds. Empty buckets of
    /// a table sized for a burst then cost a pointer, not a whole context.
    servers: HashMap<ServerKey, Box<ServerCtx>, Prehashed>,
    clients: HashMap<ClientKey, Box<ClientCtx>, Prehashed>,
    calls: HashMap<CallKey, Box<Call>, Prehashed>,
    /// Calls being set up, by their INVITE server transaction: how a CANCEL finds its
    /// call without a scan.
    setting_up: HashMap<ServerKey, CallKey, Prehashed>,
    agenda: BTreeSet<(Instant, u64, TimerRef)>,
    agenda_seq: u64,
    out: VecDeque<Transmit>,
    branch_salt: u64,
    branch_seq: u64,
    rng: SplitMix64,
    failures: HashMap<u32, u32>,
    stats: Stats,
    draining: bool,
    probes: HashMap<u32, ProbeState>,
    probe_seq: u64,
    events: VecDeque<StatusChange>,
    dialog_changes: VecDeque<DialogChange>,
}

const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS";

const HOUSEKEEPING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Shrinks a table that is less than a quarter full, keeping room to double.
fn shrink<K, V, S>(map: &mut HashMap<K, V, S>)
where
    K: std::hash::Hash + Eq,
    S: std::hash::BuildHasher,
{
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

impl Proxy {
    pub fn new(settings: Settings, balancer: Arc<Balancer>) -> Proxy {
        let mut rng = SplitMix64::from_entropy();
        Proxy {
            listeners: Listeners::new(settings.listen.clone()),
            settings,
            balancer,
            servers: HashMap::default(),
            clients: HashMap::default(),
            calls: HashMap::default(),
            setting_up: HashMap::default(),
            agenda: BTreeSet::new(),
            agenda_seq: 0,
            out: VecDeque::new(),
            branch_salt: rng.next_u64(),
            branch_seq: 0,
            rng,
            failures: HashMap::new(),
            stats: Stats::default(),
            draining: false,
            probes: HashMap::new(),
            probe_seq: 0,
            events: VecDeque::new(),
            dialog_changes: VecDeque::new(),
        }
    }

    /// While draining (shutting down), new calls get `503 Service Unavailable`;
    /// calls that are up go on until they end.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Calls being set up or up.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// No call is up and no forwarded request awaits its final response: what a
    /// drain waits for before siplb exits.
    pub fn is_idle(&self) -> bool {
        self.calls.is_empty()
            && self.clients.values().all(|c| {
                // A request that timed out has had its answer (a local 408) already.
                c.tx.timed_out()
                    || !matches!(
                        c.tx.state(),
                        siplb_txn::State::Calling
                            | siplb_txn::State::Trying
                            | siplb_txn::State::Proceeding
                    )
            })
    }

    /// The calls being set up or up, for `lb_calls`.
    pub fn call_summaries(&self, now: Instant) -> Vec<CallSummary> {
        self.calls
            .iter()
            .map(|(key, call)| {
                let allocation = match &call.load {
                    Load::Balanced(session) => session.current(),
                    Load::Held(a) => Some(a),
                    Load::None => None,
                };
                CallSummary {
                    call_id: key.call_id.to_string(),
                    destination: allocation.map(Allocation::destination_id),
                    uri: allocation.map(|a| a.uri().to_owned()),
                    resources: allocation
                        .map(|a| a.resources().map(str::to_owned).collect())
                        .unwrap_or_default(),
                    state: if call.confirmed { "confirmed" } else { "early" },
                    age: now.saturating_duration_since(call.started),
                }
            })
            .collect()
    }

    /// Ends every call with this Call-ID, releasing its load (an operator's repair for
    /// a call whose end siplb never saw); returns how many.
    pub fn end_calls_with_id(&mut self, call_id: &str) -> usize {
        let keys: Vec<CallKey> = self
            .calls
            .keys()
            .filter(|k| &*k.call_id == call_id)
            .cloned()
            .collect();
        for key in &keys {
            info!(call_id, "call ended by the operator, load released");
            self.end_call(key);
        }
        keys.len()
    }

    /// Gives back the space of tables a burst left mostly empty.
    fn housekeeping(&mut self) {
        shrink(&mut self.servers);
        shrink(&mut self.clients);
        shrink(&mut self.calls);
        shrink(&mut self.setting_up);
    }

    /// Transactions alive (server and client).
    pub fn transactions(&self) -> usize {
        self.servers.len() + self.clients.len()
    }

    /// The next message to send, in the order they were produced.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next change to the stored calls (when `[dialog] persist` is on).
    pub fn poll_dialog_change(&mut self) -> Option<DialogChange> {
        self.dialog_changes.pop_front()
    }

    /// Stores an answered call that holds load, so a restart can restore it.
    fn persist_call(&mut self, now: Instant, call_key: &CallKey) {
        if !self.settings.persist_dialogs {
            return;
        }
        let Some(call) = self.calls.get_mut(call_key) else {
            return;
        };
        let allocation = match &call.load {
            Load::Balanced(session) => session.current(),
            Load::Held(a) => Some(a),
            Load::None => None,
        };
        let (Some(allocation), Some(callee)) = (allocation, call.callee) else {
            return;
        };
        let record = PersistedCall {
            call_id: call_key.call_id.to_string(),
            caller_tag: call_key.caller_tag.to_string(),
            callee_tag: call.callee_tag.clone(),
            destination_id: allocation.destination_id(),
            resources: allocation.resources().collect::<Vec<_>>().join(";"),
            caller: call.caller,
            callee,
            age: now.saturating_duration_since(call.started),
            expires_in: call.expires.map_or(self.settings.dialog_timeout, |t| {
                t.saturating_duration_since(now)
            }),
        };
        call.persisted = true;
        self.dialog_changes.push_back(DialogChange::Upsert(record));
    }

    /// Brings back a call stored before a restart: its load is taken again on its
    /// destination (whatever the capacity), and its in-dialog requests are routed as
    /// before. Fails when the destination or a resource is gone from the table.
    pub fn restore_call(&mut self, now: Instant, stored: PersistedCall) -> Result<(), String> {
        let request = ResourceRequest::parse(&stored.resources)
            .map_err(|e| format!("resources {:?}: {e}", stored.resources))?;
        let allocation = self
            .balancer
            .restore(stored.destination_id, &request)
            .map_err(|e| e.to_string())?;
        let key = CallKey::new(&stored.call_id, &stored.caller_tag);
        let expires = now + stored.expires_in;
        self.calls.insert(
            key.clone(),
            Box::new(Call {
                server: None,
                caller: stored.caller,
                invite: None,
                load: Load::Held(allocation),
                branch: None,
                callee: Some(stored.callee),
                destination: Some(stored.destination_id),
                provisional: true,
                cancel_pending: false,
                cancelled: false,
                confirmed: true,
                expires: Some(expires),
                started: now.checked_sub(stored.age).unwrap_or(now),
                answered_once: true,
                callee_tag: stored.callee_tag,
                persisted: true,
            }),
        );
        self.schedule(expires, TimerRef::Call(key));
        Ok(())
    }

    /// The next status change of a destination made by the core (failover, probes).
    pub fn poll_status_change(&mut self) -> Option<StatusChange> {
        self.events.pop_front()
    }

    /// Logs a status change and queues it for publication.
    fn status_changed(&mut self, id: u32, enabled: bool, source: ChangeSource, reason: String) {
        let (group, uri) = self
            .balancer
            .destination(id)
            .map(|d| (d.group, d.uri.to_string()))
            .unwrap_or_default();
        info!(
            destination = id,
            group,
            uri,
            old = if enabled { "disabled" } else { "enabled" },
            new = if enabled { "enabled" } else { "disabled" },
            %source,
            reason,
            "destination status changed"
        );
        if enabled {
            self.stats.destinations_enabled += 1;
        } else {
            self.stats.destinations_disabled += 1;
        }
        self.events.push_back(StatusChange {
            id,
            group,
            uri,
            enabled,
            source,
            reason,
        });
    }

    /// When [`Proxy::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.agenda.first().map(|(t, _, _)| *t)
    }

    /// Processes one received datagram or stream frame.
    pub fn handle(&mut self, now: Instant, incoming: Incoming) {
        let Incoming { peer, data } = incoming;
        let msg = match parse_datagram(data, &self.settings.limits) {
            Ok(Datagram::Message(m)) => m,
            Ok(Datagram::KeepAlive) => return,
            Err(e) => {
                self.stats.malformed += 1;
                debug!(%peer, error = %e, "malformed message");
                if let (Some((code, reason)), Some(m)) = (e.reply_status(), e.message()) {
                    let reply = build_response(
                        m,
                        code,
                        reason,
                        None,
                        &[("Warning", &format!("399 siplb \"{e}\""))],
                    );
                    self.send(peer, reply);
                }
                return;
            }
        };
        self.handle_message(now, msg, peer);
    }

    /// Processes one message that the transport already framed and parsed (TCP).
    pub fn handle_message(&mut self, now: Instant, msg: Message, peer: Peer) {
        if msg.is_request() {
            self.on_request(now, msg, peer);
        } else {
            self.on_response(now, msg, peer);
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((due, _, _)) = self.agenda.first() {
            if *due > now {
                break;
            }
            let Some((_, _, what)) = self.agenda.pop_first() else {
                break;
            };
            match what {
                TimerRef::Server(key) => {
                    if let Some(ctx) = self.servers.get_mut(&key)
                        && ctx.scheduled.is_some_and(|t| t <= now)
                    {
                        ctx.scheduled = None;
                        ctx.tx.handle_timeout(now);
                        self.drain_server(now, &key);
                    }
                }
                TimerRef::Client(key) => {
                    if let Some(ctx) = self.clients.get_mut(&key)
                        && ctx.scheduled.is_some_and(|t| t <= now)
                    {
                        ctx.scheduled = None;
                        ctx.tx.handle_timeout(now);
                        self.drain_client(now, &key);
                    }
                }
                TimerRef::ProbeTick => self.probe_tick(now),
                TimerRef::Housekeeping => {
                    self.housekeeping();
                    self.schedule(now + HOUSEKEEPING_INTERVAL, TimerRef::Housekeeping);
                }
                TimerRef::Call(key) => {
                    let expired = self
                        .calls
                        .get(&key)
                        .is_some_and(|c| c.expires.is_some_and(|t| t <= now));
                    if expired {
                        info!(call_id = %key.call_id, "dialog timeout: call ended, load released");
                        self.stats.dialog_timeouts += 1;
                        self.end_call(&key);
                    }
                }
            }
        }
    }

    fn schedule(&mut self, at: Instant, what: TimerRef) {
        self.agenda_seq += 1;
        self.agenda.insert((at, self.agenda_seq, what));
    }

    fn send(&mut self, peer: Peer, data: Bytes) {
        self.out.push_back(Transmit { peer, data });
    }

    fn new_branch(&mut self) -> String {
        self.branch_seq += 1;
        format!(
            "z9hG4bKlb{:x}.{:x}",
            self.branch_salt & 0xffff_ffff,
            self.branch_seq
        )
    }

    fn new_tag(&mut self) -> String {
        format!("lb{:x}", self.rng.next_u64())
    }

    fn via_for(&mut self, peer: &Peer) -> Option<(String, String)> {
        let branch = self.new_branch();
        let (_, host_port) = self.listeners.local_for(peer)?;
        let transport = match peer.transport {
            crate::addr::Transport::Udp => "SIP/2.0/UDP ",
            crate::addr::Transport::Tcp => "SIP/2.0/TCP ",
        };
        let mut via = String::with_capacity(64 + host_port.len());
        for part in [transport, host_port, ";branch=", &branch, ";rport"] {
            via.push_str(part);
        }
        Some((via, branch))
    }

    fn record_route_for(&self, peer: &Peer) -> Option<String> {
        let (_, host_port) = self.listeners.local_for(peer)?;
        let params = match peer.transport {
            crate::addr::Transport::Udp => ";lr>",
            crate::addr::Transport::Tcp => ";transport=tcp;lr>",
        };
        let mut rr = String::with_capacity(32 + host_port.len());
        for part in ["<sip:", host_port, params] {
            rr.push_str(part);
        }
        Some(rr)
    }

    // ---- server side -------------------------------------------------------------

    /// Sends a response of siplb's own through a server transaction, so that
    /// retransmissions of the request get it again.
    fn respond(
        &mut self,
        now: Instant,
        request: &Message,
        peer: Peer,
        code: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) {
        let tag = (code > 100 && request.to_tag().is_none()).then(|| self.new_tag());
        let reply = build_response(request, code, reason, tag.as_deref(), extra);
        self.stats.count_local_reply(code);
        let Ok(key) = ServerKey::from_request(request) else {
            self.send(peer, reply);
            return;
        };
        if !self.servers.contains_key(&key) {
            match ServerTransaction::new(request, peer.reliability(), self.settings.timers) {
                Ok(tx) => {
                    self.servers.insert(
                        key.clone(),
                        Box::new(ServerCtx {
                            tx,
                            peer,
                            request: None,
                            scheduled: None,
                        }),
                    );
                }
                Err(_) => {
                    self.send(peer, reply);
                    return;
                }
            }
        }
        if let Some(ctx) = self.servers.get_mut(&key) {
            let _ = ctx.tx.send_response(reply, now);
        }
        self.drain_server(now, &key);
    }

    fn drain_server(&mut self, now: Instant, key: &ServerKey) {
        let Some(ctx) = self.servers.get_mut(key) else {
            return;
        };
        let peer = ctx.peer;
        // Straight into the output queue (a disjoint field): no buffer per message.
        while let Some(data) = ctx.tx.poll_transmit() {
            self.out.push_back(Transmit { peer, data });
        }
        let mut events = Vec::new();
        while let Some(e) = ctx.tx.poll_event() {
            events.push(e);
        }
        let next = ctx.tx.poll_timeout();
        let terminated = ctx.tx.is_terminated();
        let reschedule = next.filter(|t| ctx.scheduled != Some(*t));
        if let Some(t) = reschedule {
            ctx.scheduled = Some(t);
        }
        if let Some(t) = reschedule {
            self.schedule(t, TimerRef::Server(key.clone()));
        }
        for e in events {
            if let ServerEvent::Ack(ack) = e {
                self.forward_in_dialog(now, ack, peer);
            }
        }
        if terminated {
            self.servers.remove(key);
        }
    }

    // ---- client side -------------------------------------------------------------

    fn start_client(
        &mut self,
        now: Instant,
        request: Message,
        peer: Peer,
        role: ClientRole,
    ) -> Option<ClientKey> {
        let timers = self.settings.timers;
        self.start_client_with(now, request, peer, role, timers)
    }

    fn start_client_with(
        &mut self,
        now: Instant,
        request: Message,
        peer: Peer,
        role: ClientRole,
        timers: siplb_txn::Timers,
    ) -> Option<ClientKey> {
        let tx = match ClientTransaction::new(request, peer.reliability(), timers, now) {
            Ok(tx) => tx,
            Err(e) => {
                warn!(error = %e, "cannot start a client transaction");
                return None;
            }
        };
        let key = tx.key().clone();
        self.clients.insert(
            key.clone(),
            Box::new(ClientCtx {
                tx,
                peer,
                role,
                scheduled: None,
            }),
        );
        self.drain_client(now, &key);
        Some(key)
    }

    fn drain_client(&mut self, now: Instant, key: &ClientKey) {
        let Some(ctx) = self.clients.get_mut(key) else {
            return;
        };
        let peer = ctx.peer;
        // Straight into the output queue (a disjoint field): no buffer per message.
        while let Some(data) = ctx.tx.poll_transmit() {
            self.out.push_back(Transmit { peer, data });
        }
        let mut events = Vec::new();
        while let Some(e) = ctx.tx.poll_event() {
            events.push(e);
        }
        let next = ctx.tx.poll_timeout();
        let reschedule = next.filter(|t| ctx.scheduled != Some(*t));
        if let Some(t) = reschedule {
            ctx.scheduled = Some(t);
        }
        let terminated = ctx.tx.is_terminated();
        if let Some(t) = reschedule {
            self.schedule(t, TimerRef::Client(key.clone()));
        }
        for e in events {
            self.on_client_event(now, key, e);
        }
        if terminated {
            self.clients.remove(key);
        }
    }

    fn on_client_event(&mut self, now: Instant, key: &ClientKey, event: ClientEvent) {
        let role = match self.clients.get(key).map(|c| &c.role) {
            Some(ClientRole::Invite(call)) => Some(ClientRole::Invite(call.clone())),
            Some(ClientRole::Relay(server)) => Some(ClientRole::Relay(server.clone())),
            Some(ClientRole::Probe(id)) => Some(ClientRole::Probe(*id)),
            Some(ClientRole::Cancel) | None => None,
        };
        match (role, event) {
            (Some(ClientRole::Invite(call)), e) => self.on_invite_event(now, key, &call, e),
            (Some(ClientRole::Probe(id)), e) => self.on_probe_event(now, id, e),
            (
                Some(ClientRole::Relay(server)),
                ClientEvent::Provisional(r) | ClientEvent::Final(r),
            ) => {
                self.relay_response(now, &server, &r);
            }
            (Some(ClientRole::Relay(server)), ClientEvent::Timeout) => {
                self.local_final(now, &server, 408, "Request Timeout");
            }
            (Some(ClientRole::Relay(server)), ClientEvent::TransportError) => {
                self.local_final(now, &server, 503, "Service Unavailable");
            }
            _ => {}
        }
    }

    /// Answers a relayed request whose next hop failed (timeout, transport error).
    fn local_final(&mut self, now: Instant, server: &ServerKey, code: u16, reason: &str) {
        let Some(ctx) = self.servers.get(server) else {
            return;
        };
        if ctx.tx.has_final() {
            return;
        }
        if let Some(request) = ctx.request.clone() {
            let peer = ctx.peer;
            self.respond(now, &request, peer, code, reason, &[]);
        }
    }

    /// Sends a response from downstream on towards the caller: our Via comes off.
    fn relay_response(&mut self, now: Instant, server: &ServerKey, response: &Message) {
        let mut edit = response.edit();
        if edit.remove_top_via().is_err() {
            return;
        }
        let Ok(bytes) = edit.finish() else {
            return;
        };
        if let Some(status) = response.status() {
            self.stats.count_relayed_reply(status);
        }
        if let Some(ctx) = self.servers.get_mut(server) {
            let _ = ctx.tx.send_response(bytes, now);
            self.drain_server(now, server);
        }
    }

    // ---- requests ----------------------------------------------------------------

    fn on_request(&mut self, now: Instant, msg: Message, peer: Peer) {
        let Some(method) = msg.method() else {
            return;
        };
        let is_ack = method == Method::Ack;
        // Retransmissions, and the ACK of a non-2xx final, belong to a transaction.
        if let Ok(key) = ServerKey::from_request(&msg)
            && let Some(ctx) = self.servers.get_mut(&key)
        {
            let _ = ctx.tx.handle_request(msg, now);
            self.drain_server(now, &key);
            return;
        }
        if method == Method::Cancel {
            self.on_cancel(now, msg, peer);
            return;
        }
        if !is_ack && msg.max_forwards() == Some(0) {
            self.respond(now, &msg, peer, 483, "Too Many Hops", &[]);
            return;
        }
        let in_dialog = msg.to_tag().is_some() || self.top_route_is_me(&msg);
        if in_dialog {
            self.forward_in_dialog(now, msg, peer);
            return;
        }
        if is_ack {
            // An ACK outside any dialog or transaction: nothing to acknowledge.
            return;
        }
        match method {
            Method::Invite if self.draining => {
                self.respond(
                    now,
                    &msg,
                    peer,
                    503,
                    "Service Unavailable",
                    &[("Retry-After", "5")],
                );
            }
            Method::Invite => self.on_initial_invite(now, msg, peer),
            Method::Options if self.addressed_to_me(&msg) => {
                self.respond(
                    now,
                    &msg,
                    peer,
                    200,
                    "OK",
                    &[("Allow", ALLOW), ("Accept", "application/sdp")],
                );
            }
            _ => {
                self.respond(
                    now,
                    &msg,
                    peer,
                    405,
                    "Method Not Allowed",
                    &[("Allow", ALLOW)],
                );
            }
        }
    }

    fn addressed_to_me(&self, msg: &Message) -> bool {
        msg.request_uri()
            .is_some_and(|u| u.user.is_none() || self.listeners.is_me(&u))
    }

    fn top_route_is_me(&self, msg: &Message) -> bool {
        msg.routes()
            .next()
            .and_then(Result::ok)
            .and_then(|r| r.uri().ok().map(|u| self.listeners.is_me(&u)))
            .unwrap_or(false)
    }

    fn on_initial_invite(&mut self, now: Instant, msg: Message, peer: Peer) {
        let (Some(call_id), Some(caller_tag)) = (msg.call_id(), msg.from_tag()) else {
            self.respond(
                now,
                &msg,
                peer,
                400,
                "Bad Request",
                &[("Warning", "399 siplb \"From tag required\"")],
            );
            return;
        };
        let call_key = CallKey::new(call_id, caller_tag);
        let Ok(server_key) = ServerKey::from_request(&msg) else {
            return;
        };
        if self.calls.contains_key(&call_key) {
            // Same call, new transaction (a forked or resent INVITE with a new branch).
            self.respond(now, &msg, peer, 482, "Loop Detected", &[]);
            return;
        }
        let route = routing::select(&self.settings.routes, &msg, peer.addr, &self.balancer)
            .map(|(i, r)| (i, r.action.clone()));
        let Some((index, action)) = route else {
            self.stats.rejected_no_route += 1;
            self.respond(now, &msg, peer, 404, "Not Found", &[]);
            return;
        };
        let (load, fixed_target) = match action {
            RouteAction::Reply { code, reason } => {
                self.respond(now, &msg, peer, code, &reason, &[]);
                return;
            }
            RouteAction::Balance {
                group,
                request,
                flags,
            } => (Load::Balanced(Session::new(group, request, flags)), None),
            RouteAction::CountAndRelay {
                group,
                request,
                relay,
            } => {
                match self.balancer.count_call(
                    peer.addr.ip(),
                    peer.addr.port(),
                    Some(group),
                    &request,
                ) {
                    Ok(a) => (Load::Held(a), Some(relay)),
                    Err(e) => {
                        warn!(call_id, error = %e, "call from the cluster not counted");
                        (Load::None, Some(relay))
                    }
                }
            }
            RouteAction::Relay(relay) => (Load::None, Some(relay)),
        };
        // The server transaction exists before anything is sent, so that INVITE
        // retransmissions are absorbed from now on.
        let tx = match ServerTransaction::new(&msg, peer.reliability(), self.settings.timers) {
            Ok(tx) => tx,
            Err(_) => return,
        };
        self.servers.insert(
            server_key.clone(),
            Box::new(ServerCtx {
                tx,
                peer,
                request: None,
                scheduled: None,
            }),
        );
        let trying = build_response(&msg, 100, "Trying", None, &[]);
        if let Some(ctx) = self.servers.get_mut(&server_key) {
            let _ = ctx.tx.send_response(trying, now);
        }
        self.drain_server(now, &server_key);
        debug!(call_id, route = index + 1, "initial INVITE");
        self.setting_up.insert(server_key.clone(), call_key.clone());
        self.calls.insert(
            call_key.clone(),
            Box::new(Call {
                server: Some(server_key),
                caller: peer,
                invite: Some(Box::new(msg)),
                load,
                branch: None,
                callee: fixed_target,
                destination: None,
                provisional: false,
                cancel_pending: false,
                cancelled: false,
                confirmed: false,
                expires: None,
                started: now,
                answered_once: false,
                callee_tag: None,
                persisted: false,
            }),
        );
        self.attempt(now, &call_key);
    }

    /// Picks the next destination of a call (first choice or failover) and forwards
    /// the INVITE there; answers the caller when none is left.
    fn attempt(&mut self, now: Instant, call_key: &CallKey) {
        loop {
            let Some(call) = self.calls.get_mut(call_key) else {
                return;
            };
            let choice = match &mut call.load {
                Load::Balanced(session) => match session.next(&self.balancer, &mut self.rng) {
                    Outcome::Selected(a) => Ok((
                        peer_of_uri_text(a.uri()).map_err(|e| (a.destination_id(), e)),
                        Some(a.destination_id()),
                    )),
                    Outcome::NoCapacity => Err("no capacity"),
                    Outcome::NoDestination => Err("no destination"),
                    Outcome::UnknownResource => Err("unknown resource"),
                },
                // A relay target is tried once.
                Load::Held(_) | Load::None => match (call.branch.is_none(), call.callee) {
                    (true, Some(peer)) => Ok((Ok(peer), None)),
                    _ => Err("relay target failed"),
                },
            };
            match choice {
                Err(why) => {
                    warn!(call_id = %call_key.call_id, outcome = why, "no destination for call");
                    self.stats.count_rejection(why);
                    let (code, reason) = self.settings.full_reply.clone();
                    self.answer_call(now, call_key, code, &reason);
                    return;
                }
                Ok((Err((id, e)), _)) => {
                    warn!(call_id = %call_key.call_id, destination = id, error = %e, "destination cannot be reached; trying the next");
                    self.note_failure(Some(id), &format!("cannot send to it: {e}"));
                }
                Ok((Ok(peer), destination)) => {
                    debug!(call_id = %call_key.call_id, ?destination, %peer, "routing decision");
                    if self.forward_invite(now, call_key, peer, destination) {
                        self.stats.calls_routed += 1;
                        return;
                    }
                    self.note_failure(destination, "cannot forward the INVITE");
                }
            }
        }
    }

    /// Sends one attempt of the call's INVITE to `peer`.
    fn forward_invite(
        &mut self,
        now: Instant,
        call_key: &CallKey,
        peer: Peer,
        destination: Option<u32>,
    ) -> bool {
        let Some((via, _)) = self.via_for(&peer) else {
            return false;
        };
        let Some(rr_out) = self.record_route_for(&peer) else {
            return false;
        };
        let Some(call) = self.calls.get(call_key) else {
            return false;
        };
        let rr_in = self.record_route_for(&call.caller);
        let Some(invite) = &call.invite else {
            return false;
        };
        let mut edit = invite.edit();
        if edit.decrement_max_forwards().is_err() {
            return false;
        }
        // Two Record-Routes when the call changes transport or address family, so each
        // side reaches siplb the way it first did (RFC 5658).
        if let Some(rr_in) = rr_in.filter(|r| *r != rr_out) {
            edit.push_record_route(&rr_in);
        }
        edit.push_record_route(&rr_out);
        edit.push_via(&via);
        let Ok(request) = edit.finish_message(&self.settings.limits) else {
            return false;
        };
        let Some(key) = self.start_client(now, request, peer, ClientRole::Invite(call_key.clone()))
        else {
            return false;
        };
        if let Some(call) = self.calls.get_mut(call_key) {
            call.branch = Some(key);
            call.callee = Some(peer);
            call.destination = destination;
            call.provisional = false;
        }
        true
    }

    fn note_failure(&mut self, destination: Option<u32>, reason: &str) {
        let Some(id) = destination else {
            return;
        };
        let count = self.failures.entry(id).or_insert(0);
        *count += 1;
        if *count < self.settings.failures_to_disable {
            return;
        }
        *count = 0;
        match self
            .balancer
            .disable_by_failover(id, self.settings.min_enabled)
        {
            Ok(outcome) if outcome.changed() => {
                self.status_changed(id, false, ChangeSource::Failover, reason.to_owned());
            }
            Ok(siplb_balance::FailoverDisable::KeptByFloor) => {
                info!(
                    destination = id,
                    reason,
                    "destination failed but kept enabled: the group is at its min_enabled floor"
                );
            }
            Ok(_) => {}
            Err(e) => debug!(error = %e, "failed destination no longer in the table"),
        }
    }

    fn note_success(&mut self, destination: Option<u32>) {
        if let Some(id) = destination {
            self.failures.remove(&id);
        }
    }

    /// Answers the caller with siplb's own final response and ends the call.
    fn answer_call(&mut self, now: Instant, call_key: &CallKey, code: u16, reason: &str) {
        let Some(call) = self.calls.get_mut(call_key) else {
            return;
        };
        // The call ends here: its INVITE is taken, not copied.
        let request = call.invite.take();
        let peer = call.caller;
        self.end_call(call_key);
        if let Some(request) = request {
            self.respond(now, &request, peer, code, reason, &[]);
        }
    }

    /// Forgets a call; its load goes back with it.
    fn end_call(&mut self, call_key: &CallKey) {
        if let Some(call) = self.calls.remove(call_key) {
            if let Some(server) = &call.server {
                self.setting_up.remove(server);
            }
            if call.persisted {
                self.dialog_changes.push_back(DialogChange::Delete {
                    call_id: call_key.call_id.to_string(),
                    caller_tag: call_key.caller_tag.to_string(),
                });
            }
            debug!(call_id = %call_key.call_id, destination = ?call.load.destination(), "call ended, load released");
        }
    }

    fn on_invite_event(
        &mut self,
        now: Instant,
        key: &ClientKey,
        call_key: &CallKey,
        event: ClientEvent,
    ) {
        let Some(call) = self.calls.get_mut(call_key) else {
            return;
        };
        let current = call.branch.as_ref() == Some(key);
        let Some(server) = call.server.clone() else {
            return;
        };
        match event {
            ClientEvent::Provisional(r) if current => {
                call.provisional = true;
                if r.status() != Some(100) && !call.answered_once {
                    call.answered_once = true;
                    let setup = now.saturating_duration_since(call.started);
                    self.stats.setup.observe(setup);
                }
                let Some(call) = self.calls.get_mut(call_key) else {
                    return;
                };
                let send_cancel = call.cancel_pending;
                call.cancel_pending = false;
                if r.status() != Some(100) {
                    self.relay_response(now, &server, &r);
                }
                if send_cancel {
                    self.send_cancel(now, key);
                }
            }
            ClientEvent::Final(r) if current => {
                let status = r.status().unwrap_or(500);
                let failing_over =
                    status >= 500 && !call.cancelled && matches!(call.load, Load::Balanced(_));
                // Setup time runs to the first reply the caller sees: a 5xx that fails
                // over is not one.
                if !failing_over && !call.answered_once {
                    call.answered_once = true;
                    let setup = now.saturating_duration_since(call.started);
                    self.stats.setup.observe(setup);
                }
                let Some(call) = self.calls.get_mut(call_key) else {
                    return;
                };
                let destination = call.destination;
                if (200..300).contains(&status) {
                    call.confirmed = true;
                    call.invite = None;
                    call.callee_tag = r.to_tag().map(str::to_owned);
                    let expires = now + self.settings.dialog_timeout;
                    call.expires = Some(expires);
                    self.setting_up.remove(&server);
                    self.schedule(expires, TimerRef::Call(call_key.clone()));
                    self.persist_call(now, call_key);
                    self.note_success(destination);
                    self.relay_response(now, &server, &r);
                } else if status >= 500 && !call.cancelled && matches!(call.load, Load::Balanced(_))
                {
                    info!(call_id = %call_key.call_id, status, ?destination, "destination failed; failing over");
                    self.stats.failovers += 1;
                    self.note_failure(destination, &format!("{status} reply to INVITE"));
                    self.attempt(now, call_key);
                } else {
                    if status < 500 {
                        self.note_success(destination);
                    }
                    self.end_call(call_key);
                    self.relay_response(now, &server, &r);
                }
            }
            ClientEvent::Late2xx(r) => {
                let caller = call.caller;
                let mut edit = r.edit();
                if edit.remove_top_via().is_ok()
                    && let Ok(bytes) = edit.finish()
                {
                    self.send(caller, bytes);
                }
            }
            ClientEvent::Timeout | ClientEvent::TransportError if current => {
                let destination = call.destination;
                let cancelled = call.cancelled;
                let had_provisional = call.provisional;
                if had_provisional {
                    self.send_cancel(now, key);
                }
                let balanced = matches!(
                    self.calls.get(call_key).map(|c| &c.load),
                    Some(Load::Balanced(_))
                );
                if cancelled {
                    self.answer_call(now, call_key, 487, "Request Terminated");
                } else if balanced {
                    info!(call_id = %call_key.call_id, ?destination, "destination timed out or unreachable; failing over");
                    self.stats.failovers += 1;
                    self.note_failure(
                        destination,
                        "no reply to INVITE (local 408) or transport error",
                    );
                    self.attempt(now, call_key);
                } else {
                    self.answer_call(now, call_key, 408, "Request Timeout");
                }
            }
            _ => {}
        }
    }

    fn on_cancel(&mut self, now: Instant, msg: Message, peer: Peer) {
        let Ok(invite_key) = ServerKey::invite_for_cancel(&msg) else {
            self.respond(now, &msg, peer, 400, "Bad Request", &[]);
            return;
        };
        let call_key = self.setting_up.get(&invite_key).cloned();
        let Some(call_key) = call_key else {
            self.respond(now, &msg, peer, 481, "Call/Transaction Does Not Exist", &[]);
            return;
        };
        self.respond(now, &msg, peer, 200, "OK", &[]);
        let Some(call) = self.calls.get_mut(&call_key) else {
            return;
        };
        if call.confirmed {
            return;
        }
        call.cancelled = true;
        let branch = call.branch.clone();
        let provisional = call.provisional;
        match branch {
            Some(branch) if provisional => self.send_cancel(now, &branch),
            Some(_) => {
                // RFC 3261 section 9.1: wait for a provisional response before
                // cancelling, so the CANCEL cannot overtake its INVITE.
                if let Some(call) = self.calls.get_mut(&call_key) {
                    call.cancel_pending = true;
                }
            }
            None => self.answer_call(now, &call_key, 487, "Request Terminated"),
        }
    }

    fn send_cancel(&mut self, now: Instant, invite: &ClientKey) {
        let Some(ctx) = self.clients.get(invite) else {
            return;
        };
        let peer = ctx.peer;
        let Some(cancel) = build_cancel(ctx.tx.request()) else {
            return;
        };
        let Ok(cancel) = Message::parse(cancel) else {
            return;
        };
        self.start_client(now, cancel, peer, ClientRole::Cancel);
    }

    /// Requests within a dialog (ACK, BYE, re-INVITE...): loose-routed when they
    /// carry siplb's Route, matched to their call by Call-ID and tags when they do not.
    fn forward_in_dialog(&mut self, now: Instant, msg: Message, peer: Peer) {
        let is_ack = msg.method() == Some(Method::Ack);
        let is_bye = msg.method() == Some(Method::Bye);
        let mut mine = 0;
        let mut next_route: Option<Peer> = None;
        for route in msg.routes() {
            let Ok(route) = route else {
                break;
            };
            let Ok(uri) = route.uri() else {
                break;
            };
            if next_route.is_none() && self.listeners.is_me(&uri) {
                mine += 1;
                continue;
            }
            next_route = peer_of_uri(&uri).ok();
            break;
        }
        let call_id = msg.call_id().unwrap_or_default().to_owned();
        let from_tag = msg.from_tag().unwrap_or_default().to_owned();
        let to_tag = msg.to_tag().unwrap_or_default().to_owned();
        let forward_key = CallKey::new(&call_id, &from_tag);
        let backward_key = CallKey::new(&call_id, &to_tag);
        let (call_key, towards) = if let Some(c) = self.calls.get(&forward_key) {
            (Some(forward_key.clone()), c.callee)
        } else if let Some(c) = self.calls.get(&backward_key) {
            (Some(backward_key.clone()), Some(c.caller))
        } else {
            (None, None)
        };
        let target = next_route.or(towards).or_else(|| {
            // Routed to us but the call is unknown: the Request-URI is the next hop.
            (mine > 0)
                .then(|| msg.request_uri().and_then(|u| peer_of_uri(&u).ok()))
                .flatten()
        });
        let Some(target) = target else {
            if !is_ack {
                self.respond(now, &msg, peer, 481, "Call/Transaction Does Not Exist", &[]);
            }
            return;
        };
        let Some((via, _)) = self.via_for(&target) else {
            return;
        };
        let mut edit = msg.edit();
        for _ in 0..mine {
            if edit.pop_route().is_err() {
                break;
            }
        }
        if edit.decrement_max_forwards().is_err() {
            if !is_ack {
                self.respond(now, &msg, peer, 483, "Too Many Hops", &[]);
            }
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
            return;
        };
        let Ok(server_key) = ServerKey::from_request(&msg) else {
            return;
        };
        let tx = match ServerTransaction::new(&msg, peer.reliability(), self.settings.timers) {
            Ok(tx) => tx,
            Err(_) => return,
        };
        self.servers.insert(
            server_key.clone(),
            Box::new(ServerCtx {
                tx,
                peer,
                request: Some(msg),
                scheduled: None,
            }),
        );
        if is_bye && let Some(key) = &call_key {
            debug!(call_id, "BYE: call ends, load released");
            self.end_call(key);
        }
        self.start_client(now, request, target, ClientRole::Relay(server_key));
    }

    // ---- responses ---------------------------------------------------------------

    fn on_response(&mut self, now: Instant, msg: Message, _peer: Peer) {
        let Ok(key) = ClientKey::from_response(&msg) else {
            return;
        };
        if let Some(ctx) = self.clients.get_mut(&key) {
            let _ = ctx.tx.handle_response(msg, now);
            self.drain_client(now, &key);
            return;
        }
        // A 2xx retransmission after its transaction ended goes on to the caller.
        let is_2xx = msg.status().is_some_and(|s| (200..300).contains(&s));
        if !is_2xx {
            return;
        }
        let (Some(call_id), Some(tag)) = (msg.call_id(), msg.from_tag()) else {
            return;
        };
        let call_key = CallKey::new(call_id, tag);
        let Some(caller) = self.calls.get(&call_key).map(|c| c.caller) else {
            return;
        };
        let mut edit = msg.edit();
        if edit.remove_top_via().is_ok()
            && let Ok(bytes) = edit.finish()
        {
            self.send(caller, bytes);
        }
    }
}

/// The CANCEL for a forwarded request (RFC 3261 section 9.1): same Request-URI, top
/// Via, Call-ID, From, To and CSeq number, method CANCEL, and the Routes it carried.
fn build_cancel(request: &Message) -> Option<Bytes> {
    use std::fmt::Write as _;
    let uri = request.request_uri_text()?;
    let via = request.header(siplb_sip::HeaderName::Via)?;
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
        ("From", siplb_sip::HeaderName::From),
        ("To", siplb_sip::HeaderName::To),
        ("Call-ID", siplb_sip::HeaderName::CallId),
    ] {
        let v = std::str::from_utf8(request.header(hname)?).ok()?;
        let _ = write!(out, "{name}: {v}\r\n");
    }
    for route in request.header_values(siplb_sip::HeaderName::Route) {
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
