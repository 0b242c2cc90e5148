//! Layer 1, data: the entity table of one kind on one shard: states in a dense slab, each
//! beside its key, found through an index from key to slot (see `index`).
//!
//! Memory per entity beyond its state: the key beside it in the slab (8 B,
//! plus padding for states whose size is not a multiple of 8) and one 8-byte
//! index entry at a load factor between 3/8 and 3/4 (11–21 B), so 19–30 B.
//! No allocation per entity beyond amortised growth of the slab and the
//! index. (A shard's tables add 12 B of heat beside each state.)
//!
//! Key and state share a slab entry so that a delivery to a live entity
//! reads the index line and one slab line, and an activation pushes one
//! entry (`versus --child percore activate`, see `index` for the figures).

mod index;

use index::{tag_of, SlotIndex};

/// Where a key that is not in a table would go, as found by the lookup that
/// missed it ([`Table::find_or_vacancy`]), so adding it right after needs no
/// second probe. Outliving a change to the table is harmless: the insert
/// then probes again.
#[derive(Clone, Copy, Debug)]
pub struct Vacancy {
    key: u64,
    at: index::Vacancy,
}

/// Slot of an entity in its table. Valid until the next removal from the table.
pub type Slot = usize;

/// An entity in the slab: its key beside its state, so a lookup that
/// confirms the key has the state's cache line in hand.
struct Resident<E> {
    key: u64,
    state: E,
}

/// Entities of one kind on one shard.
pub struct Table<E> {
    /// Invariant: `index` maps `tag_of(slab[i].key)` to `i` for every slot
    /// `i`, and holds nothing else.
    slab: Vec<Resident<E>>,
    index: SlotIndex,
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
            slab: Vec::new(),
            index: SlotIndex::new(),
        }
    }

    /// Number of live entities.
    #[inline]
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether the table holds no entity.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// The slot of `key`, if it is live.
    #[inline]
    pub fn find(&self, key: u64) -> Option<Slot> {
        self.find_or_vacancy(key).ok()
    }

    /// The slot of `key`, or where it would go: one probe for a lookup that
    /// may be followed by an insert ([`Table::insert_vacant`]).
    #[inline(always)]
    pub fn find_or_vacancy(&self, key: u64) -> Result<Slot, Vacancy> {
        let slab = &self.slab;
        match self
            .index
            .probe(tag_of(key), |s| slab[s as usize].key == key)
        {
            Ok(slot) => Ok(slot as usize),
            Err(at) => Err(Vacancy { key, at }),
        }
    }

    /// Starts loading what a `find` or `insert` of `key` reads first (its
    /// index group), for a caller that knows the key ahead of time.
    #[inline]
    pub fn prefetch(&self, key: u64) {
        self.index.prefetch(tag_of(key));
    }

    /// Adds a new entity and returns its slot.
    ///
    /// # Panics
    ///
    /// If `key` is already live (a dispatch bug), or the table would exceed
    /// `u32::MAX` entities.
    #[inline]
    pub fn insert(&mut self, key: u64, state: E) -> Slot {
        match self.find_or_vacancy(key) {
            Ok(_) => panic!("key {key} inserted twice"),
            Err(vacancy) => self.insert_vacant(vacancy, key, state),
        }
    }

    /// Adds entity `key`, which [`Table::find_or_vacancy`] did not find, at
    /// the vacancy it returned, and returns its slot. A vacancy from before
    /// another insert or a removal still works (the index probes again).
    ///
    /// # Panics
    ///
    /// If `vacancy` was found for another key, or the table would exceed
    /// `u32::MAX` entities. (Inserting a key that went live since its vacancy
    /// was found is a bug the debug build catches.)
    #[inline(always)]
    pub fn insert_vacant(&mut self, vacancy: Vacancy, key: u64, state: E) -> Slot {
        let slot = self.slab.len();
        assert!(slot < u32::MAX as usize, "entity table full");
        assert_eq!(vacancy.key, key, "a vacancy for another key");
        debug_assert_eq!(self.find(key), None, "key {key} inserted twice");
        self.index.fill(vacancy.at, slot as u32);
        self.slab.push(Resident { key, state });
        slot
    }

    /// The state at `slot`.
    #[inline]
    pub fn get(&self, slot: Slot) -> &E {
        &self.slab[slot].state
    }

    /// The state at `slot`.
    #[inline]
    pub fn get_mut(&mut self, slot: Slot) -> &mut E {
        &mut self.slab[slot].state
    }

    /// The state of `key`, if it is live.
    #[inline]
    pub fn get_by_key(&self, key: u64) -> Option<&E> {
        self.find(key).map(|s| &self.slab[s].state)
    }

    /// The key at `slot`.
    #[inline]
    pub fn key_at(&self, slot: Slot) -> u64 {
        self.slab[slot].key
    }

    /// Removes the entity at `slot` and returns its state. The last entity
    /// moves into the freed slot.
    pub fn remove(&mut self, slot: Slot) -> E {
        let last = self.slab.len() - 1;
        let Resident { key, state } = self.slab.swap_remove(slot);
        self.index.remove(tag_of(key), slot as u32);
        if slot < last {
            let moved = self.slab[slot].key;
            self.index.relocate(tag_of(moved), last as u32, slot as u32);
        }
        debug_assert_eq!(self.find(key), None);
        state
    }

    /// Live keys, in slot order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = u64> + '_ {
        self.slab.iter().map(|r| r.key)
    }

    /// Bytes this table uses beyond the entities' states: keys (with their
    /// padding), index, and the unused tail of the slab.
    pub fn overhead_bytes(&self) -> usize {
        let resident = std::mem::size_of::<Resident<E>>();
        let beside = resident - std::mem::size_of::<E>();
        let slack = (self.slab.capacity() - self.slab.len()) * resident;
        self.index.capacity_bytes() + self.slab.len() * beside + slack
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
    fn a_missed_lookup_inserts_where_it_looked() {
        let mut t = Table::new();
        let vacancy = t.find_or_vacancy(7).unwrap_err();
        let slot = t.insert_vacant(vacancy, 7, "seven");
        assert_eq!(t.find_or_vacancy(7).unwrap(), slot);
        assert_eq!(t.get_by_key(7), Some(&"seven"));
    }

    #[test]
    #[should_panic(expected = "a vacancy for another key")]
    fn a_vacancy_is_for_its_own_key_only() {
        let mut t = Table::new();
        let vacancy = t.find_or_vacancy(7).unwrap_err();
        t.insert_vacant(vacancy, 8, ());
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

        /// The same through growth, tombstones and rebuilds: more keys, and
        /// inserts through the vacancy their lookup found.
        #[test]
        fn behaves_like_a_map_when_big(ops in proptest::collection::vec((0u8..3, 0u64..4096), 0..6000)) {
            let mut t = Table::new();
            let mut model = std::collections::BTreeMap::new();
            for (op, key) in ops {
                match (op, t.find_or_vacancy(key)) {
                    (0 | 1, Err(vacancy)) => {
                        prop_assert!(model.insert(key, !key).is_none());
                        t.insert_vacant(vacancy, key, !key);
                    }
                    (2, Ok(slot)) => prop_assert_eq!(t.remove(slot), model.remove(&key).unwrap()),
                    (_, found) => prop_assert_eq!(found.is_ok(), model.contains_key(&key)),
                }
            }
            prop_assert_eq!(t.len(), model.len());
            for (k, v) in model {
                prop_assert_eq!(t.get_by_key(k), Some(&v));
            }
        }
    }
}
