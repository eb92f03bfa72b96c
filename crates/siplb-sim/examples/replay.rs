//! Replays a script saved as JSON (what a failing run prints): `cargo run --release
//! -p siplb-sim --example replay -- FILE`. `SIPLB_SIM_TRACE` filters its trace.

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: replay SCRIPT.json");
        std::process::exit(2);
    };
    let script: siplb_sim::Script = match std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(2);
        }
    };
    match siplb_sim::run(&script) {
        Ok(r) => println!("ok {r:?}"),
        Err(f) => {
            println!("{f}");
            std::process::exit(1);
        }
    }
}
