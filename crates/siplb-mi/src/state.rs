//! What the management interface works on, and the hooks the binary plugs in for what lives
//! elsewhere (the database, the calls of the proxy core, the proxy's counters).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use siplb_balance::Balancer;

use crate::dashboard::{Board, EventLog, PulseSource};

/// A boxed, sendable future, as [`Reloader::reload`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Re-reads the destination table (`lb_reload`).
///
/// On error the implementation must leave the current table in force (read everything
/// first, then call [`Balancer::reload`]); the message is logged, and the client gets
/// `500 Failed to reload`. Any `Fn() -> impl Future<Output = Result<(), String>>` is one.
pub trait Reloader: Send + Sync {
    /// Reads the table and swaps it in.
    fn reload(&self) -> BoxFuture<'_, Result<(), String>>;
}

impl<F, Fut> Reloader for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    fn reload(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(self())
    }
}

/// Told of each status change an operator makes with `lb_status`: (destination id,
/// enabled).
pub type StatusListener = Arc<dyn Fn(u32, bool) + Send + Sync>;

/// One call up, as `lb_calls` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallInfo {
    /// The call's Call-ID.
    #[serde(rename = "callid")]
    pub call_id: String,
    /// The destination holding its load.
    pub destination_id: u32,
    /// That destination's URI.
    pub uri: String,
    /// The resources it holds there.
    pub resources: Vec<String>,
    /// Where its INVITE went, `transport:ip:port` (the address that answered, once
    /// answered): which address of a destination named by host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Dialog state, in the proxy core's words (`early`, `confirmed`...).
    pub state: String,
    /// Seconds since the call was routed.
    #[serde(rename = "age")]
    pub age_secs: u64,
}

/// The calls currently up (`lb_calls`). Any `Fn() -> Vec<CallInfo>` is one.
pub trait CallsSource: Send + Sync {
    /// A point-in-time list, in any order. Asynchronous because the calls live in the
    /// proxy core's task, which answers between two messages.
    fn calls(&self) -> BoxFuture<'_, Vec<CallInfo>>;

    /// Ends every call with this Call-ID, releasing its load (`lb_end_call`); returns how
    /// many were ended. Sources that cannot end calls end none.
    fn end_call<'a>(&'a self, call_id: &'a str) -> BoxFuture<'a, usize> {
        let _ = call_id;
        Box::pin(async { 0 })
    }

    /// An operator has started a drain (`lb_drain`): the source that owns the calls
    /// publishes it drained now if the destination carries none (and otherwise when
    /// its last call ends). Sources without calls of their own do nothing.
    fn drain_started(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

impl<F, Fut> CallsSource for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Vec<CallInfo>> + Send + 'static,
{
    fn calls(&self) -> BoxFuture<'_, Vec<CallInfo>> {
        Box::pin(self())
    }
}

/// More Prometheus text to serve after the balancer's gauges (the proxy's counters). Any
/// `Fn() -> String` is one.
pub trait MetricsSource: Send + Sync {
    /// Complete exposition lines (`# HELP`, `# TYPE`, samples), each ending in a newline.
    fn render(&self) -> BoxFuture<'_, String>;
}

impl<F, Fut> MetricsSource for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = String> + Send + 'static,
{
    fn render(&self) -> BoxFuture<'_, String> {
        Box::pin(self())
    }
}

/// Everything the management interface needs. Cheap to share behind an `Arc`.
pub struct MiState {
    pub(crate) balancer: Arc<Balancer>,
    pub(crate) reloader: Option<Arc<dyn Reloader>>,
    pub(crate) calls: Option<Arc<dyn CallsSource>>,
    pub(crate) metrics: Option<Arc<dyn MetricsSource>>,
    pub(crate) on_status_change: Option<StatusListener>,
    pub(crate) version: String,
    pub(crate) started: Instant,
    pub(crate) token: Option<String>,
    /// Without a token, the `Host` names a request may carry (besides loopback ones):
    /// a web page cannot reach the interface through DNS rebinding.
    pub(crate) allowed_hosts: Vec<String>,
    /// Set when siplb drains before stopping: `/health` then answers 503, so a health
    /// checker in front (DNS SRV updater, keepalived, a load balancer) moves traffic away.
    pub(crate) draining: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// The live dashboard at `GET /` (its data at `GET /events`).
    pub(crate) dashboard: Dashboard,
    pub(crate) pulse: Option<Arc<dyn PulseSource>>,
    pub(crate) events: Option<Arc<EventLog>>,
    pub(crate) board: Board,
    /// In a cluster: the `cluster` method's answer and what `/health` adds.
    pub(crate) cluster: Option<Arc<dyn ClusterSource>>,
}

/// What a node of a cluster tells the management interface.
pub trait ClusterSource: Send + Sync {
    /// The `cluster` method's answer: the nodes, their state, the store's.
    fn describe(&self) -> serde_json::Value;
    /// Why the node routes on its own view, if it does (the shared store is away):
    /// `/health` says so.
    fn degraded(&self) -> Option<String>;
}

/// Whether the dashboard is served, and what a page without a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dashboard {
    /// `GET /` and `GET /events` are served (otherwise `404`).
    pub enabled: bool,
    /// Without a token, a page in a browser may change things (enable, disable, drain,
    /// resize); otherwise it only watches. With a token, the token decides.
    pub writes: bool,
}

impl Default for Dashboard {
    fn default() -> Self {
        Self {
            enabled: true,
            writes: false,
        }
    }
}

impl MiState {
    /// A state over `balancer`, started now, with this crate's version, no reloader
    /// (`lb_reload` fails), no calls source (`lb_calls` lists none) and no extra metrics.
    pub fn new(balancer: Arc<Balancer>) -> Self {
        Self {
            balancer,
            reloader: None,
            calls: None,
            metrics: None,
            on_status_change: None,
            version: concat!("siplb ", env!("CARGO_PKG_VERSION")).to_owned(),
            started: Instant::now(),
            token: None,
            allowed_hosts: Vec::new(),
            draining: None,
            dashboard: Dashboard::default(),
            pulse: None,
            events: None,
            board: Board::default(),
            cluster: None,
        }
    }

    /// Makes the node's cluster visible: the `cluster` method, `/health`.
    #[must_use]
    pub fn with_cluster(mut self, cluster: Arc<dyn ClusterSource>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Whether the dashboard is served, and whether a page without a token may change
    /// things.
    #[must_use]
    pub fn with_dashboard(mut self, dashboard: Dashboard) -> Self {
        self.dashboard = dashboard;
        self
    }

    /// Sets where the dashboard reads the core's counters once a second.
    #[must_use]
    pub fn with_pulse(mut self, pulse: Arc<dyn PulseSource>) -> Self {
        self.pulse = Some(pulse);
        self
    }

    /// Sets the status events the dashboard shows (whoever publishes them pushes them
    /// there too).
    #[must_use]
    pub fn with_event_log(mut self, events: Arc<EventLog>) -> Self {
        self.events = Some(events);
        self
    }

    /// Host names (without port) a request may name in its `Host` header besides
    /// `localhost` and loopback addresses, when no token is set (with a token, the
    /// token is the guard).
    #[must_use]
    pub fn with_allowed_hosts(mut self, hosts: impl IntoIterator<Item = String>) -> Self {
        self.allowed_hosts = hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect();
        self
    }

    /// Whether a request's `Host` header is acceptable. Without a token, it must name
    /// loopback (`localhost`, `127.x.y.z`, `[::1]`) or an allowed host; a request with
    /// no `Host` (not a browser) passes.
    pub(crate) fn host_allowed(&self, host: Option<&[u8]>) -> bool {
        if self.token.is_some() {
            return true;
        }
        let Some(host) = host.and_then(|h| std::str::from_utf8(h).ok()) else {
            return host.is_none();
        };
        let name = strip_port(host.trim()).to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        let ip = name.trim_start_matches('[').trim_end_matches(']');
        if ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
        {
            return true;
        }
        self.allowed_hosts.iter().any(|h| *h == name || *h == ip)
    }

    /// Sets what `lb_reload` runs.
    #[must_use]
    pub fn with_reloader(mut self, reloader: Arc<dyn Reloader>) -> Self {
        self.reloader = Some(reloader);
        self
    }

    /// Sets where `lb_calls` reads the calls up.
    #[must_use]
    pub fn with_calls(mut self, calls: Arc<dyn CallsSource>) -> Self {
        self.calls = Some(calls);
        self
    }

    /// Sets what `GET /metrics` appends after the balancer's gauges.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<dyn MetricsSource>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Called with (destination id, enabled) after each change an operator makes with
    /// `lb_status`, so the change can be published like the core's.
    #[must_use]
    pub fn with_status_listener(mut self, listener: StatusListener) -> Self {
        self.on_status_change = Some(listener);
        self
    }

    /// Sets the text `version` answers, e.g. `siplb 0.1.0 (abc1234)`.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets the instant `uptime` counts from (the process start, rather than the moment
    /// this state was built).
    #[must_use]
    pub fn with_start(mut self, started: Instant) -> Self {
        self.started = started;
        self
    }

    /// Requires `Authorization: Bearer <token>` on every request to `/mi` and `/metrics`
    /// when `token` is `Some` (others get `401` with `WWW-Authenticate: Bearer`); `/health`
    /// stays open. `None`, the default, leaves the interface open as before.
    ///
    /// `opensips-cli` has no way to send a token: with one set, the interface is unusable
    /// by `opensips-cli` (and by scrapers not configured with the token); `siplb ctl`
    /// sends it with `--token` or `SIPLB_MI_TOKEN`, see [`call_with_token`](crate::call_with_token).
    ///
    /// The token is sent in clear text over plain HTTP: it keeps out other local users and
    /// stray clients, not someone who can read the traffic. An empty token is accepted from
    /// no one (every request is refused), never treated as "no token".
    #[must_use]
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// `/health` answers `503 draining` once `flag` is set.
    #[must_use]
    pub fn with_draining_flag(mut self, flag: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.draining = Some(flag);
        self
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Whether `authorization` (the request's `Authorization` header value, if any)
    /// carries the configured token; always true when no token is configured.
    pub(crate) fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        authorization
            .and_then(bearer_credentials)
            .is_some_and(|presented| {
                !presented.is_empty() && constant_time_eq(presented, token.as_bytes())
            })
    }

    /// The balancer this interface manages.
    pub fn balancer(&self) -> &Arc<Balancer> {
        &self.balancer
    }
}

impl fmt::Debug for MiState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MiState")
            .field("balancer", &self.balancer)
            .field("reloader", &self.reloader.is_some())
            .field("calls", &self.calls.is_some())
            .field("metrics", &self.metrics.is_some())
            .field("status_listener", &self.on_status_change.is_some())
            .field("version", &self.version)
            .field("started", &self.started)
            .field("token", &self.token.is_some())
            .finish()
    }
}

/// The credentials of `Bearer <credentials>`: the scheme in any case, then one or more
/// spaces (RFC 9110 section 11.4, RFC 6750 section 2.1).
fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"Bearer ";
    let (scheme, rest) = value.split_at_checked(SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let start = rest.iter().position(|&b| b != b' ')?;
    Some(&rest[start..])
}

/// Equality whose time depends only on the lengths, not on where the bytes differ, so
/// that the token cannot be guessed byte by byte from response times. (Its length can
/// be; that is no help in guessing it.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(token: Option<&str>) -> MiState {
        MiState::new(Arc::new(Balancer::new())).with_token(token.map(str::to_owned))
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_credentials(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"bearer   abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"BEARER abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"Bearer "), None);
        assert_eq!(bearer_credentials(b"Bearer"), None);
        assert_eq!(bearer_credentials(b"Bearerabc"), None);
        assert_eq!(bearer_credentials(b"Basic YWJj"), None);
        assert_eq!(bearer_credentials(b""), None);
    }

    #[test]
    fn constant_time_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret", b""));
    }

    #[test]
    fn authorization() {
        let open = state(None);
        assert!(open.authorized(None));
        assert!(open.authorized(Some(b"Bearer whatever")));

        let guarded = state(Some("s3cret"));
        assert!(guarded.authorized(Some(b"Bearer s3cret")));
        assert!(guarded.authorized(Some(b"bearer s3cret")));
        assert!(!guarded.authorized(None));
        assert!(!guarded.authorized(Some(b"Bearer s3cre")));
        assert!(!guarded.authorized(Some(b"Bearer s3cret ")));
        assert!(!guarded.authorized(Some(b"Bearer S3CRET")));
        assert!(!guarded.authorized(Some(b"Basic s3cret")));
        assert!(!guarded.authorized(Some(b"s3cret")));

        // An empty token locks the interface rather than opening it.
        let locked = state(Some(""));
        assert!(!locked.authorized(None));
        assert!(!locked.authorized(Some(b"Bearer ")));
        assert!(!locked.authorized(Some(b"Bearer")));

        assert!(!format!("{guarded:?}").contains("s3cret"));
    }
}

/// `host` without its `:port` (an IPv6 literal keeps its brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod host_tests {
    use super::*;

    #[test]
    fn only_loopback_or_listed_hosts_without_a_token() {
        let s = MiState::new(Arc::new(Balancer::new()))
            .with_allowed_hosts(["lb.example.net".to_owned(), "192.0.2.7".to_owned()]);
        for ok in [
            "localhost",
            "localhost:8888",
            "127.0.0.1:8888",
            "127.3.4.5",
            "[::1]:8888",
            "LB.example.net:8888",
            "192.0.2.7:8888",
        ] {
            assert!(s.host_allowed(Some(ok.as_bytes())), "{ok}");
        }
        for bad in [
            "evil.example.com",
            "evil.example.com:8888",
            "10.0.0.1",
            "[::2]:1",
        ] {
            assert!(!s.host_allowed(Some(bad.as_bytes())), "{bad}");
        }
        assert!(s.host_allowed(None), "no Host: not a browser");
        let guarded = s.with_token(Some("t".to_owned()));
        assert!(guarded.host_allowed(Some(b"evil.example.com")));
    }
}
