//! Entries by small, generation-checked ids.
//!
//! Calls and transactions live here and refer to each other (and sit in the timer
//! agenda) by [`Id`], eight bytes that are cheap to copy, instead of by their string
//! keys. A removed entry's slot is reused with a new generation, so a stale id (a
//! timer of a call that ended) finds nothing rather than its successor. Values are
//! boxed: an empty slot costs a pointer, so the table a burst left behind stays small.

/// Names one entry of one [`Slab`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Id {
    index: u32,
    generation: u32,
}

impl Id {
    /// Its slot's place in the slab, for tables kept beside it.
    pub(crate) fn index(self) -> u32 {
        self.index
    }
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<Box<T>>,
}

#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
    /// The generation new slots start at: above that of every slot given back by
    /// [`Slab::shrink`], so no id of an entry that lived there matches again.
    floor: u32,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            floor: 0,
        }
    }
}

impl<T> Slab<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn insert(&mut self, value: T) -> Id {
        self.len += 1;
        if let Some(index) = self.free.pop()
            && let Some(slot) = self.slots.get_mut(index as usize)
        {
            slot.value = Some(Box::new(value));
            return Id {
                index,
                generation: slot.generation,
            };
        }
        let index = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        let generation = self.floor;
        self.slots.push(Slot {
            generation,
            value: Some(Box::new(value)),
        });
        Id { index, generation }
    }

    pub(crate) fn get(&self, id: Id) -> Option<&T> {
        self.slots
            .get(id.index as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.value.as_deref())
    }

    pub(crate) fn get_mut(&mut self, id: Id) -> Option<&mut T> {
        self.slots
            .get_mut(id.index as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.value.as_deref_mut())
    }

    pub(crate) fn remove(&mut self, id: Id) -> Option<T> {
        let slot = self
            .slots
            .get_mut(id.index as usize)
            .filter(|s| s.generation == id.generation)?;
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        self.len -= 1;
        Some(*value)
    }

    /// The id of what slot `index` holds now, if anything.
    pub(crate) fn id_at(&self, index: u32) -> Option<Id> {
        let slot = self.slots.get(index as usize)?;
        slot.value.as_ref()?;
        Some(Id {
            index,
            generation: slot.generation,
        })
    }

    /// Slots, occupied or not (one past the highest index in use).
    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (Id, &T)> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            let value = s.value.as_deref()?;
            let id = Id {
                index: u32::try_from(i).ok()?,
                generation: s.generation,
            };
            Some((id, value))
        })
    }

    /// Gives back the memory of empty slots at the end, after a burst.
    pub(crate) fn shrink(&mut self) {
        while let Some(slot) = self.slots.pop_if(|s| s.value.is_none()) {
            self.floor = self.floor.max(slot.generation);
        }
        let len = self.slots.len();
        self.free.retain(|&i| (i as usize) < len);
        if let Some(room) = shrunk_room(self.slots.len(), self.slots.capacity()) {
            self.slots.shrink_to(room);
            self.free.shrink_to(self.free.len() * 2);
        }
    }
}

/// The room a table of `len` entries in `capacity` shrinks to after a burst, if it
/// should: once less than a quarter full, to twice what it holds, so that it can
/// double again without growing (tables never shrink by themselves). Every table of
/// the core follows this rule, in housekeeping.
pub(crate) fn shrunk_room(len: usize, capacity: usize) -> Option<usize> {
    (capacity > 64 && len < capacity / 4).then_some(len * 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_shrinks_to_twice_its_entries_once_under_a_quarter_full() {
        assert_eq!(super::shrunk_room(10, 100), Some(20));
        assert_eq!(super::shrunk_room(25, 100), None);
        assert_eq!(
            super::shrunk_room(0, 64),
            None,
            "small tables keep their room"
        );
        assert_eq!(super::shrunk_room(0, 65), Some(0));
    }

    #[test]
    fn stale_ids_find_nothing() {
        let mut slab = Slab::default();
        let a = slab.insert("a");
        let b = slab.insert("b");
        assert_eq!(slab.remove(a), Some("a"));
        assert_eq!(slab.get(a), None);
        let c = slab.insert("c");
        assert_eq!(slab.get(a), None, "the reused slot has a new generation");
        assert_eq!(slab.get(c), Some(&"c"));
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.len(), 2);
        assert_eq!(slab.iter().map(|(_, v)| *v).collect::<Vec<_>>(), ["c", "b"]);
        slab.remove(b);
        slab.remove(c);
        assert!(slab.is_empty());
        slab.shrink();
        assert_eq!(slab.iter().count(), 0);
        let d = slab.insert("d");
        assert_eq!(slab.get(d), Some(&"d"));
        for stale in [a, b, c] {
            assert_eq!(slab.get(stale), None, "a slot given back and made again");
        }
    }
}
