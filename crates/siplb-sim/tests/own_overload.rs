//! siplb's own overload control among simulated peers: a core that reports itself
//! saturated feeds back to the callers that announce overload control (odd callers;
//! the simulator checks every response to a caller for it) and sheds the others' new
//! calls, and every invariant still holds: calls end, loads return to 0.

#![allow(clippy::panic)]

use siplb_sim::Script;

#[test]
fn a_saturated_core_sheds_new_calls_and_breaks_no_invariant() {
    let (mut quiet, mut busy) = (0, 0);
    for seed in 1..=12 {
        let mut script = Script::random(seed, 120);
        script.config.core_busy_pct = 0;
        let calm = siplb_sim::run(&script).unwrap_or_else(|f| panic!("seed {seed}, quiet: {f}"));
        script.config.core_busy_pct = 100;
        let loaded = siplb_sim::run(&script).unwrap_or_else(|f| {
            panic!(
                "seed {seed}, saturated: {f}\nscript: {}",
                serde_json::to_string(&script).unwrap_or_default()
            )
        });
        assert_eq!(calm.calls, loaded.calls);
        quiet += calm.rejected;
        busy += loaded.rejected;
    }
    assert!(
        busy > quiet + 100,
        "saturated, more new calls are turned away: {busy} against {quiet}"
    );
}
