//! siplb's management interface: JSON-RPC 2.0 over HTTP at `POST /mi`, compatible with
//! OpenSIPS' `mi_http` so that `opensips-cli` and existing scripts work unchanged, plus
//! Prometheus text at `GET /metrics`, `GET /health`, and the client behind `siplb ctl`.
//!
//! # Layers
//!
//! - Protocol, without I/O: request framing and error objects, parameter recipes and their
//!   matching (positional or named, numbers accepted as strings), and the methods
//!   themselves, reached through [`MiState::handle_rpc`]; metrics text through
//!   [`MiState::render_metrics`].
//! - The HTTP edge: [`serve`] / [`serve_with`] on a `tokio` listener (hyper, HTTP/1.1),
//!   which only routes, limits and frames.
//! - The client: [`call`], a single JSON-RPC call over a plain HTTP/1.1 connection
//!   ([`call_with_token`], [`call_with_options`] to send a token).
//!
//! # Methods
//!
//! | method (alias) | params | result |
//! |---|---|---|
//! | `lb_list` (`load_balancer:list`) | none | `{"Destinations":[{"uri","id","group","enabled","auto-reenable","Resources":[{"name","max","load"}],"attrs"?,"probe_mode"}]}` |
//! | `lb_status` (`load_balancer:status`) | `destination_id` | `{"enable":"yes"/"no","attrs"?}` |
//! | `lb_status` | `destination_id`, `new_status` | `"OK"`: 0 disables (auto-reenable off), anything else enables |
//! | `lb_drain` (`load_balancer:drain`) | `destination_id` | `"OK"`: no new calls, calls up go on; `lb_list` adds `"draining":true`; `lb_status` ends it |
//! | `lb_resize` (`load_balancer:resize`) | `destination_id`, `res_name`, `new_capacity` | `"OK"`; capacity in `0..=u32::MAX` |
//! | `lb_reload` (`load_balancer:reload`) | none | `"OK"`, or `500 Failed to reload` with the old table kept |
//! | `lb_calls` (`load_balancer:calls`) | none, or `destination_id` | `{"Calls":[{"callid","destination_id","uri","resources","state","age"}]}` |
//! | `which` | none, or `command` | every method name, or the command's recipes |
//! | `version` | none | `{"Server":"siplb 0.1.0"}` |
//! | `uptime` | none | `{"Up time":"42 [sec]","seconds":42}` |
//!
//! Errors keep the reference's codes and texts: `-32700 Parse error`, `-32600 Invalid
//! Request`, `-32601 Method not found`, `-32602 Invalid params` with `Too few or too many
//! parameters`, `Named parameters do not match` or `Bad type for parameter 'NAME'` (and
//! `Value out of range for parameter 'NAME'`, where OpenSIPS silently wraps), `404
//! Destination ID not found`, `404 Destination has no such resource`.
//!
//! # HTTP
//!
//! Unlike `mi_http`, every response is complete and carries a `Content-Length`: a
//! notification gets `202` with an empty body, a wrong path `404`, a wrong method `405`,
//! a body that is not `application/json` `415`, an oversized one `413`, a stalled one
//! `408`. Request heads must arrive within a timeout, so a stalled client is dropped
//! rather than held, and no client can hold up another.
//!
//! # Token
//!
//! Optionally ([`MiState::with_token`], `[management] token`), `/mi` and `/metrics` require
//! `Authorization: Bearer <token>` and answer `401` with `WWW-Authenticate: Bearer`
//! without it; `/health` stays open. The client sends it with [`call_with_token`] or
//! [`CallOptions::token`]. `opensips-cli` cannot send a token, so a server with one is
//! unusable by `opensips-cli`; without one, nothing changes.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use siplb_balance::{Balancer, DestinationRow};
//! use siplb_mi::MiState;
//!
//! let (balancer, _) = Balancer::with_rows([DestinationRow::new(1, 1, "sip:10.0.0.1", "vm=5")]);
//! let state = MiState::new(Arc::new(balancer));
//! let reply = tokio::runtime::Builder::new_current_thread()
//!     .build()
//!     .unwrap()
//!     .block_on(state.handle_rpc(br#"{"jsonrpc":"2.0","method":"lb_status","params":["1"],"id":1}"#));
//! assert_eq!(reply.as_deref(), Some(r#"{"jsonrpc":"2.0","result":{"enable":"yes"},"id":1}"#));
//! ```

mod client;
mod dashboard;
mod dispatch;
mod exposition;
mod metrics;
mod params;
mod rpc;
mod server;
mod state;

pub use client::{
    CallOptions, CtlError, DEFAULT_TIMEOUT, DEFAULT_URL, call, call_with_options, call_with_params,
    call_with_token, params_from_args, post_json,
};
pub use dashboard::{EventLog, Pulse, PulseSource};
pub use dispatch::method_names;
pub use exposition::{Exposition, Kind, METRICS_CONTENT_TYPE};
pub use server::{DEFAULT_LISTEN, ServeOptions, serve, serve_with};
pub use state::{
    BoxFuture, CallInfo, CallsSource, ClusterSource, Dashboard, MetricsSource, MiState, Reloader,
    StatusListener,
};
