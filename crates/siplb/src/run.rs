//! `siplb run` and `siplb db`: wiring the configuration, the database, the balancer,
//! the proxy core and the transports together.

use std::sync::Arc;

use siplb_balance::Balancer;
use siplb_config::{Action, Config};
use siplb_net::Bound;
use siplb_proxy::Proxy;
use siplb_store::{Backend, DialogWriter, RetryPolicy, Store, connect_with_retry, redact};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::plan::Plan;
use crate::{cluster, journal, metrics, persist, webhook};

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("siplb")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIPLB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub fn db_init(url: &str, table: &str, examples: bool) -> Result<(), String> {
    runtime()?.block_on(async {
        let store = Store::connect(url, table)
            .await
            .map_err(|e| format!("{}: {e}", redact(url)))?;
        let report = if examples {
            store.init_with_examples().await
        } else {
            store.init().await
        }
        .map_err(|e| format!("{}: {e}", redact(url)))?;
        store.close().await;
        crate::out(&format!(
            "table {table}: {}, {} example rows inserted",
            if report.table_created {
                "created"
            } else {
                "already there"
            },
            report.examples_inserted
        ))
    })
}

/// Loads the destination table into `balancer`; rows that cannot be used are logged
/// with their id and fault, the others load.
async fn load_table(store: &Store, balancer: &Balancer) -> Result<usize, String> {
    let loaded = store.load().await.map_err(|e| e.to_string())?;
    for problem in &loaded.problems {
        error!("destination table: {problem}");
    }
    let count = loaded.rows.len();
    for e in balancer.reload(loaded.rows) {
        error!("destination table: {e}");
    }
    Ok(count)
}

/// Routes naming a group or resource the table lacks: a warning, not an error, as the
/// table changes at runtime.
fn warn_about_routes(config: &Config, balancer: &Balancer) {
    let table = balancer.snapshot();
    for (i, route) in config.routes().enumerate() {
        let asks: Vec<(u32, &str)> = match route.action() {
            Some(Action::Balance(b)) => std::iter::once((b.group, b.resources.as_str()))
                .chain(b.overflow.iter().map(|o| (o.group, o.resources.as_str())))
                .collect(),
            Some(Action::CountAndRelay { count, .. }) => {
                vec![(count.group, count.resources.as_str())]
            }
            _ => continue,
        };
        for (group, resources) in asks {
            if !table.iter().any(|d| d.group == group) {
                warn!(
                    "route #{}: group {group} has no destinations in the table",
                    i + 1
                );
            }
            for name in resources
                .split(';')
                .map(str::trim)
                .filter(|n| !n.is_empty())
            {
                if !table
                    .iter()
                    .any(|d| d.resources.iter().any(|r| &*r.name == name))
                {
                    warn!("route #{}: no destination offers resource {name}", i + 1);
                }
            }
        }
    }
}

/// Reads the `[tls]` files as `run` does (for `siplb check`).
pub fn check_tls(config: &Config) -> Result<(), String> {
    let files = crate::tls::tls_files(&config.tls);
    siplb_net::Tls::load(&files, Arc::new(|_| None)).map(|_| ())
}

pub fn run(plan: Plan, embedded: bool) -> Result<(), String> {
    init_logging();
    let Plan {
        config,
        settings,
        dialog_table,
        tcp,
        ..
    } = plan;
    runtime()?.block_on(async move {
        let url = config.database.url.clone();
        let store = connect_with_retry(
            &url,
            &config.database.table,
            &RetryPolicy::default(),
            |event| warn!("{event}"),
        )
        .await
        .map_err(|e| format!("database {}: {e}", redact(&url)))?;
        if store.backend() == Backend::Sqlite {
            // The embedded default brings the tutorial's example destinations; any other
            // SQLite file gets the table only.
            let report = if embedded {
                store.init_with_examples().await
            } else {
                store.init().await
            }
            .map_err(|e| format!("database {}: {e}", redact(&url)))?;
            if report.table_created {
                info!(
                    examples = report.examples_inserted,
                    "created the destination table"
                );
            }
        }
        let balancer = Arc::new(Balancer::new());
        let count = load_table(&store, &balancer)
            .await
            .map_err(|e| format!("cannot load the destination table: {e}"))?;
        info!(rows = count, database = %redact(&url), "destination table loaded");
        warn_about_routes(&config, &balancer);
        // The core first: its relay targets named by host join the names to resolve.
        let mut proxy = Proxy::new(settings.clone(), Arc::clone(&balancer));
        let names = crate::names::start_resolver(&balancer, &config.dns).await?;
        let tls_files = crate::tls::tls_files(&config.tls);
        let tls = crate::tls::start_tls(&balancer, &tls_files)?;
        let refresh = Refresh {
            names,
            tls: Arc::clone(&tls),
            tls_files,
        };
        let store = Arc::new(store);
        let (control, control_rx) = siplb_net::control();
        let mut reloader = table_reloader(&balancer, &store, &refresh);
        // [cluster]: from here on the balancer reports every allocation to the node's
        // driver, and the node's calls stored in the cluster come back first.
        let mut node = None;
        let mut cluster_links = None;
        let mut restored_from_cluster = false;
        if let Some(c) = &config.cluster {
            let settings = cluster::settings(c, &settings.listen);
            let (reservations_tx, reservations) = tokio::sync::mpsc::unbounded_channel();
            let handovers = Arc::new(siplb_proxy::Handovers::default());
            proxy.set_handovers(Arc::clone(&handovers));
            let hooks = cluster::hooks(reservations_tx, &control, &reloader, &handovers);
            let started = siplb_cluster::Cluster::start(settings.clone(), Arc::clone(&balancer), hooks)?;
            match siplb_cluster::stored_calls(&settings).await {
                Ok(calls) => {
                    let restored = proxy.restore_calls(std::time::Instant::now(), calls);
                    info!(calls = restored, node = c.node, "calls stored in the cluster restored");
                    restored_from_cluster = true;
                }
                Err(error) => warn!(%error, "cluster store unreachable at start: routing on this node's own view until it is back"),
            }
            cluster_links = Some(siplb_net::ClusterLinks {
                reservations,
                dialog_changes: cluster::dialog_sink(&started),
            });
            reloader = cluster::shared_reloader(reloader, started.clone());
            node = Some(started);
        }
        // Calls stored before a restart come back, with their load, before any traffic.
        let persist_stats = Arc::new(persist::PersistStats::default());
        let mut persister = None;
        let mut dialog_changes = None;
        if config.dialog.persist {
            let table = dialog_table;
            let journal = journal::Journal::new(&config.dialog.journal);
            store
                .init_dialogs(&table)
                .await
                .map_err(|e| format!("cannot read stored calls: {e}"))?;
            let writer = DialogWriter::new(Arc::clone(&store), &table, Handle::current())
                .map_err(|e| format!("cannot store calls: {e}"))?;
            let (writer, journal) = if restored_from_cluster {
                // The cluster's copy is the one that knows what other nodes adopted; the
                // journal is written by the first batch.
                (writer, journal)
            } else {
                // What the last run could not write goes first, before anything is read.
                let (writer, journal) = persist::replay_journal(writer, journal)
                    .await
                    .map_err(|e| format!("cannot read stored calls: {e}"))?;
                let restored = persist::restore(&store, &table, &mut proxy)
                    .await
                    .map_err(|e| format!("cannot read stored calls: {e}"))?;
                info!(
                    calls = restored,
                    table = table.as_str(),
                    "stored calls restored"
                );
                (writer, journal)
            };
            let (tx, rx) = std::sync::mpsc::channel();
            dialog_changes = Some(tx);
            let (interval, stats) = (config.dialog.persist_interval, Arc::clone(&persist_stats));
            persister = Some(
                std::thread::Builder::new()
                    .name("siplb-persist".into())
                    .spawn(move || persist::run(writer, interval, rx, journal, stats))
                    .map_err(|e| format!("cannot start the thread that stores calls: {e}"))?,
            );
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        #[cfg(unix)]
        reload_on_hangup(Arc::clone(&reloader), stop_rx.clone())?;
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let mi_addr = &config.management.listen;
        let mi_listener = tokio::net::TcpListener::bind(mi_addr)
            .await
            .map_err(|e| format!("cannot listen on management.listen {mi_addr}: {e}"))?;
        info!("management interface on http://{mi_addr}/mi");
        if config.management.dashboard {
            info!("dashboard on http://{mi_addr}/");
        }
        if config.management.token.is_none()
            && mi_listener
                .local_addr()
                .is_ok_and(|a| !a.ip().is_loopback())
        {
            warn!(
                "the management interface listens beyond loopback ({mi_addr}) without [management] token: anyone who reaches it can disable destinations"
            );
        }
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let event_log = Arc::new(siplb_mi::EventLog::default());
        let mut mi = management_state(&balancer, reloader, &control, &events_tx, &persist_stats, node.as_ref())
            .with_token(config.management.token.clone())
            .with_allowed_hosts(config.management.allowed_hosts.clone())
            .with_draining_flag(Arc::clone(&draining))
            .with_dashboard(siplb_mi::Dashboard {
                enabled: config.management.dashboard,
                writes: config.management.dashboard_writes,
            })
            .with_event_log(Arc::clone(&event_log));
        if let Some(node) = &node {
            mi = mi.with_cluster(Arc::new(cluster::ClusterInfo(node.clone())));
            node.serve();
        }
        // The management interface outlives the drain: an operator watches the calls
        // that are left, or ends them, until the SIP core has stopped.
        let (mi_stop_tx, mut mi_stop) = watch::channel(false);
        let mi_task = tokio::spawn(siplb_mi::serve(mi_listener, Arc::new(mi), async move {
            let _ = mi_stop.wait_for(|stop| *stop).await;
        }));
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("shutting down");
            draining.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = stop_tx.send(true);
        });
        tokio::spawn(publish_status_changes(
            events_rx,
            config.events.webhook.clone(),
            event_log,
        ));
        let links = CoreLinks {
            status_changes: Some(events_tx),
            control: Some(control_rx),
            dialog_changes,
            tls: Some(tls),
            cluster: cluster_links,
        };
        let served = match start_core(&settings, tcp, config.sip.drain, proxy, links, stop_rx) {
            Ok(core) => core.finished().await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let _ = mi_stop_tx.send(true);
        served?;
        // The core's sender is gone: the persister writes what is left and ends.
        if let Some(persister) = persister {
            let _ = tokio::task::spawn_blocking(move || persister.join()).await;
        }
        let _ = mi_task.await;
        if let Ok(store) = Arc::try_unwrap(store) {
            store.close().await;
        }
        Ok(())
    })
}

/// Where the SIP core reports to, and asks are answered from.
#[derive(Debug, Default)]
pub struct CoreLinks {
    pub status_changes: Option<tokio::sync::mpsc::UnboundedSender<siplb_proxy::StatusChange>>,
    pub control: Option<siplb_net::ControlReceiver>,
    pub dialog_changes: Option<std::sync::mpsc::Sender<siplb_proxy::DialogChange>>,
    pub tls: Option<Arc<siplb_net::Tls>>,
    pub cluster: Option<siplb_net::ClusterLinks>,
}

/// Binds the listeners the settings name and runs the SIP core on them, on a thread
/// and runtime of its own, until `stop` turns true and the drain is over: the core of
/// `siplb run` (which the end-to-end tests start the same way).
pub fn start_core(
    settings: &siplb_proxy::Settings,
    tcp: siplb_net::TcpLimits,
    drain: std::time::Duration,
    proxy: Proxy,
    links: CoreLinks,
    stop: watch::Receiver<bool>,
) -> Result<siplb_net::Core, String> {
    let bound = Bound::bind(&settings.listen).map_err(|e| format!("cannot listen on {e}"))?;
    for e in bound.local_endpoints() {
        info!("listening on {e}");
    }
    let options = siplb_net::Options {
        limits: settings.limits,
        tcp,
        drain,
        status_changes: links.status_changes,
        control: links.control,
        dialog_changes: links.dialog_changes,
        tls: links.tls,
        cluster: links.cluster,
    };
    siplb_net::spawn(proxy, bound, options, stop)
        .map_err(|e| format!("cannot start the proxy core: {e}"))
}

/// The management interface over the balancer, the database (for `lb_reload`) and
/// the proxy core (calls and counters, asked through `control`).
fn management_state(
    balancer: &Arc<Balancer>,
    reloader: Arc<dyn siplb_mi::Reloader>,
    control: &siplb_net::Control,
    events: &tokio::sync::mpsc::UnboundedSender<siplb_proxy::StatusChange>,
    persist_stats: &Arc<persist::PersistStats>,
    node: Option<&siplb_cluster::Cluster>,
) -> siplb_mi::MiState {
    let calls = CoreCalls(control.clone());
    let metrics = {
        let (control, persist_stats) = (control.clone(), Arc::clone(persist_stats));
        let node = node.cloned();
        move || {
            let (control, persist_stats) = (control.clone(), Arc::clone(&persist_stats));
            let node = node.clone();
            async move {
                let core = control
                    .report()
                    .await
                    .map(|r| metrics::render(&r, &persist_stats))
                    .unwrap_or_default();
                match node {
                    Some(node) => core + &cluster::render(&node.view()),
                    None => core,
                }
            }
        }
    };
    let pulse = {
        let control = control.clone();
        move || {
            let control = control.clone();
            async move { control.report().await.map(|r| metrics::pulse(&r)) }
        }
    };
    let listener = {
        let (balancer, events) = (Arc::clone(balancer), events.clone());
        move |id: u32, enabled: bool| {
            if let Some(d) = balancer.destination(id) {
                let _ = events.send(siplb_proxy::StatusChange {
                    id,
                    group: d.group,
                    uri: d.uri.to_string(),
                    status: siplb_proxy::NewStatus::enabled(enabled),
                    source: siplb_proxy::ChangeSource::Operator,
                    reason: "lb_status".to_owned(),
                });
            }
        }
    };
    siplb_mi::MiState::new(Arc::clone(balancer))
        .with_version(format!("siplb {}", env!("CARGO_PKG_VERSION")))
        .with_reloader(reloader)
        .with_calls(Arc::new(calls))
        .with_metrics(Arc::new(metrics))
        .with_pulse(Arc::new(pulse))
        .with_status_listener(Arc::new(listener))
}

/// Re-reads the destination table into the balancer (`lb_reload`, SIGHUP).
/// What a reload (`lb_reload`, SIGHUP) refreshes beside the table: new names are
/// looked up at once, certificates read again.
#[derive(Clone, Debug)]
pub(crate) struct Refresh {
    pub(crate) names: siplb_dns::Kick,
    pub(crate) tls: Arc<siplb_net::Tls>,
    pub(crate) tls_files: siplb_net::TlsFiles,
}

impl Refresh {
    pub(crate) fn after_reload(&self) -> Result<(), String> {
        self.names.names_changed();
        if self.tls_files.certificate.is_some() || self.tls_files.ca_certificates.is_some() {
            self.tls.reload(&self.tls_files)?;
            info!("TLS certificates read again");
        }
        Ok(())
    }
}

/// New host names start resolving at once; certificates are read again (new
/// connections get them, established ones go on).
fn table_reloader(
    balancer: &Arc<Balancer>,
    store: &Arc<Store>,
    refresh: &Refresh,
) -> Arc<dyn siplb_mi::Reloader> {
    let (balancer, store, refresh) = (Arc::clone(balancer), Arc::clone(store), refresh.clone());
    Arc::new(move || {
        let (balancer, store, refresh) =
            (Arc::clone(&balancer), Arc::clone(&store), refresh.clone());
        async move {
            // Read everything first: on failure the table in force stays.
            let count = load_table(&store, &balancer).await?;
            info!(rows = count, "destination table reloaded");
            refresh.after_reload()?;
            Ok(())
        }
    })
}

/// SIGHUP re-reads the destination table, as `lb_reload` does (`systemctl reload`).
#[cfg(unix)]
fn reload_on_hangup(
    reloader: Arc<dyn siplb_mi::Reloader>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    // Registered before the listeners open: from here on SIGHUP no longer ends siplb.
    let mut hangups =
        signal(SignalKind::hangup()).map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                hangup = hangups.recv() => if hangup.is_none() { return },
                // Stopping: the store is released, so it can be closed cleanly.
                _ = stop.wait_for(|stop| *stop) => return,
            }
            info!("SIGHUP: reloading the destination table");
            if let Err(error) = reloader.reload().await {
                warn!(%error, "reload on SIGHUP failed; the table in force stays");
            }
        }
    });
    Ok(())
}

/// The proxy core's calls, for `lb_calls` and `lb_end_call`.
struct CoreCalls(siplb_net::Control);

impl siplb_mi::CallsSource for CoreCalls {
    fn calls(&self) -> siplb_mi::BoxFuture<'_, Vec<siplb_mi::CallInfo>> {
        Box::pin(async move {
            self.0
                .calls()
                .await
                .into_iter()
                .filter_map(|c| {
                    Some(siplb_mi::CallInfo {
                        call_id: c.call_id,
                        destination_id: c.destination?,
                        uri: c.uri.unwrap_or_default(),
                        resources: c.resources,
                        address: Some(c.peer.to_string()),
                        state: c.state.to_owned(),
                        age_secs: c.age.as_secs(),
                    })
                })
                .collect()
        })
    }

    fn end_call<'a>(&'a self, call_id: &'a str) -> siplb_mi::BoxFuture<'a, usize> {
        Box::pin(self.0.end_call(call_id))
    }

    fn drain_started(&self) -> siplb_mi::BoxFuture<'_, ()> {
        Box::pin(self.0.check_drains())
    }
}

/// Publishes destination status changes: one JSON line each to the webhook when one is
/// configured, and in the log otherwise (the core has already logged the change at
/// info with its reason).
async fn publish_status_changes(
    mut changes: tokio::sync::mpsc::UnboundedReceiver<siplb_proxy::StatusChange>,
    webhook: Option<String>,
    dashboard: Arc<siplb_mi::EventLog>,
) {
    while let Some(change) = changes.recv().await {
        let event = webhook::event(&change);
        let line = event.to_string();
        dashboard.push(event);
        match &webhook {
            None => info!(event = %line, "status event"),
            Some(url) => {
                if let Err(e) = webhook::post(url, &line).await {
                    warn!(url, error = %e, event = %line, "status event not delivered to the webhook");
                }
            }
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
