//! Layer 4, dispatch: the registry of entity kinds users fill — built once
//! before the engine starts, then shared read-only by every shard, so a
//! `KindId` means the same on all of them. Beside each kind's name, hash and
//! type (the [`KindInfo`] every shard shares) it keeps the kind's table
//! factory, the one place that knows the kind's Rust type.

use std::any::TypeId;
use std::fmt;
use std::sync::Arc;

use crate::dispatch::{ErasedTable, KindTable, Tables};
use crate::durable::Codec;
use crate::entity::Entity;
use crate::envelope::{Envelope, Op};
use crate::error::DuplicateKind;
use crate::hash::kind_hash;
use crate::id::KindId;
use crate::kind_index::{KindIndex, KindInfo};
use crate::limits::MAX_KINDS;
use crate::services::moves::MoveRequest;

/// Makes a kind's table (its type known only here).
type TableMaker = Box<dyn Fn(KindId) -> Box<dyn ErasedTable> + Send + Sync>;

/// The registered kinds, indexed by [`KindId`].
#[derive(Default)]
pub struct Kinds {
    /// Names, hashes and types; shared with every shard.
    index: Arc<KindIndex>,
    /// `makers[id]` makes the table of kind `id`.
    makers: Vec<TableMaker>,
}

impl Kinds {
    /// Most kinds one engine may register ([`KindId`] is 16 bits).
    pub const MAX: usize = MAX_KINDS;

    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `E`.
    ///
    /// # Errors
    ///
    /// [`DuplicateKind`] when `E` or another kind with `E::KIND` as its name is
    /// registered already.
    ///
    /// # Panics
    ///
    /// When more than [`Kinds::MAX`] kinds are registered.
    pub fn register<E: Entity>(&mut self) -> Result<KindId, DuplicateKind> {
        self.add::<E>(None)
    }

    /// Registers `E` as a durable kind whose states `codec` encodes.
    ///
    /// # Errors
    ///
    /// As [`Kinds::register`].
    pub fn register_durable<E: Entity>(
        &mut self,
        codec: Codec<E>,
    ) -> Result<KindId, DuplicateKind> {
        self.add::<E>(Some(codec))
    }

    /// Whether any registered kind is durable.
    pub fn any_durable(&self) -> bool {
        self.index.iter().any(|k| k.durable)
    }

    /// The kind whose name hashes to `hash`, if registered.
    pub fn id_of_hash(&self, hash: u64) -> Option<KindId> {
        self.index.id_of_hash(hash)
    }

    fn add<E: Entity>(&mut self, codec: Option<Codec<E>>) -> Result<KindId, DuplicateKind> {
        let hash = kind_hash(E::KIND);
        if self
            .index
            .iter()
            .any(|k| k.hash == hash || k.type_id == TypeId::of::<E>() || k.name == E::KIND)
        {
            return Err(DuplicateKind { name: E::KIND });
        }
        assert!(self.index.len() < Self::MAX, "too many entity kinds");
        // Registration happens before any shard shares the index; should one
        // already, the registry gets its own copy.
        let id = Arc::make_mut(&mut self.index).push(KindInfo {
            name: E::KIND,
            hash,
            durable: codec.is_some(),
            type_id: TypeId::of::<E>(),
        });
        self.makers.push(Box::new(move |kind| {
            Box::new(KindTable::<E>::new(kind, hash, codec))
        }));
        Ok(id)
    }

    /// The id of kind `E`, if registered. A linear scan of type ids: engines
    /// register a handful of kinds, and the scan beats hashing at that size.
    #[inline]
    pub fn id_of<E: Entity>(&self) -> Option<KindId> {
        self.index.id_of::<E>()
    }

    /// The envelope of message `msg` for entity `key` of kind `E`, with
    /// operation `op` ([`Op::Tell`] or [`Op::AskClient`]); set its sender and
    /// token with [`Envelope::with_route`]. The only way outside this crate to
    /// build a message envelope: the kind id is looked up from `E`'s type, so
    /// the payload is always read back as the type it is.
    ///
    /// # Errors
    ///
    /// Hands `msg` back when `E` is not registered here.
    ///
    /// # Panics
    ///
    /// If `op` is not `Tell` or `AskClient`.
    #[inline]
    pub fn message<E: Entity>(&self, key: u64, op: Op, msg: E::Msg) -> Result<Envelope, E::Msg> {
        assert!(
            matches!(op, Op::Tell | Op::AskClient),
            "a client message is a Tell or an AskClient, not {op:?}"
        );
        match self.id_of::<E>() {
            Some(kind) => Ok(Envelope::new(kind, key, op, msg)),
            None => Err(msg),
        }
    }

    /// The envelope of an explicit move of entity `key` of kind `E`
    /// ([`Op::Migrate`]); `None` when `E` is not registered here.
    #[inline]
    pub fn move_request<E: Entity>(&self, key: u64, request: MoveRequest) -> Option<Envelope> {
        let kind = self.id_of::<E>()?;
        Some(Envelope::new(kind, key, Op::Migrate, request))
    }

    /// The kind registered as `id`.
    ///
    /// # Panics
    ///
    /// If `id` was not handed out by this registry.
    #[inline]
    pub fn get(&self, id: KindId) -> &KindInfo {
        self.index.get(id)
    }

    /// Number of registered kinds.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no kind is registered.
    pub fn is_empty(&self) -> bool {
        self.index.len() == 0
    }

    /// Every registered kind, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &KindInfo> {
        self.index.iter()
    }

    /// The shard that owns `key` of `kind` among `shard_count`.
    #[inline]
    pub fn home_shard(&self, kind: KindId, key: u64, shard_count: usize) -> usize {
        self.index.home_shard(kind, key, shard_count)
    }

    /// The names, hashes and types, to share with a shard.
    pub(crate) fn index(&self) -> Arc<KindIndex> {
        Arc::clone(&self.index)
    }

    /// A fresh table for every kind, in id order.
    pub(crate) fn make_tables(&self) -> Tables {
        Tables::new(
            self.makers
                .iter()
                .enumerate()
                .map(|(i, make)| make(i as KindId))
                .collect(),
        )
    }
}

impl fmt::Debug for Kinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.index.iter().map(|k| k.name))
            .finish()
    }
}
