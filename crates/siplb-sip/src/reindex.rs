//! The index of an edited message, carried over from its original's instead of found
//! by parsing the result again.
//!
//! A relayed request is edited (Max-Forwards, Route, Record-Route, Via) and then read
//! again by its client transaction; parsing it afresh and validating it again cost a
//! quarter of all the parsing a call needs. Yet the original was validated, and every
//! edit says what it changed: a field outside the spliced bytes only moves by the
//! lengths spliced before it, a removed line takes its field away, an inserted field is
//! known from what was inserted.
//!
//! Only edits whose effect on the index is that plain are taken. Anything else (a bare
//! LF in the original, a splice across a field's name or several lines, a changed
//! From, To, CSeq, Call-ID or existing Via, an inserted field with odd spacing, a value
//! left empty or ending in whitespace, a limit reached) gives `None`, and the caller
//! parses the result in full. A property test (`tests/properties.rs`) holds the two
//! equal.

use bytes::Bytes;

use crate::edit::Splice;
use crate::framing::{Limits, declared_length};
use crate::header_name::HeaderName;
use crate::message::{HeaderField, Message, NO_FIELD, SINGLE, Span, StartLine, parse_start_line};
use crate::text::{is_lws, is_token_bytes, list_elements, parse_u32, trim_bytes};
use crate::via::Via;

/// The edited message `out`, written from `msg` by `splices` (sorted, not
/// overlapping, their texts in `arena`), indexed without parsing it; `None` where
/// only a full parse can tell.
pub(crate) fn reindex(
    msg: &Message,
    splices: &[Splice],
    arena: &[u8],
    out: Bytes,
    limits: &Limits,
) -> Option<Message> {
    let known = msg.known?;
    msg.top_via?;
    if msg.bare_lf || out.len() > limits.max_message_size {
        return None;
    }
    let head_len = msg.body.start as usize;
    let head_end = msg.head_end as usize;
    let start_line_end = msg.start_line.end as usize;
    let mut start_edited = false;
    for s in splices {
        let text = &arena[s.text.clone()];
        if s.at.start >= head_len {
            continue; // the body
        }
        if s.field.is_some() {
            // An inserted field goes where a line starts.
            let at = s.at.start;
            let line_start = at == start_line_end
                || at == head_end
                || msg.headers.iter().any(|h| h.line.start as usize == at);
            if !s.at.is_empty() || !line_start {
                return None;
            }
            continue;
        }
        if text.contains(&b'\n') || text.contains(&b'\r') {
            return None;
        }
        if s.at.end <= start_line_end && !(s.at.is_empty() && s.at.start == start_line_end) {
            start_edited = true;
            continue;
        }
        let h = msg
            .headers
            .iter()
            .find(|h| (h.line.start as usize) <= s.at.start && s.at.start < h.line.end as usize)?;
        if !may_change(h.name) {
            return None;
        }
        let removed = s.at == h.line.range() && text.is_empty();
        let within_value = h.value.start as usize <= s.at.start
            && s.at.end <= h.value.end as usize
            && !(s.at.is_empty()
                && (s.at.start == h.value.start as usize || s.at.start == h.value.end as usize));
        if !removed && !within_value {
            return None;
        }
    }

    let mut headers: Vec<HeaderField> = Vec::with_capacity(msg.headers.len() + 4);
    // Where the inserted Via fields land in `headers` (siplb pushes one), and where
    // the parts of a hop the proxy wrote itself lie.
    let mut vias_inserted = [(0usize, None); 4];
    let mut n_vias_inserted = 0;
    let mut inserted = splices
        .iter()
        .enumerate()
        .filter(|(_, s)| s.field.is_some() && s.at.start < head_len)
        .peekable();
    let mut push_inserted = |headers: &mut Vec<HeaderField>, i: usize, s: &Splice| -> Option<()> {
        let field = s.field?;
        let text = &arena[s.text.clone()];
        let name = text.get(..field.name_len)?;
        let value = text.get(field.name_len + 2..text.len().checked_sub(2)?)?;
        let spaced =
            value.first().is_some_and(|&b| is_lws(b)) || value.last().is_some_and(|&b| is_lws(b));
        if !is_token_bytes(name) || value.contains(&b'\n') || value.contains(&b'\r') || spaced {
            return None;
        }
        if field.name == HeaderName::Via {
            *vias_inserted.get_mut(n_vias_inserted)? = (headers.len(), field.own_via);
            n_vias_inserted += 1;
        }
        // Where the text lands: its place in the original, moved by every splice
        // written before it (splices at one spot come out in the order they were made).
        let at = splices[..i]
            .iter()
            .fold(s.at.start as isize, |at, p| at + delta(p));
        let at = usize::try_from(at).ok()?;
        let value_start = at + field.name_len + 2;
        headers.push(HeaderField {
            name: field.name,
            name_span: Span::new(at, at + field.name_len),
            value: Span::new(value_start, value_start + value.len()),
            line: Span::new(at, at + text.len()),
        });
        Some(())
    };
    // The splices that end before a field's line moves every offset of it, and of
    // every later field, by their sum: swept once, not summed again per offset.
    let (mut passed, mut shift) = (0, 0isize);
    for h in &msg.headers {
        while let Some(&(i, s)) = inserted.peek() {
            if s.at.start > h.line.start as usize {
                break;
            }
            push_inserted(&mut headers, i, s)?;
            inserted.next();
        }
        while let Some(s) = splices.get(passed)
            && s.at.end <= h.line.start as usize
        {
            shift += delta(s);
            passed += 1;
        }
        let ahead = &splices[passed..];
        let removed = ahead
            .iter()
            .any(|s| s.at == h.line.range() && s.text.is_empty() && s.field.is_none());
        if removed {
            continue;
        }
        let value = moved_by(ahead, shift, h.value)?;
        if value.start == value.end && h.value.start != h.value.end {
            return None;
        }
        headers.push(HeaderField {
            name: h.name,
            name_span: moved_by(ahead, shift, h.name_span)?,
            value,
            line: moved_by(ahead, shift, h.line)?,
        });
    }
    for (i, s) in inserted {
        push_inserted(&mut headers, i, s)?;
    }
    if headers.len() > limits.max_headers || headers.len() >= usize::from(NO_FIELD) {
        return None;
    }
    let max_line = u32::try_from(limits.max_line_len).ok()?;
    let mut first = [NO_FIELD; HeaderName::COUNT];
    let mut counts = [0u8; HeaderName::COUNT];
    for (i, h) in headers.iter().enumerate() {
        if h.line.end - h.line.start > max_line {
            return None;
        }
        if h.name != HeaderName::Other {
            let n = h.name as usize;
            if first[n] == NO_FIELD {
                first[n] = u16::try_from(i).ok()?;
            }
            counts[n] = counts[n].saturating_add(1);
        }
        // Validation's check on a value an edit may change or add.
        if h.name == HeaderName::MaxForwards
            && parse_u32(trim_bytes(&out[h.value.range()])).is_none_or(|n| n > 255)
        {
            return None;
        }
    }
    if SINGLE.iter().any(|&n| counts[n as usize] > 1) {
        return None;
    }

    let new_start_line = moved(splices, msg.start_line)?;
    let start = if start_edited {
        if new_start_line.end - new_start_line.start > max_line {
            return None;
        }
        let end = (new_start_line.end as usize).checked_sub(2)?;
        let start = parse_start_line(&out, 0, end).ok()?;
        // Validation matched the method with CSeq's; an edit may change the URI only.
        fn method(line: StartLine, buf: &[u8]) -> Option<&[u8]> {
            match line {
                StartLine::Request { method, .. } => buf.get(method.range()),
                StartLine::Response { .. } => None,
            }
        }
        if method(start, &out) != method(msg.start, msg.as_bytes()) {
            return None;
        }
        start
    } else {
        msg.start
    };
    let new_head_end = map(splices, head_end, false)?;
    let new_head_len = new_head_end + (head_len - head_end);
    let body_len = out.len().checked_sub(new_head_len)?;
    match declared_length(&out, &headers) {
        Some(Ok(n)) if n == body_len => {}
        None => {}
        Some(_) => return None,
    }
    let text = crate::message::head_text(&out, new_head_end);
    let mut edited = Message {
        buf: out,
        start,
        start_line: new_start_line,
        headers,
        first,
        head_end: u32::try_from(new_head_end).ok()?,
        body: Span::new(new_head_len, new_head_len + body_len),
        top_via: None,
        known: None,
        bare_lf: false,
        text,
    };
    // The hops of an inserted Via must parse, as validation would ask; when one is
    // now the top hop, it is kept parsed, as validation keeps it. Otherwise the top hop
    // is the original's, moved.
    let top_field = usize::from(first[HeaderName::Via as usize]);
    let mut hops_added = 0;
    for &(field, own) in &vias_inserted[..n_vias_inserted] {
        let value = edited.headers.get(field)?.value;
        if let Some(own) = own {
            if field == top_field && hops_added == 0 {
                edited.top_via = Some(own.top_via(value.start as usize));
            }
            hops_added += 1;
            continue;
        }
        for element in list_elements(&edited.buf[value.range()]) {
            let (a, b) = element.ok()?;
            let hop = trim_bytes(&edited.buf[value.start as usize + a..value.start as usize + b]);
            let via = Via::parse(std::str::from_utf8(hop).ok()?).ok()?;
            if field == top_field && hops_added == 0 {
                edited.top_via = Some(edited.to_cached(&via)?);
            }
            hops_added += 1;
        }
    }
    if edited.top_via.is_none() {
        edited.top_via = Some(msg.top_via?.moved(|s| moved(splices, s))?);
    }
    edited.known = Some(known.moved(|s| moved(splices, s), hops_added)?);
    Some(edited)
}

/// Fields whose change validation does not look at, or looks at here (Max-Forwards,
/// Content-Length); a change to the others asks for a full parse.
fn may_change(name: HeaderName) -> bool {
    !matches!(
        name,
        HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CSeq | HeaderName::CallId
    )
}

fn delta(s: &Splice) -> isize {
    s.text.len() as isize - s.at.len() as isize
}

/// Where offset `p` of the original lies in the edited message; `end` when `p` ends a
/// span (text inserted exactly there then lies after it, not before). `None` when `p`
/// falls inside replaced bytes.
fn map(splices: &[Splice], p: usize, end: bool) -> Option<usize> {
    map_by(splices, 0, p, end)
}

/// [`map`] over the splices from some point on, `shift` being the sum of the deltas
/// of those before it, every one of which ends at or before `p`.
fn map_by(splices: &[Splice], shift: isize, p: usize, end: bool) -> Option<usize> {
    let mut q = p as isize + shift;
    for s in splices {
        if s.at.start > p {
            break;
        }
        if s.at.start < p && p < s.at.end {
            return None;
        }
        let before = if end { s.at.start < p } else { s.at.end <= p };
        if before {
            q += delta(s);
        }
    }
    usize::try_from(q).ok()
}

/// A span of the original, where it lies in the edited message (an empty span at 0,
/// which the index uses for "empty", stays so).
fn moved(splices: &[Splice], span: Span) -> Option<Span> {
    moved_by(splices, 0, span)
}

/// [`moved`] with [`map_by`]'s `splices` and `shift`.
fn moved_by(splices: &[Splice], shift: isize, span: Span) -> Option<Span> {
    if span == Span::default() {
        return Some(span);
    }
    let start = map_by(splices, shift, span.start as usize, false)?;
    let end = map_by(splices, shift, span.end as usize, true)?;
    (start <= end).then(|| Span::new(start, end))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// No edit of the editor's changes a method, but one that did would leave it
    /// unlike CSeq's, which a parse refuses: so must the carried index.
    #[test]
    fn a_changed_method_asks_for_a_full_parse() {
        let text = "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
                    From: <sip:x@y>;tag=f1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\n\
                    CSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n";
        let msg = Message::parse(text).unwrap();
        let limits = Limits::default();
        let edit = |at: std::ops::Range<usize>, with: &str| {
            let splices = [Splice {
                at: at.clone(),
                text: 0..with.len(),
                field: None,
            }];
            let out = [&text[..at.start], with, &text[at.end..]].concat();
            (
                reindex(
                    &msg,
                    &splices,
                    with.as_bytes(),
                    Bytes::from(out.clone()),
                    &limits,
                ),
                Message::parse(out),
            )
        };
        let (carried, parsed) = edit(0..6, "BYE");
        assert!(carried.is_none() && parsed.is_err());
        // The Request-URI, which the editor does change, is carried over.
        let (carried, parsed) = edit(7..14, "sip:z@127.0.0.2");
        assert_eq!(carried.unwrap(), parsed.unwrap());
    }
}
