//! The simulated world: siplb's proxy core, its balancer, the user agents around it
//! and the network between them, stepped in virtual time. After every step the
//! invariants are checked; the first one broken ends the run with a trace.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use siplb_balance::{Balancer, DestinationRow, Resolution};
use siplb_config::Config;
use siplb_proxy::{
    ChangeSource, CoreEvent, DialogChange, Incoming, NewStatus, Peer, Proxy, Transmit, Transport,
};
use siplb_sip::{Frame, Limits, Message, StreamDecoder};

use crate::callee::{self, Callee, Plan};
use crate::caller::{self, CallerCall, announces_oc, call_of_branch};
use crate::hostile;
use crate::rng::{fingerprint, mix};
use crate::script::{Answer, OpKind, Script, Target};
use crate::sip::{self, Proto};
use crate::trace::Trace;

const fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port))
}

/// siplb's listeners (UDP and TCP).
pub(crate) const PROXY: SocketAddr = v4(127, 0, 0, 1, 5060);
/// The destinations of group 1, ids 1 to 4; destination 3 is reached over TCP.
pub(crate) const DESTINATIONS: [SocketAddr; 4] = [
    v4(127, 0, 0, 11, 5060),
    v4(127, 0, 0, 12, 5060),
    v4(127, 0, 0, 13, 5060),
    v4(127, 0, 0, 14, 5060),
];
/// Gateways of group 2 (ids 5 and 6) that send calls into siplb; the second is in
/// the table with port 0 (any).
pub(crate) const GATEWAYS: [SocketAddr; 2] = [v4(127, 0, 0, 21, 5060), v4(127, 0, 0, 22, 5062)];
/// The first address destination 3's name resolves to under `Knobs::dns` 2: the box
/// is up, nothing listens, TCP connections are refused.
pub(crate) const REFUSING: SocketAddr = v4(127, 0, 0, 33, 5070);
/// Destination 3's name.
const NAME_OF_3: &str = "gw3.sim.example";
/// Where `relay` routes send.
pub(crate) const RELAY: SocketAddr = v4(127, 0, 0, 50, 5060);
/// Source of hostile messages.
pub(crate) const HOSTILE: SocketAddr = v4(127, 0, 0, 200, 5060);

/// Whether a peer is the hostile one: each hostile message comes from a port of its
/// own (over TCP, a connection of its own).
fn is_hostile(addr: SocketAddr) -> bool {
    addr.ip() == HOSTILE.ip()
}
/// A host outside the world that hostile requests try to reach through siplb: nothing
/// may ever be sent there.
pub(crate) const SINK: SocketAddr = v4(127, 0, 0, 66, 5060);
/// Callers (phones, PBXs), on UDP and TCP.
pub(crate) const CALLERS: usize = 8;

pub(crate) fn caller_addr(i: u8) -> SocketAddr {
    v4(127, 0, 0, 100 + i % CALLERS as u8, 5060)
}

pub(crate) const T1: Duration = Duration::from_millis(500);
pub(crate) const T2: Duration = Duration::from_secs(4);
/// How much longer than 64*T1 a user agent waits for a final before it counts the
/// request as unanswered: siplb's own 408 comes at 64*T1.
pub(crate) const GRACE: Duration = Duration::from_secs(2);
/// How long after the last scripted moment the world runs on: Timer C (180 s) of a
/// destination that rings forever, then every transaction's 64*T1.
const SETTLE: Duration = Duration::from_secs(300);
/// A destination disabled by failover or probing must have failed this recently.
const BLAME_WINDOW: Duration = Duration::from_secs(40);
/// Messages one step may produce before it counts as a loop.
const STEP_OUTPUT_LIMIT: usize = 2000;

/// The table the world starts with (variant 0) and the variants `lb_reload` swaps in.
pub(crate) fn table(variant: u8, max_cps: u8, dns: u8) -> Vec<DestinationRow> {
    let row = |id, group, uri: &str, res: &str, mode| DestinationRow {
        probe_mode: mode,
        ..DestinationRow::new(id, group, uri, res)
    };
    let mut rows = vec![
        row(1, 1, "sip:127.0.0.11:5060", "vm=4;pstn=3", 0),
        row(2, 1, "sip:127.0.0.12:5060", "vm=6", 1),
        row(3, 1, "sip:127.0.0.13:5060;transport=tcp", "vm=3;pstn=2", 2),
        row(4, 1, "sip:127.0.0.14:5060", "vm=2;pstn=4", 1),
        row(5, 2, "sip:127.0.0.21:5060", "pstn=1000", 0),
        row(6, 2, "sip:127.0.0.22:0", "pstn=1000", 0),
    ];
    if !dns.is_multiple_of(3) {
        rows[2].dst_uri = format!("sip:{NAME_OF_3};transport=tcp");
    }
    let cap = max_cps % 6;
    if cap > 0 {
        rows[1].attrs = Some(format!("max_cps={cap}"));
    }
    match variant % 3 {
        1 => {
            rows[0].resources = "vm=2;pstn=5".to_owned();
            rows[1].resources = "vm=8".to_owned();
        }
        2 => {
            rows.remove(3);
        }
        _ => {}
    }
    rows
}

fn config(script: &Script) -> String {
    let k = script.config;
    let probing = if k.probing { "5s" } else { "0s" };
    format!(
        r#"
[sip]
listen = ["udp:{PROXY}", "tcp:{PROXY}"]
[probing]
interval = "{probing}"
timeout = "2s"
[failover]
min_enabled = {min}
failures_to_disable = {fails}
[transaction]
trying_after = "{trying}"
[[route]]
match = {{ source_group = 2 }}
count = {{ group = 2, resources = "pstn" }}
relay = "sip:{RELAY}"
[[route]]
match = {{ ruri_user = "^VM_" }}
balance = {{ group = 1, resources = "vm" }}
[[route]]
match = {{ ruri_user = "^[0-9]+$" }}
balance = {{ group = 1, resources = "pstn", flags = "r" }}
[[route]]
match = {{ ruri_user = "^R_" }}
relay = "sip:{RELAY}"
[[route]]
reply = {{ code = 404, reason = "Destination not found" }}
"#,
        min = k.min_enabled % 3,
        fails = 1 + k.failures_to_disable % 3,
        trying = if k.trying_at_once { "0s" } else { "200ms" },
    )
}

/// What happens at a moment of virtual time.
#[derive(Clone, Debug)]
pub(crate) enum Event {
    Deliver {
        proto: Proto,
        from: SocketAddr,
        to: SocketAddr,
        data: Bytes,
    },
    Start(usize),
    Caller(usize, caller::Timer),
    Callee(SocketAddr, callee::Timer),
    /// `lb_end_call` on a scripted call.
    EndCall(usize),
    /// The cluster's store answers a reservation.
    Reservation {
        ticket: u64,
        granted: bool,
    },
    Op(usize),
    Hostile(usize),
}

enum Effect {
    Send {
        proto: Proto,
        from: SocketAddr,
        to: SocketAddr,
        data: Bytes,
    },
    After(Duration, Event),
    Failed(SocketAddr),
    Violation(String),
    Note(String),
    Unanswered {
        from: SocketAddr,
        branch: String,
        what: String,
    },
}

/// What a user agent may do while it handles a message or a timer.
pub(crate) struct Ctx<'a> {
    pub(crate) now: Duration,
    effects: &'a mut Vec<Effect>,
}

impl Ctx<'_> {
    pub(crate) fn send(&mut self, proto: Proto, from: SocketAddr, to: SocketAddr, data: Bytes) {
        self.effects.push(Effect::Send {
            proto,
            from,
            to,
            data,
        });
    }

    pub(crate) fn after(&mut self, delay: Duration, event: Event) {
        self.effects.push(Effect::After(delay, event));
    }

    /// This destination failed on purpose: siplb may disable it.
    pub(crate) fn failed(&mut self, addr: SocketAddr) {
        self.effects.push(Effect::Failed(addr));
    }

    pub(crate) fn violation(&mut self, what: String) {
        self.effects.push(Effect::Violation(what));
    }

    pub(crate) fn note(&mut self, what: String) {
        self.effects.push(Effect::Note(what));
    }

    /// A request of this user agent got no final in 64*T1: a fault of siplb's unless
    /// siplb did answer and the network lost it (siplb sends a non-INVITE final once
    /// per copy of the request it gets, and the last copy may come too late).
    pub(crate) fn unanswered(&mut self, from: SocketAddr, branch: String, what: String) {
        self.effects.push(Effect::Unanswered { from, branch, what });
    }
}

/// A broken invariant, with what led to it.
#[derive(Debug)]
pub struct Failure {
    pub violation: String,
    pub at: Duration,
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "invariant broken at t={:.3}s: {}",
            self.at.as_secs_f64(),
            self.violation
        )?;
        writeln!(f, "last events:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// What a clean run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub calls: usize,
    pub answered: usize,
    pub rejected: usize,
    pub steps: u64,
    pub messages: u64,
    pub lost: u64,
    pub disabled: u64,
    /// TCP connections refused (outages with `refused`, and destination 3's first
    /// address under `Knobs::dns` 2).
    pub refused: u64,
    pub virtual_time: Duration,
    /// The longest a scripted caller's INVITE waited for its final response (from its
    /// first copy reaching siplb).
    pub slowest_final: Duration,
    /// In a cluster: reservations the store refused (`Knobs::cluster` 2).
    pub reservations_refused: u64,
    /// Instants at which a timer of the proxy fell due with no message to handle:
    /// each would wake the core of a real siplb from its sleep.
    pub timer_wakes: u64,
    /// siplb's own 100 Trying responses, to callers.
    pub tryings: u64,
}

/// Finals siplb sent for one INVITE transaction (by the caller's address and branch).
#[derive(Debug, Default)]
struct Finals {
    non_2xx: Option<(u16, Option<String>)>,
    two_xx: HashSet<String>,
}

pub(crate) struct World {
    t0: Instant,
    now: Duration,
    script: Script,
    proxy: Proxy,
    balancer: Arc<Balancer>,
    limits: Limits,
    queue: BTreeMap<(Duration, u64), Event>,
    seq: u64,
    callers: Vec<CallerCall>,
    call_index: HashMap<String, usize>,
    callees: HashMap<SocketAddr, Callee>,
    attempts: Vec<usize>,
    decoders: HashMap<SocketAddr, StreamDecoder>,
    tcp_last: HashMap<(SocketAddr, SocketAddr), Duration>,
    failed_at: HashMap<SocketAddr, Duration>,
    sends: HashMap<u64, u32>,
    drops: HashMap<u64, u8>,
    finals: HashMap<(SocketAddr, String), Finals>,
    /// INVITEs owed a final, and since when.
    owed: HashMap<(SocketAddr, String), Duration>,
    /// Hostile requests that must get a final (by Call-ID), of this code if given.
    hostile_owed: HashMap<String, Option<u16>>,
    /// Every request siplb sent a final for, by its sender and branch.
    answered: HashSet<(SocketAddr, String)>,
    /// Requests siplb sent a response other than 100 for: no 100 may follow.
    past_trying: HashSet<(SocketAddr, String)>,
    persisted: HashSet<(String, String)>,
    loads: HashMap<(u32, Arc<str>), u32>,
    /// Destinations drained by the operator: whether the drain was reported.
    drains: HashMap<u32, bool>,
    /// Branches of the INVITE attempts siplb has sent to destinations.
    attempts_seen: HashSet<String>,
    /// Calls whose attempt went to destination 3's first, refusing address.
    first_address_tried: HashSet<String>,
    /// When destination 2 (the one `max_cps` caps) got its new calls, last second.
    cps_window: VecDeque<Duration>,
    /// The share of each step's virtual time the core reports busy (`core_busy_pct`),
    /// and when it last reported.
    busy_share: f64,
    busy_noted: Duration,
    trace: Trace,
    failure: Option<String>,
    report: Report,
    effects: Vec<Effect>,
    /// In a cluster: the shared store, simulated.
    store: Option<crate::store::SimStore>,
}

impl World {
    pub(crate) fn new(script: &Script) -> World {
        let config = match Config::parse(&config(script)) {
            Ok(c) => c,
            Err(e) => unreachable_config(&e.to_string()),
        };
        let settings = config.settings();
        let balancer = Arc::new(Balancer::new());
        let k = script.config;
        balancer.reload(table(0, k.max_cps, k.dns));
        // What siplb-dns would publish; the name keeps it across reloads.
        for cell in balancer.names() {
            if &*cell.name().host == NAME_OF_3 {
                let addresses = match k.dns % 3 {
                    2 => vec![REFUSING, DESTINATIONS[2]],
                    _ => vec![DESTINATIONS[2]],
                };
                cell.publish(Resolution {
                    addresses: addresses.into(),
                    error: None,
                    done: true,
                });
            }
        }
        let store = crate::store::Mode::of(k.cluster).map(crate::store::SimStore::new);
        if let Some(store) = &store {
            let ledger: Arc<dyn siplb_balance::Ledger> = store.ledger.clone();
            let _ = balancer.set_ledger(ledger);
        }
        let proxy = Proxy::with_seed(settings, Arc::clone(&balancer), script.seed);
        let mut world = World {
            t0: Instant::now(),
            now: Duration::ZERO,
            script: script.clone(),
            proxy,
            balancer,
            limits: Limits {
                max_message_size: config.sip.max_message_size,
                ..Limits::default()
            },
            queue: BTreeMap::new(),
            seq: 0,
            callers: Vec::new(),
            call_index: HashMap::new(),
            callees: HashMap::new(),
            attempts: vec![0; script.calls.len()],
            decoders: HashMap::new(),
            tcp_last: HashMap::new(),
            failed_at: HashMap::new(),
            sends: HashMap::new(),
            drops: HashMap::new(),
            finals: HashMap::new(),
            owed: HashMap::new(),
            hostile_owed: HashMap::new(),
            answered: HashSet::new(),
            past_trying: HashSet::new(),
            persisted: HashSet::new(),
            loads: HashMap::new(),
            drains: HashMap::new(),
            attempts_seen: HashSet::new(),
            first_address_tried: HashSet::new(),
            cps_window: VecDeque::new(),
            busy_share: f64::from(script.config.core_busy_pct % 101) / 100.0,
            busy_noted: Duration::ZERO,
            trace: Trace::new(400),
            failure: None,
            report: Report::default(),
            effects: Vec::new(),
            store,
        };
        for addr in DESTINATIONS.iter().chain([&RELAY]) {
            world.callees.insert(*addr, Callee::new(*addr));
        }
        let overload = script.config.overload_pct % 101;
        if overload > 0
            && let Some(first) = world.callees.get_mut(&DESTINATIONS[0])
        {
            first.ask_for_fewer(overload);
        }
        for outage in &script.outages {
            let addr = DESTINATIONS[usize::from(outage.dest) % DESTINATIONS.len()];
            let from = ms(outage.at_ms);
            let to = from + Duration::from_millis(u64::from(outage.length % 15_000));
            if let Some(c) = world.callees.get_mut(&addr) {
                c.add_outage(from, to, outage.refused);
            }
        }
        for (i, call) in script.calls.iter().enumerate() {
            let (me, user) = match call.target {
                Target::Vm => (caller_addr(call.caller), format!("VM_{i}")),
                Target::Pstn => (caller_addr(call.caller), format!("{}", 1000 + i)),
                Target::Relay => (caller_addr(call.caller), format!("R_{i}")),
                Target::Unrouted => (caller_addr(call.caller), format!("nobody{i}")),
                Target::FromCluster(g) => (GATEWAYS[usize::from(g) % 2], format!("{}", 5000 + i)),
            };
            let c = CallerCall::new(i, me, call.clone(), user);
            world.call_index.insert(c.call_id.clone(), i);
            world.callers.push(c);
            world.push(ms(call.at_ms), Event::Start(i));
        }
        for (i, op) in script.ops.iter().enumerate() {
            world.push(ms(op.at_ms), Event::Op(i));
        }
        for (i, h) in script.hostile.iter().enumerate() {
            world.push(ms(h.at_ms), Event::Hostile(i));
        }
        world.proxy.start(world.t0);
        world.report.calls = script.calls.len();
        world
    }

    fn push(&mut self, at: Duration, event: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    fn instant(&self) -> Instant {
        self.t0 + self.now
    }

    fn violation(&mut self, what: String) {
        if self.failure.is_none() {
            self.trace.push(self.now, format!("VIOLATION: {what}"));
            self.failure = Some(what);
        }
    }

    /// Runs the script, then lets the world settle, and checks the end state.
    pub(crate) fn run(mut self) -> Result<Report, Failure> {
        let last = self
            .queue
            .keys()
            .next_back()
            .map(|(t, _)| *t)
            .unwrap_or_default();
        // Calls last up to 20 s after their answer, which comes up to 12 s late.
        let end = last + Duration::from_secs(60) + SETTLE;
        let mut same_instant = 0u32;
        let mut last_timer = None;
        while self.failure.is_none() {
            let next_event = self.queue.keys().next().map(|(t, _)| *t);
            let next_timer = self
                .proxy
                .poll_timeout()
                .map(|i| i.saturating_duration_since(self.t0));
            let timer_first = match (next_timer, next_event) {
                (Some(t), Some(e)) => t <= e,
                (Some(_), None) => true,
                (None, _) => false,
            };
            let at = if timer_first { next_timer } else { next_event };
            let Some(at) = at else {
                break;
            };
            if at > end {
                break;
            }
            self.now = self.now.max(at);
            self.report.steps += 1;
            if timer_first {
                if last_timer == Some(at) {
                    same_instant += 1;
                    if same_instant > 10_000 {
                        self.violation(
                            "the proxy's timer keeps falling due at the same instant".into(),
                        );
                        break;
                    }
                } else {
                    same_instant = 0;
                    if next_event != Some(at) {
                        self.report.timer_wakes += 1;
                    }
                }
                last_timer = Some(at);
                self.proxy.handle_timeout(self.instant());
            } else if let Some((_, event)) = self.queue.pop_first() {
                self.dispatch(event);
            }
            self.after_step();
        }
        self.report.virtual_time = self.now;
        self.report.reservations_refused = self.proxy.stats().reservations_refused;
        if self.failure.is_none() {
            self.check_end();
        }
        match self.failure.take() {
            None => Ok(self.report),
            Some(violation) => Err(Failure {
                violation,
                at: self.now,
                trace: self.trace.lines(),
            }),
        }
    }

    fn dispatch(&mut self, event: Event) {
        let mut effects = std::mem::take(&mut self.effects);
        let now = self.now;
        let mut ctx = Ctx {
            now,
            effects: &mut effects,
        };
        match event {
            Event::Deliver {
                proto,
                from,
                to,
                data,
            } => self.deliver(&mut ctx, proto, from, to, data),
            Event::Start(i) => {
                if let Some(c) = self.callers.get_mut(i) {
                    c.start(&mut ctx);
                }
            }
            Event::Caller(i, timer) => {
                if let Some(c) = self.callers.get_mut(i) {
                    c.on_timer(&mut ctx, timer);
                }
            }
            Event::Callee(addr, timer) => {
                if let Some(c) = self.callees.get_mut(&addr) {
                    c.on_timer(&mut ctx, timer);
                }
            }
            Event::EndCall(i) => self.end_call(i),
            Event::Reservation { ticket, granted } => {
                if let Some(store) = &mut self.store {
                    store.pending -= 1;
                }
                self.trace.push(
                    self.now,
                    format!("store: reservation {ticket} granted={granted}"),
                );
                self.proxy
                    .handle_reservation(self.instant(), ticket, granted);
            }
            Event::Op(i) => self.operate(i),
            Event::Hostile(i) => {
                if let Some(h) = self.script.hostile.get(i) {
                    let proto = if h.tcp { Proto::Tcp } else { Proto::Udp };
                    let from = SocketAddr::new(HOSTILE.ip(), 10_000 + (i % 50_000) as u16);
                    let data =
                        hostile::message(&h.kind, proto, from, i, self.limits.max_message_size);
                    if let Some(expect) = hostile::expected_reply(&h.kind) {
                        self.hostile_owed.insert(format!("hostile-{i}"), expect);
                    }
                    ctx.send(proto, from, PROXY, data);
                }
            }
        }
        self.apply(effects);
    }

    fn apply(&mut self, mut effects: Vec<Effect>) {
        for effect in effects.drain(..) {
            match effect {
                Effect::Send {
                    proto,
                    from,
                    to,
                    data,
                } => self.transmit(proto, from, to, data),
                Effect::After(delay, event) => self.push(self.now + delay, event),
                Effect::Failed(addr) => {
                    self.failed_at.insert(addr, self.now);
                }
                Effect::Violation(what) => self.violation(what),
                Effect::Note(what) => self.trace.push(self.now, what),
                Effect::Unanswered { from, branch, what } => {
                    if self.answered.contains(&(from, branch)) {
                        self.trace
                            .push(self.now, format!("{what}: its final was lost"));
                    } else {
                        self.violation(format!("{what} got no final response in 64*T1"));
                    }
                }
            }
        }
        self.effects = effects;
    }

    fn end_call(&mut self, i: usize) {
        let Some(call_id) = self.callers.get(i).map(|c| c.call_id.clone()) else {
            return;
        };
        let n = self.proxy.end_calls_with_id(self.instant(), &call_id);
        self.trace
            .push(self.now, format!("operator: lb_end_call {call_id} -> {n}"));
    }

    fn operate(&mut self, i: usize) {
        let Some(op) = self.script.ops.get(i).copied() else {
            return;
        };
        let what = match op.kind {
            OpKind::Status { dest, enable } => {
                let id = u32::from(dest % 4) + 1;
                let r = self.balancer.set_status_by_operator(id, enable);
                format!("lb_status {id} {} -> {r:?}", u8::from(enable))
            }
            OpKind::Resize {
                dest,
                pstn,
                capacity,
            } => {
                let id = u32::from(dest % 4) + 1;
                let name = if pstn { "pstn" } else { "vm" };
                let r = self.balancer.resize(id, name, u32::from(capacity % 8));
                format!("lb_resize {id} {name} {} -> {r:?}", capacity % 8)
            }
            OpKind::Reload { variant } => {
                let errors = self.balancer.reload(table(
                    variant,
                    self.script.config.max_cps,
                    self.script.config.dns,
                ));
                format!("lb_reload variant {} -> {errors:?}", variant % 3)
            }
            OpKind::EndCall { call } => {
                if self.callers.is_empty() {
                    return;
                }
                self.end_call(usize::from(call) % self.callers.len());
                return;
            }
            OpKind::Drain { dest } => {
                let id = u32::from(dest % 4) + 1;
                let r = self.balancer.drain(id);
                if r == Ok(true) {
                    self.drains.insert(id, false);
                }
                // As the driver does for the management interface: the core reports an
                // idle destination at once.
                self.proxy.report_drains();
                format!("lb_drain {id} -> {r:?}")
            }
        };
        self.trace.push(self.now, format!("operator: {what}"));
    }

    /// A packet handed to the network: lost, delayed or duplicated as the script's
    /// network says, decided per payload so that other traffic does not change it.
    fn transmit(&mut self, proto: Proto, from: SocketAddr, to: SocketAddr, data: Bytes) {
        self.report.messages += 1;
        let net = self.script.net;
        let fp =
            fingerprint(&data) ^ mix(u64::from(to.port()) ^ u64::from(u32::from(ip4(to))) << 16);
        let copy = self.sends.entry(fp).or_insert(0);
        *copy += 1;
        let roll = mix(self.script.seed ^ fp ^ u64::from(*copy));
        let latency = Duration::from_millis(u64::from(net.latency_ms % 51));
        // A hostile peer sends each message once and never retransmits: what it
        // must get back is checked, so the network does not lose it.
        let lossless = is_hostile(from) || is_hostile(to);
        match proto {
            Proto::Udp => {
                let drops = self.drops.entry(fp).or_insert(0);
                if !lossless && roll % 100 < u64::from(net.loss_pct % 31) && *drops < 1 {
                    *drops += 1;
                    self.report.lost += 1;
                    self.trace.push(
                        self.now,
                        format!("lost {from}->{to}: {}", sip::first_line(&data)),
                    );
                    return;
                }
                let jitter = u64::from(net.jitter_ms % 101);
                let extra = Duration::from_millis(if jitter == 0 {
                    0
                } else {
                    (roll >> 8) % (jitter + 1)
                });
                let at = self.now + latency + extra;
                if !lossless && (roll >> 24) % 100 < u64::from(net.dup_pct % 21) {
                    let again = at + Duration::from_millis((roll >> 32) % 50);
                    self.push(
                        again,
                        Event::Deliver {
                            proto,
                            from,
                            to,
                            data: data.clone(),
                        },
                    );
                }
                self.push(
                    at,
                    Event::Deliver {
                        proto,
                        from,
                        to,
                        data,
                    },
                );
            }
            Proto::Tcp => {
                let last = self.tcp_last.entry((from, to)).or_default();
                let at = (self.now + latency).max(*last);
                *last = at;
                self.push(
                    at,
                    Event::Deliver {
                        proto,
                        from,
                        to,
                        data,
                    },
                );
            }
        }
    }

    fn deliver(
        &mut self,
        ctx: &mut Ctx<'_>,
        proto: Proto,
        from: SocketAddr,
        to: SocketAddr,
        data: Bytes,
    ) {
        if to == PROXY {
            self.trace.push(
                self.now,
                format!("{from} -> lb {proto:?}: {}", sip::first_line(&data)),
            );
            self.deliver_to_proxy(proto, from, data);
            return;
        }
        self.trace.push(
            self.now,
            format!("{from} -> {to} {proto:?}: {}", sip::first_line(&data)),
        );
        if proto == Proto::Tcp && to == REFUSING {
            // Not a destination's failure: siplb must try the destination's next address.
            self.report.refused += 1;
            self.trace
                .push(self.now, format!("{to} refuses the TCP connection"));
            self.proxy.handle_unreachable(
                self.instant(),
                Peer {
                    transport: Transport::Tcp,
                    addr: to,
                },
            );
            return;
        }
        if self.callees.get(&to).is_some_and(|c| c.refuses(self.now)) {
            self.report.refused += 1;
            // Nothing listens there: a TCP connection is refused, a UDP datagram comes
            // back as ICMP port unreachable, and the driver tells the core at once.
            self.failed_at.insert(to, self.now);
            let (transport, what) = match proto {
                Proto::Tcp => (Transport::Tcp, "refuses the TCP connection"),
                Proto::Udp => (Transport::Udp, "answers ICMP port unreachable"),
            };
            self.trace.push(self.now, format!("{to} {what}"));
            self.proxy.handle_unreachable(
                self.instant(),
                Peer {
                    transport,
                    addr: to,
                },
            );
            return;
        }
        if let Some(callee) = self.callees.get_mut(&to) {
            if proto == Proto::Tcp
                && let Some(back) = callee.back_at(self.now)
            {
                // It hangs: what siplb waits for from it now is its failure.
                self.failed_at.insert(to, self.now);
                self.push(
                    back,
                    Event::Deliver {
                        proto,
                        from,
                        to,
                        data,
                    },
                );
                return;
            }
            let calls = &self.script.calls;
            let index = &self.call_index;
            let attempts = &mut self.attempts;
            let mut plan = |call_id: &str| -> Plan {
                let Some(&i) = index.get(call_id) else {
                    return Plan {
                        answer: Answer::Ok {
                            ring: None,
                            answer: 50,
                        },
                        ending: None,
                    };
                };
                let n = attempts[i];
                attempts[i] += 1;
                let call = &calls[i];
                let answer = call
                    .answers
                    .get(n.min(call.answers.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or_default();
                Plan {
                    answer,
                    ending: Some(call.ending),
                }
            };
            callee.on_message(ctx, proto, from, &data, &mut plan);
            return;
        }
        if is_hostile(to) {
            self.check_hostile_reply(ctx, &data);
            return;
        }
        if to.ip() == SINK.ip() {
            ctx.violation(format!(
                "open relay: siplb sent the sink {} over {proto:?}: {}",
                to,
                sip::first_line(&data)
            ));
            return;
        }
        let msg = match Message::parse(data.clone()) {
            Ok(m) => m,
            Err(e) => {
                if from == PROXY {
                    ctx.violation(format!(
                        "siplb sent {to} a message that does not parse ({e})"
                    ));
                }
                return;
            }
        };
        let Some(&i) = msg.call_id().and_then(|c| self.call_index.get(c)) else {
            if from == PROXY {
                ctx.violation(format!(
                    "siplb sent {to} a message for no call of theirs: {}",
                    sip::first_line(&data)
                ));
            }
            return;
        };
        if let Some(c) = self.callers.get_mut(i)
            && c.me == to
        {
            c.on_message(ctx, proto, from, msg);
        } else if from == PROXY {
            ctx.violation(format!(
                "siplb sent {to} a message of call {i} that is not theirs"
            ));
        }
    }

    /// What a hostile peer gets back: never siplb's keep-alive answer for another
    /// host, and a 400 always says why.
    fn check_hostile_reply(&mut self, ctx: &mut Ctx<'_>, data: &Bytes) {
        // Read off the bytes: a reply copies the request's fields, broken ones too.
        let Some(status) = sip::raw_status(data) else {
            return;
        };
        if status >= 200
            && let Some(call_id) = sip::raw_header(data, "Call-ID")
            && let Some(expect) = self.hostile_owed.remove(&call_id)
            && expect.is_some_and(|code| code != status)
        {
            ctx.violation(format!("{call_id} got {status}, not {expect:?}"));
        }
        if status == 400 && sip::raw_header(data, "Warning").is_none() {
            ctx.violation("a 400 without a Warning saying why".into());
        }
    }

    fn deliver_to_proxy(&mut self, proto: Proto, from: SocketAddr, data: Bytes) {
        // siplb owes a final to every INVITE a scripted caller got to it.
        if !is_hostile(from)
            && let Ok(msg) = Message::parse(data.clone())
            && msg.method().is_some_and(|m| m.as_str() == "INVITE")
        {
            let key = (from, sip::branch(&msg));
            // A copy of an INVITE already answered is owed nothing more.
            if !self.finals.contains_key(&key) {
                self.owed.entry(key).or_insert(self.now);
            }
        }
        let now = self.instant();
        match proto {
            Proto::Udp => self.proxy.handle(
                now,
                Incoming {
                    peer: Peer::udp(from),
                    data,
                },
            ),
            Proto::Tcp => {
                let peer = Peer {
                    transport: Transport::Tcp,
                    addr: from,
                };
                let limits = self.limits;
                let decoder = self
                    .decoders
                    .entry(from)
                    .or_insert_with(|| StreamDecoder::new(limits));
                decoder.extend(&data);
                loop {
                    match decoder.decode() {
                        Ok(None) => break,
                        Ok(Some(Frame::Ping)) => {}
                        Ok(Some(Frame::Message(msg))) => self.proxy.handle_message(now, msg, peer),
                        Err(e) => {
                            // As the driver does: the core answers if it can, the
                            // connection closes.
                            self.proxy.handle_malformed(now, peer, &e);
                            self.decoders.remove(&from);
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Takes what the proxy produced and checks the invariants.
    fn after_step(&mut self) {
        if self.busy_share > 0.0 {
            let busy = (self.now - self.busy_noted).mul_f64(self.busy_share);
            self.busy_noted = self.now;
            self.proxy.note_busy(self.instant(), busy);
        }
        let mut produced = 0usize;
        while let Some(Transmit { peer, data }) = self.proxy.poll_transmit() {
            produced += 1;
            if produced > STEP_OUTPUT_LIMIT {
                self.violation(format!(
                    "one step produced more than {STEP_OUTPUT_LIMIT} messages"
                ));
                return;
            }
            self.check_final(peer.addr, &data);
            self.check_new_attempt(peer.addr, &data);
            let proto = match peer.transport {
                Transport::Udp => Proto::Udp,
                // The world has no TLS peer; a stream is a stream to its network.
                Transport::Tcp | Transport::Tls => Proto::Tcp,
            };
            self.trace.push(
                self.now,
                format!("lb -> {} {proto:?}: {}", peer.addr, sip::first_line(&data)),
            );
            self.transmit(proto, PROXY, peer.addr, data);
        }
        while let Some(event) = self.proxy.poll_event() {
            let change = match event {
                CoreEvent::Status(change) => change,
                // A call is stored once and its row deleted once: a second row, or a
                // deletion of none, is work the store should not have been given.
                CoreEvent::Dialog(DialogChange::Upsert(c)) => {
                    if !self.persisted.insert((c.call_id.clone(), c.caller_tag)) {
                        self.violation(format!("call {} stored twice", c.call_id));
                    }
                    continue;
                }
                CoreEvent::Dialog(DialogChange::Delete {
                    call_id,
                    caller_tag,
                }) => {
                    if !self.persisted.remove(&(call_id.clone(), caller_tag)) {
                        self.violation(format!("call {call_id} deleted but never stored"));
                    }
                    continue;
                }
            };
            self.trace.push(
                self.now,
                format!(
                    "status: destination {} {} by {} ({})",
                    change.id, change.status, change.source, change.reason
                ),
            );
            if change.status == NewStatus::Drained {
                self.drained(change.id);
            }
            if change.status == NewStatus::Disabled
                && matches!(change.source, ChangeSource::Failover | ChangeSource::Probe)
            {
                self.report.disabled += 1;
                let addr = usize::try_from(change.id)
                    .ok()
                    .and_then(|id| DESTINATIONS.get(id.wrapping_sub(1)))
                    .copied();
                let blamed_fairly = addr
                    .and_then(|a| self.failed_at.get(&a))
                    .is_some_and(|t| self.now.saturating_sub(*t) <= BLAME_WINDOW);
                if !blamed_fairly {
                    self.violation(format!(
                        "destination {} disabled by {} ({}) without having failed",
                        change.id, change.source, change.reason
                    ));
                }
            }
        }
        self.check_loads();
        self.answer_reservations();
    }

    /// Carries the ledger's reports to the simulated store and schedules its answers.
    fn answer_reservations(&mut self) {
        let Some(store) = &mut self.store else {
            return;
        };
        match store.drain() {
            Ok(answers) => {
                for a in answers {
                    let at = self.now + a.after;
                    self.push(
                        at,
                        Event::Reservation {
                            ticket: a.ticket,
                            granted: a.granted,
                        },
                    );
                }
            }
            Err(broken) => self.violation(broken),
        }
    }

    /// Every INVITE transaction gets one final: one non-2xx (resent identically), or
    /// 2xx responses (several only when forked), never both.
    fn check_final(&mut self, to: SocketAddr, data: &Bytes) {
        let Ok(msg) = Message::parse(data.clone()) else {
            if !is_hostile(to) {
                self.violation(format!("siplb sent {to} a message that does not parse"));
            }
            return;
        };
        let Some(status) = msg.status() else {
            return;
        };
        self.check_feedback(to, &msg);
        if status >= 200 {
            self.answered.insert((to, sip::branch(&msg)));
        }
        let invite = msg.cseq().is_some_and(|c| c.method.as_str() == "INVITE");
        if invite && status == 100 {
            self.report.tryings += 1;
            if self.past_trying.contains(&(to, sip::branch(&msg))) {
                self.violation(format!(
                    "100 Trying to {to} for {} after another response",
                    msg.call_id().unwrap_or_default()
                ));
            }
        } else if invite {
            self.past_trying.insert((to, sip::branch(&msg)));
        }
        if status < 200 || msg.cseq().is_none_or(|c| c.method.as_str() != "INVITE") {
            return;
        }
        let key = (to, sip::branch(&msg));
        if let Some(since) = self.owed.remove(&key) {
            self.report.slowest_final = self.report.slowest_final.max(self.now - since);
        }
        let tag = msg.to_tag().map(str::to_owned);
        let f = self.finals.entry(key).or_default();
        let broken = if status < 300 {
            let tag = tag.unwrap_or_default();
            let was = f.non_2xx.is_some();
            f.two_xx.insert(tag);
            was
        } else {
            match &f.non_2xx {
                Some(prev) => *prev != (status, tag),
                None => {
                    f.non_2xx = Some((status, tag));
                    !f.two_xx.is_empty()
                }
            }
        };
        if broken {
            self.violation(format!(
                "INVITE {} of {to} got a second, different final ({status})",
                msg.call_id().unwrap_or_default()
            ));
        }
        if status < 300 {
            self.report.answered += 1;
        } else {
            self.report.rejected += 1;
        }
    }

    /// siplb's overload feedback is in every response to a caller that announced
    /// overload control, and in none to the others (RFC 7339 section 5.2).
    fn check_feedback(&mut self, to: SocketAddr, msg: &Message) {
        if is_hostile(to) {
            return;
        }
        let Ok(via) = msg.top_via() else {
            return;
        };
        let Some(call) = via.branch().and_then(call_of_branch) else {
            return;
        };
        let has_feedback = via
            .params
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("oc") && v.is_some());
        if has_feedback != announces_oc(call) {
            self.violation(format!(
                "a response to caller call {call} (overload control announced: {}) has feedback: {has_feedback}",
                announces_oc(call)
            ));
        }
    }

    /// No load above capacity that grew, none that wrapped, none without a call.
    /// A drain reported: only of a draining destination with no load, once per drain.
    fn drained(&mut self, id: u32) {
        let d = self.balancer.destination(id);
        let idle = d
            .as_ref()
            .is_some_and(|d| d.draining && d.resources.iter().all(|r| r.load == 0));
        if !idle {
            self.violation(format!("destination {id} reported drained while {d:?}"));
        }
        match self.drains.insert(id, true) {
            Some(false) => {}
            Some(true) => self.violation(format!("destination {id} reported drained twice")),
            None => self.violation(format!("destination {id} reported drained, never drained")),
        }
    }

    /// A new attempt siplb sends to a destination: never to one draining, and never
    /// more than its `max_cps` in any second.
    fn check_new_attempt(&mut self, to: SocketAddr, data: &Bytes) {
        if !data.starts_with(b"INVITE ") {
            return;
        }
        let Ok(msg) = Message::parse(data.clone()) else {
            return;
        };
        if msg.to_tag().is_some() {
            return;
        }
        let branch = sip::branch(&msg);
        if !self.attempts_seen.insert(branch) {
            return;
        }
        let call_id = msg.call_id().unwrap_or_default().to_owned();
        if to == REFUSING {
            // Destination 3 chosen, tried at its first address: its next address is
            // the same call on the same destination, not a new one.
            self.first_address_tried.insert(call_id);
            return;
        }
        let Some(i) = DESTINATIONS.iter().position(|d| *d == to) else {
            return;
        };
        if to == DESTINATIONS[2] && self.first_address_tried.remove(&call_id) {
            return;
        }
        let id = i as u32 + 1;
        if self.balancer.status(id).is_ok_and(|s| s.draining) {
            self.violation(format!(
                "a new call went to destination {id}, which is draining"
            ));
        }
        let cap = u64::from(self.script.config.max_cps % 6);
        if id == 2 && cap > 0 {
            let now = self.now;
            let window = &mut self.cps_window;
            window.push_back(now);
            while window
                .front()
                .is_some_and(|t| now.saturating_sub(*t) >= Duration::from_secs(1))
            {
                window.pop_front();
            }
            let taken = window.len() as u64;
            if taken > cap {
                self.violation(format!(
                    "destination 2 took {taken} new calls in a second, max_cps={cap}"
                ));
            }
        }
    }

    fn check_loads(&mut self) {
        let mut held: HashMap<(u32, String), u32> = HashMap::new();
        for call in self.proxy.call_summaries(self.instant()) {
            if let Some(id) = call.destination {
                for r in call.resources {
                    *held.entry((id, r)).or_default() += 1;
                }
            }
        }
        let mut broken = None;
        for d in self.balancer.snapshot() {
            for r in &d.resources {
                let key = (d.id, Arc::clone(&r.name));
                let before = self.loads.insert(key, r.load).unwrap_or(0);
                if r.load > 1_000_000 {
                    broken = Some(format!("load of {}/{} wrapped: {}", d.id, r.name, r.load));
                } else if d.group == 1 && r.load > r.max && r.load > before {
                    broken = Some(format!(
                        "load of {}/{} went above capacity: {} > {}",
                        d.id, r.name, r.load, r.max
                    ));
                }
                let calls = held.get(&(d.id, r.name.to_string())).copied().unwrap_or(0);
                if r.load > calls {
                    broken = Some(format!(
                        "load of {}/{} is {} but only {calls} calls hold it",
                        d.id, r.name, r.load
                    ));
                }
            }
        }
        if let Some(b) = broken {
            self.violation(b);
        }
    }

    fn check_end(&mut self) {
        let mut left = Vec::new();
        for d in self.balancer.snapshot() {
            for r in &d.resources {
                if r.load != 0 {
                    left.push(format!("load {}/{} = {}", d.id, r.name, r.load));
                }
            }
        }
        if self.proxy.calls() != 0 {
            let ids: Vec<String> = self
                .proxy
                .call_summaries(self.instant())
                .into_iter()
                .take(3)
                .map(|c| format!("{} ({})", c.call_id, c.state))
                .collect();
            left.push(format!("{} calls [{}]", self.proxy.calls(), ids.join(", ")));
        }
        // Probes go on for ever: those in flight are not left over.
        let (probes, probe_timers) = self.proxy.probes_in_flight();
        let transactions = self.proxy.transactions() - probes;
        if transactions != 0 {
            left.push(format!("{transactions} transactions"));
        }
        let timers = self.proxy.timers() - probe_timers;
        if timers != 0 {
            left.push(format!("{timers} timers"));
        }
        if !self.persisted.is_empty() {
            left.push(format!("{} stored calls", self.persisted.len()));
        }
        if let Some(store) = &self.store {
            if store.pending != 0 {
                left.push(format!("{} reservations unanswered", store.pending));
            }
            if store.booked() != 0 {
                left.push(format!(
                    "{} allocations booked in the store",
                    store.booked()
                ));
            }
        }
        for d in self.balancer.snapshot() {
            if d.draining && self.drains.get(&d.id) == Some(&false) {
                left.push(format!("destination {} drained but never reported", d.id));
            }
        }
        let mut hostile: Vec<_> = self.hostile_owed.keys().cloned().collect();
        hostile.sort();
        for call_id in hostile.iter().take(3) {
            left.push(format!("no final for {call_id}"));
        }
        let mut owed: Vec<_> = self.owed.keys().cloned().collect();
        owed.sort();
        for (addr, branch) in owed.iter().take(3) {
            left.push(format!("no final for the INVITE {branch} of {addr}"));
        }
        if !left.is_empty() {
            let what = format!("after every call ended, left over: {}", left.join(", "));
            self.violation(what);
        }
    }
}

fn ip4(addr: SocketAddr) -> Ipv4Addr {
    match addr {
        SocketAddr::V4(a) => *a.ip(),
        SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    }
}

fn ms(v: u32) -> Duration {
    Duration::from_millis(u64::from(v % 120_000))
}

#[allow(clippy::panic)]
fn unreachable_config(e: &str) -> ! {
    panic!("the simulator's own configuration is invalid: {e}")
}
