//! The live dashboard's data: once a second a snapshot of the destinations (`lb_list`'s
//! entries), the core's counters and the last status events, pushed to every open page
//! as server-sent events, and the last minutes of rates kept so that a page opened now
//! draws its charts at once.
//!
//! The sampler is the only reader of the core's counters for the page, however many
//! pages are open: a page costs the core nothing.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::body::Frame;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::state::{BoxFuture, MiState};

/// Seconds between two samples.
const PERIOD: Duration = Duration::from_secs(1);
/// Samples kept: five minutes.
const HISTORY: usize = 300;
/// Status events kept for the page.
const EVENTS: usize = 20;

/// The core's running totals, as the dashboard reads them once a second.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pulse {
    /// Calls sent to a destination since start.
    pub calls_routed: u64,
    /// Calls moved to another destination after a failure, since start.
    pub failovers: u64,
    /// Calls siplb answered itself because nothing fits, by cause, since start.
    pub rejected: Vec<(&'static str, u64)>,
    /// Calls up now.
    pub calls_up: u64,
}

/// Where the dashboard reads [`Pulse`]s (the proxy core's counters). Any
/// `Fn() -> impl Future<Output = Option<Pulse>>` is one; `None` when the core does not
/// answer (it is stopping).
pub trait PulseSource: Send + Sync {
    /// The totals now.
    fn pulse(&self) -> BoxFuture<'_, Option<Pulse>>;
}

impl<F, Fut> PulseSource for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: std::future::Future<Output = Option<Pulse>> + Send + 'static,
{
    fn pulse(&self) -> BoxFuture<'_, Option<Pulse>> {
        Box::pin(self())
    }
}

/// The last status events (failover, probe, operator, drained), newest last, for the
/// page. Shared between whoever publishes the events and the management interface.
#[derive(Debug, Default)]
pub struct EventLog(Mutex<VecDeque<Value>>);

impl EventLog {
    /// Keeps `event` (a JSON object, as the webhook gets it), stamped with the time now
    /// as `"at"` (Unix milliseconds); the oldest beyond twenty are dropped.
    pub fn push(&self, mut event: Value) {
        if let Value::Object(fields) = &mut event {
            fields.insert("at".to_owned(), Value::from(unix_ms()));
        }
        if let Ok(mut events) = self.0.lock() {
            if events.len() == EVENTS {
                events.pop_front();
            }
            events.push_back(event);
        }
    }

    fn recent(&self) -> Vec<Value> {
        self.0
            .lock()
            .map(|events| events.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// One second of the charts: rates over the period before `t`.
#[derive(Clone, Debug, Serialize)]
struct Sample {
    /// Unix milliseconds.
    t: u64,
    calls: f64,
    failovers: f64,
    rejected: f64,
    /// Rejections per second by cause, only the causes that had any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    causes: Vec<(&'static str, f64)>,
}

fn rate(now: u64, before: u64, seconds: f64) -> f64 {
    let per_second = now.saturating_sub(before) as f64 / seconds;
    (per_second * 100.0).round() / 100.0
}

fn sample(now: &Pulse, before: &Pulse, seconds: f64, t: u64) -> Sample {
    let causes: Vec<(&'static str, f64)> = now
        .rejected
        .iter()
        .map(|&(cause, n)| {
            let was = before
                .rejected
                .iter()
                .find(|(c, _)| *c == cause)
                .map_or(0, |&(_, n)| n);
            (cause, rate(n, was, seconds))
        })
        .filter(|&(_, r)| r > 0.0)
        .collect();
    let total = |p: &Pulse| p.rejected.iter().map(|&(_, n)| n).sum::<u64>();
    Sample {
        t,
        calls: rate(now.calls_routed, before.calls_routed, seconds),
        failovers: rate(now.failovers, before.failovers, seconds),
        rejected: rate(total(now), total(before), seconds),
        causes,
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the sampler publishes and the pages read.
#[derive(Debug)]
pub(crate) struct Board {
    history: Mutex<VecDeque<Sample>>,
    latest: watch::Sender<Option<Bytes>>,
    closed: Arc<AtomicBool>,
}

impl Default for Board {
    fn default() -> Self {
        Self {
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            latest: watch::channel(None).0,
            closed: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Board {
    fn history(&self) -> Vec<Sample> {
        self.history
            .lock()
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn record(&self, sample: Sample) {
        if let Ok(mut history) = self.history.lock() {
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(sample);
        }
    }

    /// Ends every page's stream (the server is stopping).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.latest.send_replace(None);
    }
}

#[derive(Serialize)]
struct Snapshot<'a> {
    t: u64,
    version: &'a str,
    uptime: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    totals: Option<&'a Pulse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sample: Option<&'a Sample>,
    destinations: Value,
    events: Vec<Value>,
}

impl MiState {
    /// One snapshot, as the page gets it.
    fn snapshot(&self, totals: Option<&Pulse>, sample: Option<&Sample>) -> Bytes {
        let destinations = crate::dispatch::list_value(&self.balancer.snapshot());
        let snapshot = Snapshot {
            t: unix_ms(),
            version: &self.version,
            uptime: self.started.elapsed().as_secs(),
            totals,
            sample,
            destinations,
            events: self.events.as_ref().map(|e| e.recent()).unwrap_or_default(),
        };
        serde_json::to_vec(&snapshot).map_or_else(|_| Bytes::new(), Bytes::from)
    }

    /// Samples once a second until the server stops (the task is aborted).
    pub(crate) async fn run_sampler(&self) {
        let mut ticks = tokio::time::interval(PERIOD);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut before: Option<(Pulse, tokio::time::Instant)> = None;
        loop {
            ticks.tick().await;
            let pulse = match &self.pulse {
                Some(source) => source.pulse().await,
                None => None,
            };
            let now = tokio::time::Instant::now();
            let mut latest = None;
            if let Some(pulse) = &pulse {
                if let Some((was, at)) = &before {
                    let seconds = now.duration_since(*at).as_secs_f64().max(0.001);
                    let s = sample(pulse, was, seconds, unix_ms());
                    self.board.record(s.clone());
                    latest = Some(s);
                }
                before = Some((pulse.clone(), now));
            }
            let snapshot = self.snapshot(pulse.as_ref(), latest.as_ref());
            if self.board.closed.load(Ordering::Relaxed) {
                return;
            }
            self.board.latest.send_replace(Some(snapshot));
        }
    }

    /// A page's stream: a `hello` event with the history and whether this client may
    /// change anything, then a `snapshot` event each second, until the client goes away
    /// or the server stops.
    pub(crate) fn event_stream(&self, writable: bool) -> EventBody {
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let mut latest = self.board.latest.subscribe();
        let hello = serde_json::json!({
            "writable": writable,
            "period_ms": PERIOD.as_millis() as u64,
            "history": self.board.history(),
        });
        let closed = Arc::clone(&self.board.closed);
        let first = Bytes::from(format!("retry: 3000\nevent: hello\ndata: {hello}\n\n"));
        tokio::spawn(async move {
            if closed.load(Ordering::Relaxed) || tx.send(first).await.is_err() {
                return;
            }
            // Before the first sample the value is empty; after, empty means stopping.
            let mut started = false;
            loop {
                let current = latest.borrow_and_update().clone();
                match current {
                    Some(snapshot) => {
                        let mut frame = Vec::with_capacity(snapshot.len() + 24);
                        frame.extend_from_slice(b"event: snapshot\ndata: ");
                        frame.extend_from_slice(&snapshot);
                        frame.extend_from_slice(b"\n\n");
                        if tx.send(Bytes::from(frame)).await.is_err() {
                            return;
                        }
                        started = true;
                    }
                    None if started || closed.load(Ordering::Relaxed) => return,
                    None => {}
                }
                tokio::select! {
                    changed = latest.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        EventBody(rx)
    }
}

/// A response body fed by a task, one frame per message.
#[derive(Debug)]
pub(crate) struct EventBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|next| next.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pulse(calls: u64, full: u64, shed: u64) -> Pulse {
        Pulse {
            calls_routed: calls,
            failovers: calls / 10,
            rejected: vec![("full", full), ("shed", shed)],
            calls_up: 0,
        }
    }

    #[test]
    fn samples_are_rates_over_the_period() {
        let s = sample(&pulse(300, 4, 0), &pulse(100, 0, 0), 2.0, 7);
        assert_eq!(s.t, 7);
        assert!((s.calls - 100.0).abs() < 1e-9);
        assert!((s.failovers - 10.0).abs() < 1e-9);
        assert!((s.rejected - 2.0).abs() < 1e-9);
        assert_eq!(
            s.causes,
            vec![("full", 2.0)],
            "causes without rejections are left out"
        );
        // Counters never run backwards; if a source did, the rate is zero, not negative.
        let s = sample(&pulse(10, 0, 0), &pulse(20, 1, 1), 1.0, 0);
        assert!(s.calls == 0.0 && s.rejected == 0.0);
    }

    #[test]
    fn event_log_keeps_the_last_twenty_stamped() {
        let log = EventLog::default();
        for id in 0..25 {
            log.push(serde_json::json!({ "id": id }));
        }
        let recent = log.recent();
        assert_eq!(recent.len(), EVENTS);
        assert_eq!(recent[0]["id"], 5);
        assert_eq!(recent[19]["id"], 24);
        assert!(recent[19]["at"].as_u64().is_some_and(|t| t > 0));
    }

    #[test]
    fn history_is_bounded() {
        let board = Board::default();
        for t in 0..(HISTORY as u64 + 10) {
            board.record(sample(&pulse(t, 0, 0), &pulse(0, 0, 0), 1.0, t));
        }
        let h = board.history();
        assert_eq!(h.len(), HISTORY);
        assert_eq!(h[0].t, 10);
    }
}
