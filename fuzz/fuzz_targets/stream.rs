#![no_main]
//! A byte stream cut at fuzzer-chosen points: the decoder must frame the same
//! messages as when the stream arrives in one piece, and never panic.

use libfuzzer_sys::fuzz_target;
use siplb_sip::{Frame, Limits, StreamDecoder};

fn frames(chunks: &[&[u8]]) -> Vec<Result<Vec<u8>, String>> {
    let mut dec = StreamDecoder::new(Limits::default());
    let mut out = Vec::new();
    for chunk in chunks {
        dec.extend(chunk);
        loop {
            match dec.decode() {
                Ok(Some(Frame::Message(m))) => out.push(Ok(m.as_bytes().to_vec())),
                Ok(Some(Frame::Ping)) => out.push(Ok(Vec::new())),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|input: (u8, &[u8])| {
    let (cut, data) = input;
    let step = usize::from(cut).max(1);
    let pieces: Vec<&[u8]> = data.chunks(step).collect();
    let whole = frames(&[data]);
    let split = frames(&pieces);
    // Splitting can only delay frames, never change them.
    let n = whole.len().min(split.len());
    assert_eq!(whole[..n], split[..n]);
});
