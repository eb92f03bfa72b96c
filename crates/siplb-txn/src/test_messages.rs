//! Messages for unit tests: an INVITE as siplb forwards it, and responses built from it.

use siplb_sip::{Message, build_response};

/// A request whose top Via is `top_via`, with `to_params` appended to the To field.
pub(crate) fn request_with(method: &str, top_via: &str, to_params: &str) -> Message {
    let text = format!(
        "{method} sip:bob@biloxi.example.com SIP/2.0\r\n\
         Via: {top_via}\r\n\
         Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n\
         Route: <sip:edge1.example.com;lr>\r\n\
         Route: <sip:edge2.example.com;lr>, <sip:edge3.example.com;lr>\r\n\
         Max-Forwards: 69\r\n\
         To: Bob <sip:bob@biloxi.example.com>{to_params}\r\n\
         From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
         Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
         CSeq: 314159 {method}\r\n\
         Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(text.into_bytes()).unwrap()
}

pub(crate) const LB_VIA: &str = "SIP/2.0/UDP lb.example.com:5060;branch=z9hG4bKlb1";

pub(crate) fn invite() -> Message {
    request_with("INVITE", LB_VIA, "")
}

pub(crate) fn options() -> Message {
    request_with("OPTIONS", LB_VIA, "")
}

/// A response to `request` as the next hop would send it, with To tag `bob1` on
/// anything but 100.
pub(crate) fn response(request: &Message, code: u16) -> Message {
    let tag = (code != 100).then_some("bob1");
    Message::parse(build_response(request, code, "Reason", tag, &[])).unwrap()
}
