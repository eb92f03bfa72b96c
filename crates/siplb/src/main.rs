//! The `siplb` binary: command-line entry point.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use siplb_config::{Action, Config};

#[derive(Debug, Parser)]
#[command(name = "siplb", version, about = "A load-aware SIP load balancer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file without starting anything.
    Check {
        /// Configuration file (TOML); the embedded default when omitted.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn load(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| format!("{}: {e}", p.display())),
        None => Config::embedded_default().map_err(|e| format!("embedded default: {e}")),
    }
}

fn check(config: &Config) {
    let listen: Vec<String> = config.sip.listen.iter().map(ToString::to_string).collect();
    println!("listen: {}", listen.join(", "));
    println!(
        "database: {} (table {})",
        config.database.url, config.database.table
    );
    println!("management: {}", config.management.listen);
    for (i, route) in config.routes().enumerate() {
        let action = match route.action() {
            Some(Action::Balance(b)) => format!(
                "balance group {} resources {:?} flags {:?}",
                b.group, b.resources, b.flags
            ),
            Some(Action::CountAndRelay { count, relay }) => format!(
                "count group {} resources {:?}, relay to {relay}",
                count.group, count.resources
            ),
            Some(Action::Relay(relay)) => format!("relay to {relay}"),
            Some(Action::Reply(r)) => format!("reply {} {}", r.code, r.reason),
            None => "no action".to_owned(),
        };
        println!("route #{}: {action}", i + 1);
    }
    println!("configuration OK");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match load(config.as_ref()) {
            Ok(c) => {
                check(&c);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("siplb: {e}");
                ExitCode::from(2)
            }
        },
    }
}
