//! The node's driver: one task that carries the ledger's reports to the store in their
//! order, and beats.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use siplb_balance::{Balancer, Ledger, SharedState, Take};
use siplb_proxy::{DialogChange, Handovers, Peer, PersistedCall};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::book::{Book, Step};
use crate::records;
use crate::status_sync::StatusSync;
use crate::store::{Beat, Store};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How the node runs in the cluster (`[cluster]`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub redis: String,
    pub node: String,
    pub prefix: String,
    pub heartbeat: Duration,
    pub node_timeout: Duration,
    pub reserve_timeout: Duration,
    /// This node's SIP address, where another node hands over requests of calls this
    /// node adopted.
    pub address: Option<Peer>,
}

/// What the node's driver does to the rest of the process.
pub struct Hooks {
    /// The store's answers to reservations, for the SIP core (ticket, granted).
    pub reservations: mpsc::UnboundedSender<(u64, bool)>,
    /// Restores calls in the SIP core (adopted from a dead node); how many came back.
    pub restore: Box<dyn Fn(Vec<PersistedCall>) -> BoxFuture<usize> + Send + Sync>,
    /// Reloads the destination table (another node reloaded).
    pub reload: Box<dyn Fn() -> BoxFuture<Result<(), String>> + Send + Sync>,
    /// The core's table of dead nodes' addresses and their adopters.
    pub handovers: Arc<Handovers>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks").finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Op {
    Take(Take),
    Release(u64),
    Dialog(DialogChange),
    Reloaded,
}

/// The ledger the balancer reports to: a channel to the driver, so that reporting
/// never blocks the core.
#[derive(Debug)]
struct ChannelLedger(mpsc::UnboundedSender<Op>);

impl Ledger for ChannelLedger {
    fn taken(&self, take: Take) {
        let _ = self.0.send(Op::Take(take));
    }

    fn released(&self, ticket: u64) {
        let _ = self.0.send(Op::Release(ticket));
    }
}

/// A node as the last heartbeat showed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// This node.
    Me,
    Alive,
    /// Silent for longer than `node_timeout`; its calls stay counted until adopted.
    Dead,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Me => "self",
            NodeState::Alive => "alive",
            NodeState::Dead => "dead",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub state: NodeState,
    /// Since its last heartbeat, by the store's clock.
    pub silent_for: Duration,
    /// Answered calls it has stored (what a survivor would adopt).
    pub stored_calls: u64,
    /// Its load counters, summed.
    pub load: u64,
}

/// What the node knows of the cluster, for `cluster`, `/health` and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    pub node: String,
    /// The last operation on the store succeeded.
    pub store_up: bool,
    /// Why the store is down.
    pub store_error: Option<String>,
    pub nodes: Vec<NodeView>,
    /// This node sends the probes.
    pub prober: bool,
    pub reservations_granted: u64,
    pub reservations_refused: u64,
    /// Reservations let through without the store (it was down or slow).
    pub reservations_unconfirmed: u64,
    /// Calls adopted from dead nodes.
    pub adopted_calls: u64,
    /// Times the store came back and this node's counts were written over its entry.
    pub reconciliations: u64,
}

/// A running node's handle; cheap to clone.
#[derive(Clone, Debug)]
pub struct Cluster {
    ops: mpsc::UnboundedSender<Op>,
    view: Arc<Mutex<View>>,
    ready: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

impl Cluster {
    /// Makes `balancer` report to this node's ledger and starts the driver on the
    /// current runtime. The driver starts beating once [`Cluster::serve`] is called,
    /// after the calls stored before a restart are restored.
    pub fn start(
        settings: Settings,
        balancer: Arc<Balancer>,
        hooks: Hooks,
    ) -> Result<Cluster, String> {
        let (ops, rx) = mpsc::unbounded_channel();
        balancer
            .set_ledger(Arc::new(ChannelLedger(ops.clone())))
            .map_err(|_| "the balancer already reports to a cluster".to_owned())?;
        let view = Arc::new(Mutex::new(View {
            node: settings.node.clone(),
            prober: true,
            ..View::default()
        }));
        let (ready_tx, ready_rx) = oneshot::channel();
        let driver = Driver {
            settings,
            balancer,
            hooks,
            store: None,
            book: Book::default(),
            dialogs: HashMap::new(),
            status: StatusSync::default(),
            reload_seen: None,
            reload_pending: false,
            view: Arc::clone(&view),
            down_logged: false,
        };
        tokio::spawn(driver.run(rx, ready_rx));
        Ok(Cluster {
            ops,
            view,
            ready: Arc::new(Mutex::new(Some(ready_tx))),
        })
    }

    /// Starts beating: the node joins the cluster's view.
    pub fn serve(&self) {
        if let Some(tx) = self
            .ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = tx.send(());
        }
    }

    /// A change to this node's answered calls, to be stored for adoption.
    pub fn dialog_changed(&self, change: DialogChange) {
        let _ = self.ops.send(Op::Dialog(change));
    }

    /// This node reloaded its table: the others do too.
    pub fn reloaded(&self) {
        let _ = self.ops.send(Op::Reloaded);
    }

    /// What the node knows of the cluster now.
    pub fn view(&self) -> View {
        self.view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The calls this node had stored in the store (before a restart), to restore before
/// it serves. Fails when the store cannot be reached.
pub async fn stored_calls(settings: &Settings) -> Result<Vec<PersistedCall>, String> {
    let mut store = Store::connect(
        &settings.redis,
        &settings.prefix,
        &settings.node,
        settings.node_timeout,
    )
    .await
    .map_err(|e| e.to_string())?;
    let now = wall_ms();
    let stored = store.own_calls().await.map_err(|e| e.to_string())?;
    Ok(stored
        .iter()
        .filter_map(|text| match records::decode(text, now) {
            Ok(call) => Some(call),
            Err(e) => {
                warn!(error = %e, "a call stored in the cluster cannot be read; skipped");
                None
            }
        })
        .collect())
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Reports at most this many at once to the store, in one round trip.
const BATCH: usize = 512;

struct Driver {
    settings: Settings,
    balancer: Arc<Balancer>,
    hooks: Hooks,
    store: Option<Store>,
    book: Book,
    /// Calls to store (`Some`) or forget (`None`) at the next beat, by key.
    dialogs: HashMap<String, Option<String>>,
    status: StatusSync,
    /// The reload counter this node has acted on.
    reload_seen: Option<i64>,
    reload_pending: bool,
    view: Arc<Mutex<View>>,
    down_logged: bool,
}

impl Driver {
    async fn run(mut self, mut ops: mpsc::UnboundedReceiver<Op>, ready: oneshot::Receiver<()>) {
        // Beating starts once the stored calls are restored; reports queue meanwhile.
        let _ = ready.await;
        let period = (self.settings.heartbeat / 2).max(Duration::from_millis(25));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH);
        // Joins before the first call is reserved, if the store answers.
        let s = &self.settings;
        let timeout = s.reserve_timeout.max(Duration::from_millis(500));
        match Store::connect(&s.redis, &s.prefix, &s.node, timeout).await {
            Ok(store) => {
                self.connected(store);
                if let Err(e) = self.beat(&mut ops).await {
                    self.store_down(&e);
                }
            }
            Err(e) => self.store_down(&e.to_string()),
        }
        // Connecting runs beside the loop: a store that does not answer (a blackholed
        // network) must not hold up the reservations, which go on unconfirmed.
        let mut connecting: Option<tokio::task::JoinHandle<Result<Store, String>>> = None;
        loop {
            tokio::select! {
                received = ops.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        return;
                    }
                    self.handle(&mut batch).await;
                }
                Some(joined) = async {
                    match connecting.as_mut() {
                        Some(handle) => Some(handle.await),
                        None => std::future::pending().await,
                    }
                } => {
                    connecting = None;
                    match joined {
                        Ok(Ok(store)) => {
                            self.connected(store);
                            if let Err(e) = self.beat(&mut ops).await {
                                self.store_down(&e);
                            }
                        }
                        Ok(Err(e)) => self.store_down(&e),
                        Err(e) => self.store_down(&e.to_string()),
                    }
                }
                _ = tick.tick() => {
                    if self.store.is_some() {
                        if let Err(e) = self.beat(&mut ops).await {
                            self.store_down(&e);
                        }
                    } else if connecting.is_none() {
                        let s = &self.settings;
                        let (url, prefix, node) = (s.redis.clone(), s.prefix.clone(), s.node.clone());
                        let timeout = s.reserve_timeout.max(Duration::from_millis(500));
                        connecting = Some(tokio::spawn(async move {
                            Store::connect(&url, &prefix, &node, timeout)
                                .await
                                .map_err(|e| e.to_string())
                        }));
                    }
                }
            }
        }
    }

    /// The store answers (again): the next beat writes this node's counts over its
    /// entry.
    fn connected(&mut self, store: Store) {
        self.store = Some(store);
        if self.down_logged {
            info!("cluster store reachable again: this node's counts written over its entry");
            self.down_logged = false;
        }
        self.with_view(|v| {
            v.reconciliations += 1;
            v.store_up = true;
            v.store_error = None;
        });
    }

    fn with_view(&self, f: impl FnOnce(&mut View)) {
        f(&mut self.view.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn store_down(&mut self, error: &str) {
        self.store = None;
        if !self.down_logged {
            warn!(
                error,
                "cluster store unreachable: routing on this node's own view of the others' load until it is back"
            );
            self.down_logged = true;
        }
        self.with_view(|v| {
            v.store_up = false;
            v.store_error = Some(error.to_owned());
            // Alone, this node probes what it routes to.
            v.prober = true;
        });
        self.balancer.set_probes_here(true);
    }

    /// Carries reports to the store in their order, answering reservations.
    async fn handle(&mut self, batch: &mut Vec<Op>) {
        let mut steps = Vec::with_capacity(batch.len());
        for op in batch.drain(..) {
            match op {
                Op::Take(take) => steps.push(self.book.taken(take)),
                Op::Release(ticket) => steps.push(self.book.released(ticket)),
                Op::Dialog(change) => self.dialog(change),
                Op::Reloaded => self.reload_pending = true,
            }
        }
        steps.retain(|s| *s != Step::Nothing);
        if steps.is_empty() {
            return;
        }
        let answers = match &mut self.store {
            Some(store) => {
                match tokio::time::timeout(self.settings.reserve_timeout, store.apply(&steps)).await
                {
                    Ok(Ok(answers)) => Some(answers),
                    Ok(Err(e)) => {
                        self.store_down(&e.to_string());
                        None
                    }
                    Err(_) => {
                        self.store_down("no answer within reserve_timeout");
                        None
                    }
                }
            }
            None => None,
        };
        let (mut granted, mut refused, mut unconfirmed) = (0, 0, 0);
        for (i, step) in steps.iter().enumerate() {
            let Step::Reserve { ticket, .. } = step else {
                continue;
            };
            // Without an answer the call goes on: the store being away fails no call,
            // and the next reconciliation counts it.
            let ok = match &answers {
                Some(a) => a.get(i).copied().unwrap_or(true),
                None => {
                    unconfirmed += 1;
                    true
                }
            };
            if ok {
                granted += 1;
            } else {
                refused += 1;
                self.book.refused(*ticket);
            }
            let _ = self.hooks.reservations.send((*ticket, ok));
        }
        self.with_view(|v| {
            v.reservations_granted += granted;
            v.reservations_refused += refused;
            v.reservations_unconfirmed += unconfirmed;
        });
    }

    fn dialog(&mut self, change: DialogChange) {
        match change {
            DialogChange::Upsert(call) => {
                let key = records::key(&call.call_id, &call.caller_tag);
                self.dialogs
                    .insert(key, Some(records::encode(&call, wall_ms())));
            }
            DialogChange::Delete {
                call_id,
                caller_tag,
            } => {
                self.dialogs
                    .insert(records::key(&call_id, &caller_tag), None);
            }
        }
    }

    /// Stored calls written, this node's counts written over
    /// its entry, the heartbeat, the others' loads read into the balancer, statuses and
    /// reloads shared, dead nodes adopted.
    async fn beat(&mut self, ops: &mut mpsc::UnboundedReceiver<Op>) -> Result<(), String> {
        let s = &self.settings;
        let Some(mut store) = self.store.clone() else {
            return Ok(());
        };
        let timeout = s.node_timeout.max(Duration::from_secs(1));
        // Kept until written: a beat that fails writes them at the next.
        let dialogs: Vec<(String, Option<String>)> = self
            .dialogs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let counts = self.book.counts();
        let address = s.address.map(|a| a.to_string()).unwrap_or_default();
        let beat = {
            let mut store = store.clone();
            let work: BoxFuture<Result<Beat, String>> = Box::pin(async move {
                store
                    .store_calls(dialogs)
                    .await
                    .map_err(|e| e.to_string())?;
                store.rewrite(&counts).await.map_err(|e| e.to_string())?;
                store.beat(&address).await.map_err(|e| e.to_string())
            });
            tokio::time::timeout(timeout, work)
                .await
                .map_err(|_| "the store did not answer in time".to_owned())??
        };
        self.dialogs.clear();
        self.with_view(|v| {
            v.store_up = true;
            v.store_error = None;
        });
        let me = self.settings.node.clone();
        let timeout_ms = i64::try_from(self.settings.node_timeout.as_millis()).unwrap_or(i64::MAX);
        let alive = |n: &crate::store::NodeBeat| beat.now_ms - n.beat_ms <= timeout_ms;

        // The others' calls, dead nodes' included until adopted.
        let mut remote: HashMap<(u32, &str), u32> = HashMap::new();
        for node in beat.nodes.iter().filter(|n| n.name != me) {
            for (field, count) in &node.loads {
                *remote
                    .entry((field.destination, &field.resource))
                    .or_insert(0) += count;
            }
        }
        self.balancer
            .set_remote_loads(|id, resource| remote.get(&(id, resource)).copied().unwrap_or(0));

        // One node probes: the first alive by name.
        let leader = beat
            .nodes
            .iter()
            .filter(|n| alive(n))
            .map(|n| n.name.as_str())
            .chain(std::iter::once(me.as_str()))
            .min()
            .unwrap_or(&me)
            .to_owned();
        let lead = leader == me;
        self.balancer.set_probes_here(lead);

        let nodes: Vec<crate::NodeView> = beat
            .nodes
            .iter()
            .map(|n| crate::NodeView {
                name: n.name.clone(),
                state: if n.name == me {
                    NodeState::Me
                } else if alive(n) {
                    NodeState::Alive
                } else {
                    NodeState::Dead
                },
                silent_for: Duration::from_millis(
                    u64::try_from(beat.now_ms - n.beat_ms).unwrap_or(0),
                ),
                stored_calls: n.calls,
                load: n.loads.iter().map(|(_, c)| u64::from(*c)).sum(),
            })
            .collect();
        self.with_view(|v| {
            v.nodes = nodes;
            v.prober = lead;
        });

        // Requests of calls a dead node had go to the node that adopted them.
        let address_of = |node: &str| {
            beat.addresses
                .iter()
                .find(|(n, _)| n == node)
                .and_then(|(_, a)| a.parse::<Peer>().ok())
        };
        let handovers = beat
            .adopted
            .iter()
            .filter(|(_, by)| *by != me)
            .filter_map(|(dead, by)| Some((address_of(dead)?.addr, address_of(by)?)))
            .collect();
        self.hooks.handovers.set(handovers);

        // Statuses and capacities.
        let local: Vec<(u32, String)> = self
            .balancer
            .shared_states()
            .into_iter()
            .map(|(id, state)| (id, state.encode()))
            .collect();
        let remote_status: HashMap<u32, String> = beat.status.iter().cloned().collect();
        let decision = self.status.step(&local, &remote_status);
        for (id, text) in &decision.apply {
            if let Some(state) = SharedState::decode(text)
                && let Ok(true) = self.balancer.apply_shared(*id, &state)
            {
                info!(destination = id, state = %text, "status and capacities taken from the cluster");
            }
        }
        store
            .publish_status(&decision.publish)
            .await
            .map_err(|e| e.to_string())?;

        // Reloads.
        if self.reload_pending {
            self.reload_pending = false;
            let counter = store.bump_reload().await.map_err(|e| e.to_string())?;
            self.reload_seen = Some(counter);
        } else {
            match self.reload_seen {
                None => self.reload_seen = Some(beat.reload),
                Some(seen) if beat.reload > seen => {
                    self.reload_seen = Some(beat.reload);
                    info!("another node reloaded the destination table; reloading");
                    if let Err(error) = (self.hooks.reload)().await {
                        warn!(%error, "reload asked by the cluster failed; the table in force stays");
                    }
                }
                Some(_) => {}
            }
        }

        // Dead nodes: the leader adopts their calls.
        if lead {
            for dead in beat.nodes.iter().filter(|n| n.name != me && !alive(n)) {
                let Some(stored) = store
                    .adopt(&dead.name, self.settings.node_timeout)
                    .await
                    .map_err(|e| e.to_string())?
                else {
                    continue;
                };
                let now = wall_ms();
                let calls: Vec<PersistedCall> = stored
                    .iter()
                    .filter_map(|text| records::decode(text, now).ok())
                    .collect();
                let count = calls.len();
                let restored = (self.hooks.restore)(calls).await;
                warn!(node = %dead.name, calls = count, restored, "node silent for longer than node_timeout: its calls adopted");
                self.with_view(|v| v.adopted_calls += u64::try_from(restored).unwrap_or(0));
                // The restored calls' reports are queued: into the book before the next
                // counts are written.
                let mut batch = Vec::new();
                while let Ok(op) = ops.try_recv() {
                    batch.push(op);
                }
                self.handle(&mut batch).await;
            }
        }
        self.store = Some(store);
        Ok(())
    }
}
