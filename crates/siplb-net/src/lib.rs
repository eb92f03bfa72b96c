//! The I/O edge of siplb: sockets and timers around the sans-I/O [`Proxy`].
//!
//! One task owns the proxy core and handles every message in arrival order. It reads
//! the UDP sockets itself; TCP connection tasks only read and frame. UDP replies leave
//! from the listener socket of the message's family; TCP messages travel over the
//! connection open to the peer (the one a request came on, so responses go back over
//! it), opened on demand otherwise.

mod control;
mod deadline;
mod icmp;
mod tcp;
mod tls;
mod udp;

pub use control::{Control, ControlReceiver, Report, control};
pub use tcp::{TcpLimits, TcpStats};
pub use tls::{ServerNames, Tls, TlsFiles};

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use siplb_proxy::{
    CoreEvent, DialogChange, Incoming, Peer, Proxy, StatusChange, Transmit, Transport,
};
use siplb_sip::{Limits, Message, ParseError};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// What TCP connection tasks hand to the core task.
#[derive(Debug)]
pub(crate) enum Event {
    Message {
        peer: Peer,
        msg: Message,
    },
    /// The stream lost its framing here; the connection closes after the answer.
    Malformed {
        peer: Peer,
        error: Box<ParseError>,
    },
    /// A TCP or TLS connection is up; messages for `peer` go into `tx`.
    Connected {
        peer: Peer,
        tx: mpsc::Sender<Bytes>,
    },
    Closed {
        peer: Peer,
    },
    /// ICMP said `peer` cannot be reached (a UDP port where nothing listens).
    Unreachable {
        peer: Peer,
    },
}

/// Bound sockets, before they are served: binding first lets the caller report
/// "address in use" before anything starts, and learn ports picked by the OS. They are
/// plain std sockets until [`serve`] registers them with the runtime it runs on, so
/// that the thread that reads them is the one that handles what they carry.
#[derive(Debug)]
pub struct Bound {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
    tls: Vec<std::net::TcpListener>,
}

impl Bound {
    /// Binds a listener for each transport and address (the core's [`Peer`] names
    /// them, as it names every other end of a hop).
    pub fn bind(endpoints: &[Peer]) -> io::Result<Bound> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut tls = Vec::new();
        for e in endpoints {
            let named = |err: io::Error| {
                io::Error::new(err.kind(), format!("{}:{}: {err}", e.transport, e.addr))
            };
            match e.transport {
                Transport::Udp => udp.push(bind_udp(e.addr).map_err(named)?),
                Transport::Tcp => tcp.push(bind_tcp(e.addr).map_err(named)?),
                Transport::Tls => tls.push(bind_tcp(e.addr).map_err(named)?),
            }
        }
        Ok(Bound { udp, tcp, tls })
    }

    /// The addresses actually bound (ports chosen by the OS filled in).
    pub fn local_endpoints(&self) -> Vec<Peer> {
        let of = |transport, addr: io::Result<SocketAddr>| {
            addr.ok().map(|addr| Peer { transport, addr })
        };
        let udp = self.udp.iter().map(|s| of(Transport::Udp, s.local_addr()));
        let tcp = self.tcp.iter().map(|s| of(Transport::Tcp, s.local_addr()));
        let tls = self.tls.iter().map(|s| of(Transport::Tls, s.local_addr()));
        udp.chain(tcp).chain(tls).flatten().collect()
    }
}

/// How [`serve`] runs.
#[derive(Debug)]
pub struct Options {
    pub limits: Limits,
    /// Bounds on TCP connections.
    pub tcp: TcpLimits,
    /// After shutdown is asked for: how long calls that are up may still end.
    pub drain: std::time::Duration,
    /// Where destination status changes made by the core go (webhook, metrics).
    pub status_changes: Option<mpsc::UnboundedSender<StatusChange>>,
    /// Questions from other tasks (see `control.rs`).
    pub control: Option<ControlReceiver>,
    /// Where changes to the stored calls go (the persistence task, which polls: a
    /// std channel's send wakes no one).
    pub dialog_changes: Option<std::sync::mpsc::Sender<DialogChange>>,
    /// Certificates for TLS listeners and destinations; without, TLS listeners are
    /// refused at start and TLS destinations fail at the transport.
    pub tls: Option<Arc<Tls>>,
    /// In a cluster: where the shared store's answers to reservations come from
    /// (ticket, granted), and where changes to the stored calls go too.
    pub cluster: Option<ClusterLinks>,
}

/// The core's links to a cluster's driver (siplb-cluster).
#[derive(Debug)]
pub struct ClusterLinks {
    pub reservations: mpsc::UnboundedReceiver<(u64, bool)>,
    pub dialog_changes: mpsc::UnboundedSender<DialogChange>,
}

/// Receive buffer asked for on UDP listeners: a burst that arrives while the core is
/// off the CPU for a few milliseconds waits there instead of being dropped (the
/// kernel's default, about 208 KiB, overflowed at 1750 calls/s in the benchmark). The
/// kernel caps it at `net.core.rmem_max`.
const UDP_RECV_BUFFER: usize = 8 << 20;

/// Datagrams read from one socket, or messages taken from the TCP tasks, before the
/// core sends what they produced and looks at its timers and other inputs again.
const BATCH: usize = 64;

fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: a smaller buffer is no reason not to start.
    let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_RECV_BUFFER / 2);
    socket.set_nonblocking(true)?;
    icmp::enable(&socket, addr.is_ipv6());
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The proxy core running on a thread of its own; see [`spawn`].
#[derive(Debug)]
pub struct Core {
    done: tokio::sync::oneshot::Receiver<io::Result<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Core {
    /// Waits until [`serve`] has returned (after shutdown and draining).
    pub async fn finished(mut self) -> io::Result<()> {
        let result = (&mut self.done)
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the proxy core thread ended abnormally")));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        result
    }
}

/// Runs [`serve`] on a new thread with a single-threaded runtime of its own: the
/// thread that waits on the sockets is the one that parses, routes and sends, so that
/// a datagram costs no hand-over between threads (no wake-up of another thread, no
/// channel), which under load is most of what a proxy's CPU goes to. The
/// management interface, persistence and webhooks stay on the caller's runtime and
/// talk to the core through channels.
pub fn spawn(
    proxy: Proxy,
    bound: Bound,
    options: Options,
    shutdown: watch::Receiver<bool>,
) -> io::Result<Core> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("siplb-core".to_owned())
        .spawn(move || {
            let result = runtime.block_on(serve(proxy, bound, options, shutdown));
            let _ = done_tx.send(result);
        })?;
    Ok(Core {
        done,
        thread: Some(thread),
    })
}

/// Serves the proxy on the bound sockets until `shutdown` turns true, then drains:
/// new calls are refused with 503 while calls that are up may end, for at most
/// `options.drain`, and returns once none is left. UDP sockets are read here, by the
/// task that owns the core; TCP connections have tasks of their own (on the same
/// runtime) that frame the stream and hand over whole messages.
pub async fn serve(
    mut proxy: Proxy,
    bound: Bound,
    options: Options,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let Options {
        limits,
        tcp: tcp_limits,
        drain,
        status_changes,
        control,
        dialog_changes,
        tls,
        cluster,
    } = options;
    let (mut reservations, cluster_dialogs) = match cluster {
        Some(c) => (Some(c.reservations), Some(c.dialog_changes)),
        None => (None, None),
    };
    let mut control = control.map(|c| c.0);
    let tcp_stats = Arc::new(TcpStats::default());
    let slots = tcp::Slots::new(tcp_limits, Arc::clone(&tcp_stats));
    let (events_tx, mut events) = mpsc::channel::<Event>(4096);
    if !bound.tls.is_empty() && tls.as_ref().and_then(|t| t.acceptor()).is_none() {
        return Err(io::Error::other(
            "a TLS listener needs [tls] certificate and private_key",
        ));
    }
    let streams = bound.tcp.into_iter().map(|l| (l, None));
    for (listener, tls) in streams.chain(bound.tls.into_iter().map(|l| (l, tls.clone()))) {
        tokio::spawn(tcp::accept_loop(
            TcpListener::from_std(listener)?,
            events_tx.clone(),
            limits,
            Arc::clone(&slots),
            tls,
        ));
    }
    let udp = bound
        .udp
        .into_iter()
        .map(udp::UdpListener::new)
        .collect::<io::Result<Vec<_>>>()?;
    for listener in &udp {
        tokio::spawn(icmp::watch(Arc::clone(&listener.socket), events_tx.clone()));
    }
    let mut batches = udp::Batches::new();
    let mut connections: HashMap<Peer, mpsc::Sender<Bytes>> = HashMap::new();
    let mut pending: HashMap<Peer, Vec<Bytes>> = HashMap::new();
    let mut drain_until: Option<Instant> = None;
    let mut busy = BusyMeter::default();
    proxy.start(Instant::now());
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    proxy.set_wall_clock(Instant::now(), since_epoch);
    let mut deadline = deadline::Deadline::new()?;
    // Resolves once shutdown is asked for, or once nothing is left that could ask.
    // Made once and polled every turn: a `changed()` made afresh each turn joined the
    // watch's list of waiters and left it again on every message.
    let shutdown_asked = async move {
        loop {
            if *shutdown.borrow_and_update() || shutdown.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::pin!(shutdown_asked);
    let mut udp_streak = 0;
    loop {
        if let Some(until) = drain_until
            && (proxy.is_idle() || Instant::now() >= until)
        {
            info!(calls_left = proxy.calls(), "SIP transports stopped");
            return Ok(());
        }
        let mut next = proxy.poll_timeout();
        if let Some(until) = drain_until {
            next = Some(next.map_or(until, |d| d.min(until)));
        }
        deadline.set(next)?;
        let (turn, others_polled) = std::future::poll_fn(|cx| {
            // At low rates nearly every turn is one datagram; the sockets polled first
            // spare it polling every other input twice (on waking, and before sleeping
            // again). A run of such turns gives the others a poll first, so that a
            // steady stream of datagrams delays timers and the management interface by
            // a few turns at most.
            let udp_first = udp_streak < UDP_STREAK;
            if udp_first && let Poll::Ready(ready) = udp::poll_any_readable(&udp, cx) {
                return Poll::Ready((Turn::Udp(ready), false));
            }
            if drain_until.is_none() && shutdown_asked.as_mut().poll(cx).is_ready() {
                return Poll::Ready((Turn::Shutdown, true));
            }
            if let Poll::Ready(fired) = deadline.poll_fired(cx) {
                return Poll::Ready((Turn::Timer(fired), true));
            }
            if let Some(query) = poll_open(&mut control, cx, mpsc::Receiver::poll_recv) {
                return Poll::Ready((Turn::Control(query), true));
            }
            if let Some(answer) =
                poll_open(&mut reservations, cx, mpsc::UnboundedReceiver::poll_recv)
            {
                return Poll::Ready((Turn::Reservation(answer), true));
            }
            // The core holds a sender of its own: the events channel never closes.
            if let Poll::Ready(Some(event)) = events.poll_recv(cx) {
                return Poll::Ready((Turn::Event(event), true));
            }
            if !udp_first && let Poll::Ready(ready) = udp::poll_any_readable(&udp, cx) {
                return Poll::Ready((Turn::Udp(ready), true));
            }
            Poll::Pending
        })
        .await;
        udp_streak = if others_polled { 0 } else { udp_streak + 1 };
        // When this turn's work began, and whether it left input unread.
        let woke = Instant::now();
        let mut left_input = false;
        match turn {
            Turn::Shutdown => {
                info!(
                    calls = proxy.calls(),
                    ?drain,
                    "draining: new calls get 503, calls up may end"
                );
                proxy.set_draining(true);
                drain_until = Some(woke + drain);
            }
            Turn::Timer(fired) => {
                fired?;
                proxy.handle_timeout(woke);
            }
            Turn::Control(query) => answer(&mut proxy, &tcp_stats, query),
            Turn::Reservation((ticket, granted)) => {
                proxy.handle_reservation(woke, ticket, granted);
                while let Some(Ok((ticket, granted))) =
                    reservations.as_mut().map(mpsc::UnboundedReceiver::try_recv)
                {
                    proxy.handle_reservation(woke, ticket, granted);
                }
            }
            Turn::Event(event) => {
                // Take whatever else is already queued before sending anything, so a
                // busy core flushes its output once per batch instead of per message.
                let mut next = Some(event);
                let mut taken = 0;
                while let Some(event) = next.take() {
                    taken += 1;
                    match event {
                        Event::Message { peer, msg } => proxy.handle_message(woke, msg, peer),
                        Event::Malformed { peer, error } => {
                            proxy.handle_malformed(woke, peer, &error)
                        }
                        Event::Connected { peer, tx } => {
                            if let Some(queued) = pending.remove(&peer) {
                                for data in queued {
                                    let _ = tx.try_send(data);
                                }
                            }
                            connections.insert(peer, tx);
                        }
                        Event::Unreachable { peer } => proxy.handle_unreachable(woke, peer),
                        Event::Closed { peer } => {
                            connections.remove(&peer);
                            // Closed before it opened: what waited for it was never sent.
                            if pending
                                .remove(&peer)
                                .is_some_and(|queued| !queued.is_empty())
                            {
                                proxy.handle_unreachable(woke, peer);
                            }
                        }
                    }
                    if taken < BATCH {
                        next = events.try_recv().ok();
                    }
                }
                left_input = taken == BATCH;
            }
            Turn::Udp(ready) => {
                for socket in &udp {
                    left_input |= batches.read(socket, BATCH, |peer, data| {
                        proxy.handle(woke, Incoming { peer, data });
                    });
                }
                if let Err(e) = ready {
                    warn!(error = %e, "UDP socket not readable");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
        while let Some(event) = proxy.poll_event() {
            // A listener that has gone (shutting down) just misses the event.
            match event {
                CoreEvent::Dialog(change) => {
                    if let Some(tx) = &cluster_dialogs {
                        let _ = tx.send(change.clone());
                    }
                    if let Some(tx) = &dialog_changes {
                        let _ = tx.send(change);
                    }
                }
                CoreEvent::Status(change) => {
                    if let Some(tx) = &status_changes {
                        let _ = tx.send(change);
                    }
                }
            }
        }
        while let Some(Transmit { peer, data }) = proxy.poll_transmit() {
            match peer.transport {
                Transport::Udp => batches.push(peer.addr, data),
                Transport::Tcp | Transport::Tls => {
                    if let Some(tx) = connections.get(&peer) {
                        if tx.try_send(data).is_err() {
                            warn!(%peer, "TCP connection backlog full or closed; message dropped");
                        }
                    } else {
                        let queue = pending.entry(peer).or_default();
                        if queue.is_empty() {
                            tokio::spawn(tcp::connect(
                                peer,
                                events_tx.clone(),
                                limits,
                                Arc::clone(&slots),
                                tls.clone(),
                            ));
                        }
                        if queue.len() < 64 {
                            queue.push(data);
                        }
                    }
                }
            }
        }
        batches.flush(&udp).await;
        let done = Instant::now();
        proxy.note_busy(done, busy.turn(woke, done, left_input));
    }
}

/// What a turn of the core is for: the input that woke it.
enum Turn {
    Shutdown,
    Timer(io::Result<()>),
    Control(control::Query),
    Reservation((u64, bool)),
    Event(Event),
    Udp(io::Result<()>),
}

/// Turns in a row that the UDP sockets may take before the other inputs are polled
/// first.
const UDP_STREAK: u32 = 8;

/// Polls a channel that may be absent or closed; a closed one is dropped, so that it is
/// not polled again.
fn poll_open<R, T>(
    channel: &mut Option<R>,
    cx: &mut Context<'_>,
    poll_recv: fn(&mut R, &mut Context<'_>) -> Poll<Option<T>>,
) -> Option<T> {
    match poll_recv(channel.as_mut()?, cx) {
        Poll::Ready(Some(item)) => Some(item),
        Poll::Ready(None) => {
            *channel = None;
            None
        }
        Poll::Pending => None,
    }
}

/// What the core's overload control measures: the share of wall time the core had
/// work. Each turn counts from its wake-up to its end and, after a turn that left input
/// unread, the gap before the next one too, so that a core kept off the CPU (other
/// processes, a CPU quota) while input waits shows as busy as one with too much to do.
#[derive(Debug, Default)]
struct BusyMeter {
    /// The end of the last turn, when it left input unread.
    backlog_since: Option<Instant>,
}

impl BusyMeter {
    /// A turn from `woke` to `done`: how long the core had work up to `done`.
    fn turn(&mut self, woke: Instant, done: Instant, left_input: bool) -> std::time::Duration {
        let began = self.backlog_since.map_or(woke, |at| at.min(woke));
        self.backlog_since = left_input.then_some(done);
        done.saturating_duration_since(began)
    }
}

fn answer(proxy: &mut Proxy, tcp: &TcpStats, query: control::Query) {
    match query {
        control::Query::Calls(reply) => {
            let _ = reply.send(proxy.call_summaries(Instant::now()));
        }
        control::Query::EndCall(call_id, reply) => {
            let _ = reply.send(proxy.end_calls_with_id(Instant::now(), &call_id));
        }
        control::Query::Restore(calls, reply) => {
            let _ = reply.send(proxy.restore_calls(Instant::now(), calls));
        }
        control::Query::CheckDrains(reply) => {
            proxy.report_drains();
            let _ = reply.send(());
        }
        control::Query::Report(reply) => {
            let _ = reply.send(Report {
                stats: proxy.stats().clone(),
                probes: proxy
                    .probe_states()
                    .map(|(id, s)| (id, s.clone()))
                    .collect(),
                calls: proxy.calls(),
                calls_to_store: proxy.calls_to_store(),
                transactions: proxy.transactions(),
                tcp_open: tcp.open.load(std::sync::atomic::Ordering::Relaxed),
                tcp_refused: tcp.refused.load(std::sync::atomic::Ordering::Relaxed),
                tcp_timed_out: tcp.timed_out.load(std::sync::atomic::Ordering::Relaxed),
                core: proxy.core_load(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn input_left_unread_makes_the_gap_before_the_next_turn_busy() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut meter = BusyMeter::default();
        // Input all read: the wait that follows is idle.
        assert_eq!(meter.turn(t0, t0 + ms(2), false), ms(2));
        assert_eq!(meter.turn(t0 + ms(10), t0 + ms(11), true), ms(1));
        // Input was waiting from the end of the last turn: kept off the CPU or not,
        // the core had work all along.
        assert_eq!(meter.turn(t0 + ms(40), t0 + ms(41), false), ms(30));
        assert_eq!(meter.turn(t0 + ms(50), t0 + ms(51), false), ms(1));
    }
}
