//! Status changes of destinations, as siplb publishes them (log, webhook, metrics).

use std::fmt;

use crate::persist::DialogChange;

/// What the core reports besides the messages it sends (see the polling contract in
/// [`crate::Proxy`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreEvent {
    /// A destination was disabled or enabled by failover or probing.
    Status(StatusChange),
    /// A call that holds load was answered or ended (with `[dialog] persist`).
    Dialog(DialogChange),
}

/// Who changed a destination's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeSource {
    Failover,
    Probe,
    Operator,
    Reload,
}

impl fmt::Display for ChangeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChangeSource::Failover => "failover",
            ChangeSource::Probe => "probe",
            ChangeSource::Operator => "operator",
            ChangeSource::Reload => "reload",
        })
    }
}

/// One destination went from enabled to disabled or back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    pub id: u32,
    pub group: u32,
    pub uri: String,
    pub enabled: bool,
    pub source: ChangeSource,
    pub reason: String,
}

impl StatusChange {
    /// The event as one JSON line: `{"event":"E_LOAD_BALANCER_STATUS","group":1,
    /// "uri":"sip:...","status":"disabled",...}`, with the reference's keys first.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"event\":\"E_LOAD_BALANCER_STATUS\",\"group\":{},\"uri\":{},\"status\":\"{}\",\"id\":{},\"source\":\"{}\",\"reason\":{}}}",
            self.group,
            json_string(&self.uri),
            if self.enabled { "enabled" } else { "disabled" },
            self.id,
            self.source,
            json_string(&self.reason),
        )
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line() {
        let e = StatusChange {
            id: 2,
            group: 1,
            uri: "sip:127.0.0.1:5072".into(),
            enabled: false,
            source: ChangeSource::Probe,
            reason: "no reply to \"probe\"\n".into(),
        };
        assert_eq!(
            e.to_json(),
            r#"{"event":"E_LOAD_BALANCER_STATUS","group":1,"uri":"sip:127.0.0.1:5072","status":"disabled","id":2,"source":"probe","reason":"no reply to \"probe\"\n"}"#
        );
    }
}
