//! Operator controls beyond the reference (SPEC section 8), end to end: siplb as a
//! process, SIPp callers and destinations, the command-line client and the webhook.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    dead_code
)]

mod harness;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use harness::{
    Lb, Node, Sipp, ctl, ctl_command, destination_table, http_get, ip, node_config, scratch,
    uac_to, uas_at, wait_until, webhook_receiver,
};
use siplb_balance::DestinationRow;

const ROUTES: &str =
    "[[route]]\nmatch = { ruri_user = \"^VM_\" }\nbalance = { group = 1, resources = \"vm\" }\n";

/// Destination `id` as `lb_list` shows it.
fn listed(mi: &str, id: u64) -> serde_json::Value {
    let list: serde_json::Value = serde_json::from_str(&ctl(mi, &["lb_list"])).unwrap();
    list["Destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .cloned()
        .unwrap()
}

/// `(load of destination 1, load of destination 2)` as `lb_list` shows them.
fn loads(mi: &str) -> (u64, u64) {
    let load = |id| listed(mi, id)["Resources"][0]["load"].as_u64().unwrap();
    (load(1), load(2))
}

fn draining(mi: &str, id: u64) -> bool {
    listed(mi, id)["draining"] == true
}

#[test]
fn a_drain_keeps_new_calls_away_and_wait_returns_when_the_last_call_ends() {
    let test = 40;
    let dir = scratch("controls-drain-40");
    let url = format!("sqlite://{}", dir.join("siplb.db").display());
    destination_table(
        &url,
        "load_balancer",
        &[(ip(test, 11), "vm=10"), (ip(test, 12), "vm=5")],
    );
    // The operator's lb_status, the drained destination, then an idle one drained.
    let (webhook, events) = webhook_receiver(ip(test, 1), 3);
    let addr = SocketAddr::new(ip(test, 1), 5060);
    let mi_listen = SocketAddr::new(ip(test, 1), 8888);
    let mi = format!("http://{mi_listen}/mi");
    let config = node_config(
        &dir,
        &format!("listen = [\"udp:{addr}\"]"),
        &url,
        mi_listen,
        &format!("[events]\nwebhook = \"http://{webhook}/events\"\n{ROUTES}"),
    );
    let node = Node::start(&config, dir.join("siplb.log"));
    let _uas = uas_at(&dir, &[ip(test, 11), ip(test, 12)]);

    // Two long calls, both on destination 1 (more room).
    let long = uac_to(
        &dir,
        "long",
        addr,
        ip(test, 100),
        5061,
        "VM_1",
        (2, 10, 3000),
    );
    wait_until(Duration::from_secs(5), || loads(&mi) == (2, 0));

    let started = Instant::now();
    let mut wait = ctl_command(&mi, &["lb_drain", "1", "--wait", "--wait-timeout", "30s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(3), || {
        ctl(&mi, &["lb_list"]).contains(r#""probe_mode":0,"draining":true"#)
    });
    // A reload keeps the drain.
    assert_eq!(ctl(&mi, &["lb_reload"]), r#""OK""#);
    assert!(draining(&mi, 1));

    // New calls go to destination 2 while the two calls on 1 go on.
    let new = uac_to(
        &dir,
        "new",
        addr,
        ip(test, 100),
        5062,
        "VM_1",
        (3, 20, 1500),
    );
    wait_until(Duration::from_secs(5), || loads(&mi) == (2, 3));
    assert!(wait.try_wait().unwrap().is_none(), "calls are still up");

    // A wait that runs out says what is left, with a non-zero exit.
    let out = ctl_command(&mi, &["lb_drain", "2", "--wait", "--wait-timeout", "300ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not drained") && err.contains("vm=3"), "{err}");
    // lb_status ID 1 ends that drain.
    assert!(draining(&mi, 2));
    assert_eq!(ctl(&mi, &["lb_status", "2", "1"]), r#""OK""#);
    assert!(!draining(&mi, 2));

    let report = long.finish(Duration::from_secs(20));
    assert!(report.success, "{}", report.output);
    assert!(new.finish(Duration::from_secs(20)).success);
    let out = wait.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "destination 1 drained"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "returned only once the long calls ended"
    );

    // A destination without calls is reported drained at once.
    wait_until(Duration::from_secs(5), || loads(&mi) == (0, 0));
    assert_eq!(ctl(&mi, &["lb_drain", "2"]), r#""OK""#);
    let events = events.join().unwrap();
    assert!(
        events[0].contains(r#""status":"enabled","id":2,"source":"operator""#),
        "{events:?}"
    );
    assert!(
        events[1].contains(r#""status":"drained","id":1,"source":"operator""#),
        "{events:?}"
    );
    assert!(
        events[2].contains(r#""status":"drained","id":2,"source":"operator""#),
        "{events:?}"
    );
    let metrics = http_get((ip(test, 1), 8888), "/metrics");
    assert!(
        metrics.contains(r#"siplb_status_changes_total{to="drained"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            r#"siplb_destination_draining{{id="1",group="1",uri="sip:{}:5060"}} 1"#,
            ip(test, 11)
        )),
        "{metrics}"
    );
    assert!(
        node.log_text()
            .contains("destination draining by the operator")
    );
}

#[test]
fn a_burst_splits_by_the_calls_per_second_cap_and_no_call_fails() {
    let lb = Lb::start(41, &[(1, "vm=1000", "uas"), (2, "vm=1000", "uas")], "", "");
    // The same table, with destination 1 (first on ties) capped at 20 new calls a second.
    let mut rows: Vec<DestinationRow> = [1u32, 2]
        .iter()
        .map(|&id| {
            DestinationRow::new(
                id,
                1,
                format!("sip:{}:5060", ip(41, 10 + id as u8)),
                "vm=1000",
            )
        })
        .collect();
    rows[0].attrs = Some("max_cps=20".into());
    assert!(lb.balancer.reload(rows).is_empty());
    let _uas = lb.start_destinations();

    // 200 calls at 100 a second, each held 6 s so that the loads show the split.
    let started = Instant::now();
    let burst = Sipp::uac(&lb, "VM_1", 200, 100, 6000, &[]);
    wait_until(Duration::from_secs(10), || lb.total_load("vm") == 200);
    let seconds = started.elapsed().as_secs_f64().ceil() as u32;
    let (capped, other) = (lb.load(1, "vm"), lb.load(2, "vm"));
    assert_eq!(capped + other, 200);
    assert!(
        (20..=20 * seconds).contains(&capped),
        "destination 1 took {capped} calls in {seconds} s at 20 a second"
    );
    let report = burst.finish(Duration::from_secs(30));
    assert!(report.success, "{}", report.output);
    assert_eq!(report.successful_calls, 200);
    assert_eq!(report.failed_calls, 0);
    assert!(
        lb.balancer.status(1).unwrap().enabled,
        "a cap is no failure"
    );
    wait_until(Duration::from_secs(5), || lb.total_load("vm") == 0);
}

const OVERFLOW_ROUTE: &str = "[[route]]\nmatch = { ruri_user = \"^OV_\" }\nbalance = { group = 1, resources = \"vm\", overflow = [{ group = 2, resources = \"vm\" }] }\n";

/// Destination 1 in group 1 and destination 2 in group 2, both `vm`.
fn two_groups(lb: &Lb, first: &str) {
    let row = |id: u32, group, resources| {
        DestinationRow::new(
            id,
            group,
            format!("sip:{}:5060", ip(lb.test, 10 + id as u8)),
            resources,
        )
    };
    assert!(
        lb.balancer
            .reload([row(1, 1, first), row(2, 2, "vm=10")])
            .is_empty()
    );
}

#[test]
fn calls_overflow_to_the_next_group_when_the_first_is_full() {
    let lb = Lb::start(
        42,
        &[(1, "vm=1", "uas"), (2, "vm=10", "uas")],
        OVERFLOW_ROUTE,
        "",
    );
    two_groups(&lb, "vm=1");
    let _uas = lb.start_destinations();
    let calls = Sipp::uac(&lb, "OV_1", 3, 10, 3000, &[]);
    wait_until(Duration::from_secs(5), || lb.total_load("vm") == 3);
    assert_eq!((lb.load(1, "vm"), lb.load(2, "vm")), (1, 2));
    let report = calls.finish(Duration::from_secs(20));
    assert!(report.success, "{}", report.output);
    assert_eq!(report.successful_calls, 3);
}

#[test]
fn calls_overflow_to_the_next_group_when_the_first_answers_503() {
    let lb = Lb::start(
        43,
        &[(1, "vm=5", "503"), (2, "vm=10", "uas")],
        OVERFLOW_ROUTE,
        "",
    );
    two_groups(&lb, "vm=5");
    let _uas = lb.start_destinations();
    let report = Sipp::uac(&lb, "OV_1", 4, 10, 200, &[]).finish(Duration::from_secs(20));
    assert!(report.success, "{}", report.output);
    assert_eq!(report.successful_calls, 4);
    assert_eq!(report.failed_calls, 0);
    wait_until(Duration::from_secs(3), || lb.total_load("vm") == 0);
}

#[test]
fn a_destination_asking_for_half_the_calls_gets_about_half_its_share() {
    let lb = Lb::start(44, &[(1, "vm=10000", "oc50"), (2, "vm=300", "uas")], "", "");
    let _uas = lb.start_destinations();
    // Destination 1 has by far the most room and would win every call; after its first
    // answer it asks for 50% fewer, so about half of them go to destination 2.
    let calls = Sipp::uac(&lb, "VM_1", 200, 100, 8000, &[]);
    wait_until(Duration::from_secs(10), || lb.total_load("vm") == 200);
    let (asked, other) = (lb.load(1, "vm"), lb.load(2, "vm"));
    assert!(
        (70..=150).contains(&asked),
        "destination 1 took {asked} of 200, destination 2 {other}"
    );
    assert_eq!(lb.destination(1).overload, Some(50));
    assert!(lb.balancer.diverted() >= 40, "{}", lb.balancer.diverted());
    let report = calls.finish(Duration::from_secs(30));
    assert!(report.success, "{}", report.output);
    assert_eq!(report.failed_calls, 0);
}

/// A cgroup with a CPU quota (cgroup v2 `cpu.max` where the cpu controller is on,
/// else v1's cpu controller): how a test makes one process the box that is short of
/// CPU. Its processes go back to the root group, and it is removed, on drop.
struct CpuCap {
    dir: std::path::PathBuf,
    root: std::path::PathBuf,
}

impl CpuCap {
    fn new(name: &str, quota_us: u32, period_us: u32) -> Option<CpuCap> {
        let v2 = std::path::Path::new("/sys/fs/cgroup");
        let v2_cpu = std::fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"));
        let (root, files) = if v2_cpu {
            let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+cpu");
            (
                v2.to_path_buf(),
                vec![("cpu.max", format!("{quota_us} {period_us}"))],
            )
        } else {
            (
                std::path::PathBuf::from("/sys/fs/cgroup/cpu"),
                vec![
                    ("cpu.cfs_period_us", period_us.to_string()),
                    ("cpu.cfs_quota_us", quota_us.to_string()),
                ],
            )
        };
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).ok()?;
        let cap = CpuCap { dir, root };
        for (file, value) in files {
            std::fs::write(cap.dir.join(file), value).ok()?;
        }
        Some(cap)
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }

    /// Lifts the cap off `pid`.
    fn release(&self, pid: u32) {
        let _ = std::fs::write(self.root.join("cgroup.procs"), pid.to_string());
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        if let Ok(pids) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in pids.lines() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A value of `/metrics` (the first sample of `name`, labels included in `name`).
fn metric(mi: SocketAddr, name: &str) -> f64 {
    http_get((mi.ip(), mi.port()), "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[test]
fn an_overloaded_siplb_asks_the_siplb_in_front_for_fewer_calls_and_nothing_leaks() {
    let test = 45;
    let Some(cap) = CpuCap::new(&format!("siplb-e2e-{}", std::process::id()), 2_000, 100_000)
    else {
        siplb_testkit::skip("no writable cgroup CPU controller (run as root)");
        return;
    };
    let dir = scratch("overload-45");
    // The back: siplb as a process on 127.0.45.11, held to 2 % of a core, in front of
    // two SIPp destinations.
    let url = format!("sqlite://{}", dir.join("back.db").display());
    destination_table(
        &url,
        "load_balancer",
        &[(ip(test, 21), "pstn=100000"), (ip(test, 22), "pstn=100000")],
    );
    let back_sip = SocketAddr::new(ip(test, 11), 5060);
    let back_mi = SocketAddr::new(ip(test, 11), 8888);
    let config = node_config(
        &dir,
        &format!("listen = [\"udp:{back_sip}\"]"),
        &url,
        back_mi,
        "[[route]]\nmatch = { ruri_user = \"^[0-9]+$\" }\nbalance = { group = 1, resources = \"pstn\" }\n",
    );
    let back = Node::start(&config, dir.join("back.log"));
    let _uas = uas_at(&dir, &[ip(test, 21), ip(test, 22)]);
    // The front: siplb in this process, whose one destination (127.0.45.11) is the
    // back, and which announces overload control on what it sends there.
    let front = Lb::start(test, &[(1, "pstn=100000", "uas:0")], "", "");
    assert_eq!(&*front.destination(1).uri, format!("sip:{back_sip}"));
    cap.add(back.pid());

    // Far more calls than the capped back can set up.
    let calls = uac_to(
        &dir,
        "uac",
        front.addr,
        ip(test, 100),
        5060,
        "100",
        (1200, 150, 1000),
    );
    // Watched until the feedback has been asked for, heard and acted on, while the
    // caller still sends. The front is read in this process, every 20 ms: the feedback it
    // heard holds only `oc-validity` (2 s) and lapses when the back recovers, so sparse
    // reads can miss it. The back's gauge is read over HTTP on a thread of its own: at 2 %
    // of a core one request takes seconds (5 s seen), which must not space the front's
    // reads out.
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let gauge = {
        let (asked, watching) = (asked.clone(), watching.clone());
        std::thread::spawn(move || {
            while watching.load(Ordering::Relaxed) {
                let percent = metric(back_mi, "siplb_overload_feedback_percent");
                // The gauge is a whole percentage.
                asked.fetch_max(percent as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let mut heard = 0u8;
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until
        && !(asked.load(Ordering::Relaxed) > 0 && heard > 0 && front.balancer.diverted() > 0)
    {
        heard = heard.max(front.destination(1).overload.unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    watching.store(false, Ordering::Relaxed);
    // Uncapped first, so that the gauge's last request is answered at once.
    cap.release(back.pid());
    gauge.join().expect("the gauge's reader");
    let asked = asked.load(Ordering::Relaxed);
    assert!(asked > 0, "the back never asked for fewer calls");
    assert!(heard > 0, "the front never heard it");
    assert!(
        front.balancer.diverted() > 0,
        "the front sent every call on regardless"
    );
    // Uncapped, the back works off what it queued; every call ends and every load
    // returns to 0 on both.
    let report = calls.finish(Duration::from_secs(60));
    eprintln!(
        "back asked for up to {asked}% fewer, front heard up to {heard}%, {} calls diverted; {} calls completed, {} refused",
        front.balancer.diverted(),
        report.successful_calls,
        report.failed_calls
    );
    assert!(report.successful_calls > 0, "{}", report.output);
    assert!(report.failed_calls > 0, "{}", report.output);
    wait_until(Duration::from_secs(40), || {
        front.total_load("pstn") == 0 && loads(&format!("http://{back_mi}/mi")) == (0, 0)
    });
    assert!(metric(back_mi, "siplb_core_busy_ratio") < 1.0);
    assert!(
        back.log_text().contains("core overloaded"),
        "entering overload is logged"
    );
}
