//! A real listener on 127.0.0.1 port 0 over the study-case table, for the integration tests.

#![allow(dead_code, unreachable_pub)]
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use siplb_balance::{Balancer, DestinationRow};
use siplb_mi::{MiState, ServeOptions};
use tokio::net::TcpListener;
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
        let state = MiState::new(Arc::clone(&balancer)).with_reloader(Arc::new(reloader));
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
