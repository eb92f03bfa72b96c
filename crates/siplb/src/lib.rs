//! siplb's parts above the libraries: the plan a configuration compiles to, the
//! wiring `siplb run` starts (database, persistence, management interface, the SIP
//! core on its thread), and the command-line helpers. A library so that the
//! end-to-end tests start the SIP core through the same wiring as `siplb run`.

mod cluster;
pub mod ctl;
mod journal;
mod metrics;
mod names;
mod persist;
pub mod plan;
pub mod run;
mod tls;
mod webhook;

/// Prints to standard output. A reader that stops early (`siplb ctl lb_list | head`)
/// is no error: what it did not read is simply not needed.
pub fn out(text: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("stdout: {e}")),
        _ => Ok(()),
    }
}
