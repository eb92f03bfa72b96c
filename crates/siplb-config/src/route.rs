//! Routes: tried in order for each initial request; the first whose match holds
//! applies its action.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// A regular expression from the configuration. The `regex` crate matches in linear
/// time, so a pattern cannot be turned against siplb by a crafted Request-URI.
#[derive(Clone, Debug)]
pub struct Pattern(pub regex::Regex);

impl Pattern {
    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

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
}

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

    pub(crate) fn check(&self) -> Result<(), String> {
        let action = self.action().ok_or_else(|| {
            "needs exactly one action: `balance`, `reply`, `relay`, or `count` with `relay`"
                .to_owned()
        })?;
        if let Some(m) = &self.matcher.method
            && (m.is_empty()
                || !m
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)))
        {
            return Err(format!("match.method: `{m}` is not a SIP method"));
        }
        for name in self.matcher.header.keys() {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
            {
                return Err(format!("match.header: `{name}` is not a header name"));
            }
        }
        match action {
            Action::Balance(b) => {
                check_resources(&b.resources).map_err(|e| format!("balance.resources: {e}"))?;
                check_flags(&b.flags).map_err(|e| format!("balance.flags: {e}"))?;
            }
            Action::CountAndRelay { count, relay } => {
                check_resources(&count.resources).map_err(|e| format!("count.resources: {e}"))?;
                check_sip_uri(relay).map_err(|e| format!("relay: {e}"))?;
            }
            Action::Relay(relay) => check_sip_uri(relay).map_err(|e| format!("relay: {e}"))?,
            Action::Reply(r) => r.check("reply")?,
        }
        Ok(())
    }
}

fn check_resources(list: &str) -> Result<(), String> {
    siplb_balance::ResourceRequest::parse(list)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn check_flags(flags: &str) -> Result<(), String> {
    flags
        .parse::<siplb_balance::Flags>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn check_sip_uri(uri: &str) -> Result<(), String> {
    siplb_sip::Uri::parse(uri)
        .map(|_| ())
        .map_err(|e| format!("`{uri}` is not a SIP URI: {e}"))
}
