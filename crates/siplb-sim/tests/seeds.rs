//! Random scripts through the simulator: a fixed set of seeds in every test run, and
//! a long soak (`cargo test -p siplb-sim --release -- --ignored soak`) of at least a
//! million calls. A failing seed is shrunk and printed as a script to replay.

#![allow(clippy::panic, clippy::expect_used)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use siplb_sim::{Report, Script};

/// Runs a script on a thread of its own, so that a core that loops fails the test
/// instead of hanging it.
fn run_guarded(script: Script, limit: Duration) -> Result<Report, String> {
    let (tx, rx) = mpsc::channel();
    let s = script.clone();
    std::thread::spawn(move || {
        let _ = tx.send(siplb_sim::run(&s).map_err(|f| f.to_string()));
    });
    match rx.recv_timeout(limit) {
        Ok(result) => result,
        Err(_) => Err(format!(
            "the run did not end within {limit:?}: a step that does not end?\nscript: {}",
            serde_json::to_string(&script).unwrap_or_default()
        )),
    }
}

fn check(seed: u64, calls: usize) -> Report {
    let script = Script::random(seed, calls);
    match run_guarded(script.clone(), Duration::from_secs(120)) {
        Ok(report) => report,
        Err(first) => {
            let minimal = siplb_sim::shrink(&script)
                .map(|(s, f)| {
                    format!(
                        "{f}\nminimal script: {}",
                        serde_json::to_string(&s).unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            panic!(
                "seed {seed} ({calls} calls):\n{first}\n{minimal}\nreplay: save the script as JSON and run \
                 `cargo run -p siplb-sim --example replay -- FILE`"
            );
        }
    }
}

#[test]
fn fixed_seeds() {
    let mut calls = 0;
    let mut answered = 0;
    for seed in 1..=40 {
        let r = check(seed, 60);
        calls += r.calls;
        answered += r.answered;
    }
    assert_eq!(calls, 40 * 60);
    assert!(
        answered > calls / 3,
        "the scripts answer calls: {answered} of {calls}"
    );
}

/// At least a million simulated calls, seeds from `SIPLB_SIM_FIRST_SEED` (1), on
/// every core. `SIPLB_SIM_CALLS` sets the total.
#[test]
#[ignore = "long: run with --release -- --ignored"]
fn soak() {
    let target: usize = std::env::var("SIPLB_SIM_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let first: u64 = std::env::var("SIPLB_SIM_FIRST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    const PER_SCRIPT: usize = 300;
    let scripts = target.div_ceil(PER_SCRIPT) as u64;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let started = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            std::thread::spawn(move || {
                let mut total = Report::default();
                let mut seed = first + w;
                while seed < first + scripts {
                    let r = check(seed, PER_SCRIPT);
                    total.calls += r.calls;
                    total.answered += r.answered;
                    total.rejected += r.rejected;
                    total.messages += r.messages;
                    total.lost += r.lost;
                    total.disabled += r.disabled;
                    seed += workers;
                }
                total
            })
        })
        .collect();
    let mut total = Report::default();
    for h in handles {
        let r = h.join().expect("a soak worker failed");
        total.calls += r.calls;
        total.answered += r.answered;
        total.rejected += r.rejected;
        total.messages += r.messages;
        total.lost += r.lost;
        total.disabled += r.disabled;
    }
    println!(
        "soak: {} scripts, {} calls ({} answered, {} rejected finals), {} messages ({} lost), {} disables, no invariant broken, {:.0?}",
        scripts,
        total.calls,
        total.answered,
        total.rejected,
        total.messages,
        total.lost,
        total.disabled,
        started.elapsed()
    );
    assert!(total.calls >= target);
}
