//! The optional bearer token over real sockets: `/mi` and `/metrics` refuse requests
//! without it (complete `401` replies), `/health` stays open, the crate's client sends
//! it, and a server without a token is as open as ever.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{PATIENCE, Server, post, raw};
use serde_json::json;
use siplb_mi::{CallOptions, CtlError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "s3cret-Token_0123456789";

const LIST: &str = r#"{"jsonrpc":"2.0","method":"lb_list","id":1}"#;

/// `POST /mi` with `LIST` and, when given, this `Authorization` value.
fn list_request(authorization: Option<&str>) -> Vec<u8> {
    let mut request = post("/mi", Some("application/json"), LIST);
    if let Some(value) = authorization {
        // After the request line: the headers' order does not matter.
        let at = request.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        let header = format!("Authorization: {value}\r\n");
        request.splice(at..at, header.into_bytes());
    }
    request
}

fn get(path: &str, authorization: Option<&str>) -> Vec<u8> {
    let mut r = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if let Some(value) = authorization {
        r.push_str(&format!("Authorization: {value}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// The reply head to a `HEAD` request, which has a `Content-Length` but no body.
async fn head_only(server: &Server, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    tokio::time::timeout(PATIENCE, async {
        let mut buf = Vec::new();
        while !buf.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed early");
            buf.push(byte[0]);
        }
        String::from_utf8(buf).unwrap()
    })
    .await
    .expect("no reply head in time")
}

fn assert_unauthorized(reply: &common::Reply, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {reply:?}");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{what}");
    assert!(!reply.body.is_empty(), "{what}: a short body explains");
    assert_eq!(
        reply.header("content-length"),
        Some(reply.body.len().to_string().as_str()),
        "{what}"
    );
    assert!(!reply.text().contains(TOKEN), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mi_requires_the_token() {
    let server = Server::start_with_token(Some(TOKEN)).await;

    let reply = raw(&server, &list_request(None)).await;
    assert_unauthorized(&reply, "no Authorization");
    assert_eq!(reply.header("connection"), Some("close"));

    let wrong = [
        "Bearer wrong".to_owned(),
        format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
        format!("Bearer {TOKEN}x"),
        format!("Bearer {}", TOKEN.to_uppercase()),
        format!("Basic {TOKEN}"),
        TOKEN.to_owned(),
        "Bearer".to_owned(),
    ];
    for value in &wrong {
        let reply = raw(&server, &list_request(Some(value))).await;
        assert_unauthorized(&reply, value);
    }
    // The path variant, and a wrong method, are refused just the same before anything else.
    let reply = raw(&server, &post("/mi/", Some("application/json"), LIST)).await;
    assert_unauthorized(&reply, "/mi/");
    let reply = raw(&server, &get("/mi", None)).await;
    assert_unauthorized(&reply, "GET /mi");

    for value in [format!("Bearer {TOKEN}"), format!("bearer  {TOKEN}")] {
        let reply = raw(&server, &list_request(Some(&value))).await;
        assert_eq!(reply.status, 200, "{value}: {reply:?}");
        assert_eq!(
            reply.json()["result"]["Destinations"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
    }

    // Nothing was changed by the refused requests, and authorized calls still work.
    let reply = raw(&server, &list_request(Some(&format!("Bearer {TOKEN}")))).await;
    assert_eq!(reply.status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_protected_and_health_is_open() {
    let server = Server::start_with_token(Some(TOKEN)).await;

    let reply = raw(&server, &get("/metrics", None)).await;
    assert_unauthorized(&reply, "GET /metrics");
    let reply = raw(&server, &get("/metrics", Some("Bearer nope"))).await;
    assert_unauthorized(&reply, "GET /metrics, wrong token");
    let head = head_only(
        &server,
        b"HEAD /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer\r\n"),
        "{head}"
    );

    let reply = raw(&server, &get("/metrics", Some(&format!("Bearer {TOKEN}")))).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.text().contains("# TYPE"), "{}", reply.text());

    let reply = raw(&server, &get("/health", None)).await;
    assert_eq!((reply.status, reply.text()), (200, "ok"));
    let reply = raw(&server, &get("/health", Some("Bearer nope"))).await;
    assert_eq!((reply.status, reply.text()), (200, "ok"));

    // Unknown paths stay plain 404s.
    let reply = raw(&server, &get("/other", None)).await;
    assert_eq!(reply.status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sends_the_token() {
    let server = Server::start_with_token(Some(TOKEN)).await;
    let url = server.url();

    let err = siplb_mi::call(&url, "lb_list", &[]).await.unwrap_err();
    assert!(
        matches!(&err, CtlError::Http { status: 401, .. }),
        "{err:?}"
    );
    let err = siplb_mi::call_with_token(&url, "lb_list", &[], Some("wrong"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CtlError::Http { status: 401, .. }),
        "{err:?}"
    );

    let list = siplb_mi::call_with_token(&url, "lb_list", &[], Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(list["Destinations"].as_array().unwrap().len(), 4);

    let options = CallOptions {
        token: Some(TOKEN.to_owned()),
        ..CallOptions::default()
    };
    assert_eq!(
        siplb_mi::call_with_options(&url, "lb_status", json!(["2", "0"]), &options)
            .await
            .unwrap(),
        json!("OK")
    );
    assert!(!server.balancer.status(2).unwrap().enabled);

    // A token that would break the header line is refused before anything is sent.
    let err = siplb_mi::call_with_token(&url, "lb_list", &[], Some("a\r\nX-Evil: 1"))
        .await
        .unwrap_err();
    assert!(matches!(err, CtlError::InvalidToken { .. }), "{err:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_everything_is_open_as_before() {
    let server = Server::start_with_token(None).await;
    let url = server.url();

    let reply = raw(&server, &list_request(None)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.header("www-authenticate").is_none());
    // A token sent anyway is ignored.
    let reply = raw(&server, &list_request(Some("Bearer anything"))).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = raw(&server, &get("/metrics", None)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = raw(&server, &get("/health", None)).await;
    assert_eq!(reply.status, 200);

    assert!(siplb_mi::call(&url, "lb_list", &[]).await.is_ok());
    assert!(
        siplb_mi::call_with_token(&url, "lb_list", &[], Some("anything"))
            .await
            .is_ok()
    );
    server.stop().await;
}
