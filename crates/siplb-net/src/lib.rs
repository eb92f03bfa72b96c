//! The I/O edge of siplb: sockets and timers around the sans-I/O [`Proxy`].
//!
//! One task owns the proxy core and handles every message in arrival order; socket
//! tasks only read and frame. UDP replies leave from the listener socket of the
//! message's family; TCP messages travel over the connection open to the peer (the
//! one a request came on, so responses go back over it), opened on demand otherwise.

mod control;
mod tcp;

pub use control::{Control, ControlReceiver, Report, control};

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use siplb_proxy::{DialogChange, Incoming, Peer, Proxy, StatusChange, Transmit, Transport};
use siplb_sip::{Limits, Message};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

/// What socket tasks hand to the core task.
#[derive(Debug)]
pub(crate) enum Event {
    /// Datagrams read in one wakeup of a UDP reader (up to a bound): one channel
    /// message and one wakeup of the core for many datagrams under load.
    Datagrams(Vec<(Peer, Bytes)>),
    Message {
        peer: Peer,
        msg: Message,
    },
    /// A TCP connection is up; messages for `peer` go into `tx`.
    Connected {
        peer: SocketAddr,
        tx: mpsc::Sender<Bytes>,
    },
    Closed {
        peer: SocketAddr,
    },
}

/// A listener the driver serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// Bound sockets, before they are served: binding first lets the caller report
/// "address in use" before anything starts, and learn ports picked by the OS.
#[derive(Debug)]
pub struct Bound {
    udp: Vec<Arc<UdpSocket>>,
    tcp: Vec<TcpListener>,
}

impl Bound {
    pub async fn bind(endpoints: &[Endpoint]) -> io::Result<Bound> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for e in endpoints {
            match e.transport {
                Transport::Udp => udp.push(Arc::new(bind_udp(e.addr).map_err(|err| {
                    io::Error::new(err.kind(), format!("udp:{}: {err}", e.addr))
                })?)),
                Transport::Tcp => {
                    tcp.push(TcpListener::bind(e.addr).await.map_err(|err| {
                        io::Error::new(err.kind(), format!("tcp:{}: {err}", e.addr))
                    })?)
                }
            }
        }
        Ok(Bound { udp, tcp })
    }

    /// The addresses actually bound (ports chosen by the OS filled in).
    pub fn local_endpoints(&self) -> Vec<Endpoint> {
        let udp = self
            .udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .map(|addr| Endpoint {
                transport: Transport::Udp,
                addr,
            });
        let tcp = self
            .tcp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .map(|addr| Endpoint {
                transport: Transport::Tcp,
                addr,
            });
        udp.chain(tcp).collect()
    }
}

/// How [`serve`] runs.
#[derive(Debug)]
pub struct Options {
    pub limits: Limits,
    /// After shutdown is asked for: how long calls that are up may still end.
    pub drain: std::time::Duration,
    /// Where destination status changes made by the core go (webhook, metrics).
    pub status_changes: Option<mpsc::UnboundedSender<StatusChange>>,
    /// Questions from other tasks (see [`control`]).
    pub control: Option<ControlReceiver>,
    /// Where changes to the stored calls go (the persistence task).
    pub dialog_changes: Option<mpsc::UnboundedSender<DialogChange>>,
}

/// Receive buffer asked for on UDP listeners: a burst that arrives while the core is
/// off the CPU for a few milliseconds waits there instead of being dropped (the
/// kernel's default, about 208 KiB, overflowed at 1750 calls/s in the benchmark). The
/// kernel caps it at `net.core.rmem_max`.
const UDP_RECV_BUFFER: usize = 8 << 20;

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: a smaller buffer is no reason not to start.
    let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_RECV_BUFFER / 2);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Serves the proxy on the bound sockets until `shutdown` turns true, then drains:
/// new calls are refused with 503 while calls that are up may end, for at most
/// `options.drain`, and returns once none is left.
pub async fn serve(
    mut proxy: Proxy,
    bound: Bound,
    options: Options,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let Options {
        limits,
        drain,
        status_changes,
        control,
        dialog_changes,
    } = options;
    let mut control = control.map(|c| c.0);
    let (events_tx, mut events) = mpsc::channel::<Event>(4096);
    for socket in &bound.udp {
        tokio::spawn(udp_reader(Arc::clone(socket), events_tx.clone()));
    }
    for listener in bound.tcp {
        tokio::spawn(tcp::accept_loop(listener, events_tx.clone(), limits));
    }
    // Address families looked up once: `local_addr` is a system call.
    let udp: Vec<(Arc<UdpSocket>, bool)> = bound
        .udp
        .into_iter()
        .map(|s| {
            let v4 = s.local_addr().is_ok_and(|a| a.is_ipv4());
            (s, v4)
        })
        .collect();
    let mut connections: HashMap<SocketAddr, mpsc::Sender<Bytes>> = HashMap::new();
    let mut pending: HashMap<SocketAddr, Vec<Bytes>> = HashMap::new();
    let mut drain_until: Option<Instant> = None;
    proxy.start(Instant::now());
    loop {
        if let Some(until) = drain_until
            && (proxy.is_idle() || Instant::now() >= until)
        {
            info!(calls_left = proxy.calls(), "SIP transports stopped");
            return Ok(());
        }
        let mut deadline = proxy.poll_timeout();
        if let Some(until) = drain_until {
            deadline = Some(deadline.map_or(until, |d| d.min(until)));
        }
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            biased;
            changed = shutdown.changed(), if drain_until.is_none() => {
                if changed.is_err() || *shutdown.borrow() {
                    info!(calls = proxy.calls(), ?drain, "draining: new calls get 503, calls up may end");
                    proxy.set_draining(true);
                    drain_until = Some(Instant::now() + drain);
                }
            }
            event = events.recv() => {
                let Some(event) = event else { return Ok(()); };
                let now = Instant::now();
                // Take whatever else is already queued before sending anything, so a
                // busy core flushes its output once per batch instead of per message.
                let mut next = Some(event);
                let mut taken = 0;
                while let Some(event) = next.take() {
                    taken += 1;
                    match event {
                    Event::Datagrams(batch) => {
                        for (peer, data) in batch {
                            proxy.handle(now, Incoming { peer, data });
                        }
                    }
                    Event::Message { peer, msg } => proxy.handle_message(now, msg, peer),
                    Event::Connected { peer, tx } => {
                        if let Some(queued) = pending.remove(&peer) {
                            for data in queued {
                                let _ = tx.try_send(data);
                            }
                        }
                        connections.insert(peer, tx);
                    }
                    Event::Closed { peer } => {
                        connections.remove(&peer);
                        pending.remove(&peer);
                    }
                    }
                    if taken < 64 {
                        next = events.try_recv().ok();
                    }
                }
            }
            () = sleep => proxy.handle_timeout(Instant::now()),
            Some(query) = async {
                match control.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => answer(&mut proxy, query),
        }
        while let Some(change) = proxy.poll_dialog_change() {
            if let Some(tx) = &dialog_changes {
                let _ = tx.send(change);
            }
        }
        while let Some(change) = proxy.poll_status_change() {
            if let Some(tx) = &status_changes {
                let _ = tx.send(change);
            }
        }
        while let Some(Transmit { peer, data }) = proxy.poll_transmit() {
            match peer.transport {
                Transport::Udp => send_udp(&udp, peer.addr, &data).await,
                Transport::Tcp => {
                    if let Some(tx) = connections.get(&peer.addr) {
                        if tx.try_send(data).is_err() {
                            warn!(%peer, "TCP connection backlog full or closed; message dropped");
                        }
                    } else {
                        let queue = pending.entry(peer.addr).or_default();
                        if queue.is_empty() {
                            tokio::spawn(tcp::connect(peer.addr, events_tx.clone(), limits));
                        }
                        if queue.len() < 64 {
                            queue.push(data);
                        }
                    }
                }
            }
        }
    }
}

fn answer(proxy: &mut Proxy, query: control::Query) {
    match query {
        control::Query::Calls(reply) => {
            let _ = reply.send(proxy.call_summaries(Instant::now()));
        }
        control::Query::EndCall(call_id, reply) => {
            let _ = reply.send(proxy.end_calls_with_id(&call_id));
        }
        control::Query::Report(reply) => {
            let _ = reply.send(Report {
                stats: proxy.stats().clone(),
                probes: proxy
                    .probe_states()
                    .map(|(id, s)| (id, s.clone()))
                    .collect(),
                calls: proxy.calls(),
                transactions: proxy.transactions(),
            });
        }
    }
}

async fn udp_reader(socket: Arc<UdpSocket>, events: mpsc::Sender<Event>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let mut batch = Vec::with_capacity(8);
                batch.push((Peer::udp(from), Bytes::copy_from_slice(&buf[..n])));
                // Whatever else has arrived goes in the same batch, without waiting.
                while batch.len() < 64 {
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, from)) => {
                            batch.push((Peer::udp(from), Bytes::copy_from_slice(&buf[..n])));
                        }
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                        Err(_) => break,
                    }
                }
                if events.send(Event::Datagrams(batch)).await.is_err() {
                    return;
                }
            }
            // ICMP port unreachable from an earlier send surfaces here on Linux.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => {
                warn!(error = %e, "UDP receive failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// Sends from the first UDP listener of the destination's address family. The
/// non-blocking attempt nearly always succeeds; waiting is only for a full buffer.
async fn send_udp(sockets: &[(Arc<UdpSocket>, bool)], to: SocketAddr, data: &[u8]) {
    let Some((socket, _)) = sockets.iter().find(|(_, v4)| *v4 == to.is_ipv4()) else {
        debug!(%to, "no UDP listener of this address family");
        return;
    };
    let sent = match socket.try_send_to(data, to) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.send_to(data, to).await,
        other => other,
    };
    if let Err(e) = sent {
        debug!(%to, error = %e, "UDP send failed");
    }
}
