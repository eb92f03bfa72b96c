//! The live dashboard in a real browser: headless Chromium opens `GET /` of a running
//! siplb with SIPp calls up, and what it shows must be what `lb_list` says; its buttons
//! must change what `lb_list` says. The screenshot is the one the README shows
//! (`SIPLB_SCREENSHOT=path` writes it there too).

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    dead_code
)]

mod browser;
mod harness;

use std::net::SocketAddr;
use std::time::Duration;

use browser::Browser;
use harness::{
    Node, VM_ROUTE, ctl, destination_table, ip, node_config, scratch, uac_to, uas_at, wait_until,
};
use serde_json::Value;

const TEST: u8 = 78;

/// What the page must show for each destination, from `lb_list`: id, state, and
/// "load / max" per resource.
fn expected_rows(list: &Value) -> Value {
    let rows: Vec<Value> = list["Destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let state = if d["enabled"] != "yes" {
                "disabled"
            } else if d["draining"] == true {
                "draining"
            } else {
                "enabled"
            };
            let resources: Vec<Value> = d["Resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    Value::from(format!(
                        "{} {} / {}",
                        r["name"].as_str().unwrap(),
                        r["load"],
                        r["max"]
                    ))
                })
                .collect();
            serde_json::json!({ "id": d["id"], "state": state, "resources": resources })
        })
        .collect();
    Value::from(rows)
}

/// The same, read from the page's table.
const SHOWN_ROWS: &str = r#"JSON.stringify([...document.querySelectorAll("tr.dest")].map((tr) => ({
  id: Number(tr.dataset.id),
  state: tr.querySelector("[data-state]").className.replace("state ", ""),
  resources: [...tr.querySelectorAll(".res")].map((r) => r.children[0].textContent + " " + r.children[2].textContent),
})))"#;

fn lb_list(mi: &str) -> Value {
    serde_json::from_str(&ctl(mi, &["lb_list"])).unwrap()
}

/// Waits until the page shows exactly what `lb_list` says.
fn page_matches_lb_list(page: &mut Browser, mi: &str) {
    let mut last = (String::new(), Value::Null);
    let shown_equals_expected = |page: &mut Browser, last: &mut (String, Value)| {
        let expected = expected_rows(&lb_list(mi));
        let shown = page
            .eval(SHOWN_ROWS)
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let same = serde_json::from_str::<Value>(&shown).ok() == Some(expected.clone());
        *last = (shown, expected);
        same
    };
    let start = std::time::Instant::now();
    while !shown_equals_expected(page, &mut last) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the page shows {}\nlb_list says {}",
            last.0,
            last.1
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_dashboard_shows_lb_list_and_its_buttons_change_it() {
    let Some(chromium) = browser::executable() else {
        siplb_testkit::skip("no chromium (Debian package chromium; or set SIPLB_CHROMIUM)");
        return;
    };
    let dir = scratch("dashboard-78");
    let url = format!("sqlite://{}", dir.join("siplb.db").display());
    let hosts: Vec<_> = (11..=14).map(|h| ip(TEST, h)).collect();
    destination_table(
        &url,
        "load_balancer",
        &[
            (hosts[0], "vm=10;pstn=5"),
            (hosts[1], "vm=20"),
            (hosts[2], "vm=8"),
            (hosts[3], "vm=4;pstn=10"),
        ],
    );
    let sip = SocketAddr::new(ip(TEST, 1), 5060);
    let mi_listen = SocketAddr::new(ip(TEST, 1), 8888);
    let mi = format!("http://{mi_listen}/mi");
    let config = node_config(
        &dir,
        &format!("listen = [\"udp:{sip}\"]\ndrain = \"1s\""),
        &url,
        mi_listen,
        &format!("dashboard_writes = true\n{VM_ROUTE}"),
    );
    let node = Node::start(&config, dir.join("siplb.log"));
    let _destinations = uas_at(&dir, &hosts);
    // Twelve voicemail calls held up while the page is watched, and three calls no
    // route takes (refused by siplb: the rejections chart).
    let held = uac_to(
        &dir,
        "held",
        sip,
        ip(TEST, 100),
        5060,
        "VM_1",
        (12, 40, 40_000),
    );
    let refused = uac_to(
        &dir,
        "refused",
        sip,
        ip(TEST, 101),
        5060,
        "nobody",
        (3, 10, 100),
    )
    .finish(Duration::from_secs(20));
    assert_eq!(refused.failed_calls, 3, "{}", refused.output);
    wait_until(Duration::from_secs(10), || {
        lb_list(&mi)["Destinations"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|d| d["Resources"].as_array().unwrap().clone())
            .filter(|r| r["name"] == "vm")
            .map(|r| r["load"].as_u64().unwrap())
            .sum::<u64>()
            == 12
    });

    let mut page = Browser::launch(&chromium, &dir);
    page.navigate(&format!("http://{mi_listen}/"));
    page.wait_for(
        "document.querySelectorAll('tr.dest').length === 4",
        Duration::from_secs(15),
    );
    page_matches_lb_list(&mut page, &mi);
    assert_eq!(
        page.eval("document.getElementById('calls-up').textContent"),
        "12"
    );
    assert_eq!(page.eval("window.siplb.writable"), true);

    // The charts' samples add up to what happened: 12 calls routed, 3 refused.
    page.wait_for(
        "window.siplb.samples.reduce((n, s) => n + s.calls, 0) > 11.5",
        Duration::from_secs(5),
    );
    let routed = page.eval("window.siplb.samples.reduce((n, s) => n + s.calls, 0)");
    let refused = page.eval("window.siplb.samples.reduce((n, s) => n + s.rejected, 0)");
    assert!((routed.as_f64().unwrap() - 12.0).abs() < 0.5, "{routed}");
    assert!((refused.as_f64().unwrap() - 3.0).abs() < 0.5, "{refused}");

    // Buttons: disable destination 2, drain destination 3, resize destination 1's vm.
    page.click(r#"[data-toggle="2"]"#);
    wait_until(Duration::from_secs(5), || {
        lb_list(&mi)["Destinations"][1]["enabled"] == "no"
    });
    page.click(r#"[data-drain="3"]"#);
    wait_until(Duration::from_secs(5), || {
        lb_list(&mi)["Destinations"][2]["draining"] == true
    });
    page.type_into(r#"[data-resize-value="1"]"#, "77");
    page.click(r#"[data-resize="1"]"#);
    wait_until(Duration::from_secs(5), || {
        lb_list(&mi)["Destinations"][0]["Resources"][0]["max"] == 77
    });
    page_matches_lb_list(&mut page, &mi);
    // The operator's change is among the status events the page lists.
    page.wait_for(
        "document.getElementById('events').textContent.includes('#2 disabled (operator')",
        Duration::from_secs(5),
    );
    assert_eq!(
        page.eval("document.getElementById('message').textContent"),
        ""
    );

    let png = page.screenshot();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    std::fs::write(dir.join("dashboard.png"), &png).unwrap();
    if let Some(path) = std::env::var_os("SIPLB_SCREENSHOT") {
        std::fs::write(path, &png).unwrap();
    }
    drop(page);
    drop(held);
    drop(node);
}

/// A siplb on 127.0.`test`.1 with two destinations (no SIPp needed: nothing is called),
/// its management interface configured by `management` (extra lines of
/// `[management]`).
fn quiet_node(test: u8, management: &str) -> (Node, SocketAddr, String, std::path::PathBuf) {
    let dir = scratch(&format!("dashboard-{test}"));
    let url = format!("sqlite://{}", dir.join("siplb.db").display());
    destination_table(
        &url,
        "load_balancer",
        &[(ip(test, 11), "vm=10"), (ip(test, 12), "vm=20")],
    );
    let sip = SocketAddr::new(ip(test, 1), 5060);
    let mi_listen = SocketAddr::new(ip(test, 1), 8888);
    let config = node_config(
        &dir,
        &format!("listen = [\"udp:{sip}\"]\ndrain = \"1s\""),
        &url,
        mi_listen,
        management,
    );
    let node = Node::start(&config, dir.join("siplb.log"));
    (node, mi_listen, format!("http://{mi_listen}/mi"), dir)
}

#[test]
fn with_a_token_the_page_asks_for_it_and_without_one_it_only_watches() {
    let Some(chromium) = browser::executable() else {
        siplb_testkit::skip("no chromium (Debian package chromium; or set SIPLB_CHROMIUM)");
        return;
    };
    // With a token: the page loads, finds /events closed to it, asks for the token,
    // and once given it shows the rows and its buttons act.
    let token = "dash-b0ard-Token";
    let (node, mi_listen, mi, dir) = quiet_node(79, &format!("token = \"{token}\""));
    let mut page = Browser::launch(&chromium, &dir);
    page.navigate(&format!("http://{mi_listen}/"));
    page.wait_for(
        "getComputedStyle(document.getElementById('login')).display !== 'none'",
        Duration::from_secs(10),
    );
    assert_eq!(page.eval("document.querySelectorAll('tr.dest').length"), 0);
    page.type_into("#token", token);
    page.click("#login button");
    page.wait_for(
        "document.querySelectorAll('tr.dest').length === 2",
        Duration::from_secs(10),
    );
    page.click(r#"[data-toggle="1"]"#);
    let with_token = |args: &[&str]| {
        let out = harness::ctl_command(&mi, args)
            .args(["--token", token])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_until(Duration::from_secs(5), || {
        with_token(&["lb_status", "1"]).contains(r#""enable":"no""#)
    });
    drop(page);
    drop(node);

    // Without a token or dashboard_writes: the rows show, the buttons do not, the page
    // says how to turn them on, and a write it sends anyway is refused.
    let (node, mi_listen, mi, dir) = quiet_node(80, "");
    let mut page = Browser::launch(&chromium, &dir);
    page.navigate(&format!("http://{mi_listen}/"));
    page.wait_for(
        "document.querySelectorAll('tr.dest').length === 2",
        Duration::from_secs(10),
    );
    assert_eq!(page.eval("window.siplb.writable"), false);
    assert_eq!(
        page.eval("document.querySelector('[data-toggle=\"1\"]').offsetParent === null"),
        true,
        "buttons hidden"
    );
    assert_eq!(
        page.eval("getComputedStyle(document.getElementById('readonly-note')).display"),
        "block"
    );
    page.eval("rpc('lb_status', ['1', '0']).then(() => true)");
    page.wait_for(
        "document.getElementById('message').textContent.includes('Read-only')",
        Duration::from_secs(5),
    );
    assert_eq!(ctl(&mi, &["lb_status", "1"]), r#"{"enable":"yes"}"#);
    drop(page);
    drop(node);
}
