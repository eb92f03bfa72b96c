//! The heartbeat: what a node writes to the store and reads back from it each beat,
//! and what it does with what it read.

use std::collections::HashMap;
use std::time::Duration;

use siplb_balance::SharedState;
use siplb_proxy::{Peer, PersistedCall};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::records;
use crate::store::{Beat, NodeBeat, Store};
use crate::task::{BoxFuture, Driver, Op, wall_ms};
use crate::view::{NodeState, NodeView};

/// Stored calls: key, stored value.
type StoredCalls = Vec<(String, String)>;

impl Driver {
    /// Stored calls written, this node's counts written over its entry, the heartbeat;
    /// then the others' loads read into the balancer, statuses and reloads shared, and
    /// the leader adopts dead nodes' calls.
    pub(crate) async fn beat(
        &mut self,
        ops: &mut mpsc::UnboundedReceiver<Op>,
    ) -> Result<(), String> {
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
        // The first time: the store's copy of the calls is this node's (the ones it
        // restored). After an outage: this node's copy is written over the store's.
        let first = self.reupload.is_none();
        let reupload: Option<StoredCalls> = (self.reupload == Some(true)).then(|| {
            self.stored
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        });
        let address = s.address.map(|a| a.to_string()).unwrap_or_default();
        let beat = {
            let mut store = store.clone();
            let work: BoxFuture<Result<(Beat, StoredCalls), String>> = Box::pin(async move {
                let known = if first {
                    store.own_calls().await.map_err(|e| e.to_string())?
                } else {
                    Vec::new()
                };
                match reupload {
                    Some(all) => store.replace_calls(all.into_iter()).await,
                    None => store.store_calls(dialogs).await,
                }
                .map_err(|e| e.to_string())?;
                store.rewrite(&counts).await.map_err(|e| e.to_string())?;
                let beat = store.beat(&address).await.map_err(|e| e.to_string())?;
                Ok((beat, known))
            });
            tokio::time::timeout(timeout, work)
                .await
                .map_err(|_| "the store did not answer in time".to_owned())??
        };
        let (beat, known) = beat;
        if first {
            // Read before this beat's changes were written: they apply over it.
            for (key, value) in known {
                self.stored.entry(key).or_insert(value);
            }
            for (key, change) in &self.dialogs {
                if change.is_none() {
                    self.stored.remove(key);
                }
            }
        }
        self.reupload = Some(false);
        self.dialogs.clear();
        self.with_view(|v| {
            v.store_up = true;
            v.store_error = None;
        });
        let lead = self.take_in(&beat);
        self.share_status(&mut store, &beat).await?;
        self.follow_reloads(&mut store, &beat).await?;
        if lead {
            self.adopt_dead(&mut store, &beat, ops).await?;
        }
        self.store = Some(store);
        Ok(())
    }

    /// The others' loads into the balancer, the prober chosen, the view and the
    /// handovers updated; whether this node leads (probes and adopts).
    fn take_in(&mut self, beat: &Beat) -> bool {
        let me = self.settings.node.clone();
        let timeout_ms = i64::try_from(self.settings.node_timeout.as_millis()).unwrap_or(i64::MAX);
        let alive = |n: &NodeBeat| beat.now_ms - n.beat_ms <= timeout_ms;

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

        let nodes: Vec<NodeView> = beat
            .nodes
            .iter()
            .map(|n| NodeView {
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
        lead
    }

    /// Statuses and capacities: this node's changes published, the others' taken.
    async fn share_status(&mut self, store: &mut Store, beat: &Beat) -> Result<(), String> {
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
        Ok(())
    }

    /// A reload made here bumps the counter; one made elsewhere is made here.
    async fn follow_reloads(&mut self, store: &mut Store, beat: &Beat) -> Result<(), String> {
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
        Ok(())
    }

    /// The calls of nodes silent for longer than `node_timeout`, taken over.
    async fn adopt_dead(
        &mut self,
        store: &mut Store,
        beat: &Beat,
        ops: &mut mpsc::UnboundedReceiver<Op>,
    ) -> Result<(), String> {
        let me = self.settings.node.clone();
        let timeout_ms = i64::try_from(self.settings.node_timeout.as_millis()).unwrap_or(i64::MAX);
        let alive = |n: &NodeBeat| beat.now_ms - n.beat_ms <= timeout_ms;
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
                .filter_map(|(_, text)| records::decode(text, now).ok())
                .collect();
            // They are this node's stored calls now.
            self.stored.extend(stored);
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
        Ok(())
    }
}
