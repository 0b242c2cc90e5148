//! The registry of entity kinds: built once before the engine starts, then
//! shared read-only by every shard, so a `KindId` means the same on all of them.

use std::any::TypeId;
use std::fmt;

use crate::dispatch::{ErasedTable, KindTable};
use crate::durable::Codec;
use crate::entity::{home_shard, kind_hash, Entity, KindId};
use crate::envelope::{Envelope, Op};
use crate::migrate::MoveRequest;

/// What the registry knows of one kind.
pub struct KindInfo {
    /// The kind's stable name, [`Entity::KIND`].
    pub name: &'static str,
    /// [`kind_hash`] of the name.
    pub hash: u64,
    /// Whether its entities are logged.
    pub durable: bool,
    type_id: TypeId,
    make_table: Box<dyn Fn(KindId) -> Box<dyn ErasedTable> + Send + Sync>,
}

/// Two registrations under one kind name (or the same type twice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateKind {
    /// The name registered twice.
    pub name: &'static str,
}

impl fmt::Display for DuplicateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "entity kind name {:?} is registered twice; every kind needs its own `KIND` name",
            self.name
        )
    }
}

impl std::error::Error for DuplicateKind {}

/// The registered kinds, indexed by [`KindId`].
#[derive(Default)]
pub struct Kinds {
    list: Vec<KindInfo>,
}

impl Kinds {
    /// Most kinds one engine may register ([`KindId`] is 16 bits).
    pub const MAX: usize = u16::MAX as usize;

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
        self.list.iter().any(|k| k.durable)
    }

    /// The kind whose name hashes to `hash`, if registered.
    pub fn id_of_hash(&self, hash: u64) -> Option<KindId> {
        self.list
            .iter()
            .position(|k| k.hash == hash)
            .map(|i| i as KindId)
    }

    fn add<E: Entity>(&mut self, codec: Option<Codec<E>>) -> Result<KindId, DuplicateKind> {
        let hash = kind_hash(E::KIND);
        if self
            .list
            .iter()
            .any(|k| k.hash == hash || k.type_id == TypeId::of::<E>() || k.name == E::KIND)
        {
            return Err(DuplicateKind { name: E::KIND });
        }
        assert!(self.list.len() < Self::MAX, "too many entity kinds");
        self.list.push(KindInfo {
            name: E::KIND,
            hash,
            durable: codec.is_some(),
            type_id: TypeId::of::<E>(),
            make_table: Box::new(move |kind| Box::new(KindTable::<E>::new(kind, hash, codec))),
        });
        Ok((self.list.len() - 1) as KindId)
    }

    /// The id of kind `E`, if registered. A linear scan of type ids: engines
    /// register a handful of kinds, and the scan beats hashing at that size.
    #[inline]
    pub fn id_of<E: Entity>(&self) -> Option<KindId> {
        let wanted = TypeId::of::<E>();
        self.list
            .iter()
            .position(|k| k.type_id == wanted)
            .map(|i| i as KindId)
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
        &self.list[id as usize]
    }

    /// Number of registered kinds.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether no kind is registered.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every registered kind, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &KindInfo> {
        self.list.iter()
    }

    /// The shard that owns `key` of `kind` among `shard_count`.
    #[inline]
    pub fn home_shard(&self, kind: KindId, key: u64, shard_count: usize) -> usize {
        home_shard(self.list[kind as usize].hash, key, shard_count)
    }

    pub(crate) fn make_tables(&self) -> Vec<Box<dyn ErasedTable>> {
        self.list
            .iter()
            .enumerate()
            .map(|(i, k)| (k.make_table)(i as KindId))
            .collect()
    }
}

impl fmt::Debug for Kinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.list.iter().map(|k| k.name))
            .finish()
    }
}
