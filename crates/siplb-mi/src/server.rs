//! The HTTP edge: routes, status codes and limits around [`MiState`]. Everything about
//! JSON-RPC lives in the dispatch layer; this only moves bytes and guards the listener.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::dashboard::EventBody;
use crate::dispatch::Access;
use crate::exposition::METRICS_CONTENT_TYPE;
use crate::state::MiState;

/// A response: complete, or the dashboard's event stream.
type Reply = Either<Full<Bytes>, EventBody>;

/// The dashboard: one hand-written page, no build step, nothing fetched from elsewhere.
const DASHBOARD_PAGE: &str = include_str!("../assets/dashboard.html");

/// Limits of the management listener.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Largest request body accepted; larger ones get `413`.
    pub max_body: usize,
    /// Time a connection has to deliver a request's headers, counted from the moment the
    /// server starts waiting for them (so an idle keep-alive connection is closed too).
    pub header_timeout: Duration,
    /// Time a request has to deliver its body once the headers are in; then `408`.
    pub body_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Connections served at once for one client address; further ones are closed,
    /// so that one client holding half-sent requests cannot lock operators out.
    pub max_connections_per_source: usize,
    /// On shutdown, how long requests in flight may take before their connections are cut.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_body: 64 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 512,
            max_connections_per_source: 32,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Where the management interface listens unless configured otherwise (`[management]
/// listen`), as OpenSIPS' `mi_http` does: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8888";

/// Request heads beyond this are refused (hyper's own floor is 8 KiB).
const MAX_HEAD_BUFFER: usize = 16 * 1024;

/// Serves the management interface on `listener` with [`ServeOptions::default`] until
/// `shutdown` completes. See [`serve_with`].
pub async fn serve(
    listener: TcpListener,
    state: Arc<MiState>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with(listener, state, ServeOptions::default(), shutdown).await
}

/// Serves HTTP/1.1 on `listener` until `shutdown` completes:
///
/// - `POST /mi` and `/mi/`: JSON-RPC 2.0 (`Content-Type: application/json`), `200` with the
///   reply, or `202` with an empty body for a notification;
/// - `GET /metrics`: Prometheus text; `GET /health`: `200 ok` (`503 draining` while
///   siplb drains before stopping);
/// - anything else: `404`, `405`, `413`, `415` or `408`, always with a complete body.
///
/// When the state has a token ([`MiState::with_token`]), a request to `/mi` or `/metrics`
/// without `Authorization: Bearer <token>` gets `401` with `WWW-Authenticate: Bearer`
/// (checked before anything else about it, and the connection is then closed); `/health`
/// needs none.
///
/// On shutdown it stops accepting, lets requests in flight finish for
/// [`ServeOptions::shutdown_grace`], then drops the remaining connections. Errors accepting
/// a connection (descriptor exhaustion, for one) are logged and retried, never returned:
/// the management interface must outlive a burst of them.
pub async fn serve_with(
    listener: TcpListener,
    state: Arc<MiState>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .max_buf_size(MAX_HEAD_BUFFER)
        .max_headers(64);
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let per_source = Arc::new(PerSource::default());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let options = Arc::new(options);
    let sampler = state.dashboard.enabled.then(|| {
        let state = Arc::clone(&state);
        tokio::spawn(async move { state.run_sampler().await })
    });
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "management listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(source_slot) = per_source.take(peer.ip(), options.max_connections_per_source)
        else {
            debug!(%peer, "management connection refused: too many from this address");
            drop(stream);
            continue;
        };
        // Replies are single small writes; Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        let service = {
            let state = Arc::clone(&state);
            let options = Arc::clone(&options);
            service_fn(move |request| {
                let state = Arc::clone(&state);
                let options = Arc::clone(&options);
                async move { Ok::<_, Infallible>(route(request, &state, &options).await) }
            })
        };
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            if let Err(error) = connection.await {
                debug!(%peer, %error, "management connection closed on error");
            }
            drop(permit);
            drop(source_slot);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    state.board.close();
    if tokio::time::timeout(options.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("management connections still busy after the grace period; closing them");
    }
    connections.shutdown().await;
    Ok(())
}

/// Connections open per client address.
#[derive(Debug, Default)]
struct PerSource(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

struct SourceSlot(Arc<PerSource>, std::net::IpAddr);

impl PerSource {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<SourceSlot> {
        let mut map = self.0.lock().ok()?;
        let n = map.entry(ip).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(SourceSlot(Arc::clone(self), ip))
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.0.0.lock()
            && let Some(n) = map.get_mut(&self.1)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

async fn route(
    request: Request<Incoming>,
    state: &MiState,
    options: &ServeOptions,
) -> Response<Reply> {
    if state.dashboard.enabled && request.uri().path() == "/events" {
        if let Some(refused) = refuse(&request, state) {
            return refused.map(Either::Left);
        }
        if request.method() != Method::GET {
            return method_not_allowed("GET").map(Either::Left);
        }
        // With a token, the token was checked: the page may do what the token may.
        let writable = state.token.is_some() || state.dashboard.writes;
        let mut response = Response::new(Either::Right(state.event_stream(writable)));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return response;
    }
    plain(request, state, options).await.map(Either::Left)
}

/// The answer to a request refused before anything else is looked at: a `Host` that
/// is not allowed, or a missing or wrong token where one is needed.
fn refuse(request: &Request<Incoming>, state: &MiState) -> Option<Response<Full<Bytes>>> {
    let path = request.uri().path();
    if !state.host_allowed(
        request
            .headers()
            .get(header::HOST)
            .map(HeaderValue::as_bytes),
    ) {
        debug!(path, "management request for another host refused");
        return Some(respond_and_close(
            StatusCode::FORBIDDEN,
            "Forbidden: Host not allowed (set [management] token, or list it in allowed_hosts)\n",
        ));
    }
    let guarded = matches!(path, "/mi" | "/mi/" | "/metrics" | "/events");
    if guarded
        && !state.authorized(
            request
                .headers()
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        )
    {
        debug!(path, "management request without the right token refused");
        return Some(unauthorized());
    }
    None
}

async fn plain(
    request: Request<Incoming>,
    state: &MiState,
    options: &ServeOptions,
) -> Response<Full<Bytes>> {
    if let Some(refused) = refuse(&request, state) {
        return refused;
    }
    match request.uri().path() {
        "/" if state.dashboard.enabled => read_only(&request, dashboard_page),
        "/mi" | "/mi/" => mi(request, state, options).await,
        "/metrics" if is_read(&request) => respond(
            StatusCode::OK,
            METRICS_CONTENT_TYPE,
            state.render_metrics().await,
        ),
        "/metrics" => method_not_allowed("GET, HEAD"),
        "/health" if state.is_draining() => read_only(&request, || {
            respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, "draining")
        }),
        "/health" => {
            // Still serving: a node without its cluster's store routes on its own view,
            // which a health checker must not take it out of rotation for.
            let note = state.cluster.as_ref().and_then(|c| c.degraded());
            read_only(&request, || match &note {
                Some(why) => respond(StatusCode::OK, TEXT, format!("ok (alone: {why})")),
                None => respond(StatusCode::OK, TEXT, "ok"),
            })
        }
        _ => respond(StatusCode::NOT_FOUND, TEXT, "Not Found\n"),
    }
}

/// The page holds no data (that comes from `/events`), so it is served without a
/// token; it may not be framed, so no other site can trick a click on its buttons.
fn dashboard_page() -> Response<Full<Bytes>> {
    let mut response = respond(StatusCode::OK, HTML, DASHBOARD_PAGE);
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'",
        ),
    );
    response
}

/// What a request to `/mi` may do. A browser names the page that sent a request in
/// `Origin`: it must be this interface's own (a page elsewhere gets `403`), and without
/// a token such a request only reads unless the operator turned the dashboard's writes
/// on. Clients that are not browsers (`siplb ctl`, opensips-cli, scripts) send no
/// `Origin` and keep full access. `None`: another site's page.
fn access(request: &Request<Incoming>, state: &MiState) -> Option<Access> {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return Some(Access::Full);
    };
    let host = request
        .headers()
        .get(header::HOST)
        .map(HeaderValue::as_bytes);
    if !same_origin(origin.as_bytes(), host) {
        return None;
    }
    Some(if state.token.is_some() || state.dashboard.writes {
        Access::Full
    } else {
        Access::ReadOnly
    })
}

/// Whether `origin` (`http://host:port`) names the same authority as `host`.
fn same_origin(origin: &[u8], host: Option<&[u8]>) -> bool {
    let authority = origin
        .strip_prefix(b"http://")
        .or_else(|| origin.strip_prefix(b"https://"));
    matches!((authority, host), (Some(a), Some(h)) if !a.is_empty() && a.eq_ignore_ascii_case(h))
}

const HTML: &str = "text/html; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let body = body.into();
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    // Spelled out, not left to hyper, so that even the empty 202 carries
    // `Content-Length: 0`: a client must never wait on a body that is not coming.
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if !body.is_empty() {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    *response.body_mut() = Full::new(body);
    response
}

/// A response after which the connection is closed, for requests whose body was not read
/// (or not fully): what is left of it must not be parsed as the next request.
fn respond_and_close(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = respond(status, TEXT, body);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// `401`, before the body is read (so the connection is closed after it), with no hint of
/// what was wrong with the credentials.
fn unauthorized() -> Response<Full<Bytes>> {
    let mut response = respond_and_close(
        StatusCode::UNAUTHORIZED,
        "Unauthorized: a valid bearer token is required\n",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = respond(StatusCode::METHOD_NOT_ALLOWED, TEXT, "Method Not Allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn is_read(request: &Request<Incoming>) -> bool {
    request.method() == Method::GET || request.method() == Method::HEAD
}

fn read_only(
    request: &Request<Incoming>,
    page: impl FnOnce() -> Response<Full<Bytes>>,
) -> Response<Full<Bytes>> {
    if is_read(request) {
        page()
    } else {
        method_not_allowed("GET, HEAD")
    }
}

/// `application/json`, with any parameters (`; charset=utf-8`), in any case.
fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case(JSON))
}

async fn mi(
    request: Request<Incoming>,
    state: &MiState,
    options: &ServeOptions,
) -> Response<Full<Bytes>> {
    if request.method() != Method::POST {
        return method_not_allowed("POST");
    }
    let Some(access) = access(&request, state) else {
        debug!("management request from another site's page refused");
        return respond_and_close(StatusCode::FORBIDDEN, "Forbidden: cross-origin request\n");
    };
    if !is_json(request.headers().get(header::CONTENT_TYPE)) {
        return respond_and_close(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type: send application/json\n",
        );
    }
    // A declared length over the limit is refused before reading a byte of it.
    if request.body().size_hint().lower() > options.max_body as u64 {
        return respond_and_close(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large\n");
    }
    let body = Limited::new(request.into_body(), options.max_body).collect();
    let body = match tokio::time::timeout(options.body_timeout, body).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.is::<LengthLimitError>() => {
            return respond_and_close(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large\n");
        }
        Ok(Err(error)) => {
            debug!(%error, "management request body unreadable");
            return respond_and_close(StatusCode::BAD_REQUEST, "Bad Request\n");
        }
        Err(_) => return respond_and_close(StatusCode::REQUEST_TIMEOUT, "Request Timeout\n"),
    };
    match state.handle_rpc_with(&body, access).await {
        Some(reply) => respond(StatusCode::OK, JSON, reply),
        None => respond(StatusCode::ACCEPTED, TEXT, Bytes::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_only() {
        assert!(same_origin(
            b"http://127.0.0.1:8888",
            Some(b"127.0.0.1:8888")
        ));
        assert!(same_origin(
            b"https://LB.example.net",
            Some(b"lb.example.net")
        ));
        assert!(!same_origin(
            b"http://evil.example.com",
            Some(b"127.0.0.1:8888")
        ));
        assert!(!same_origin(
            b"http://127.0.0.1:8889",
            Some(b"127.0.0.1:8888")
        ));
        assert!(!same_origin(b"null", Some(b"127.0.0.1:8888")));
        assert!(!same_origin(b"http://", Some(b"")));
        assert!(!same_origin(b"http://127.0.0.1:8888", None));
    }

    #[test]
    fn json_content_types() {
        let ok = |s: &'static str| is_json(Some(&HeaderValue::from_static(s)));
        assert!(ok("application/json"));
        assert!(ok("application/json; charset=utf-8"));
        assert!(ok("Application/JSON;charset=UTF-8"));
        assert!(!ok("text/plain"));
        assert!(!ok("application/jsonx"));
        assert!(!ok("application/x-www-form-urlencoded"));
        assert!(!is_json(None));
    }

    #[test]
    fn responses_always_carry_a_length() {
        let r = respond(StatusCode::ACCEPTED, TEXT, Bytes::new());
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "0");
        assert!(r.headers().get(header::CONTENT_TYPE).is_none());
        let r = respond(StatusCode::OK, JSON, "{}");
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "2");
        assert_eq!(r.headers()[header::CONTENT_TYPE], JSON);
        let r = unauthorized();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(r.headers()[header::CONNECTION], "close");
        assert_ne!(r.headers()[header::CONTENT_LENGTH], "0");
    }
}
