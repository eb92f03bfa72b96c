//! The node's driver: one task that carries the ledger's reports to the store in their
//! order, and beats.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use siplb_balance::{Balancer, Ledger, Take};
use siplb_proxy::{DialogChange, Handovers, Peer, PersistedCall};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::book::{Book, Step};
use crate::records;
use crate::status_sync::StatusSync;
use crate::store::Store;
use crate::view::View;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

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
pub(crate) enum Op {
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
            stored: HashMap::new(),
            reupload: None,
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
        .filter_map(|(_, text)| match records::decode(text, now) {
            Ok(call) => Some(call),
            Err(e) => {
                warn!(error = %e, "a call stored in the cluster cannot be read; skipped");
                None
            }
        })
        .collect())
}

pub(crate) fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Reports at most this many at once to the store, in one round trip.
const BATCH: usize = 512;

pub(crate) struct Driver {
    pub(crate) settings: Settings,
    pub(crate) balancer: Arc<Balancer>,
    pub(crate) hooks: Hooks,
    pub(crate) store: Option<Store>,
    pub(crate) book: Book,
    /// Calls to store (`Some`) or forget (`None`) at the next beat, by key.
    pub(crate) dialogs: HashMap<String, Option<String>>,
    /// Every call this node has stored (its answered calls, adopted ones included), so
    /// that a store that comes back, perhaps emptied by a restart, gets them again.
    pub(crate) stored: HashMap<String, String>,
    /// `stored` is to be written over the store's copy at the next beat; `None` before
    /// the first connection, when the store's copy is read instead.
    pub(crate) reupload: Option<bool>,
    pub(crate) status: StatusSync,
    /// The reload counter this node has acted on.
    pub(crate) reload_seen: Option<i64>,
    pub(crate) reload_pending: bool,
    pub(crate) view: Arc<Mutex<View>>,
    pub(crate) down_logged: bool,
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
        if self.reupload.is_some() {
            self.reupload = Some(true);
        }
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

    pub(crate) fn with_view(&self, f: impl FnOnce(&mut View)) {
        f(&mut self.view.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub(crate) fn store_down(&mut self, error: &str) {
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
    pub(crate) async fn handle(&mut self, batch: &mut Vec<Op>) {
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
                let value = records::encode(&call, wall_ms());
                self.stored.insert(key.clone(), value.clone());
                self.dialogs.insert(key, Some(value));
            }
            DialogChange::Delete {
                call_id,
                caller_tag,
            } => {
                let key = records::key(&call_id, &caller_tag);
                self.stored.remove(&key);
                self.dialogs.insert(key, None);
            }
        }
    }
}
