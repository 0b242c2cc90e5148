//! Clients: how threads outside the engine talk to entities.
//!
//! - `registry`: client slots, the rings and signals a client shares with
//!   the shards, and setting up a new client.
//! - `client`: the [`Client`] handle: tell, tell_batch, ask, migrate.
//! - `ask`: [`AskFuture`], the async ask.

mod ask;
mod client;
pub(crate) mod registry;

pub use ask::AskFuture;
pub use client::{Client, BATCH_CHUNK};
