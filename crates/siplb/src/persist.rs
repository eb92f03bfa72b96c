//! Calls that survive a restart: answered calls that have lasted `[dialog]
//! persist_interval` (the core holds them back until then) are written to the database in
//! batches off the call path (one transaction per `[dialog] persist_interval`, at most
//! [`BATCH`] changes each), from a thread of their own that sleeps between batches, and
//! read back at start before siplb takes traffic. While the database cannot be written,
//! changes go to the local journal (see [`crate::journal`]) instead of piling up in
//! memory, and are replayed from it.

use std::collections::HashMap;
use std::collections::hash_map::Entry as Slot;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use siplb_proxy::{DialogChange, Peer, PersistedCall, Proxy, Transport};
use siplb_store::{DialogKey, DialogRecord, DialogWriter, Store, TableName};
use tracing::{error, info, warn};

use crate::journal::{Entry, Journal};

/// Changes written in one transaction, at most.
const BATCH: usize = 1000;

/// Counters of the persistence task, for the metrics.
#[derive(Debug, Default)]
pub(crate) struct PersistStats {
    pub(crate) batches: AtomicU64,
    pub(crate) failures: AtomicU64,
    /// Calls' rows written by the batches, and deleted by them: what the database is
    /// asked per call, which a call shorter than `persist_interval` never is.
    pub(crate) upserts: AtomicU64,
    pub(crate) deletes: AtomicU64,
    /// Changes waiting for the next successful write (in memory or in the journal).
    pub(crate) pending: AtomicU64,
    /// Of those, the changes kept in the journal on disk.
    pub(crate) journaled: AtomicU64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn parse_peer(text: &str) -> Option<Peer> {
    let (transport, addr) = text.split_once(':')?;
    let transport = match transport {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        "tls" => Transport::Tls,
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
        caller: call.caller.to_string(),
        callee: call.callee.to_string(),
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

/// Writes to the database what the journal kept from the last run, on a blocking
/// thread (the writer blocks), and gives the writer and the journal back.
pub(crate) async fn replay_journal(
    mut writer: DialogWriter,
    mut journal: Journal,
) -> Result<(DialogWriter, Journal), String> {
    if journal.is_empty() {
        return Ok((writer, journal));
    }
    let (writer, journal, replayed) = tokio::task::spawn_blocking(move || {
        let replayed = replay(&mut writer, &mut journal);
        (writer, journal, replayed)
    })
    .await
    .map_err(|e| format!("writing the journal: {e}"))?;
    let replayed = replayed.map_err(|e| format!("journal {}: {e}", journal.path().display()))?;
    info!(
        changes = replayed,
        journal = %journal.path().display(),
        "call changes kept in the journal written to the database"
    );
    Ok((writer, journal))
}

/// Restores the stored calls into `proxy` (their load included); the journal of the
/// last run must have been written first ([`replay_journal`]). Rows that no longer fit
/// the table are dropped from the store.
pub(crate) async fn restore(
    store: &Store,
    table: &TableName,
    proxy: &mut Proxy,
) -> Result<usize, String> {
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
        match from_record(record, now)
            .and_then(|call| proxy.restore_call(started, call).map_err(|e| e.to_string()))
        {
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

/// A change waiting to be written.
#[derive(Debug)]
enum Pending {
    /// `attempted`: a write that held it failed, and may have reached the table anyway.
    Upsert {
        record: DialogRecord,
        attempted: bool,
    },
    Delete,
}

/// Writes the changes the core reports, one batch per `interval`, until the core's
/// sender is dropped (shutdown), then writes what is left. Runs on a thread of its
/// own, which sleeps between batches: the core's sends wake nobody, the changes wait
/// in the channel until the next batch drains them, so the persistence costs the SIP
/// thread no hand-over per call, and a batch costs one wake-up of this thread. While
/// the database is unreachable, changes queue (the latest per call) and the write is
/// retried each interval; routing never waits for it.
pub(crate) fn run(
    mut writer: DialogWriter,
    interval: Duration,
    changes: std::sync::mpsc::Receiver<DialogChange>,
    mut journal: Journal,
    stats: Arc<PersistStats>,
) {
    let mut pending: HashMap<DialogKey, Pending> = HashMap::new();
    let mut journaling = !journal.is_empty();
    loop {
        // Nothing to write and nothing to retry: sleep until the core sends something,
        // rather than wake every interval to find nothing (ten times a second by
        // default, whether calls are stored or not).
        let idle = pending.is_empty() && !journaling;
        let open = take_changes(&changes, &mut pending, idle);
        let started = Instant::now();
        if journaling {
            to_journal(&mut journal, &mut pending, &stats);
            if replay(&mut writer, &mut journal).is_ok() {
                info!("call store reachable again; the journal is written");
                journaling = false;
                stats.journaled.store(0, Ordering::Relaxed);
            }
        } else if flush(&mut writer, &mut pending, &stats).is_err() {
            journaling = true;
            to_journal(&mut journal, &mut pending, &stats);
        }
        let journaled = stats.journaled.load(Ordering::Relaxed);
        stats
            .pending
            .store(pending.len() as u64 + journaled, Ordering::Relaxed);
        if !open {
            if !pending.is_empty() {
                // Keep what could not be written for the next start.
                to_journal(&mut journal, &mut pending, &stats);
            }
            if !pending.is_empty() {
                warn!(
                    lost = pending.len(),
                    "stopping with call changes not stored"
                );
            } else if !journal.is_empty() {
                warn!(
                    journal = %journal.path().display(),
                    "stopping with call changes in the journal: the next start writes them"
                );
            }
            return;
        }
        std::thread::sleep(pause_after(interval, started.elapsed()));
    }
}

/// How long to sleep after a batch that took `took`: to the end of the interval, or,
/// after a batch that overran it (a slow or locked database), a whole interval still,
/// since retrying at once would only keep the database busier.
fn pause_after(interval: Duration, took: Duration) -> Duration {
    interval
        .checked_sub(took)
        .filter(|left| !left.is_zero())
        .unwrap_or(interval)
}

/// Moves the pending changes to the journal on disk (synced), so that memory holds
/// none of an outage's backlog and a restart finds them. If the disk fails too, they
/// stay in memory.
fn to_journal(
    journal: &mut Journal,
    pending: &mut HashMap<DialogKey, Pending>,
    stats: &PersistStats,
) {
    if pending.is_empty() {
        return;
    }
    let entries: Vec<Entry> = pending
        .iter()
        .map(|(key, change)| match change {
            Pending::Upsert { record, .. } => Entry::Upsert(record.clone()),
            Pending::Delete => Entry::Delete(key.clone()),
        })
        .collect();
    match journal.append(&entries) {
        Ok(()) => {
            stats
                .journaled
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
            pending.clear();
        }
        Err(e) => {
            // Still queued in memory: a later tick tries again.
            mark_attempted(pending);
            error!(journal = %journal.path().display(), error = %e, "cannot keep call changes in the journal");
        }
    }
}

/// Writes the journal to the database in order, [`BATCH`] changes per transaction,
/// then empties it. Returns how many changes it wrote; on an error, the next call
/// goes on from the last batch written.
fn replay(writer: &mut DialogWriter, journal: &mut Journal) -> Result<usize, String> {
    let mut written = 0;
    loop {
        let (entries, offset) = journal.read_batch(BATCH).map_err(|e| e.to_string())?;
        if entries.is_empty() {
            journal.clear().map_err(|e| e.to_string())?;
            return Ok(written);
        }
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        for e in &entries {
            match e {
                Entry::Upsert(r) => upserts.push(r.clone()),
                Entry::Delete(k) => deletes.push(k.clone()),
            }
        }
        writer.save(&upserts, &deletes).map_err(|e| e.to_string())?;
        journal.replayed_to(offset);
        written += entries.len();
    }
}

/// Moves what the core has sent into `pending`, first waiting for something when
/// `wait`; false once the core has gone.
fn take_changes(
    changes: &std::sync::mpsc::Receiver<DialogChange>,
    pending: &mut HashMap<DialogKey, Pending>,
    wait: bool,
) -> bool {
    use std::sync::mpsc::TryRecvError;
    let mut first = wait.then(|| changes.recv().map_err(|_| TryRecvError::Disconnected));
    let now = now_ms();
    loop {
        match first.take().unwrap_or_else(|| changes.try_recv()) {
            Ok(DialogChange::Upsert(call)) => {
                let record = to_record(call, now);
                // A peer controls Call-IDs and tags: one that cannot be stored is left
                // out rather than blocking every later batch.
                if let Err(e) = record.check() {
                    warn!(call_id = %record.call_id, error = %e, "call not stored");
                    continue;
                }
                pending.insert(
                    record.key(),
                    Pending::Upsert {
                        record,
                        attempted: false,
                    },
                );
            }
            Ok(DialogChange::Delete {
                call_id,
                caller_tag,
            }) => {
                let key = DialogKey {
                    call_id,
                    caller_tag,
                };
                // A call is stored once: if that write has not been tried, the row was
                // never there, and a call shorter than the interval costs no write.
                // (One look-up: the key is hashed once, not for a get and a remove.)
                match pending.entry(key) {
                    Slot::Occupied(slot)
                        if matches!(
                            slot.get(),
                            Pending::Upsert {
                                attempted: false,
                                ..
                            }
                        ) =>
                    {
                        slot.remove();
                    }
                    Slot::Occupied(mut slot) => *slot.get_mut() = Pending::Delete,
                    Slot::Vacant(slot) => {
                        slot.insert(Pending::Delete);
                    }
                }
            }
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Disconnected) => return false,
        }
    }
}

/// After a failed write: its upserts may have reached the table all the same.
fn mark_attempted(pending: &mut HashMap<DialogKey, Pending>) {
    for change in pending.values_mut() {
        if let Pending::Upsert { attempted, .. } = change {
            *attempted = true;
        }
    }
}

/// Writes the pending changes, [`BATCH`] per transaction. An error that retrying
/// may cure is returned (the changes not written stay pending); one that it cannot
/// (the table's shape, say) drops its batch.
fn flush(
    writer: &mut DialogWriter,
    pending: &mut HashMap<DialogKey, Pending>,
    stats: &PersistStats,
) -> Result<(), ()> {
    while !pending.is_empty() {
        // Moved out of `pending`, not copied: put back only if the write must be retried.
        let mut taken = 0;
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        for (key, change) in pending.extract_if(|_, _| {
            taken += 1;
            taken <= BATCH
        }) {
            match change {
                Pending::Upsert { record, .. } => upserts.push(record),
                Pending::Delete => deletes.push(key),
            }
        }
        // Keys of a map: each once.
        match writer.save_distinct(&upserts, &deletes) {
            Ok(()) => {
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats
                    .upserts
                    .fetch_add(upserts.len() as u64, Ordering::Relaxed);
                stats
                    .deletes
                    .fetch_add(deletes.len() as u64, Ordering::Relaxed);
            }
            Err(e) if !e.is_retryable() => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, dropped = upserts.len() + deletes.len(), "call changes dropped");
            }
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                // This write held them, and may have reached the table all the same.
                for record in upserts {
                    pending.insert(
                        record.key(),
                        Pending::Upsert {
                            record,
                            attempted: true,
                        },
                    );
                }
                for key in deletes {
                    pending.insert(key, Pending::Delete);
                }
                mark_attempted(pending);
                warn!(error = %e, queued = pending.len(), "cannot store calls; changes go to the journal and are retried, routing goes on");
                return Err(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_peer_parses_back() {
        for text in [
            "udp:127.0.0.1:5060",
            "tls:255.255.255.255:65535",
            "tcp:[2001:db8::7]:5061",
        ] {
            let peer = parse_peer(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(peer.to_string(), text);
        }
    }

    fn call(id: &str) -> DialogChange {
        let peer = |port| Peer {
            transport: Transport::Udp,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        DialogChange::Upsert(PersistedCall {
            call_id: id.to_owned(),
            caller_tag: "t".to_owned(),
            callee_tag: Some("u".to_owned()),
            destination_id: 1,
            resources: "pstn".to_owned(),
            caller: peer(5060),
            callee: peer(5070),
            age: Duration::ZERO,
            expires_in: Duration::from_secs(60),
        })
    }

    fn delete(id: &str) -> DialogChange {
        DialogChange::Delete {
            call_id: id.to_owned(),
            caller_tag: "t".to_owned(),
        }
    }

    fn key(id: &str) -> DialogKey {
        DialogKey {
            call_id: id.to_owned(),
            caller_tag: "t".to_owned(),
        }
    }

    #[test]
    fn batches_keep_to_the_interval_and_an_overrun_is_followed_by_a_whole_one() {
        let interval = Duration::from_millis(100);
        let ms = Duration::from_millis;
        assert_eq!(pause_after(interval, ms(0)), ms(100));
        assert_eq!(pause_after(interval, ms(30)), ms(70));
        assert_eq!(pause_after(interval, ms(100)), ms(100));
        assert_eq!(pause_after(interval, ms(5000)), ms(100));
    }

    #[test]
    fn a_call_that_ends_before_its_write_costs_no_write() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut pending = HashMap::new();
        for change in [call("short"), call("long"), delete("short"), delete("old")] {
            tx.send(change).unwrap();
        }
        assert!(take_changes(&rx, &mut pending, false));
        assert!(!pending.contains_key(&key("short")));
        assert!(matches!(
            pending.get(&key("long")),
            Some(Pending::Upsert { .. })
        ));
        // A call stored earlier (or restored) must be deleted from the table.
        assert!(matches!(pending.get(&key("old")), Some(Pending::Delete)));
        drop(tx);
        assert!(!take_changes(&rx, &mut pending, false), "the core has gone");
    }

    #[test]
    fn with_nothing_to_do_it_sleeps_until_the_core_sends_or_goes() {
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = std::thread::spawn(move || {
            let mut pending = HashMap::new();
            let open = take_changes(&rx, &mut pending, true);
            (open, pending, rx)
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiting.is_finished(), "an empty channel holds it");
        tx.send(call("late")).unwrap();
        let (open, pending, rx) = waiting.join().unwrap();
        assert!(open);
        assert!(pending.contains_key(&key("late")));
        let waiting = std::thread::spawn(move || take_changes(&rx, &mut HashMap::new(), true));
        drop(tx);
        assert!(!waiting.join().unwrap(), "the core has gone");
    }

    #[test]
    fn an_upsert_whose_write_failed_is_deleted_explicitly() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut pending = HashMap::new();
        tx.send(call("c")).unwrap();
        take_changes(&rx, &mut pending, false);
        mark_attempted(&mut pending);
        tx.send(delete("c")).unwrap();
        take_changes(&rx, &mut pending, false);
        assert!(matches!(pending.get(&key("c")), Some(Pending::Delete)));
    }
}
