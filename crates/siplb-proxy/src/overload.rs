//! RFC 7339 overload control, client side: siplb announces support in the Via of
//! what it sends, and reads a destination's feedback from that Via in its responses.

use siplb_balance::OverloadFeedback;
use siplb_sip::Message;

/// Appended to siplb's own Via: support for overload control with the loss algorithm.
pub(crate) const VIA_PARAMS: &str = ";oc;oc-algo=\"loss\"";

/// `oc-validity` when the destination leaves it out (RFC 7339 section 5.2).
const DEFAULT_VALIDITY_MS: u64 = 500;

/// The longest validity honoured: feedback is meant to be refreshed by the traffic.
const MAX_VALIDITY_MS: u64 = 86_400_000;

/// The feedback in a response's top Via (siplb's own), if it carries an `oc` value
/// for the loss algorithm. Anything malformed is no feedback.
pub(crate) fn feedback(response: &Message) -> Option<OverloadFeedback> {
    // The top Via is parsed at validation already; most responses carry no `oc` value,
    // which one vectorised scan for `=` tells before any parameter is parsed.
    let via = response.top_via().ok()?;
    if !has_oc_value(via.params.as_str().as_bytes()) {
        return None;
    }
    // The destination adds its values to the Via siplb sent, which already holds `oc`
    // and `oc-algo` without them: the last of each name is the destination's.
    let last = |name: &str| {
        via.params
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .last()
            .map(|(_, v)| v)
    };
    let percent = last("oc")??.trim().parse::<u8>().ok()?;
    if let Some(algo) = last("oc-algo") {
        let algo = algo?.trim_matches('"');
        if !algo.eq_ignore_ascii_case("loss") {
            return None;
        }
    }
    let validity_ms = match last("oc-validity") {
        None => DEFAULT_VALIDITY_MS,
        Some(v) => v?.trim().parse::<u64>().ok()?.min(MAX_VALIDITY_MS),
    };
    let seq = match last("oc-seq") {
        None => None,
        Some(v) => Some(v?.trim().parse::<f64>().ok().filter(|s| s.is_finite())?),
    };
    Some(OverloadFeedback {
        percent: percent.min(100),
        validity_ms,
        seq,
    })
}

/// True when some `name=` in `params` is `oc=` (case-insensitive, spaces allowed
/// before the `=`).
fn has_oc_value(params: &[u8]) -> bool {
    memchr::memchr_iter(b'=', params).any(|at| {
        let name = params[..at].trim_ascii_end();
        name.len() >= 3
            && name[name.len() - 2..].eq_ignore_ascii_case(b"oc")
            && matches!(name[name.len() - 3], b';' | b' ' | b'\t')
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;

    use super::*;

    fn response(via_params: &str) -> Message {
        let text = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx;rport=5060{via_params}\r\nVia: SIP/2.0/UDP 127.0.0.100:5060;branch=z9hG4bKc;oc=90\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        Message::parse(Bytes::from(text)).unwrap()
    }

    #[test]
    fn the_scan_finds_only_an_oc_with_a_value() {
        for yes in [";oc=5", ";branch=x;OC=5", ";rport=1;oc =5", "; oc=5"] {
            assert!(has_oc_value(yes.as_bytes()), "{yes}");
        }
        for no in [
            ";oc",
            ";branch=x;oc;oc-algo=\"loss\"",
            ";doc=5",
            "oc=5",
            ";xoc=1",
        ] {
            assert!(!has_oc_value(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn feedback_is_read_from_the_top_via_only() {
        assert_eq!(feedback(&response(";oc")), None, "support, no feedback");
        assert_eq!(
            feedback(&response("")),
            None,
            "another hop's oc is not ours"
        );
        assert_eq!(
            feedback(&response(
                ";oc=50;oc-algo=\"loss\";oc-validity=1000;oc-seq=1282321615.782"
            )),
            Some(OverloadFeedback {
                percent: 50,
                validity_ms: 1000,
                seq: Some(1_282_321_615.782),
            })
        );
        assert_eq!(
            feedback(&response(";oc=20")),
            Some(OverloadFeedback {
                percent: 20,
                validity_ms: 500,
                seq: None,
            }),
            "validity defaults to 500 ms"
        );
        assert_eq!(
            feedback(&response(";oc=20;oc-validity=0"))
                .unwrap()
                .validity_ms,
            0
        );
        assert_eq!(feedback(&response(";oc=200")).unwrap().percent, 100);
        for bad in [
            ";oc=x",
            ";oc=-5",
            ";oc=20;oc-algo=\"rate\"",
            ";oc=20;oc-seq=now",
            ";oc=20;oc-validity=soon",
        ] {
            assert_eq!(feedback(&response(bad)), None, "{bad}");
        }
    }
}
