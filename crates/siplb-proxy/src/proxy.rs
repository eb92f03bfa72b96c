//! The proxy core: where every input arrives, is routed to the transaction or call it
//! belongs to, and where the work that follows is drained in one loop.
//!
//! # Polling contract
//!
//! A driver feeds [`Proxy::handle`] (a datagram), [`Proxy::handle_message`] (a
//! message framed off a stream) and [`Proxy::handle_timeout`] (at or after
//! [`Proxy::poll_timeout`]), then, after each, takes everything out of
//! [`Proxy::poll_transmit`] (messages to send, in order) and [`Proxy::poll_event`]
//! (status changes of destinations and changes to the stored calls), and asks
//! [`Proxy::poll_timeout`] again. Operator actions ([`Proxy::end_calls_with_id`],
//! [`Proxy::restore_call`], [`Proxy::set_draining`]) follow the same rule.
//!
//! # Inside
//!
//! Inputs become [`Work`]: transaction events, ACKs to forward, call inputs. One loop
//! ([`Proxy::drive`]) takes work items in order; a call's transition
//! ([`crate::call::Call::handle`]) only records [`Effect`]s, which the loop carries
//! out after it (forward, reply, cancel...). Carrying one out may queue more work (a
//! forward that fails comes back to the call as an input), never call back into a
//! handler, so no handler runs inside another and every step is bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use siplb_balance::{Balancer, NameCell};
use siplb_sip::{Datagram, Message, parse_datagram};
use siplb_txn::ClientEvent;
use tracing::{debug, error};

use crate::addr::{Listeners, LiteralPeers, Peer};
use crate::agenda::{Agenda, CallTimer, Due, Slot};
use crate::call::{Call, Effect, Input, Phase, call_env};
use crate::events::{CoreEvent, StatusChange};
use crate::expiry::Expiries;
use crate::keys::CallIndex;
use crate::local::Rejections;
use crate::own_overload::{CoreLoad, OwnOverload};
use crate::persist::DialogChange;
use crate::probe::ProbeState;
use crate::settings::{Relay, Settings};
use crate::slab::{Id, Slab};
use crate::stats::Stats;
use crate::tokens::Tokens;
use crate::transactions::{ClientRole, Transactions};

/// A message that arrived, with where from and on which transport.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub peer: Peer,
    pub data: Bytes,
}

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub peer: Peer,
    pub data: Bytes,
}

/// What is left to do after an input, taken in order by [`Proxy::drive`].
#[derive(Debug)]
pub(crate) enum Work {
    /// What a client transaction reported, with what it was for.
    Client {
        id: Id,
        peer: Peer,
        role: ClientRole,
        event: ClientEvent,
    },
    /// An ACK an INVITE server transaction passed up (it acknowledges a 2xx).
    Ack { peer: Peer, ack: Message },
    /// An input for a call (an attempt that could not be sent).
    Call { call: Id, input: Input },
    /// A call's INVITE server transaction asks for its 100 Trying.
    Trying { server: Id },
}

/// A bound on the work one input may cause: far above what any message needs, so
/// reaching it means a fault in the core, which is logged rather than spun on.
const WORK_LIMIT: usize = 100_000;

/// How often tables a burst left mostly empty give back their space.
pub(crate) const HOUSEKEEPING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The proxy core. Single-threaded by design: one owner processes every message in
/// arrival order, so the replies of a transaction leave in the order they came.
#[derive(Debug)]
pub struct Proxy {
    pub(crate) settings: Settings,
    pub(crate) listeners: Listeners,
    pub(crate) literal_peers: LiteralPeers,
    pub(crate) balancer: Arc<Balancer>,
    pub(crate) txns: Transactions,
    pub(crate) calls: Slab<Call>,
    pub(crate) call_index: CallIndex,
    pub(crate) agenda: Agenda,
    /// The answered calls' dialog timeouts, and the agenda entry of their sweep.
    pub(crate) expiries: Expiries,
    pub(crate) sweep: Option<Slot>,
    /// Answered calls not yet stored, each with when it will have lasted
    /// `store_after` (so in that order), and the agenda entry for the first.
    pub(crate) unstored: VecDeque<(Instant, Id)>,
    pub(crate) store_sweep: Option<Slot>,
    pub(crate) work: VecDeque<Work>,
    pub(crate) effects: Vec<Effect>,
    pub(crate) out: VecDeque<Transmit>,
    pub(crate) tokens: Tokens,
    pub(crate) failures: HashMap<u32, u32>,
    pub(crate) stats: Stats,
    pub(crate) draining: bool,
    pub(crate) probes: HashMap<u32, ProbeState>,
    pub(crate) probe_seq: u64,
    pub(crate) events: VecDeque<CoreEvent>,
    pub(crate) rejections: Rejections,
    pub(crate) own_overload: OwnOverload,
    /// The time of the input being handled (for work that has no `now` of its own).
    pub(crate) clock: Instant,
    /// What relay targets named by host resolved to, kept resolved by whoever resolves
    /// the balancer's names.
    pub(crate) relay_names: Vec<Arc<NameCell>>,
    /// In a cluster: calls waiting for the shared store to grant their destination's
    /// room, by reservation ticket.
    pub(crate) reserving: HashMap<u64, (Id, Instant)>,
    /// In a cluster: where requests of dead nodes' calls adopted elsewhere go.
    pub(crate) handovers: Option<Arc<crate::Handovers>>,
}

impl Proxy {
    pub fn new(settings: Settings, balancer: Arc<Balancer>) -> Proxy {
        Proxy::with_tokens(settings, balancer, Tokens::secure())
    }

    /// A proxy whose branches, tags and tie-breaks follow `seed`: runs replay exactly,
    /// which the simulator and tests need. Not for production, where they must not be
    /// predictable.
    pub fn with_seed(settings: Settings, balancer: Arc<Balancer>, seed: u64) -> Proxy {
        Proxy::with_tokens(settings, balancer, Tokens::seeded(seed))
    }

    fn with_tokens(settings: Settings, balancer: Arc<Balancer>, tokens: Tokens) -> Proxy {
        let own_overload = OwnOverload::new(settings.overload.clone());
        let relay_names = settings
            .relay_targets()
            .filter_map(|r| match r {
                Relay::Name { name, .. } => Some(balancer.name_cell(name.clone())),
                Relay::Address(_) => None,
            })
            .collect();
        Proxy {
            listeners: Listeners::new(settings.listen.clone()).with_aliases(&settings.aliases),
            literal_peers: LiteralPeers::default(),
            settings,
            balancer,
            txns: Transactions::default(),
            calls: Slab::default(),
            call_index: CallIndex::default(),
            agenda: Agenda::default(),
            expiries: Expiries::new(Instant::now()),
            sweep: None,
            unstored: VecDeque::new(),
            store_sweep: None,
            work: VecDeque::new(),
            effects: Vec::new(),
            out: VecDeque::new(),
            tokens,
            failures: HashMap::new(),
            stats: Stats::default(),
            draining: false,
            probes: HashMap::new(),
            probe_seq: 0,
            events: VecDeque::new(),
            rejections: Rejections::default(),
            own_overload,
            clock: Instant::now(),
            relay_names,
            reserving: HashMap::new(),
            handovers: None,
        }
    }

    /// In a cluster: the table of dead nodes' addresses and the nodes that adopted their
    /// calls, which the cluster's driver keeps.
    pub fn set_handovers(&mut self, handovers: Arc<crate::Handovers>) {
        self.handovers = Some(handovers);
    }

    /// Starts the periodic work that does not wait for a message: probing and
    /// housekeeping.
    pub fn start(&mut self, now: Instant) {
        self.agenda
            .schedule(now + HOUSEKEEPING_INTERVAL, Due::Housekeeping);
        if !self.settings.probing.interval.is_zero() {
            self.agenda.schedule(now, Due::ProbeTick);
        }
    }

    /// While draining (shutting down), new calls get `503 Service Unavailable`;
    /// calls that are up go on until they end. Answered calls are stored at once from
    /// then on, those waiting included, so a graceful restart restores every call up.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
        if draining {
            self.store_due(None);
        }
    }

    /// The driver spent `busy` handling input, ending at `now` (time not spent waiting
    /// for input): what siplb's own overload control measures.
    pub fn note_busy(&mut self, now: Instant, busy: std::time::Duration) {
        self.own_overload.note_busy(now, busy);
    }

    /// The Unix time at `now`, so that the sequence numbers of siplb's overload
    /// feedback are timestamps that a restart does not set back.
    pub fn set_wall_clock(&mut self, now: Instant, since_epoch: std::time::Duration) {
        let ms = u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX);
        self.own_overload.set_wall_clock(now, ms);
    }

    /// How busy the core is and the reduction it asks of callers.
    pub fn core_load(&self) -> CoreLoad {
        self.own_overload.load()
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Answered calls up that have not lasted `persist_interval` yet, so are not handed
    /// over to be stored: a crash would lose them, besides the store's pending changes.
    pub fn calls_to_store(&self) -> usize {
        self.unstored
            .iter()
            .filter(|&&(_, id)| self.calls.get(id).is_some_and(|c| !c.persisted))
            .count()
    }

    /// Calls being set up or up.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Transactions alive (server and client).
    pub fn transactions(&self) -> usize {
        self.txns.len()
    }

    /// Requests kept whole by transactions, client and server: only those that may
    /// still be sent again or answered for. A transaction that lingers (Timers J, K,
    /// L, M: 32 s over UDP) keeps its key and state, not the message.
    pub fn requests_held(&self) -> usize {
        self.txns.requests_held()
    }

    /// Timers waiting, the periodic ones (probing, housekeeping) left out: zero once
    /// every call and transaction is over.
    pub fn timers(&self) -> usize {
        self.agenda.pending()
    }

    /// Probe transactions alive and the timers they hold (within [`Proxy::transactions`]
    /// and [`Proxy::timers`]): periodic work, never "over".
    pub fn probes_in_flight(&self) -> (usize, usize) {
        self.txns.probes()
    }

    /// No call is up and no forwarded request awaits its final response: what a
    /// drain waits for before siplb exits.
    pub fn is_idle(&self) -> bool {
        self.calls.is_empty() && self.txns.none_waiting()
    }

    /// The next message to send, in the order they were produced.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next status change of a destination or change to the stored calls.
    pub fn poll_event(&mut self) -> Option<CoreEvent> {
        self.events.pop_front()
    }

    /// When [`Proxy::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.agenda.next()
    }

    /// Processes one received datagram or stream frame.
    pub fn handle(&mut self, now: Instant, incoming: Incoming) {
        let Incoming { peer, data } = incoming;
        match parse_datagram(data, &self.settings.limits) {
            Ok(Datagram::Message(m)) => self.handle_message(now, m, peer),
            Ok(Datagram::KeepAlive) => {}
            Err(e) => self.handle_malformed(now, peer, &e),
        }
    }

    /// Processes one message that the transport already framed and parsed (TCP).
    pub fn handle_message(&mut self, now: Instant, msg: Message, peer: Peer) {
        self.clock = now;
        // The calls-per-second caps count in the core's time, virtual in tests.
        self.balancer.tick(now);
        if msg.is_request() {
            self.on_request(now, msg, peer);
        } else {
            self.on_response(now, msg, peer);
        }
        self.drive(now);
    }

    /// A message that did not parse (from a datagram, or a stream that lost its
    /// framing): counted, and answered `400` (with a Warning saying why) when a reply
    /// can be routed.
    pub fn handle_malformed(&mut self, now: Instant, peer: Peer, error: &siplb_sip::ParseError) {
        self.clock = now;
        self.stats.malformed += 1;
        debug!(%peer, %error, "malformed message");
        if let (Some((code, reason)), Some(m)) = (error.reply_status(), error.message()) {
            let warning = format!("399 siplb \"{error}\"");
            self.reply_stateless(m, peer, code, reason, &[("Warning", &warning)]);
        }
    }

    /// Nothing could be sent to `peer`: the driver could not open a TCP connection to it
    /// (refused, timed out, over its connection limit), so what was queued for it is
    /// gone. Every transaction still waiting on `peer` for a final response fails at
    /// once (RFC 3261 17.1.4) instead of after its timeout: a call's attempt fails over
    /// (and the destination is blamed), a relayed request is answered `503`, a probe
    /// counts as failed.
    pub fn handle_unreachable(&mut self, now: Instant, peer: Peer) {
        self.clock = now;
        self.balancer.tick(now);
        let waiting: Vec<Id> = self
            .txns
            .clients
            .iter()
            .filter(|(_, c)| c.peer == peer)
            .map(|(id, _)| id)
            .collect();
        debug!(%peer, transactions = waiting.len(), "peer unreachable");
        for id in waiting {
            if let Some(c) = self.txns.clients.get_mut(id) {
                c.tx.handle_transport_error();
            }
            self.txns
                .drain_client(id, &mut self.agenda, &mut self.out, &mut self.work);
        }
        self.drive(now);
    }

    /// The shared store of a cluster answered reservation `ticket` (see
    /// [`siplb_balance::TakeKind::Reserve`]): the call waiting for it goes on, to its
    /// destination or, refused, to another. A call that ended meanwhile is gone, and
    /// its answer is dropped.
    pub fn handle_reservation(&mut self, now: Instant, ticket: u64, granted: bool) {
        self.clock = now;
        self.balancer.tick(now);
        if let Some((id, since)) = self.reserving.remove(&ticket) {
            self.stats.reservation_wait.observe_in(
                &crate::stats::RESERVATION_BUCKETS,
                now.saturating_duration_since(since),
            );
            self.call_input(now, id, Input::Reservation { ticket, granted });
            self.drive(now);
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = now;
        self.balancer.tick(now);
        while let Some((_, due)) = self.agenda.pop_due(now) {
            match due {
                Due::Server(id) => {
                    self.txns.server_timer_fired(id, now);
                    self.txns
                        .drain_server(id, &mut self.agenda, &mut self.out, &mut self.work);
                }
                Due::Client(id) => {
                    self.txns.client_timer_fired(id, now);
                    self.txns
                        .drain_client(id, &mut self.agenda, &mut self.out, &mut self.work);
                }
                Due::Call(id, timer) => {
                    if let Some(call) = self.calls.get_mut(id) {
                        if let Some(slot) = call.timers.get_mut(timer as usize) {
                            *slot = None;
                        }
                        self.call_input(now, id, Input::Timer(timer));
                    }
                }
                Due::DialogSweep => {
                    self.sweep = None;
                    self.sweep_expired(now);
                }
                Due::StoreSweep => {
                    self.store_sweep = None;
                    self.store_due(Some(now));
                }
                Due::ProbeTick => self.probe_tick(now),
                Due::Housekeeping => {
                    self.housekeeping();
                    self.agenda
                        .schedule(now + HOUSEKEEPING_INTERVAL, Due::Housekeeping);
                }
            }
            self.drive(now);
        }
    }

    /// Takes a call out of the tables that hold it by id (the slab, the index, the
    /// dialog timeouts): they must let go of it together, since its id's slot and
    /// index are reused.
    pub(crate) fn remove_call(&mut self, id: Id) -> Option<Call> {
        let call = self.calls.remove(id)?;
        self.call_index.remove(&call.key, id);
        self.expiries.clear(id);
        Some(call)
    }

    /// Sets an answered call's dialog timeout, moving the sweep earlier if it is the
    /// earliest.
    pub(crate) fn set_expiry(&mut self, id: Id, at: Instant) {
        // Only a call in the slab: its removal is what clears the deadline again.
        if self.calls.get(id).is_some() && self.expiries.set(id, at) {
            let next = self.expiries.next();
            self.agenda.rearm(&mut self.sweep, next, Due::DialogSweep);
        }
    }

    /// Ends the calls past their dialog timeout, and schedules the next sweep.
    fn sweep_expired(&mut self, now: Instant) {
        for index in self.expiries.take_due(now) {
            if let Some(id) = self.calls.id_at(index) {
                self.call_input(now, id, Input::Timer(CallTimer::Dialog));
            }
        }
        let next = self.expiries.next();
        self.agenda.rearm(&mut self.sweep, next, Due::DialogSweep);
    }

    /// Gives back the space of tables a burst left mostly empty.
    fn housekeeping(&mut self) {
        self.txns.shrink();
        self.agenda.shrink();
        self.calls.shrink();
        self.expiries.shrink(self.calls.slots());
        self.rejections.shrink();
        self.call_index.shrink(&self.calls);
        if let Some(room) = crate::slab::shrunk_room(self.unstored.len(), self.unstored.capacity())
        {
            self.unstored.shrink_to(room);
        }
    }

    pub(crate) fn send(&mut self, peer: Peer, data: Bytes) {
        self.out.push_back(Transmit { peer, data });
    }

    pub(crate) fn status_event(&mut self, change: StatusChange) {
        self.events.push_back(CoreEvent::Status(change));
    }

    pub(crate) fn dialog_event(&mut self, change: DialogChange) {
        if self.settings.persist_dialogs {
            self.events.push_back(CoreEvent::Dialog(change));
        }
    }

    /// Takes the work queue until it is empty.
    pub(crate) fn drive(&mut self, now: Instant) {
        let mut done = 0usize;
        while let Some(work) = self.work.pop_front() {
            done += 1;
            if done > WORK_LIMIT {
                error!(
                    left = self.work.len(),
                    "work without end after one input: dropped"
                );
                self.work.clear();
                return;
            }
            match work {
                Work::Client {
                    id,
                    peer,
                    role,
                    event,
                } => self.on_client_event(now, id, peer, role, event),
                Work::Ack { peer, ack } => self.on_in_dialog(now, ack, None, peer),
                Work::Call { call, input } => self.call_input(now, call, input),
                Work::Trying { server } => self.trying_in_call(now, server),
            }
        }
        self.report_drains();
    }

    /// Hands an input to a call, then carries out what it asked for.
    pub(crate) fn call_input(&mut self, now: Instant, id: Id, input: Input) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let mut env = call_env!(self, now);
        call.handle(&mut env, input);
        self.apply_effects(now, id);
    }

    /// Carries out the effects a call's transition recorded, in order.
    pub(crate) fn apply_effects(&mut self, now: Instant, id: Id) {
        let mut effects = std::mem::take(&mut self.effects);
        for effect in effects.drain(..) {
            match effect {
                Effect::Forward(target) if target.reservation.is_some() => {
                    if let Some(ticket) = target.reservation {
                        self.reserving.insert(ticket, (id, now));
                    }
                }
                Effect::Forward(target) => {
                    if let Err(why) = self.forward_attempt(now, id, target) {
                        self.work.push_back(Work::Call {
                            call: id,
                            input: Input::Failed(why),
                        });
                    }
                }
                Effect::CancelAttempt(client) => self.send_cancel(now, client),
                Effect::Reply(code, reason) => self.reply_in_call(now, id, code, reason),
                Effect::ReplyFull => {
                    let (code, reason) = self.settings.full_reply.clone();
                    self.reply_in_call(now, id, code, &reason);
                }
                Effect::Relay(r) => {
                    if let Some(server) = self.calls.get(id).and_then(|c| c.server) {
                        self.relay_response(now, server, &r);
                    }
                }
                Effect::EndDialog(d) => self.end_dialog(now, id, &d),
                Effect::Blame(dest, fault) => self.blame(dest, &fault),
                Effect::Absolve(dest) => self.absolve(dest),
                Effect::Arm(CallTimer::Dialog, at) => self.set_expiry(id, at),
                Effect::Disarm(CallTimer::Dialog) => self.expiries.clear(id),
                Effect::Arm(timer, at) => {
                    if let Some(call) = self.calls.get_mut(id) {
                        self.agenda.rearm(
                            &mut call.timers[timer as usize],
                            Some(at),
                            Due::Call(id, timer),
                        );
                    }
                }
                Effect::Disarm(timer) => {
                    if let Some(call) = self.calls.get_mut(id) {
                        self.agenda.rearm(
                            &mut call.timers[timer as usize],
                            None,
                            Due::Call(id, timer),
                        );
                    }
                }
                Effect::Persist => self.store_later(now, id),
                Effect::Ended => self.forget_call(id),
            }
        }
        // Carrying an effect out queues work, never another effect: none is lost here.
        debug_assert!(self.effects.is_empty());
        self.effects = effects;
    }

    /// Removes an ended call (its load already released by its transition).
    fn forget_call(&mut self, id: Id) {
        let Some(call) = self.remove_call(id) else {
            return;
        };
        if let Phase::Attempting { attempt, .. } = &call.phase
            && let Some(ticket) = attempt.target.reservation
        {
            self.reserving.remove(&ticket);
        }
        for slot in call.timers.iter().flatten() {
            self.agenda.cancel(*slot);
        }
        if call.persisted {
            self.dialog_event(DialogChange::Delete {
                call_id: call.key.call_id().to_owned(),
                caller_tag: call.key.caller_tag().to_owned(),
            });
        }
        debug!(call_id = %call.key.call_id(), "call ended, load released");
    }
}
