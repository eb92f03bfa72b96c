//! siplb's configuration: one TOML file (SPEC section 5), parsed and validated in full
//! before anything starts. Unknown keys and bad values are errors that name the key
//! and the line; `siplb check` runs exactly this code.

mod cluster;
mod dns;
mod duration;
mod listen;
mod route;
mod tls;

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use siplb_proxy::{Peer, Settings, Transport};

pub use cluster::Cluster;
pub use dns::Dns;
pub use route::{Action, Balance, Count, Match, Overflow, Pattern, Reply, Route};
pub use tls::Tls;

/// The embedded default: what `siplb run` uses without `--config`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// A configuration that failed to load.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Syntax, unknown keys and bad values; the message names the key and the line.
    #[error("{0}")]
    Parse(String),
    /// A rule across keys was broken (line given when known).
    #[error("line {line}: {message}")]
    Invalid { line: usize, message: String },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub sip: Sip,
    #[serde(default)]
    pub database: Database,
    #[serde(default)]
    pub management: Management,
    #[serde(default)]
    pub probing: Probing,
    #[serde(default)]
    pub transaction: Transaction,
    #[serde(default)]
    pub dialog: Dialog,
    #[serde(default)]
    pub failover: Failover,
    #[serde(default)]
    pub events: Events,
    #[serde(default)]
    pub tcp: Tcp,
    #[serde(default)]
    pub overload: Overload,
    #[serde(default)]
    pub dns: Dns,
    #[serde(default)]
    pub tls: Tls,
    /// Absent: one node, no shared store.
    #[serde(default)]
    pub cluster: Option<Cluster>,
    #[serde(default, rename = "route")]
    routes: Vec<toml::Spanned<Route>>,
    /// `routes` in the core's terms, compiled once by validation.
    #[serde(skip)]
    compiled_routes: Vec<siplb_proxy::Route>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sip {
    #[serde(deserialize_with = "listen::deserialize")]
    pub listen: Vec<Peer>,
    /// Largest message accepted, in bytes.
    pub max_message_size: usize,
    /// On SIGTERM: how long calls that are up may still end (new calls get 503)
    /// before siplb exits.
    #[serde(with = "duration")]
    pub drain: Duration,
    /// Calls being set up or up at once; beyond, new calls get `503` with
    /// `Retry-After`.
    pub max_calls: usize,
    /// Transactions alive at once; beyond, every new request gets `503`.
    pub max_transactions: usize,
}

impl Default for Sip {
    fn default() -> Self {
        Sip {
            listen: [Transport::Udp, Transport::Tcp]
                .into_iter()
                .map(|transport| Peer {
                    transport,
                    addr: std::net::SocketAddr::from(([127, 0, 0, 1], 5060)),
                })
                .collect(),
            max_message_size: 65_535,
            drain: Duration::from_secs(10),
            max_calls: 500_000,
            max_transactions: 2_000_000,
        }
    }
}

/// Bounds on SIP over TCP, so that idle, half-sent or too many connections cannot
/// exhaust descriptors or memory.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tcp {
    /// Connections open at once, accepted and opened.
    pub max_connections: usize,
    /// Connections accepted from one IP address.
    pub max_connections_per_source: usize,
    /// A connection that carries nothing this long is closed.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// A message begun must be complete within this long, or the connection closes.
    #[serde(with = "duration")]
    pub message_timeout: Duration,
}

impl Default for Tcp {
    fn default() -> Self {
        Tcp {
            max_connections: 10_000,
            max_connections_per_source: 100,
            idle_timeout: Duration::from_secs(600),
            message_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    pub url: String,
    pub table: String,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            url: "sqlite://siplb.db".to_owned(),
            table: "load_balancer".to_owned(),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Management {
    pub listen: String,
    /// When set, every request to `/mi` and `/metrics` must carry `Authorization: Bearer
    /// <token>` (`/health` stays open). 1 to 256 printable ASCII characters, no spaces.
    ///
    /// `opensips-cli` cannot send a token: with one set, only `siplb ctl` (`--token` or
    /// `SIPLB_MI_TOKEN`) and other clients that send the header can use the interface.
    pub token: Option<String>,
    /// Without a token, the host names a request's `Host` header may carry besides
    /// loopback ones (so that no web page can reach the interface by DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// The live dashboard at `GET /` (on by default).
    pub dashboard: bool,
    /// Without a token, whether the dashboard's page may enable, disable, drain and
    /// resize (off by default: the page only watches). With a token, the token decides.
    pub dashboard_writes: bool,
}

impl Default for Management {
    fn default() -> Self {
        Management {
            listen: "127.0.0.1:8888".to_owned(),
            token: None,
            allowed_hosts: Vec::new(),
            dashboard: true,
            dashboard_writes: false,
        }
    }
}

/// Spelled out so that the token never reaches a log line.
impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("allowed_hosts", &self.allowed_hosts)
            .field("dashboard", &self.dashboard)
            .field("dashboard_writes", &self.dashboard_writes)
            .finish()
    }
}

/// Longest `management.token` accepted.
const MAX_TOKEN_LEN: usize = 256;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Probing {
    /// Zero turns probing off.
    #[serde(with = "duration")]
    pub interval: Duration,
    pub method: String,
    pub from: String,
    /// Codes that count as success besides 200.
    pub reply_codes: Vec<u16>,
    #[serde(with = "duration")]
    pub timeout: Duration,
    pub failures_to_disable: u32,
    pub successes_to_enable: u32,
}

impl Default for Probing {
    fn default() -> Self {
        Probing {
            interval: Duration::from_secs(30),
            method: "OPTIONS".to_owned(),
            from: "sip:prober@localhost".to_owned(),
            reply_codes: Vec::new(),
            timeout: Duration::from_secs(5),
            failures_to_disable: 1,
            successes_to_enable: 1,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Transaction {
    /// No final reply to a forwarded INVITE by then: local 408 and failover.
    #[serde(with = "duration")]
    pub invite_timeout: Duration,
    #[serde(with = "duration")]
    pub t1: Duration,
    #[serde(with = "duration")]
    pub t2: Duration,
    #[serde(with = "duration")]
    pub t4: Duration,
    /// A caller's INVITE gets a 100 Trying only when nothing else (a 180 relayed,
    /// a final) has gone back by then (RFC 3261 17.2.1); zero sends it at once.
    #[serde(with = "duration")]
    pub trying_after: Duration,
}

impl Default for Transaction {
    fn default() -> Self {
        Transaction {
            invite_timeout: Duration::from_secs(5),
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            trying_after: Duration::from_millis(200),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dialog {
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Store answered calls in the database so a restart restores them.
    pub persist: bool,
    /// How long an answered call lasts before it is stored, and how often stored
    /// calls are written (one batch per interval): a `kill -9` loses the calls
    /// answered, and the ends of calls, in about the last two intervals.
    #[serde(with = "duration")]
    pub persist_interval: Duration,
    /// The table calls are stored in, next to the destination table.
    pub table: String,
    /// A local file where changes the database cannot take wait (outage), so that a
    /// restart finds them.
    pub journal: std::path::PathBuf,
}

impl Default for Dialog {
    fn default() -> Self {
        Dialog {
            timeout: Duration::from_secs(12 * 3600),
            persist: true,
            persist_interval: Duration::from_millis(100),
            table: "siplb_dialogs".to_owned(),
            journal: "siplb-dialogs.journal".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Failover {
    pub full_reply: Reply,
    /// Failover never disables a group below this many enabled destinations.
    pub min_enabled: u32,
    /// Consecutive failover-triggering failures before a destination is disabled.
    pub failures_to_disable: u32,
}

impl Default for Failover {
    fn default() -> Self {
        Failover {
            full_reply: Reply {
                code: 500,
                reason: "Service full".to_owned(),
            },
            min_enabled: 1,
            failures_to_disable: 1,
        }
    }
}

/// siplb's own overload control (RFC 7339, server side).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Overload {
    /// When the core is busier than `busy_target`: ask callers that announce overload
    /// control for fewer new calls, and turn away that share of the others' new calls.
    pub feedback: bool,
    /// The percentage of wall time the core thread may spend handling input.
    pub busy_target: u8,
    /// How long a reduction holds at a caller unless renewed (`oc-validity`).
    #[serde(with = "duration")]
    pub validity: Duration,
}

impl Default for Overload {
    fn default() -> Self {
        let core = siplb_proxy::OwnOverloadSettings::default();
        Overload {
            feedback: core.feedback,
            busy_target: (core.target * 100.0).round() as u8,
            validity: core.validity,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    pub webhook: Option<String>,
}

/// The line of a section's `[name]` header, for errors about its keys (1 when absent).
fn section_line(text: &str, name: &str) -> usize {
    let header = format!("[{name}]");
    text.lines()
        .position(|l| l.trim() == header)
        .map_or(1, |i| i + 1)
}

impl Config {
    /// Parses and validates a configuration text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate(text)?;
        Ok(config)
    }

    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text)
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_TOML)
    }

    /// Routes in the order they are tried.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter().map(|r| r.get_ref())
    }

    /// What the proxy core runs on: the routes compiled by validation, and the
    /// sections it needs in its own types.
    pub fn settings(&self) -> Settings {
        let t = &self.transaction;
        Settings {
            listen: self.sip.listen.clone(),
            aliases: self
                .cluster
                .as_ref()
                .map_or_else(Vec::new, |c| c.addresses.clone()),
            timers: siplb_txn::Timers {
                t2: t.t2,
                t4: t.t4,
                invite_timeout: t.invite_timeout,
                trying_after: t.trying_after,
                ..siplb_txn::Timers::with_t1(t.t1)
            },
            dialog_timeout: self.dialog.timeout,
            full_reply: (
                self.failover.full_reply.code,
                self.failover.full_reply.reason.clone(),
            ),
            min_enabled: usize::try_from(self.failover.min_enabled).unwrap_or(usize::MAX),
            failures_to_disable: self.failover.failures_to_disable,
            routes: self.compiled_routes.clone(),
            limits: siplb_sip::Limits {
                max_message_size: self.sip.max_message_size,
                ..siplb_sip::Limits::default()
            },
            probing: siplb_proxy::Probing {
                interval: self.probing.interval,
                method: self.probing.method.clone(),
                from: self.probing.from.clone(),
                reply_codes: self.probing.reply_codes.clone(),
                timeout: self.probing.timeout,
                failures_to_disable: self.probing.failures_to_disable,
                successes_to_enable: self.probing.successes_to_enable,
            },
            // A cluster stores its answered calls in the shared store for adoption.
            persist_dialogs: self.dialog.persist || self.cluster.is_some(),
            store_after: self.dialog.persist_interval,
            max_calls: self.sip.max_calls,
            max_transactions: self.sip.max_transactions,
            overload: siplb_proxy::OwnOverloadSettings {
                feedback: self.overload.feedback,
                target: f64::from(self.overload.busy_target) / 100.0,
                validity: self.overload.validity,
            },
        }
    }

    fn validate(&mut self, text: &str) -> Result<(), ConfigError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let invalid = |line: usize, message: String| ConfigError::Invalid { line, message };
        if self.dns.timeout.is_zero() || self.dns.timeout > Duration::from_secs(30) {
            return Err(invalid(
                section_line(text, "dns"),
                "dns.timeout: must be above 0 and at most 30s".into(),
            ));
        }
        if let Some(problem) = self.cluster.as_ref().and_then(Cluster::problem) {
            return Err(invalid(section_line(text, "cluster"), problem));
        }
        let tls_listener = self
            .sip
            .listen
            .iter()
            .any(|l| l.transport == Transport::Tls);
        if self.tls.certificate.is_some() != self.tls.private_key.is_some() {
            return Err(invalid(
                section_line(text, "tls"),
                "tls.certificate and tls.private_key go together".into(),
            ));
        }
        if tls_listener && self.tls.certificate.is_none() {
            return Err(invalid(
                section_line(text, "sip"),
                "sip.listen: a tls: listener needs tls.certificate and tls.private_key".into(),
            ));
        }
        if self.tls.verify_client && self.tls.ca_certificates.is_none() {
            return Err(invalid(
                section_line(text, "tls"),
                "tls.verify_client needs tls.ca_certificates".into(),
            ));
        }
        if self.sip.listen.is_empty() {
            return Err(invalid(
                1,
                "sip.listen: at least one listener is required".into(),
            ));
        }
        if !(1024..=1_048_576).contains(&self.sip.max_message_size) {
            return Err(invalid(
                1,
                "sip.max_message_size: must be between 1024 and 1048576".into(),
            ));
        }
        if self
            .management
            .listen
            .parse::<std::net::SocketAddr>()
            .is_err()
        {
            return Err(invalid(
                1,
                format!(
                    "management.listen: `{}` is not an address:port",
                    self.management.listen
                ),
            ));
        }
        if let Some(token) = &self.management.token {
            // The value itself is never echoed: it is a secret.
            let problem = if token.is_empty() {
                Some("must not be empty".to_owned())
            } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
                Some("must be printable ASCII without spaces".to_owned())
            } else if token.len() > MAX_TOKEN_LEN {
                Some(format!("must be at most {MAX_TOKEN_LEN} characters"))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(invalid(1, format!("management.token: {problem}")));
            }
        }
        for code in &self.probing.reply_codes {
            if !(100..700).contains(code) {
                return Err(invalid(
                    1,
                    format!("probing.reply_codes: {code} is not a SIP status code"),
                ));
            }
        }
        if !route::is_token(&self.probing.method) {
            return Err(invalid(
                1,
                format!(
                    "probing.method: `{}` is not a SIP method",
                    self.probing.method
                ),
            ));
        }
        if let Err(e) = siplb_sip::Uri::parse(&self.probing.from) {
            return Err(invalid(
                1,
                format!(
                    "probing.from: `{}` is not a SIP URI: {e}",
                    self.probing.from
                ),
            ));
        }
        if self.probing.interval > Duration::ZERO && self.probing.timeout.is_zero() {
            return Err(invalid(1, "probing.timeout: must be above zero".into()));
        }
        if !(10..=99).contains(&self.overload.busy_target) {
            return Err(invalid(
                section_line(text, "overload"),
                "overload.busy_target: must be a percentage between 10 and 99".into(),
            ));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(3600))
            .contains(&self.overload.validity)
        {
            return Err(invalid(
                section_line(text, "overload"),
                "overload.validity: must be between 100ms and 1h".into(),
            ));
        }
        if self.probing.failures_to_disable == 0 || self.probing.successes_to_enable == 0 {
            return Err(invalid(1, "probing: thresholds must be at least 1".into()));
        }
        if self.failover.failures_to_disable == 0 {
            return Err(invalid(
                1,
                "failover.failures_to_disable: must be at least 1".into(),
            ));
        }
        self.failover
            .full_reply
            .check("failover.full_reply")
            .map_err(|m| invalid(1, m))?;
        if self.transaction.t1.is_zero() || self.transaction.t2 < self.transaction.t1 {
            return Err(invalid(
                1,
                "transaction: t1 must be above zero and t2 at least t1".into(),
            ));
        }
        if self.transaction.trying_after > Duration::from_millis(200) {
            return Err(invalid(
                section_line(text, "transaction"),
                "transaction.trying_after: at most 200ms (RFC 3261 17.2.1); 0s sends the 100 Trying at once".into(),
            ));
        }
        if self.dialog.persist_interval.is_zero()
            || self.dialog.persist_interval > Duration::from_secs(60)
        {
            return Err(invalid(
                1,
                "dialog.persist_interval: must be above zero and at most 60s".into(),
            ));
        }
        if self.sip.max_calls == 0 || self.sip.max_transactions == 0 {
            return Err(invalid(
                1,
                "sip.max_calls and sip.max_transactions: must be above zero".into(),
            ));
        }
        if self.tcp.max_connections == 0
            || self.tcp.max_connections_per_source == 0
            || self.tcp.idle_timeout.is_zero()
            || self.tcp.message_timeout.is_zero()
        {
            return Err(invalid(
                1,
                "tcp: limits and timeouts must be above zero".into(),
            ));
        }
        if self.transaction.invite_timeout.is_zero() {
            return Err(invalid(
                1,
                "transaction.invite_timeout: must be above zero".into(),
            ));
        }
        let mut compiled = Vec::with_capacity(self.routes.len());
        for (i, route) in self.routes.iter().enumerate() {
            compiled.push(route.get_ref().compile().map_err(|m| {
                invalid(
                    line_of(route.span().start),
                    format!("route #{}: {m}", i + 1),
                )
            })?);
        }
        self.compiled_routes = compiled;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
