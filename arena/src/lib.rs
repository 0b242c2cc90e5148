//! The arena: a small authoritative game world used to judge percore the way its
//! users will — players carried at a given latency, next to the server they would
//! otherwise write.
//!
//! - [`proto`]: the wire protocol (binary bodies; length-prefixed frames over TCP,
//!   binary messages over WebSocket). Any arena server speaks it.
//! - [`bots`]: the bot swarm (binary `arena-bots`): N real connections that join
//!   rooms, move, chat and trade, and measure input → broadcast latency.
//! - [`tokio_peer`]: the tokio servers percore must beat (binary `arena-tokio`).
//! - [`ledger`]: the tokio peer's durable gold (an fsynced append-only log).
//!
//! This package does not depend on percore: percore's own arena server joins it
//! later as the `arena` binary, speaking [`proto`] and facing the same [`bots`].
//! `docs/ARENA.md` describes the protocol and the measurements.

#![deny(unsafe_code)]

pub mod bots;
pub mod cli;
pub mod ledger;
pub mod proto;
pub mod tokio_peer;
