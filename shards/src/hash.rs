//! Layer 0, vocabulary: the hashes. One stable hash of kind names
//! ([`kind_hash`], also what log records carry), one mixer ([`mix64`]), one
//! placement function ([`home_shard`]) and one hasher family for maps keyed by
//! entity keys, entity ids and stored ids ([`KeyHasher`]).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::id::EntityId;

/// FNV-1a over the kind name: stable across runs, builds, platforms and Rust
/// versions (unlike `std`'s hashers), so the placement of a key and its log
/// records never depend on registration order. The name must be stable too.
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

/// Hashes `u64` keys with [`mix64`]: one multiply chain, good high and low bits
/// (SwissTable uses both), no per-map random state. An [`EntityId`] hashes as
/// its kind folded into its key, then one mix; a pair of `u64`s (a stored id:
/// kind hash and key) as two mixes.
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

/// Builds [`KeyHasher`]s.
pub type BuildKeyHasher = BuildHasherDefault<KeyHasher>;

/// A `HashMap` keyed by entity keys.
pub type KeyMap<V> = HashMap<u64, V, BuildKeyHasher>;

/// A `HashMap` keyed by entity ids.
pub type EntityMap<V> = HashMap<EntityId, V, BuildKeyHasher>;

/// A `HashSet` of entity ids.
pub type EntitySet = HashSet<EntityId, BuildKeyHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_hash_is_fnv1a() {
        // Reference values of FNV-1a 64 for "" and "a".
        assert_eq!(kind_hash(""), 0xcbf2_9ce4_8422_2325);
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

    #[test]
    fn entity_ids_hash_as_kind_folded_into_key() {
        use std::hash::BuildHasher;
        let b = BuildKeyHasher::default();
        assert_eq!(
            b.hash_one(EntityId::new(3, 9)),
            mix64(9 ^ 3u64.rotate_left(48))
        );
        assert_eq!(b.hash_one(9u64), mix64(9));
    }
}
