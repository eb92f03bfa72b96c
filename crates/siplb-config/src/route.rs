//! Routes: tried in order for each initial request; the first whose match holds
//! applies its action.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use siplb_proxy::{GroupChoice, RouteAction, RouteMatch};

/// A regular expression from the configuration. The `regex` crate matches in linear
/// time, so a pattern cannot be turned against siplb by a crafted Request-URI.
#[derive(Clone, Debug)]
pub struct Pattern(pub regex::Regex);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        regex::RegexBuilder::new(&s)
            .size_limit(1 << 20)
            .build()
            .map(Pattern)
            .map_err(|e| serde::de::Error::custom(format!("invalid regular expression `{s}`: {e}")))
    }
}

/// Conditions that must all hold; an empty match always holds.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    pub method: Option<String>,
    pub ruri_user: Option<Pattern>,
    pub ruri_host: Option<Pattern>,
    pub from_user: Option<Pattern>,
    #[serde(default)]
    pub header: BTreeMap<String, Pattern>,
    /// The request comes from a destination of this group (IP and port as in the table).
    pub source_group: Option<u32>,
    /// The SDP offer lists at least one of these codecs.
    pub sdp_codec_any: Option<Vec<String>>,
    /// The SDP offer lists none of these codecs.
    pub sdp_codec_none: Option<Vec<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Balance {
    pub group: u32,
    /// Resources the call needs, `"transc;pstn"`.
    pub resources: String,
    /// `r` relative, `n` allow full destinations, `s` random among ties.
    #[serde(default)]
    pub flags: String,
    /// Groups tried in turn when this one has no room, no destination, or failover
    /// exhausts it.
    #[serde(default)]
    pub overflow: Vec<Overflow>,
}

/// An overflow group of a `balance` route.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overflow {
    pub group: u32,
    pub resources: String,
    #[serde(default)]
    pub flags: String,
}

/// Overflow groups a route may list: more would only lengthen a call's setup.
const MAX_OVERFLOW: usize = 8;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Count {
    pub group: u32,
    pub resources: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    pub code: u16,
    pub reason: String,
}

impl Reply {
    pub(crate) fn check(&self, key: &str) -> Result<(), String> {
        if !(300..700).contains(&self.code) {
            return Err(format!(
                "{key}.code: {} is not a final error status (300-699)",
                self.code
            ));
        }
        if self.reason.is_empty() || self.reason.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(format!("{key}.reason: must be one non-empty line"));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(rename = "match", default)]
    pub matcher: Match,
    balance: Option<Balance>,
    count: Option<Count>,
    relay: Option<String>,
    reply: Option<Reply>,
}

/// What a route does with the requests it matches.
#[derive(Clone, Copy, Debug)]
pub enum Action<'a> {
    /// Pick a destination by load.
    Balance(&'a Balance),
    /// Count the call against the destination it comes from, then relay it.
    CountAndRelay {
        count: &'a Count,
        relay: &'a str,
    },
    Relay(&'a str),
    Reply(&'a Reply),
}

impl Route {
    pub fn action(&self) -> Option<Action<'_>> {
        match (&self.balance, &self.count, &self.relay, &self.reply) {
            (Some(b), None, None, None) => Some(Action::Balance(b)),
            (None, Some(count), Some(relay), None) => Some(Action::CountAndRelay { count, relay }),
            (None, None, Some(relay), None) => Some(Action::Relay(relay)),
            (None, None, None, Some(r)) => Some(Action::Reply(r)),
            _ => None,
        }
    }

    /// The route in the core's terms, or what is wrong with it (the caller adds the
    /// route's number and line).
    pub(crate) fn compile(&self) -> Result<siplb_proxy::Route, String> {
        let action = self.action().ok_or_else(|| {
            "needs exactly one action: `balance`, `reply`, `relay`, or `count` with `relay`"
                .to_owned()
        })?;
        let action = match action {
            Action::Balance(b) => {
                if b.overflow.len() > MAX_OVERFLOW {
                    return Err(format!("balance.overflow: at most {MAX_OVERFLOW} groups"));
                }
                let overflow = b
                    .overflow
                    .iter()
                    .enumerate()
                    .map(|(i, o)| {
                        group_choice(o.group, &o.resources, &o.flags)
                            .map_err(|e| format!("balance.overflow[{i}].{e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                RouteAction::Balance {
                    first: group_choice(b.group, &b.resources, &b.flags)
                        .map_err(|e| format!("balance.{e}"))?,
                    overflow: overflow.into(),
                }
            }
            Action::CountAndRelay { count, relay } => RouteAction::CountAndRelay {
                group: count.group,
                request: resources(&count.resources)
                    .map_err(|e| format!("count.resources: {e}"))?,
                relay: relay_target(relay)?,
            },
            Action::Relay(relay) => RouteAction::Relay(relay_target(relay)?),
            Action::Reply(r) => {
                r.check("reply")?;
                RouteAction::Reply {
                    code: r.code,
                    reason: r.reason.clone(),
                }
            }
        };
        Ok(siplb_proxy::Route {
            matcher: self.matcher.compile()?,
            action,
        })
    }
}

impl Match {
    fn compile(&self) -> Result<RouteMatch, String> {
        if let Some(m) = &self.method
            && !is_token(m)
        {
            return Err(format!("match.method: `{m}` is not a SIP method"));
        }
        let mut header = Vec::with_capacity(self.header.len());
        for (name, pattern) in &self.header {
            if !is_token(name) {
                return Err(format!("match.header: `{name}` is not a header name"));
            }
            header.push((name.clone(), pattern.0.clone()));
        }
        let regex = |p: &Option<Pattern>| p.as_ref().map(|p| p.0.clone());
        Ok(RouteMatch {
            method: self.method.clone(),
            ruri_user: regex(&self.ruri_user),
            ruri_host: regex(&self.ruri_host),
            from_user: regex(&self.from_user),
            header,
            source_group: self.source_group,
            sdp_codec_any: self.sdp_codec_any.clone(),
            sdp_codec_none: self.sdp_codec_none.clone(),
        })
    }
}

/// A SIP token (RFC 3261 25.1), as methods and header names are written.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// A group and what a call asks of it; an error names the key (`resources: ...`).
fn group_choice(group: u32, list: &str, flags: &str) -> Result<GroupChoice, String> {
    Ok(GroupChoice {
        group,
        request: resources(list).map_err(|e| format!("resources: {e}"))?,
        flags: flags.parse().map_err(|e| format!("flags: {e}"))?,
    })
}

fn resources(list: &str) -> Result<siplb_balance::ResourceRequest, String> {
    siplb_balance::ResourceRequest::parse(list).map_err(|e| e.to_string())
}

/// Where a `relay` sends: a SIP URI with an IP address, or a host name that siplb
/// resolves in the background as it does the table's.
fn relay_target(uri: &str) -> Result<siplb_proxy::Relay, String> {
    if let Err(e) = siplb_sip::Uri::parse(uri) {
        return Err(format!("relay: `{uri}` is not a SIP URI: {e}"));
    }
    match siplb_proxy::peer_of_uri_text(uri) {
        Ok(peer) => Ok(siplb_proxy::Relay::Address(peer)),
        Err(siplb_proxy::TargetError::Unresolved(_)) => {
            let name = siplb_balance::Name::of_uri(uri)
                .map_err(|e| format!("relay: `{uri}`: {e}"))?
                .ok_or_else(|| format!("relay: `{uri}` has no host"))?;
            let transport = match name.transport {
                siplb_balance::NameTransport::Udp => siplb_proxy::Transport::Udp,
                siplb_balance::NameTransport::Tcp => siplb_proxy::Transport::Tcp,
                siplb_balance::NameTransport::Tls => siplb_proxy::Transport::Tls,
            };
            Ok(siplb_proxy::Relay::Name { name, transport })
        }
        Err(e) => Err(format!("relay: {e}")),
    }
}
