//! Layer 1, data: the log, sans-I/O. The record format ([`record`]), the
//! recovery fold over every shard's records ([`fold`]), the interface a shard
//! appends through ([`LogSink`]) and what each durable entity remembers of
//! its records (`state`). Depends on nothing above the vocabulary: the
//! runtime reads and writes segments with these, the shard only appends.

pub mod fold;
pub mod record;
mod sink;
pub(crate) mod state;

pub use sink::{LogRefusal, LogSink};
