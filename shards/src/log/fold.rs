//! Layer 1, data: the recovery fold, sans-I/O: from the records of every shard's log, the latest
//! state of every entity.
//!
//! Entities move between shards, so an entity's records can sit in several logs;
//! the owner that logged it last did so with a higher version (the migration
//! protocol guarantees it). The fold therefore ignores which log a record came
//! from and the order records are offered in: for each (kind, key) the record with
//! the highest version wins, and a tombstone that wins deletes the entity. A
//! tombstone is remembered, so an older state offered after it stays deleted.
//!
//! Equal versions are expected only for copies of the same change (a checkpoint
//! rewrites live states unchanged). Between two records of equal version the
//! tombstone wins; between two states the first offered is kept.
//!
//! The fold stores a caller-chosen payload handle `P` per entity, not bytes: the
//! engine folds `&[u8]` slices that borrow its segment mappings (no copy) and hands
//! each winner to the shard that owns the key now ([`Fold::into_owned_by`]).

use std::collections::HashMap;

use crate::hash::BuildKeyHasher;
use crate::log::record::{RecordHeader, RecordType};

/// An entity's identity as logs store it: its kind by the stable hash of the
/// kind's name (registration order may change between runs, so a log never
/// holds a [`KindId`](crate::KindId)), and its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoredId {
    /// Stable hash of the kind name ([`kind_hash`](crate::hash::kind_hash)).
    pub kind_hash: u64,
    /// Key within the kind.
    pub key: u64,
}

/// The winning record for one entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latest<P> {
    /// Highest version seen.
    pub version: u64,
    /// `Some(payload)` for a state, `None` when the entity was deleted.
    pub state: Option<P>,
}

/// A live entity handed back by the fold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovered<P> {
    /// Which entity.
    pub id: StoredId,
    /// Its last durable version.
    pub version: u64,
    /// Its last durable state.
    pub payload: P,
}

/// What [`Fold::offer`] did with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offered {
    /// First record seen for the entity.
    New,
    /// Replaced an older (or equal-version state, by a tombstone) record.
    Replaced,
    /// An equal or newer record was already known; this one was dropped.
    Kept,
    /// A checkpoint or resume marker: not about an entity, ignored.
    Marker,
}

/// Folds records into the latest state per entity. See the module docs.
#[derive(Clone, Debug)]
pub struct Fold<P> {
    latest: HashMap<StoredId, Latest<P>, BuildKeyHasher>,
}

impl<P> Default for Fold<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P> Fold<P> {
    /// An empty fold.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty fold with room for `entities` entities before it reallocates.
    pub fn with_capacity(entities: usize) -> Self {
        Self {
            latest: HashMap::with_capacity_and_hasher(entities, BuildKeyHasher::default()),
        }
    }

    /// Offers one record read from any log; `payload` is the handle to keep if it
    /// wins (ignored for tombstones and markers).
    pub fn offer(&mut self, header: &RecordHeader, payload: P) -> Offered {
        let id = StoredId {
            kind_hash: header.kind,
            key: header.key,
        };
        match RecordType::from_u8(header.record_type) {
            Some(RecordType::State) => self.insert(id, header.version, Some(payload)),
            Some(RecordType::Tombstone) => self.insert(id, header.version, None),
            _ => Offered::Marker,
        }
    }

    /// Offers one change: `Some(payload)` is a state at `version`, `None` a deletion.
    pub fn insert(&mut self, id: StoredId, version: u64, state: Option<P>) -> Offered {
        use std::collections::hash_map::Entry;
        match self.latest.entry(id) {
            Entry::Vacant(slot) => {
                slot.insert(Latest { version, state });
                Offered::New
            }
            Entry::Occupied(mut slot) => {
                let known = slot.get_mut();
                let wins = version > known.version
                    || (version == known.version && state.is_none() && known.state.is_some());
                if wins {
                    *known = Latest { version, state };
                    Offered::Replaced
                } else {
                    Offered::Kept
                }
            }
        }
    }

    /// The winning record for an entity, live or deleted.
    pub fn get(&self, id: StoredId) -> Option<&Latest<P>> {
        self.latest.get(&id)
    }

    /// Number of entities seen, including deleted ones.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// Whether no entity was seen.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Number of live (not deleted) entities.
    pub fn live_len(&self) -> usize {
        self.latest.values().filter(|l| l.state.is_some()).count()
    }

    /// The live entities, in no particular order.
    pub fn live(&self) -> impl Iterator<Item = Recovered<&P>> + '_ {
        self.latest.iter().filter_map(|(id, l)| {
            l.state.as_ref().map(|payload| Recovered {
                id: *id,
                version: l.version,
                payload,
            })
        })
    }

    /// Consumes the fold, yielding every entity's winning record, deletions
    /// included, in no particular order.
    pub fn into_entries(self) -> impl Iterator<Item = (StoredId, Latest<P>)> {
        self.latest.into_iter()
    }

    /// Consumes the fold, yielding the live entities in no particular order.
    pub fn into_live(self) -> impl Iterator<Item = Recovered<P>> {
        self.latest.into_iter().filter_map(|(id, l)| {
            l.state.map(|payload| Recovered {
                id,
                version: l.version,
                payload,
            })
        })
    }

    /// Consumes the fold and splits the live entities by the shard that owns them
    /// now: `owner(id)` must return a shard index below `shards`. Each list is
    /// sorted by (kind, key) so activation order does not depend on hashing.
    ///
    /// # Panics
    ///
    /// If `owner` returns an index `>= shards`.
    pub fn into_owned_by(
        self,
        shards: usize,
        mut owner: impl FnMut(StoredId) -> usize,
    ) -> Vec<Vec<Recovered<P>>> {
        let mut out: Vec<Vec<Recovered<P>>> = (0..shards).map(|_| Vec::new()).collect();
        for entity in self.into_live() {
            let shard = owner(entity.id);
            assert!(
                shard < shards,
                "owner() returned shard {shard}, only {shards} exist"
            );
            out[shard].push(entity);
        }
        for list in &mut out {
            list.sort_unstable_by_key(|e| e.id);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::{decode, encode, Decoded, RecordFields};
    use proptest::prelude::*;

    fn header(record_type: RecordType, kind: u64, key: u64, version: u64) -> RecordHeader {
        let mut buf = Vec::new();
        let payload: &[u8] = if record_type == RecordType::State {
            b"x"
        } else {
            b""
        };
        encode(
            &mut buf,
            &RecordFields {
                record_type,
                lsn: 0,
                segment_seq: 0,
                batch_offset: 0,
                kind,
                key,
                version,
            },
            payload,
        );
        match decode(&buf) {
            Decoded::Record(view) => view.header,
            other => panic!("{other:?}"),
        }
    }

    fn id(kind: u64, key: u64) -> StoredId {
        StoredId {
            kind_hash: kind,
            key,
        }
    }

    #[test]
    fn highest_version_wins_in_any_order() {
        let mut fold = Fold::new();
        assert_eq!(
            fold.offer(&header(RecordType::State, 1, 9, 2), "v2"),
            Offered::New
        );
        assert_eq!(
            fold.offer(&header(RecordType::State, 1, 9, 5), "v5"),
            Offered::Replaced
        );
        assert_eq!(
            fold.offer(&header(RecordType::State, 1, 9, 3), "v3"),
            Offered::Kept
        );
        assert_eq!(
            fold.get(id(1, 9)),
            Some(&Latest {
                version: 5,
                state: Some("v5")
            })
        );
    }

    #[test]
    fn tombstone_deletes_and_older_states_stay_deleted() {
        let mut fold = Fold::new();
        fold.offer(&header(RecordType::State, 1, 1, 1), "a");
        fold.offer(&header(RecordType::Tombstone, 1, 1, 2), "");
        fold.offer(&header(RecordType::State, 1, 1, 1), "a-again");
        assert_eq!(fold.live_len(), 0);
        assert_eq!(fold.len(), 1);
        // A newer state after the deletion revives the key (re-activation).
        fold.offer(&header(RecordType::State, 1, 1, 3), "b");
        assert_eq!(fold.live().map(|r| *r.payload).collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn equal_version_tombstone_beats_state() {
        let mut fold = Fold::new();
        fold.offer(&header(RecordType::Tombstone, 1, 1, 4), "");
        assert_eq!(
            fold.offer(&header(RecordType::State, 1, 1, 4), "s"),
            Offered::Kept
        );
        assert_eq!(fold.live_len(), 0);
    }

    #[test]
    fn markers_are_ignored() {
        let mut fold = Fold::new();
        assert_eq!(
            fold.offer(&header(RecordType::CheckpointEnd, 0, 3, 0), "m"),
            Offered::Marker
        );
        assert_eq!(
            fold.offer(&header(RecordType::Resume, 0, 0, 0), "m"),
            Offered::Marker
        );
        assert!(fold.is_empty());
    }

    #[test]
    fn kinds_do_not_collide() {
        let mut fold = Fold::new();
        fold.insert(id(1, 7), 1, Some("a"));
        fold.insert(id(2, 7), 1, Some("b"));
        assert_eq!(fold.live_len(), 2);
    }

    #[test]
    fn owned_by_splits_by_owner_and_sorts() {
        let mut fold = Fold::new();
        for key in (0..10u64).rev() {
            fold.insert(id(1, key), 1, Some(key));
        }
        fold.insert(id(1, 3), 2, None);
        let split = fold.into_owned_by(3, |e| (e.key % 3) as usize);
        let keys: Vec<Vec<u64>> = split
            .iter()
            .map(|l| l.iter().map(|e| e.payload).collect())
            .collect();
        assert_eq!(keys, [vec![0, 6, 9], vec![1, 4, 7], vec![2, 5, 8]]);
    }

    /// One change in the history of one entity.
    #[derive(Clone, Debug)]
    struct Change {
        kind: u64,
        key: u64,
        version: u64,
        deleted: bool,
    }

    fn history() -> impl Strategy<Value = Vec<Change>> {
        // Per entity: a run of versions 1..=n, the last maybe a deletion.
        proptest::collection::vec((0u64..3, 0u64..20, 1u64..6, any::<bool>()), 1..40).prop_map(
            |entities| {
                let mut out = Vec::new();
                let mut seen = std::collections::HashSet::new();
                for (kind, key, n, deleted) in entities {
                    if !seen.insert((kind, key)) {
                        continue;
                    }
                    for version in 1..=n {
                        out.push(Change {
                            kind,
                            key,
                            version,
                            deleted: deleted && version == n,
                        });
                    }
                }
                out
            },
        )
    }

    proptest! {
        /// Records scattered over shards' logs, in any order, some duplicated in two
        /// logs (a checkpoint copy, or a migration's old log), fold to the last
        /// change of every entity.
        #[test]
        fn shuffled_and_duplicated_records_fold_to_the_last_change(
            changes in history(),
            shards in 1usize..5,
            seed in any::<u64>(),
        ) {
            let mut expected = std::collections::BTreeMap::new();
            for c in &changes {
                expected.insert((c.kind, c.key), (c.version, c.deleted));
            }
            let mut records: Vec<(usize, Change)> = Vec::new();
            let mut rng = seed | 1;
            let mut next = || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            for c in &changes {
                records.push(((next() % shards as u64) as usize, c.clone()));
                if next() % 4 == 0 {
                    records.push(((next() % shards as u64) as usize, c.clone()));
                }
            }
            for i in (1..records.len()).rev() {
                let j = (next() % (i as u64 + 1)) as usize;
                records.swap(i, j);
            }
            let mut fold = Fold::new();
            for (_shard, c) in &records {
                let t = if c.deleted { RecordType::Tombstone } else { RecordType::State };
                fold.offer(&header(t, c.kind, c.key, c.version), (c.kind, c.key, c.version));
            }
            let live: std::collections::BTreeMap<_, _> =
                fold.live().map(|r| ((r.id.kind_hash, r.id.key), r.version)).collect();
            let want: std::collections::BTreeMap<_, _> = expected
                .iter()
                .filter(|(_, (_, deleted))| !deleted)
                .map(|(k, (v, _))| (*k, *v))
                .collect();
            prop_assert_eq!(&live, &want);
            for r in fold.live() {
                prop_assert_eq!(*r.payload, (r.id.kind_hash, r.id.key, r.version));
            }
            let split = fold.into_owned_by(shards, |e| (e.key as usize) % shards);
            prop_assert_eq!(split.iter().map(Vec::len).sum::<usize>(), want.len());
        }
    }
}
