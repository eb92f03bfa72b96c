//! ICMP errors on UDP (Linux): a datagram sent to a port where nothing listens comes
//! back as "port unreachable", which the kernel queues on the socket that sent it once
//! `IP_RECVERR` is on. Reading that queue names the address the datagram went to, so
//! the core can fail what waits on it at once instead of at its timeout.
//!
//! ICMP can be forged by anyone who can send to siplb and guess a destination's
//! address; the kernel checks that the quoted datagram is one this socket could have
//! sent. What a forged one can do is what a refused TCP connection does: fail the
//! attempts in flight to that address, which fail over.

use std::net::SocketAddr;
use std::sync::Arc;

use siplb_proxy::Peer;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::Event;

#[cfg(target_os = "linux")]
mod linux {
    use std::io::IoSliceMut;
    use std::net::SocketAddr;
    use std::os::fd::{AsFd, AsRawFd};

    use nix::errno::Errno;
    use nix::libc;
    use nix::sys::socket::{
        ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage, recvmsg, setsockopt, sockopt,
    };

    /// Asks the kernel to queue ICMP errors on `socket` (best effort).
    pub(crate) fn enable<F: AsFd>(socket: &F, v6: bool) {
        let result = if v6 {
            setsockopt(socket, sockopt::Ipv6RecvErr, &true)
        } else {
            setsockopt(socket, sockopt::Ipv4RecvErr, &true)
        };
        if let Err(error) = result {
            tracing::debug!(%error, "IP_RECVERR not set: ICMP errors on UDP will not be read");
        }
    }

    /// Whether an extended error says the destination cannot be reached: an ICMP (or
    /// ICMPv6) error meaning port, host or network unreachable.
    fn unreachable(err: &libc::sock_extended_err) -> bool {
        let icmp =
            err.ee_origin == libc::SO_EE_ORIGIN_ICMP || err.ee_origin == libc::SO_EE_ORIGIN_ICMP6;
        let errno = i32::try_from(err.ee_errno).unwrap_or(0);
        icmp && [libc::ECONNREFUSED, libc::EHOSTUNREACH, libc::ENETUNREACH].contains(&errno)
    }

    /// Empties `socket`'s error queue (at most `limit` entries), handing each
    /// unreachable destination to `found`.
    pub(crate) fn drain<F: AsRawFd>(socket: &F, limit: usize, found: &mut dyn FnMut(SocketAddr)) {
        let fd = socket.as_raw_fd();
        let mut cmsg = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6);
        for _ in 0..limit {
            let mut data = [0u8; 64];
            let mut iov = [IoSliceMut::new(&mut data)];
            let msg = match recvmsg::<SockaddrStorage>(
                fd,
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(msg) => msg,
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            let hard = msg.cmsgs().is_ok_and(|mut all| {
                all.any(|c| match c {
                    ControlMessageOwned::Ipv4RecvErr(e, _)
                    | ControlMessageOwned::Ipv6RecvErr(e, _) => unreachable(&e),
                    _ => false,
                })
            });
            if let Some(addr) = msg
                .address
                .as_ref()
                .filter(|a| a.len() > 0)
                .and_then(crate::udp::socket_addr)
                && hard
            {
                found(addr);
            }
        }
    }
}

/// Whether a socket call failed only to report an ICMP error for an earlier datagram
/// (with `IP_RECVERR` on, the kernel hands it to the next receive or send, once).
pub(crate) fn is_pending_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::HostUnreachable
            | std::io::ErrorKind::NetworkUnreachable
    )
}

/// Turns ICMP error reporting on for a UDP socket.
pub(crate) fn enable(socket: &socket2::Socket, v6: bool) {
    #[cfg(target_os = "linux")]
    linux::enable(socket, v6);
    #[cfg(not(target_os = "linux"))]
    let _ = (socket, v6);
}

/// Entries read from an error queue per wake-up; the queue is bounded by the socket's
/// receive buffer, so this empties it in practice.
const DRAIN_LIMIT: usize = 1024;

/// Waits for ICMP errors on `socket` and hands each unreachable destination to the
/// core. An error is no datagram, so the core's wait for readable sockets does not
/// wake for it: this task does, and the core hears of it as of a closed connection.
pub(crate) async fn watch(socket: Arc<AsyncFd<std::net::UdpSocket>>, events: mpsc::Sender<Event>) {
    #[cfg(target_os = "linux")]
    loop {
        if socket.ready(Interest::ERROR).await.is_err() {
            return;
        }
        let mut found: Vec<SocketAddr> = Vec::new();
        // Reaching the queue's end clears the readiness until the next error.
        let _ = socket.try_io(Interest::ERROR, |socket| {
            linux::drain(socket, DRAIN_LIMIT, &mut |a| {
                if !found.contains(&a) {
                    found.push(a);
                }
            });
            Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
        });
        for addr in found {
            tracing::debug!(%addr, "ICMP: destination unreachable");
            let peer = Peer::udp(addr);
            if events.send(Event::Unreachable { peer }).await.is_err() {
                return;
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (socket, events);
}
