//! Status events: one JSON line each, with the reference's keys first
//! (`E_LOAD_BALANCER_STATUS`), POSTed to `[events] webhook` or logged.

use std::time::Duration;

use siplb_proxy::StatusChange;

/// The event, one JSON object (sent as one line): `{"event":"E_LOAD_BALANCER_STATUS","group":1,
/// "uri":"sip:...","status":"disabled","id":2,"source":"failover","reason":"..."}`.
pub(crate) fn event(change: &StatusChange) -> serde_json::Value {
    // serde_json keeps insertion order here (feature `preserve_order`).
    serde_json::json!({
        "event": "E_LOAD_BALANCER_STATUS",
        "group": change.group,
        "uri": change.uri,
        "status": change.status.to_string(),
        "id": change.id,
        "source": change.source.to_string(),
        "reason": change.reason,
    })
}

/// POSTs one event line and waits for a 2xx.
pub(crate) async fn post(url: &str, line: &str) -> Result<(), String> {
    let body = format!("{line}\n");
    match siplb_mi::post_json(url, body.as_bytes(), Duration::from_secs(5)).await {
        Ok(status) if (200..300).contains(&status) => Ok(()),
        Ok(status) => Err(format!("webhook answered {status}")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_with_the_references_keys_first() {
        let e = StatusChange {
            id: 2,
            group: 1,
            uri: "sip:127.0.0.1:5072".into(),
            status: siplb_proxy::NewStatus::Disabled,
            source: siplb_proxy::ChangeSource::Probe,
            reason: "no reply to \"probe\"\n".into(),
        };
        assert_eq!(
            event(&e).to_string(),
            r#"{"event":"E_LOAD_BALANCER_STATUS","group":1,"uri":"sip:127.0.0.1:5072","status":"disabled","id":2,"source":"probe","reason":"no reply to \"probe\"\n"}"#
        );
    }
}
