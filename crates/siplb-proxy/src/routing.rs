//! Which configured route applies to an initial request.

use std::net::SocketAddr;

use regex::Regex;
use siplb_balance::Balancer;
use siplb_sip::{HeaderName, Message};

use crate::sdp;
use crate::settings::Route;

/// Conditions on an initial request that must all hold; an empty match always holds.
/// Patterns are `regex` expressions: linear-time, so a crafted Request-URI cannot turn
/// one against siplb.
#[derive(Clone, Debug, Default)]
pub struct RouteMatch {
    pub method: Option<String>,
    pub ruri_user: Option<Regex>,
    pub ruri_host: Option<Regex>,
    pub from_user: Option<Regex>,
    /// Header name, and the pattern its first value must match.
    pub header: Vec<(String, Regex)>,
    /// The request comes from a destination of this group (IP and port as in the table).
    pub source_group: Option<u32>,
    /// The SDP offer lists at least one of these codecs.
    pub sdp_codec_any: Option<Vec<String>>,
    /// The SDP offer lists none of these codecs.
    pub sdp_codec_none: Option<Vec<String>>,
}

/// True when every condition of `m` holds for `request`, received from `source`.
fn matches(m: &RouteMatch, request: &Message, source: SocketAddr, balancer: &Balancer) -> bool {
    if let Some(method) = &m.method
        && request.method().map(|x| x.as_str()) != Some(method.as_str())
    {
        return false;
    }
    // Parsed only for a match that reads it: most routes name no Request-URI part.
    if m.ruri_user.is_some() || m.ruri_host.is_some() {
        let ruri = request.request_uri();
        if let Some(p) = &m.ruri_user
            && !p.is_match(ruri.and_then(|u| u.user).unwrap_or(""))
        {
            return false;
        }
        if let Some(p) = &m.ruri_host
            && !p.is_match(ruri.map(|u| u.host_text).unwrap_or(""))
        {
            return false;
        }
    }
    if let Some(p) = &m.from_user {
        let user = request
            .from()
            .and_then(|f| f.uri().ok())
            .and_then(|u| u.user);
        if !p.is_match(user.unwrap_or("")) {
            return false;
        }
    }
    for (name, p) in &m.header {
        let value = request
            .header_by_name(name)
            .and_then(|v| std::str::from_utf8(v).ok());
        match value {
            Some(v) if p.is_match(v) => {}
            _ => return false,
        }
    }
    if let Some(group) = m.source_group
        && balancer
            .is_destination(source.ip(), source.port(), Some(group), false)
            .is_none()
    {
        return false;
    }
    if m.sdp_codec_any.is_some() || m.sdp_codec_none.is_some() {
        let is_sdp = request
            .header(HeaderName::ContentType)
            .is_some_and(|ct| ct.to_ascii_lowercase().starts_with(b"application/sdp"));
        let offered = if is_sdp {
            sdp::codecs(request.body())
        } else {
            Vec::new()
        };
        let has = |list: &[String]| {
            list.iter()
                .any(|c| offered.iter().any(|o| o.eq_ignore_ascii_case(c)))
        };
        if let Some(any) = &m.sdp_codec_any
            && !has(any)
        {
            return false;
        }
        if let Some(none) = &m.sdp_codec_none
            && has(none)
        {
            return false;
        }
    }
    true
}

/// The first route whose match holds.
pub(crate) fn select<'r>(
    routes: &'r [Route],
    request: &Message,
    source: SocketAddr,
    balancer: &Balancer,
) -> Option<(usize, &'r Route)> {
    routes
        .iter()
        .enumerate()
        .find(|(_, r)| matches(&r.matcher, request, source, balancer))
}
