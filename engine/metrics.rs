//! Per-shard metrics: the shard's counters and the runtime's own figures,
//! published by the shard thread, read as a snapshot from any thread.

use std::sync::Mutex;

use percore_shards::driver::Counters;

/// One shard's metrics at the moment of a snapshot: the shard's own
/// [`Counters`] (what it handled, sent, logged, moved, …: see their docs),
/// which this dereferences to (`m.handled` reads `m.counters.handled`),
/// and what only the runtime knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardMetrics {
    /// Shard index.
    pub shard: usize,
    /// Core it runs on.
    pub core: usize,
    /// The shard's counters, as it last published them.
    pub counters: Counters,
    /// Live entities.
    pub entities: u64,
    /// Times the shard parked.
    pub parks: u64,
    /// Checkpoints completed.
    pub checkpoints: u64,
    /// 1 once the shard's log failed to sync and is poisoned.
    pub log_poisoned: u64,
    /// Share of the last heat window spent handling messages, in thousandths.
    pub load_permille: u64,
}

impl std::ops::Deref for ShardMetrics {
    type Target = Counters;

    fn deref(&self) -> &Counters {
        &self.counters
    }
}

/// A snapshot of every shard's metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// One entry per shard, by index.
    pub shards: Vec<ShardMetrics>,
}

impl Metrics {
    /// The sum over all shards (`shard` and `core` are 0; `pause_ns_max`
    /// is the longest of any shard).
    pub fn total(&self) -> ShardMetrics {
        let mut t = ShardMetrics::default();
        for s in &self.shards {
            add_counters(&mut t.counters, &s.counters);
            t.entities += s.entities;
            t.parks += s.parks;
            t.checkpoints += s.checkpoints;
            t.log_poisoned += s.log_poisoned;
            t.load_permille += s.load_permille;
        }
        t
    }
}

/// `t += s`, counter by counter (see [`Counters::add`]).
fn add_counters(t: &mut Counters, s: &Counters) {
    t.add(s);
}

/// Migration pauses (time an entity could not handle messages, from leaving
/// its old shard to being settled on the new one), over the engine's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PauseStats {
    /// Migrations measured.
    pub count: u64,
    /// Median, nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile, nanoseconds.
    pub p99_ns: u64,
    /// Longest, nanoseconds.
    pub max_ns: u64,
}

/// Where a shard publishes its metrics: a whole [`ShardMetrics`] behind a
/// lock, taken by the shard at most once a millisecond while busy (and when
/// it goes idle) and by readers of `Engine::metrics`; never contended for
/// long, and no per-field copy to keep in step with `Counters`.
#[derive(Default)]
pub(crate) struct MetricsCell {
    latest: Mutex<ShardMetrics>,
}

/// What only the runtime knows, published beside a shard's counters.
pub(crate) struct RuntimeFigures {
    pub(crate) entities: usize,
    pub(crate) parks: u64,
    pub(crate) poisoned: bool,
    pub(crate) checkpoints: u64,
    pub(crate) load: f32,
}

impl MetricsCell {
    pub(crate) fn publish(&self, counters: &Counters, runtime: RuntimeFigures) {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest.counters = *counters;
        latest.entities = runtime.entities as u64;
        latest.parks = runtime.parks;
        latest.checkpoints = runtime.checkpoints;
        latest.log_poisoned = u64::from(runtime.poisoned);
        latest.load_permille = (runtime.load * 1000.0).round() as u64;
    }

    pub(crate) fn snapshot(&self, shard: usize, core: usize) -> ShardMetrics {
        ShardMetrics {
            shard,
            core,
            ..*self.latest.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}
