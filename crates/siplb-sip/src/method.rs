//! Request methods and the CSeq header.

use std::fmt;

use crate::text::{is_lws, is_token, parse_u32, trim};

/// A request method. Methods are case-sensitive (RFC 3261 section 7.1), so `invite`
/// is an extension method, not INVITE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method<'a> {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Prack,
    Subscribe,
    Notify,
    Publish,
    Info,
    Refer,
    Message,
    Update,
    Other(&'a str),
}

impl<'a> Method<'a> {
    pub fn parse(s: &'a str) -> Method<'a> {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "PUBLISH" => Method::Publish,
            "INFO" => Method::Info,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "UPDATE" => Method::Update,
            other => Method::Other(other),
        }
    }

    pub fn as_str(&self) -> &'a str {
        match *self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Info => "INFO",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Update => "UPDATE",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `CSeq: <number> <method>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CSeq<'a> {
    pub seq: u32,
    pub method: Method<'a>,
}

impl<'a> CSeq<'a> {
    /// Parses a CSeq value; the number must be below 2**31 (RFC 3261 section 8.1.1.5).
    pub fn parse(value: &'a str) -> Option<CSeq<'a>> {
        let (seq, method) = CSeq::parts(value)?;
        Some(CSeq {
            seq,
            method: Method::parse(method),
        })
    }

    /// The number and the method as written (a slice of `value`).
    pub(crate) fn parts(value: &'a str) -> Option<(u32, &'a str)> {
        let v = trim(value);
        let split = v.bytes().position(is_lws)?;
        let seq = parse_u32(&v.as_bytes()[..split]).filter(|&n| n < 1 << 31)?;
        let method = trim(&v[split..]);
        is_token(method).then_some((seq, method))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cseq() {
        assert_eq!(
            CSeq::parse("0009\r\n  INVITE"),
            Some(CSeq {
                seq: 9,
                method: Method::Invite
            })
        );
        assert_eq!(CSeq::parse("36893488147419103232 REGISTER"), None);
        assert_eq!(CSeq::parse("2147483648 INVITE"), None);
        assert_eq!(CSeq::parse("1"), None);
        assert_eq!(CSeq::parse("1 IN VITE"), None);
        assert_eq!(
            CSeq::parse("7 invite").map(|c| c.method),
            Some(Method::Other("invite"))
        );
    }
}
