//! Header names a proxy needs to recognise, with their compact forms (RFC 3261
//! section 7.3.3 and the compact forms registered since).

/// A recognised header name; everything else is [`HeaderName::Other`] and is only
/// ever relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    ContentLength,
    ContentType,
    Contact,
    Route,
    RecordRoute,
    Supported,
    Subject,
    ContentEncoding,
    Event,
    ReferTo,
    ReferredBy,
    AllowEvents,
    SessionExpires,
    AcceptContact,
    RejectContact,
    RequestDisposition,
    Identity,
    Other,
}

impl HeaderName {
    /// Number of variants, for tables indexed by `name as usize`.
    pub(crate) const COUNT: usize = HeaderName::Other as usize + 1;

    /// Looks a header name up case-insensitively, accepting compact forms.
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        if name.len() == 1 {
            return match name[0].to_ascii_lowercase() {
                b'v' => HeaderName::Via,
                b'f' => HeaderName::From,
                b't' => HeaderName::To,
                b'i' => HeaderName::CallId,
                b'm' => HeaderName::Contact,
                b'l' => HeaderName::ContentLength,
                b'c' => HeaderName::ContentType,
                b'k' => HeaderName::Supported,
                b's' => HeaderName::Subject,
                b'e' => HeaderName::ContentEncoding,
                b'o' => HeaderName::Event,
                b'r' => HeaderName::ReferTo,
                b'b' => HeaderName::ReferredBy,
                b'u' => HeaderName::AllowEvents,
                b'x' => HeaderName::SessionExpires,
                b'a' => HeaderName::AcceptContact,
                b'j' => HeaderName::RejectContact,
                b'd' => HeaderName::RequestDisposition,
                b'y' => HeaderName::Identity,
                _ => HeaderName::Other,
            };
        }
        // Folded to lower case once, then matched whole: every header field of every
        // message comes through here. No known name is longer than 19 bytes.
        let mut lower = [0u8; 19];
        let Some(folded) = lower.get_mut(..name.len()) else {
            return HeaderName::Other;
        };
        for (to, from) in folded.iter_mut().zip(name) {
            *to = from.to_ascii_lowercase();
        }
        match &*folded {
            b"to" => HeaderName::To,
            b"via" => HeaderName::Via,
            b"from" => HeaderName::From,
            b"cseq" => HeaderName::CSeq,
            b"route" => HeaderName::Route,
            b"event" => HeaderName::Event,
            b"call-id" => HeaderName::CallId,
            b"contact" => HeaderName::Contact,
            b"subject" => HeaderName::Subject,
            b"identity" => HeaderName::Identity,
            b"refer-to" => HeaderName::ReferTo,
            b"supported" => HeaderName::Supported,
            b"referred-by" => HeaderName::ReferredBy,
            b"max-forwards" => HeaderName::MaxForwards,
            b"content-type" => HeaderName::ContentType,
            b"record-route" => HeaderName::RecordRoute,
            b"allow-events" => HeaderName::AllowEvents,
            b"content-length" => HeaderName::ContentLength,
            b"accept-contact" => HeaderName::AcceptContact,
            b"reject-contact" => HeaderName::RejectContact,
            b"session-expires" => HeaderName::SessionExpires,
            b"content-encoding" => HeaderName::ContentEncoding,
            b"request-disposition" => HeaderName::RequestDisposition,
            _ => HeaderName::Other,
        }
    }

    /// The canonical long name, used when siplb writes a header of its own.
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderName::Via => "Via",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CallId => "Call-ID",
            HeaderName::CSeq => "CSeq",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::Contact => "Contact",
            HeaderName::Route => "Route",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::Supported => "Supported",
            HeaderName::Subject => "Subject",
            HeaderName::ContentEncoding => "Content-Encoding",
            HeaderName::Event => "Event",
            HeaderName::ReferTo => "Refer-To",
            HeaderName::ReferredBy => "Referred-By",
            HeaderName::AllowEvents => "Allow-Events",
            HeaderName::SessionExpires => "Session-Expires",
            HeaderName::AcceptContact => "Accept-Contact",
            HeaderName::RejectContact => "Reject-Contact",
            HeaderName::RequestDisposition => "Request-Disposition",
            HeaderName::Identity => "Identity",
            HeaderName::Other => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderName;

    #[test]
    fn compact_and_case_insensitive() {
        assert_eq!(HeaderName::from_bytes(b"v"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"I"), HeaderName::CallId);
        assert_eq!(
            HeaderName::from_bytes(b"MaX-fOrWaRdS"),
            HeaderName::MaxForwards
        );
        assert_eq!(HeaderName::from_bytes(b"C%6Fntact"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"q"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b""), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"Call-IDs"), HeaderName::Other);
    }

    #[test]
    fn every_long_name_is_recognised_in_any_case() {
        let all = [
            HeaderName::Via,
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq,
            HeaderName::MaxForwards,
            HeaderName::ContentLength,
            HeaderName::ContentType,
            HeaderName::Contact,
            HeaderName::Route,
            HeaderName::RecordRoute,
            HeaderName::Supported,
            HeaderName::Subject,
            HeaderName::ContentEncoding,
            HeaderName::Event,
            HeaderName::ReferTo,
            HeaderName::ReferredBy,
            HeaderName::AllowEvents,
            HeaderName::SessionExpires,
            HeaderName::AcceptContact,
            HeaderName::RejectContact,
            HeaderName::RequestDisposition,
            HeaderName::Identity,
        ];
        assert_eq!(all.len() + 1, HeaderName::COUNT);
        for h in all {
            assert_eq!(HeaderName::from_bytes(h.as_str().as_bytes()), h);
            assert_eq!(
                HeaderName::from_bytes(h.as_str().to_uppercase().as_bytes()),
                h
            );
        }
    }
}
