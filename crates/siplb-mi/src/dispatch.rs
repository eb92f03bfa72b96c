//! The methods: from a request body to the reply text. Talks to the balancer and to the
//! hooks of [`MiState`], never to a socket, so every case is testable without one.

use serde::Serialize;
use serde_json::Value;
use siplb_balance::{DestinationSnapshot, ResizeError};
use tracing::{info, warn};

use crate::params::{self, Recipe};
use crate::rpc::{self, Request, RpcError};
use crate::state::{CallInfo, MiState};

/// The largest capacity `lb_resize` takes: ten million concurrent calls is beyond any
/// single box, so anything above is a typo or a wrapped negative.
pub(crate) const MAX_CAPACITY: u32 = 10_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Reload,
    Resize,
    List,
    Status,
    Drain,
    Calls,
    EndCall,
    Which,
    Version,
    Uptime,
    Cluster,
}

/// Every name answered, in the order `which` lists them. `opensips-cli` refuses locally a
/// command missing from that list, so the `load_balancer:` aliases (OpenSIPS 4.0 names)
/// are listed too.
const METHODS: &[(&str, Method)] = &[
    ("lb_reload", Method::Reload),
    ("lb_resize", Method::Resize),
    ("lb_list", Method::List),
    ("lb_status", Method::Status),
    ("lb_drain", Method::Drain),
    ("lb_calls", Method::Calls),
    ("lb_end_call", Method::EndCall),
    ("load_balancer:reload", Method::Reload),
    ("load_balancer:resize", Method::Resize),
    ("load_balancer:list", Method::List),
    ("load_balancer:status", Method::Status),
    ("load_balancer:drain", Method::Drain),
    ("load_balancer:calls", Method::Calls),
    ("which", Method::Which),
    ("version", Method::Version),
    ("uptime", Method::Uptime),
    ("cluster", Method::Cluster),
];

/// Every method name answered, in the order `which` lists them.
pub fn method_names() -> impl Iterator<Item = &'static str> {
    METHODS.iter().map(|(name, _)| *name)
}

/// What a request may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Everything.
    Full,
    /// Only methods that change nothing: a page in a browser, without a token, when the
    /// operator has not turned the dashboard's writes on.
    ReadOnly,
}

fn read_only() -> RpcError {
    RpcError::new(
        403,
        "Read-only: set [management] token, or dashboard_writes = true",
    )
}

impl Method {
    /// Whether this method, with this many parameters, changes state.
    fn changes_something(self, params: usize) -> bool {
        match self {
            Self::Reload | Self::Resize | Self::Drain | Self::EndCall => true,
            Self::Status => params == 2,
            Self::List
            | Self::Calls
            | Self::Which
            | Self::Version
            | Self::Uptime
            | Self::Cluster => false,
        }
    }

    fn lookup(name: &str) -> Option<Self> {
        METHODS.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
    }

    fn recipes(self) -> &'static [Recipe] {
        match self {
            Self::Reload | Self::List | Self::Version | Self::Uptime | Self::Cluster => &[&[]],
            Self::Resize => &[&["destination_id", "res_name", "new_capacity"]],
            Self::Status => &[&["destination_id"], &["destination_id", "new_status"]],
            Self::Drain => &[&["destination_id"]],
            Self::Calls => &[&[], &["destination_id"]],
            Self::EndCall => &[&["callid"]],
            Self::Which => &[&[], &["command"]],
        }
    }
}

const OK: &str = r#""OK""#;

fn destination_not_found() -> RpcError {
    RpcError::new(404, "Destination ID not found")
}

fn no_such_resource() -> RpcError {
    RpcError::new(404, "Destination has no such resource")
}

fn failed_to_reload() -> RpcError {
    RpcError::new(500, "Failed to reload")
}

fn unknown_command() -> RpcError {
    RpcError::new(404, "Unknown command")
}

/// Result text with the struct's field order, which is the wire order.
fn to_json(value: &impl Serialize) -> Result<String, RpcError> {
    serde_json::to_string(value).map_err(|_| RpcError::internal())
}

/// A destination id that cannot exist (negative, beyond `u32`) is simply not found, as in
/// the reference, rather than a parameter error.
fn destination_id(value: &Value) -> Result<u32, RpcError> {
    let id = params::int("destination_id", value)?;
    u32::try_from(id).map_err(|_| destination_not_found())
}

#[derive(Serialize)]
struct List<'a> {
    #[serde(rename = "Destinations")]
    destinations: Vec<ListedDestination<'a>>,
}

/// `lb_list`'s keys in the reference's order; keys siplb adds come after them.
#[derive(Serialize)]
struct ListedDestination<'a> {
    uri: &'a str,
    id: u32,
    group: u32,
    enabled: &'static str,
    #[serde(rename = "auto-reenable")]
    auto_reenable: &'static str,
    #[serde(rename = "Resources")]
    resources: Vec<ListedResource<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attrs: Option<&'a str>,
    probe_mode: i32,
    /// Present while `lb_drain` holds new calls away.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    draining: bool,
    /// The reduction of new calls it asked for (RFC 7339), in percent, while in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    overload: Option<u8>,
    /// Status code of the last probe reply (408: none came); absent until probed.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_probe: Option<u16>,
    /// Average probe round-trip time, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    probe_rtt_ms: Option<f64>,
    /// For a URI naming a host: the addresses it resolved to, in the order tried.
    #[serde(skip_serializing_if = "Option::is_none")]
    addresses: Option<Vec<String>>,
    /// Why the name has no (fresh) address; `"not resolved yet"` before its first lookup.
    #[serde(skip_serializing_if = "Option::is_none")]
    resolve_error: Option<String>,
}

#[derive(Serialize)]
struct ListedResource<'a> {
    name: &'a str,
    max: u32,
    /// In a cluster, every node's calls.
    load: u32,
    /// In a cluster: this node's share of `load`.
    #[serde(skip_serializing_if = "Option::is_none")]
    node_load: Option<u32>,
}

#[derive(Serialize)]
struct Status<'a> {
    enable: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    attrs: Option<&'a str>,
}

#[derive(Serialize)]
struct Calls<'a> {
    #[serde(rename = "Calls")]
    calls: &'a [CallInfo],
}

#[derive(Serialize)]
struct Version<'a> {
    #[serde(rename = "Server")]
    server: &'a str,
}

/// `Up time` as OpenSIPS' `uptime` words it, then the number alone for scripts.
#[derive(Serialize)]
struct Uptime {
    #[serde(rename = "Up time")]
    up_time: String,
    seconds: u64,
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn non_empty(attrs: Option<&str>) -> Option<&str> {
    attrs.filter(|a| !a.is_empty())
}

fn list(snapshot: &[DestinationSnapshot], clustered: bool) -> Result<String, RpcError> {
    to_json(&List {
        destinations: listed(snapshot, clustered),
    })
}

/// `lb_list`'s entries as a JSON array, for the dashboard.
pub(crate) fn list_value(snapshot: &[DestinationSnapshot]) -> Value {
    serde_json::to_value(listed(snapshot, false)).unwrap_or_default()
}

fn listed(snapshot: &[DestinationSnapshot], clustered: bool) -> Vec<ListedDestination<'_>> {
    snapshot
        .iter()
        .map(|d| ListedDestination {
            uri: &d.uri,
            id: d.id,
            group: d.group,
            enabled: yes_no(d.enabled),
            auto_reenable: if d.auto_reenable { "on" } else { "off" },
            resources: d
                .resources
                .iter()
                .map(|r| ListedResource {
                    name: &r.name,
                    max: r.max,
                    load: r.load,
                    node_load: clustered.then_some(r.local),
                })
                .collect(),
            attrs: non_empty(d.attrs.as_deref()),
            probe_mode: d.probe_mode,
            draining: d.draining,
            overload: d.overload,
            last_probe: d.last_probe,
            probe_rtt_ms: d.probe_rtt.map(|t| (t.as_secs_f64() * 1e6).round() / 1e3),
            addresses: d
                .resolution
                .as_ref()
                .map(|r| r.addresses.iter().map(ToString::to_string).collect()),
            resolve_error: d
                .resolution
                .as_ref()
                .and_then(|r| match (&r.error, r.done) {
                    (Some(e), _) => Some(e.to_string()),
                    (None, false) => Some("not resolved yet".to_owned()),
                    (None, true) => None,
                }),
        })
        .collect()
}

impl MiState {
    /// Runs one JSON-RPC request body and returns the reply text, or `None` for a
    /// notification (a request without `id`), which is run all the same.
    pub async fn handle_rpc(&self, body: &[u8]) -> Option<String> {
        self.handle_rpc_with(body, Access::Full).await
    }

    /// [`Self::handle_rpc`], refusing every method that changes something when `access`
    /// is [`Access::ReadOnly`].
    pub(crate) async fn handle_rpc_with(&self, body: &[u8], access: Access) -> Option<String> {
        let request = match rpc::parse_request(body) {
            Ok(request) => request,
            Err(rejected) => return Some(rpc::rejected_reply(&rejected)),
        };
        let outcome = self.execute(&request, access).await;
        let id = request.id?;
        Some(rpc::reply(&id, outcome))
    }

    async fn execute(&self, request: &Request, access: Access) -> Result<String, RpcError> {
        let method = Method::lookup(&request.method).ok_or_else(RpcError::method_not_found)?;
        let (recipe, values) = params::bind(method.recipes(), request.params()?)?;
        if access == Access::ReadOnly && method.changes_something(values.len()) {
            return Err(read_only());
        }
        match (method, values.as_slice()) {
            (Method::List, []) => list(&self.balancer.snapshot(), self.balancer.is_clustered()),
            (Method::Cluster, []) => match &self.cluster {
                Some(cluster) => to_json(&cluster.describe()),
                None => Err(RpcError::new(
                    404,
                    "Not in a cluster ([cluster] is not configured)",
                )),
            },
            (Method::Status, [id]) => self.status_get(destination_id(id)?),
            (Method::Status, [id, status]) => {
                let id = destination_id(id)?;
                // Any non-zero value enables, as in the reference.
                let enable = params::int("new_status", status)? != 0;
                self.status_set(id, enable)
            }
            (Method::Drain, [id]) => self.drain(destination_id(id)?).await,
            (Method::Resize, [id, name, capacity]) => {
                let id = destination_id(id)?;
                let name = params::string("res_name", name)?;
                // Checked before the lookup so that a bad capacity is never stored, and is
                // reported as such even for an unknown destination. The reference wraps
                // negatives into ~4.29e9 (effectively unlimited); that, and anything no
                // box could carry, is refused here.
                let capacity = u32::try_from(params::int("new_capacity", capacity)?)
                    .ok()
                    .filter(|c| *c <= MAX_CAPACITY)
                    .ok_or_else(|| RpcError::out_of_range("new_capacity"))?;
                self.resize(id, &name, capacity)
            }
            (Method::Reload, []) => self.reload().await,
            (Method::Calls, []) => self.calls(None).await,
            (Method::Calls, [id]) => {
                let id = destination_id(id)?;
                self.calls(Some(id)).await
            }
            (Method::EndCall, [call_id]) => {
                let call_id = params::string("callid", call_id)?;
                self.end_call(&call_id).await
            }
            (Method::Which, []) => to_json(&method_names().collect::<Vec<_>>()),
            (Method::Which, [command]) => {
                let command = params::string("command", command)?;
                let method = Method::lookup(&command).ok_or_else(unknown_command)?;
                to_json(&method.recipes())
            }
            (Method::Version, []) => to_json(&Version {
                server: &self.version,
            }),
            (Method::Uptime, []) => {
                let seconds = self.started.elapsed().as_secs();
                to_json(&Uptime {
                    up_time: format!("{seconds} [sec]"),
                    seconds,
                })
            }
            // `bind` only returns value lists of a recipe of this method, all covered above.
            (method, values) => {
                warn!(
                    ?method,
                    recipe,
                    count = values.len(),
                    "MI recipe without handler"
                );
                Err(RpcError::internal())
            }
        }
    }

    fn status_get(&self, id: u32) -> Result<String, RpcError> {
        let d = self
            .balancer
            .destination(id)
            .ok_or_else(destination_not_found)?;
        to_json(&Status {
            enable: yes_no(d.enabled),
            attrs: non_empty(d.attrs.as_deref()),
        })
    }

    fn status_set(&self, id: u32, enable: bool) -> Result<String, RpcError> {
        let changed = self
            .balancer
            .set_status_by_operator(id, enable)
            .map_err(|_| destination_not_found())?;
        if changed {
            info!(
                destination = id,
                enabled = enable,
                "destination {} by the operator",
                if enable { "enabled" } else { "disabled" }
            );
            if let Some(listener) = &self.on_status_change {
                listener(id, enable);
            }
        }
        Ok(OK.to_owned())
    }

    async fn drain(&self, id: u32) -> Result<String, RpcError> {
        let started = self
            .balancer
            .drain(id)
            .map_err(|_| destination_not_found())?;
        if started {
            info!(destination = id, "destination draining by the operator");
        }
        // The core publishes the drain when the destination carries no call: now, or
        // when its last call ends.
        if let Some(calls) = &self.calls {
            calls.drain_started().await;
        }
        Ok(OK.to_owned())
    }

    fn resize(&self, id: u32, name: &str, capacity: u32) -> Result<String, RpcError> {
        match self.balancer.resize(id, name, capacity) {
            Ok(()) => {
                info!(
                    destination = id,
                    resource = name,
                    capacity,
                    "resource resized"
                );
                Ok(OK.to_owned())
            }
            Err(ResizeError::DestinationNotFound(_)) => Err(destination_not_found()),
            Err(ResizeError::NoSuchResource { .. }) => Err(no_such_resource()),
        }
    }

    async fn reload(&self) -> Result<String, RpcError> {
        info!("lb_reload received");
        let Some(reloader) = &self.reloader else {
            warn!("lb_reload: no reloader configured");
            return Err(failed_to_reload());
        };
        match reloader.reload().await {
            Ok(()) => Ok(OK.to_owned()),
            Err(reason) => {
                warn!(%reason, "lb_reload failed; the previous table stays in force");
                Err(failed_to_reload())
            }
        }
    }

    /// Ends a call siplb still counts (one whose BYE was lost, or that ended while siplb
    /// was down): its load is released and it is forgotten, stored copy included.
    async fn end_call(&self, call_id: &str) -> Result<String, RpcError> {
        let ended = match &self.calls {
            Some(source) => source.end_call(call_id).await,
            None => 0,
        };
        if ended == 0 {
            return Err(RpcError::new(404, "Call not found"));
        }
        Ok(OK.to_owned())
    }

    async fn calls(&self, only: Option<u32>) -> Result<String, RpcError> {
        let mut calls = match &self.calls {
            Some(source) => source.calls().await,
            None => Vec::new(),
        };
        if let Some(id) = only {
            calls.retain(|c| c.destination_id == id);
        }
        to_json(&Calls { calls: &calls })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use siplb_balance::{Balancer, DestinationRow};

    use super::*;

    fn study_rows() -> Vec<DestinationRow> {
        vec![
            DestinationRow::new(1, 1, "sip:127.0.0.1:5071", "vm=50;pstn=32"),
            DestinationRow::new(2, 1, "sip:127.0.0.1:5072", "vm=100"),
            DestinationRow::new(3, 1, "sip:127.0.0.1:5073", "vm=50"),
            DestinationRow::new(4, 1, "sip:127.0.0.1:5074", "vm=10;pstn=64"),
        ]
    }

    fn study_balancer() -> Arc<Balancer> {
        let (balancer, skipped) = Balancer::with_rows(study_rows());
        assert!(skipped.is_empty());
        Arc::new(balancer)
    }

    fn state() -> MiState {
        MiState::new(study_balancer())
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn call(state: &MiState, body: &str) -> String {
        block_on(state.handle_rpc(body.as_bytes())).unwrap_or_else(|| panic!("no reply: {body}"))
    }

    /// The observed reference line for the study case with no calls up and probe_mode 0,
    /// plus siplb's trailing `probe_mode` key.
    fn observed_list(id: &str) -> String {
        let d = |uri: &str, id: u32, res: &str| {
            format!(
                r#"{{"uri":"{uri}","id":{id},"group":1,"enabled":"yes","auto-reenable":"on","Resources":[{res}],"probe_mode":0}}"#
            )
        };
        format!(
            r#"{{"jsonrpc":"2.0","result":{{"Destinations":[{},{},{},{}]}},"id":{id}}}"#,
            d(
                "sip:127.0.0.1:5071",
                1,
                r#"{"name":"vm","max":50,"load":0},{"name":"pstn","max":32,"load":0}"#
            ),
            d(
                "sip:127.0.0.1:5072",
                2,
                r#"{"name":"vm","max":100,"load":0}"#
            ),
            d(
                "sip:127.0.0.1:5073",
                3,
                r#"{"name":"vm","max":50,"load":0}"#
            ),
            d(
                "sip:127.0.0.1:5074",
                4,
                r#"{"name":"vm","max":10,"load":0},{"name":"pstn","max":64,"load":0}"#
            ),
        )
    }

    /// The reference's exact text with `,"probe_mode":0` removed from every destination.
    fn without_probe_mode(s: &str) -> String {
        s.replace(r#","probe_mode":0"#, "")
    }

    #[test]
    fn lb_list_matches_the_reference_text_key_for_key() {
        let s = state();
        let reply = call(&s, r#"{"jsonrpc":"2.0","method":"lb_list","id":1}"#);
        assert_eq!(reply, observed_list("1"));
        // Byte for byte the reference line once siplb's extra key is taken out.
        assert_eq!(
            without_probe_mode(&reply),
            r#"{"jsonrpc":"2.0","result":{"Destinations":[{"uri":"sip:127.0.0.1:5071","id":1,"group":1,"enabled":"yes","auto-reenable":"on","Resources":[{"name":"vm","max":50,"load":0},{"name":"pstn","max":32,"load":0}]},{"uri":"sip:127.0.0.1:5072","id":2,"group":1,"enabled":"yes","auto-reenable":"on","Resources":[{"name":"vm","max":100,"load":0}]},{"uri":"sip:127.0.0.1:5073","id":3,"group":1,"enabled":"yes","auto-reenable":"on","Resources":[{"name":"vm","max":50,"load":0}]},{"uri":"sip:127.0.0.1:5074","id":4,"group":1,"enabled":"yes","auto-reenable":"on","Resources":[{"name":"vm","max":10,"load":0},{"name":"pstn","max":64,"load":0}]}]},"id":1}"#
        );
    }

    #[test]
    fn lb_list_accepts_empty_object_and_alias_and_rejects_params() {
        let s = state();
        for body in [
            r#"{"jsonrpc":"2.0","method":"lb_list","params":{},"id":1}"#,
            r#"{"jsonrpc":"2.0","method":"lb_list","params":[],"id":1}"#,
            r#"{"jsonrpc":"2.0","method":"lb_list","params":null,"id":1}"#,
            r#"{"jsonrpc":"2.0","method":"load_balancer:list","id":1}"#,
        ] {
            assert_eq!(call(&s, body), observed_list("1"), "{body}");
        }
        assert_eq!(
            call(
                &s,
                r#"{"jsonrpc":"2.0","method":"lb_list","params":[1],"id":17}"#
            ),
            r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Too few or too many parameters"},"id":17}"#
        );
    }

    #[test]
    fn lb_list_shows_load_status_attrs_and_probe_mode_in_order() {
        let mut rows = study_rows();
        rows[0].attrs = Some("foo=bar".into());
        rows[1].attrs = Some(String::new());
        rows[1].probe_mode = 1;
        let (balancer, _) = Balancer::with_rows(rows);
        let balancer = Arc::new(balancer);
        let vm = siplb_balance::ResourceRequest::parse("vm").unwrap();
        let held = balancer.restore(2, &vm).unwrap();
        balancer.set_status_by_operator(2, false).unwrap();
        balancer
            .record_probe(3, 200, Some(std::time::Duration::from_micros(1250)))
            .unwrap();
        balancer.record_probe(4, 408, None).unwrap();
        let s = MiState::new(Arc::clone(&balancer));
        let reply = call(&s, r#"{"jsonrpc":"2.0","method":"lb_list","id":"abc"}"#);
        // Probe results follow probe_mode, only once a probe has been made.
        assert!(reply.contains(r#""Resources":[{"name":"vm","max":50,"load":0}],"probe_mode":0,"last_probe":200,"probe_rtt_ms":1.25}"#), "{reply}");
        assert!(
            reply.contains(r#""probe_mode":0,"last_probe":408}"#),
            "{reply}"
        );
        assert!(reply.contains(
            r#"{"uri":"sip:127.0.0.1:5071","id":1,"group":1,"enabled":"yes","auto-reenable":"on","Resources":[{"name":"vm","max":50,"load":0},{"name":"pstn","max":32,"load":0}],"attrs":"foo=bar","probe_mode":0}"#
        ), "{reply}");
        assert!(reply.contains(
            r#"{"uri":"sip:127.0.0.1:5072","id":2,"group":1,"enabled":"no","auto-reenable":"off","Resources":[{"name":"vm","max":100,"load":1}],"probe_mode":1}"#
        ), "{reply}");
        assert!(reply.ends_with(r#""id":"abc"}"#));
        drop(held);
    }

    #[test]
    fn lb_status_get_named_positional_and_string_ids() {
        let s = state();
        for (body, id) in [
            (
                r#"{"jsonrpc":"2.0","method":"lb_status","params":{"destination_id":2},"id":2}"#,
                "2",
            ),
            (
                r#"{"jsonrpc":"2.0","method":"lb_status","params":[2],"id":3}"#,
                "3",
            ),
            (
                r#"{"jsonrpc":"2.0","method":"lb_status","params":{"destination_id":"2"},"id":"x"}"#,
                r#""x""#,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"load_balancer:status","params":["2"],"id":null}"#,
                "null",
            ),
        ] {
            assert_eq!(
                call(&s, body),
                format!(r#"{{"jsonrpc":"2.0","result":{{"enable":"yes"}},"id":{id}}}"#),
                "{body}"
            );
        }
    }

    #[test]
    fn lb_status_get_shows_attrs_when_present() {
        let mut rows = study_rows();
        rows[2].attrs = Some("media=yes".into());
        let (balancer, _) = Balancer::with_rows(rows);
        let s = MiState::new(Arc::new(balancer));
        assert_eq!(
            call(
                &s,
                r#"{"jsonrpc":"2.0","method":"lb_status","params":[3],"id":1}"#
            ),
            r#"{"jsonrpc":"2.0","result":{"enable":"yes","attrs":"media=yes"},"id":1}"#
        );
    }

    #[test]
    fn lb_status_set_disables_with_auto_reenable_off_and_any_nonzero_enables() {
        let s = state();
        assert_eq!(
            call(
                &s,
                r#"{"jsonrpc":"2.0","method":"lb_status","params":{"destination_id":2,"new_status":0},"id":4}"#
            ),
            r#"{"jsonrpc":"2.0","result":"OK","id":4}"#
        );
        assert_eq!(
            call(
                &s,
                r#"{"jsonrpc":"2.0","method":"lb_status","params":{"destination_id":2},"id":5}"#
            ),
            r#"{"jsonrpc":"2.0","result":{"enable":"no"},"id":5}"#
        );
        let st = s.balancer.status(2).unwrap();
        assert!(!st.enabled && !st.auto_reenable);
        // String values, reversed key order, and 5 meaning "enable".
        assert_eq!(
            call(
                &s,
                r#"{"jsonrpc":"2.0","method":"lb_status","params":{"new_status":"5","destination_id":"2"},"id":20}"#
            ),
            r#"{"jsonrpc":"2.0","result":"OK","id":20}"#
        );
        let st = s.balancer.status(2).unwrap();
        assert!(st.enabled && st.auto_reenable);
        call(
            &s,
            r#"{"jsonrpc":"2.0","method":"lb_status","params":["4","0"],"id":1}"#,
        );
        assert!(!s.balancer.status(4).unwrap().enabled);
        call(
            &s,
            r#"{"jsonrpc":"2.0","method":"lb_status","params":[4,-1],"id":1}"#,
        );
        assert!(s.balancer.status(4).unwrap().enabled);
    }

    #[test]
    fn lb_drain_keeps_new_calls_away_shows_in_lb_list_and_tells_the_core() {
        /// The core's side: counts the drains it is told of.
        struct Core(AtomicUsize);
        impl crate::CallsSource for Core {
            fn calls(&self) -> crate::BoxFuture<'_, Vec<CallInfo>> {
                Box::pin(async { Vec::new() })
            }
            fn drain_started(&self) -> crate::BoxFuture<'_, ()> {
                self.0.fetch_add(1, Ordering::SeqCst);
                Box::pin(async {})
            }
        }
        let core = Arc::new(Core(AtomicUsize::new(0)));
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = state()
            .with_calls(Arc::clone(&core) as Arc<dyn crate::CallsSource>)
            .with_status_listener({
                let told = Arc::clone(&told);
                Arc::new(move |id, enabled| told.lock().unwrap().push((id, enabled)))
            });
        let held = s
            .balancer
            .restore(2, &siplb_balance::ResourceRequest::parse("vm").unwrap())
            .unwrap();
        assert_eq!(
            call(
                &s,
                r#"{"jsonrpc":"2.0","method":"lb_drain","params":[2],"id":1}"#
            ),
            r#"{"jsonrpc":"2.0","result":"OK","id":1}"#
        );
        assert!(s.balancer.status(2).unwrap().draining);
        assert_eq!(core.0.load(Ordering::SeqCst), 1, "the core is told");
        let list = call(&s, r#"{"jsonrpc":"2.0","method":"lb_list","id":2}"#);
        assert!(
            list.contains(
                r#""Resources":[{"name":"vm","max":100,"load":1}],"probe_mode":0,"draining":true}"#
            ),
            "{list}"
        );
        assert_eq!(list.matches("draining").count(), 1, "{list}");
        drop(held);

        assert_eq!(
            call(
                &s,
                r#"{"jsonrpc":"2.0","method":"load_balancer:drain","params":{"destination_id":3},"id":3}"#
            ),
            r#"{"jsonrpc":"2.0","result":"OK","id":3}"#
        );
        assert_eq!(core.0.load(Ordering::SeqCst), 2);
        assert_eq!(
            call(
                &s,
                r#"{"jsonrpc":"2.0","method":"lb_drain","params":[99],"id":4}"#
            ),
            r#"{"jsonrpc":"2.0","error":{"code":404,"message":"Destination ID not found"},"id":4}"#
        );
        assert_eq!(core.0.load(Ordering::SeqCst), 2, "not for an unknown id");
        // lb_status ID 1 ends a drain.
        call(
            &s,
            r#"{"jsonrpc":"2.0","method":"lb_status","params":[3,1],"id":5}"#,
        );
        assert!(!s.balancer.status(3).unwrap().draining);
        assert_eq!(*told.lock().unwrap(), [(3, true)]);
    }

    #[test]
    fn lb_status_errors_are_verbatim() {
        let s = state();
        for (body, expected) in [
            (
                r#"{"jsonrpc":"2.0","method":"lb_status","params":[99],"id":12}"#,
                r#"{"jsonrpc":"2.0","error":{"code":404,"message":"Destination ID not found"},"id":12}"#,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"lb_status","params":{"destination_id":99,"new_status":1},"id":13}"#,
                r#"{"jsonrpc":"2.0","error":{"code":404,"message":"Destination ID not found"},"id":13}"#,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"lb_status","params":[-1],"id":13}"#,
                r#"{"jsonrpc":"2.0","error":{"code":404,"message":"Destination ID not found"},"id":13}"#,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"lb_status","params":["abc"],"id":15}"#,
                r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Bad type for parameter 'destination_id'"},"id":15}"#,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"lb_status","params":[2,"on"],"id":15}"#,
                r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Bad type for parameter 'new_status'"},"id":15}"#,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"lb_status","id":16}"#,
                r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Too few or too many parameters"},"id":16}"#,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"lb_status","params":{},"id":16}"#,
                r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Too few or too many parameters"},"id":16}"#,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"lb_status","params":{"id":1},"id":1}"#,
                r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Named parameters do not match"},"id":1}"#,
            ),
        ] {
            assert_eq!(call(&s, body), expected, "{body}");
        }
        // A rejected set leaves the state alone.
        assert!(s.balancer.status(2).unwrap().enabled);
    }

    #[test]
    fn lb_resize_named_positional_and_string_numbers() {
        let s = state();
        assert_eq!(
            call(
                &s,
                r#"{"jsonrpc":"2.0","method":"lb_resize","params":{"destination_id":3,"res_name":"vm","new_capacity":200},"id":8}"#
            ),
            r#"{"jsonrpc":"2.0","result":"OK","id":8}"#
        );
        assert_eq!(s.balancer.destination(3).unwrap().resources[0].max, 200);
        assert_eq!(
            call(
                &s,
                r#"{"jsonrpc":"2.0","method":"lb_resize","params":["3","vm","150"],"id":19}"#
            ),
            r#"{"jsonrpc":"2.0","result":"OK","id":19}"#
        );
        assert_eq!(s.balancer.destination(3).unwrap().resources[0].max, 150);
        call(
            &s,
            r#"{"jsonrpc":"2.0","method":"load_balancer:resize","params":[1,"pstn",0],"id":1}"#,
        );
        assert_eq!(s.balancer.destination(1).unwrap().resources[1].max, 0);
        call(
            &s,
            r#"{"jsonrpc":"2.0","method":"lb_resize","params":[4,"vm",10000000],"id":1}"#,
        );
        assert_eq!(
            s.balancer.destination(4).unwrap().resources[0].max,
            MAX_CAPACITY
        );
    }

    #[test]
    fn lb_resize_errors_are_verbatim() {
        let s = state();
        for (body, expected) in [
            (
                r#"{"jsonrpc":"2.0","method":"lb_resize","params":[99,"vm",10],"id":10}"#,
                r#"{"jsonrpc":"2.0","error":{"code":404,"message":"Destination ID not found"},"id":10}"#,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"lb_resize","params":[2,"pstn",10],"id":11}"#,
                r#"{"jsonrpc":"2.0","error":{"code":404,"message":"Destination has no such resource"},"id":11}"#,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"lb_resize","params":[2,"vm"],"id":14}"#,
                r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Too few or too many parameters"},"id":14}"#,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"lb_resize","params":{"destination_id":2,"resource":"vm","new_capacity":1},"id":14}"#,
                r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Named parameters do not match"},"id":14}"#,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"lb_resize","params":["x","vm",1],"id":14}"#,
                r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Bad type for parameter 'destination_id'"},"id":14}"#,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"lb_resize","params":[2,["vm"],1],"id":14}"#,
                r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Bad type for parameter 'res_name'"},"id":14}"#,
            ),
        ] {
            assert_eq!(call(&s, body), expected, "{body}");
        }
    }

    #[test]
    fn lb_resize_refuses_bad_capacities_and_stores_nothing() {
        let s = state();
        let before = s.balancer.snapshot();
        for (capacity, data) in [
            ("-5", "Value out of range for parameter 'new_capacity'"),
            (r#""-5""#, "Value out of range for parameter 'new_capacity'"),
            (
                "4294967296",
                "Value out of range for parameter 'new_capacity'",
            ),
            (
                "4294967295",
                "Value out of range for parameter 'new_capacity'",
            ),
            (
                "10000001",
                "Value out of range for parameter 'new_capacity'",
            ),
            (
                r#""99999999999999999999999""#,
                "Value out of range for parameter 'new_capacity'",
            ),
            ("1e300", "Value out of range for parameter 'new_capacity'"),
            (r#""lots""#, "Bad type for parameter 'new_capacity'"),
            ("12.5", "Bad type for parameter 'new_capacity'"),
            (r#""12.5""#, "Bad type for parameter 'new_capacity'"),
            ("null", "Bad type for parameter 'new_capacity'"),
            ("true", "Bad type for parameter 'new_capacity'"),
        ] {
            for dst in ["4", "99"] {
                let body = format!(
                    r#"{{"jsonrpc":"2.0","method":"lb_resize","params":[{dst},"vm",{capacity}],"id":1}}"#
                );
                assert_eq!(
                    call(&s, &body),
                    format!(
                        r#"{{"jsonrpc":"2.0","error":{{"code":-32602,"message":"Invalid params","data":"{data}"}},"id":1}}"#
                    ),
                    "{body}"
                );
            }
        }
        assert_eq!(s.balancer.snapshot(), before);
    }

    #[test]
    fn unknown_method_and_bad_envelopes() {
        let s = state();
        for (body, expected) in [
            (
                r#"{"jsonrpc":"2.0","method":"lb_nosuch","id":18}"#,
                r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":18}"#,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"#,
                r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#,
            ),
            (
                r#"{"method":"lb_status","params":[1],"id":7}"#,
                r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":7}"#,
            ),
            (
                r#"[{"jsonrpc":"2.0","method":"lb_status","params":[1],"id":1}]"#,
                r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"lb_list","params":"x","id":3}"#,
                r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":3}"#,
            ),
            // Invalid without an id: still answered, with a null id.
            (
                r#"{"method":"lb_list"}"#,
                r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#,
            ),
        ] {
            assert_eq!(call(&s, body), expected, "{body}");
        }
    }

    #[test]
    fn notifications_run_but_get_no_reply() {
        let s = state();
        let reply = block_on(s.handle_rpc(
            br#"{"jsonrpc":"2.0","method":"lb_status","params":{"destination_id":"3","new_status":"0"}}"#,
        ));
        assert_eq!(reply, None);
        assert!(!s.balancer.status(3).unwrap().enabled);
        assert_eq!(
            block_on(s.handle_rpc(br#"{"jsonrpc":"2.0","method":"lb_nosuch"}"#)),
            None
        );
    }

    #[test]
    fn which_lists_every_method_and_its_recipes() {
        let s = state();
        let names = call(
            &s,
            r#"{"jsonrpc":"2.0","id":"32478","method":"which","params":{}}"#,
        );
        let v: Value = serde_json::from_str(&names).unwrap();
        let listed: Vec<&str> = v["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        for name in [
            "lb_list",
            "lb_status",
            "lb_resize",
            "lb_reload",
            "lb_calls",
            "load_balancer:list",
            "load_balancer:status",
            "load_balancer:resize",
            "load_balancer:reload",
            "which",
            "version",
            "uptime",
        ] {
            assert!(listed.contains(&name), "{name} missing from {names}");
        }
        assert_eq!(v["id"], "32478");
        // Every listed name is callable.
        for name in &listed {
            assert!(Method::lookup(name).is_some());
        }
        for (command, recipes) in [
            (
                "lb_status",
                r#"[["destination_id"],["destination_id","new_status"]]"#,
            ),
            (
                "lb_resize",
                r#"[["destination_id","res_name","new_capacity"]]"#,
            ),
            ("lb_list", "[[]]"),
            ("load_balancer:reload", "[[]]"),
        ] {
            assert_eq!(
                call(
                    &s,
                    &format!(
                        r#"{{"jsonrpc":"2.0","method":"which","params":{{"command":"{command}"}},"id":1}}"#
                    )
                ),
                format!(r#"{{"jsonrpc":"2.0","result":{recipes},"id":1}}"#)
            );
        }
        assert_eq!(
            call(
                &s,
                r#"{"jsonrpc":"2.0","method":"which","params":["lb_status"],"id":1}"#
            ),
            r#"{"jsonrpc":"2.0","result":[["destination_id"],["destination_id","new_status"]],"id":1}"#
        );
        assert_eq!(
            call(
                &s,
                r#"{"jsonrpc":"2.0","method":"which","params":["nope"],"id":1}"#
            ),
            r#"{"jsonrpc":"2.0","error":{"code":404,"message":"Unknown command"},"id":1}"#
        );
    }

    #[test]
    fn version_and_uptime() {
        let s = state()
            .with_version("siplb 9.9.9 (test)")
            .with_start(Instant::now() - Duration::from_secs(42));
        assert_eq!(
            call(
                &s,
                r#"{"jsonrpc":"2.0","method":"version","params":{},"id":1}"#
            ),
            r#"{"jsonrpc":"2.0","result":{"Server":"siplb 9.9.9 (test)"},"id":1}"#
        );
        let up = call(&s, r#"{"jsonrpc":"2.0","method":"uptime","id":1}"#);
        assert_eq!(
            up,
            r#"{"jsonrpc":"2.0","result":{"Up time":"42 [sec]","seconds":42},"id":1}"#
        );
        assert!(
            call(&state(), r#"{"jsonrpc":"2.0","method":"version","id":1}"#)
                .contains(concat!("siplb ", env!("CARGO_PKG_VERSION")))
        );
    }

    #[test]
    fn lb_calls_lists_what_the_source_gives_or_nothing() {
        let s = state();
        assert_eq!(
            call(&s, r#"{"jsonrpc":"2.0","method":"lb_calls","id":1}"#),
            r#"{"jsonrpc":"2.0","result":{"Calls":[]},"id":1}"#
        );
        let source = || async {
            vec![
                CallInfo {
                    call_id: "a@h".into(),
                    destination_id: 1,
                    uri: "sip:127.0.0.1:5071".into(),
                    resources: vec!["vm".into()],
                    address: Some("udp:127.0.0.1:5071".into()),
                    state: "confirmed".into(),
                    age_secs: 3,
                },
                CallInfo {
                    call_id: "b@h".into(),
                    destination_id: 4,
                    uri: "sip:127.0.0.1:5074".into(),
                    resources: vec!["vm".into(), "pstn".into()],
                    address: None,
                    state: "early".into(),
                    age_secs: 0,
                },
            ]
        };
        let s = state().with_calls(Arc::new(source));
        assert_eq!(
            call(
                &s,
                r#"{"jsonrpc":"2.0","method":"lb_calls","params":{"destination_id":"4"},"id":1}"#
            ),
            r#"{"jsonrpc":"2.0","result":{"Calls":[{"callid":"b@h","destination_id":4,"uri":"sip:127.0.0.1:5074","resources":["vm","pstn"],"state":"early","age":0}]},"id":1}"#
        );
        let all = call(
            &s,
            r#"{"jsonrpc":"2.0","method":"lb_calls","params":{},"id":1}"#,
        );
        assert!(all.contains(r#""callid":"a@h""#) && all.contains(r#""callid":"b@h""#));
        assert!(
            all.contains(r#""resources":["vm"],"address":"udp:127.0.0.1:5071","state""#),
            "{all}"
        );
    }

    #[test]
    fn reload_success_swaps_the_table() {
        let balancer = study_balancer();
        let target = Arc::clone(&balancer);
        let reloader = move || {
            let target = Arc::clone(&target);
            async move {
                let mut rows = study_rows();
                rows[2].resources = "vm=70".into();
                target.reload(rows);
                Ok(())
            }
        };
        let s = MiState::new(Arc::clone(&balancer)).with_reloader(Arc::new(reloader));
        assert_eq!(
            call(&s, r#"{"jsonrpc":"2.0","method":"lb_reload","id":5}"#),
            r#"{"jsonrpc":"2.0","result":"OK","id":5}"#
        );
        assert_eq!(balancer.destination(3).unwrap().resources[0].max, 70);
        assert_eq!(
            call(
                &s,
                r#"{"jsonrpc":"2.0","method":"load_balancer:reload","params":{},"id":6}"#
            ),
            r#"{"jsonrpc":"2.0","result":"OK","id":6}"#
        );
    }

    #[test]
    fn reload_failure_is_500_and_the_old_table_stays() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&attempts);
        let reloader = move || {
            counter.fetch_add(1, Ordering::Relaxed);
            async { Err::<(), _>("database unreachable".to_owned()) }
        };
        let s = state().with_reloader(Arc::new(reloader));
        s.balancer.resize(1, "vm", 80).unwrap();
        let before = s.balancer.snapshot();
        assert_eq!(
            call(&s, r#"{"jsonrpc":"2.0","method":"lb_reload","id":5}"#),
            r#"{"jsonrpc":"2.0","error":{"code":500,"message":"Failed to reload"},"id":5}"#
        );
        assert_eq!(attempts.load(Ordering::Relaxed), 1);
        assert_eq!(s.balancer.snapshot(), before);
        // Without a reloader at all, the same answer.
        assert_eq!(
            call(&state(), r#"{"jsonrpc":"2.0","method":"lb_reload","id":5}"#),
            r#"{"jsonrpc":"2.0","error":{"code":500,"message":"Failed to reload"},"id":5}"#
        );
        assert_eq!(
            call(
                &state(),
                r#"{"jsonrpc":"2.0","method":"lb_reload","params":[1],"id":5}"#
            ),
            r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Too few or too many parameters"},"id":5}"#
        );
    }
}
