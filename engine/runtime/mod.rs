//! The runtime of one shard: a thread pinned to its core running a glommio
//! `LocalExecutor`, whose main task is the shard loop.
//!
//! One pass of the loop: read the clock; drain each inbound ring (other
//! shards', then clients') by at most [`RING_DRAIN_BATCH`] envelopes; fire due
//! timers; run the local queue by at most [`LOCAL_BATCH`]; publish every
//! outbox in one batch per destination and ring the doorbells of sleepers.
//! With nothing to do it follows the idle policy: poll, spin then park, or
//! park (see `crate::sync` for the wakeup protocol).

mod shard_loop;

pub(crate) use shard_loop::{spawn_shard, ShardInit};

/// Most envelopes taken from one inbound ring per pass, so one busy sender
/// cannot starve the others (fairness), and a pass stays short.
pub(crate) const RING_DRAIN_BATCH: usize = 256;
/// Most local-queue messages handled per pass.
pub(crate) const LOCAL_BATCH: usize = 1024;
/// Local-queue messages handled between publishes of the outboxes.
pub(crate) const LOCAL_SLICE: usize = 64;
/// Most timers fired per pass.
pub(crate) const TIMER_BATCH: usize = 1024;
/// How often a busy shard publishes its metrics.
pub(crate) const METRICS_INTERVAL_NS: u64 = 1_000_000;
