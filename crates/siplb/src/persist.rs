//! Calls that survive a restart: answered calls are written to the database in
//! batches off the call path (one transaction per `[dialog] persist_interval`), and
//! read back at start before siplb takes traffic.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use siplb_proxy::{DialogChange, Peer, PersistedCall, Proxy, Transport};
use siplb_store::{DialogKey, DialogRecord, Store, TableName};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{info, warn};

/// Counters of the persistence task, for the metrics.
#[derive(Debug, Default)]
pub(crate) struct PersistStats {
    pub(crate) batches: AtomicU64,
    pub(crate) failures: AtomicU64,
    /// Changes waiting for the next successful write.
    pub(crate) pending: AtomicU64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn peer_text(p: &Peer) -> String {
    p.to_string()
}

fn parse_peer(text: &str) -> Option<Peer> {
    let (transport, addr) = text.split_once(':')?;
    let transport = match transport {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        _ => return None,
    };
    let addr: SocketAddr = addr.parse().ok()?;
    Some(Peer { transport, addr })
}

fn to_record(call: PersistedCall, now: i64) -> DialogRecord {
    DialogRecord {
        call_id: call.call_id,
        caller_tag: call.caller_tag,
        callee_tag: call.callee_tag,
        destination_id: call.destination_id,
        resources: call.resources,
        caller: peer_text(&call.caller),
        callee: peer_text(&call.callee),
        started_ms: now.saturating_sub(millis(call.age)),
        expires_ms: now.saturating_add(millis(call.expires_in)),
    }
}

fn from_record(r: DialogRecord, now: i64) -> Result<PersistedCall, String> {
    let peer = |what: &str, text: &str| {
        parse_peer(text).ok_or_else(|| format!("{what} {text:?} is not transport:address:port"))
    };
    Ok(PersistedCall {
        caller: peer("caller", &r.caller)?,
        callee: peer("callee", &r.callee)?,
        call_id: r.call_id,
        caller_tag: r.caller_tag,
        callee_tag: r.callee_tag,
        destination_id: r.destination_id,
        resources: r.resources,
        age: Duration::from_millis(u64::try_from(now.saturating_sub(r.started_ms)).unwrap_or(0)),
        expires_in: Duration::from_millis(
            u64::try_from(r.expires_ms.saturating_sub(now)).unwrap_or(0),
        ),
    })
}

/// Restores the stored calls into `proxy` (their load included). Rows that no longer
/// fit the table are dropped from the store.
pub(crate) async fn restore(
    store: &Store,
    table: &TableName,
    proxy: &mut Proxy,
) -> Result<usize, String> {
    store.init_dialogs(table).await.map_err(|e| e.to_string())?;
    let now = now_ms();
    let (records, problems) = store
        .load_dialogs(table, now)
        .await
        .map_err(|e| e.to_string())?;
    for p in problems {
        warn!("stored call skipped: {p}");
    }
    let started = Instant::now();
    let mut restored = 0;
    let mut dropped = Vec::new();
    for record in records {
        let key = DialogKey {
            call_id: record.call_id.clone(),
            caller_tag: record.caller_tag.clone(),
        };
        match from_record(record, now).and_then(|call| proxy.restore_call(started, call)) {
            Ok(()) => restored += 1,
            Err(e) => {
                warn!(call_id = %key.call_id, error = %e, "stored call not restored");
                dropped.push(key);
            }
        }
    }
    if !dropped.is_empty() {
        let _ = store.save_dialogs(table, &[], &dropped).await;
    }
    Ok(restored)
}

/// Writes the changes the core reports, one batch per `interval`, until the core's
/// sender is dropped (shutdown), then writes what is left. While the database is
/// unreachable, changes queue (the latest per call) and the write is retried each
/// interval; routing never waits for it.
pub(crate) async fn run(
    store: Arc<Store>,
    table: TableName,
    interval: Duration,
    mut changes: UnboundedReceiver<DialogChange>,
    stats: Arc<PersistStats>,
) {
    let mut pending: HashMap<DialogKey, Option<DialogRecord>> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Some(change) => {
                    let now = now_ms();
                    match change {
                        DialogChange::Upsert(call) => {
                            let record = to_record(call, now);
                            // A peer controls Call-IDs and tags: one that cannot be stored
                            // is left out rather than blocking every later batch.
                            if let Err(e) = record.check() {
                                warn!(call_id = %record.call_id, error = %e, "call not stored");
                                continue;
                            }
                            pending.insert(record.key(), Some(record));
                        }
                        DialogChange::Delete { call_id, caller_tag } => {
                            pending.insert(DialogKey { call_id, caller_tag }, None);
                        }
                    }
                    stats.pending.store(pending.len() as u64, Ordering::Relaxed);
                }
                None => {
                    flush(&store, &table, &mut pending, &stats, &mut failing).await;
                    if !pending.is_empty() {
                        warn!(lost = pending.len(), "stopping with call changes not stored");
                    }
                    return;
                }
            },
            _ = tick.tick() => flush(&store, &table, &mut pending, &stats, &mut failing).await,
        }
    }
}

async fn flush(
    store: &Store,
    table: &TableName,
    pending: &mut HashMap<DialogKey, Option<DialogRecord>>,
    stats: &PersistStats,
    failing: &mut bool,
) {
    if pending.is_empty() {
        return;
    }
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for (key, change) in pending.iter() {
        match change {
            Some(record) => upserts.push(record.clone()),
            None => deletes.push(key.clone()),
        }
    }
    match store.save_dialogs(table, &upserts, &deletes).await {
        Ok(()) => {
            pending.clear();
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats.pending.store(0, Ordering::Relaxed);
            if *failing {
                info!("call store reachable again; queued changes written");
                *failing = false;
            }
        }
        Err(e) if !e.is_retryable() => {
            // Retrying cannot help (the table's shape, say): drop the batch, go on.
            stats.failures.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, dropped = pending.len(), "call changes dropped");
            pending.clear();
            stats.pending.store(0, Ordering::Relaxed);
        }
        Err(e) => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            if !*failing {
                warn!(error = %e, queued = pending.len(), "cannot store calls; changes queue and are retried, routing goes on");
                *failing = true;
            }
        }
    }
}
