//! Transaction keys: which transaction a message belongs to (RFC 3261 sections 17.1.3,
//! 17.2.3 and 9.2).
//!
//! Keys own their text so they can outlive the message they came from in a map, and
//! carry their hash (see [`crate::prehash()`]): use them in maps built with
//! [`crate::Prehashed`].
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

impl ClientKey {
    /// The key of a request this element sends.
    pub fn from_request(request: &Message) -> Result<ClientKey, KeyError> {
        let method = request.method().ok_or(KeyError::NotARequest)?;
        ClientKey::build(request, method)
    }

    /// The key a response is matched by.
    pub fn from_response(response: &Message) -> Result<ClientKey, KeyError> {
        if response.is_request() {
            return Err(KeyError::NotAResponse);
        }
        let cseq = response.cseq().ok_or(KeyError::CSeq)?;
        ClientKey::build(response, cseq.method)
    }

    fn build(msg: &Message, method: Method<'_>) -> Result<ClientKey, KeyError> {
        let via = msg.top_via().map_err(|_| KeyError::Via)?;
        let branch = via
            .branch()
            .filter(|b| !b.is_empty())
            .ok_or(KeyError::NoBranch)?;
        Ok(ClientKey {
            hash: prehash(&(branch, method.as_str())),
            branch: branch.into(),
            method: method.as_str().into(),
        })
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

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

impl ServerKey {
    /// The key of a received request; an ACK gets its INVITE's key.
    pub fn from_request(request: &Message) -> Result<ServerKey, KeyError> {
        let method = request.method().ok_or(KeyError::NotARequest)?;
        let via = request.top_via().map_err(|_| KeyError::Via)?;
        let id = match via.branch() {
            Some(b) if b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE) => Id::Branch {
                branch: b.into(),
                host: via.host_text.to_ascii_lowercase().into(),
                port: via.port,
            },
            _ => rfc2543_id(request, &via)?,
        };
        let method = match method {
            Method::Ack => Method::Invite,
            m => m,
        };
        Ok(ServerKey::new(id, method.as_str()))
    }

    fn new(id: Id, method: &str) -> ServerKey {
        ServerKey {
            hash: prehash(&(&id, method)),
            id,
            method: method.into(),
        }
    }

    /// The key of the INVITE transaction a CANCEL request cancels.
    pub fn invite_for_cancel(cancel: &Message) -> Result<ServerKey, KeyError> {
        ServerKey::from_request(cancel)?
            .cancelled_invite()
            .ok_or(KeyError::NotCancel)
    }

    /// For a CANCEL's key, the key of the INVITE transaction it cancels: everything
    /// equal but the method (RFC 3261 section 9.2).
    pub fn cancelled_invite(&self) -> Option<ServerKey> {
        (&*self.method == "CANCEL").then(|| ServerKey::new(self.id.clone(), "INVITE"))
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

fn rfc2543_id(request: &Message, via: &Via<'_>) -> Result<Id, KeyError> {
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
    Ok(Id::Rfc2543(Box::new(Rfc2543Id {
        request_uri: request_uri.into(),
        call_id: call_id.into(),
        from_tag: request.from_tag().map(Into::into),
        cseq: cseq.seq,
        top_via: top_via.into(),
    })))
}

#[cfg(test)]
mod tests {
    use siplb_sip::{Message, build_response};

    use super::*;
    use crate::test_messages::{invite, request_with};

    fn via_request(method: &str, via: &str) -> Message {
        request_with(method, via, "")
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
