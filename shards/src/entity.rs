//! Layer 3, user API: the entity model. A *kind* is a Rust type with a stable
//! name; an *entity* is one value of that type, named by a `u64` key, owned by
//! exactly one shard. This file holds the trait only; it names [`Ctx`], which
//! names it back (the one cycle of the crate).

use crate::ctx::Ctx;

/// A kind of entity: players, rooms, accounts, ticket booths.
///
/// Every key of a registered kind exists virtually: the first message to a key
/// calls [`Entity::activate`], and the value lives on its shard from then on.
/// Handlers are synchronous and get `&mut self`: only the owning shard touches an
/// entity, one message at a time, so no locks are needed.
///
/// # Example
///
/// ```
/// use percore_shards::{Ctx, Entity};
///
/// struct Counter(u64);
///
/// impl Entity for Counter {
///     const KIND: &'static str = "counter";
///     type Msg = u64;
///     type Reply = u64;
///
///     fn activate(_key: u64) -> Self {
///         Counter(0)
///     }
///
///     fn handle(&mut self, add: u64, _ctx: &mut Ctx<'_, Self>) -> u64 {
///         self.0 += add;
///         self.0
///     }
/// }
/// ```
pub trait Entity: Sized + Send + 'static {
    /// The kind's stable name. It decides which shard a key lives on and names
    /// the kind in logs and errors, so it must not change between releases of
    /// a program that keeps durable state.
    const KIND: &'static str;
    /// What the entity is sent.
    type Msg: Send + 'static;
    /// What a handler returns; an `ask` hands it back to the asker, a `tell`
    /// drops it.
    type Reply: Send + 'static;

    /// Whether the automatic rebalancer may move entities of this kind to a
    /// less busy shard. Explicit moves ([`Client::migrate`] in `percore`) are
    /// allowed either way; an entity can refuse every move with
    /// [`Ctx::pin`](crate::Ctx::pin). Kinds that hold something tied to their
    /// shard (a socket session, say) set this to `false`.
    ///
    /// [`Client::migrate`]: https://docs.rs/percore
    const MOVABLE: bool = true;

    /// Creates the state of a key that has never been seen (or whose entity
    /// stopped or panicked).
    fn activate(key: u64) -> Self;

    /// Handles one message. Runs on the entity's shard with exclusive access.
    /// A panic here is caught: the entity is dropped and re-activated on its
    /// next message, an asker gets [`AskError::Panicked`](crate::AskError::Panicked).
    fn handle(&mut self, msg: Self::Msg, ctx: &mut Ctx<'_, Self>) -> Self::Reply;

    /// Runs once when a durable entity comes back from the log at start, before
    /// any message reaches it, so it can resend what it had promised (an
    /// outbox); receivers should deduplicate. Does nothing by default.
    fn recovered(&mut self, ctx: &mut Ctx<'_, Self>) {
        let _ = ctx;
    }
}
