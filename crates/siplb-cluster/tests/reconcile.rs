//! The reconciliation logic against the real store: nodes' books and the Redis
//! scripts, driven by random takes, releases, outages, deaths, adoptions and restarts.
//! Whatever happens, the store's counts are never negative, and once every node is
//! reachable again and has beaten, they equal the true number of calls per resource;
//! with no outage since, a granted reservation never takes a resource past its
//! capacity (destination 1 is reserved only; destination 2 also takes forced counts).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use siplb_balance::{Take, TakeKind};
use siplb_cluster::{Book, Field, Step, Store};

const NODES: usize = 3;
const CAPACITY: u32 = 4;
const URL: &str = "redis://127.0.0.1:6379/0";

#[derive(Clone, Debug)]
enum Action {
    Take {
        node: usize,
        dest: u32,
        reserve: bool,
    },
    Release {
        node: usize,
        pick: usize,
    },
    /// The node loses (or gets back) the store.
    Outage {
        node: usize,
    },
    Beat {
        node: usize,
    },
    Kill {
        node: usize,
    },
    /// The first live node adopts the dead one's calls.
    Adopt {
        dead: usize,
    },
    /// A dead node comes back before anyone adopted it, its calls with it.
    Restart {
        node: usize,
    },
    /// Everyone reachable, everyone beats: the counts must read the truth.
    Settle,
}

fn action() -> impl Strategy<Value = Action> {
    let node = 0..NODES;
    prop_oneof![
        6 => (node.clone(), 1..=2u32, any::<bool>())
            .prop_map(|(node, dest, reserve)| Action::Take { node, dest, reserve }),
        5 => (node.clone(), any::<usize>()).prop_map(|(node, pick)| Action::Release { node, pick }),
        1 => node.clone().prop_map(|node| Action::Outage { node }),
        2 => node.clone().prop_map(|node| Action::Beat { node }),
        1 => node.clone().prop_map(|node| Action::Kill { node }),
        1 => node.clone().prop_map(|dead| Action::Adopt { dead }),
        1 => node.clone().prop_map(|node| Action::Restart { node }),
        1 => Just(Action::Settle),
    ]
}

struct Node {
    store: Store,
    book: Book,
    /// Allocations alive here: (ticket, destination).
    calls: Vec<(u64, u32)>,
    alive: bool,
    reachable: bool,
    /// Dead: what its entry in the store held when it died (nobody knows better
    /// until a survivor adopts its calls).
    dead_entry: BTreeMap<Field, i64>,
}

struct World {
    nodes: Vec<Node>,
    prefix: String,
    next_ticket: u64,
    /// An outage happened since everyone last settled: counts may lag.
    lagging: bool,
    admin: Store,
}

async fn connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn field(dest: u32) -> Field {
    Field {
        destination: dest,
        resource: Arc::from("vm"),
    }
}

impl World {
    async fn new(case: u64) -> World {
        let prefix = format!("siplb-prop-{}-{case}", std::process::id());
        let mut nodes = Vec::new();
        for i in 0..NODES {
            let store = Store::connect(URL, &prefix, &format!("n{i}"), Duration::from_secs(2))
                .await
                .expect("the Redis at 127.0.0.1:6379 (started by the machine)");
            nodes.push(Node {
                store,
                book: Book::default(),
                calls: Vec::new(),
                alive: true,
                reachable: true,
                dead_entry: BTreeMap::new(),
            });
        }
        let admin = Store::connect(URL, &prefix, "admin", Duration::from_secs(2))
            .await
            .unwrap();
        let mut world = World {
            nodes,
            prefix,
            next_ticket: 1,
            lagging: false,
            admin,
        };
        for i in 0..NODES {
            world.beat(i).await;
        }
        world
    }

    /// A connection of the test's own, and the keys under `pattern` of this world.
    async fn keys(&self, pattern: &str) -> (redis::aio::MultiplexedConnection, Vec<String>) {
        let mut conn = connection().await;
        let keys = redis::cmd("KEYS")
            .arg(format!("{}:{pattern}", self.prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        (conn, keys)
    }

    /// Counts in the store under `pattern` (`load:*`, `load:n1`), summed per field;
    /// asserts none is negative.
    async fn store_counts(&mut self, pattern: &str) -> BTreeMap<Field, i64> {
        let (mut conn, keys) = self.keys(pattern).await;
        let mut totals = BTreeMap::new();
        for key in keys {
            let pairs: Vec<(String, i64)> = redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            for (f, n) in pairs {
                assert!(n >= 0, "{key} {f} = {n}");
                *totals.entry(Field::parse(&f).unwrap()).or_insert(0) += n;
            }
        }
        totals.retain(|_, n| *n != 0);
        totals
    }

    async fn store_totals(&mut self) -> BTreeMap<Field, i64> {
        self.store_counts("load:*").await
    }

    /// The calls that must be counted: alive nodes' and dead, unadopted nodes'.
    fn truth(&self) -> BTreeMap<Field, i64> {
        let mut truth = BTreeMap::new();
        for node in &self.nodes {
            if node.alive {
                for (field, n) in node.book.counts() {
                    *truth.entry(field).or_insert(0) += i64::from(n);
                }
            } else {
                for (field, n) in &node.dead_entry {
                    *truth.entry(field.clone()).or_insert(0) += n;
                }
            }
        }
        truth.retain(|_, n| *n != 0);
        truth
    }

    async fn apply(&mut self, i: usize, step: Step) -> bool {
        let node = &mut self.nodes[i];
        if !node.reachable || step == Step::Nothing {
            return true;
        }
        node.store.apply(&[step]).await.unwrap()[0]
    }

    async fn beat(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if node.alive && node.reachable {
            node.store.rewrite(&node.book.counts()).await.unwrap();
            node.store.beat("udp:127.0.0.1:5060").await.unwrap();
        }
    }

    /// Node `by` restores `calls` (its own after a restart, or a dead node's): the
    /// store counts them already.
    fn take_over(&mut self, by: usize, calls: Vec<(u64, u32)>) {
        for (_, dest) in calls {
            let ticket = self.ticket();
            let step = self.nodes[by].book.taken(Take {
                ticket,
                kind: TakeKind::Counted,
                destination: dest,
                resources: vec![(Arc::from("vm"), CAPACITY)],
            });
            assert_eq!(step, Step::Nothing);
            self.nodes[by].calls.push((ticket, dest));
        }
    }

    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    async fn run(&mut self, action: Action) {
        match action {
            Action::Take {
                node,
                dest,
                reserve,
            } => {
                if !self.nodes[node].alive {
                    return;
                }
                let reserve = reserve || dest == 1;
                let ticket = self.ticket();
                let take = Take {
                    ticket,
                    kind: if reserve {
                        TakeKind::Reserve
                    } else {
                        TakeKind::Count
                    },
                    destination: dest,
                    resources: vec![(Arc::from("vm"), CAPACITY)],
                };
                let step = self.nodes[node].book.taken(take);
                let granted = self.apply(node, step).await;
                if granted {
                    self.nodes[node].calls.push((ticket, dest));
                    if dest == 1 && !self.lagging {
                        let truth = self.truth().get(&field(dest)).copied().unwrap_or(0);
                        assert!(
                            truth <= i64::from(CAPACITY),
                            "granted past capacity: {truth}"
                        );
                    }
                } else {
                    self.nodes[node].book.refused(ticket);
                    let _ = self.nodes[node].book.released(ticket);
                }
            }
            Action::Release { node, pick } => {
                let n = &mut self.nodes[node];
                if !n.alive || n.calls.is_empty() {
                    return;
                }
                let (ticket, _) = n.calls.remove(pick % n.calls.len());
                let step = n.book.released(ticket);
                self.apply(node, step).await;
            }
            Action::Outage { node } => {
                let n = &mut self.nodes[node];
                n.reachable = !n.reachable;
                self.lagging = true;
            }
            Action::Beat { node } => self.beat(node).await,
            Action::Kill { node } => {
                // Its entry in the store stays, counted, until adopted; its heartbeat
                // is made old at once rather than waited for.
                let n = &mut self.nodes[node];
                if !n.alive {
                    return;
                }
                n.alive = false;
                let mut conn = connection().await;
                let () = redis::cmd("HSET")
                    .arg(format!("{}:nodes", self.prefix))
                    .arg(format!("n{node}"))
                    .arg(0)
                    .query_async(&mut conn)
                    .await
                    .map(|_: i64| ())
                    .unwrap();
                // Its entry keeps what it last wrote, stale if it died unreachable.
                self.nodes[node].dead_entry = self.store_counts(&format!("load:n{node}")).await;
                self.nodes[node].reachable = true;
                // Its calls are stored for adoption (all answered, and stored just before
                // it died, in this model).
                let () = redis::cmd("DEL")
                    .arg(format!("{}:calls:n{node}", self.prefix))
                    .query_async(&mut conn)
                    .await
                    .map(|_: i64| ())
                    .unwrap();
                let calls: Vec<(String, Option<String>)> = self.nodes[node]
                    .calls
                    .iter()
                    .map(|(t, d)| (t.to_string(), Some(d.to_string())))
                    .collect();
                self.nodes[node].store.store_calls(calls).await.unwrap();
            }
            Action::Adopt { dead } => {
                let Some(by) = (0..NODES).find(|&i| self.nodes[i].alive && self.nodes[i].reachable)
                else {
                    return;
                };
                if self.nodes[dead].alive {
                    return;
                }
                let Some(stored) = self.nodes[by]
                    .store
                    .adopt(&format!("n{dead}"), Duration::from_millis(1))
                    .await
                    .unwrap()
                else {
                    return;
                };
                assert_eq!(stored.len(), self.nodes[dead].calls.len());
                let calls = std::mem::take(&mut self.nodes[dead].calls);
                self.nodes[dead].book = Book::default();
                self.nodes[dead].dead_entry.clear();
                self.take_over(by, calls);
                self.beat(by).await;
            }
            Action::Restart { node } => {
                let n = &mut self.nodes[node];
                if n.alive {
                    return;
                }
                n.alive = true;
                n.reachable = true;
                let calls = std::mem::take(&mut n.calls);
                n.book = Book::default();
                n.dead_entry.clear();
                self.take_over(node, calls);
                self.beat(node).await;
            }
            Action::Settle => self.settle().await,
        }
    }

    async fn settle(&mut self) {
        for i in 0..NODES {
            self.nodes[i].reachable = true;
            self.beat(i).await;
        }
        self.lagging = false;
        assert_eq!(self.store_totals().await, self.truth(), "after settling");
    }

    async fn cleanup(&mut self) {
        let (mut conn, keys) = self.keys("*").await;
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        drop(self.admin.clone());
    }
}

/// The machine's Redis, or the test reports itself skipped (a failure under CI).
fn redis_here() -> bool {
    let here = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:6379".parse().unwrap(),
        Duration::from_secs(1),
    )
    .is_ok();
    if !here {
        siplb_testkit::skip("no Redis at 127.0.0.1:6379 for the reconciliation property test");
    }
    here
}

#[test]
fn counts_never_go_negative_nor_drift() {
    if !redis_here() {
        return;
    }
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    });
    let strategy = (any::<u64>(), prop::collection::vec(action(), 1..60));
    let outcome = runner.run(&strategy, |(case, actions)| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut world = World::new(case).await;
            for a in actions {
                world.run(a).await;
                let _ = world.store_totals().await;
            }
            world.settle().await;
            // Every call ends, dead nodes adopted first: every count reads 0.
            for dead in 0..NODES {
                world.run(Action::Adopt { dead }).await;
            }
            for node in 0..NODES {
                if !world.nodes[node].alive {
                    world.run(Action::Restart { node }).await;
                }
                while !world.nodes[node].calls.is_empty() {
                    world.run(Action::Release { node, pick: 0 }).await;
                }
            }
            world.settle().await;
            assert!(world.store_totals().await.is_empty());
            world.cleanup().await;
        });
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}
