//! Several siplb processes sharing one view of the load through the machine's real
//! Redis (SPEC section 9): capacity held cluster-wide under concurrent callers, status,
//! resizes and reloads shared, a dead node's calls adopted and their BYEs routed by a
//! survivor, a store outage that fails no call and heals, a restart with calls up.
//! Each test uses a key prefix of its own, so the tests run in parallel on one Redis.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    dead_code
)]

mod harness;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::{
    Node, Relay, Sipp, ctl_json, http_get, insert_destinations, ip, scratch, uac_to, uas_at,
    wait_until,
};
use serde_json::Value;

const REDIS: &str = "127.0.0.1:6379";

/// The machine's Redis, or the test reports itself skipped (a failure under CI).
fn redis_here() -> bool {
    if std::net::TcpStream::connect_timeout(&REDIS.parse().unwrap(), Duration::from_secs(1)).is_ok()
    {
        return true;
    }
    siplb_testkit::skip("no Redis at 127.0.0.1:6379 for the cluster tests");
    false
}

/// Deletes every key under `prefix`.
fn forget(prefix: &str) {
    let client = redis::Client::open(format!("redis://{REDIS}/0")).unwrap();
    let mut conn = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut conn)
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(keys).query(&mut conn).unwrap();
    }
}

/// A node's counts in the store, summed over its fields.
fn stored_load(prefix: &str, node: &str) -> i64 {
    let client = redis::Client::open(format!("redis://{REDIS}/0")).unwrap();
    let mut conn = client.get_connection().unwrap();
    let counts: Vec<(String, i64)> = redis::cmd("HGETALL")
        .arg(format!("{prefix}:load:{node}"))
        .query(&mut conn)
        .unwrap();
    counts.iter().map(|(_, n)| n).sum()
}

/// How many calls a node has stored.
fn stored_calls(prefix: &str, node: &str) -> usize {
    let client = redis::Client::open(format!("redis://{REDIS}/0")).unwrap();
    let mut conn = client.get_connection().unwrap();
    redis::cmd("HLEN")
        .arg(format!("{prefix}:calls:{node}"))
        .query(&mut conn)
        .unwrap()
}

/// A cluster of `count` siplb processes on 127.0.<test>.1..count, sharing the SQLite
/// table in `dir` and the store at `redis`.
struct Cluster {
    test: u8,
    dir: PathBuf,
    prefix: String,
    configs: Vec<PathBuf>,
    nodes: Vec<Option<Node>>,
}

impl Cluster {
    fn start(test: u8, count: u8, rows: &[(u32, &str)], redis: &str, extra: &str) -> Cluster {
        let dir = scratch(&format!("cluster-{test}"));
        let url = format!("sqlite://{}", dir.join("table.db").display());
        harness::db_init(&["--database", &url]);
        let uris: Vec<String> = rows
            .iter()
            .map(|(id, _)| format!("sip:{}:5060", ip(test, 10 + *id as u8)))
            .collect();
        let rows: Vec<(u32, u32, &str, &str)> = rows
            .iter()
            .zip(&uris)
            .map(|((id, res), uri)| (*id, 1, uri.as_str(), *res))
            .collect();
        insert_destinations(&url, &rows);
        let prefix = format!("siplb-e2e-{}-{test}", std::process::id());
        forget(&prefix);
        let addresses: Vec<String> = (1..=count)
            .map(|n| format!("\"sip:{}:5060\"", ip(test, n)))
            .collect();
        let configs: Vec<PathBuf> = (1..=count)
            .map(|n| {
                let config = dir.join(format!("lb-{n}.toml"));
                std::fs::write(
                    &config,
                    format!(
                        "[sip]\nlisten = [\"udp:{ip}:5060\"]\ndrain = \"300ms\"\n\
                         [database]\nurl = \"{url}\"\n[management]\nlisten = \"{ip}:8888\"\n\
                         [probing]\ninterval = \"0s\"\n[dialog]\npersist = false\n\
                         [cluster]\nredis = \"redis://{redis}/0\"\nnode = \"lb-{n}\"\n\
                         prefix = \"{prefix}\"\nheartbeat = \"200ms\"\naddresses = [{}]\n{extra}\n\
                         {}",
                        addresses.join(", "),
                        harness::VM_ROUTE,
                        ip = ip(test, n),
                    ),
                )
                .unwrap();
                config
            })
            .collect();
        let mut cluster = Cluster {
            test,
            dir,
            prefix,
            configs,
            nodes: Vec::new(),
        };
        for n in 1..=count {
            let node = cluster.launch(n);
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    /// Starts node `n`; each start logs to a file of its own.
    fn launch(&self, n: u8) -> Node {
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let start = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Node::start(
            &self.configs[usize::from(n - 1)],
            self.dir.join(format!("lb-{n}-{start}.log")),
        )
    }

    fn mi(&self, n: u8) -> SocketAddr {
        SocketAddr::new(ip(self.test, n), 8888)
    }

    fn sip(&self, n: u8) -> SocketAddr {
        SocketAddr::new(ip(self.test, n), 5060)
    }

    /// `(load, node_load)` of each destination's first resource, in table order.
    fn loads(&self, n: u8) -> Vec<(u64, u64)> {
        ctl_json(self.mi(n), &["lb_list"])["Destinations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let r = &d["Resources"][0];
                (
                    r["load"].as_u64().unwrap(),
                    r["node_load"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    fn view(&self, n: u8) -> Value {
        ctl_json(self.mi(n), &["cluster"])
    }

    /// Destination `id` as node `n` lists it (null until it has it).
    fn listed(&self, n: u8, id: u64) -> Value {
        ctl_json(self.mi(n), &["lb_list"])["Destinations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .cloned()
            .unwrap_or_default()
    }

    /// Nodes running now.
    fn up(&self) -> Vec<u8> {
        (1..=u8::try_from(self.nodes.len()).unwrap())
            .filter(|n| self.nodes[usize::from(*n - 1)].is_some())
            .collect()
    }

    /// Waits until every running node lists `expected` loads (cluster-wide), and this
    /// nodes' shares add up to them.
    fn wait_for_loads(&self, expected: &[u64], limit: Duration) {
        let up = self.up();
        let settled = || {
            up.iter()
                .all(|&n| self.loads(n).iter().map(|l| l.0).collect::<Vec<_>>() == expected)
                && {
                    let shares: Vec<Vec<u64>> = up
                        .iter()
                        .map(|&n| self.loads(n).iter().map(|l| l.1).collect())
                        .collect();
                    (0..expected.len()).all(|i| {
                        // A dead node's calls are counted but no running node's share.
                        shares.iter().map(|s| s[i]).sum::<u64>() <= expected[i]
                    })
                }
        };
        let start = Instant::now();
        while !settled() {
            assert!(
                start.elapsed() < limit,
                "loads never settled at {expected:?}: {:?}",
                up.iter().map(|&n| (n, self.loads(n))).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One SIPp caller per node `1..=nodes`, each placing `calls` calls through it.
    fn callers(&self, nodes: u8, calls: (u32, u32, u32)) -> Vec<Sipp> {
        (1..=nodes)
            .map(|n| {
                uac_to(
                    &self.dir,
                    &format!("uac-{n}"),
                    self.sip(n),
                    ip(self.test, 100 + n),
                    5062,
                    "VM_1",
                    calls,
                )
            })
            .collect()
    }

    /// Waits until node `n` lists `count` nodes.
    fn wait_for_nodes(&self, n: u8, count: usize) {
        wait_until(Duration::from_secs(5), || {
            self.view(n)["Nodes"].as_array().unwrap().len() == count
        });
    }

    /// Waits until node `n` sees `calls` answered calls stored by node `node`.
    fn wait_for_stored(&self, n: u8, node: &str, calls: u64) {
        wait_until(Duration::from_secs(3), || {
            self.view(n)["Nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["name"] == node && d["stored_calls"] == calls)
        });
    }

    fn kill(&mut self, n: u8) {
        if let Some(mut node) = self.nodes[usize::from(n - 1)].take() {
            node.signal("-KILL");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.clear();
        forget(&self.prefix);
    }
}

#[test]
fn three_nodes_hold_the_capacity_cluster_wide_and_share_status_and_reloads() {
    if !redis_here() {
        return;
    }
    let test = 110;
    let cluster = Cluster::start(test, 3, &[(1, "vm=5"), (2, "vm=3")], REDIS, "");
    let _uas = uas_at(&cluster.dir, &[ip(test, 11), ip(test, 12)]);
    cluster.wait_for_nodes(1, 3);
    // Exactly one node probes.
    let probers = (1..=3)
        .filter(|&n| cluster.view(n)["prober"] == true)
        .count();
    assert_eq!(probers, 1);

    // 60 calls at once through three nodes for 8 slots: 8 answered, 52 turned away
    // "Service full", whichever node they reach.
    let callers = cluster.callers(3, (20, 100, 4000));
    cluster.wait_for_loads(&[5, 3], Duration::from_secs(10));
    // Every node's share adds up to the cluster's load.
    let shares: Vec<Vec<(u64, u64)>> = (1..=3).map(|n| cluster.loads(n)).collect();
    for d in 0..2 {
        assert_eq!(
            shares.iter().map(|s| s[d].1).sum::<u64>(),
            [5, 3][d],
            "{shares:?}"
        );
    }
    let (mut answered, mut refused) = (0, 0);
    for caller in callers {
        let report = caller.finish(Duration::from_secs(40));
        answered += report.successful_calls;
        refused += report.failed_calls;
    }
    assert_eq!((answered, refused), (8, 52));
    // Every node measured how long its calls waited for their reservations.
    for n in 1..=3 {
        let metrics = http_get((ip(test, n), 8888), "/metrics");
        let waited = metrics
            .lines()
            .find_map(|l| l.strip_prefix("siplb_cluster_reservation_wait_seconds_count "))
            .and_then(|v| v.trim().parse::<u64>().ok());
        assert!(waited.is_some_and(|c| c > 0), "node {n}: {metrics}");
    }
    cluster.wait_for_loads(&[0, 0], Duration::from_secs(5));
    let refusals: u64 = (1..=3)
        .map(|n| cluster.view(n)["reservations"]["refused"].as_u64().unwrap())
        .sum();
    assert!(
        refusals > 0,
        "another node took the last slot first, at times"
    );

    // Disabled through node 1: node 2's next calls skip it.
    let _ = ctl_json(cluster.mi(1), &["lb_status", "1", "0"]);
    let start = Instant::now();
    wait_until(Duration::from_secs(2), || {
        cluster.listed(2, 1)["enabled"] == "no" && cluster.listed(3, 1)["enabled"] == "no"
    });
    // A heartbeat is 200 ms here: one to publish, one to read, with room for a busy
    // machine running the whole suite.
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "shared after {:?}",
        start.elapsed()
    );
    let held = uac_to(
        &cluster.dir,
        "uac-after-disable",
        cluster.sip(2),
        ip(test, 110),
        5062,
        "VM_1",
        (2, 50, 1500),
    );
    cluster.wait_for_loads(&[0, 2], Duration::from_secs(5));
    assert!(held.finish(Duration::from_secs(20)).success);

    // Resized through node 3, re-enabled through node 2: every node follows.
    let _ = ctl_json(cluster.mi(3), &["lb_resize", "2", "vm", "7"]);
    let _ = ctl_json(cluster.mi(2), &["lb_status", "1", "1"]);
    wait_until(Duration::from_secs(2), || {
        (1..=3).all(|n| {
            cluster.listed(n, 2)["Resources"][0]["max"] == 7
                && cluster.listed(n, 1)["enabled"] == "yes"
        })
    });

    // A destination added to the table and reloaded through node 1: the others reload.
    let url = format!("sqlite://{}", cluster.dir.join("table.db").display());
    let uri = format!("sip:{}:5060", ip(test, 13));
    insert_destinations(&url, &[(3, 1, &uri, "vm=4")]);
    let _ = ctl_json(cluster.mi(1), &["lb_reload"]);
    wait_until(Duration::from_secs(3), || {
        (2..=3).all(|n| cluster.listed(n, 3)["Resources"][0]["max"] == 4)
    });
    // The reload brought capacities back to the table's, on every node.
    wait_until(Duration::from_secs(2), || {
        (1..=3).all(|n| cluster.listed(n, 2)["Resources"][0]["max"] == 3)
    });
}

/// A SIP phone driven by hand: it keeps the route set of its dialogs, so that a call
/// set up through one node can send its BYE through another.
struct Phone {
    socket: UdpSocket,
    calls: Vec<Dialog>,
}

struct Dialog {
    call_id: String,
    to_tag: String,
    route: Vec<String>,
    contact: String,
}

fn header<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .collect()
}

impl Phone {
    fn new(at: SocketAddr) -> Phone {
        let socket = UdpSocket::bind(at).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Phone {
            socket,
            calls: Vec::new(),
        }
    }

    fn me(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// Waits for a final response to `call_id` with `cseq`, answering nothing.
    fn final_response(&self, call_id: &str, cseq: &str) -> String {
        let start = Instant::now();
        let mut buf = [0u8; 65_536];
        while start.elapsed() < Duration::from_secs(10) {
            let Ok(n) = self.socket.recv(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).replace("\r\n", "\n");
            let status: u16 = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if text.starts_with("SIP/2.0")
                && status >= 200
                && header(&text, "Call-ID").first() == Some(&call_id)
                && header(&text, "CSeq").first() == Some(&cseq)
            {
                return text;
            }
        }
        panic!("no final response to {cseq} of {call_id}");
    }

    fn send(&self, to: SocketAddr, text: &str) {
        self.socket
            .send_to(text.replace('\n', "\r\n").as_bytes(), to)
            .unwrap();
    }

    /// INVITE through `proxy`, 200, ACK along the route set.
    fn call(&mut self, proxy: SocketAddr, n: u32) {
        let me = self.me();
        let call_id = format!("adopt-{n}-{}@{}", std::process::id(), me.ip());
        self.send(
            proxy,
            &format!(
                "INVITE sip:VM_1@{proxy} SIP/2.0\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-inv-{n}\n\
                 Max-Forwards: 70\nFrom: <sip:phone@{ip}>;tag=p{n}\nTo: <sip:VM_1@{ip}>\n\
                 Call-ID: {call_id}\nCSeq: 1 INVITE\nContact: <sip:phone@{me}>\n\
                 Content-Length: 0\n\n",
                ip = me.ip()
            ),
        );
        let ok = self.final_response(&call_id, "1 INVITE");
        assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
        let to = header(&ok, "To")[0];
        let to_tag = to.split(";tag=").nth(1).unwrap().trim().to_owned();
        // The route set is the Record-Route in reverse for the caller.
        let mut route: Vec<String> = header(&ok, "Record-Route")
            .iter()
            .flat_map(|v| v.split(','))
            .map(|r| r.trim().to_owned())
            .collect();
        route.reverse();
        let contact = header(&ok, "Contact")[0]
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_owned();
        let dialog = Dialog {
            call_id,
            to_tag,
            route,
            contact,
        };
        self.in_dialog(proxy, &dialog, "ACK", 1, n);
        self.calls.push(dialog);
    }

    fn in_dialog(&self, to: SocketAddr, d: &Dialog, method: &str, cseq: u32, n: u32) {
        let me = self.me();
        let routes: String = d.route.iter().map(|r| format!("Route: {r}\n")).collect();
        self.send(
            to,
            &format!(
                "{method} {contact} SIP/2.0\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{method}-{n}-{cseq}\n\
                 Max-Forwards: 70\n{routes}From: <sip:phone@{ip}>;tag=p{n}\n\
                 To: <sip:VM_1@{ip}>;tag={tag}\nCall-ID: {call_id}\nCSeq: {cseq} {method}\n\
                 Content-Length: 0\n\n",
                contact = d.contact,
                ip = me.ip(),
                tag = d.to_tag,
                call_id = d.call_id,
            ),
        );
    }
}

/// A destination that answers as RFC 3261 has it: every response to the address in
/// the top Via (section 18.2.2), the 200 carrying the Record-Route. SIPp's built-in
/// UAS sends all of a call's responses to where its INVITE came from, which, once a
/// node is dead, is nowhere: a survivor would never see the answer to its BYE.
struct Callee {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Callee {
    fn start(at: SocketAddr) -> Callee {
        let socket = UdpSocket::bind(at).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let halt = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65_536];
            while !halt.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(n) = socket.recv(&mut buf) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&buf[..n]).replace("\r\n", "\n");
                let method = text.split_whitespace().next().unwrap_or_default();
                if !matches!(method, "INVITE" | "BYE") {
                    continue;
                }
                let vias = header(&text, "Via");
                let sent_by = vias[0].split_whitespace().nth(1).unwrap();
                let sent_by = sent_by.split(';').next().unwrap();
                let mut answer = String::from("SIP/2.0 200 OK\n");
                for v in &vias {
                    answer += &format!("Via: {v}\n");
                }
                if method == "INVITE" {
                    for rr in header(&text, "Record-Route") {
                        answer += &format!("Record-Route: {rr}\n");
                    }
                    answer += &format!("Contact: <sip:callee@{at}>\n");
                }
                let to = header(&text, "To")[0];
                let to = if to.contains("tag=") {
                    to.to_owned()
                } else {
                    format!("{to};tag=callee")
                };
                answer += &format!(
                    "From: {}\nTo: {to}\nCall-ID: {}\nCSeq: {}\nContent-Length: 0\n\n",
                    header(&text, "From")[0],
                    header(&text, "Call-ID")[0],
                    header(&text, "CSeq")[0],
                );
                let _ = socket.send_to(answer.replace('\n', "\r\n").as_bytes(), sent_by);
            }
        });
        Callee {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Callee {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_dead_nodes_calls_are_adopted_and_ended_through_any_survivor() {
    if !redis_here() {
        return;
    }
    let test = 111;
    let mut cluster = Cluster::start(test, 3, &[(1, "vm=10")], REDIS, "node_timeout = \"1s\"");
    let _callee = Callee::start(SocketAddr::new(ip(test, 11), 5060));
    cluster.wait_for_nodes(2, 3);
    // Four calls up through node 1, stored in the cluster.
    let mut phone = Phone::new(SocketAddr::new(ip(test, 100), 5062));
    for n in 0..4 {
        phone.call(cluster.sip(1), n);
    }
    cluster.wait_for_loads(&[4], Duration::from_secs(5));
    cluster.wait_for_stored(2, "lb-1", 4);

    // Node 1 dies. Its calls stay counted while it is only silent, then a survivor
    // adopts them.
    cluster.kill(1);
    assert_eq!(cluster.loads(2)[0].0, 4, "still counted");
    assert_eq!(cluster.loads(3)[0].0, 4, "still counted");
    wait_until(Duration::from_secs(5), || {
        (2..=3)
            .map(|n| cluster.view(n)["adopted_calls"].as_u64().unwrap())
            .sum::<u64>()
            == 4
    });
    cluster.wait_for_loads(&[4], Duration::from_secs(2));
    let adopter = if cluster.view(2)["adopted_calls"] == 4 {
        2
    } else {
        3
    };
    let other = 5 - adopter;

    // The floating address of node 1 moved to some survivor: BYEs, with node 1's
    // Route, reach both the adopter and the other node. Each reaches the destination
    // and is answered 200.
    for (i, d) in phone.calls.iter().enumerate() {
        let to = if i % 2 == 0 { adopter } else { other };
        phone.in_dialog(cluster.sip(to), d, "BYE", 2, i as u32);
        let answer = phone.final_response(&d.call_id, "2 BYE");
        assert!(answer.starts_with("SIP/2.0 200"), "via node {to}: {answer}");
    }
    cluster.wait_for_loads(&[0], Duration::from_secs(3));
    wait_until(Duration::from_secs(3), || {
        stored_load(&cluster.prefix, &format!("lb-{adopter}")) == 0
    });
}

#[test]
fn a_store_outage_fails_no_call_and_the_counts_heal() {
    if !redis_here() {
        return;
    }
    let test = 112;
    let relay = Relay::start(REDIS.parse().unwrap());
    let cluster = Cluster::start(
        test,
        2,
        &[(1, "vm=200")],
        &format!("127.0.0.1:{}", relay.port),
        "",
    );
    let _uas = uas_at(&cluster.dir, &[ip(test, 11)]);
    cluster.wait_for_nodes(1, 2);
    // 120 calls of 6 s through both nodes; the store goes away for 2 s in the middle.
    let callers = cluster.callers(2, (60, 20, 6000));
    std::thread::sleep(Duration::from_millis(1000));
    relay.cut();
    wait_until(Duration::from_secs(3), || {
        http_get((ip(test, 1), 8888), "/health").contains("alone")
    });
    let metrics = http_get((ip(test, 2), 8888), "/metrics");
    wait_until(Duration::from_secs(3), || {
        http_get((ip(test, 2), 8888), "/metrics").contains("siplb_cluster_store_up 0")
    });
    assert!(metrics.contains("siplb_cluster_store_up"), "{metrics}");
    // As if Redis restarted empty meanwhile (it keeps nothing on disk here).
    forget(&cluster.prefix);
    std::thread::sleep(Duration::from_millis(1500));
    relay.restore();
    wait_until(Duration::from_secs(5), || {
        (1..=2).all(|n| cluster.view(n)["store"] == "up")
    });
    assert_eq!(http_get((ip(test, 1), 8888), "/health").trim(), "ok");
    // Once back, the store reads the truth again: each node's entry is its share,
    // and every node lists the sum.
    wait_until(Duration::from_secs(3), || {
        let shares: Vec<u64> = (1..=2).map(|n| cluster.loads(n)[0].1).collect();
        let stored: Vec<i64> = (1..=2)
            .map(|n| stored_load(&cluster.prefix, &format!("lb-{n}")))
            .collect();
        let total = shares.iter().sum::<u64>();
        stored.iter().zip(&shares).all(|(s, l)| *s as u64 == *l)
            && (1..=2).all(|n| cluster.loads(n)[0].0 == total)
    });
    // And each node's answered calls are stored again, for adoption should it die,
    // those answered before the outage included (all still up).
    wait_until(Duration::from_secs(2), || {
        (1..=2).all(|n| {
            let answered = ctl_json(cluster.mi(n), &["lb_calls"])["Calls"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["state"] == "confirmed")
                .count();
            answered > 0 && stored_calls(&cluster.prefix, &format!("lb-{n}")) == answered
        })
    });
    for caller in callers {
        let report = caller.finish(Duration::from_secs(60));
        assert!(report.success, "{}", report.output);
        assert_eq!((report.successful_calls, report.failed_calls), (60, 0));
    }
    cluster.wait_for_loads(&[0], Duration::from_secs(5));
    assert!(
        (1..=2).all(|n| stored_load(&cluster.prefix, &format!("lb-{n}")) == 0),
        "the store reads 0 too"
    );
    let unconfirmed: u64 = (1..=2)
        .map(|n| {
            cluster.view(n)["reservations"]["unconfirmed"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert!(unconfirmed > 0, "calls went on without the store");
}

#[test]
fn a_node_restarted_with_calls_up_rejoins_without_counting_them_twice() {
    if !redis_here() {
        return;
    }
    let test = 113;
    let mut cluster = Cluster::start(test, 2, &[(1, "vm=20")], REDIS, "node_timeout = \"10s\"");
    let _uas = uas_at(&cluster.dir, &[ip(test, 11)]);
    // Six calls through node 1 that end (SIPp sends their BYEs) after the restart.
    let calls = uac_to(
        &cluster.dir,
        "uac",
        cluster.sip(1),
        ip(test, 100),
        5062,
        "VM_1",
        (6, 50, 6000),
    );
    cluster.wait_for_loads(&[6], Duration::from_secs(5));
    cluster.wait_for_stored(2, "lb-1", 6);
    cluster.kill(1);
    let node = cluster.launch(1);
    assert!(
        node.log_text()
            .contains("calls stored in the cluster restored calls=6"),
        "{}",
        node.log_text()
    );
    cluster.nodes[0] = Some(node);
    // Not 12: the restarted node's entry is written over, not added to.
    std::thread::sleep(Duration::from_millis(600));
    cluster.wait_for_loads(&[6], Duration::from_secs(3));
    assert_eq!(cluster.loads(1)[0], (6, 6));
    let report = calls.finish(Duration::from_secs(30));
    assert!(report.success, "{}", report.output);
    assert_eq!(report.successful_calls, 6);
    cluster.wait_for_loads(&[0], Duration::from_secs(5));
}
