//! Responses that siplb generates itself (100 Trying, 400, 483, 405, 200 to OPTIONS,
//! the configured "full" reply...), built from the request per RFC 3261 section 8.2.6.

use bytes::{BufMut, Bytes, BytesMut};

use crate::header_name::HeaderName;
use crate::message::Message;

/// Builds a response to `request`: the Via, From, To, Call-ID and CSeq fields are
/// copied as received (so a folded or compact field stays byte-identical), a To tag is
/// added when `to_tag` is given and the To has none, then `extra` fields follow and
/// the response ends with an empty body.
pub fn build_response(
    request: &Message,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&str, &str)],
) -> Bytes {
    build_response_with_top_via(request, code, reason, to_tag, extra, None)
}

/// [`build_response`], with the top Via hop replaced by `top_via` when given (a server
/// that adds parameters for the request's sender, such as RFC 7339 feedback). The
/// other hops of that field are copied as received.
pub fn build_response_with_top_via(
    request: &Message,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&str, &str)],
    top_via: Option<&str>,
) -> Bytes {
    let replaced = top_via.and_then(|text| {
        let (field, span) = request.list_spans(HeaderName::Via).next()?.ok()?;
        Some((field, span, text))
    });
    let src = request.as_bytes();
    let mut out = BytesMut::with_capacity(256 + src.len() / 2);
    out.put_slice(b"SIP/2.0 ");
    out.put_slice(code.to_string().as_bytes());
    out.put_u8(b' ');
    out.put_slice(reason.as_bytes());
    out.put_slice(b"\r\n");
    let copied = [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ];
    for (i, h) in request
        .headers
        .iter()
        .enumerate()
        .filter(|(_, h)| copied.contains(&h.name))
    {
        if let Some((field, span, text)) = replaced
            && field == i
        {
            out.put_slice(&src[h.line.start as usize..span.start as usize]);
            out.put_slice(text.as_bytes());
            out.put_slice(&src[span.end as usize..h.line.end as usize]);
        } else if h.name == HeaderName::To
            && let Some(tag) = to_tag
            && request.to_tag().is_none()
        {
            out.put_slice(&src[h.line.start as usize..h.value.end as usize]);
            out.put_slice(b";tag=");
            out.put_slice(tag.as_bytes());
            out.put_slice(b"\r\n");
        } else {
            out.put_slice(&src[h.line.range()]);
        }
    }
    for (name, value) in extra {
        out.put_slice(name.as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"Content-Length: 0\r\n\r\n");
    out.freeze()
}
