//! Runs random scripts and prints how each seed did; with `SHRINK=1`, the minimal
//! script and trace of each failure (`SIPLB_SIM_TRACE=text` keeps only the trace
//! lines holding `text`, a Call-ID for instance).
//!
//! `cargo run --release -p siplb-sim --example explore -- FIRST_SEED COUNT CALLS`

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let first = args.first().copied().unwrap_or(1);
    let count = args.get(1).copied().unwrap_or(20);
    let calls = usize::try_from(args.get(2).copied().unwrap_or(100)).unwrap_or(100);
    let shrink = std::env::var_os("SHRINK").is_some();
    let traced = std::env::var_os("SIPLB_SIM_TRACE").is_some();
    let mut failed = 0;
    for seed in first..first + count {
        let script = siplb_sim::Script::random(seed, calls);
        match siplb_sim::run(&script) {
            Ok(r) => println!("seed {seed}: ok {r:?}"),
            Err(f) => {
                failed += 1;
                println!("seed {seed}: FAILED {}", f.violation);
                if traced {
                    println!("{f}");
                }
                if shrink && let Some((min, f)) = siplb_sim::shrink(&script) {
                    println!("{f}");
                    println!("{}", serde_json::to_string(&min).unwrap_or_default());
                }
            }
        }
    }
    println!("{failed} of {count} failed");
}
