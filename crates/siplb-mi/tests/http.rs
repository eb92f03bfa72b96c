//! The management interface over real sockets: the crate's own client, and raw HTTP/1.1
//! requests for the edge cases where `mi_http` hung or misbehaved.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{PATIENCE, Server, post, raw, read_reply};
use serde_json::json;
use siplb_mi::{CtlError, ServeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// Whether the peer closes the connection within `within` (EOF or reset).
async fn closes_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut sink))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_runs_every_method() {
    let server = Server::start().await;
    let url = server.url();

    let list = siplb_mi::call(&url, "lb_list", &[]).await.unwrap();
    let destinations = list["Destinations"].as_array().unwrap();
    assert_eq!(destinations.len(), 4);
    assert_eq!(
        destinations[3],
        json!({"uri":"sip:127.0.0.1:5074","id":4,"group":1,"enabled":"yes","auto-reenable":"on",
               "Resources":[{"name":"vm","max":10,"load":0},{"name":"pstn","max":64,"load":0}],
               "probe_mode":0})
    );
    assert_eq!(
        siplb_mi::call(&url, "load_balancer:list", &[])
            .await
            .unwrap(),
        list
    );

    assert_eq!(
        siplb_mi::call(&url, "lb_status", &args(&["2"]))
            .await
            .unwrap(),
        json!({"enable": "yes"})
    );
    assert_eq!(
        siplb_mi::call(
            &url,
            "lb_status",
            &args(&["destination_id=2", "new_status=0"])
        )
        .await
        .unwrap(),
        json!("OK")
    );
    assert_eq!(
        siplb_mi::call(&url, "lb_status", &args(&["destination_id=2"]))
            .await
            .unwrap(),
        json!({"enable": "no"})
    );
    assert!(!server.balancer.status(2).unwrap().auto_reenable);

    assert_eq!(
        siplb_mi::call(&url, "lb_resize", &args(&["3", "vm", "60"]))
            .await
            .unwrap(),
        json!("OK")
    );
    assert_eq!(server.balancer.destination(3).unwrap().resources[0].max, 60);
    let err = siplb_mi::call(&url, "lb_resize", &args(&["3", "foo", "60"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CtlError::Rpc { code: 404, message, data: None } if message == "Destination has no such resource"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "404: Destination has no such resource");
    let err = siplb_mi::call(&url, "lb_resize", &args(&["3", "vm", "-1"]))
        .await
        .unwrap_err();
    assert!(matches!(err, CtlError::Rpc { code: -32602, .. }), "{err:?}");
    assert_eq!(server.balancer.destination(3).unwrap().resources[0].max, 60);

    // Reload: capacities from the rows again, the operator's disable carried over.
    assert_eq!(
        siplb_mi::call(&url, "lb_reload", &[]).await.unwrap(),
        json!("OK")
    );
    assert_eq!(server.balancer.destination(3).unwrap().resources[0].max, 50);
    assert!(!server.balancer.status(2).unwrap().enabled);

    let names = siplb_mi::call(&url, "which", &[]).await.unwrap();
    assert!(names.as_array().unwrap().contains(&json!("lb_status")));
    assert_eq!(
        siplb_mi::call(&url, "which", &args(&["command=lb_status"]))
            .await
            .unwrap(),
        json!([["destination_id"], ["destination_id", "new_status"]])
    );
    let version = siplb_mi::call(&url, "version", &[]).await.unwrap();
    assert!(version["Server"].as_str().unwrap().starts_with("siplb "));
    let uptime = siplb_mi::call(&url, "uptime", &[]).await.unwrap();
    assert!(uptime["seconds"].is_u64());
    assert_eq!(
        siplb_mi::call(&url, "lb_calls", &[]).await.unwrap(),
        json!({"Calls": []})
    );

    let err = siplb_mi::call(&url, "lb_nosuch", &[]).await.unwrap_err();
    assert_eq!(err.to_string(), "-32601: Method not found");
    let err = siplb_mi::call(&url, "lb_status", &[]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "-32602: Invalid params (Too few or too many parameters)"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reports_transport_and_http_errors() {
    let server = Server::start().await;
    // Nothing listens on a port just released.
    let free = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = siplb_mi::call(&format!("http://{free}/mi"), "lb_list", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, CtlError::Io { .. }), "{err:?}");
    let err = siplb_mi::call(&format!("http://{}/nope", server.addr), "lb_list", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, CtlError::Http { status: 404, .. }), "{err:?}");
    let err = siplb_mi::call("https://127.0.0.1/mi", "lb_list", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, CtlError::InvalidUrl { .. }), "{err:?}");
    // A server that accepts and never answers: the call gives up in time.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let (_stream, _) = silent.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    let started = Instant::now();
    let err = siplb_mi::call_with_params(
        &format!("http://{silent_addr}/mi"),
        "lb_list",
        json!({}),
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CtlError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < PATIENCE);
    hold.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_gets_202_with_an_empty_body_and_the_connection_lives_on() {
    let server = Server::start().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(&post(
            "/mi",
            Some("application/json"),
            r#"{"jsonrpc":"2.0","method":"lb_status","params":["4","0"]}"#,
        ))
        .await
        .unwrap();
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status, 202);
    assert_eq!(reply.header("content-length"), Some("0"));
    assert!(reply.body.is_empty());
    // Run all the same.
    assert!(!server.balancer.status(4).unwrap().enabled);
    // Same connection, next request.
    stream
        .write_all(&post(
            "/mi",
            Some("application/json"),
            r#"{"jsonrpc":"2.0","method":"lb_status","params":[4],"id":1}"#,
        ))
        .await
        .unwrap();
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.text(),
        r#"{"jsonrpc":"2.0","result":{"enable":"no"},"id":1}"#
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_rpc_replies_over_http() {
    let server = Server::start().await;
    for path in ["/mi", "/mi/", "/mi?x=1"] {
        for ct in ["application/json", "application/json; charset=utf-8"] {
            let reply = raw(
                &server,
                &post(
                    path,
                    Some(ct),
                    r#"{"jsonrpc":"2.0","method":"lb_status","params":{"destination_id":"1"},"id":"abc"}"#,
                ),
            )
            .await;
            assert_eq!(reply.status, 200, "{path} {ct}");
            assert_eq!(reply.header("content-type"), Some("application/json"));
            assert_eq!(
                reply.text(),
                r#"{"jsonrpc":"2.0","result":{"enable":"yes"},"id":"abc"}"#
            );
        }
    }
    // JSON-RPC errors are HTTP 200, as in the reference.
    let reply = raw(
        &server,
        &post(
            "/mi",
            Some("application/json"),
            r#"{"jsonrpc":"2.0","method":"#,
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.text(),
        r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#
    );
    let reply = raw(
        &server,
        &post(
            "/mi",
            Some("application/json"),
            r#"[{"jsonrpc":"2.0","method":"lb_status","params":[1],"id":1}]"#,
        ),
    )
    .await;
    assert_eq!(
        reply.json(),
        json!({"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null})
    );
    let reply = raw(&server, &post("/mi", Some("application/json"), "")).await;
    assert_eq!(reply.json()["error"]["code"], -32700);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_path_and_content_type_get_complete_replies() {
    let server = Server::start().await;
    let body = r#"{"jsonrpc":"2.0","method":"lb_list","id":1}"#;

    let reply = raw(&server, b"GET /mi HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"));

    let reply = raw(&server, &post("/other", Some("application/json"), body)).await;
    assert_eq!(reply.status, 404);
    assert!(!reply.body.is_empty());
    let reply = raw(&server, b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    assert_eq!(reply.status, 404);

    let reply = raw(&server, &post("/mi", Some("text/plain"), body)).await;
    assert_eq!(reply.status, 415);
    let reply = raw(&server, &post("/mi", None, body)).await;
    assert_eq!(reply.status, 415);
    let reply = raw(
        &server,
        &post("/mi", Some("application/x-www-form-urlencoded"), body),
    )
    .await;
    assert_eq!(reply.status, 415);

    let reply = raw(&server, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    assert_eq!((reply.status, reply.text()), (200, "ok"));
    let reply = raw(
        &server,
        b"DELETE /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 405);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_as_prometheus_text() {
    let server = Server::start().await;
    server.balancer.resize(1, "pstn", 40).unwrap();
    let reply = raw(&server, b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = reply.text();
    assert!(text.contains(
        "siplb_capacity{id=\"1\",group=\"1\",uri=\"sip:127.0.0.1:5071\",resource=\"pstn\"} 40\n"
    ));
    assert!(text.contains(
        "siplb_load{id=\"4\",group=\"1\",uri=\"sip:127.0.0.1:5074\",resource=\"vm\"} 0\n"
    ));
    assert!(text.contains(
        "siplb_destination_enabled{id=\"2\",group=\"1\",uri=\"sip:127.0.0.1:5072\"} 1\n"
    ));
    let reply = raw(&server, &post("/metrics", Some("application/json"), "{}")).await;
    assert_eq!(reply.status, 405);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413() {
    let server = Server::start().await;
    let big = format!(
        r#"{{"jsonrpc":"2.0","method":"lb_list","params":["{}"],"id":1}}"#,
        "x".repeat(70 * 1024)
    );
    // Declared length over the limit: refused before the body is read.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /mi HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                big.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.header("connection"), Some("close"));

    // Chunked, so the size shows only while reading.
    let mut request = b"POST /mi HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in big.as_bytes().chunks(8 * 1024) {
        request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        request.extend_from_slice(piece);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // The server may answer and close before taking all of it; a failed write is fine.
    let _ = stream.write_all(&request).await;
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status, 413);

    // Just under the limit is read and answered.
    let fits = format!(
        r#"{{"jsonrpc":"2.0","method":"lb_list","params":["{}"],"id":1}}"#,
        "x".repeat(60 * 1024)
    );
    let reply = raw(&server, &post("/mi", Some("application/json"), &fits)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["error"]["code"], -32602);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_malformed_clients_block_no_one() {
    let server = Server::start_with(ServeOptions {
        header_timeout: Duration::from_secs(3),
        body_timeout: Duration::from_secs(3),
        ..ServeOptions::default()
    })
    .await;

    // Half a head, then silence.
    let mut half_head = TcpStream::connect(server.addr).await.unwrap();
    half_head
        .write_all(b"POST /mi HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
        .await
        .unwrap();
    // A whole head, then half the body.
    let mut half_body = TcpStream::connect(server.addr).await.unwrap();
    half_body
        .write_all(
            b"POST /mi HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"",
        )
        .await
        .unwrap();
    // Connected, nothing sent.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();

    // Meanwhile others are served at once.
    for _ in 0..3 {
        let started = Instant::now();
        let status = siplb_mi::call(&server.url(), "lb_status", &args(&["1"]))
            .await
            .unwrap();
        assert_eq!(status, json!({"enable": "yes"}));
        // Well under the stall timeouts: nobody waited for the stalled clients.
        assert!(started.elapsed() < Duration::from_millis(1500));
    }

    // And the stalled ones are let go: 408 for the body, a closed socket for the heads.
    let reply = read_reply(&mut half_body).await;
    assert_eq!(reply.status, 408);
    assert!(closes_within(&mut half_body, PATIENCE).await);
    assert!(closes_within(&mut half_head, PATIENCE).await);
    assert!(closes_within(&mut silent, PATIENCE).await);

    // Garbage gets an answer or a close, never a hang, and the server lives on.
    for garbage in [
        &b"HELLO\r\n\r\n"[..],
        b"POST /mi HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"POST /mi HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"\x00\x01\x02\xff\r\n\r\n",
        b"POST /mi HTTP/9.9\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(garbage).await.unwrap();
        assert!(
            closes_within(&mut stream, PATIENCE).await,
            "{:?}",
            String::from_utf8_lossy(garbage)
        );
    }
    assert_eq!(
        siplb_mi::call(&server.url(), "lb_status", &args(&["1"]))
            .await
            .unwrap(),
        json!({"enable": "yes"})
    );
    server.stop().await;
}

/// One client holding many half-sent requests cannot lock operators out: its
/// connections beyond a few are closed at once, and another address is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_connection() {
    let server = Server::start_with(ServeOptions {
        max_connections: 64,
        max_connections_per_source: 8,
        ..ServeOptions::default()
    })
    .await;
    let mut stalled = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let _ = s
            .write_all(b"POST /mi HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await;
        stalled.push(s);
    }
    // Beyond its eight, the same address is turned away at once.
    let mut refused = 0;
    for s in &mut stalled[8..] {
        if closes_within(s, Duration::from_secs(2)).await {
            refused += 1;
        }
    }
    assert_eq!(refused, 92);
    // An operator on another address is served at once.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut operator = socket.connect(server.addr).await.unwrap();
    let started = Instant::now();
    operator
        .write_all(&post(
            "/mi",
            Some("application/json"),
            r#"{"jsonrpc":"2.0","method":"lb_status","params":["1"],"id":1}"#,
        ))
        .await
        .unwrap();
    assert_eq!(read_reply(&mut operator).await.status, 200);
    assert!(started.elapsed() < Duration::from_millis(1500));
    drop(stalled);
    server.stop().await;
}

/// Without a token, a request naming another host (as a web page reaching the
/// interface through DNS rebinding would) is refused; with one, the token decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_only_loopback_hosts_are_served() {
    let server = Server::start().await;
    let request = |host: &str| {
        format!(
            "POST /mi HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 43\r\n\r\n{{\"jsonrpc\":\"2.0\",\"method\":\"lb_list\",\"id\":1}}"
        )
        .into_bytes()
    };
    assert_eq!(raw(&server, &request("localhost:8888")).await.status, 200);
    assert_eq!(raw(&server, &request("[::1]:8888")).await.status, 200);
    let reply = raw(&server, &request("rebind.attacker.example:8888")).await;
    assert_eq!(reply.status, 403);
    assert!(String::from_utf8_lossy(&reply.body).contains("Host not allowed"));
    // Not even a read.
    let reply = raw(
        &server,
        b"GET /metrics HTTP/1.1\r\nHost: rebind.attacker.example\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 403);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_returns() {
    let server = Server::start().await;
    let addr = server.addr;
    // An idle keep-alive connection must not hold the shutdown up.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(&post(
        "/mi",
        Some("application/json"),
        r#"{"jsonrpc":"2.0","method":"lb_list","id":1}"#,
    ))
    .await
    .unwrap();
    assert_eq!(read_reply(&mut idle).await.status, 200);
    let started = Instant::now();
    server.stop().await;
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(TcpStream::connect(addr).await.is_err());
}
