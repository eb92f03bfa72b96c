//! The client behind `siplb ctl`: one JSON-RPC call over a plain HTTP/1.1 connection,
//! with params built the way `opensips-cli` builds them, so either tool sends the same
//! request to either server.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use hyper::Uri;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where `siplb ctl` and `opensips-cli` look by default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8888/mi";

/// What [`call`] waits at most for the whole exchange.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A larger reply is refused rather than buffered without end.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// Why a call gave no result.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The URL is not `http://host[:port][/path]`.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Could not connect, send or receive.
    #[error("cannot reach {url}: {source}")]
    Io {
        /// The URL called.
        url: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// No complete reply in time.
    #[error("no reply from {url} within {timeout:?}")]
    Timeout {
        /// The URL called.
        url: String,
        /// The time waited.
        timeout: Duration,
    },
    /// The server answered with an HTTP error instead of a JSON-RPC reply.
    #[error("HTTP {status} from {url}: {body}")]
    Http {
        /// The URL called.
        url: String,
        /// HTTP status code.
        status: u16,
        /// The reply body, as text.
        body: String,
    },
    /// The reply is not a JSON-RPC 2.0 response to this call.
    #[error("bad reply from {url}: {reason}")]
    BadResponse {
        /// The URL called.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token cannot be sent in an `Authorization` header (empty, or not printable
    /// ASCII without spaces). The token itself is not repeated.
    #[error("invalid token: {reason}")]
    InvalidToken {
        /// What is wrong with it.
        reason: String,
    },
    /// The server ran the call and answered with a JSON-RPC error object.
    #[error("{code}: {message}{}", data.as_ref().map(|d| format!(" ({})", display_data(d))).unwrap_or_default())]
    Rpc {
        /// JSON-RPC error code (`404`, `-32602`...).
        code: i64,
        /// Error message (`Destination ID not found`...).
        message: String,
        /// Error data, when given (`Too few or too many parameters`...).
        data: Option<Value>,
    },
}

fn display_data(data: &Value) -> String {
    match data {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// How [`call_with_options`] makes a call. `CallOptions::default()` is what [`call`] uses.
#[derive(Clone)]
pub struct CallOptions {
    /// What the whole exchange may take at most; [`DEFAULT_TIMEOUT`] by default.
    pub timeout: Duration,
    /// Sent as `Authorization: Bearer <token>` when set, for a server configured with a
    /// token (see [`MiState::with_token`](crate::MiState::with_token)); none by default.
    /// It must be printable ASCII without spaces.
    pub token: Option<String>,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            token: None,
        }
    }
}

/// Spelled out so that the token never reaches a log line.
impl std::fmt::Debug for CallOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallOptions")
            .field("timeout", &self.timeout)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The params `opensips-cli` sends for command-line arguments: when every argument is
/// `name=value` (name of letters, `.`, `_` or `-`), an object of strings; otherwise an
/// array of the arguments as strings; with no argument, `{}`.
pub fn params_from_args(args: &[String]) -> Value {
    let named: Option<Map<String, Value>> = args
        .iter()
        .map(|arg| {
            let (name, value) = arg.split_once('=')?;
            let is_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphabetic() || matches!(b, b'.' | b'_' | b'-'));
            is_name.then(|| (name.to_owned(), Value::String(value.to_owned())))
        })
        .collect();
    match named {
        Some(map) => Value::Object(map),
        None => Value::Array(args.iter().cloned().map(Value::String).collect()),
    }
}

/// Calls `method` at `url` (e.g. [`DEFAULT_URL`]) with command-line style arguments (see
/// [`params_from_args`]) and returns the JSON-RPC result.
pub async fn call(url: &str, method: &str, args: &[String]) -> Result<Value, CtlError> {
    call_with_token(url, method, args, None).await
}

/// [`call`], sending `token` (when given) as `Authorization: Bearer <token>`, as a server
/// configured with a token requires. A missing or wrong token comes back as
/// [`CtlError::Http`] with status `401`.
pub async fn call_with_token(
    url: &str,
    method: &str,
    args: &[String],
    token: Option<&str>,
) -> Result<Value, CtlError> {
    let options = CallOptions {
        token: token.map(str::to_owned),
        ..CallOptions::default()
    };
    call_with_options(url, method, params_from_args(args), &options).await
}

/// Calls `method` at `url` with `params` as given, waiting at most `timeout` for the whole
/// exchange, and returns the JSON-RPC result.
pub async fn call_with_params(
    url: &str,
    method: &str,
    params: Value,
    timeout: Duration,
) -> Result<Value, CtlError> {
    let options = CallOptions {
        timeout,
        token: None,
    };
    call_with_options(url, method, params, &options).await
}

/// Calls `method` at `url` with `params` as given, as `options` say (timeout, token), and
/// returns the JSON-RPC result.
pub async fn call_with_options(
    url: &str,
    method: &str,
    params: Value,
    options: &CallOptions,
) -> Result<Value, CtlError> {
    let target = Target::parse(url)?;
    let token = options.token.as_deref();
    if let Some(token) = token {
        check_token(token)?;
    }
    let timeout = options.timeout;
    // A random string id, as opensips-cli sends, so replies cannot be confused.
    let id = (RandomState::new().hash_one(method) % 100_000).to_string();
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id}).to_string();
    let exchange = exchange(&target, body.as_bytes(), token);
    let (status, reply) = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(source)) => {
            return Err(CtlError::Io {
                url: url.to_owned(),
                source,
            });
        }
        Err(_) => {
            return Err(CtlError::Timeout {
                url: url.to_owned(),
                timeout,
            });
        }
    };
    interpret(url, &id, status, &reply)
}

/// POSTs a JSON body to `url` (plain `http://`) and returns the status: the one
/// HTTP client of siplb, for the management calls above and for the status-event
/// webhook alike.
pub async fn post_json(url: &str, body: &[u8], timeout: Duration) -> Result<u16, CtlError> {
    let target = Target::parse(url)?;
    match tokio::time::timeout(timeout, exchange(&target, body, None)).await {
        Ok(Ok((status, _))) => Ok(status),
        Ok(Err(source)) => Err(CtlError::Io {
            url: url.to_owned(),
            source,
        }),
        Err(_) => Err(CtlError::Timeout {
            url: url.to_owned(),
            timeout,
        }),
    }
}

/// A token must fit in a header line as is: anything else could end the line and
/// smuggle in more headers.
fn check_token(token: &str) -> Result<(), CtlError> {
    let reason = if token.is_empty() {
        "empty"
    } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
        "not printable ASCII without spaces"
    } else {
        return Ok(());
    };
    Err(CtlError::InvalidToken {
        reason: reason.to_owned(),
    })
}

/// Turns an HTTP reply into the call's result or error. No I/O.
fn interpret(url: &str, id: &str, status: u16, body: &[u8]) -> Result<Value, CtlError> {
    let bad = |reason: String| CtlError::BadResponse {
        url: url.to_owned(),
        reason,
    };
    if status != 200 {
        return Err(CtlError::Http {
            url: url.to_owned(),
            status,
            body: String::from_utf8_lossy(body).trim().to_owned(),
        });
    }
    let mut reply: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    if reply.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(bad("not a JSON-RPC 2.0 response".into()));
    }
    // A parse or invalid-request error comes back with a null id, and is still ours.
    match reply.get("id") {
        Some(Value::String(got)) if got == id => {}
        Some(Value::Null) if reply.get("error").is_some() => {}
        other => return Err(bad(format!("reply id {other:?} does not match {id:?}"))),
    }
    if let Some(error) = reply.get_mut("error") {
        let code = error.get("code").and_then(Value::as_i64);
        let message = error.get("message").and_then(Value::as_str);
        let (Some(code), Some(message)) = (code, message) else {
            return Err(bad(format!("malformed error object {error}")));
        };
        let message = message.to_owned();
        let data = error.get_mut("data").map(Value::take);
        return Err(CtlError::Rpc {
            code,
            message,
            data,
        });
    }
    reply
        .get_mut("result")
        .map(Value::take)
        .ok_or_else(|| bad("neither result nor error".into()))
}

#[derive(Debug)]
struct Target {
    host: String,
    port: u16,
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, CtlError> {
        let invalid = |reason: &str| CtlError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(invalid("https is not supported; use http")),
            _ => return Err(invalid("the URL must start with http://")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("credentials in the URL are not supported"));
        }
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/");
        Ok(Self {
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path: path.to_owned(),
        })
    }
}

/// One request on a fresh connection; returns the status and the body.
/// `token` must have passed [`check_token`].
async fn exchange(
    target: &Target,
    body: &[u8],
    token: Option<&str>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
    let _ = stream.set_nodelay(true);
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nUser-Agent: siplb/{}\r\n{authorization}Content-Length: {}\r\nConnection: close\r\n\r\n",
        target.path,
        target.authority,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await?;
    read_response(&mut stream).await
}

fn invalid_data(reason: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, reason.into())
}

/// Reads one response: skips `1xx`, then takes the body by `Content-Length`, chunked
/// coding, or up to the close.
async fn read_response(stream: &mut TcpStream) -> std::io::Result<(u16, Vec<u8>)> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let (status, head_len, framing) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = response.code.unwrap_or(0);
                    break (status, len, Framing::of(response.headers)?);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(invalid_data(format!("bad HTTP response: {e}"))),
            }
            if buf.len() > MAX_RESPONSE || read_more(stream, &mut buf).await? == 0 {
                return Err(invalid_data("connection closed before the response head"));
            }
        };
        buf.drain(..head_len);
        if (100..200).contains(&status) {
            continue;
        }
        let body = match framing {
            Framing::Length(len) => {
                if len > MAX_RESPONSE {
                    return Err(invalid_data("response too large"));
                }
                while buf.len() < len {
                    if read_more(stream, &mut buf).await? == 0 {
                        return Err(invalid_data("connection closed inside the body"));
                    }
                }
                buf.truncate(len);
                buf
            }
            Framing::Chunked => read_chunked(stream, buf).await?,
            Framing::UntilClose => {
                while read_more(stream, &mut buf).await? != 0 {
                    if buf.len() > MAX_RESPONSE {
                        return Err(invalid_data("response too large"));
                    }
                }
                buf
            }
        };
        return Ok((status, body));
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

#[derive(Debug, PartialEq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

impl Framing {
    fn of(headers: &[httparse::Header<'_>]) -> std::io::Result<Self> {
        let value = |name: &str| {
            headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
        };
        if value("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
            return Ok(Self::Chunked);
        }
        match value("content-length") {
            Some(len) => len
                .parse()
                .map(Self::Length)
                .map_err(|_| invalid_data("bad Content-Length")),
            None => Ok(Self::UntilClose),
        }
    }
}

/// Decodes a chunked body; `buf` holds what was already read past the head.
async fn read_chunked(stream: &mut TcpStream, mut buf: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
                break pos;
            }
            if buf.len() > 1024 || read_more(stream, &mut buf).await? == 0 {
                return Err(invalid_data("bad chunk size line"));
            }
        };
        let line = String::from_utf8_lossy(&buf[..line_end]);
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| invalid_data("bad chunk size"))?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers are not needed; the connection is closed after this reply anyway.
            return Ok(body);
        }
        if body.len() + size > MAX_RESPONSE {
            return Err(invalid_data("response too large"));
        }
        while buf.len() < size + 2 {
            if read_more(stream, &mut buf).await? == 0 {
                return Err(invalid_data("connection closed inside a chunk"));
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn params_like_opensips_cli() {
        assert_eq!(params_from_args(&[]), json!({}));
        assert_eq!(params_from_args(&args(&["2"])), json!(["2"]));
        assert_eq!(
            params_from_args(&args(&["3", "vm", "50"])),
            json!(["3", "vm", "50"])
        );
        assert_eq!(
            params_from_args(&args(&["destination_id=2", "new_status=1"])),
            json!({"destination_id": "2", "new_status": "1"})
        );
        // One positional argument makes them all positional.
        assert_eq!(
            params_from_args(&args(&["destination_id=2", "1"])),
            json!(["destination_id=2", "1"])
        );
        // Names with digits are not names to opensips-cli.
        assert_eq!(params_from_args(&args(&["a1=2"])), json!(["a1=2"]));
        assert_eq!(
            params_from_args(&args(&["attrs=a=b"])),
            json!({"attrs": "a=b"})
        );
    }

    #[test]
    fn urls() {
        let t = Target::parse("http://127.0.0.1:8888/mi").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8888, "/mi")
        );
        let t = Target::parse("http://[::1]:9000/mi/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str()),
            ("::1", 9000, "[::1]:9000")
        );
        let t = Target::parse("http://localhost").unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
        for bad in [
            "https://h/mi",
            "127.0.0.1:8888",
            "ftp://h/",
            "http://u:p@h/mi",
            "",
        ] {
            assert!(
                matches!(Target::parse(bad), Err(CtlError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn interpreting_replies() {
        let ok = br#"{"jsonrpc":"2.0","result":{"enable":"yes"},"id":"7"}"#;
        assert_eq!(
            interpret("u", "7", 200, ok).unwrap(),
            json!({"enable": "yes"})
        );
        let err = br#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Too few or too many parameters"},"id":"7"}"#;
        let e = interpret("u", "7", 200, err).unwrap_err();
        assert_eq!(
            e.to_string(),
            "-32602: Invalid params (Too few or too many parameters)"
        );
        assert!(matches!(e, CtlError::Rpc { code: -32602, .. }));
        let parse =
            br#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#;
        assert_eq!(
            interpret("u", "7", 200, parse).unwrap_err().to_string(),
            "-32700: Parse error"
        );
        assert!(matches!(
            interpret("u", "7", 200, br#"{"jsonrpc":"2.0","result":1,"id":"8"}"#),
            Err(CtlError::BadResponse { .. })
        ));
        assert!(matches!(
            interpret("u", "7", 200, b"<html>"),
            Err(CtlError::BadResponse { .. })
        ));
        assert!(matches!(
            interpret("u", "7", 415, b"Unsupported\n"),
            Err(CtlError::Http { status: 415, .. })
        ));
    }

    #[test]
    fn tokens_must_fit_a_header_line() {
        assert!(check_token("s3cret-_.~+/=").is_ok());
        for bad in ["", "two words", "a\r\nX-Evil: 1", "tab\t", "caf\u{e9}"] {
            let e = check_token(bad).unwrap_err();
            assert!(matches!(e, CtlError::InvalidToken { .. }), "{bad:?}");
        }
        let e = check_token("a b").unwrap_err().to_string();
        assert!(!e.contains("a b"), "{e}");
        let options = CallOptions {
            token: Some("s3cret".into()),
            ..CallOptions::default()
        };
        assert!(!format!("{options:?}").contains("s3cret"));
    }

    #[test]
    fn framing() {
        let h = |name: &'static str, value: &'static [u8]| httparse::Header { name, value };
        assert_eq!(
            Framing::of(&[h("Content-Length", b" 12 ")]).unwrap(),
            Framing::Length(12)
        );
        assert_eq!(
            Framing::of(&[
                h("transfer-encoding", b"Chunked"),
                h("content-length", b"3")
            ])
            .unwrap(),
            Framing::Chunked
        );
        assert_eq!(Framing::of(&[]).unwrap(), Framing::UntilClose);
        assert!(Framing::of(&[h("Content-Length", b"x")]).is_err());
    }
}
