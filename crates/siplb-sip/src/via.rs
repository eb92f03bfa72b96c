//! Via hops (RFC 3261 section 20.42, RFC 3581 `rport`).

use crate::text::{Params, is_lws, is_token, trim};
use crate::uri::{Host, parse_port};

/// One Via hop. A header line may hold several, separated by commas; see
/// [`crate::Message::vias`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    /// `UDP`, `TCP`, `TLS`, `SCTP`, `WS`... as written.
    pub transport: &'a str,
    pub host: Host<'a>,
    pub host_text: &'a str,
    pub port: Option<u16>,
    pub params: Params<'a>,
    /// The branch, found in the pass that checks the parameters: a proxy asks for it
    /// several times per message (transaction keys, matching), and each ask was a
    /// walk over the parameters.
    branch: Option<&'a str>,
}

/// What a transaction's key reads of a Via hop: its branch and its sent-by as written.
/// [`crate::Message::top_via_id`] gives it for the top hop without building the
/// whole [`Via`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViaId<'a> {
    pub branch: Option<&'a str>,
    pub host_text: &'a str,
    pub port: Option<u16>,
}

impl<'a> From<&Via<'a>> for ViaId<'a> {
    fn from(via: &Via<'a>) -> ViaId<'a> {
        ViaId {
            branch: via.branch(),
            host_text: via.host_text,
            port: via.port,
        }
    }
}

/// Why a Via hop did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ViaError {
    #[error("Via protocol is not SIP/2.0/<transport>")]
    Protocol,
    #[error("Via sent-by is malformed")]
    SentBy,
    #[error("Via parameters are malformed")]
    Params,
}

impl<'a> Via<'a> {
    pub fn parse(hop: &'a str) -> Result<Via<'a>, ViaError> {
        // Nearly every hop spells its protocol `SIP/2.0/` without spaces: that spelling
        // skips the general walk (LWS allowed around each `/`), which was most of what
        // parsing a hop cost.
        let (plain, mut rest) = match hop.get(..8) {
            Some(p) if p.eq_ignore_ascii_case("SIP/2.0/") => (true, &hop[8..]),
            _ => (false, hop),
        };
        let mut next_part = |sep: Option<char>| -> Result<&'a str, ViaError> {
            let s = trim(rest);
            let end = s
                .bytes()
                .position(|b| is_lws(b) || Some(b as char) == sep || b == b'/')
                .unwrap_or(s.len());
            let (part, after) = s.split_at(end);
            let after = trim(after);
            rest = match sep {
                Some(c) => after.strip_prefix(c).ok_or(ViaError::Protocol)?,
                None => after,
            };
            if is_token(part) {
                Ok(part)
            } else {
                Err(ViaError::Protocol)
            }
        };
        if !plain {
            let name = next_part(Some('/'))?;
            let version = next_part(Some('/'))?;
            if !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
                return Err(ViaError::Protocol);
            }
        }
        let transport = next_part(None)?;
        let (sent_by, params) = match rest.find(';') {
            Some(p) => (&rest[..p], &rest[p..]),
            None => (rest, ""),
        };
        let (host_text, port) = split_sent_by(trim(sent_by)).ok_or(ViaError::SentBy)?;
        let host = Host::parse(host_text).ok_or(ViaError::SentBy)?;
        let params = Params::new(params);
        let (valid, branch) = params.scan("branch");
        if !valid {
            return Err(ViaError::Params);
        }
        Ok(Via::from_parts(
            transport,
            host,
            host_text,
            port,
            params,
            branch.flatten(),
        ))
    }

    /// A hop whose parts were found before (validation's cache of the top hop).
    pub(crate) fn from_parts(
        transport: &'a str,
        host: Host<'a>,
        host_text: &'a str,
        port: Option<u16>,
        params: Params<'a>,
        branch: Option<&'a str>,
    ) -> Via<'a> {
        Via {
            transport,
            host,
            host_text,
            port,
            params,
            branch,
        }
    }

    /// `hop`, the text this hop was parsed from, without the parameters `drop` names:
    /// what precedes the parameters as received, each kept one as `;name[=value]`. For
    /// rewriting some of a hop's parameters (`received`/`rport`, overload feedback).
    pub fn text_without_params(&self, hop: &str, drop: impl Fn(&str) -> bool) -> String {
        let params_at = hop.len().saturating_sub(self.params.as_str().len());
        let mut out = String::with_capacity(hop.len() + 64);
        out.push_str(hop.get(..params_at).unwrap_or(hop));
        for (name, value) in self.params.iter().filter(|(name, _)| !drop(name)) {
            out.push(';');
            out.push_str(name);
            if let Some(v) = value {
                out.push('=');
                out.push_str(v);
            }
        }
        out
    }

    /// The branch parameter, an opaque token compared byte for byte.
    pub fn branch(&self) -> Option<&'a str> {
        self.branch
    }

    /// True when the branch carries the RFC 3261 magic cookie, which makes it unique.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with("z9hG4bK"))
    }

    pub fn received(&self) -> Option<&'a str> {
        self.params.get("received").flatten()
    }

    /// `None` without `rport`; `Some(None)` when requested but not yet filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params.get("rport").map(|v| v.and_then(parse_port))
    }
}

/// `host [COLON port]`, where COLON may be surrounded by whitespace.
fn split_sent_by(s: &str) -> Option<(&str, Option<u16>)> {
    let colon = if s.starts_with('[') {
        let end = s.find(']')? + 1;
        if trim(&s[end..]).is_empty() {
            return Some((&s[..end], None));
        }
        end + s[end..].find(':')?
    } else {
        match s.find(':') {
            Some(c) => c,
            None => {
                if s.bytes().any(is_lws) {
                    return None;
                }
                return Some((s, None));
            }
        }
    };
    let host = trim(&s[..colon]);
    let port = parse_port(trim(&s[colon + 1..]))?;
    Some((host, Some(port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_hop() {
        let v = Via::parse("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776;rport;received=10.0.0.1")
            .unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, Host::V4("192.0.2.1".parse().unwrap()));
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some("z9hG4bK776"));
        assert!(v.has_rfc3261_branch());
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.received(), Some("10.0.0.1"));
    }

    #[test]
    fn whitespace_everywhere() {
        let v = Via::parse("SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host_text, "192.0.2.2");
        assert_eq!(v.branch(), Some("390skdjuw"));
        let v = Via::parse(" SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239")
            .unwrap();
        assert_eq!(v.branch(), Some("z9hG4bK30239"));
        let v = Via::parse("SIP/2.0/TCP [2001:db8::9] : 5062 ;rport=5070").unwrap();
        assert_eq!(v.host, Host::V6("2001:db8::9".parse().unwrap()));
        assert_eq!(v.port, Some(5062));
        assert_eq!(v.rport(), Some(Some(5070)));
    }

    #[test]
    fn the_branch_is_the_first_parameter_of_that_name_in_any_case() {
        let first = |hop| Via::parse(hop).map(|v| v.branch());
        assert_eq!(
            first("SIP/2.0/UDP h;rport;BRANCH=z9hG4bKa;branch=z9hG4bKb"),
            Ok(Some("z9hG4bKa"))
        );
        assert_eq!(first("SIP/2.0/UDP h;branch;branch=z9hG4bKb"), Ok(None));
        assert_eq!(first("SIP/2.0/UDP h;rport"), Ok(None));
        assert_eq!(
            first("SIP/2.0/UDP h;x=1 ; branch = z9hG4bKc "),
            Ok(Some("z9hG4bKc"))
        );
        assert_eq!(
            first("SIP/2.0/UDP h;branch=z9hG4bKd;;"),
            Err(ViaError::Params)
        );
    }

    #[test]
    fn the_plain_spelling_parses_as_the_spaced_one() {
        for (plain, spaced) in [
            (
                "SIP/2.0/UDP h:5060;branch=z9hG4bKa",
                "SIP / 2.0 / UDP h:5060;branch=z9hG4bKa",
            ),
            ("sip/2.0/tcp h;rport", " SIP\r\n /2.0/ tcp h;rport"),
            ("SIP/2.0/ TLS [::1]:5061", "SIP/2.0 /TLS [::1]:5061"),
        ] {
            let a = Via::parse(plain).unwrap();
            let b = Via::parse(spaced).unwrap();
            assert_eq!(
                (a.transport.to_ascii_uppercase(), a.host, a.port, a.branch()),
                (b.transport.to_ascii_uppercase(), b.host, b.port, b.branch())
            );
        }
        assert!(Via::parse("SIP/2.0/").is_err());
        assert!(Via::parse("SIP/2.0/ ").is_err());
        assert!(Via::parse("SIP/2.0//UDP h").is_err());
        assert!(Via::parse("SIP/2.1/UDP h").is_err());
    }

    #[test]
    fn rejects() {
        assert!(Via::parse("SIP/7.0/UDP c.example.com;branch=z9").is_err());
        assert!(Via::parse("SIP/2.0/UDP 192.0.2.15;;,;,,").is_err());
        assert!(Via::parse("SIP/2.0/UDP").is_err());
        assert!(Via::parse("SIP/2.0/UDP a b").is_err());
        assert!(Via::parse("").is_err());
    }
}
