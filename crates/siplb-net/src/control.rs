//! Questions other tasks (the management interface) put to the proxy core's task,
//! answered between two messages: exact, and no lock on the hot path.

use siplb_proxy::{CallSummary, PersistedCall, ProbeState, Stats};
use tokio::sync::{mpsc, oneshot};

/// A snapshot of the core's counters and probe results.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub stats: Stats,
    pub probes: Vec<(u32, ProbeState)>,
    pub calls: usize,
    /// Answered calls not yet handed over to be stored (see `Proxy::calls_to_store`).
    pub calls_to_store: usize,
    pub transactions: usize,
    pub tcp_open: usize,
    pub tcp_refused: u64,
    pub tcp_timed_out: u64,
    /// How busy the core is, and the reduction it asks of callers (RFC 7339).
    pub core: siplb_proxy::CoreLoad,
}

#[derive(Debug)]
pub(crate) enum Query {
    Calls(oneshot::Sender<Vec<CallSummary>>),
    Report(oneshot::Sender<Report>),
    EndCall(String, oneshot::Sender<usize>),
    CheckDrains(oneshot::Sender<()>),
    Restore(Vec<PersistedCall>, oneshot::Sender<usize>),
}

/// A handle to ask the running core; cheap to clone.
#[derive(Clone, Debug)]
pub struct Control {
    tx: mpsc::Sender<Query>,
}

/// The core's end of [`Control`], handed to [`crate::serve`] in its options.
#[derive(Debug)]
pub struct ControlReceiver(pub(crate) mpsc::Receiver<Query>);

/// A control handle and the receiver the serving task answers on.
pub fn control() -> (Control, ControlReceiver) {
    let (tx, rx) = mpsc::channel(64);
    (Control { tx }, ControlReceiver(rx))
}

impl Control {
    /// The calls being set up or up; empty when the core is not running.
    pub async fn calls(&self) -> Vec<CallSummary> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Query::Calls(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Ends the calls with this Call-ID; how many (0 when the core is not running).
    pub async fn end_call(&self, call_id: &str) -> usize {
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send(Query::EndCall(call_id.to_owned(), tx))
            .await
            .is_err()
        {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// Has the core publish the drains that are over (an operator has just started
    /// one): answered once the core has looked.
    pub async fn check_drains(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Query::CheckDrains(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Brings calls stored elsewhere into the core (a cluster adopting a dead node's
    /// calls); how many came back.
    pub async fn restore(&self, calls: Vec<PersistedCall>) -> usize {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Query::Restore(calls, tx)).await.is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// Counters and probe results; `None` when the core is not running.
    pub async fn report(&self) -> Option<Report> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Query::Report(tx)).await.ok()?;
        rx.await.ok()
    }
}
