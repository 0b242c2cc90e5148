//! Layer 0, vocabulary: the ids everything else names things by.
//!
//! An entity is a kind and a key ([`EntityId`]); a kind is an index into the
//! registry ([`KindId`], the same on every shard of one engine); a sender is a
//! shard or a client slot ([`SenderId`]); a timer has an engine-wide id
//! ([`TimerId`]). Logs name kinds by their stable hash instead (see
//! [`crate::log::fold::StoredId`]), since registration order may change
//! between runs.

/// Index of a registered kind, the same on every shard of one engine.
pub type KindId = u16;

/// An entity's identity inside one engine: its kind and its key.
///
/// Hashes as its kind folded into its key, then one mix (see
/// [`KeyHasher`](crate::hash::KeyHasher)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityId {
    /// Its kind.
    pub kind: KindId,
    /// Its key within the kind.
    pub key: u64,
}

impl EntityId {
    /// Entity `key` of `kind`.
    #[inline]
    pub const fn new(kind: KindId, key: u64) -> Self {
        EntityId { kind, key }
    }
}

/// Identifies who sent an envelope: a shard index, or a client slot with the
/// top bit set ([`CLIENT_BIT`]).
pub type SenderId = u32;

/// The bit that marks a [`SenderId`] as a client.
pub const CLIENT_BIT: SenderId = 1 << 31;

/// The sender of a move request that wants no answer (the rebalancer's).
pub const NO_REPLY: SenderId = SenderId::MAX;

/// Names a timer so it can be cancelled. Unique in the engine (the shard that
/// made it is in the top bits), so it stays valid when its entity moves to
/// another shard. Stale ids (fired or cancelled timers) are harmless:
/// cancelling them does nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(pub(crate) u64);

/// Whom a reply to a move request goes to: the asker and its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReplyTo {
    pub(crate) sender: SenderId,
    pub(crate) token: u64,
}
