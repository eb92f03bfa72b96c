//! The dashboard over real sockets: the page, its event stream, and what a page in a
//! browser (a request with `Origin`) may do with and without a token.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{PATIENCE, Server, raw};
use serde_json::Value;
use siplb_mi::{Dashboard, ServeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "dash-Token_0123456789";

fn request(method: &str, path: &str, headers: &[&str], body: &str) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    if method == "POST" {
        r.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

fn rpc(method: &str, params: &[&str]) -> String {
    serde_json::json!({ "jsonrpc": "2.0", "method": method, "params": params, "id": 1 }).to_string()
}

/// Opens `/events` and reads until `snapshots` snapshot events have come: the `hello`
/// event's data and the snapshots' data.
async fn read_events(server: &Server, headers: &[&str], snapshots: usize) -> (Value, Vec<Value>) {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(&request("GET", "/events", headers, ""))
        .await
        .unwrap();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(2 + snapshots as u64 * 2);
    loop {
        let events: Vec<(String, Value)> = text
            .split("\n\n")
            .filter_map(|block| {
                let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
                let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
                Some((name.to_owned(), serde_json::from_str(data).ok()?))
            })
            .collect();
        let found: Vec<Value> = events
            .iter()
            .filter(|(n, _)| n == "snapshot")
            .map(|(_, v)| v.clone())
            .collect();
        if found.len() >= snapshots {
            let hello = events.iter().find(|(n, _)| n == "hello").unwrap().1.clone();
            return (hello, found);
        }
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout_at(deadline.into(), stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("too few events: {text}"))
            .unwrap();
        assert!(n > 0, "stream closed: {text}");
        text.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_and_may_not_be_framed() {
    let server = Server::start().await;
    let reply = raw(&server, &request("GET", "/", &[], "")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(reply.header("x-frame-options"), Some("DENY"));
    assert!(
        reply
            .header("content-security-policy")
            .is_some_and(|p| p.contains("frame-ancestors 'none'"))
    );
    assert!(reply.text().contains("<title>siplb</title>"));
    // Nothing is fetched from elsewhere: the page works offline.
    assert!(!reply.text().contains("http://") && !reply.text().contains("https://"));
    let reply = raw(&server, &request("POST", "/", &[], "{}")).await;
    assert_eq!(reply.status, 405);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_carries_lb_list_each_second() {
    let server = Server::start().await;
    let (hello, snapshots) = read_events(&server, &[], 2).await;
    assert_eq!(hello["writable"], false);
    assert!(hello["history"].is_array());
    let list = raw(&server, &request("POST", "/mi", &[], &rpc("lb_list", &[]))).await;
    let list = list.json()["result"]["Destinations"].clone();
    assert_eq!(snapshots[1]["destinations"], list);
    assert!(snapshots[1]["t"].as_u64() > snapshots[0]["t"].as_u64());
    // A change shows in a later snapshot.
    server.balancer.set_status_by_operator(2, false).unwrap();
    let (_, snapshots) = read_events(&server, &[], 2).await;
    assert_eq!(snapshots[1]["destinations"][1]["enabled"], "no");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_a_page_only_reads() {
    let server = Server::start().await;
    let page = |body: String| request("POST", "/mi", &["Origin: http://127.0.0.1"], &body);
    let reply = raw(&server, &page(rpc("lb_status", &["2", "0"]))).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["error"]["code"], 403, "{}", reply.text());
    for write in [
        rpc("lb_drain", &["2"]),
        rpc("lb_resize", &["1", "vm", "3"]),
        rpc("lb_reload", &[]),
        rpc("lb_end_call", &["x"]),
    ] {
        assert_eq!(
            raw(&server, &page(write)).await.json()["error"]["code"],
            403
        );
    }
    assert!(server.balancer.destination(2).unwrap().enabled);
    // Reads are answered.
    let reply = raw(&server, &page(rpc("lb_status", &["2"]))).await;
    assert_eq!(reply.json()["result"]["enable"], "yes");
    // Another site's page gets nothing at all.
    let reply = raw(
        &server,
        &request(
            "POST",
            "/mi",
            &["Origin: http://evil.example"],
            &rpc("lb_list", &[]),
        ),
    )
    .await;
    assert_eq!(reply.status, 403);
    // A client that is not a browser (no Origin) keeps full access, as opensips-cli needs.
    let reply = raw(
        &server,
        &request("POST", "/mi", &[], &rpc("lb_status", &["2", "0"])),
    )
    .await;
    assert_eq!(reply.json()["result"], "OK");
    assert!(!server.balancer.destination(2).unwrap().enabled);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_a_page_when_turned_on_or_with_the_token() {
    let open = Server::start_configured(ServeOptions::default(), |s| {
        s.with_dashboard(Dashboard {
            enabled: true,
            writes: true,
        })
    })
    .await;
    let (hello, _) = read_events(&open, &[], 1).await;
    assert_eq!(hello["writable"], true);
    let reply = raw(
        &open,
        &request(
            "POST",
            "/mi",
            &["Origin: http://127.0.0.1"],
            &rpc("lb_drain", &["3"]),
        ),
    )
    .await;
    assert_eq!(reply.json()["result"], "OK", "{}", reply.text());
    assert!(open.balancer.destination(3).unwrap().draining);
    open.stop().await;

    let guarded = Server::start_with_token(Some(TOKEN)).await;
    let reply = raw(&guarded, &request("GET", "/events", &[], "")).await;
    assert_eq!(reply.status, 401);
    // The page itself holds no data and loads without the token; it asks for it.
    assert_eq!(
        raw(&guarded, &request("GET", "/", &[], "")).await.status,
        200
    );
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (hello, _) = read_events(&guarded, &[&auth], 1).await;
    assert_eq!(hello["writable"], true);
    let reply = raw(
        &guarded,
        &request(
            "POST",
            "/mi",
            &["Origin: http://127.0.0.1", &auth],
            &rpc("lb_resize", &["1", "vm", "7"]),
        ),
    )
    .await;
    assert_eq!(reply.json()["result"], "OK", "{}", reply.text());
    guarded.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_can_be_turned_off() {
    let server = Server::start_configured(ServeOptions::default(), |s| {
        s.with_dashboard(Dashboard {
            enabled: false,
            writes: false,
        })
    })
    .await;
    assert_eq!(
        raw(&server, &request("GET", "/", &[], "")).await.status,
        404
    );
    assert_eq!(
        raw(&server, &request("GET", "/events", &[], ""))
            .await
            .status,
        404
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_event_stream_does_not_hold_the_shutdown_up() {
    let server = Server::start().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(&request("GET", "/events", &[], ""))
        .await
        .unwrap();
    let mut first = [0u8; 256];
    let n = tokio::time::timeout(PATIENCE, stream.read(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
