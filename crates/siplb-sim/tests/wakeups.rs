//! How often the proxy's own timers would wake a sleeping core, per call. At a low
//! call rate each such wake-up costs the core thread a sleep and a wake of its own,
//! which on a virtual machine is most of what a message costs; see
//! docs/BENCHMARKS-HISTORY.md ("Issue 19, fourth round").

#![allow(clippy::panic)]

use siplb_sim::{Answer, Call, Ending, Knobs, Net, Script, Target};

/// Calls set up and ended one after another at `per_second`, each answered at once and
/// hung up by its caller.
fn steady_calls(count: u32, per_second: u32) -> Script {
    let calls = (0..count)
        .map(|i| Call {
            at_ms: 1000 + i * 1000 / per_second,
            caller: 0,
            tcp: false,
            target: Target::Vm,
            rr_aware: true,
            preloaded_route: false,
            ending: Ending::Bye(10),
            answers: vec![Answer::Ok {
                ring: Some(10),
                answer: 20,
            }],
        })
        .collect();
    Script {
        seed: 3,
        net: Net::default(),
        config: Knobs {
            probing: false,
            ..Knobs::default()
        },
        calls,
        ops: Vec::new(),
        outages: Vec::new(),
        hostile: Vec::new(),
    }
}

/// Every call leaves four transactions lingering (its INVITE's and its BYE's, each a
/// server and a client side) whose timers only end them: they share wake-ups rather
/// than wake the core four times a call. The run's end checks still hold (every
/// transaction and call gone, every load released).
#[test]
fn lingering_transactions_share_wake_ups() {
    let calls = 600;
    let report = match siplb_sim::run(&steady_calls(calls, 100)) {
        Ok(report) => report,
        Err(f) => panic!("{f}"),
    };
    assert_eq!(report.answered, calls as usize, "{report:?}");
    let per_call = report.timer_wakes as f64 / f64::from(calls);
    assert!(
        per_call < 0.5,
        "{} timer wake-ups for {calls} calls ({per_call:.2} a call)",
        report.timer_wakes
    );
}
