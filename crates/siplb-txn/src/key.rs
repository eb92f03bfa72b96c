//! Transaction keys: which transaction a message belongs to (RFC 3261 sections 17.1.3,
//! 17.2.3 and 9.2).
//!
//! Two forms of each key. A probe ([`ClientProbe`], [`ServerProbe`]) borrows its text
//! from the message it was read off: every received message is looked up by one, and
//! most find a transaction or need none, so that costs no allocation. A key
//! ([`ClientKey`], [`ServerKey`]) owns its text, for the transaction to keep; it is
//! made from a probe only when a transaction is made. Both carry the same hash (see
//! [`crate::prehash()`]), and a key tells whether a probe is its own
//! ([`ClientKey::matches`], [`ServerKey::matches`]), so a table can hold transaction
//! ids alone and compare against the keys the transactions hold.
//!
//! Branches are compared byte for byte, as siplb-sip treats them as opaque tokens; the
//! magic cookie is `z9hG4bK` exactly.

use std::hash::{Hash, Hasher};

use siplb_sip::{Message, Method, Via};

use crate::error::KeyError;
use crate::prehash::prehash;

const MAGIC_COOKIE: &str = "z9hG4bK";

/// A client transaction: the branch of the top Via (the one this element added) and
/// the CSeq method (17.1.3). The method keeps a CANCEL apart from the INVITE it
/// shares its branch with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClientKey {
    hash: u64,
    branch: Box<str>,
    method: Box<str>,
}

impl Hash for ClientKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A [`ClientKey`] read off a message, borrowing its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientProbe<'a> {
    hash: u64,
    branch: &'a str,
    method: &'a str,
}

impl<'a> ClientProbe<'a> {
    /// The probe of a request this element sends.
    pub fn of_request(request: &'a Message) -> Result<ClientProbe<'a>, KeyError> {
        let method = request.method().ok_or(KeyError::NotARequest)?;
        ClientProbe::build(request, method)
    }

    /// The probe a response is matched by.
    pub fn of_response(response: &'a Message) -> Result<ClientProbe<'a>, KeyError> {
        if response.is_request() {
            return Err(KeyError::NotAResponse);
        }
        let cseq = response.cseq().ok_or(KeyError::CSeq)?;
        ClientProbe::build(response, cseq.method)
    }

    fn build(msg: &'a Message, method: Method<'a>) -> Result<ClientProbe<'a>, KeyError> {
        let via = msg.top_via_id().map_err(|_| KeyError::Via)?;
        let branch = via
            .branch
            .filter(|b| !b.is_empty())
            .ok_or(KeyError::NoBranch)?;
        let method = method.as_str();
        Ok(ClientProbe {
            hash: prehash(&(branch, method)),
            branch,
            method,
        })
    }

    /// The hash the key of this probe carries.
    pub fn digest(&self) -> u64 {
        self.hash
    }

    /// The key, owning its text.
    pub fn to_key(&self) -> ClientKey {
        ClientKey {
            hash: self.hash,
            branch: self.branch.into(),
            method: self.method.into(),
        }
    }
}

impl ClientKey {
    /// The key of a request this element sends with `branch` in its top Via: the key
    /// [`ClientKey::from_request`] reads off it.
    pub fn new(branch: &str, method: Method<'_>) -> Result<ClientKey, KeyError> {
        if branch.is_empty() {
            return Err(KeyError::NoBranch);
        }
        let method = method.as_str();
        Ok(ClientProbe {
            hash: prehash(&(branch, method)),
            branch,
            method,
        }
        .to_key())
    }

    /// The key of a request this element sends.
    pub fn from_request(request: &Message) -> Result<ClientKey, KeyError> {
        ClientProbe::of_request(request).map(|p| p.to_key())
    }

    /// The key a response is matched by.
    pub fn from_response(response: &Message) -> Result<ClientKey, KeyError> {
        ClientProbe::of_response(response).map(|p| p.to_key())
    }

    /// True when `probe` was read off a message of this transaction.
    pub fn matches(&self, probe: &ClientProbe<'_>) -> bool {
        self.hash == probe.hash && *self.branch == *probe.branch && *self.method == *probe.method
    }

    /// The hash this key carries (a table of transaction ids is searched by it).
    pub fn digest(&self) -> u64 {
        self.hash
    }

    pub fn branch(&self) -> &str {
        &self.branch
    }

    pub fn method(&self) -> &str {
        &self.method
    }
}

/// A server transaction (17.2.3).
///
/// With an RFC 3261 branch (magic cookie and something after it) the key is branch,
/// sent-by and method. Otherwise the request comes from an RFC 2543 element and the
/// key falls back to Request-URI, Call-ID, From tag, CSeq number, top Via and method.
/// The To tag that 17.2.3 also lists is left out: an ACK carries the tag of the
/// response while its INVITE carried none, and the other fields already tell two
/// requests apart.
///
/// An ACK is keyed as INVITE, so it finds the INVITE transaction it acknowledges. A
/// CANCEL has a transaction of its own; [`ServerKey::cancelled_invite`] finds the
/// INVITE it cancels (9.2).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerKey {
    hash: u64,
    id: Id,
    method: Box<str>,
}

impl Hash for ServerKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Id {
    Branch {
        branch: Box<str>,
        /// Lowercased: hosts compare case-insensitively.
        host: Box<str>,
        /// As written: an absent port is not equated with the transport default, since
        /// retransmissions repeat the Via exactly.
        port: Option<u16>,
    },
    /// Boxed: rare, and large enough to double the size of every key inline.
    Rfc2543(Box<Rfc2543Id>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Rfc2543Id {
    request_uri: Box<str>,
    call_id: Box<str>,
    from_tag: Option<Box<str>>,
    cseq: u32,
    top_via: Box<str>,
}

/// An [`Id`] as a probe holds it: the branch's parts borrowed, the host as written.
#[derive(Clone, Debug, PartialEq, Eq)]
enum IdProbe<'a> {
    Branch {
        branch: &'a str,
        host: &'a str,
        port: Option<u16>,
    },
    Rfc2543(Box<Rfc2543Id>),
}

/// What a server key's hash is taken of, whichever form holds it: the host goes in
/// lowercased, so that a probe hashes as the key it matches without copying its text.
enum IdText<'a> {
    Branch {
        branch: &'a str,
        host: &'a str,
        port: Option<u16>,
    },
    Rfc2543(&'a Rfc2543Id),
}

impl Hash for IdText<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            IdText::Branch { branch, host, port } => {
                state.write_u8(0);
                branch.hash(state);
                // Lowercased through a buffer on the stack; a hasher's input is one
                // stream, so chunks hash as the whole would.
                let mut buffer = [0u8; 32];
                for chunk in host.as_bytes().chunks(buffer.len()) {
                    let lower = &mut buffer[..chunk.len()];
                    lower.copy_from_slice(chunk);
                    lower.make_ascii_lowercase();
                    state.write(lower);
                }
                state.write_u8(0xff);
                port.hash(state);
            }
            IdText::Rfc2543(id) => {
                state.write_u8(1);
                id.hash(state);
            }
        }
    }
}

fn server_hash(id: IdText<'_>, method: &str) -> u64 {
    prehash(&(id, method))
}

/// A [`ServerKey`] read off a request, borrowing its text (but for RFC 2543 requests,
/// whose key is built from several headers: rare enough to allocate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerProbe<'a> {
    hash: u64,
    id: IdProbe<'a>,
    method: &'a str,
}

impl<'a> ServerProbe<'a> {
    /// The probe of a received request; an ACK gets its INVITE's.
    pub fn of_request(request: &'a Message) -> Result<ServerProbe<'a>, KeyError> {
        let method = request.method().ok_or(KeyError::NotARequest)?;
        let via = request.top_via_id().map_err(|_| KeyError::Via)?;
        let id = match via.branch {
            Some(b) if b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE) => {
                IdProbe::Branch {
                    branch: b,
                    host: via.host_text,
                    port: via.port,
                }
            }
            _ => {
                let via = request.top_via().map_err(|_| KeyError::Via)?;
                IdProbe::Rfc2543(Box::new(rfc2543_id(request, &via)?))
            }
        };
        let method = match method {
            Method::Ack => Method::Invite,
            m => m,
        };
        Ok(ServerProbe::new(id, method.as_str()))
    }

    fn new(id: IdProbe<'a>, method: &'a str) -> ServerProbe<'a> {
        let text = match &id {
            IdProbe::Branch { branch, host, port } => IdText::Branch {
                branch,
                host,
                port: *port,
            },
            IdProbe::Rfc2543(id) => IdText::Rfc2543(id),
        };
        ServerProbe {
            hash: server_hash(text, method),
            id,
            method,
        }
    }

    /// The probe of the INVITE transaction a CANCEL request cancels.
    pub fn invite_for_cancel(cancel: &'a Message) -> Result<ServerProbe<'a>, KeyError> {
        ServerProbe::of_request(cancel)?
            .cancelled_invite()
            .ok_or(KeyError::NotCancel)
    }

    /// For a CANCEL's probe, the probe of the INVITE transaction it cancels:
    /// everything equal but the method (RFC 3261 section 9.2).
    pub fn cancelled_invite(&self) -> Option<ServerProbe<'a>> {
        (self.method == "CANCEL").then(|| ServerProbe::new(self.id.clone(), "INVITE"))
    }

    /// The hash the key of this probe carries.
    pub fn digest(&self) -> u64 {
        self.hash
    }

    /// The key, owning its text.
    pub fn to_key(&self) -> ServerKey {
        let id = match &self.id {
            IdProbe::Branch { branch, host, port } => Id::Branch {
                branch: (*branch).into(),
                host: host.to_ascii_lowercase().into(),
                port: *port,
            },
            IdProbe::Rfc2543(id) => Id::Rfc2543(id.clone()),
        };
        ServerKey {
            hash: self.hash,
            id,
            method: self.method.into(),
        }
    }
}

impl ServerKey {
    /// The key of a received request; an ACK gets its INVITE's key.
    pub fn from_request(request: &Message) -> Result<ServerKey, KeyError> {
        ServerProbe::of_request(request).map(|p| p.to_key())
    }

    /// The key of the INVITE transaction a CANCEL request cancels.
    pub fn invite_for_cancel(cancel: &Message) -> Result<ServerKey, KeyError> {
        ServerProbe::invite_for_cancel(cancel).map(|p| p.to_key())
    }

    /// For a CANCEL's key, the key of the INVITE transaction it cancels: everything
    /// equal but the method (RFC 3261 section 9.2).
    pub fn cancelled_invite(&self) -> Option<ServerKey> {
        if &*self.method != "CANCEL" {
            return None;
        }
        let hash = server_hash(self.text(), "INVITE");
        Some(ServerKey {
            hash,
            id: self.id.clone(),
            method: "INVITE".into(),
        })
    }

    fn text(&self) -> IdText<'_> {
        match &self.id {
            Id::Branch { branch, host, port } => IdText::Branch {
                branch,
                host,
                port: *port,
            },
            Id::Rfc2543(id) => IdText::Rfc2543(id),
        }
    }

    /// True when `probe` was read off a request of this transaction (or, for an
    /// INVITE, off its ACK).
    pub fn matches(&self, probe: &ServerProbe<'_>) -> bool {
        if self.hash != probe.hash || *self.method != *probe.method {
            return false;
        }
        match (&self.id, &probe.id) {
            (
                Id::Branch { branch, host, port },
                IdProbe::Branch {
                    branch: b,
                    host: h,
                    port: p,
                },
            ) => **branch == **b && port == p && host.eq_ignore_ascii_case(h),
            (Id::Rfc2543(id), IdProbe::Rfc2543(other)) => id == other,
            _ => false,
        }
    }

    /// The hash this key carries (a table of transaction ids is searched by it).
    pub fn digest(&self) -> u64 {
        self.hash
    }

    /// The transaction's method (INVITE for an ACK).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The branch, when the request carried an RFC 3261 one.
    pub fn branch(&self) -> Option<&str> {
        match &self.id {
            Id::Branch { branch, .. } => Some(branch),
            Id::Rfc2543(_) => None,
        }
    }

    /// True when matching used the RFC 3261 branch rather than the RFC 2543 rules.
    pub fn is_rfc3261(&self) -> bool {
        matches!(self.id, Id::Branch { .. })
    }
}

fn rfc2543_id(request: &Message, via: &Via<'_>) -> Result<Rfc2543Id, KeyError> {
    let request_uri = request.request_uri_text().ok_or(KeyError::Incomplete)?;
    let call_id = request.call_id().ok_or(KeyError::Incomplete)?;
    let cseq = request.cseq().ok_or(KeyError::CSeq)?;
    let port = via.port.map(|p| format!(":{p}")).unwrap_or_default();
    let top_via = format!(
        "{}/{}{}{}",
        via.transport.to_ascii_uppercase(),
        via.host_text.to_ascii_lowercase(),
        port,
        via.params.as_str().trim()
    );
    Ok(Rfc2543Id {
        request_uri: request_uri.into(),
        call_id: call_id.into(),
        from_tag: request.from_tag().map(Into::into),
        cseq: cseq.seq,
        top_via: top_via.into(),
    })
}

#[cfg(test)]
mod tests {
    use siplb_sip::{Message, build_response};

    use super::*;
    use crate::test_messages::{invite, request_with};

    fn via_request(method: &str, via: &str) -> Message {
        request_with(method, via, "")
    }

    /// The key made from a branch and a method, for a request kept as its bytes, is
    /// the one read off the request, and its responses' probes match it; an empty
    /// branch makes none.
    #[test]
    fn a_key_from_branch_and_method_is_the_one_read_off_the_request() {
        for method in ["INVITE", "BYE", "X-CUSTOM"] {
            let request = via_request(method, "SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKmade");
            let read = ClientKey::from_request(&request).unwrap();
            let made = ClientKey::new("z9hG4bKmade", Method::parse(method)).unwrap();
            assert_eq!(made, read, "{method}");
            let response = Message::parse(build_response(&request, 200, "OK", None, &[])).unwrap();
            assert!(
                made.matches(&ClientProbe::of_response(&response).unwrap()),
                "{method}"
            );
        }
        assert_eq!(ClientKey::new("", Method::Invite), Err(KeyError::NoBranch));
    }

    /// A probe read off a message finds the key of its transaction, as an owned key
    /// made from the same message would: same hash, and a match, whatever the case of
    /// the sent-by host (longer than the stack buffer the hash lowercases it through,
    /// here) and whichever request of the transaction the probe came from.
    #[test]
    fn probes_hash_and_match_as_the_keys_of_their_transactions() {
        let host = "Gateway-Number-Seven.PSTN.Example.COM";
        let via = |host: &str| format!("SIP/2.0/UDP {host}:5060;branch=z9hG4bKprobe");
        let inv = ServerKey::from_request(&via_request("INVITE", &via(host))).unwrap();
        for (method, host) in [
            ("INVITE", host.to_owned()),
            ("ACK", host.to_ascii_lowercase()),
            ("INVITE", host.to_ascii_uppercase()),
        ] {
            let request = via_request(method, &via(&host));
            let probe = ServerProbe::of_request(&request).unwrap();
            assert_eq!(probe.digest(), inv.digest(), "{method} {host}");
            assert!(inv.matches(&probe), "{method} {host}");
            assert_eq!(probe.to_key(), inv);
        }
        let elsewhere = via_request("INVITE", &via("gateway-number-eight.pstn.example.com"));
        assert!(!inv.matches(&ServerProbe::of_request(&elsewhere).unwrap()));
        let bye = via_request("BYE", &via(host));
        assert!(!inv.matches(&ServerProbe::of_request(&bye).unwrap()));

        let cancel = via_request("CANCEL", &via(host));
        let cancelled = ServerProbe::invite_for_cancel(&cancel).unwrap();
        assert!(inv.matches(&cancelled));
        assert_eq!(cancelled.digest(), inv.digest());
        assert_eq!(
            ServerProbe::invite_for_cancel(&bye),
            Err(KeyError::NotCancel)
        );

        let old = "SIP/2.0/UDP Old.Example.COM:5060";
        let old_inv = ServerKey::from_request(&via_request("INVITE", old)).unwrap();
        let old_ack = request_with("ACK", old, ";tag=resp1");
        let probe = ServerProbe::of_request(&old_ack).unwrap();
        assert!(!old_inv.is_rfc3261());
        assert_eq!(probe.digest(), old_inv.digest());
        assert!(old_inv.matches(&probe));
        assert!(!inv.matches(&probe));

        let sent = invite();
        let key = ClientKey::from_request(&sent).unwrap();
        let ringing = Message::parse(build_response(&sent, 180, "Ringing", None, &[])).unwrap();
        let probe = ClientProbe::of_response(&ringing).unwrap();
        assert_eq!(probe.digest(), key.digest());
        assert!(key.matches(&probe));
        let cancel = request_with(
            "CANCEL",
            "SIP/2.0/UDP lb.example.com:5060;branch=z9hG4bKlb1",
            "",
        );
        let cancelled = Message::parse(build_response(&cancel, 200, "OK", None, &[])).unwrap();
        assert!(!key.matches(&ClientProbe::of_response(&cancelled).unwrap()));
    }

    #[test]
    fn client_key_matches_responses_by_branch_and_cseq_method() {
        let inv = invite();
        let key = ClientKey::from_request(&inv).unwrap();
        assert_eq!(key.branch(), "z9hG4bKlb1");
        assert_eq!(key.method(), "INVITE");
        let ringing = Message::parse(build_response(&inv, 180, "Ringing", None, &[])).unwrap();
        assert_eq!(ClientKey::from_response(&ringing).unwrap(), key);

        let cancel = request_with(
            "CANCEL",
            "SIP/2.0/UDP lb.example.com:5060;branch=z9hG4bKlb1",
            "",
        );
        let cancel_key = ClientKey::from_request(&cancel).unwrap();
        assert_eq!(cancel_key.branch(), key.branch());
        assert_ne!(cancel_key, key);
        let ok = Message::parse(build_response(&cancel, 200, "OK", None, &[])).unwrap();
        assert_eq!(ClientKey::from_response(&ok).unwrap(), cancel_key);

        assert_eq!(ClientKey::from_response(&inv), Err(KeyError::NotAResponse));
        assert_eq!(
            ClientKey::from_request(&ringing),
            Err(KeyError::NotARequest)
        );
        let no_branch = via_request("OPTIONS", "SIP/2.0/UDP lb.example.com");
        assert_eq!(ClientKey::from_request(&no_branch), Err(KeyError::NoBranch));
        let empty = via_request("OPTIONS", "SIP/2.0/UDP lb.example.com;branch");
        assert_eq!(ClientKey::from_request(&empty), Err(KeyError::NoBranch));
    }

    #[test]
    fn ack_matches_its_invite_and_cancel_has_its_own_transaction() {
        let via = "SIP/2.0/UDP pc33.example.com:5060;branch=z9hG4bKabc";
        let inv = ServerKey::from_request(&via_request("INVITE", via)).unwrap();
        let ack = ServerKey::from_request(&via_request("ACK", via)).unwrap();
        let cancel = ServerKey::from_request(&via_request("CANCEL", via)).unwrap();
        assert!(inv.is_rfc3261());
        assert_eq!(inv.branch(), Some("z9hG4bKabc"));
        assert_eq!(ack, inv);
        assert_eq!(ack.method(), "INVITE");
        assert_ne!(cancel, inv);
        assert_eq!(cancel.cancelled_invite(), Some(inv.clone()));
        assert_eq!(inv.cancelled_invite(), None);
        assert_eq!(
            ServerKey::invite_for_cancel(&via_request("CANCEL", via)),
            Ok(inv)
        );
        assert_eq!(
            ServerKey::invite_for_cancel(&via_request("BYE", via)),
            Err(KeyError::NotCancel)
        );
    }

    #[test]
    fn sent_by_is_part_of_the_key() {
        let key = |via: &str| ServerKey::from_request(&via_request("INVITE", via)).unwrap();
        let base = key("SIP/2.0/UDP pc33.example.com:5060;branch=z9hG4bKabc");
        // A peer reusing someone else's branch does not hijack the transaction.
        assert_ne!(
            base,
            key("SIP/2.0/UDP evil.example.com:5060;branch=z9hG4bKabc")
        );
        assert_ne!(
            base,
            key("SIP/2.0/UDP pc33.example.com:5070;branch=z9hG4bKabc")
        );
        assert_ne!(base, key("SIP/2.0/UDP pc33.example.com;branch=z9hG4bKabc"));
        // Hosts compare case-insensitively, and nothing else in the Via counts.
        assert_eq!(
            base,
            key("SIP/2.0/TCP PC33.Example.COM:5060;rport;branch=z9hG4bKabc;received=192.0.2.1")
        );
    }

    #[test]
    fn branch_edge_cases() {
        let key = |via: &str| ServerKey::from_request(&via_request("INVITE", via)).unwrap();
        // Branches are opaque: case matters.
        assert_ne!(
            key("SIP/2.0/UDP a.example.com;branch=z9hG4bKabc"),
            key("SIP/2.0/UDP a.example.com;branch=z9hG4bKABC")
        );
        // Without the exact cookie, or with nothing after it, the branch is not unique
        // and RFC 2543 matching applies.
        for via in [
            "SIP/2.0/UDP a.example.com;branch=z9hg4bkabc",
            "SIP/2.0/UDP a.example.com;branch=z9hG4bK",
            "SIP/2.0/UDP a.example.com;branch=1234",
            "SIP/2.0/UDP a.example.com",
        ] {
            let k = key(via);
            assert!(!k.is_rfc3261(), "{via}");
            assert_eq!(k.branch(), None);
        }
    }

    #[test]
    fn rfc2543_matching() {
        let via = "SIP/2.0/UDP old.example.com:5060";
        let inv = ServerKey::from_request(&via_request("INVITE", via)).unwrap();
        // The ACK to a non-2xx carries the response's To tag; it still matches.
        let ack = request_with("ACK", via, ";tag=resp1");
        assert_eq!(ServerKey::from_request(&ack).unwrap(), inv);
        let cancel = ServerKey::from_request(&via_request("CANCEL", via)).unwrap();
        assert_eq!(cancel.cancelled_invite(), Some(inv.clone()));
        // A different hop or request is another transaction.
        let other_via = "SIP/2.0/UDP old.example.com:5062";
        assert_ne!(
            ServerKey::from_request(&via_request("INVITE", other_via)).unwrap(),
            inv
        );
        let bye = ServerKey::from_request(&via_request("BYE", via)).unwrap();
        assert_ne!(bye, inv);
    }
}
