//! The entity table of one kind on one shard: states in a dense slab, found
//! through an open-addressing index from key to slot.
//!
//! Memory per entity beyond its state: the key in the slab (8 B) and one index
//! entry (a `u64` key and `u32` slot in a SwissTable bucket, 16 B, at a load
//! factor between 7/16 and 7/8), so 26–45 B. No allocation per entity beyond
//! amortised growth of the two vectors and the index.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::entity::mix64;

/// Hashes `u64` keys with [`mix64`]: one multiply chain, good high and low bits
/// (SwissTable uses both), no per-map random state. A `(KindId, u64)` pair
/// (see `migrate`) hashes as its kind folded into its key, then one mix.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix64(self.0 ^ b as u64);
        }
    }

    #[inline]
    fn write_u16(&mut self, kind: u16) {
        self.0 = kind as u64;
    }

    #[inline]
    fn write_u64(&mut self, key: u64) {
        // A lone key (state 0) hashes to `mix64(key)`.
        self.0 = mix64(key ^ self.0.rotate_left(48));
    }
}

/// A `HashMap` keyed by entity keys.
pub type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

/// Slot of an entity in its table. Valid until the next removal from the table.
pub type Slot = usize;

/// Entities of one kind on one shard.
pub struct Table<E> {
    /// Invariant: `states.len() == keys.len()`, and `index[keys[i]] == i` for
    /// every slot `i`.
    states: Vec<E>,
    keys: Vec<u64>,
    index: KeyMap<u32>,
}

impl<E> Default for Table<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> Table<E> {
    /// An empty table; allocates nothing until the first insert.
    pub fn new() -> Self {
        Table {
            states: Vec::new(),
            keys: Vec::new(),
            index: KeyMap::default(),
        }
    }

    /// Number of live entities.
    #[inline]
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether the table holds no entity.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The slot of `key`, if it is live.
    #[inline]
    pub fn find(&self, key: u64) -> Option<Slot> {
        self.index.get(&key).map(|&s| s as usize)
    }

    /// Adds a new entity and returns its slot.
    ///
    /// # Panics
    ///
    /// If `key` is already live (a dispatch bug), or the table would exceed
    /// `u32::MAX` entities.
    #[inline]
    pub fn insert(&mut self, key: u64, state: E) -> Slot {
        let slot = self.states.len();
        assert!(slot < u32::MAX as usize, "entity table full");
        let previous = self.index.insert(key, slot as u32);
        assert!(previous.is_none(), "key {key} inserted twice");
        self.states.push(state);
        self.keys.push(key);
        slot
    }

    /// The state at `slot`.
    #[inline]
    pub fn get_mut(&mut self, slot: Slot) -> &mut E {
        &mut self.states[slot]
    }

    /// The state of `key`, if it is live.
    #[inline]
    pub fn get_by_key(&self, key: u64) -> Option<&E> {
        self.find(key).map(|s| &self.states[s])
    }

    /// The key at `slot`.
    #[inline]
    pub fn key_at(&self, slot: Slot) -> u64 {
        self.keys[slot]
    }

    /// Removes the entity at `slot` and returns its state. The last entity
    /// moves into the freed slot.
    pub fn remove(&mut self, slot: Slot) -> E {
        let key = self.keys.swap_remove(slot);
        let state = self.states.swap_remove(slot);
        let removed = self.index.remove(&key);
        debug_assert_eq!(removed, Some(slot as u32));
        if slot < self.keys.len() {
            let moved = self.keys[slot];
            *self.index.get_mut(&moved).expect("moved key is indexed") = slot as u32;
        }
        debug_assert_eq!(self.states.len(), self.keys.len());
        state
    }

    /// Live keys, in slot order.
    pub fn keys(&self) -> &[u64] {
        &self.keys
    }

    /// Bytes this table uses beyond the entities' states: keys, index, and the
    /// unused tail of the state slab.
    pub fn overhead_bytes(&self) -> usize {
        let index = self.index.capacity() * (16 + 1);
        let keys = self.keys.capacity() * 8;
        let slack = (self.states.capacity() - self.states.len()) * std::mem::size_of::<E>();
        index + keys + slack
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn insert_find_remove() {
        let mut t = Table::new();
        let a = t.insert(10, "a");
        let b = t.insert(20, "b");
        t.insert(30, "c");
        assert_eq!(t.find(20), Some(b));
        assert_eq!(t.remove(a), "a");
        // "c" moved into slot 0.
        assert_eq!(t.find(30), Some(0));
        assert_eq!(*t.get_mut(0), "c");
        assert_eq!(t.find(10), None);
        assert_eq!(t.len(), 2);
    }

    #[test]
    #[should_panic(expected = "inserted twice")]
    fn double_insert_panics() {
        let mut t = Table::new();
        t.insert(1, ());
        t.insert(1, ());
    }

    proptest! {
        /// The table agrees with a std map under any sequence of inserts and removes.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((any::<bool>(), 0u64..64), 0..400)) {
            let mut t = Table::new();
            let mut model = std::collections::BTreeMap::new();
            for (insert, key) in ops {
                if insert {
                    if let std::collections::btree_map::Entry::Vacant(v) = model.entry(key) {
                        v.insert(key * 3);
                        t.insert(key, key * 3);
                    }
                } else if let Some(slot) = t.find(key) {
                    prop_assert_eq!(t.remove(slot), model.remove(&key).unwrap());
                } else {
                    prop_assert!(!model.contains_key(&key));
                }
            }
            prop_assert_eq!(t.len(), model.len());
            for (k, v) in model {
                prop_assert_eq!(t.get_by_key(k), Some(&v));
            }
        }
    }
}
