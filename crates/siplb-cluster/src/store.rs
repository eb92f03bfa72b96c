//! The connection to the shared store (Redis) and the operations the cluster makes on
//! it. Every operation is one round trip: steps of the book go out pipelined, and
//! each check-and-write is one script (`scripts.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use crate::book::{Field, Step};
use crate::scripts;

pub use redis::RedisError;

/// What one node looked like at the last heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeBeat {
    pub name: String,
    /// Its last heartbeat, in ms of the store's clock.
    pub beat_ms: i64,
    /// Its calls per field.
    pub loads: Vec<(Field, u32)>,
    /// Calls it has stored (answered calls, for adoption).
    pub calls: u64,
}

/// What a heartbeat reads back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Beat {
    /// The store's clock, ms since the Unix epoch.
    pub now_ms: i64,
    pub nodes: Vec<NodeBeat>,
    /// Shared status per destination id, encoded (`SharedState::encode`).
    pub status: Vec<(u32, String)>,
    /// The reload counter.
    pub reload: i64,
    /// Every node's SIP address, as it published it (dead ones' kept).
    pub addresses: Vec<(String, String)>,
    /// Dead node -> the node that adopted its calls.
    pub adopted: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
struct Shas {
    reserve: String,
    increment: String,
    release: String,
    rewrite: String,
    beat: String,
    adopt: String,
}

/// One connection to the store, as node `node` of the cluster under `prefix`.
#[derive(Clone)]
pub struct Store {
    conn: MultiplexedConnection,
    prefix: String,
    node: String,
    shas: Shas,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

type BeatReply = (
    i64,
    Vec<(String, i64, Vec<String>, u64)>,
    Vec<String>,
    i64,
    Vec<String>,
    Vec<String>,
);

fn pairs(flat: Vec<String>) -> impl Iterator<Item = (String, String)> {
    let mut it = flat.into_iter();
    std::iter::from_fn(move || Some((it.next()?, it.next()?)))
}

impl Store {
    /// Connects (waiting at most `timeout` for the connection and for each answer)
    /// and loads the scripts.
    pub async fn connect(
        url: &str,
        prefix: &str,
        node: &str,
        timeout: Duration,
    ) -> Result<Store, RedisError> {
        let client = redis::Client::open(url)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let mut load = async |code: &str| -> Result<String, RedisError> {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(code)
                .query_async(&mut conn)
                .await
        };
        let shas = Shas {
            reserve: load(scripts::RESERVE).await?,
            increment: load(scripts::INCREMENT).await?,
            release: load(scripts::RELEASE).await?,
            rewrite: load(scripts::REWRITE).await?,
            beat: load(scripts::BEAT).await?,
            adopt: load(scripts::ADOPT).await?,
        };
        Ok(Store {
            conn,
            prefix: prefix.to_owned(),
            node: node.to_owned(),
            shas,
        })
    }

    fn key(&self, what: &str, node: &str) -> String {
        format!("{}:{what}:{node}", self.prefix)
    }

    fn script(&self, sha: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(sha).arg(0).arg(&self.prefix).arg(&self.node);
        cmd
    }

    /// Carries out `steps` in order, in one round trip; for each, whether the store
    /// granted it (only a reservation can be refused).
    pub async fn apply(&mut self, steps: &[Step]) -> Result<Vec<bool>, RedisError> {
        let mut pipe = redis::pipe();
        let mut sent = Vec::with_capacity(steps.len());
        for step in steps {
            let (sha, fields): (&str, Vec<(String, Option<u32>)>) = match step {
                Step::Reserve { fields, .. } => (
                    &self.shas.reserve,
                    fields.iter().map(|(f, c)| (f.key(), Some(*c))).collect(),
                ),
                Step::Increment(fields) => (
                    &self.shas.increment,
                    fields.iter().map(|f| (f.key(), None)).collect(),
                ),
                Step::Decrement(fields) => (
                    &self.shas.release,
                    fields.iter().map(|f| (f.key(), None)).collect(),
                ),
                Step::Nothing => {
                    sent.push(false);
                    continue;
                }
            };
            let mut cmd = self.script(sha);
            for (field, capacity) in fields {
                cmd.arg(field);
                if let Some(c) = capacity {
                    cmd.arg(c);
                }
            }
            pipe.add_command(cmd);
            sent.push(true);
        }
        let mut answers = if sent.iter().any(|s| *s) {
            pipe.query_async::<Vec<i64>>(&mut self.conn)
                .await?
                .into_iter()
        } else {
            Vec::new().into_iter()
        };
        Ok(sent
            .into_iter()
            .map(|s| !s || answers.next() == Some(1))
            .collect())
    }

    /// Makes this node's counts in the store exactly `counts`.
    pub async fn rewrite(&mut self, counts: &BTreeMap<Field, u32>) -> Result<(), RedisError> {
        let mut cmd = self.script(&self.shas.rewrite);
        for (field, count) in counts {
            cmd.arg(field.key()).arg(*count);
        }
        cmd.query_async::<i64>(&mut self.conn).await.map(drop)
    }

    /// The heartbeat: says this node is alive at SIP `address` and reads every node's
    /// state back.
    pub async fn beat(&mut self, address: &str) -> Result<Beat, RedisError> {
        let (now_ms, listed, status, reload, addresses, adopted): BeatReply = self
            .script(&self.shas.beat)
            .arg(address)
            .query_async(&mut self.conn)
            .await?;
        let nodes = listed
            .into_iter()
            .map(|(name, beat_ms, loads, calls)| NodeBeat {
                name,
                beat_ms,
                loads: pairs(loads)
                    .filter_map(|(f, n)| {
                        // A count below zero cannot be written by siplb; read as none.
                        Some((Field::parse(&f)?, n.parse::<i64>().ok()?.max(0) as u32))
                    })
                    .collect(),
                calls,
            })
            .collect();
        let status = pairs(status)
            .filter_map(|(id, state)| Some((id.parse().ok()?, state)))
            .collect();
        Ok(Beat {
            now_ms,
            nodes,
            status,
            reload,
            addresses: pairs(addresses).collect(),
            adopted: pairs(adopted).collect(),
        })
    }

    /// Takes over `dead`'s counts and stored calls if it has been silent longer than
    /// `timeout`; returns the calls (key, stored value), or `None` when it is alive
    /// again or was adopted by another node first.
    pub async fn adopt(
        &mut self,
        dead: &str,
        timeout: Duration,
    ) -> Result<Option<Vec<(String, String)>>, RedisError> {
        let calls: Option<Vec<String>> = self
            .script(&self.shas.adopt)
            .arg(dead)
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
            .query_async(&mut self.conn)
            .await?;
        Ok(calls.map(|flat| pairs(flat).collect()))
    }

    /// This node's stored calls (key, stored value).
    pub async fn own_calls(&mut self) -> Result<Vec<(String, String)>, RedisError> {
        let key = self.key("calls", &self.node);
        let flat: Vec<String> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut self.conn)
            .await?;
        Ok(pairs(flat).collect())
    }

    /// Makes this node's stored calls exactly `calls` (after the store came back,
    /// perhaps empty from a restart).
    pub async fn replace_calls(
        &mut self,
        calls: impl ExactSizeIterator<Item = (String, String)>,
    ) -> Result<(), RedisError> {
        let key = self.key("calls", &self.node);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(&key).ignore();
        let mut chunk = Vec::with_capacity(512);
        let flush = |pipe: &mut redis::Pipeline, chunk: &mut Vec<(String, String)>| {
            if !chunk.is_empty() {
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg(std::mem::take(chunk))
                    .ignore();
            }
        };
        for call in calls {
            chunk.push(call);
            if chunk.len() == 512 {
                flush(&mut pipe, &mut chunk);
            }
        }
        flush(&mut pipe, &mut chunk);
        pipe.query_async::<()>(&mut self.conn).await
    }

    /// Stores (`Some`) or forgets (`None`) this node's calls, by key.
    pub async fn store_calls(
        &mut self,
        changes: impl IntoIterator<Item = (String, Option<String>)>,
    ) -> Result<(), RedisError> {
        let key = self.key("calls", &self.node);
        let mut pipe = redis::pipe();
        let mut any = false;
        for (call, value) in changes {
            match value {
                Some(v) => pipe.cmd("HSET").arg(&key).arg(call).arg(v).ignore(),
                None => pipe.cmd("HDEL").arg(&key).arg(call).ignore(),
            };
            any = true;
        }
        if !any {
            return Ok(());
        }
        pipe.query_async::<()>(&mut self.conn).await
    }

    /// Publishes destination statuses (id, encoded) for the other nodes.
    pub async fn publish_status(&mut self, states: &[(u32, String)]) -> Result<(), RedisError> {
        if states.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(format!("{}:status", self.prefix));
        for (id, state) in states {
            cmd.arg(*id).arg(state);
        }
        cmd.query_async::<i64>(&mut self.conn).await.map(drop)
    }

    /// Tells the other nodes to reload their table; returns the new counter.
    pub async fn bump_reload(&mut self) -> Result<i64, RedisError> {
        redis::cmd("INCR")
            .arg(format!("{}:reload", self.prefix))
            .query_async(&mut self.conn)
            .await
    }

    /// Leaves the cluster with nothing up: this node's entries go.
    pub async fn leave(&mut self) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HDEL")
            .arg(format!("{}:nodes", self.prefix))
            .arg(&self.node)
            .ignore()
            .cmd("DEL")
            .arg(self.key("load", &self.node))
            .arg(self.key("calls", &self.node))
            .ignore();
        pipe.query_async::<()>(&mut self.conn).await
    }
}
