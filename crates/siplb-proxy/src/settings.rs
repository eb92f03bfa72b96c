//! The parts of the configuration the proxy core runs on, compiled once: routes with
//! their resource requests interned and flags parsed, reply texts, timers.

use std::time::Duration;

use siplb_balance::{Flags, ResourceRequest};
use siplb_config::{Action, Config, Match};
use siplb_sip::Limits;
use siplb_txn::Timers;

use crate::addr::{Peer, TargetError, peer_of_uri_text};

/// What the configuration holds that the core cannot run on.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("route #{route}: {key}: {source}")]
    Resources {
        route: usize,
        key: &'static str,
        source: siplb_balance::ResourceListError,
    },
    #[error("route #{route}: balance.flags: {source}")]
    Flags {
        route: usize,
        source: siplb_balance::FlagsError,
    },
    #[error("route #{route}: relay: {source}")]
    Relay { route: usize, source: TargetError },
    #[error("route #{route}: no action")]
    NoAction { route: usize },
}

/// What a route does, ready to run.
#[derive(Clone, Debug)]
pub(crate) enum RouteAction {
    Balance {
        group: u32,
        request: ResourceRequest,
        flags: Flags,
    },
    CountAndRelay {
        group: u32,
        request: ResourceRequest,
        relay: Peer,
    },
    Relay(Peer),
    Reply {
        code: u16,
        reason: String,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct CompiledRoute {
    pub(crate) matcher: Match,
    pub(crate) action: RouteAction,
}

/// Everything the proxy core needs from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub(crate) listen: Vec<Peer>,
    pub(crate) timers: Timers,
    pub(crate) dialog_timeout: Duration,
    pub(crate) full_reply: (u16, String),
    pub(crate) min_enabled: usize,
    pub(crate) failures_to_disable: u32,
    pub(crate) routes: Vec<CompiledRoute>,
    pub(crate) limits: Limits,
    pub(crate) probing: Probing,
    pub(crate) persist_dialogs: bool,
    pub(crate) max_calls: usize,
    pub(crate) max_transactions: usize,
}

/// OPTIONS probing of destinations (SPEC section 4).
#[derive(Clone, Debug)]
pub(crate) struct Probing {
    /// Zero: no probing.
    pub(crate) interval: Duration,
    pub(crate) method: String,
    pub(crate) from: String,
    /// Codes that count as success besides 200.
    pub(crate) reply_codes: Vec<u16>,
    pub(crate) timeout: Duration,
    pub(crate) failures_to_disable: u32,
    pub(crate) successes_to_enable: u32,
}

impl Settings {
    /// The listeners SIP is served on.
    pub fn listeners(&self) -> Vec<Peer> {
        self.listen.clone()
    }

    /// Bounds on what a peer may make siplb buffer or index (the transports frame
    /// streams with them).
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Where `relay` routes send: with the destination table, the only places new
    /// calls go.
    pub(crate) fn relay_targets(&self) -> impl Iterator<Item = &Peer> + '_ {
        self.routes.iter().filter_map(|r| match &r.action {
            RouteAction::CountAndRelay { relay, .. } | RouteAction::Relay(relay) => Some(relay),
            _ => None,
        })
    }

    /// Compiles a validated configuration; fails only on what validation cannot see
    /// (a relay target that is not an IP address).
    pub fn from_config(config: &Config) -> Result<Settings, SettingsError> {
        let mut routes = Vec::new();
        for (i, route) in config.routes().enumerate() {
            let route_no = i + 1;
            let resources = |key: &'static str, list: &str| {
                ResourceRequest::parse(list).map_err(|source| SettingsError::Resources {
                    route: route_no,
                    key,
                    source,
                })
            };
            let relay_peer = |relay: &str| {
                peer_of_uri_text(relay).map_err(|source| SettingsError::Relay {
                    route: route_no,
                    source,
                })
            };
            let action = match route.action() {
                Some(Action::Balance(b)) => RouteAction::Balance {
                    group: b.group,
                    request: resources("balance.resources", &b.resources)?,
                    flags: b.flags.parse().map_err(|source| SettingsError::Flags {
                        route: route_no,
                        source,
                    })?,
                },
                Some(Action::CountAndRelay { count, relay }) => RouteAction::CountAndRelay {
                    group: count.group,
                    request: resources("count.resources", &count.resources)?,
                    relay: relay_peer(relay)?,
                },
                Some(Action::Relay(relay)) => RouteAction::Relay(relay_peer(relay)?),
                Some(Action::Reply(r)) => RouteAction::Reply {
                    code: r.code,
                    reason: r.reason.clone(),
                },
                None => return Err(SettingsError::NoAction { route: route_no }),
            };
            routes.push(CompiledRoute {
                matcher: route.matcher.clone(),
                action,
            });
        }
        let t = &config.transaction;
        let timers = Timers {
            t2: t.t2,
            t4: t.t4,
            invite_timeout: t.invite_timeout,
            ..Timers::with_t1(t.t1)
        };
        Ok(Settings {
            listen: config
                .sip
                .listen
                .iter()
                .map(|l| Peer {
                    transport: l.transport,
                    addr: l.addr,
                })
                .collect(),
            timers,
            dialog_timeout: config.dialog.timeout,
            full_reply: (
                config.failover.full_reply.code,
                config.failover.full_reply.reason.clone(),
            ),
            min_enabled: usize::try_from(config.failover.min_enabled).unwrap_or(usize::MAX),
            failures_to_disable: config.failover.failures_to_disable,
            routes,
            limits: Limits {
                max_message_size: config.sip.max_message_size,
                ..Limits::default()
            },
            persist_dialogs: config.dialog.persist,
            max_calls: config.sip.max_calls,
            max_transactions: config.sip.max_transactions,
            probing: Probing {
                interval: config.probing.interval,
                method: config.probing.method.clone(),
                from: config.probing.from.clone(),
                reply_codes: config.probing.reply_codes.clone(),
                timeout: config.probing.timeout,
                failures_to_disable: config.probing.failures_to_disable,
                successes_to_enable: config.probing.successes_to_enable,
            },
        })
    }
}
