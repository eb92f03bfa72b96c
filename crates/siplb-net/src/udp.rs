//! UDP listeners, read and written in batches: on Linux one `recvmmsg` takes up to
//! [`RECV_BATCH`] queued datagrams, and one `sendmmsg` sends what a turn of the core
//! produced. Most of a proxy's CPU at low and middle rates is system calls and
//! wake-ups (docs/BENCHMARKS.md); batching takes out the call per datagram, and a
//! short read (fewer datagrams than asked for) also tells that the socket is empty,
//! which a datagram-at-a-time reader learns only from one more call that fails.
//!
//! The sockets are registered for reading only. A socket registered for writing too
//! (as `tokio::net::UdpSocket` is) is reported writable again after every datagram
//! sent, edge-triggered: one more turn of the core per datagram out, for nothing,
//! since a send that finds room needs no readiness. Only a send that finds the
//! buffer full waits, on a registration for writing made for that wait.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use siplb_proxy::Peer;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tracing::debug;

use crate::icmp;

type UdpSocket = std::net::UdpSocket;

/// Datagrams asked for per receive call, at most.
const RECV_BATCH: usize = 16;

/// Datagrams asked for by a turn's first receive call, at least. Each slot offered
/// costs its setting up whether a datagram fills it or not, and at low rates a turn
/// finds one datagram: a build offering 4 rather than 16 used 0.8% fewer instructions
/// per call (docs/BENCHMARKS-HISTORY.md, "Issue 19, sixteenth round"). A turn that
/// finds more makes the next turn ask for more.
const RECV_FIRST: usize = 4;

/// Datagrams handed to the kernel per send call.
const SEND_BATCH: usize = 32;

/// Room for one datagram: the largest UDP payload fits.
const DATAGRAM_ROOM: usize = 65_536;

/// A UDP listener with its address family looked up once (`local_addr` is a system
/// call, and sends pick their socket by family).
#[derive(Debug)]
pub(crate) struct UdpListener {
    pub(crate) socket: Arc<AsyncFd<UdpSocket>>,
    v4: bool,
}

impl UdpListener {
    /// Registers a bound, non-blocking socket with the runtime, for reading (and the
    /// errors the kernel reports on it) only.
    pub(crate) fn new(socket: UdpSocket) -> io::Result<UdpListener> {
        let v4 = socket.local_addr()?.is_ipv4();
        Ok(UdpListener {
            socket: Arc::new(register(socket, Interest::READABLE)?),
            v4,
        })
    }
}

#[allow(
    deprecated,
    reason = "sound for a type that owns its descriptor, as std's sockets and the \
              core's timer do: what the unsafe `register_with_interest` that replaces \
              it asks, which this workspace's forbid(unsafe_code) cannot call"
)]
pub(crate) fn register<T: std::os::fd::AsRawFd>(
    owner: T,
    interest: Interest,
) -> io::Result<AsyncFd<T>> {
    AsyncFd::with_interest(owner, interest)
}

/// Waits until `socket` has room to send, on a registration of a second descriptor
/// of it made for this wait (the listener's own is for reading only).
async fn room_to_send(socket: &UdpSocket) -> io::Result<()> {
    let waiter = register(socket.try_clone()?, Interest::WRITABLE)?;
    waiter.writable().await?.retain_ready();
    Ok(())
}

/// Buffers for reading and sending, reused by every turn of the core. (Not `Send`
/// on Linux, where it holds the kernel's message headers: it lives on the core's
/// thread.)
#[derive(Debug)]
pub(crate) struct Batches {
    room: Vec<u8>,
    /// Datagrams the next turn's first receive call asks for: what the last turn
    /// took, rounded up to a power of two, within `RECV_FIRST..=RECV_BATCH`.
    recv_want: usize,
    /// Datagrams to send at the end of this turn.
    out: Vec<(SocketAddr, Bytes)>,
    #[cfg(target_os = "linux")]
    recv_headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
    #[cfg(target_os = "linux")]
    send_headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
}

impl Batches {
    pub(crate) fn new() -> Batches {
        Batches {
            room: vec![0; RECV_BATCH * DATAGRAM_ROOM],
            recv_want: RECV_FIRST,
            out: Vec::new(),
            #[cfg(target_os = "linux")]
            recv_headers: nix::sys::socket::MultiHeaders::preallocate(RECV_BATCH, None),
            #[cfg(target_os = "linux")]
            send_headers: nix::sys::socket::MultiHeaders::preallocate(SEND_BATCH, None),
        }
    }

    /// Reads what is queued on `listener`, up to `limit` datagrams, without waiting;
    /// learning that the socket is empty re-arms the runtime's readiness for it. True
    /// when it stopped at `limit` with datagrams perhaps left.
    pub(crate) fn read(
        &mut self,
        listener: &UdpListener,
        limit: usize,
        mut handle: impl FnMut(Peer, Bytes),
    ) -> bool {
        let mut taken = 0;
        let mut want = self.recv_want;
        // An ICMP error for an earlier send fails one receive call, once each.
        let mut errors_left = limit;
        let more_left = loop {
            if taken >= limit {
                break true;
            }
            let mut got = 0;
            let ask = want.min(limit - taken);
            let read = listener.socket.try_io(Interest::READABLE, |socket| {
                got = self.receive(socket, ask, &mut handle)?;
                if got < ask {
                    // Fewer than asked for: the queue is empty. Saying "would block"
                    // clears the readiness now, without another call to learn it.
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            });
            taken += got;
            match read {
                Ok(()) => want = RECV_BATCH,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if icmp::is_pending_error(&e) && errors_left > 0 => errors_left -= 1,
                Err(e) => {
                    debug!(error = %e, "UDP receive failed");
                    break false;
                }
            }
        };
        self.recv_want = taken.next_power_of_two().clamp(RECV_FIRST, RECV_BATCH);
        more_left
    }

    /// Reads up to `want` datagrams (at most [`RECV_BATCH`]) in one call.
    #[cfg(target_os = "linux")]
    fn receive(
        &mut self,
        socket: &UdpSocket,
        want: usize,
        handle: &mut impl FnMut(Peer, Bytes),
    ) -> io::Result<usize> {
        // The arrays a call sets up are sized for it: setting up sixteen slots to
        // read one datagram was most of what the small first call saves.
        if want <= RECV_FIRST {
            self.receive_up_to::<RECV_FIRST>(socket, want, handle)
        } else {
            self.receive_up_to::<RECV_BATCH>(socket, want, handle)
        }
    }

    #[cfg(target_os = "linux")]
    fn receive_up_to<const N: usize>(
        &mut self,
        socket: &UdpSocket,
        want: usize,
        handle: &mut impl FnMut(Peer, Bytes),
    ) -> io::Result<usize> {
        use std::io::IoSliceMut;
        use std::os::fd::AsRawFd;

        use nix::sys::socket::{MsgFlags, recvmmsg};

        let want = want.clamp(1, N);
        let mut got = [(0usize, None::<SocketAddr>); N];
        let mut n = 0;
        {
            let mut rooms = self.room.chunks_mut(DATAGRAM_ROOM);
            let mut slices: [[IoSliceMut<'_>; 1]; N] =
                std::array::from_fn(|_| [IoSliceMut::new(rooms.next().unwrap_or_default())]);
            let results = recvmmsg(
                socket.as_raw_fd(),
                &mut self.recv_headers,
                slices.iter_mut().take(want),
                MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(io::Error::from)?;
            for (slot, msg) in got.iter_mut().zip(results) {
                *slot = (msg.bytes, msg.address.as_ref().and_then(socket_addr));
                n += 1;
            }
        }
        for (room, &(len, from)) in self.room.chunks(DATAGRAM_ROOM).zip(&got[..n]) {
            // A datagram without an IP source address cannot come on these sockets.
            if let (Some(from), Some(data)) = (from, room.get(..len)) {
                handle(Peer::udp(from), Bytes::copy_from_slice(data));
            }
        }
        Ok(n)
    }

    #[cfg(not(target_os = "linux"))]
    fn receive(
        &mut self,
        socket: &UdpSocket,
        _want: usize,
        handle: &mut impl FnMut(Peer, Bytes),
    ) -> io::Result<usize> {
        // One at a time: each call reads one datagram, and an empty socket fails.
        let room = &mut self.room[..DATAGRAM_ROOM];
        let (len, from) = socket.recv_from(room)?;
        handle(Peer::udp(from), Bytes::copy_from_slice(&room[..len]));
        Ok(1)
    }

    /// Queues a datagram for [`Batches::flush`].
    pub(crate) fn push(&mut self, to: SocketAddr, data: Bytes) {
        self.out.push((to, data));
    }

    /// Sends the queued datagrams, each from the first listener of its address
    /// family, in the order queued (per family). Waiting is only for a full buffer.
    pub(crate) async fn flush(&mut self, listeners: &[UdpListener]) {
        if self.out.is_empty() {
            return;
        }
        let mut out = std::mem::take(&mut self.out);
        let v4 = out.iter().filter(|(to, _)| to.is_ipv4()).count();
        if v4 == out.len() || v4 == 0 {
            self.send_family(listeners, v4 > 0, &out).await;
        } else {
            // Both families in one turn (a dual-stack listener set): rare, so split.
            let (four, six): (Vec<_>, Vec<_>) = out.drain(..).partition(|(to, _)| to.is_ipv4());
            self.send_family(listeners, true, &four).await;
            self.send_family(listeners, false, &six).await;
        }
        out.clear();
        // The allocation is kept for the next turn.
        self.out = out;
    }

    async fn send_family(
        &mut self,
        listeners: &[UdpListener],
        v4: bool,
        batch: &[(SocketAddr, Bytes)],
    ) {
        match listeners.iter().find(|l| l.v4 == v4) {
            Some(listener) => self.send_all(listener, batch).await,
            None => debug!(
                datagrams = batch.len(),
                "no UDP listener of this address family"
            ),
        }
    }

    async fn send_all(&mut self, listener: &UdpListener, mut rest: &[(SocketAddr, Bytes)]) {
        let socket = listener.socket.get_ref();
        // An ICMP error for an earlier datagram (to anyone) fails the next call on
        // the socket once; reporting it cleared it, so the call is made again.
        let mut retried = false;
        while let Some((to, _)) = rest.first() {
            match self.send_some(socket, rest) {
                Ok(sent) => {
                    rest = rest.get(sent.max(1)..).unwrap_or_default();
                    retried = false;
                }
                Err(e) if icmp::is_pending_error(&e) && !retried => retried = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The send buffer is full: wait for room, then go on from here.
                    if let Err(e) = room_to_send(socket).await {
                        debug!(%to, error = %e, "UDP send failed");
                        rest = &rest[1..];
                    }
                    retried = false;
                }
                Err(e) => {
                    debug!(%to, error = %e, "UDP send failed");
                    rest = &rest[1..];
                    retried = false;
                }
            }
        }
    }

    /// Sends from the front of `batch`; how many went.
    #[cfg(target_os = "linux")]
    fn send_some(
        &mut self,
        socket: &UdpSocket,
        batch: &[(SocketAddr, Bytes)],
    ) -> io::Result<usize> {
        use std::io::IoSlice;
        use std::os::fd::AsRawFd;

        use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmmsg};

        if let [(to, data)] = batch {
            return socket.send_to(data, *to).map(|_| 1);
        }
        let n = batch.len().min(SEND_BATCH);
        let slices: [[IoSlice<'_>; 1]; SEND_BATCH] =
            std::array::from_fn(|i| [IoSlice::new(batch.get(i).map_or(&[][..], |(_, d)| &d[..]))]);
        let addresses: [Option<SockaddrStorage>; SEND_BATCH] =
            std::array::from_fn(|i| batch.get(i).map(|(to, _)| SockaddrStorage::from(*to)));
        let none: [ControlMessage<'_>; 0] = [];
        let sent = sendmmsg(
            socket.as_raw_fd(),
            &mut self.send_headers,
            &slices[..n],
            &addresses[..n],
            none,
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        Ok(sent.count())
    }

    #[cfg(not(target_os = "linux"))]
    fn send_some(
        &mut self,
        socket: &UdpSocket,
        batch: &[(SocketAddr, Bytes)],
    ) -> io::Result<usize> {
        let Some((to, data)) = batch.first() else {
            return Ok(0);
        };
        socket.send_to(data, *to).map(|_| 1)
    }
}

/// Ready when one of the sockets has datagrams waiting (or an error to report).
pub(crate) fn poll_any_readable(
    sockets: &[UdpListener],
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<io::Result<()>> {
    for s in sockets {
        if let std::task::Poll::Ready(r) = s.socket.poll_read_ready(cx) {
            // The guard goes without clearing: the read that follows does.
            return std::task::Poll::Ready(r.map(drop));
        }
    }
    std::task::Poll::Pending
}

/// The IP address and port of a socket address the kernel filled in.
#[cfg(target_os = "linux")]
pub(crate) fn socket_addr(s: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    use std::net::{SocketAddrV4, SocketAddrV6};
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    s.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::new(v6.ip(), v6.port(), 0, 0)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn bound() -> std::net::UdpSocket {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind on loopback");
        socket.set_nonblocking(true).expect("non-blocking");
        socket
    }

    fn datagram(i: usize) -> Vec<u8> {
        // Sizes from a few bytes to near the largest datagram.
        let len = if i == 7 { 60_000 } else { 10 + i * 37 };
        (0..len).map(|b| (b + i) as u8).collect()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_read_takes_every_datagram_in_order_and_learns_the_socket_is_empty() {
        let listener = UdpListener::new(bound()).expect("listener");
        let to = listener.socket.get_ref().local_addr().expect("address");
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("sender");
        let from = sender.local_addr().expect("sender address");
        for i in 0..40 {
            sender.send_to(&datagram(i), to).expect("send");
        }
        let mut batches = Batches::new();
        let mut got = Vec::new();
        udp_ready(&listener).await;
        // A limit stops the read with datagrams left, and says so.
        assert!(batches.read(&listener, 16, |peer, data| got.push((peer, data))));
        assert_eq!(got.len(), 16);
        assert!(!batches.read(&listener, 64, |peer, data| got.push((peer, data))));
        assert_eq!(got.len(), 40);
        // A turn that found 24 makes the next ask for the most.
        assert_eq!(batches.recv_want, RECV_BATCH);
        for (i, (peer, data)) in got.iter().enumerate() {
            assert_eq!(peer.addr, from);
            assert_eq!(&data[..], &datagram(i)[..], "datagram {i}");
        }
        // The short read cleared the readiness: nothing wakes the reader until a
        // datagram comes.
        let woke = tokio::time::timeout(
            Duration::from_millis(50),
            std::future::poll_fn(|cx| poll_any_readable(std::slice::from_ref(&listener), cx)),
        )
        .await;
        assert!(woke.is_err(), "readable with nothing queued");
        sender.send_to(b"late", to).expect("send");
        udp_ready(&listener).await;
        got.clear();
        assert!(!batches.read(&listener, 64, |peer, data| got.push((peer, data))));
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].1[..], b"late");
        assert_eq!(batches.recv_want, RECV_FIRST);
    }

    async fn udp_ready(listener: &UdpListener) {
        tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| poll_any_readable(std::slice::from_ref(listener), cx)),
        )
        .await
        .expect("readable in time")
        .expect("no socket error");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_flush_sends_every_queued_datagram_in_order_to_each_address() {
        let listener = UdpListener::new(bound()).expect("listener");
        let from = listener.socket.get_ref().local_addr().expect("address");
        let receivers = [bound(), bound()];
        let addresses: Vec<SocketAddr> = receivers
            .iter()
            .map(|r| r.local_addr().expect("address"))
            .collect();
        let mut batches = Batches::new();
        // More than one system call's worth.
        for i in 0..(SEND_BATCH * 2 + 3) {
            batches.push(addresses[i % 2], Bytes::from(datagram(i)));
        }
        batches.flush(std::slice::from_ref(&listener)).await;
        let mut buf = vec![0; 65_536];
        for (r, receiver) in receivers.iter().enumerate() {
            let mut i = r;
            while i < SEND_BATCH * 2 + 3 {
                let (len, source) = receiver.recv_from(&mut buf).expect("queued on loopback");
                assert_eq!(source, from);
                assert_eq!(&buf[..len], &datagram(i)[..], "datagram {i}");
                i += 2;
            }
            assert!(receiver.recv_from(&mut buf).is_err(), "nothing more");
        }
        // Nothing is sent twice.
        batches.flush(std::slice::from_ref(&listener)).await;
        assert!(receivers[0].recv_from(&mut buf).is_err());
    }
}
