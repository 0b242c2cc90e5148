//! The entity model: a *kind* is a Rust type with a stable name; an *entity* is
//! one value of that type, named by a `u64` key, owned by exactly one shard.

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

/// Index of a registered kind, the same on every shard of one engine.
pub type KindId = u16;

/// FNV-1a over the kind name: stable across runs, builds and machines, so the
/// placement of a key (and later its log records) never depends on
/// registration order.
pub const fn kind_hash(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// Mixes a 64-bit value so that every input bit affects the high and the low
/// bits of the result (the finaliser of MurmurHash3).
#[inline]
pub const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// The home shard of `key` of the kind whose name hashes to `kind_hash`, among
/// `shard_count` shards. Uses a multiply-shift range reduction (no division).
#[inline]
pub fn home_shard(kind_hash: u64, key: u64, shard_count: usize) -> usize {
    debug_assert!(shard_count > 0);
    let h = mix64(kind_hash ^ key.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    ((h as u128 * shard_count as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_hash_is_fnv1a() {
        // Reference value of FNV-1a 64 for "a".
        assert_eq!(kind_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(kind_hash("player"), kind_hash("room"));
    }

    #[test]
    fn home_shard_spreads_keys_evenly() {
        let shards = 4;
        let mut counts = [0usize; 4];
        for key in 0..40_000u64 {
            counts[home_shard(kind_hash("player"), key, shards)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn home_shard_is_in_range() {
        for n in 1..9 {
            for key in [0, 1, u64::MAX, 1 << 40] {
                assert!(home_shard(kind_hash("x"), key, n) < n);
            }
        }
    }
}
