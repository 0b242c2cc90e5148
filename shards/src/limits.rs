//! Layer 0, vocabulary: every limit of a shard, with what happens at it.
//!
//! Each map the migration and routing protocols keep is listed here with its
//! bound. Where the contract forbids a cap (a home must remember where each
//! of its entities lives), the doc says what the map is proportional to
//! instead. Where a cap refuses or degrades something, a
//! [`Counters`](crate::driver::Counters) field counts it. Relations between
//! limits are checked at compile time at the bottom of this file.

/// Most shards one engine may have. Each pair of shards has a ring, so the
/// mesh grows with the square of this, and the runtime's client batches
/// track shards in a `u128`; the stream tag in an envelope's token (16
/// bits) and the shard bits of a [`TimerId`](crate::TimerId) could name far
/// more.
pub const MAX_SHARDS: usize = 128;

/// Most kinds one engine may register ([`KindId`](crate::KindId) is 16 bits).
pub const MAX_KINDS: usize = u16::MAX as usize;

/// Bits of an envelope's token that carry the sending shard's stream tag
/// (the shard index plus one; 0 means "no stream").
pub const STREAM_TAG_BITS: u32 = 16;

/// How many hottest entities a shard tracks per heat window.
pub const HOT_LIST_LEN: usize = 16;

/// Most keys [`Shard::prefetch`](crate::driver::Shard::prefetch) hands a
/// table in one call (one virtual call per run of keys of one kind, not per
/// key).
pub const PREFETCH_RUN_MAX: usize = 16;

/// A table with fewer entities stays in the core's cache (for small states
/// its index and slab fit in 2 MiB of L2), so prefetching its lines would
/// only cost time (the pass that gathers keys for it included).
pub const PREFETCH_ENTITIES_MIN: usize = 1 << 15;

/// Most migration pauses a shard keeps between two
/// [`Shard::take_pauses`](crate::driver::Shard::take_pauses); later ones
/// still count in `pause_ns_total` and `pause_ns_max` but are not kept one by
/// one (counted in `pauses_dropped`).
pub const PAUSES_KEPT_MAX: usize = 1 << 16;

/// Most continuations (entity asks waiting for their reply) one shard keeps.
/// At the bound [`Ctx::ask`](crate::Ctx::ask) fails with
/// [`SendError::Overflow`](crate::SendError::Overflow), handing the message
/// back (counted in `asks_refused`): an ask that was not sent needs no
/// answer, so the contract holds.
pub const CONTINUATIONS_MAX: usize = 1 << 20;

/// Most entities one shard's route cache holds. When it is full a new hint is
/// dropped (counted in `hints_dropped`) and one cached route is switched back
/// home, so later hints find room. Messages then go through the entity's
/// home: slower, never wrong.
pub const ROUTE_CACHE_CAP: usize = 1024;

/// Most entities a shard remembers, one by one, having bounced messages for
/// to their home. Past that (counted in `bounce_overflows`) every arrival on
/// the shard waits for a rejoin marker: a round trip to the home per arrival,
/// never a broken order.
pub const BOUNCED_CAP: usize = 4096;

/// Most lanes (an entity's stream from one sending shard that is on a direct
/// route or switching) one shard holds. Not enforced by a check: a lane
/// exists only while its sender's route cache has an entry for the entity,
/// so a shard holds at most one lane per cached route of every other shard.
/// Messages a lane holds are bounded by what its sender may have in flight.
pub const LANES_MAX: usize = MAX_SHARDS * ROUTE_CACHE_CAP;

/// Most moves one shard carries out in one pass; the rest wait for the next
/// pass (counted in `moves_deferred`). This bounds the transfers a pass puts
/// in rings and, with every other shard doing the same, how many entities
/// can start settling on a shard per pass
/// ([`SETTLING_PER_PASS_MAX`]).
pub const MOVES_PER_PASS_MAX: usize = 64;

/// Most entities that can start settling on one shard per pass of every
/// shard: each other shard sends at most [`MOVES_PER_PASS_MAX`] transfers
/// per pass. Settling places leave once their markers arrive.
pub const SETTLING_PER_PASS_MAX: usize = MOVES_PER_PASS_MAX * (MAX_SHARDS - 1);

/// What a shard's places (what it knows of entities that moved) are bounded
/// by. No cap can be enforced without breaking the contract: a home must
/// remember where each of its entities lives for as long as it lives
/// elsewhere (an `Away` place), and a shard must remember each guest it
/// hosts. So places are proportional to the entities homed here that live
/// elsewhere, plus the guests living here, plus the moves in flight (at
/// most [`SETTLING_PER_PASS_MAX`] new ones per pass); an old owner's pointer
/// lasts only until the home's marker passes it. About 48 bytes each (a
/// 32-byte map entry, its control byte and the map's slack).
pub const PLACE_BYTES_PER_MOVED_ENTITY: usize = 48;

/// What a shard's departures (durable entities that left, kept in its
/// checkpoints until their new owner's record is durable) are bounded by.
/// Not capped: dropping one could lose the only durable record of an
/// entity. Each lasts about one log flush of its new owner, so they are
/// proportional to the durable moves of one flush interval, at most
/// [`MOVES_PER_PASS_MAX`] per pass.
pub const DEPARTED_PER_PASS_MAX: usize = MOVES_PER_PASS_MAX;

const _: () = assert!(
    MAX_SHARDS < 1 << STREAM_TAG_BITS,
    "stream tags name every shard"
);
const _: () = assert!(MAX_SHARDS <= 1 << 16, "timer ids keep the shard in 16 bits");
const _: () = assert!(
    MAX_SHARDS < crate::id::CLIENT_BIT as usize,
    "shard senders are below the client bit"
);
const _: () = assert!(
    CONTINUATIONS_MAX < 1 << (64 - STREAM_TAG_BITS),
    "a continuation slot fits the token"
);
const _: () = assert!(
    BOUNCED_CAP >= ROUTE_CACHE_CAP,
    "bounces follow stale cached routes"
);
const _: () = assert!(MOVES_PER_PASS_MAX > 0 && HOT_LIST_LEN > 0 && PREFETCH_RUN_MAX > 0);
