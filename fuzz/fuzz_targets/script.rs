#![no_main]
//! The call simulator with a script the fuzzer builds: callers, destinations,
//! network faults, operator actions and hostile messages in any combination. Any
//! broken invariant (a load left behind, an INVITE without its final, a destination
//! blamed for nothing, a message to a host outside the world...) is a crash; a step
//! that never ends is a timeout.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|script: siplb_sim::Script| {
    let mut script = script;
    // Bounded runs: many short ones explore more than a few long ones.
    script.calls.truncate(48);
    script.ops.truncate(16);
    script.outages.truncate(4);
    script.hostile.truncate(12);
    for c in &mut script.calls {
        c.answers.truncate(4);
    }
    if let Err(failure) = siplb_sim::run(&script) {
        panic!(
            "{failure}\nscript: {}",
            serde_json::to_string(&script).unwrap_or_default()
        );
    }
});
