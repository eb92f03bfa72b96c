//! A hash table of slab ids whose keys live in the entries the ids name: a row is the
//! id alone (8 bytes, where a map from key to id kept a second copy of the key, its
//! strings on the heap), and a lookup compares the probe it is given against the
//! entry's own key, so it copies nothing. The calls' index and the transactions' two
//! tables are such tables.

use crate::slab::Id;

#[derive(Debug, Default)]
pub(crate) struct IdTable {
    ids: hashbrown::HashTable<Id>,
}

impl IdTable {
    /// The id whose entry `is` accepts, among those filed under `hash`. The table
    /// only narrows the search by the hash: `is` compares the whole key, hash
    /// included (the keys carry theirs).
    pub(crate) fn find(&self, hash: u64, mut is: impl FnMut(Id) -> bool) -> Option<Id> {
        self.ids.find(hash, |&id| is(id)).copied()
    }

    /// Adds `id`, whose entry's key hashes to `hash`; `hash_of` gives the hash of any
    /// id already in the table, when it grows.
    pub(crate) fn insert(&mut self, hash: u64, id: Id, hash_of: impl Fn(Id) -> u64) {
        self.ids.insert_unique(hash, id, |&i| hash_of(i));
    }

    /// Takes `id` out; `hash` is its entry's.
    pub(crate) fn remove(&mut self, hash: u64, id: Id) {
        if let Ok(entry) = self.ids.find_entry(hash, |&i| i == id) {
            entry.remove();
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Gives back the room a burst left empty (`slab::shrunk_room`).
    pub(crate) fn shrink(&mut self, hash_of: impl Fn(Id) -> u64) {
        if let Some(room) = crate::slab::shrunk_room(self.ids.len(), self.ids.capacity()) {
            self.ids.shrink_to(room, |&i| hash_of(i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IdTable;
    use crate::slab::Slab;

    /// Entries found by their own keys, a colliding hash told apart by the entry,
    /// and nothing left behind by removal or a shrink.
    #[test]
    fn finds_ids_by_the_keys_their_entries_hold() {
        let mut names: Slab<(u64, String)> = Slab::default();
        let mut table = IdTable::default();
        let hash_of = |names: &Slab<(u64, String)>, id| names.get(id).map_or(0, |e| e.0);
        let mut ids = Vec::new();
        for i in 0..200u64 {
            // Every other pair shares a hash, as a collision would.
            let entry = (i / 2, format!("name{i}"));
            let id = names.insert(entry);
            table.insert(i / 2, id, |i| hash_of(&names, i));
            ids.push(id);
        }
        let find = |table: &IdTable, names: &Slab<(u64, String)>, hash: u64, name: &str| {
            table.find(hash, |id| {
                names.get(id).is_some_and(|e| e.0 == hash && e.1 == name)
            })
        };
        assert_eq!(find(&table, &names, 21, "name43"), Some(ids[43]));
        assert_eq!(find(&table, &names, 21, "name42"), Some(ids[42]));
        assert_eq!(find(&table, &names, 22, "name43"), None);
        for (i, &id) in ids.iter().enumerate().skip(4) {
            table.remove(i as u64 / 2, id);
            names.remove(id);
        }
        table.shrink(|i| hash_of(&names, i));
        assert_eq!(table.len(), 4);
        assert_eq!(find(&table, &names, 1, "name3"), Some(ids[3]));
        assert_eq!(find(&table, &names, 21, "name43"), None);
    }
}
