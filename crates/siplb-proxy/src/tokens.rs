//! Branches and tags nobody can predict.
//!
//! A branch that can be guessed lets an attacker forge responses to siplb's
//! requests (a 503 that disables a destination, a final that fails a call): every
//! forwarded request shows its branch, so a counter behind a fixed prefix gives the
//! next one away. Branches and tags come from a cryptographic generator (ChaCha12,
//! seeded by the operating system) instead. The simulator and tests seed a plain
//! generator so that runs replay exactly.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hash as _, Hasher as _};

use rand::Rng as _;
use rand::rngs::StdRng;
use siplb_balance::{SplitMix64, TieBreaker};

#[derive(Debug)]
pub(crate) enum Tokens {
    Secure(Box<StdRng>, RandomState),
    Seeded(SplitMix64, u64),
}

impl Tokens {
    pub(crate) fn secure() -> Tokens {
        Tokens::Secure(Box::new(rand::make_rng::<StdRng>()), RandomState::new())
    }

    pub(crate) fn seeded(seed: u64) -> Tokens {
        Tokens::Seeded(SplitMix64::new(seed), seed)
    }

    /// The To tag of a stateless reply to a request, the same for every copy of the
    /// request (its retransmissions get the same answer), and not guessable: a keyed
    /// hash of what tells the request apart.
    pub(crate) fn reply_tag(&self, request: &siplb_sip::Message) -> String {
        let branch = request
            .top_via()
            .ok()
            .and_then(|v| v.branch().map(str::to_owned))
            .unwrap_or_default();
        let parts = (
            request.call_id(),
            request.from_tag(),
            branch,
            request.cseq().map(|c| c.seq),
        );
        let hash = match self {
            Tokens::Secure(_, keys) => keys.hash_one(&parts),
            Tokens::Seeded(_, seed) => {
                let mut h = std::hash::DefaultHasher::new();
                (seed, &parts).hash(&mut h);
                h.finish()
            }
        };
        hex_token("lb", &[hash])
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        match self {
            Tokens::Secure(rng, _) => rng.next_u64(),
            Tokens::Seeded(rng, _) => rng.next_u64(),
        }
    }

    /// A branch: the RFC 3261 magic cookie and 128 random bits.
    pub(crate) fn branch(&mut self) -> String {
        let (a, b) = (self.next_u64(), self.next_u64());
        hex_token("z9hG4bK", &[a, b])
    }

    /// A To (or From) tag: 64 random bits.
    pub(crate) fn tag(&mut self) -> String {
        hex_token("lb", &[self.next_u64()])
    }
}

/// `prefix` and each word as 16 lowercase hex digits: `format!("{prefix}{w:016x}")`
/// without the formatting machinery, which cost more than the random words (a few
/// branches and tags per call). The digits are written as bytes, 16 at a time, where
/// pushing them as `char`s checked and encoded each one (docs/BENCHMARKS-HISTORY.md,
/// issue 19's thirteenth round).
fn hex_token(prefix: &str, words: &[u64]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(prefix.len() + 16 * words.len());
    out.extend_from_slice(prefix.as_bytes());
    for w in words {
        let mut digits = [0u8; 16];
        for (i, d) in digits.iter_mut().enumerate() {
            *d = DIGITS[((w >> (60 - 4 * i)) & 0xf) as usize];
        }
        out.extend_from_slice(&digits);
    }
    // A str prefix and ASCII digits: always UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

impl TieBreaker for Tokens {
    fn pick(&mut self, ties: usize) -> usize {
        let ties = u64::try_from(ties).unwrap_or(u64::MAX).max(1);
        usize::try_from(((u128::from(self.next_u64()) * u128::from(ties)) >> 64) as u64)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_are_rfc3261_and_distinct() {
        let mut t = Tokens::secure();
        let a = t.branch();
        let b = t.branch();
        assert!(a.starts_with("z9hG4bK") && a.len() == 7 + 32);
        assert_ne!(a, b);
        let mut s1 = Tokens::seeded(7);
        let mut s2 = Tokens::seeded(7);
        assert_eq!(s1.branch(), s2.branch(), "seeded runs replay");
        assert!((0..100).all(|_| t.pick(3) < 3));
    }

    #[test]
    fn hex_tokens_write_what_format_writes() {
        let mut rng = SplitMix64::new(19);
        let words: Vec<u64> = [0, 1, 0xf, 0xabc, u64::MAX, 1 << 63]
            .into_iter()
            .chain((0..200).map(|_| rng.next_u64()))
            .collect();
        for (i, &w) in words.iter().enumerate() {
            let v = words[(i + 1) % words.len()];
            assert_eq!(hex_token("lb", &[w]), format!("lb{w:016x}"));
            assert_eq!(
                hex_token("z9hG4bK", &[w, v]),
                format!("z9hG4bK{w:016x}{v:016x}")
            );
        }
    }
}
