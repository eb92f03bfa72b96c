//! TCP connections: accepted or opened on demand, framed with the stream decoder,
//! within bounds: connections in all and per source address, an idle timeout, and a
//! deadline for a message once begun (a peer that sends half a message and stops
//! cannot hold a connection, or the memory of its buffer, for ever). TLS connections
//! are TCP connections with a handshake first (`tls.rs` holds the certificates); the
//! same bounds count them together.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use siplb_proxy::{Peer, Transport};
use siplb_sip::{Frame, Limits, StreamDecoder};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::Event;
use crate::tls::Tls;

/// How long a TLS handshake may take, either way.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds on TCP connections (`[tcp]` in the configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpLimits {
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    pub idle_timeout: Duration,
    pub message_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 10_000,
            max_connections_per_source: 100,
            idle_timeout: Duration::from_secs(600),
            message_timeout: Duration::from_secs(10),
        }
    }
}

/// What the TCP side has done, for the metrics.
#[derive(Debug, Default)]
pub struct TcpStats {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Connections refused at accept: over the limit in all or for their source.
    pub refused: AtomicU64,
    /// Connections closed for idling, or for a message not completed in time.
    pub timed_out: AtomicU64,
}

/// The connections open, shared by the accept loops and the connect tasks.
#[derive(Debug)]
pub(crate) struct Slots {
    limits: TcpLimits,
    per_source: Mutex<HashMap<IpAddr, usize>>,
    pub(crate) stats: Arc<TcpStats>,
}

/// One connection's place among the open ones; given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    source: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.stats.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.source
            && let Ok(mut map) = self.slots.per_source.lock()
            && let Some(n) = map.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }
}

impl Slots {
    pub(crate) fn new(limits: TcpLimits, stats: Arc<TcpStats>) -> Arc<Slots> {
        Arc::new(Slots {
            limits,
            per_source: Mutex::new(HashMap::new()),
            stats,
        })
    }

    /// A place for a connection: accepted from `source`, or opened by siplb (`None`).
    fn take(self: &Arc<Slots>, source: Option<IpAddr>) -> Option<Slot> {
        if self.stats.open.load(Ordering::Relaxed) >= self.limits.max_connections {
            return None;
        }
        if let Some(ip) = source {
            let mut map = self.per_source.lock().ok()?;
            let n = map.entry(ip).or_insert(0);
            if *n >= self.limits.max_connections_per_source {
                return None;
            }
            *n += 1;
        }
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            slots: Arc::clone(self),
            source,
        })
    }
}

/// Accepts connections on a TCP listener, or with `tls`, a TLS one.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    events: mpsc::Sender<Event>,
    limits: Limits,
    slots: Arc<Slots>,
    tls: Option<Arc<Tls>>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match slots.take(Some(peer.ip())) {
                Some(slot) => {
                    let _ = stream.set_nodelay(true);
                    let events = events.clone();
                    match &tls {
                        None => {
                            tokio::spawn(run(
                                stream,
                                Peer {
                                    transport: Transport::Tcp,
                                    addr: peer,
                                },
                                events,
                                limits,
                                slot,
                            ));
                        }
                        Some(tls) => {
                            tokio::spawn(accept_tls(
                                Arc::clone(tls),
                                stream,
                                peer,
                                events,
                                limits,
                                slot,
                            ));
                        }
                    }
                }
                None => {
                    // Closed at once: no reply is owed to a connection, and the
                    // count says it happened.
                    slots.stats.refused.fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, "TCP connection refused: connection limit");
                    drop(stream);
                }
            },
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn accept_tls(
    tls: Arc<Tls>,
    stream: TcpStream,
    addr: SocketAddr,
    events: mpsc::Sender<Event>,
    limits: Limits,
    slot: Slot,
) {
    let Some(acceptor) = tls.acceptor() else {
        return;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let peer = Peer {
                transport: Transport::Tls,
                addr,
            };
            run(stream, peer, events, limits, slot).await;
        }
        Ok(Err(e)) => debug!(%addr, error = %e, "TLS handshake with a caller failed"),
        Err(_) => debug!(%addr, "TLS handshake with a caller timed out"),
    }
}

/// Opens a connection to `peer` (TCP, or TLS with `tls`), then runs it; if it cannot
/// be opened, the core hears `Closed` for it, which fails what waited for it.
pub(crate) async fn connect(
    peer: Peer,
    events: mpsc::Sender<Event>,
    limits: Limits,
    slots: Arc<Slots>,
    tls: Option<Arc<Tls>>,
) {
    let Some(slot) = slots.take(None) else {
        warn!(%peer, "no TCP connection opened: connection limit");
        let _ = events.send(Event::Closed { peer }).await;
        return;
    };
    let stream =
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(peer.addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "TCP connect failed");
                let _ = events.send(Event::Closed { peer }).await;
                return;
            }
            Err(_) => {
                debug!(%peer, "TCP connect timed out");
                let _ = events.send(Event::Closed { peer }).await;
                return;
            }
        };
    let _ = stream.set_nodelay(true);
    if peer.transport != Transport::Tls {
        run(stream, peer, events, limits, slot).await;
        return;
    }
    // A certificate that does not verify is a transport failure like a refused
    // connection: the attempt fails over; nothing is ever sent in the clear.
    let handshake = tls.as_ref().and_then(|tls| {
        let name = tls.server_name(peer.addr)?;
        Some(tls.connector().connect(name, stream))
    });
    let outcome = match handshake {
        Some(handshake) => tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await,
        None => {
            warn!(%peer, "no TLS configuration or server name for the destination");
            let _ = events.send(Event::Closed { peer }).await;
            return;
        }
    };
    match outcome {
        Ok(Ok(stream)) => run(stream, peer, events, limits, slot).await,
        Ok(Err(e)) => {
            warn!(%peer, error = %e, "TLS handshake with a destination failed");
            let _ = events.send(Event::Closed { peer }).await;
        }
        Err(_) => {
            warn!(%peer, "TLS handshake with a destination timed out");
            let _ = events.send(Event::Closed { peer }).await;
        }
    }
}

/// Reads and frames one connection; writes what the core sends to its peer.
async fn run<S>(stream: S, from: Peer, events: mpsc::Sender<Event>, limits: Limits, slot: Slot)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let peer = from;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Bytes>(256);
    if events
        .send(Event::Connected {
            peer,
            tx: tx.clone(),
        })
        .await
        .is_err()
    {
        return;
    }
    let writer_task = tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            // TLS holds what is written until flushed; TCP's flush does nothing.
            if writer.write_all(&data).await.is_err() || writer.flush().await.is_err() {
                break;
            }
        }
    });
    let bounds = slot.slots.limits;
    let mut decoder = StreamDecoder::new(limits);
    let mut buf = vec![0u8; 16 * 1024];
    // When the message under way must be complete.
    let mut message_due: Option<Instant> = None;
    'read: loop {
        let wait = match message_due {
            Some(due) => due.saturating_duration_since(Instant::now()),
            None => bounds.idle_timeout,
        };
        let n = match tokio::time::timeout(wait, reader.read(&mut buf)).await {
            Err(_) => {
                slot.slots.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, mid_message = message_due.is_some(), "closing TCP connection: nothing in time");
                break;
            }
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => n,
        };
        decoder.extend(&buf[..n]);
        // A message completed: the one after it gets its own deadline.
        let mut completed = false;
        loop {
            match decoder.decode() {
                Ok(None) => break,
                Ok(Some(Frame::Ping)) => {
                    completed = true;
                    let _ = tx.try_send(Bytes::from_static(b"\r\n"));
                }
                Ok(Some(Frame::Message(msg))) => {
                    completed = true;
                    if events
                        .send(Event::Message { peer: from, msg })
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                }
                Err(e) => {
                    // The stream has lost its framing: the core counts it and answers
                    // if it can (before this connection's Closed), then it closes.
                    debug!(%peer, error = %e, "closing TCP connection after a framing error");
                    let _ = events
                        .send(Event::Malformed {
                            peer: from,
                            error: Box::new(e),
                        })
                        .await;
                    break 'read;
                }
            }
        }
        message_due = match (decoder.mid_message(), message_due) {
            (false, _) => None,
            (true, Some(due)) if !completed => Some(due),
            (true, _) => Some(Instant::now() + bounds.message_timeout),
        };
    }
    drop(tx);
    let _ = events.send(Event::Closed { peer }).await;
    let _ = writer_task.await;
    drop(slot);
}
