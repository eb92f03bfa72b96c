//! How often the proxy's own timers would wake a sleeping core, per call. At a low
//! call rate each such wake-up costs the core thread a sleep and a wake of its own,
//! which on a virtual machine is most of what a message costs; see
//! docs/BENCHMARKS-HISTORY.md ("Issue 19, fourth round").

#![allow(clippy::panic)]

use siplb_sim::{Answer, Call, Ending, Knobs, Net, Script, Target};

/// Calls set up and ended one after another at `per_second`, each answered at once and
/// hung up by its caller after `hold_ms`.
fn steady_calls(count: u32, per_second: u32, hold_ms: u16) -> Script {
    let calls = (0..count)
        .map(|i| Call {
            at_ms: 1000 + i * 1000 / per_second,
            caller: 0,
            tcp: false,
            target: Target::Vm,
            rr_aware: true,
            preloaded_route: false,
            ending: Ending::Bye(hold_ms),
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
/// Timer wake-ups per call of `calls` calls at `per_second`, each held `hold_ms`.
fn wake_ups_per_call(calls: u32, per_second: u32, hold_ms: u16) -> f64 {
    let report = match siplb_sim::run(&steady_calls(calls, per_second, hold_ms)) {
        Ok(report) => report,
        Err(f) => panic!("{f}"),
    };
    assert_eq!(report.answered, calls as usize, "{report:?}");
    report.timer_wakes as f64 / f64::from(calls)
}

/// Every call leaves four transactions lingering (its INVITE's and its BYE's, each a
/// server and a client side) whose timers only end them: they share wake-ups rather
/// than wake the core four times a call. The run's end checks still hold (every
/// transaction and call gone, every load released).
#[test]
fn lingering_transactions_share_wake_ups() {
    let per_call = wake_ups_per_call(600, 100, 10);
    assert!(per_call < 0.5, "{per_call:.2} timer wake-ups a call");
}

/// A call that outlasts the store interval (100 ms) is handed to be stored by a sweep
/// on the lingers' grid, so storing calls wakes the core at most once per tick of the
/// grid, not once per call: with a sweep at each call's own deadline, these calls woke
/// the core 1.55 times a call, against 0.64.
/// (At 37 calls/s, so that no call's deadline falls on another's message by the
/// schedule's own period; the world's destinations hold 15 calls at once.)
#[test]
fn storing_calls_shares_wake_ups() {
    let per_call = wake_ups_per_call(600, 37, 150);
    assert!(per_call < 1.0, "{per_call:.2} timer wake-ups a call");
}
