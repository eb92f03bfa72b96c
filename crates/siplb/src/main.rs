//! The `siplb` binary: command-line entry point.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use siplb::{ctl, out, plan, run};
use siplb_config::{Action, Config};

/// jemalloc rather than glibc's allocator, measured with `bench/compare`: the SIP core
/// allocates and frees small blocks for every message on a thread of its own, where
/// glibc's per-thread heap kept growing and shrinking (`mprotect` and `sysmalloc` were 5%
/// of the core's CPU at 3000 calls/s); jemalloc took 15-20% off the CPU per call there,
/// and returns the memory of a burst of calls to the system. (mimalloc was as fast but
/// doubled p99 call setup.)
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "siplb", version, about = "A load-aware SIP load balancer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the load balancer.
    Run {
        /// Configuration file (TOML); without it, the embedded default: SQLite file
        /// `siplb.db` with the tutorial's example destinations.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file without starting anything.
    Check {
        /// Configuration file (TOML); the embedded default when omitted.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Call a management method, like opensips-cli's `mi` (prints the JSON result).
    Ctl {
        /// Where the management interface listens.
        #[arg(long, default_value = siplb_mi::DEFAULT_URL)]
        url: String,
        /// Bearer token, for a server with `[management] token`; without this flag, the
        /// `SIPLB_MI_TOKEN` environment variable (preferred: arguments show in `ps`).
        #[arg(long)]
        token: Option<String>,
        /// Print the result on one line.
        #[arg(long)]
        compact: bool,
        /// With `lb_drain`: return once the destination carries no call, or fail (exit
        /// 1) with the load left when `--wait-timeout` runs out.
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits, e.g. `90s`, `30m`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        wait_timeout: std::time::Duration,
        /// Method, e.g. lb_list, lb_status, lb_drain, lb_resize, lb_reload, lb_calls, which.
        method: String,
        /// Parameters: all `name=value`, or all positional.
        params: Vec<String>,
    },
    /// Database administration.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Create the destination table (OpenSIPS schema version 3) if it does not exist.
    Init {
        /// sqlite://, mysql:// or postgres:// URL.
        #[arg(long)]
        database: String,
        #[arg(long, default_value = "load_balancer")]
        table: String,
        /// Also insert the tutorial's four example destinations into an empty table.
        #[arg(long)]
        examples: bool,
    },
}

fn load(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| format!("{}: {e}", p.display())),
        None => Config::embedded_default().map_err(|e| format!("embedded default: {e}")),
    }
}

fn check(config: &Config) -> Result<(), String> {
    let listen: Vec<String> = config.sip.listen.iter().map(ToString::to_string).collect();
    let mut text = format!(
        "listen: {}\ndatabase: {} (table {})\nmanagement: {}",
        listen.join(", "),
        siplb_store::redact(&config.database.url),
        config.database.table,
        config.management.listen
    );
    for (i, route) in config.routes().enumerate() {
        let action = match route.action() {
            Some(Action::Balance(b)) => {
                let mut text = format!(
                    "balance group {} resources {:?} flags {:?}",
                    b.group, b.resources, b.flags
                );
                for o in &b.overflow {
                    text.push_str(&format!(
                        ", overflow to group {} resources {:?} flags {:?}",
                        o.group, o.resources, o.flags
                    ));
                }
                text
            }
            Some(Action::CountAndRelay { count, relay }) => format!(
                "count group {} resources {:?}, relay to {relay}",
                count.group, count.resources
            ),
            Some(Action::Relay(relay)) => format!("relay to {relay}"),
            Some(Action::Reply(r)) => format!("reply {} {}", r.code, r.reason),
            None => "no action".to_owned(),
        };
        text.push_str(&format!("\nroute #{}: {action}", i + 1));
    }
    text.push_str("\nconfiguration OK");
    out(&text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // The same plan as `run` builds, so check finds the same faults.
        Command::Check { config } => load(config.as_ref())
            .and_then(plan::Plan::new)
            .and_then(|p| run::check_tls(&p.config).and_then(|()| check(&p.config))),
        Command::Run { config } => {
            let embedded = config.is_none();
            load(config.as_ref())
                .and_then(plan::Plan::new)
                .and_then(|p| run::run(p, embedded))
        }
        Command::Ctl {
            url,
            token,
            compact,
            wait,
            wait_timeout,
            method,
            params,
        } => {
            let token = token.or_else(|| {
                std::env::var("SIPLB_MI_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty())
            });
            let ctl = ctl::Ctl {
                url: &url,
                token: token.as_deref(),
                compact,
            };
            if wait {
                return match ctl.drain_and_wait(&method, &params, wait_timeout) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(ctl::WaitError::Usage(e)) => {
                        eprintln!("siplb: {e}");
                        ExitCode::from(2)
                    }
                    Err(ctl::WaitError::NotDrained(e)) => {
                        eprintln!("siplb: {e}");
                        ExitCode::from(1)
                    }
                };
            }
            ctl.call(&method, &params)
        }
        Command::Db {
            command:
                DbCommand::Init {
                    database,
                    table,
                    examples,
                },
        } => run::db_init(&database, &table, examples),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("siplb: {e}");
            ExitCode::from(2)
        }
    }
}
