//! Layer 1, data: what each registered kind's id means — its name, stable
//! hash, durability and Rust type — shared read-only by every shard, so a
//! [`KindId`] means the same on all of them. The registry users fill
//! ([`Kinds`](crate::Kinds)) keeps one of these beside each kind's table
//! factory; shards and handlers only need this half.

use std::any::TypeId;

use crate::hash::home_shard;
use crate::id::KindId;

/// What the registry knows of one kind.
#[derive(Clone, Debug)]
pub struct KindInfo {
    /// The kind's stable name, [`Entity::KIND`](crate::Entity::KIND).
    pub name: &'static str,
    /// [`kind_hash`](crate::hash::kind_hash) of the name.
    pub hash: u64,
    /// Whether its entities are logged.
    pub durable: bool,
    pub(crate) type_id: TypeId,
}

/// The registered kinds' names, hashes and types, indexed by [`KindId`].
#[derive(Clone, Debug, Default)]
pub(crate) struct KindIndex {
    list: Vec<KindInfo>,
}

impl KindIndex {
    /// Adds a kind; returns its id.
    pub(crate) fn push(&mut self, info: KindInfo) -> KindId {
        self.list.push(info);
        (self.list.len() - 1) as KindId
    }

    /// The id of the kind whose Rust type is `T`, if registered. A linear scan
    /// of type ids: engines register a handful of kinds, and the scan beats
    /// hashing at that size.
    #[inline]
    pub(crate) fn id_of<T: 'static>(&self) -> Option<KindId> {
        let wanted = TypeId::of::<T>();
        self.list
            .iter()
            .position(|k| k.type_id == wanted)
            .map(|i| i as KindId)
    }

    /// The kind whose name hashes to `hash`, if registered.
    pub(crate) fn id_of_hash(&self, hash: u64) -> Option<KindId> {
        self.list
            .iter()
            .position(|k| k.hash == hash)
            .map(|i| i as KindId)
    }

    /// The kind registered as `id`.
    ///
    /// # Panics
    ///
    /// If `id` was not handed out by this index.
    #[inline]
    pub(crate) fn get(&self, id: KindId) -> &KindInfo {
        &self.list[id as usize]
    }

    /// The shard that owns `key` of `kind` among `shard_count`.
    #[inline]
    pub(crate) fn home_shard(&self, kind: KindId, key: u64, shard_count: usize) -> usize {
        home_shard(self.list[kind as usize].hash, key, shard_count)
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, KindInfo> {
        self.list.iter()
    }
}
