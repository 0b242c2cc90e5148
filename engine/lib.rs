//! # percore
//!
//! A shard-per-core entity engine. Every core runs one **shard**: a pinned
//! thread with a glommio executor that owns a share of your **entities** —
//! players, rooms, accounts, ticket booths. Shards share nothing; they
//! exchange messages over lock-free single-producer/single-consumer rings.
//!
//! ## The model
//!
//! - An entity kind is a Rust type implementing [`Entity`]: a stable name, a
//!   message type, a reply type, how to activate a key never seen before, and
//!   a synchronous handler `(&mut self, msg, &mut Ctx) -> Reply`.
//! - Every `u64` key of a registered kind exists virtually: the first message
//!   activates it on its home shard (a hash of kind and key).
//! - One message at a time per entity, on its own shard: handlers need no
//!   locks. Messages from one sender to one entity are handled in send order.
//! - Outside the engine, a [`Client`] (one per thread) `tell`s (fire and
//!   forget) and `ask`s (blocking or async). Inside a handler, [`Ctx`] tells,
//!   asks (the reply comes back as a message: a continuation), sets timers and
//!   can stop its entity.
//! - A panicking handler is caught: its entity restarts fresh, an asker gets
//!   [`AskError::Panicked`], the shard goes on.
//! - Entities move between shards while the engine runs —
//!   [`Client::migrate`], [`Ctx::move_to`], or the rebalancer
//!   ([`RebalanceConfig`]) moving the hottest entities off a busy shard —
//!   with their state, timers and every sender's order; senders keep
//!   addressing them the same way. [`Ctx::pin`] or `const MOVABLE = false`
//!   keeps them put.
//! - Nothing is dropped silently: full rings give backpressure
//!   ([`TellError::Full`] and [`ClientAskError::Full`] hand the message
//!   back, [`TellBatchError`] every unsent one), handler sends wait in a
//!   bounded overflow queue.
//!
//! ## Example
//!
//! ```
//! use percore::{Ctx, Engine, Entity, IdlePolicy};
//!
//! /// A bank account.
//! struct Account { balance: i64 }
//!
//! enum Op { Deposit(i64), Balance }
//!
//! impl Entity for Account {
//!     const KIND: &'static str = "account";
//!     type Msg = Op;
//!     type Reply = i64;
//!
//!     fn activate(_key: u64) -> Self {
//!         Account { balance: 0 }
//!     }
//!
//!     fn handle(&mut self, op: Op, _ctx: &mut Ctx<'_, Self>) -> i64 {
//!         if let Op::Deposit(amount) = op {
//!             self.balance += amount;
//!         }
//!         self.balance
//!     }
//! }
//!
//! let engine = Engine::builder()
//!     .shards(1)
//!     .idle(IdlePolicy::Park)
//!     .register::<Account>()
//!     .build()?;
//! let client = engine.client()?;
//! for _ in 0..10 {
//!     client.tell::<Account>(42, Op::Deposit(5)).unwrap();
//! }
//! // Same sender, same entity: the ask is handled after the ten deposits.
//! assert_eq!(client.ask::<Account>(42, Op::Balance)?, 50);
//! drop(client);
//! engine.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Threads
//!
//! [`Engine`] is `Send + Sync`; [`Client`] is `Send` but not `Sync` (make one
//! per thread). Handlers run on shard threads.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod clients;
mod config;
mod durability;
mod engine;
mod error;
pub mod log;
mod mesh;
mod metrics;
mod pin;
mod runtime;
mod shared;

pub use clients::{AskFuture, Client, BATCH_CHUNK};
pub use config::{Cores, DurabilityLevel, EngineConfig, IdlePolicy, RebalanceConfig};
pub use durability::RecoveryReport;
pub use engine::{Engine, EngineBuilder, MAX_SHARDS};
pub use error::{ClientAskError, Error, MigrateError, TellBatchError, TellError};
pub use metrics::{Metrics, PauseStats, ShardMetrics};
pub use percore_shards::{
    AskError, Ctx, DecodeError, DurableState, Entity, EntityId, Hot, KindId, SendError, TimerId,
};

pub use bytemuck;

/// The README's examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
