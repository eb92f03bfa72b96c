//! A small-buffer vector, so that the per-call path does not touch the heap for the usual
//! handful of resources, tied destinations or failover attempts.

/// Keeps up to `N` items inline and moves them all to a `Vec` once more arrive, so the items
/// always form one slice.
#[derive(Clone, Debug)]
pub(crate) enum InlineVec<T: Copy + Default, const N: usize> {
    Inline { len: usize, items: [T; N] },
    Heap(Vec<T>),
}

impl<T: Copy + Default, const N: usize> InlineVec<T, N> {
    pub(crate) fn new() -> Self {
        Self::Inline {
            len: 0,
            items: [T::default(); N],
        }
    }

    pub(crate) fn push(&mut self, item: T) {
        match self {
            Self::Inline { len, items } if *len < N => {
                items[*len] = item;
                *len += 1;
            }
            Self::Inline { items, .. } => {
                let mut spilled = Vec::with_capacity(N * 2);
                spilled.extend_from_slice(items);
                spilled.push(item);
                *self = Self::Heap(spilled);
            }
            Self::Heap(spilled) => spilled.push(item),
        }
    }

    pub(crate) fn clear(&mut self) {
        match self {
            Self::Inline { len, .. } => *len = 0,
            Self::Heap(spilled) => spilled.clear(),
        }
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        match self {
            Self::Inline { len, items } => &items[..*len],
            Self::Heap(spilled) => spilled,
        }
    }
}

impl<T: Copy + Default, const N: usize> Default for InlineVec<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::InlineVec;

    #[test]
    fn spills_to_heap_and_keeps_order() {
        let mut v: InlineVec<u32, 2> = InlineVec::new();
        for i in 0..5 {
            v.push(i);
        }
        assert_eq!(v.as_slice(), &[0, 1, 2, 3, 4]);
        assert!(matches!(v, InlineVec::Heap(_)));
        v.clear();
        assert!(v.as_slice().is_empty());
        v.push(7);
        assert_eq!(v.as_slice(), &[7]);
    }

    #[test]
    fn stays_inline_up_to_capacity() {
        let mut v: InlineVec<u8, 4> = InlineVec::default();
        for i in 0..4 {
            v.push(i);
        }
        assert!(matches!(v, InlineVec::Inline { len: 4, .. }));
        assert_eq!(v.as_slice(), &[0, 1, 2, 3]);
    }
}
