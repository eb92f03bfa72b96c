//! Codec names offered in an SDP body (RFC 4566 `m=` and `a=rtpmap:` lines), for
//! routes that ask for a transcoding resource when the offer lacks a codec.

/// Names of RTP/AVP static payload types (RFC 3551 table 4), for offers that list a
/// static type without an rtpmap line.
fn static_payload_name(pt: u8) -> Option<&'static str> {
    Some(match pt {
        0 => "PCMU",
        3 => "GSM",
        4 => "G723",
        5 | 6 => "DVI4",
        7 => "LPC",
        8 => "PCMA",
        9 => "G722",
        10 | 11 => "L16",
        12 => "QCELP",
        13 => "CN",
        14 => "MPA",
        15 => "G728",
        16 | 17 => "DVI4",
        18 => "G729",
        _ => return None,
    })
}

/// The codec names an SDP offer lists, in the order of its payload types.
pub(crate) fn codecs(body: &[u8]) -> Vec<String> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Vec::new();
    };
    let mut payloads: Vec<u8> = Vec::new();
    let mut names: Vec<(u8, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(media) = line.strip_prefix("m=") {
            // m=<media> <port> <proto> <fmt> ...
            payloads.extend(
                media
                    .split_whitespace()
                    .skip(3)
                    .filter_map(|f| f.parse::<u8>().ok()),
            );
        } else if let Some(map) = line.strip_prefix("a=rtpmap:") {
            let mut parts = map.splitn(2, ' ');
            if let (Some(pt), Some(enc)) = (parts.next(), parts.next())
                && let Ok(pt) = pt.trim().parse::<u8>()
            {
                let name = enc.split('/').next().unwrap_or("").trim();
                names.push((pt, name.to_owned()));
            }
        }
    }
    payloads
        .iter()
        .filter_map(|&pt| {
            names
                .iter()
                .find(|(p, _)| *p == pt)
                .map(|(_, n)| n.clone())
                .or_else(|| static_payload_name(pt).map(str::to_owned))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::codecs;

    #[test]
    fn static_and_mapped_payloads() {
        let sdp = b"v=0\r\nm=audio 8000 RTP/AVP 0 8 101 96\r\na=rtpmap:101 telephone-event/8000\r\na=rtpmap:96 opus/48000/2\r\n";
        assert_eq!(codecs(sdp), ["PCMU", "PCMA", "telephone-event", "opus"]);
        assert!(codecs(b"\xff\xfe").is_empty());
        assert!(codecs(b"").is_empty());
    }
}
