//! Strings a call keeps for hours and reads rarely (to send its own BYE, to match a
//! dialog's tag), in one allocation: every call up pays for one, not one per string.

/// `SPLITS + 1` strings, stored one after the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Strings<const SPLITS: usize> {
    text: Box<str>,
    /// Where each string but the last ends (the last ends with `text`).
    splits: [u32; SPLITS],
}

/// A field and a URI: the caller's From and Contact, say.
pub(crate) type Pair = Strings<1>;

impl<const SPLITS: usize> Default for Strings<SPLITS> {
    fn default() -> Self {
        Strings {
            text: Box::default(),
            splits: [0; SPLITS],
        }
    }
}

impl<const SPLITS: usize> Strings<SPLITS> {
    /// `SPLITS + 1` strings (any more are joined to the last, any fewer read empty).
    pub(crate) fn new(parts: &[&str]) -> Strings<SPLITS> {
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut splits = [0; SPLITS];
        let mut parts = parts.iter();
        for split in &mut splits {
            text.push_str(parts.next().copied().unwrap_or_default());
            // All come from one message, far below 4 GiB (`max_message_size`).
            *split = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        for rest in parts {
            text.push_str(rest);
        }
        Strings {
            text: text.into_boxed_str(),
            splits,
        }
    }

    /// String `i` (empty past the last).
    pub(crate) fn get(&self, i: usize) -> &str {
        let at = |e: u32| usize::try_from(e).unwrap_or(usize::MAX);
        let start = match i.checked_sub(1) {
            Some(before) => self.splits.get(before).copied().map_or(usize::MAX, at),
            None => 0,
        };
        let end = match self.splits.get(i) {
            Some(&e) => at(e),
            None if i == SPLITS => self.text.len(),
            None => 0,
        };
        self.text.get(start..end).unwrap_or_default()
    }

    pub(crate) fn first(&self) -> &str {
        self.get(0)
    }

    pub(crate) fn second(&self) -> &str {
        self.get(1)
    }
}

#[cfg(test)]
mod tests {
    use super::{Pair, Strings};

    #[test]
    fn each_reads_back() {
        let p = Pair::new(&["<sip:a@b>;tag=1", "sip:a@10.0.0.1"]);
        assert_eq!(
            (p.first(), p.second()),
            ("<sip:a@b>;tag=1", "sip:a@10.0.0.1")
        );
        let empty = Pair::default();
        assert_eq!((empty.first(), empty.second()), ("", ""));
        let one = Pair::new(&["", "x"]);
        assert_eq!((one.first(), one.second()), ("", "x"));
        let three = Strings::<2>::new(&["t", "", "uri"]);
        assert_eq!((three.get(0), three.get(1), three.get(2)), ("t", "", "uri"));
        assert_eq!(three.get(3), "", "past the last");
        assert_eq!(Strings::<2>::default().get(2), "");
        assert_eq!(Strings::<2>::new(&["a"]).get(0), "a", "fewer read empty");
        let more = Strings::<1>::new(&["a", "b", "c"]);
        assert_eq!((more.first(), more.second()), ("a", "bc"));
    }
}
