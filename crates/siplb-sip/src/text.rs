//! Lexical helpers shared by the typed views (RFC 3261 section 25.1).
//!
//! Header values are handed to these helpers as raw slices that may still contain
//! folded line breaks, so CR and LF count as whitespace everywhere here.

/// Linear whitespace, including the CR LF of a folded header line.
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

pub(crate) fn trim(s: &str) -> &str {
    // Byte-wise: LWS is ASCII, so the first and last non-LWS bytes sit on char
    // boundaries, and this avoids decoding chars.
    let b = s.as_bytes();
    let start = b.iter().position(|&c| !is_lws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|&c| !is_lws(c)).map_or(start, |p| p + 1);
    s.get(start..end).unwrap_or("")
}

pub(crate) fn trim_bytes(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_lws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_lws(b)).map_or(start, |p| p + 1);
    &s[start..end]
}

/// RFC 3261 `token` characters, as a table: this test runs on every byte of every
/// method, header name and parameter.
const TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        i += 1;
    }
    t
};

pub(crate) fn is_token_char(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

/// A token, or `[`, `]` and `:`, which an unquoted parameter value may also hold
/// (an IPv6 `received`, `maddr`). One look-up per byte: a Via's branch is read by
/// this loop on every message.
const PARAM_VALUE: [bool; 256] = {
    let mut t = TOKEN;
    t[b'[' as usize] = true;
    t[b']' as usize] = true;
    t[b':' as usize] = true;
    t
};

pub(crate) fn is_token_bytes(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token_char(b))
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// Iterates over the elements of a comma-separated header value, ignoring commas
/// inside quoted strings and `<...>` (a URI in angle brackets may hold commas).
/// Yields byte ranges of each element, untrimmed, so callers can map elements back onto
/// the original buffer; an unterminated quote or bracket yields one `Err(())`.
pub(crate) fn list_elements(s: &[u8]) -> ListElements<'_> {
    ListElements {
        s,
        pos: 0,
        done: false,
    }
}

#[derive(Debug)]
pub(crate) struct ListElements<'a> {
    s: &'a [u8],
    pos: usize,
    done: bool,
}

impl Iterator for ListElements<'_> {
    type Item = Result<(usize, usize), ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let s = self.s;
        let start = self.pos;
        let mut i = start;
        let mut in_quote = false;
        let mut in_angle = false;
        // Each state jumps straight to the next byte that matters to it: inside angle
        // brackets (every From, To, Route and Contact holds a URI there) a byte at a
        // time was most of what splitting a list cost.
        while i < s.len() {
            if in_quote {
                match memchr::memchr2(b'"', b'\\', &s[i..]) {
                    None => break,
                    Some(p) => i += p,
                }
                if s[i] == b'\\' {
                    i += 1; // the escaped byte, skipped below
                } else {
                    in_quote = false;
                }
            } else if in_angle {
                match memchr::memchr(b'>', &s[i..]) {
                    None => break,
                    Some(p) => i += p,
                }
                in_angle = false;
            } else {
                match memchr::memchr3(b',', b'"', b'<', &s[i..]) {
                    None => break,
                    Some(p) => i += p,
                }
                match s[i] {
                    b'"' => in_quote = true,
                    b'<' => in_angle = true,
                    _ => {
                        self.pos = i + 1;
                        return Some(Ok((start, i)));
                    }
                }
            }
            i += 1;
        }
        self.done = true;
        if in_quote || in_angle {
            return Some(Err(()));
        }
        Some(Ok((start, s.len())))
    }
}

/// A `;name[=value]` parameter list, kept as its raw text and parsed on demand.
///
/// Whitespace around `;` and `=` is allowed (RFC 3261 SEMI and EQUAL include LWS);
/// values may be quoted strings, returned with their quotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Params<'a> {
    raw: &'a str,
}

impl<'a> Params<'a> {
    /// `raw` is the text from the first `;` (inclusive) onwards, or empty.
    pub(crate) fn new(raw: &'a str) -> Self {
        Params { raw }
    }

    /// The raw parameter text, starting at its first `;`.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// Iterates over `(name, value)` pairs; a parameter without `=` has value `None`.
    /// Iteration stops at the first malformed parameter.
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter { rest: self.raw }
    }

    /// The first parameter named `name` (case-insensitive): `Some(None)` when present
    /// without a value.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Checks the parameter grammar: every parameter has a token name and, when it has
    /// a value, a non-empty token, host or quoted-string value.
    pub(crate) fn validate(&self) -> bool {
        self.scan("").0
    }

    /// One pass for [`Params::validate`] and [`Params::get`]: whether the grammar
    /// holds, and the first parameter named `name` (an empty name finds none).
    pub(crate) fn scan(&self, name: &str) -> (bool, Option<Option<&'a str>>) {
        let mut it = self.iter();
        let mut found = None;
        for (n, v) in it.by_ref() {
            if found.is_none() && n.eq_ignore_ascii_case(name) {
                found = Some(v);
            }
        }
        (it.rest.bytes().all(is_lws), found)
    }
}

/// Iterator over the parameters of a [`Params`].
#[derive(Clone, Debug)]
pub struct ParamIter<'a> {
    rest: &'a str,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (&'a str, Option<&'a str>);

    /// One pass over the bytes: `LWS ";" LWS name [LWS "=" LWS value]`. On a malformed
    /// parameter it stops and leaves `rest` there, which is how `validate` tells.
    fn next(&mut self) -> Option<Self::Item> {
        let s = self.rest;
        let b = s.as_bytes();
        let skip = |mut i: usize| {
            while i < b.len() && is_lws(b[i]) {
                i += 1;
            }
            i
        };
        let mut i = skip(0);
        if b.get(i) != Some(&b';') {
            return None;
        }
        i = skip(i + 1);
        let name_start = i;
        while i < b.len() && is_token_char(b[i]) {
            i += 1;
        }
        if i == name_start {
            return None;
        }
        let name = s.get(name_start..i)?;
        let after_name = i;
        let j = skip(i);
        if b.get(j) != Some(&b'=') {
            self.rest = s.get(after_name..)?;
            return Some((name, None));
        }
        i = skip(j + 1);
        let value_start = i;
        if b.get(i) == Some(&b'"') {
            i += quoted_len(&b[i..])?;
        } else {
            while i < b.len() && PARAM_VALUE[usize::from(b[i])] {
                i += 1;
            }
            if i == value_start {
                return None;
            }
        }
        let value = s.get(value_start..i)?;
        self.rest = s.get(i..)?;
        Some((name, Some(value)))
    }
}

/// Length of the quoted string at the start of `s` (both quotes included), honouring
/// backslash escapes; `None` if it is not terminated.
pub(crate) fn quoted_len(s: &[u8]) -> Option<usize> {
    if s.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Parses an unsigned decimal that fits in 32 bits; leading zeros are allowed.
pub(crate) fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let significant = &s[s.iter().position(|&b| b != b'0').unwrap_or(s.len())..];
    if significant.len() > 10 {
        return None;
    }
    let v = significant
        .iter()
        .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
    u32::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_with_lws_and_quotes() {
        let p = Params::new(";  tag    = 1918181833n ;x;q=\"a;b\"");
        let v: Vec<_> = p.iter().collect();
        assert_eq!(
            v,
            vec![
                ("tag", Some("1918181833n")),
                ("x", None),
                ("q", Some("\"a;b\""))
            ]
        );
        assert_eq!(p.get("TAG"), Some(Some("1918181833n")));
        assert!(p.validate());
        assert!(!Params::new(";;").validate());
        assert!(!Params::new(";a=").validate());
    }

    #[test]
    fn list_split_respects_quotes_and_brackets() {
        let s = b"\"a,b\" <sip:x,y@h>, <sip:z>";
        let v: Vec<_> = list_elements(s).collect();
        assert_eq!(v, vec![Ok((0, 17)), Ok((18, 26))]);
        assert!(list_elements(b"\"open, <x>").any(|e| e.is_err()));
    }

    /// The splitter as it was, a byte at a time in every state.
    fn list_elements_bytewise(s: &[u8]) -> Vec<Result<(usize, usize), ()>> {
        let mut out = Vec::new();
        let mut start = 0;
        let (mut in_quote, mut in_angle) = (false, false);
        let mut i = 0;
        while i < s.len() {
            let b = s[i];
            if in_quote {
                match b {
                    b'\\' => i += 1,
                    b'"' => in_quote = false,
                    _ => {}
                }
            } else if in_angle {
                in_angle = b != b'>';
            } else if b == b'"' {
                in_quote = true;
            } else if b == b'<' {
                in_angle = true;
            } else if b == b',' {
                out.push(Ok((start, i)));
                start = i + 1;
            }
            i += 1;
        }
        out.push(if in_quote || in_angle {
            Err(())
        } else {
            Ok((start, s.len()))
        });
        out
    }

    #[test]
    fn list_split_agrees_with_a_byte_at_a_time_on_every_short_text() {
        // Every text of up to six bytes over the bytes that steer the split.
        const ALPHABET: &[u8] = b",\"<>\\a ";
        let mut texts: Vec<Vec<u8>> = vec![Vec::new()];
        let mut checked = 0;
        for _ in 0..6 {
            let mut longer = Vec::with_capacity(texts.len() * ALPHABET.len());
            for t in &texts {
                for &b in ALPHABET {
                    let mut n = t.clone();
                    n.push(b);
                    let split: Vec<_> = list_elements(&n).collect();
                    assert_eq!(
                        split,
                        list_elements_bytewise(&n),
                        "{:?}",
                        String::from_utf8_lossy(&n)
                    );
                    checked += 1;
                    longer.push(n);
                }
            }
            texts = longer;
        }
        assert_eq!(
            checked,
            (1..=6).map(|n| ALPHABET.len().pow(n)).sum::<usize>()
        );
    }

    #[test]
    fn u32_bounds() {
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"0009"), Some(9));
        assert_eq!(parse_u32(b"-1"), None);
        assert_eq!(parse_u32(b""), None);
    }
}
