//! # percore-shards
//!
//! The single-core half of [percore](https://docs.rs/percore): everything one
//! shard does, as plain single-threaded code with no threads, clocks or
//! syscalls. The runtime (the `percore` crate) feeds a
//! [`Shard`](driver::Shard) envelopes from its rings and the current time,
//! and takes back what the shard wants sent. That keeps every rule about
//! entities — activation, exclusivity, replies, continuations, timers, panic
//! isolation, durability, migration — testable in one thread,
//! deterministically (the pattern of quinn-proto under quinn).
//!
//! Users normally depend on `percore`, which re-exports [`Entity`], [`Ctx`]
//! and the error types from here. What entity code writes against is at
//! this crate's root; what only the runtime calls is in [`driver`].
//!
//! ## Layers
//!
//! Each module uses only its own layer and those below; the one cycle is
//! [`Entity`] ↔ [`Ctx`] (the trait names its context, the context its
//! entity type).
//!
//! | layer | modules | job |
//! |---|---|---|
//! | 0 vocabulary | `id`, `hash`, [`limits`], `error` | ids, the hashes, every bound, structured errors |
//! | 1 data | `envelope`, `table`, `timers`, `kind_index`, `log` (`record`, `fold`, `sink`, `state`) | storage shapes, no policy |
//! | 2 services | `services` (`counters`, `outbox`, `continuations`, `gate`, `heat`, `moves`, `route_cache`) | one struct each, private fields; `Services` composes them |
//! | 3 user API | `entity`, `ctx`, `durable` | what entity code sees |
//! | 4 dispatch | `dispatch`, `kinds` | find or activate, run the handler, rewind on panic; the registry |
//! | 5 protocol | `migrate` (`place`, `lanes`, `handoff`), `rebalance` | migration as state acting on tables and services; a pure rebalancing plan |
//! | 6 driver | `shard` | the only `impl Shard`: short delegations the runtime calls |
//! | test support | `testing` (feature `testing`) | one seeded world: shards, clients, clock, in-memory logs |
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

// Layer 0: vocabulary.
mod error;
mod hash;
mod id;
pub mod limits;
// Layer 1: data structures.
mod envelope;
mod kind_index;
mod log;
mod table;
mod timers;
// Layer 2: services.
mod services;
// Layer 3: user API.
mod ctx;
mod durable;
mod entity;
// Layer 4: dispatch.
mod dispatch;
mod kinds;
// Layer 5: protocol.
mod migrate;
mod rebalance;
// Layer 6: driver.
mod shard;
// Test support: one seeded world (feature `testing`).
#[cfg(feature = "testing")]
pub mod testing;

pub use ctx::Ctx;
pub use durable::{Codec, DurableState};
pub use entity::Entity;
pub use error::{AskError, DecodeError, DuplicateKind, RestoreError, SendError};
pub use hash::kind_hash;
pub use id::{EntityId, KindId, TimerId};
pub use kind_index::KindInfo;
pub use kinds::Kinds;
pub use limits::MAX_SHARDS;
pub use services::heat::Hot;

pub mod driver {
    //! For the runtime; not for entity code.
    //!
    //! What the engine's runtime drives a shard with: the [`Shard`] itself and
    //! its [`ShardSpec`], the [`Envelope`]s that travel on its rings with their
    //! operations and flags, the [`Outbox`]es it publishes, move requests, the
    //! rebalancing policy, the log interface ([`LogSink`]) and the log format
    //! ([`record`], [`fold`]). Entity code never needs any of it: it talks
    //! through [`Ctx`](crate::Ctx), and clients through the `percore` crate.
    //!
    //! Envelopes of messages are only built by
    //! [`Kinds::message`](crate::Kinds::message) and
    //! [`Kinds::move_request`](crate::Kinds::move_request), which tie the
    //! payload's type to its kind; [`Shard::deliver`] and
    //! [`Envelope::new_unchecked`] are `unsafe` for anything else.

    pub use crate::envelope::{
        is_inline, Envelope, Op, DIRECT, INLINE_BYTES, REROUTED, STRAGGLER, TOKEN_MASK,
    };
    pub use crate::hash::{home_shard, mix64, EntityMap, EntitySet, KeyHasher, KeyMap};
    pub use crate::id::{SenderId, CLIENT_BIT, NO_REPLY};
    pub use crate::log::{fold, record, LogRefusal, LogSink};
    pub use crate::rebalance::RebalancePolicy;
    pub use crate::services::counters::Counters;
    pub use crate::services::moves::{MoveOutcome, MoveRequest};
    pub use crate::services::outbox::{Destination, Outbox};
    pub use crate::services::ShardSpec;
    pub use crate::shard::Shard;
    pub use crate::table::{Slot, Table, Vacancy};
}
