//! A call as stored in the shared store for adoption: JSON with wall-clock times, so
//! that any node can restore it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use siplb_proxy::PersistedCall;

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    call_id: String,
    caller_tag: String,
    callee_tag: Option<String>,
    destination_id: u32,
    resources: String,
    caller: String,
    callee: String,
    /// Unix epoch ms.
    started_ms: i64,
    expires_ms: i64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The call's key in the store: Call-ID and caller tag (a line feed cannot occur in
/// either).
pub fn key(call_id: &str, caller_tag: &str) -> String {
    format!("{call_id}\n{caller_tag}")
}

/// `call` as stored, `now_ms` being the wall clock.
pub fn encode(call: &PersistedCall, now_ms: i64) -> String {
    let stored = Stored {
        call_id: call.call_id.clone(),
        caller_tag: call.caller_tag.clone(),
        callee_tag: call.callee_tag.clone(),
        destination_id: call.destination_id,
        resources: call.resources.clone(),
        caller: call.caller.to_string(),
        callee: call.callee.to_string(),
        started_ms: now_ms.saturating_sub(ms(call.age)),
        expires_ms: now_ms.saturating_add(ms(call.expires_in)),
    };
    serde_json::to_string(&stored).unwrap_or_default()
}

/// A stored call back, `now_ms` being the wall clock; why not when it cannot be read.
pub fn decode(text: &str, now_ms: i64) -> Result<PersistedCall, String> {
    let s: Stored = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let since = |t: i64| Duration::from_millis(u64::try_from(t).unwrap_or(0));
    Ok(PersistedCall {
        caller: s.caller.parse().map_err(|e| format!("caller: {e}"))?,
        callee: s.callee.parse().map_err(|e| format!("callee: {e}"))?,
        age: since(now_ms.saturating_sub(s.started_ms)),
        expires_in: since(s.expires_ms.saturating_sub(now_ms)),
        call_id: s.call_id,
        caller_tag: s.caller_tag,
        callee_tag: s.callee_tag,
        destination_id: s.destination_id,
        resources: s.resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_reads_back_with_its_times_moved_on() {
        let call = PersistedCall {
            call_id: "a@b".into(),
            caller_tag: "1".into(),
            callee_tag: Some("2".into()),
            destination_id: 3,
            resources: "vm;pstn".into(),
            caller: "udp:127.0.0.1:5062"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
            callee: "tcp:127.0.0.2:5060"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
            age: Duration::from_secs(10),
            expires_in: Duration::from_secs(100),
        };
        let text = encode(&call, 1_000_000);
        let back = decode(&text, 1_004_000).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(back.age, Duration::from_secs(14));
        assert_eq!(back.expires_in, Duration::from_secs(96));
        assert_eq!(
            PersistedCall {
                age: call.age,
                expires_in: call.expires_in,
                ..back
            },
            call
        );
        assert!(decode("{", 0).is_err());
    }
}
