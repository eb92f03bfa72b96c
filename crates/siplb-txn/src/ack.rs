//! The ACK an INVITE client transaction sends for a non-2xx final (RFC 3261 section
//! 17.1.1.3).

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};
use siplb_sip::{HeaderName, Message, Via};

/// Builds the hop-by-hop ACK for `response`, a non-2xx final to `request`.
///
/// Request-URI, Call-ID, From, CSeq number and Route fields come from the request;
/// the To field comes from the response, so it carries the tag being acknowledged.
/// Only the request's top Via is kept: the ACK goes no further than the hop that
/// answered. `None` when either message lacks one of those parts.
pub fn hop_by_hop_ack(request: &Message, response: &Message) -> Option<Bytes> {
    let uri = request.request_uri_text()?;
    let via = via_hop(&request.top_via().ok()?);
    let from = request.header(HeaderName::From)?;
    let to = response.header(HeaderName::To)?;
    let call_id = request.header(HeaderName::CallId)?;
    let seq = request.cseq()?.seq;

    let mut out = BytesMut::with_capacity(256 + request.as_bytes().len() / 4);
    put_line(&mut out, b"ACK ", uri.as_bytes(), b" SIP/2.0");
    put_line(&mut out, b"Via: ", via.as_bytes(), b"");
    for route in request.header_values(HeaderName::Route) {
        put_line(&mut out, b"Route: ", route, b"");
    }
    put_line(&mut out, b"Max-Forwards: ", b"70", b"");
    put_line(&mut out, b"From: ", from, b"");
    put_line(&mut out, b"To: ", to, b"");
    put_line(&mut out, b"Call-ID: ", call_id, b"");
    put_line(&mut out, b"CSeq: ", seq.to_string().as_bytes(), b" ACK");
    out.put_slice(b"Content-Length: 0\r\n\r\n");
    Some(out.freeze())
}

fn put_line(out: &mut BytesMut, before: &[u8], value: &[u8], after: &[u8]) {
    out.put_slice(before);
    out.put_slice(value);
    out.put_slice(after);
    out.put_slice(b"\r\n");
}

/// One Via hop written out again. The top header line may hold several hops or be
/// folded, and siplb-sip exposes a hop only parsed, so it is rebuilt: the branch and
/// sent-by, all that the next hop matches on, come out unchanged.
fn via_hop(via: &Via<'_>) -> String {
    let mut hop = format!("SIP/2.0/{} {}", via.transport, via.host_text);
    if let Some(port) = via.port {
        let _ = write!(hop, ":{port}");
    }
    for (name, value) in via.params.iter() {
        hop.push(';');
        hop.push_str(name);
        if let Some(v) = value {
            hop.push('=');
            hop.push_str(v);
        }
    }
    hop
}

#[cfg(test)]
mod tests {
    use siplb_sip::{Message, Method};

    use super::*;
    use crate::test_messages::{invite, response};

    #[test]
    fn ack_follows_17_1_1_3() {
        let inv = invite();
        let busy = response(&inv, 486);
        let ack = Message::parse(hop_by_hop_ack(&inv, &busy).unwrap()).unwrap();
        assert_eq!(ack.method(), Some(Method::Ack));
        assert_eq!(ack.request_uri_text(), Some("sip:bob@biloxi.example.com"));
        let vias: Vec<_> = ack.vias().map(|v| v.unwrap()).collect();
        assert_eq!(vias.len(), 1);
        assert_eq!(vias[0].branch(), Some("z9hG4bKlb1"));
        assert_eq!(vias[0].host_text, "lb.example.com");
        assert_eq!(vias[0].port, Some(5060));
        assert_eq!(ack.from_tag(), Some("1928301774"));
        assert_eq!(ack.to_tag(), Some("bob1"));
        assert_eq!(ack.header(HeaderName::To), busy.header(HeaderName::To));
        assert_eq!(ack.call_id(), inv.call_id());
        let cseq = ack.cseq().unwrap();
        assert_eq!((cseq.seq, cseq.method), (314159, Method::Ack));
        let routes: Vec<_> = ack.header_values(HeaderName::Route).collect();
        assert_eq!(
            routes,
            vec![
                &b"<sip:edge1.example.com;lr>"[..],
                b"<sip:edge2.example.com;lr>, <sip:edge3.example.com;lr>"
            ]
        );
        assert_eq!(ack.max_forwards(), Some(70));
        assert_eq!(ack.content_length(), Some(0));
        assert!(ack.body().is_empty());
        assert_eq!(ack.header(HeaderName::Contact), None);
    }

    #[test]
    fn folded_and_shared_via_lines_keep_the_top_hop_only() {
        let text = "INVITE sip:b@example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP [2001:db8::1]:5060 ;branch=\r\n z9hG4bKx1;rport, SIP/2.0/UDP c.example.com;branch=z9hG4bKc\r\n\
             To: <sip:b@example.com>\r\n\
             From: <sip:a@example.com>;tag=a\r\n\
             Call-ID: c1\r\n\
             CSeq: 7 INVITE\r\n\
             Content-Length: 0\r\n\r\n";
        let inv = Message::parse(text.as_bytes().to_vec()).unwrap();
        let ack = Message::parse(hop_by_hop_ack(&inv, &response(&inv, 503)).unwrap()).unwrap();
        let vias: Vec<_> = ack.vias().map(|v| v.unwrap()).collect();
        assert_eq!(vias.len(), 1);
        assert_eq!(vias[0].host_text, "[2001:db8::1]");
        assert_eq!(vias[0].branch(), Some("z9hG4bKx1"));
        assert_eq!(vias[0].rport(), Some(None));
        assert_eq!(ack.header_values(HeaderName::Route).count(), 0);
    }
}
