//! Calls survive a restart: answered calls are stored in the database and restored, so
//! loads stay right and BYEs of calls set up before a restart are routed after it. Run
//! on SQLite, MariaDB and PostgreSQL (the machine's servers, as the storage tests).

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    dead_code
)]

mod harness;

use std::net::SocketAddr;

use std::process::Command;
use std::time::Duration;

use harness::{
    Node, Relay, destination_table, http_get, http_get_reply, ip, scratch, sql, uac_to, uas_at,
    wait_until,
};

fn loads(mi: &str) -> Vec<u64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let list = rt.block_on(siplb_mi::call(mi, "lb_list", &[])).unwrap();
    list["Destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["Resources"][0]["load"].as_u64().unwrap())
        .collect()
}

fn restart_keeps_calls(test: u8, url: &str) {
    let dir = scratch(&format!("restart-{test}"));
    let table = format!("lbt_restart_{}_{test}", std::process::id());
    let dialogs = format!("lbd_restart_{}_{test}", std::process::id());
    let (d1, d2) = (ip(test, 11), ip(test, 12));
    destination_table(url, &table, &[(d1, "vm=50"), (d2, "vm=50")]);
    let sip = SocketAddr::new(ip(test, 1), 5060);
    let mi = format!("http://{}:8888/mi", ip(test, 1));
    let config = dir.join("siplb.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nlisten = [\"udp:{sip}\"]\ndrain = \"300ms\"\n[database]\nurl = \"{url}\"\ntable = \"{table}\"\n[management]\nlisten = \"{}:8888\"\n[probing]\ninterval = \"0s\"\n[dialog]\ntable = \"{dialogs}\"\npersist_interval = \"100ms\"\n[[route]]\nmatch = {{ ruri_user = \"^VM_\" }}\nbalance = {{ group = 1, resources = \"vm\", flags = \"s\" }}\n",
            ip(test, 1)
        ),
    )
    .unwrap();
    let _uas = uas_at(&dir, &[d1, d2]);
    let mut node = Node::start(&config, dir.join("siplb-1.log"));
    // 50 long calls; their BYEs come after two restarts.
    let calls = uac_to(
        &dir,
        "uac",
        sip,
        ip(test, 100),
        5062,
        "VM_1",
        (50, 50, 9000),
    );
    wait_until(Duration::from_secs(10), || {
        loads(&mi).iter().sum::<u64>() == 50
    });
    let before = loads(&mi);

    // Graceful restart: SIGTERM (the drain ends with calls up), then start again.
    std::thread::sleep(Duration::from_millis(300));
    node.signal("-TERM");
    let mut node = Node::start(&config, dir.join("siplb-2.log"));
    assert!(
        node.log_text().contains("stored calls restored calls=50"),
        "{}",
        node.log_text()
    );
    assert_eq!(
        loads(&mi),
        before,
        "the same loads after a graceful restart"
    );

    // Crash: kill -9, then start again. Everything was stored well over one batch
    // interval ago, so nothing is lost.
    std::thread::sleep(Duration::from_millis(300));
    node.signal("-KILL");
    let node = Node::start(&config, dir.join("siplb-3.log"));
    assert_eq!(loads(&mi), before, "the same loads after kill -9");

    // The calls' BYEs are routed by the restored calls, and every load returns to 0.
    let report = calls.finish(Duration::from_secs(40));
    assert!(report.success, "{}", report.output);
    assert_eq!(report.successful_calls, 50);
    wait_until(Duration::from_secs(5), || {
        loads(&mi).iter().all(|l| *l == 0)
    });
    drop(node);
    drop_tables(url, &[&table, &dialogs]);
}

#[test]
fn calls_survive_restarts_on_sqlite() {
    let dir = scratch("restart-db-21");
    let url = format!("sqlite://{}", dir.join("siplb.db").display());
    restart_keeps_calls(21, &url);
}

fn server_url(var: &str, default: &str) -> Option<String> {
    let server = siplb_testkit::db_server_of(var);
    if siplb_testkit::db_server_skipped(server) {
        siplb_testkit::skip(&format!(
            "SIPLB_SKIP_DB_TESTS: no {server} server to test against"
        ));
        return None;
    }
    Some(std::env::var(var).unwrap_or_else(|_| default.to_owned()))
}

#[test]
fn calls_survive_restarts_on_mariadb() {
    if let Some(url) = server_url("SIPLB_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test") {
        restart_keeps_calls(22, &url);
    }
}

#[test]
fn calls_survive_restarts_on_postgresql() {
    if let Some(url) = server_url(
        "SIPLB_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ) {
        restart_keeps_calls(23, &url);
    }
}

fn metric(test: u8, name: &str) -> f64 {
    let text = http_get((ip(test, 1), 8888), "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn a_database_outage_does_not_stop_routing() {
    let Some(direct) = server_url(
        "SIPLB_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ) else {
        return;
    };
    let test = 24;
    let dir = scratch("outage-24");
    let table = format!("lbt_outage_{}", std::process::id());
    let dialogs = format!("lbd_outage_{}", std::process::id());
    let d1 = ip(test, 11);
    destination_table(&direct, &table, &[(d1, "vm=50")]);
    let relay = Relay::start("127.0.0.1:5432".parse().unwrap());
    let url = direct.replace("127.0.0.1:5432", &format!("127.0.0.1:{}", relay.port));
    let sip = SocketAddr::new(ip(test, 1), 5060);
    let mi = format!("http://{}:8888/mi", ip(test, 1));
    let config = dir.join("siplb.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nlisten = [\"udp:{sip}\"]\ndrain = \"300ms\"\n[database]\nurl = \"{url}\"\ntable = \"{table}\"\n[management]\nlisten = \"{}:8888\"\n[probing]\ninterval = \"0s\"\n[dialog]\ntable = \"{dialogs}\"\n[[route]]\nmatch = {{ ruri_user = \"^VM_\" }}\nbalance = {{ group = 1, resources = \"vm\" }}\n",
            ip(test, 1)
        ),
    )
    .unwrap();
    let _uas = uas_at(&dir, &[d1]);
    let node = Node::start(&config, dir.join("siplb-1.log"));
    let uac =
        |name: &str, port: u16| uac_to(&dir, name, sip, ip(test, 100), port, "VM_1", (5, 20, 7000));
    let first = uac("uac-a", 5063);
    wait_until(Duration::from_secs(10), || loads(&mi) == [5]);
    // Answered calls are handed to be stored once they have lasted the interval.
    std::thread::sleep(Duration::from_millis(1000));
    wait_until(Duration::from_secs(5), || {
        metric(test, "siplb_dialog_store_pending") == 0.0
    });
    let written = |change: &str| {
        metric(
            test,
            &format!("siplb_dialog_store_changes_total{{change=\"{change}\"}}"),
        )
    };
    assert_eq!(
        (written("upsert"), written("delete")),
        (5.0, 0.0),
        "each call up written once"
    );

    // The database goes away: calls are still routed, writes queue, the outage shows.
    relay.cut();
    let second = uac("uac-b", 5064);
    wait_until(Duration::from_secs(10), || loads(&mi) == [10]);
    wait_until(Duration::from_secs(10), || {
        metric(test, "siplb_dialog_store_failures_total") > 0.0
    });
    assert!(metric(test, "siplb_dialog_store_pending") > 0.0);
    assert!(
        node.log_text().contains("cannot store calls"),
        "{}",
        node.log_text()
    );

    // It comes back: the queue is written, so a crash now loses nothing. (A call is
    // handed to be stored once it has lasted the 100 ms interval, on a 100 ms grid:
    // within 300 ms after the restore, every call answered before it has been; a
    // second leaves room for a slow machine.)
    relay.restore();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(metric(test, "siplb_dialog_store_waiting"), 0.0);
    wait_until(Duration::from_secs(15), || {
        metric(test, "siplb_dialog_store_pending") == 0.0
    });
    let mut node = node;
    node.signal("-KILL");
    let node = Node::start(&config, dir.join("siplb-2.log"));
    assert_eq!(loads(&mi), [10]);
    assert!(first.finish(Duration::from_secs(40)).success);
    assert!(second.finish(Duration::from_secs(40)).success);
    wait_until(Duration::from_secs(5), || loads(&mi) == [0]);
    drop(node);
    drop_tables(&direct, &[&table, &dialogs]);
}

/// A crash while the database is away loses no call: calls answered during the
/// outage wait in the local journal (synced to disk), which the next start writes to
/// the database before it restores the calls.
fn crash_during_outage(test: u8, url: &str, cut: &dyn Fn(), heal: &dyn Fn()) {
    let dir = scratch(&format!("journal-{test}"));
    let _ = std::fs::remove_file(dir.join("journal"));
    let table = format!("lbt_journal_{}_{test}", std::process::id());
    let dialogs = format!("lbd_journal_{}_{test}", std::process::id());
    let d1 = ip(test, 11);
    destination_table(url, &table, &[(d1, "vm=50")]);
    let sip = SocketAddr::new(ip(test, 1), 5060);
    let mi = format!("http://{}:8888/mi", ip(test, 1));
    let config = dir.join("siplb.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nlisten = [\"udp:{sip}\"]\ndrain = \"300ms\"\n[database]\nurl = \"{url}\"\ntable = \"{table}\"\n[management]\nlisten = \"{}:8888\"\n[probing]\ninterval = \"0s\"\n[dialog]\ntable = \"{dialogs}\"\njournal = \"{}\"\n[[route]]\nmatch = {{ ruri_user = \"^VM_\" }}\nbalance = {{ group = 1, resources = \"vm\" }}\n",
            ip(test, 1),
            dir.join("journal").display()
        ),
    )
    .unwrap();
    let _uas = uas_at(&dir, &[d1]);
    let node = Node::start(&config, dir.join("siplb-1.log"));
    let uac = |name: &str, port: u16| {
        uac_to(&dir, name, sip, ip(test, 100), port, "VM_1", (5, 20, 25000))
    };
    let first = uac("uac-a", 5063);
    wait_until(Duration::from_secs(10), || loads(&mi) == [5]);
    // Answered calls are handed to be stored once they have lasted the interval.
    std::thread::sleep(Duration::from_millis(1000));
    wait_until(Duration::from_secs(5), || {
        metric(test, "siplb_dialog_store_pending") == 0.0
    });

    cut();
    let second = uac("uac-b", 5064);
    wait_until(Duration::from_secs(10), || loads(&mi) == [10]);
    // Every call has been handed to be stored after an interval and a grid step, and
    // is past the core's channel a tick or two later; then wait until all that is
    // pending sits in the journal on disk.
    std::thread::sleep(Duration::from_millis(1000));
    wait_until(Duration::from_secs(15), || {
        let journaled = metric(test, "siplb_dialog_store_journaled");
        journaled >= 5.0 && metric(test, "siplb_dialog_store_pending") == journaled
    });
    // Crash with the database still away.
    let mut node = node;
    node.signal("-KILL");
    heal();
    let node = Node::start(&config, dir.join("siplb-2.log"));
    assert!(
        node.log_text().contains("written to the database"),
        "{}",
        node.log_text()
    );
    assert_eq!(
        loads(&mi),
        [10],
        "the calls answered during the outage are back"
    );
    assert!(first.finish(Duration::from_secs(60)).success);
    assert!(second.finish(Duration::from_secs(60)).success);
    wait_until(Duration::from_secs(5), || loads(&mi) == [0]);
    assert!(
        !dir.join("journal").exists(),
        "the journal is emptied once written"
    );
    drop(node);
    drop_tables(url, &[&table, &dialogs]);
}

#[test]
fn a_crash_during_a_postgresql_outage_loses_no_call() {
    let Some(direct) = server_url(
        "SIPLB_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ) else {
        return;
    };
    let relay = Relay::start("127.0.0.1:5432".parse().unwrap());
    let url = direct.replace("127.0.0.1:5432", &format!("127.0.0.1:{}", relay.port));
    crash_during_outage(27, &url, &|| relay.cut(), &|| relay.restore());
}

#[test]
fn a_crash_while_sqlite_is_locked_loses_no_call() {
    let dir = scratch("journal-lock-28");
    let file = dir.join("lb.db");
    let _ = std::fs::remove_file(&file);
    let url = format!("sqlite://{}", file.display());
    // Another process holds the database with an exclusive lock, as a backup or a
    // careless operator would.
    let locker = std::sync::Mutex::new(None::<std::process::Child>);
    let lock = || {
        let script = format!(
            "import sqlite3,sys,time\nc=sqlite3.connect({:?}, isolation_level=None, timeout=30)\nc.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\nsys.stdin.read()\n",
            file.display().to_string()
        );
        let mut child = Command::new("python3")
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "locked");
        *locker.lock().unwrap() = Some(child);
    };
    let unlock = || {
        if let Some(mut child) = locker.lock().unwrap().take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    };
    crash_during_outage(28, &url, &lock, &unlock);
}

/// SIGTERM with a call up: new calls are refused while it drains, and the management
/// interface keeps answering (showing the call's load) until the SIP core has stopped.
#[test]
fn the_management_interface_answers_while_calls_drain() {
    let test = 25;
    let dir = scratch("drain-mi-25");
    let url = format!("sqlite://{}", dir.join("siplb.db").display());
    let d1 = ip(test, 11);
    destination_table(&url, "load_balancer", &[(d1, "vm=5")]);
    let sip = SocketAddr::new(ip(test, 1), 5060);
    let mi = format!("http://{}:8888/mi", ip(test, 1));
    let config = dir.join("siplb.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nlisten = [\"udp:{sip}\"]\ndrain = \"20s\"\n[database]\nurl = \"{url}\"\n[management]\nlisten = \"{}:8888\"\n[probing]\ninterval = \"0s\"\n[[route]]\nmatch = {{ ruri_user = \"^VM_\" }}\nbalance = {{ group = 1, resources = \"vm\" }}\n",
            ip(test, 1)
        ),
    )
    .unwrap();
    let _uas = uas_at(&dir, &[d1]);
    let mut node = Node::start(&config, dir.join("siplb.log"));
    // One call of 4 s.
    let call = uac_to(&dir, "uac", sip, ip(test, 100), 5062, "VM_1", (1, 1, 4000));
    wait_until(Duration::from_secs(5), || loads(&mi) == [1]);

    node.terminate();
    wait_until(Duration::from_secs(5), || {
        node.log_text().contains("draining")
    });
    // Draining: the management interface still answers, with the call still counted,
    // and health checks are told to move traffic away.
    assert_eq!(loads(&mi), [1]);
    assert!(node.is_running());
    let health = http_get_reply((ip(test, 1), 8888), "/health");
    assert!(
        health.starts_with("HTTP/1.1 503") && health.ends_with("draining"),
        "{health}"
    );

    // The call ends normally; then the core stops, and with it everything else.
    let report = call.finish(Duration::from_secs(20));
    assert!(report.success, "{}", report.output);
    let status = node.wait(Duration::from_secs(10));
    assert!(status.success(), "{}", node.log_text());
    assert!(
        node.log_text().contains("SIP transports stopped"),
        "{}",
        node.log_text()
    );
}

fn drop_tables(url: &str, tables: &[&str]) {
    let drops: Vec<String> = tables.iter().map(|t| format!("DROP TABLE {t}")).collect();
    let drops: Vec<&str> = drops.iter().map(String::as_str).collect();
    sql(url, &drops);
}
