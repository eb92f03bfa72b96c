//! The hooks implemented by types of another crate, as the binary will: the blanket impls
//! for closures must leave room for explicit impls on structs.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use siplb_balance::{Balancer, DestinationRow};
use siplb_mi::{BoxFuture, CallInfo, CallsSource, MetricsSource, MiState, Reloader};

struct FlakyDatabase {
    up: AtomicBool,
    balancer: Arc<Balancer>,
}

impl Reloader for FlakyDatabase {
    fn reload(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if !self.up.load(Ordering::Relaxed) {
                return Err("connection refused".to_owned());
            }
            self.balancer
                .reload([DestinationRow::new(7, 2, "sip:127.0.0.1:5077", "pstn=3")]);
            Ok(())
        })
    }
}

struct Core;

impl CallsSource for Core {
    fn calls(&self) -> BoxFuture<'_, Vec<CallInfo>> {
        Box::pin(async {
            vec![CallInfo {
                call_id: "x@y".into(),
                destination_id: 7,
                uri: "sip:127.0.0.1:5077".into(),
                resources: vec!["pstn".into()],
                address: None,
                state: "confirmed".into(),
                age_secs: 12,
            }]
        })
    }

    fn end_call<'a>(&'a self, call_id: &'a str) -> BoxFuture<'a, usize> {
        Box::pin(async move { usize::from(call_id == "x@y") })
    }
}

impl MetricsSource for Core {
    fn render(&self) -> BoxFuture<'_, String> {
        Box::pin(async { "siplb_calls_routed_total 1\n".to_owned() })
    }
}

#[tokio::test]
async fn struct_hooks_plug_in() {
    let (balancer, _) =
        Balancer::with_rows([DestinationRow::new(1, 1, "sip:127.0.0.1:5071", "vm=5")]);
    let balancer = Arc::new(balancer);
    let database = Arc::new(FlakyDatabase {
        up: AtomicBool::new(false),
        balancer: Arc::clone(&balancer),
    });
    let state = MiState::new(Arc::clone(&balancer))
        .with_reloader(Arc::clone(&database) as Arc<dyn Reloader>)
        .with_calls(Arc::new(Core))
        .with_metrics(Arc::new(Core));
    let reload = br#"{"jsonrpc":"2.0","method":"lb_reload","id":1}"#;

    assert_eq!(
        state.handle_rpc(reload).await.unwrap(),
        r#"{"jsonrpc":"2.0","error":{"code":500,"message":"Failed to reload"},"id":1}"#
    );
    assert!(balancer.destination(1).is_some());

    database.up.store(true, Ordering::Relaxed);
    assert_eq!(
        state.handle_rpc(reload).await.unwrap(),
        r#"{"jsonrpc":"2.0","result":"OK","id":1}"#
    );
    assert!(balancer.destination(1).is_none());
    assert_eq!(balancer.destination(7).unwrap().resources[0].max, 3);

    assert_eq!(
        state
            .handle_rpc(br#"{"jsonrpc":"2.0","method":"lb_calls","params":["7"],"id":2}"#)
            .await
            .unwrap(),
        r#"{"jsonrpc":"2.0","result":{"Calls":[{"callid":"x@y","destination_id":7,"uri":"sip:127.0.0.1:5077","resources":["pstn"],"state":"confirmed","age":12}]},"id":2}"#
    );
    assert_eq!(
        state
            .handle_rpc(br#"{"jsonrpc":"2.0","method":"lb_end_call","params":["x@y"],"id":3}"#)
            .await
            .unwrap(),
        r#"{"jsonrpc":"2.0","result":"OK","id":3}"#
    );
    assert_eq!(
        state
            .handle_rpc(
                br#"{"jsonrpc":"2.0","method":"lb_end_call","params":{"callid":"nope"},"id":4}"#
            )
            .await
            .unwrap(),
        r#"{"jsonrpc":"2.0","error":{"code":404,"message":"Call not found"},"id":4}"#
    );
    assert!(
        state
            .render_metrics()
            .await
            .ends_with("siplb_calls_routed_total 1\n")
    );
}
