//! A real listener on 127.0.0.1 port 0 over the study-case table, and raw HTTP/1.1
//! requests to it, for the integration tests.

#![allow(dead_code, unreachable_pub)]
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use siplb_balance::{Balancer, DestinationRow};
use siplb_mi::{MiState, ServeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The tutorial's study case: four destinations of group 1.
pub fn study_rows() -> Vec<DestinationRow> {
    vec![
        DestinationRow::new(1, 1, "sip:127.0.0.1:5071", "vm=50;pstn=32"),
        DestinationRow::new(2, 1, "sip:127.0.0.1:5072", "vm=100"),
        DestinationRow::new(3, 1, "sip:127.0.0.1:5073", "vm=50"),
        DestinationRow::new(4, 1, "sip:127.0.0.1:5074", "vm=10;pstn=64"),
    ]
}

pub struct Server {
    pub addr: SocketAddr,
    pub balancer: Arc<Balancer>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with(ServeOptions::default()).await
    }

    /// Serves the study case; `lb_reload` re-reads the same rows.
    pub async fn start_with(options: ServeOptions) -> Self {
        Self::start_guarded(options, None).await
    }

    /// [`Server::start`], requiring `token` when given.
    pub async fn start_with_token(token: Option<&str>) -> Self {
        Self::start_guarded(ServeOptions::default(), token).await
    }

    async fn start_guarded(options: ServeOptions, token: Option<&str>) -> Self {
        let token = token.map(str::to_owned);
        Self::start_configured(options, |state| state.with_token(token)).await
    }

    /// Serves the study case with a state `configure` finishes.
    pub async fn start_configured(
        options: ServeOptions,
        configure: impl FnOnce(MiState) -> MiState,
    ) -> Self {
        let (balancer, skipped) = Balancer::with_rows(study_rows());
        assert!(skipped.is_empty());
        let balancer = Arc::new(balancer);
        let target = Arc::clone(&balancer);
        let reloader = move || {
            let target = Arc::clone(&target);
            async move {
                target.reload(study_rows());
                Ok(())
            }
        };
        let state =
            configure(MiState::new(Arc::clone(&balancer)).with_reloader(Arc::new(reloader)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(siplb_mi::serve_with(
            listener,
            Arc::new(state),
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            balancer,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/mi", self.addr)
    }

    /// Stops the server and checks that it returns promptly.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server did not stop")
                .expect("server task panicked");
            result.expect("server returned an error");
        }
    }
}

/// Every reply must be complete well before this; a hang fails the test instead of
/// stalling it.
pub const PATIENCE: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Reads one response that must carry a `Content-Length` (never chunked, never "until
/// close") and be complete within [`PATIENCE`].
pub async fn read_reply(stream: &mut TcpStream) -> Reply {
    tokio::time::timeout(PATIENCE, async {
        let mut buf = Vec::new();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = response.parse(&buf).unwrap() {
                let headers: Vec<(String, String)> = response
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8(h.value.to_vec()).unwrap(),
                        )
                    })
                    .collect();
                let status = response.code.unwrap();
                assert!(
                    !headers
                        .iter()
                        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding")),
                    "chunked reply: {headers:?}"
                );
                let len: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .unwrap_or_else(|| panic!("no Content-Length: {headers:?}"))
                    .1
                    .parse()
                    .unwrap();
                let mut body = buf[head..].to_vec();
                while body.len() < len {
                    let mut chunk = [0u8; 4096];
                    let n = stream.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "closed inside the body");
                    body.extend_from_slice(&chunk[..n]);
                }
                assert_eq!(body.len(), len, "more bytes than Content-Length");
                return Reply {
                    status,
                    headers,
                    body,
                };
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "closed before a reply: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("reply not complete in time")
}

pub async fn raw(server: &Server, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_reply(&mut stream).await
}

pub fn post(path: &str, content_type: Option<&str>, body: &str) -> Vec<u8> {
    let mut r = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if let Some(ct) = content_type {
        r.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    r.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    r.into_bytes()
}
