//! Two strings a call keeps for hours and reads rarely (to send its own BYE), in one
//! allocation: every call up pays for one, not two.

/// Two strings, stored one after the other.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pair {
    text: Box<str>,
    /// Where the second string starts.
    split: u32,
}

impl Pair {
    pub(crate) fn new(first: &str, second: &str) -> Pair {
        let mut text = String::with_capacity(first.len() + second.len());
        text.push_str(first);
        text.push_str(second);
        Pair {
            text: text.into_boxed_str(),
            // Both come from one message, far below 4 GiB (`max_message_size`).
            split: u32::try_from(first.len()).unwrap_or(u32::MAX),
        }
    }

    fn split(&self) -> usize {
        usize::try_from(self.split).unwrap_or(usize::MAX)
    }

    pub(crate) fn first(&self) -> &str {
        self.text.get(..self.split()).unwrap_or_default()
    }

    pub(crate) fn second(&self) -> &str {
        self.text.get(self.split()..).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::Pair;

    #[test]
    fn both_read_back() {
        let p = Pair::new("<sip:a@b>;tag=1", "sip:a@10.0.0.1");
        assert_eq!(
            (p.first(), p.second()),
            ("<sip:a@b>;tag=1", "sip:a@10.0.0.1")
        );
        let empty = Pair::default();
        assert_eq!((empty.first(), empty.second()), ("", ""));
        let one = Pair::new("", "x");
        assert_eq!((one.first(), one.second()), ("", "x"));
    }
}
