//! Selection flags (`r`, `n`, `s`), parsed once at configuration time.

use std::fmt;
use std::str::FromStr;

/// How a selection measures and compares availability.
///
/// Parsed from the reference's flag string: `r` relative, `n` allow availability <= 0,
/// `s` random among ties. Characters may come in any order and repeat; the empty string
/// means no flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags {
    /// `r`: availability is the free fraction of capacity rather than the free slot count.
    pub relative: bool,
    /// `n`: destinations at or over capacity stay eligible (the least loaded still wins).
    pub allow_full: bool,
    /// `s`: pick uniformly among destinations tied for the best availability instead of the
    /// first in table order.
    pub random_ties: bool,
}

impl Flags {
    /// No flags: absolute availability, full destinations excluded, first in table order wins.
    pub const NONE: Self = Self {
        relative: false,
        allow_full: false,
        random_ties: false,
    };
}

/// A flag string held a character that is not `r`, `n` or `s`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown load-balancing flag {flag:?} (expected any of 'r', 'n', 's')")]
pub struct FlagsError {
    /// The offending character.
    pub flag: char,
}

impl FromStr for Flags {
    type Err = FlagsError;

    /// Unlike the reference, which ignores unknown characters, a typo here is a configuration
    /// error: a silently dropped `n` would reject priority calls.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut flags = Self::NONE;
        for flag in s.chars() {
            match flag {
                'r' => flags.relative = true,
                'n' => flags.allow_full = true,
                's' => flags.random_ties = true,
                _ => return Err(FlagsError { flag }),
            }
        }
        Ok(flags)
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (set, c) in [
            (self.relative, "r"),
            (self.allow_full, "n"),
            (self.random_ties, "s"),
        ] {
            if set {
                f.write_str(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Flags, FlagsError};

    #[test]
    fn parses_any_order_and_empty() {
        assert_eq!("".parse::<Flags>(), Ok(Flags::NONE));
        let all = Flags {
            relative: true,
            allow_full: true,
            random_ties: true,
        };
        assert_eq!("snr".parse::<Flags>(), Ok(all));
        assert_eq!("rns".parse::<Flags>(), Ok(all));
        assert_eq!(
            "nn".parse::<Flags>(),
            Ok(Flags {
                allow_full: true,
                ..Flags::NONE
            })
        );
        assert_eq!(all.to_string(), "rns");
    }

    #[test]
    fn rejects_unknown_char_by_name() {
        let err = "rx".parse::<Flags>().unwrap_err();
        assert_eq!(err, FlagsError { flag: 'x' });
        assert!(err.to_string().contains("'x'"), "{err}");
        assert_eq!("R".parse::<Flags>(), Err(FlagsError { flag: 'R' }));
    }
}
