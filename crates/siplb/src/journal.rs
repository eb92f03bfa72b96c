//! Changes to the stored calls that could not reach the database, kept on local disk
//! until they can: appended as JSON lines and synced to disk per batch, replayed in
//! bounded batches, in order, when the database answers again (or at the next start).
//!
//! A database outage then costs memory for nothing but the current batch, and a
//! `kill -9` during it loses no more than it would with the database up: the changes
//! of about the last two `persist_interval`s (the core hands a call over once it has
//! lasted one).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead as _, BufReader, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use siplb_store::{DialogKey, DialogRecord};

/// One change, as the journal holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    Upsert(DialogRecord),
    Delete(DialogKey),
}

impl Entry {
    fn to_line(&self) -> String {
        let v = match self {
            Entry::Upsert(r) => json!({"upsert": {
                "call_id": r.call_id, "caller_tag": r.caller_tag, "callee_tag": r.callee_tag,
                "destination_id": r.destination_id, "resources": r.resources,
                "caller": r.caller, "callee": r.callee,
                "started_ms": r.started_ms, "expires_ms": r.expires_ms,
            }}),
            Entry::Delete(k) => {
                json!({"delete": {"call_id": k.call_id, "caller_tag": k.caller_tag}})
            }
        };
        v.to_string()
    }

    fn from_line(line: &str) -> Option<Entry> {
        let v: Value = serde_json::from_str(line).ok()?;
        let text = |o: &Value, k: &str| o.get(k)?.as_str().map(str::to_owned);
        if let Some(u) = v.get("upsert") {
            return Some(Entry::Upsert(DialogRecord {
                call_id: text(u, "call_id")?,
                caller_tag: text(u, "caller_tag")?,
                callee_tag: text(u, "callee_tag"),
                destination_id: u32::try_from(u.get("destination_id")?.as_u64()?).ok()?,
                resources: text(u, "resources")?,
                caller: text(u, "caller")?,
                callee: text(u, "callee")?,
                started_ms: u.get("started_ms")?.as_i64()?,
                expires_ms: u.get("expires_ms")?.as_i64()?,
            }));
        }
        let d = v.get("delete")?;
        Some(Entry::Delete(DialogKey {
            call_id: text(d, "call_id")?,
            caller_tag: text(d, "caller_tag")?,
        }))
    }
}

/// The journal file: appended to while the database is away, replayed from
/// `replayed` on, emptied once all of it is in the database.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    /// Bytes of the file already replayed into the database.
    replayed: u64,
}

impl Journal {
    pub(crate) fn new(path: &Path) -> Journal {
        Journal {
            path: path.to_owned(),
            replayed: 0,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether anything waits in the journal.
    pub(crate) fn is_empty(&self) -> bool {
        std::fs::metadata(&self.path).map_or(true, |m| m.len() <= self.replayed)
    }

    /// Appends changes and syncs them to disk before returning.
    pub(crate) fn append(&mut self, entries: &[Entry]) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut text = String::with_capacity(entries.len() * 256);
        for e in entries {
            text.push_str(&e.to_line());
            text.push('\n');
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(text.as_bytes())?;
        file.sync_data()
    }

    /// Up to `max` changes from where the last replay stopped, and the offset just
    /// after them. A line cut short by a crash, or that does not parse, is skipped.
    pub(crate) fn read_batch(&self, max: usize) -> io::Result<(Vec<Entry>, u64)> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(self.replayed))?;
        let mut reader = BufReader::new(file);
        let mut entries = Vec::new();
        let mut offset = self.replayed;
        let mut line = String::new();
        while entries.len() < max {
            line.clear();
            let n = reader.read_line(&mut line)?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            offset += n as u64;
            match Entry::from_line(line.trim_end()) {
                Some(e) => entries.push(e),
                None => {
                    tracing::warn!(journal = %self.path.display(), "journal line skipped: not a change")
                }
            }
        }
        Ok((entries, offset))
    }

    /// The batch read up to `offset` is in the database.
    pub(crate) fn replayed_to(&mut self, offset: u64) {
        self.replayed = offset;
    }

    /// Everything is in the database: the file starts again empty.
    pub(crate) fn clear(&mut self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.replayed = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> DialogRecord {
        DialogRecord {
            call_id: id.to_owned(),
            caller_tag: "t".to_owned(),
            callee_tag: None,
            destination_id: 3,
            resources: "vm;pstn".to_owned(),
            caller: "udp:127.0.0.1:5060".to_owned(),
            callee: "tcp:[::1]:5070".to_owned(),
            started_ms: 1,
            expires_ms: i64::MAX,
        }
    }

    #[test]
    fn appends_replays_in_batches_and_survives_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("siplb-journal-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("j");
        let _ = std::fs::remove_file(&path);
        let mut j = Journal::new(&path);
        assert!(j.is_empty());
        let entries: Vec<Entry> = (0..5)
            .map(|i| Entry::Upsert(record(&format!("c{i}\"\n"))))
            .chain([Entry::Delete(DialogKey {
                call_id: "c0\"\n".into(),
                caller_tag: "t".into(),
            })])
            .collect();
        j.append(&entries[..3]).unwrap();
        j.append(&entries[3..]).unwrap();
        // A crash in the middle of a write leaves half a line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"upsert\":{\"call")
            .unwrap();
        assert!(!j.is_empty());
        let (first, at) = j.read_batch(4).unwrap();
        assert_eq!(first, entries[..4]);
        j.replayed_to(at);
        let (rest, end) = j.read_batch(4).unwrap();
        assert_eq!(rest, entries[4..]);
        j.replayed_to(end);
        assert_eq!(j.read_batch(4).unwrap().0, []);
        j.clear().unwrap();
        assert!(j.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
