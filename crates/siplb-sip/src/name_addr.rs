//! `name-addr` / `addr-spec` values with header parameters: From, To, Contact, Route,
//! Record-Route (RFC 3261 section 20.10 and 25.1).

use crate::text::{Params, is_lws, is_token_char, quoted_len, trim};
use crate::uri::{Uri, UriError, is_absolute_uri};

/// One address with its header parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name as written, quotes included.
    pub display_name: Option<&'a str>,
    /// The URI text, without angle brackets.
    pub uri_text: &'a str,
    /// True when the URI was written in angle brackets.
    pub bracketed: bool,
    pub params: Params<'a>,
    /// The `tag` parameter's value, found by the pass that checks the parameters:
    /// From and To of every message are parsed for it.
    tag: Option<&'a str>,
}

/// Why an address did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameAddrError {
    #[error("unterminated quoted string")]
    Quote,
    #[error("display name is not a token list or quoted string")]
    DisplayName,
    #[error("missing closing angle bracket")]
    Bracket,
    #[error("malformed URI")]
    Uri,
    #[error("malformed header parameters")]
    Params,
}

impl<'a> NameAddr<'a> {
    pub fn parse(value: &'a str) -> Result<NameAddr<'a>, NameAddrError> {
        let s = trim(value);
        let (display_name, after_display) = if s.starts_with('"') {
            let n = quoted_len(s.as_bytes()).ok_or(NameAddrError::Quote)?;
            let rest = trim(&s[n..]);
            if !rest.starts_with('<') {
                return Err(NameAddrError::DisplayName);
            }
            (Some(&s[..n]), rest)
        } else if let Some(lt) = s.find('<') {
            let display = trim(&s[..lt]);
            // Words of tokens between LWS: every byte a token character or LWS, in one
            // pass (9 display names per call, docs/BENCHMARKS-HISTORY.md, "Issue 19,
            // seventeenth round"). A quote anywhere is the error it names.
            let mut tokens = true;
            for b in display.bytes() {
                if b == b'"' {
                    return Err(NameAddrError::Quote);
                }
                tokens &= is_lws(b) || is_token_char(b);
            }
            if !tokens {
                return Err(NameAddrError::DisplayName);
            }
            ((!display.is_empty()).then_some(display), &s[lt..])
        } else {
            // addr-spec form: the URI ends at the first ';', which starts header params.
            let end = s.find(';').unwrap_or(s.len());
            let uri_text = trim(&s[..end]);
            if uri_text.contains(['?', ',']) || !is_absolute_uri(uri_text) {
                return Err(NameAddrError::Uri);
            }
            let params = Params::new(&s[end..]);
            let (valid, tag) = params.scan("tag");
            if !valid {
                return Err(NameAddrError::Params);
            }
            return Ok(NameAddr {
                display_name: None,
                uri_text,
                bracketed: false,
                params,
                tag: tag.flatten(),
            });
        };
        let inner = &after_display[1..];
        let gt = inner.find('>').ok_or(NameAddrError::Bracket)?;
        let uri_text = &inner[..gt];
        if !is_absolute_uri(uri_text) {
            return Err(NameAddrError::Uri);
        }
        let params = Params::new(&inner[gt + 1..]);
        let (valid, tag) = params.scan("tag");
        if !valid {
            return Err(NameAddrError::Params);
        }
        Ok(NameAddr {
            display_name,
            uri_text,
            bracketed: true,
            params,
            tag: tag.flatten(),
        })
    }

    /// The URI as a SIP URI; fails for other schemes (`tel:`...).
    pub fn uri(&self) -> Result<Uri<'a>, UriError> {
        Uri::parse(self.uri_text)
    }

    pub fn tag(&self) -> Option<&'a str> {
        self.tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tag kept by the parse is the one a look-up of the parameters finds: the
    /// first `tag`, whatever its case, and none for a `tag` without a value.
    #[test]
    fn the_tag_kept_is_the_first_tag_parameter() {
        for (text, tag) in [
            ("<sip:a@b>;tag=1", Some("1")),
            ("<sip:a@b>;TAG=2;tag=3", Some("2")),
            ("<sip:a@b;tag=uri>;x=y", None),
            ("<sip:a@b>;tag", None),
            ("<sip:a@b>;tag;tag=4", None),
            ("sip:a@b;x;Tag=5", Some("5")),
            ("\"A ; tag=no\" <sip:a@b> ; tag = 6", Some("6")),
        ] {
            let a = NameAddr::parse(text).unwrap();
            assert_eq!(a.tag(), tag, "{text}");
            assert_eq!(a.tag(), a.params.get("tag").flatten(), "{text}");
        }
    }

    #[test]
    fn forms() {
        let a =
            NameAddr::parse(" sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(a.uri_text, "sip:vivekg@chair-dnrc.example.com");
        assert_eq!(a.tag(), Some("1918181833n"));
        let a = NameAddr::parse(
            "\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8",
        )
        .unwrap();
        assert_eq!(a.display_name, Some("\"J Rosenberg \\\\\\\"\""));
        assert_eq!(a.tag(), Some("98asjd8"));
        let a = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(a.display_name, Some("caller"));
        assert_eq!(a.uri().unwrap().user, Some("caller"));
        let a = NameAddr::parse("<sip:services.example.com;lr;unknownwith=value;unknown-no-value>")
            .unwrap();
        assert!(a.uri().unwrap().is_loose_router());
        assert!(NameAddr::parse("<tel:+1555>").unwrap().uri().is_err());
    }

    #[test]
    fn rejects() {
        assert_eq!(
            NameAddr::parse("\"Mr. J. User <sip:j.user@example.com>"),
            Err(NameAddrError::Quote)
        );
        assert_eq!(
            NameAddr::parse("Bell, Alexander <sip:a@example.com>"),
            Err(NameAddrError::DisplayName)
        );
        assert_eq!(
            NameAddr::parse("\"W\" < sip:t.watson@example.org >"),
            Err(NameAddrError::Uri)
        );
        assert_eq!(
            NameAddr::parse("sip:user@example.com?Route=%3Csip:x%3E"),
            Err(NameAddrError::Uri)
        );
        assert_eq!(NameAddr::parse("<sip:x@y"), Err(NameAddrError::Bracket));
        assert_eq!(
            NameAddr::parse("\"Joe\" <sip:joe@example.org>;;;;"),
            Err(NameAddrError::Params)
        );
    }

    /// An unquoted display name is read as RFC 3261 words: tokens between LWS. The
    /// one-pass check answers as splitting on LWS and testing each word did, on any
    /// text before the `<` (LWS, quotes, separators, non-ASCII, empty).
    mod display_name {
        use proptest::prelude::*;

        use super::super::*;
        use crate::text::is_token;

        fn by_words(display: &str) -> Result<(), NameAddrError> {
            let display = trim(display);
            if display.contains('"') {
                return Err(NameAddrError::Quote);
            }
            let words = display
                .split(|c: char| c.is_ascii() && is_lws(c as u8))
                .filter(|w| !w.is_empty());
            for w in words {
                if !is_token(w) {
                    return Err(NameAddrError::DisplayName);
                }
            }
            Ok(())
        }

        proptest! {
            #[test]
            fn reads_as_words_of_tokens(display in r#"[a-zA-Z0-9 \t.!%*_+`'~",;:@/é-]{0,12}"#) {
                let text = format!("{display}<sip:a@b>;tag=1");
                let parsed = NameAddr::parse(&text).map(|_| ());
                // A display starting with a quote is the quoted form: not this rule.
                prop_assume!(!trim(&display).starts_with('"'));
                prop_assert_eq!(parsed, by_words(&display), "{:?}", text);
            }
        }
    }
}
