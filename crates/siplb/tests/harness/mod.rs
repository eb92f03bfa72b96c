//! Test harness: siplb's core and transports in-process, SIPp peers as child
//! processes (ended by PID when the test ends, whatever happens).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use siplb_balance::{Balancer, DestinationRow, DestinationSnapshot};
use siplb_config::Config;
use siplb_proxy::Proxy;
use tokio::sync::watch;

pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(name)
}

pub fn ip(test: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, test, host))
}

/// Polls `cond` until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A private directory under the target dir, removed at the start of each run.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// siplb running in-process on 127.0.<test>.1:5060 (UDP and TCP), with destinations
/// on 127.0.<test>.<10+id>:5060.
pub struct Lb {
    pub test: u8,
    pub balancer: Arc<Balancer>,
    pub addr: SocketAddr,
    rows: Vec<(u32, String)>,
    stop: watch::Sender<bool>,
    /// Kept so the core's thread is not joined: a test ends without waiting out the drain.
    _core: siplb_net::Core,
    dir: PathBuf,
}

const ROUTES: &str = r#"
[[route]]
match = { ruri_user = "^VM_" }
balance = { group = 1, resources = "vm" }

[[route]]
match = { ruri_user = "^[0-9]+$" }
balance = { group = 1, resources = "pstn" }

[[route]]
reply = { code = 404, reason = "Destination not found" }
"#;

impl Lb {
    /// `rows`: (id, resources, kind of destination: "uas", "503", "silent", "slow"
    /// (rings after 400 ms)...).
    pub fn start(
        test: u8,
        rows: &[(u32, &str, &str)],
        extra_routes: &str,
        extra_config: &str,
    ) -> Lb {
        Lb::start_with_links(
            test,
            rows,
            extra_routes,
            extra_config,
            siplb::run::CoreLinks::default(),
        )
    }

    /// As [`Lb::start`], the core linked as `links` says (its management channel...).
    pub fn start_with_links(
        test: u8,
        rows: &[(u32, &str, &str)],
        extra_routes: &str,
        extra_config: &str,
        links: siplb::run::CoreLinks,
    ) -> Lb {
        let addr = SocketAddr::new(ip(test, 1), 5060);
        let text = format!(
            "[sip]\nlisten = [\"udp:{addr}\", \"tcp:{addr}\"]\ndrain = \"5s\"\n{extra_config}\n{extra_routes}\n{ROUTES}"
        );
        let config = Config::parse(&text).unwrap();
        let balancer = Arc::new(Balancer::new());
        let table: Vec<DestinationRow> = rows
            .iter()
            .map(|&(id, resources, kind)| {
                let mut row = DestinationRow::new(
                    id,
                    1,
                    format!("sip:{}:5060", ip(test, 10 + id as u8)),
                    resources,
                );
                // "kind:mode" sets the probe mode (default 1, as in the tutorial).
                row.probe_mode = kind
                    .split_once(':')
                    .and_then(|(_, m)| m.parse().ok())
                    .unwrap_or(1);
                row
            })
            .collect();
        assert!(balancer.reload(table).is_empty());
        // The plan and the core's wiring of `siplb run`, over a table given here
        // instead of read from a database.
        let plan = siplb::plan::Plan::new(config).unwrap();
        let proxy = Proxy::new(plan.settings.clone(), Arc::clone(&balancer));
        let (stop, stop_rx) = watch::channel(false);
        let core = siplb::run::start_core(
            &plan.settings,
            plan.tcp,
            plan.config.sip.drain,
            proxy,
            links,
            stop_rx,
        )
        .unwrap();
        Lb {
            test,
            balancer,
            addr,
            rows: rows
                .iter()
                .map(|&(id, _, kind)| (id, kind.split(':').next().unwrap_or(kind).to_owned()))
                .collect(),
            stop,
            _core: core,
            dir: scratch(&format!("e2e-{test}")),
        }
    }

    /// Starts the SIPp destinations the rows ask for.
    pub fn start_destinations(&self) -> Vec<Sipp> {
        self.start_destinations_of(|_| true)
    }

    /// A plain answering destination for row `id`, whatever its kind.
    pub fn start_uas(&self, id: u32) -> Sipp {
        let host = ip(self.test, 10 + id as u8).to_string();
        let sipp = Sipp::spawn(
            &self.dir,
            &format!("uas{id}-late"),
            &["-sn", "uas", "-aa", "-i", &host, "-p", "5060"],
        );
        std::thread::sleep(Duration::from_millis(300));
        sipp
    }

    pub fn start_destinations_of(&self, which: impl Fn(u32) -> bool) -> Vec<Sipp> {
        let mut out = Vec::new();
        for (id, kind) in self.rows.iter().filter(|(id, _)| which(*id)) {
            let host = ip(self.test, 10 + *id as u8);
            let name = format!("uas{id}");
            match kind.as_str() {
                "uas" => out.push(Sipp::spawn(
                    &self.dir,
                    &name,
                    &["-sn", "uas", "-aa", "-i", &host.to_string(), "-p", "5060"],
                )),
                "options404" | "options503" => out.push(Sipp::spawn(
                    &self.dir,
                    &name,
                    &[
                        "-sf",
                        scenario(&format!("uas_{}.xml", kind.replace("options", "options_")))
                            .to_str()
                            .unwrap(),
                        "-i",
                        &host.to_string(),
                        "-p",
                        "5060",
                    ],
                )),
                "cancel" => out.push(Sipp::spawn(
                    &self.dir,
                    &name,
                    &[
                        "-aa",
                        "-sf",
                        scenario("uas_cancel.xml").to_str().unwrap(),
                        "-i",
                        &host.to_string(),
                        "-p",
                        "5060",
                    ],
                )),
                "486" | "bye" | "slow" => out.push(Sipp::spawn(
                    &self.dir,
                    &name,
                    &[
                        "-aa",
                        "-sf",
                        scenario(&format!("uas_{kind}.xml")).to_str().unwrap(),
                        "-i",
                        &host.to_string(),
                        "-p",
                        "5060",
                    ],
                )),
                "oc50" => out.push(Sipp::spawn(
                    &self.dir,
                    &name,
                    &[
                        "-sf",
                        scenario("uas_oc50.xml").to_str().unwrap(),
                        "-i",
                        &host.to_string(),
                        "-p",
                        "5060",
                    ],
                )),
                "503" => out.push(Sipp::spawn(
                    &self.dir,
                    &name,
                    &[
                        "-aa",
                        "-sf",
                        scenario("uas_503.xml").to_str().unwrap(),
                        "-i",
                        &host.to_string(),
                        "-p",
                        "5060",
                    ],
                )),
                _ => {}
            }
        }
        // SIPp needs a moment to bind.
        std::thread::sleep(Duration::from_millis(300));
        out
    }

    pub fn destination(&self, id: u32) -> DestinationSnapshot {
        self.balancer.destination(id).unwrap()
    }

    pub fn load(&self, id: u32, resource: &str) -> u32 {
        self.destination(id)
            .resources
            .iter()
            .find(|r| &*r.name == resource)
            .map_or(0, |r| r.load)
    }

    pub fn total_load(&self, resource: &str) -> u32 {
        self.balancer
            .snapshot()
            .iter()
            .flat_map(|d| d.resources.iter())
            .filter(|r| &*r.name == resource)
            .map(|r| r.load)
            .sum()
    }

    /// What SIGTERM does in the binary: start draining.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    pub fn caller_ip(&self) -> IpAddr {
        ip(self.test, 100)
    }

    /// Another address of this test's range.
    pub fn ip(&self, host: u8) -> IpAddr {
        ip(self.test, host)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A SIPp process, ended when dropped.
pub struct Sipp {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

pub struct Report {
    pub success: bool,
    pub successful_calls: u64,
    pub failed_calls: u64,
    pub output: String,
}

impl Sipp {
    pub fn spawn(dir: &Path, name: &str, args: &[&str]) -> Sipp {
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        let file = std::fs::File::create(&out).unwrap();
        let child = Command::new("sipp")
            .args(args)
            .args(["-nostdin", "-timeout", "60", "-trace_err", "-error_file"])
            .arg(&err)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp (Debian package sip-tester) must be installed");
        Sipp {
            child: Some(child),
            out,
            err,
        }
    }

    /// A caller: `calls` calls at `rate` per second, each `duration_ms` long.
    pub fn uac(
        lb: &Lb,
        service: &str,
        calls: u32,
        rate: u32,
        duration_ms: u32,
        extra: &[&str],
    ) -> Sipp {
        let duration = duration_ms.to_string();
        let mut args = vec!["-sn", "uac", "-d", &duration];
        args.extend_from_slice(extra);
        Sipp::caller(lb, lb.caller_ip(), service, calls, rate, &args)
    }

    /// A caller from `from` (an address of this test) running `args`.
    pub fn caller(
        lb: &Lb,
        from: IpAddr,
        service: &str,
        calls: u32,
        rate: u32,
        args: &[&str],
    ) -> Sipp {
        let (calls, rate) = (calls.to_string(), rate.to_string());
        let target = lb.addr.to_string();
        let from = from.to_string();
        // Each caller of a test run gets its own port.
        static NEXT_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(5100);
        let port = NEXT_PORT
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_string();
        let mut all = vec![
            "-s",
            service,
            &target,
            "-i",
            &from,
            "-p",
            &port,
            "-m",
            &calls,
            "-r",
            &rate,
            "-recv_timeout",
            "10000",
        ];
        all.extend_from_slice(args);
        Sipp::spawn(lb.dir(), &format!("uac-{service}-{port}"), &all)
    }

    /// Waits for the caller to finish its calls and reads its final statistics.
    pub fn finish(mut self, limit: Duration) -> Report {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("SIPp did not finish within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The final statistics screen, then the errors SIPp traced (unexpected
        // messages such as a 500 are there, in full).
        let output = std::fs::read_to_string(&self.out).unwrap_or_default()
            + &std::fs::read_to_string(&self.err).unwrap_or_default();
        let count = |label: &str| {
            output
                .lines()
                .rev()
                .find(|l| l.trim_start().starts_with(label))
                .and_then(|l| l.split('|').nth(2))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Report {
            success: status.success(),
            successful_calls: count("Successful call"),
            failed_calls: count("Failed call"),
            output,
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `siplb run --config` as a process: SQLite table with the tutorial's examples
/// (destinations 127.0.0.1:5071..5074), a caller over UDP, then SIGTERM.
pub fn binary_smoke(test: u8) {
    let dir = scratch(&format!("binary-{test}"));
    let db = dir.join("siplb.db");
    let url = format!("sqlite://{}", db.display());
    let siplb = env!("CARGO_BIN_EXE_siplb");
    db_init(&["--examples", "--database", &url]);
    let addr = SocketAddr::new(ip(test, 1), 5060);
    // A webhook receiver: the status events siplb publishes arrive here. Two are
    // expected: the failover's, then the operator's.
    let (webhook_addr, events) = webhook_receiver(ip(test, 1), 2);
    let mi = format!("http://{}:8888/mi", ip(test, 1));
    let mi_listen = SocketAddr::new(ip(test, 1), 8888);
    let config = node_config(
        &dir,
        &format!("listen = [\"udp:{addr}\"]\ndrain = \"2s\""),
        &url,
        mi_listen,
        &format!(
            "[transaction]\ninvite_timeout = \"1s\"\n[events]\nwebhook = \"http://{webhook_addr}/events\"\n{ROUTES}"
        ),
    );
    let check = Command::new(siplb)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let mut node = Node::start(&config, dir.join("siplb.log"));
    let mut uas = Vec::new();
    // Destination 2 (most vm room, chosen first) is down, its port closed: the ICMP
    // port unreachable fails the first call's attempt at once, it fails over, and
    // destination 2 is disabled.
    for port in ["5071", "5073", "5074"] {
        uas.push(Sipp::spawn(
            &dir,
            &format!("uas{port}"),
            &["-sn", "uas", "-aa", "-i", "127.0.0.1", "-p", port],
        ));
    }
    std::thread::sleep(Duration::from_millis(300));
    let report = uac_to(&dir, "uac", addr, ip(test, 100), 5060, "VM_1", (3, 10, 100))
        .finish(Duration::from_secs(20));
    assert!(report.success, "{}", report.output);
    assert_eq!(report.successful_calls, 3);
    let log_text = node.log_text();
    assert!(log_text.contains("destination table loaded"), "{log_text}");
    assert!(
        log_text.contains("destination status changed"),
        "{log_text}"
    );
    // The management interface, with the command-line client and over plain HTTP.
    let ctl = |args: &[&str]| ctl(&mi, args);
    let list = ctl(&["lb_list"]);
    assert!(
        list.starts_with(r#"{"Destinations":[{"uri":"sip:127.0.0.1:5071","id":1,"group":1,"enabled":"yes","auto-reenable":"on","Resources":[{"name":"vm","max":50,"load":0},{"name":"pstn","max":32,"load":0}]"#),
        "{list}"
    );
    assert!(
        list.contains(
            r#"{"uri":"sip:127.0.0.1:5072","id":2,"group":1,"enabled":"no","auto-reenable":"on""#
        ),
        "the failover disabled destination 2: {list}"
    );
    // A long call shows in the loads and the calls list while it is up.
    let long = uac_to(
        &dir,
        "uac-long",
        addr,
        ip(test, 100),
        5061,
        "VM_1",
        (1, 10, 3000),
    );
    wait_until(Duration::from_secs(5), || {
        ctl(&["lb_calls"]).contains("confirmed")
    });
    let calls = ctl(&["lb_calls"]);
    assert!(
        calls.contains(r#""destination_id":1,"uri":"sip:127.0.0.1:5071","resources":["vm"]"#),
        "{calls}"
    );
    assert!(ctl(&["lb_list"]).contains(r#"{"name":"vm","max":50,"load":1}"#));
    assert_eq!(ctl(&["lb_resize", "3", "vm", "70"]), r#""OK""#);
    assert_eq!(
        ctl(&["lb_status", "destination_id=3", "new_status=0"]),
        r#""OK""#
    );
    assert_eq!(ctl(&["lb_status", "3"]), r#"{"enable":"no"}"#);
    assert!(long.finish(Duration::from_secs(20)).success);
    assert!(ctl(&["lb_list"]).contains(r#"{"name":"vm","max":50,"load":0}"#));
    // lb_reload re-reads the table: the resize is gone, the operator's disable stays.
    assert_eq!(ctl(&["lb_reload"]), r#""OK""#);
    let list = ctl(&["lb_list"]);
    assert!(
        list.contains(r#""id":3,"group":1,"enabled":"no","auto-reenable":"off","Resources":[{"name":"vm","max":50,"load":0}]"#),
        "{list}"
    );
    // SIGHUP (`systemctl reload`) re-reads the table too, and siplb goes on.
    sql(
        &url,
        &[
            "INSERT INTO load_balancer (id, group_id, dst_uri, resources, probe_mode) VALUES (9, 1, 'sip:127.0.0.1:5079', 'vm=5', 0)",
        ],
    );
    node.send("-HUP");
    wait_until(Duration::from_secs(5), || {
        ctl(&["lb_list"]).contains(r#""uri":"sip:127.0.0.1:5079","id":9"#)
    });
    assert!(node.is_running());
    assert!(
        node.log_text()
            .contains("SIGHUP: reloading the destination table")
    );
    let metrics = http_get((ip(test, 1), 8888), "/metrics");
    // Only the first call reached destination 2: the ICMP error failed it over and
    // disabled 2 before the next; calls are counted once however many attempts they
    // took: three, then the long call.
    assert!(metrics.contains("siplb_calls_routed_total 4"), "{metrics}");
    assert!(metrics.contains("siplb_failovers_total 1"), "{metrics}");
    assert!(
        metrics.contains(r#"siplb_rejected_calls_total{cause="full"} 0"#),
        "{metrics}"
    );

    let events = events.join().unwrap();
    assert!(events[0].starts_with("POST /events HTTP/1.1"), "{events:?}");
    assert!(
        events[0].contains(
            r#""group":1,"uri":"sip:127.0.0.1:5072","status":"disabled","id":2,"source":"failover""#
        ),
        "{events:?}"
    );
    assert!(
        events[1].contains(
            r#""uri":"sip:127.0.0.1:5073","status":"disabled","id":3,"source":"operator""#
        ),
        "{events:?}"
    );
    // SIGTERM stops it cleanly.
    let status = node.signal("-TERM");
    assert!(status.success(), "siplb exited with {status}");
}

/// Calls to `VM_...` users balanced on `vm` in group 1, and nothing else routed.
pub const VM_ROUTE: &str =
    "[[route]]\nmatch = { ruri_user = \"^VM_\" }\nbalance = { group = 1, resources = \"vm\" }\n";

/// Writes `dir/siplb.toml` for a siplb process: `[sip]` holding `sip` (its `listen` line
/// and any other key), the SQLite table at `url`, probing off, the management interface
/// on `mi`, then `rest`, which may start with more `[management]` keys and go on with
/// other sections and routes.
pub fn node_config(dir: &Path, sip: &str, url: &str, mi: SocketAddr, rest: &str) -> PathBuf {
    let config = dir.join("siplb.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\n{sip}\n[database]\nurl = \"{url}\"\n[probing]\ninterval = \"0s\"\n\
             [management]\nlisten = \"{mi}\"\n{rest}\n"
        ),
    )
    .unwrap();
    config
}

/// `siplb run --config` as a separate process, killed if the test ends early.
pub struct Node {
    child: std::process::Child,
    log: PathBuf,
}

impl Node {
    /// Starts siplb and waits until it serves (its management interface is up).
    pub fn start(config: &Path, log: PathBuf) -> Node {
        let _ = std::fs::remove_file(&log);
        let child = Command::new(env!("CARGO_BIN_EXE_siplb"))
            .args(["run", "--config"])
            .arg(config)
            .env(
                "SIPLB_LOG",
                std::env::var("SIPLB_TEST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let node = Node { child, log };
        wait_until(Duration::from_secs(20), || {
            node.log_text().contains("management interface on")
        });
        node
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`-TERM`, `-KILL`) and waits for the process to end.
    pub fn signal(&mut self, sig: &str) -> std::process::ExitStatus {
        self.send(sig);
        self.wait(Duration::from_secs(10))
    }

    /// Sends SIGTERM without waiting: siplb starts draining.
    pub fn terminate(&mut self) {
        self.send("-TERM");
    }

    /// Sends a signal without waiting (`-HUP`, `-TERM`).
    pub fn send(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to end, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < limit, "siplb did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `siplb db init ARGS...`, which must succeed.
pub fn db_init(args: &[&str]) {
    let init = Command::new(env!("CARGO_BIN_EXE_siplb"))
        .args(["db", "init"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
}

/// Creates `table` with `siplb db init` and one unprobed destination per row (ids from
/// 1, group 1, port 5060).
pub fn destination_table(url: &str, table: &str, rows: &[(std::net::IpAddr, &str)]) {
    db_init(&["--database", url, "--table", table]);
    let uris: Vec<String> = rows
        .iter()
        .map(|(host, _)| format!("sip:{host}:5060"))
        .collect();
    let rows: Vec<(u32, u32, &str, &str)> = rows
        .iter()
        .zip(&uris)
        .zip(1..)
        .map(|(((_, resources), uri), id)| (id, 1, uri.as_str(), *resources))
        .collect();
    insert_destinations_into(url, table, &rows);
}

/// Inserts unprobed destinations, `(id, group, dst_uri, resources)`, into the table
/// `siplb db init` made at `url` (`load_balancer`).
pub fn insert_destinations(url: &str, rows: &[(u32, u32, &str, &str)]) {
    insert_destinations_into(url, "load_balancer", rows);
}

fn insert_destinations_into(url: &str, table: &str, rows: &[(u32, u32, &str, &str)]) {
    let inserts: Vec<String> = rows
        .iter()
        .map(|(id, group, uri, resources)| {
            format!(
                "INSERT INTO {table} (id, group_id, dst_uri, resources, probe_mode) VALUES ({id}, {group}, '{uri}', '{resources}', 0)"
            )
        })
        .collect();
    sql(url, &inserts.iter().map(String::as_str).collect::<Vec<_>>());
}

/// [`ctl`] against the management interface at `mi`, its answer as JSON.
pub fn ctl_json(mi: SocketAddr, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ctl(&format!("http://{mi}/mi"), args)).unwrap()
}

/// The `lb_list` entry of destination `id`.
pub fn listed(mi: SocketAddr, id: u64) -> serde_json::Value {
    ctl_json(mi, &["lb_list"])["Destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap()
        .clone()
}

/// `siplb ctl --compact --url MI ARGS...`, which must succeed: its output, trimmed.
pub fn ctl(mi: &str, args: &[&str]) -> String {
    let out = ctl_command(mi, args).output().unwrap();
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The `siplb ctl --compact --url MI ARGS...` command, to run or spawn.
pub fn ctl_command(mi: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_siplb"));
    command.args(["ctl", "--compact", "--url", mi]).args(args);
    command
}

/// A webhook receiver on `host`: answers `204` to each of `count` POSTs and hands back
/// their whole requests when the thread is joined.
pub fn webhook_receiver(
    host: IpAddr,
    count: usize,
) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
    let webhook = std::net::TcpListener::bind((host, 0)).unwrap();
    let addr = webhook.local_addr().unwrap();
    let events = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut all = Vec::new();
        for _ in 0..count {
            let (mut conn, _) = webhook.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&request).contains("}\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
            all.push(String::from_utf8_lossy(&request).into_owned());
        }
        all
    });
    (addr, events)
}

/// Runs SQL statements on any of the three databases.
pub fn sql(url: &str, statements: &[&str]) {
    sqlx::any::install_default_drivers();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = sqlx::AnyPool::connect(url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        for s in statements {
            sqlx::query(sqlx::AssertSqlSafe(s.to_string()))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    });
}

/// The whole reply to `GET path` from siplb's management listener, status line
/// included.
pub fn http_get_reply(addr: (IpAddr, u16), path: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            addr.0
        )
        .as_bytes(),
    )
    .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    text
}

/// The body of `GET path` from siplb's management listener, which must answer 200.
pub fn http_get(addr: (IpAddr, u16), path: &str) -> String {
    let text = http_get_reply(addr, path);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// Answering destinations (SIPp's built-in UAS, OPTIONS answered) on port 5060 of
/// each address, given a moment to bind.
pub fn uas_at(dir: &Path, hosts: &[IpAddr]) -> Vec<Sipp> {
    let all = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let h = h.to_string();
            Sipp::spawn(
                dir,
                &format!("uas{}", i + 1),
                &["-sn", "uas", "-aa", "-i", &h, "-p", "5060"],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    all
}

/// A caller placing `calls` calls of `duration_ms` at `rate` per second to `target`.
pub fn uac_to(
    dir: &Path,
    name: &str,
    target: SocketAddr,
    from: IpAddr,
    port: u16,
    service: &str,
    (calls, rate, duration_ms): (u32, u32, u32),
) -> Sipp {
    let (target, from, port) = (target.to_string(), from.to_string(), port.to_string());
    let (calls, rate, duration) = (calls.to_string(), rate.to_string(), duration_ms.to_string());
    Sipp::spawn(
        dir,
        name,
        &[
            "-sn",
            "uac",
            "-s",
            service,
            &target,
            "-i",
            &from,
            "-p",
            &port,
            "-m",
            &calls,
            "-r",
            &rate,
            "-d",
            &duration,
            "-recv_timeout",
            "20000",
        ],
    )
}

/// A TCP relay in front of a server (a database, Redis) that can be cut and
/// restored, to play an outage.
pub struct Relay {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    pub fn start(target: SocketAddr) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, open2) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                let mut list = open2.lock().unwrap();
                for s in [&client, &server] {
                    list.push(s.try_clone().unwrap());
                }
                drop(list);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, up, open }
    }

    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
