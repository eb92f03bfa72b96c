//! TCP connections: accepted or opened on demand, framed with the stream decoder.

use std::net::SocketAddr;

use bytes::Bytes;
use siplb_proxy::{Peer, Transport};
use siplb_sip::{Frame, Limits, StreamDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::Event;

pub(crate) async fn accept_loop(
    listener: TcpListener,
    events: mpsc::Sender<Event>,
    limits: Limits,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(run(stream, peer, events.clone(), limits));
            }
            Err(e) => {
                warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

pub(crate) async fn connect(peer: SocketAddr, events: mpsc::Sender<Event>, limits: Limits) {
    match tokio::time::timeout(std::time::Duration::from_secs(5), TcpStream::connect(peer)).await {
        Ok(Ok(stream)) => run(stream, peer, events, limits).await,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "TCP connect failed");
            let _ = events.send(Event::Closed { peer }).await;
        }
        Err(_) => {
            debug!(%peer, "TCP connect timed out");
            let _ = events.send(Event::Closed { peer }).await;
        }
    }
}

/// Reads and frames one connection; writes what the core sends to its peer.
async fn run(stream: TcpStream, peer: SocketAddr, events: mpsc::Sender<Event>, limits: Limits) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
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
            if writer.write_all(&data).await.is_err() {
                break;
            }
        }
    });
    let mut decoder = StreamDecoder::new(limits);
    let mut buf = vec![0u8; 16 * 1024];
    let from = Peer {
        transport: Transport::Tcp,
        addr: peer,
    };
    'read: loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        decoder.extend(&buf[..n]);
        loop {
            match decoder.decode() {
                Ok(None) => break,
                Ok(Some(Frame::Ping)) => {
                    let _ = tx.try_send(Bytes::from_static(b"\r\n"));
                }
                Ok(Some(Frame::Message(msg))) => {
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
    }
    drop(tx);
    let _ = events.send(Event::Closed { peer }).await;
    let _ = writer_task.await;
}
