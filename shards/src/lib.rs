//! # percore-shards
//!
//! The single-core half of [percore](https://docs.rs/percore): everything one
//! shard does, as plain single-threaded code with no threads, clocks or
//! syscalls. The runtime (the `percore` crate) feeds a [`Shard`] envelopes from
//! its rings and the current time, and takes back what the shard wants sent.
//! That keeps every rule about entities — activation, exclusivity, replies,
//! continuations, timers, panic isolation — testable in one thread,
//! deterministically (the pattern of quinn-proto under quinn).
//!
//! Users normally depend on `percore`, which re-exports [`Entity`], [`Ctx`] and
//! the error types from here.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod ctx;
pub mod dispatch;
pub mod durable;
pub mod entity;
pub mod envelope;
pub mod error;
pub mod kinds;
pub mod migrate;
pub mod shard;
pub mod table;
#[cfg(feature = "testing")]
pub mod testing;
pub mod timers;

/// The log format and the recovery fold (moved here; the old paths stay
/// until the layers are rebuilt).
pub mod log {
    pub mod fold;
    pub mod record;
}
/// The services of a shard (the route cache moved here first).
pub mod services {
    pub mod route_cache;
}
pub use log::fold as recovery;
pub use log::record;
pub use services::route_cache as routes;

pub use ctx::Ctx;
pub use durable::{Codec, DurableState, LogRefusal, LogSink};
pub use entity::{Entity, KindId};
pub use envelope::{Envelope, Op};
pub use error::{AskError, SendError};
pub use kinds::{DuplicateKind, Kinds};
pub use migrate::{Hot, MoveOutcome, MoveRequest, RebalancePolicy};
pub use shard::{Counters, Destination, Outbox, Shard, ShardSpec};
pub use timers::TimerId;
