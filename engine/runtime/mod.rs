//! The runtime of one shard: a thread pinned to its core running a glommio
//! `LocalExecutor`, whose main task is the shard loop.
//!
//! One pass of the loop: read the clock; drain each inbound ring (other
//! shards', then clients') by at most [`RING_DRAIN_BATCH`] envelopes, asking
//! the shard to prefetch the index lines of a chunk before delivering it
//! (`Shard::prefetch`: the misses of a big table overlap); fire due
//! timers; run the local queue by at most [`LOCAL_BATCH`]; publish every
//! outbox in one batch per destination and ring the doorbells of sleepers.
//! With nothing to do it follows the idle policy: poll, spin then park, or
//! park (see `crate::mesh::wake` for the wakeup protocol).
//!
//! A shard that keeps finding a trickle of work pass after pass (a stream of
//! single tells) gathers before its next pass: it waits, polling its rings
//! only every [`GATHER_CHECK_SPINS`] pauses, until a batch has formed or the
//! stream stalls (see `ShardLoop::gather`).

mod client_ends;
mod idle;
mod publish;
mod shard_loop;
mod spawn;
mod windows;

pub(crate) use spawn::{spawn_shard, ShardInit};

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
/// Least time between two publishes of a shard that goes idle after work and
/// spins (a parking shard publishes before it parks).
pub(crate) const IDLE_PUBLISH_GAP_NS: u64 = 50_000;
const _: () = assert!(IDLE_PUBLISH_GAP_NS < METRICS_INTERVAL_NS);
/// Consecutive passes with work after which a shard gathers before the next
/// one. An ask round trip never makes three in a row, so sequential asks are
/// not delayed (`versus` ask p99 unchanged).
pub(crate) const GATHER_STREAK: u32 = 3;
/// A pass that handled fewer than this is a trickle worth gathering after,
/// and gathering ends once this many envelopes are waiting.
pub(crate) const GATHER_MIN: usize = 64;
/// `spin_loop` hints between two looks at the rings while gathering (about
/// 250 ns on the development machine, 16 ns a hint): the longest a message
/// that ends a stream waits beyond its arrival.
pub(crate) const GATHER_CHECK_SPINS: u32 = 16;
/// Most `spin_loop` hints one gather lasts (about 2 µs here).
pub(crate) const GATHER_MAX_SPINS: u32 = 128;
