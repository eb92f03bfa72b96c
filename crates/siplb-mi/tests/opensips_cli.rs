//! Compatibility with the real `opensips-cli` (PyPI `opensipscli`): the tool calls `which`
//! before each command, sends every value as a string and an empty object for no params.
//!
//! The executable is taken from `$OPENSIPS_CLI`, else from `PATH`; without it the test
//! reports itself skipped (see siplb-testkit), or fails where `SIPLB_REQUIRE_ALL_TESTS` is set
//! (CI). Install it with
//! `python3 -m venv /opt/opensips-cli && /opt/opensips-cli/bin/pip install opensipscli`
//! and point `OPENSIPS_CLI` at `/opt/opensips-cli/bin/opensips-cli`.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use common::Server;
use serde_json::{Value, json};

fn find_cli() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("OPENSIPS_CLI") {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("opensips-cli"))
        .find(|candidate| candidate.is_file())
}

async fn run(cli: &PathBuf, url: &str, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(cli);
    command
        .args(["-o", "communication_type=http", "-o"])
        .arg(format!("url={url}"))
        .args(["-x", "mi"])
        .args(args)
        // No user config may change what is sent or printed.
        .env("HOME", std::env::temp_dir())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("opensips-cli hung")
        .expect("opensips-cli did not start")
}

fn stdout_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "opensips-cli failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensips_cli_drives_siplb() {
    let Some(cli) = find_cli() else {
        siplb_testkit::skip(
            "no opensips-cli executable (set OPENSIPS_CLI or put it on PATH; `pip install opensipscli`)",
        );
        return;
    };
    let server = Server::start().await;
    let url = server.url();

    let output = run(&cli, &url, &["lb_list"]).await;
    let list = stdout_json(&output);
    assert_eq!(
        list,
        json!({"Destinations": [
            {"uri":"sip:127.0.0.1:5071","id":1,"group":1,"enabled":"yes","auto-reenable":"on",
             "Resources":[{"name":"vm","max":50,"load":0},{"name":"pstn","max":32,"load":0}],"probe_mode":0},
            {"uri":"sip:127.0.0.1:5072","id":2,"group":1,"enabled":"yes","auto-reenable":"on",
             "Resources":[{"name":"vm","max":100,"load":0}],"probe_mode":0},
            {"uri":"sip:127.0.0.1:5073","id":3,"group":1,"enabled":"yes","auto-reenable":"on",
             "Resources":[{"name":"vm","max":50,"load":0}],"probe_mode":0},
            {"uri":"sip:127.0.0.1:5074","id":4,"group":1,"enabled":"yes","auto-reenable":"on",
             "Resources":[{"name":"vm","max":10,"load":0},{"name":"pstn","max":64,"load":0}],"probe_mode":0}
        ]})
    );
    // The CLI prints keys in the order received: the reference's order.
    let text = String::from_utf8_lossy(&output.stdout);
    let first = text.find("\"uri\"").unwrap();
    let keys = [
        "\"id\"",
        "\"group\"",
        "\"enabled\"",
        "\"auto-reenable\"",
        "\"Resources\"",
    ];
    let mut last = first;
    for key in keys {
        let at = text[first..].find(key).unwrap() + first;
        assert!(at > last, "{key} out of order in\n{text}");
        last = at;
    }

    assert_eq!(
        stdout_json(&run(&cli, &url, &["lb_status", "2"]).await),
        json!({"enable": "yes"})
    );
    assert_eq!(
        stdout_json(
            &run(
                &cli,
                &url,
                &["lb_status", "destination_id=2", "new_status=0"]
            )
            .await
        ),
        json!("OK")
    );
    assert_eq!(
        stdout_json(&run(&cli, &url, &["lb_status", "destination_id=2"]).await),
        json!({"enable": "no"})
    );
    assert_eq!(
        stdout_json(&run(&cli, &url, &["lb_resize", "3", "vm", "60"]).await),
        json!("OK")
    );
    assert_eq!(server.balancer.destination(3).unwrap().resources[0].max, 60);
    assert_eq!(
        stdout_json(&run(&cli, &url, &["lb_reload"]).await),
        json!("OK")
    );
    assert_eq!(
        stdout_json(&run(&cli, &url, &["load_balancer:status", "4"]).await),
        json!({"enable": "yes"})
    );

    let failed = run(&cli, &url, &["lb_resize", "3", "foo", "60"]).await;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&failed.stdout),
        String::from_utf8_lossy(&failed.stderr)
    );
    assert!(
        said.contains("404: Destination has no such resource"),
        "unexpected: {said}"
    );
    server.stop().await;
}
