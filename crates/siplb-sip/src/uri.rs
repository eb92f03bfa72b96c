//! SIP and SIPS URIs (RFC 3261 section 19.1), parsed as views over the original text.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::text::Params;

/// The host part of a URI or Via.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host<'a> {
    Domain(&'a str),
    V4(Ipv4Addr),
    /// Written in brackets on the wire (`[2001:db8::1]`).
    V6(Ipv6Addr),
}

impl Host<'_> {
    /// Parses a host as written in a URI or Via (`example.com`, `192.0.2.1`,
    /// `[2001:db8::1]`).
    pub fn parse(s: &str) -> Option<Host<'_>> {
        if let Some(inner) = s.strip_prefix('[') {
            return inner.strip_suffix(']')?.parse().ok().map(Host::V6);
        }
        // One pass: every Via and URI host comes through here.
        let mut numeric = true;
        for &b in s.as_bytes() {
            match HOST_CHAR[usize::from(b)] {
                NOT_HOST => return None,
                NAME => numeric = false,
                _ => {}
            }
        }
        if s.is_empty() {
            None
        } else if numeric {
            parse_ipv4(s.as_bytes()).map(Host::V4)
        } else {
            Some(Host::Domain(s))
        }
    }

    /// The address when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match *self {
            Host::Domain(_) => None,
            Host::V4(a) => Some(IpAddr::V4(a)),
            Host::V6(a) => Some(IpAddr::V6(a)),
        }
    }
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

const NOT_HOST: u8 = 0;
/// A letter, `-` or `_`: the host is a name.
const NAME: u8 = 1;
/// A digit or `.`: the host may be an IPv4 address.
const NUMERIC: u8 = 2;

/// What each byte may be in a host name or IPv4 address.
const HOST_CHAR: [u8; 256] = {
    let mut t = [NOT_HOST; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = if b.is_ascii_digit() || b == b'.' {
            NUMERIC
        } else if b.is_ascii_alphabetic() || b == b'-' || b == b'_' {
            NAME
        } else {
            NOT_HOST
        };
        i += 1;
    }
    t
};

/// Bytes that end a URI where it stands in a header: whitespace, `<`, `>`, `"`.
const URI_END: [bool; 256] = {
    let mut t = [false; 256];
    t[b' ' as usize] = true;
    t[b'\t' as usize] = true;
    t[b'\r' as usize] = true;
    t[b'\n' as usize] = true;
    t[b'<' as usize] = true;
    t[b'>' as usize] = true;
    t[b'"' as usize] = true;
    t
};

/// True when `bytes` holds a byte of [`URI_END`]. Every URI of a message is checked,
/// some twice (18 checks per call): eight bytes are tested at once for any byte below
/// `!` (the four whitespace bytes are among them) or equal to `"`, `<` or `>`, and
/// only a word where one is found is looked at byte by byte, as other bytes below `!`
/// are no end.
fn has_uri_end(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Whether some byte of `w` is below `n` (n <= 128), exactly as a yes or no.
    let has_below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS != 0;
    let has = |w: u64, b: u8| has_below(w ^ (ONES * u64::from(b)), 1);
    let by_byte = |part: &[u8]| part.iter().any(|&b| URI_END[usize::from(b)]);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let w = word.try_into().map_or(0, u64::from_ne_bytes);
        if (has_below(w, b'!') || has(w, b'"') || has(w, b'<') || has(w, b'>')) && by_byte(word) {
            return true;
        }
    }
    by_byte(words.remainder())
}

/// URI scheme of a SIP URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
}

/// Why a URI did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    #[error("not a sip: or sips: URI")]
    Scheme,
    #[error("empty or malformed host")]
    Host,
    #[error("malformed port")]
    Port,
    #[error("whitespace or forbidden character in URI")]
    Character,
    #[error("malformed URI parameters")]
    Params,
}

/// A parsed `sip:`/`sips:` URI. Every part borrows from the original text; user and
/// password are left escaped, as a proxy compares and relays them, never decodes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uri<'a> {
    raw: &'a str,
    pub scheme: Scheme,
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    pub host: Host<'a>,
    /// The host exactly as written (brackets included for IPv6).
    pub host_text: &'a str,
    pub port: Option<u16>,
    pub params: Params<'a>,
    /// The `?`-introduced header part, without the `?`.
    pub headers: Option<&'a str>,
}

impl<'a> Uri<'a> {
    pub fn parse(raw: &'a str) -> Result<Uri<'a>, UriError> {
        if has_uri_end(raw.as_bytes()) {
            return Err(UriError::Character);
        }
        let (scheme, rest) = if let Some(r) = strip_prefix_ci(raw, "sips:") {
            (Scheme::Sips, r)
        } else if let Some(r) = strip_prefix_ci(raw, "sip:") {
            (Scheme::Sip, r)
        } else {
            return Err(UriError::Scheme);
        };
        // '@' cannot appear unescaped in host, parameters or headers, so the first one
        // ends the userinfo even when the user part holds ';', '?' or ':'.
        let (userinfo, hostpart) = match rest.find('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            Some(ui) => match ui.find(':') {
                Some(c) => (Some(&ui[..c]), Some(&ui[c + 1..])),
                None => (Some(ui), None),
            },
            None => (None, None),
        };
        let (hostpart, headers) = match hostpart.find('?') {
            Some(q) => (&hostpart[..q], Some(&hostpart[q + 1..])),
            None => (hostpart, None),
        };
        let (hostport, params) = match hostpart.find(';') {
            Some(s) => (&hostpart[..s], &hostpart[s..]),
            None => (hostpart, ""),
        };
        let (host_text, port_text) = split_host_port(hostport).ok_or(UriError::Host)?;
        let host = Host::parse(host_text).ok_or(UriError::Host)?;
        let port = match port_text {
            Some(p) => Some(parse_port(p).ok_or(UriError::Port)?),
            None => None,
        };
        let params = Params::new(params);
        if !params.validate() {
            return Err(UriError::Params);
        }
        Ok(Uri {
            raw,
            scheme,
            user,
            password,
            host,
            host_text,
            port,
            params,
            headers,
        })
    }

    /// The URI exactly as written.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// The `lr` parameter marks a loose router (RFC 3261 section 16.4).
    pub fn is_loose_router(&self) -> bool {
        self.params.contains("lr")
    }

    /// `maddr`, `transport` and other parameters by name.
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        self.params.get(name)
    }

    /// The explicit port, or the scheme's default (5060 for sip, 5061 for sips).
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(match self.scheme {
            Scheme::Sip => 5060,
            Scheme::Sips => 5061,
        })
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Splits `host[:port]`, minding the colons of an IPv6 reference.
pub(crate) fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if s.starts_with('[') {
        let end = s.find(']')? + 1;
        let rest = &s[end..];
        return match rest.strip_prefix(':') {
            Some(p) => Some((&s[..end], Some(p))),
            None if rest.is_empty() => Some((&s[..end], None)),
            None => None,
        };
    }
    match s.find(':') {
        Some(c) => Some((&s[..c], Some(&s[c + 1..]))),
        None => Some((s, None)),
    }
}

pub(crate) fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = s.bytes().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    u16::try_from(n).ok()
}

/// Dotted-quad IPv4, strict like the standard parser (no leading zeros, four octets),
/// without its generic machinery: every Via and URI host goes through here.
fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut n = 0;
    let mut value: u16 = 0;
    let mut digits = 0;
    for &b in s {
        if b == b'.' {
            if digits == 0 || n == 3 {
                return None;
            }
            octets[n] = u8::try_from(value).ok()?;
            n += 1;
            value = 0;
            digits = 0;
        } else if b.is_ascii_digit() {
            // At most three digits, and no leading zero.
            if digits == 3 || (digits == 1 && value == 0) {
                return None;
            }
            value = value * 10 + u16::from(b - b'0');
            digits += 1;
        } else {
            return None;
        }
    }
    if digits == 0 || n != 3 {
        return None;
    }
    octets[3] = u8::try_from(value).ok()?;
    Some(Ipv4Addr::from(octets))
}

/// Checks the generic `scheme:rest` shape of a non-SIP absolute URI (RFC 3261 allows
/// any absoluteURI as a Request-URI; a proxy relays or rejects it by scheme).
pub(crate) fn is_absolute_uri(s: &str) -> bool {
    let b = s.as_bytes();
    if !b.first().is_some_and(u8::is_ascii_alphabetic) {
        return false;
    }
    // The scheme is read up to its colon in the one pass that checks it: a scheme is a
    // few bytes, and a search for the colon cost more to set up than this.
    let scheme_len = b[1..]
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')))
        .map_or(b.len(), |n| n + 1);
    match b.get(scheme_len..) {
        Some([b':', rest @ ..]) => !rest.is_empty() && !has_uri_end(rest),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time test answers as the byte-at-a-time one: every byte value at
    /// every position of texts of 1 to 24 bytes, over a clean text and over one with
    /// bytes just beside the ends and above 127 (where the word test is loosest).
    #[test]
    fn uri_ends_are_found_as_byte_by_byte() {
        let slow = |b: &[u8]| b.iter().any(|&c| URI_END[usize::from(c)]);
        let backgrounds: [&[u8]; 3] = [
            b"sip:alice@example.com:5060;lr",
            b"\x21\x23\x3b\x3d\x3f\x1f\x00\xff\x80\xa2\xbc\xbe!#;=?!#;=?!#;=?",
            b"\x7f\xa0\xdc\xde\xc2\xe1\x81\xfe\x7f\xa0\xdc\xde\xc2\xe1\x81\xfe\x7f\xa0\xdc\xde\xc2\xe1\x81\xfe",
        ];
        for background in backgrounds {
            for len in 1..=24.min(background.len()) {
                let mut text = background[..len].to_vec();
                assert_eq!(has_uri_end(&text), slow(&text), "{text:?}");
                for at in 0..len {
                    for byte in 0..=255u8 {
                        let kept = text[at];
                        text[at] = byte;
                        assert_eq!(has_uri_end(&text), slow(&text), "{text:?}");
                        text[at] = kept;
                    }
                }
            }
        }
        assert!(!has_uri_end(b""));
    }

    #[test]
    fn full_uri() {
        let u =
            Uri::parse("sips:alice:secret@[2001:db8::1]:5071;transport=tcp;lr?subject=x").unwrap();
        assert_eq!(u.scheme, Scheme::Sips);
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.password, Some("secret"));
        assert_eq!(u.host, Host::V6("2001:db8::1".parse().unwrap()));
        assert_eq!(u.host_text, "[2001:db8::1]");
        assert_eq!(u.port, Some(5071));
        assert!(u.is_loose_router());
        assert_eq!(u.param("transport"), Some(Some("tcp")));
        assert_eq!(u.headers, Some("subject=x"));
    }

    #[test]
    fn user_with_semicolons_and_question_marks() {
        let u = Uri::parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user, Some("user;par=u%40example.net"));
        assert_eq!(u.host, Host::Domain("example.com"));
        let u = Uri::parse("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com").unwrap();
        assert_eq!(
            u.user,
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        assert_eq!(u.host, Host::Domain("example.com"));
    }

    #[test]
    fn rejects() {
        assert_eq!(
            Uri::parse("sip:user@example.com; lr"),
            Err(UriError::Character)
        );
        assert_eq!(
            Uri::parse("<sip:user@example.com>"),
            Err(UriError::Character)
        );
        assert_eq!(Uri::parse("tel:+1234"), Err(UriError::Scheme));
        assert_eq!(Uri::parse("sip:"), Err(UriError::Host));
        assert_eq!(Uri::parse("sip:h:99999"), Err(UriError::Port));
        assert_eq!(Uri::parse("sip:[::1"), Err(UriError::Host));
        assert_eq!(Uri::parse("sip:h;;"), Err(UriError::Params));
        assert!(Uri::parse("sip:127.0.0.1:0").is_ok());
    }

    #[test]
    fn ipv4_hosts() {
        assert_eq!(
            Host::parse("192.0.2.1"),
            Some(Host::V4(Ipv4Addr::new(192, 0, 2, 1)))
        );
        assert_eq!(
            Host::parse("255.255.255.255"),
            Some(Host::V4(Ipv4Addr::BROADCAST))
        );
        for bad in [
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1..3.4",
            "1.2.3.4.",
        ] {
            assert!(parse_ipv4(bad.as_bytes()).is_none(), "{bad}");
        }
        // A host of digits and dots is an IPv4 address exactly when the standard
        // parser says so, and never a name.
        for s in [
            "0.0.0.0",
            "1.2.3.04",
            ".1.2.3",
            "123",
            "1.2.3.4",
            "10.0.0.255",
            "10.0.0.256",
            "1.2.3.",
            "9999.1.1.1",
            "1.2.3.4.5",
            ".",
            "",
        ] {
            let std = s.parse::<Ipv4Addr>().ok().map(Host::V4);
            assert_eq!(Host::parse(s), std, "{s}");
        }
        assert_eq!(Host::parse("a.1"), Some(Host::Domain("a.1")));
        assert_eq!(
            Host::parse("1-2.example"),
            Some(Host::Domain("1-2.example"))
        );
        assert_eq!(Host::parse("a b"), None);
        assert_eq!(parse_port("65535"), Some(65535));
        assert_eq!(parse_port("65536"), None);
    }

    #[test]
    fn absolute_uris() {
        assert!(is_absolute_uri("soap.beep://192.0.2.103:3002"));
        assert!(is_absolute_uri(
            "nobodyKnowsThisScheme:totallyopaquecontent"
        ));
        assert!(!is_absolute_uri("<sip:x>"));
        assert!(!is_absolute_uri("1abc:x"));
    }

    /// The one-pass check answers as the rule read plainly (find the colon, check the
    /// scheme before it, then the rest), on every text of up to five characters over
    /// the characters that steer it.
    #[test]
    fn absolute_uris_as_the_rule_reads() {
        let plain = |s: &str| {
            let Some(colon) = s.find(':') else {
                return false;
            };
            let (scheme, rest) = (&s[..colon], &s[colon + 1..]);
            let mut chars = scheme.bytes();
            chars.next().is_some_and(|b| b.is_ascii_alphabetic())
                && chars.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
                && !rest.is_empty()
                && !rest.bytes().any(|b| URI_END[usize::from(b)])
        };
        let alphabet = ['a', 'Z', '7', '+', '-', '.', ':', '<', ' ', '@', 'é'];
        let mut texts = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = texts
                .iter()
                .filter(|t| t.chars().count() == texts.last().map_or(0, |l| l.chars().count()))
                .flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}")))
                .collect();
            texts.extend(longer);
        }
        assert!(texts.len() > 170_000);
        for text in &texts {
            assert_eq!(is_absolute_uri(text), plain(text), "{text:?}");
        }
    }
}
