//! Per-shard metrics: counters the shard publishes with relaxed stores, read
//! as a snapshot from any thread.

use std::sync::atomic::{AtomicU64, Ordering};

use percore_shards::driver::Counters;

/// One shard's counters at the moment of a snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardMetrics {
    /// Shard index.
    pub shard: usize,
    /// Core it runs on.
    pub core: usize,
    /// Messages handed to handlers.
    pub handled: u64,
    /// Messages handlers sent.
    pub sent: u64,
    /// Messages that found their ring full and waited in an overflow queue.
    pub overflowed: u64,
    /// Entities activated.
    pub activations: u64,
    /// Entities deactivated (stopped or panicked).
    pub deactivations: u64,
    /// Panics caught.
    pub panics: u64,
    /// Publishes that found a ring full.
    pub ring_full: u64,
    /// Timer firings.
    pub timers_fired: u64,
    /// Nanoseconds spent in passes that handled messages.
    pub busy_ns: u64,
    /// Live entities.
    pub entities: u64,
    /// Times the shard parked.
    pub parks: u64,
    /// Durable records (states and deletions) appended.
    pub records_logged: u64,
    /// Durable changes the log refused or failed.
    pub records_failed: u64,
    /// Outputs of durable handlers released once durable.
    pub gated_released: u64,
    /// Tells of durable handlers dropped because their change failed.
    pub gated_dropped: u64,
    /// Checkpoints completed.
    pub checkpoints: u64,
    /// 1 once the shard's log failed to sync and is poisoned.
    pub log_poisoned: u64,
    /// Entities that moved away from this shard.
    pub migrations_out: u64,
    /// Entities that moved to this shard.
    pub migrations_in: u64,
    /// Messages this shard forwarded behind an entity that had just left it.
    pub forwarded: u64,
    /// Messages this shard, as their entity's home, sent on to the shard the
    /// entity lives on now (clients always address the home; shards do
    /// until they learn where the entity went).
    pub rerouted: u64,
    /// Messages other shards' handlers sent that reached their entity on
    /// this shard straight from the sender's route cache (learned from a
    /// hint, not via the home). Counted where the entity lives.
    pub route_hits: u64,
    /// Messages shards' handlers sent that reached their entity on this
    /// shard only after a detour, because the sender's route was absent (it
    /// went to the home) or stale (it went to a shard the entity had left).
    /// Each one hints the sender. Counted where the entity lives.
    pub route_misses: u64,
    /// Routes this shard changed as a sender (to a learned shard, or back
    /// to the home).
    pub route_switches: u64,
    /// Messages sent to this shard by a stale route (the entity had left)
    /// that it passed to the entity's home.
    pub bounced: u64,
    /// Messages held by this shard until a moving entity was settled.
    pub held: u64,
    /// Explicit moves refused because the entity pinned itself.
    pub moves_refused: u64,
    /// Longest migration pause seen on arrival here, nanoseconds.
    pub pause_ns_max: u64,
    /// Sum of the migration pauses of arrivals here, nanoseconds.
    pub pause_ns_total: u64,
    /// Share of the last heat window spent handling messages, in thousandths.
    pub load_permille: u64,
}

/// A snapshot of every shard's metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// One entry per shard, by index.
    pub shards: Vec<ShardMetrics>,
}

impl Metrics {
    /// The sum over all shards (`shard` and `core` are 0).
    pub fn total(&self) -> ShardMetrics {
        let mut t = ShardMetrics::default();
        for s in &self.shards {
            t.handled += s.handled;
            t.sent += s.sent;
            t.overflowed += s.overflowed;
            t.activations += s.activations;
            t.deactivations += s.deactivations;
            t.panics += s.panics;
            t.ring_full += s.ring_full;
            t.timers_fired += s.timers_fired;
            t.busy_ns += s.busy_ns;
            t.entities += s.entities;
            t.parks += s.parks;
            t.records_logged += s.records_logged;
            t.records_failed += s.records_failed;
            t.gated_released += s.gated_released;
            t.gated_dropped += s.gated_dropped;
            t.checkpoints += s.checkpoints;
            t.log_poisoned += s.log_poisoned;
            t.migrations_out += s.migrations_out;
            t.migrations_in += s.migrations_in;
            t.forwarded += s.forwarded;
            t.rerouted += s.rerouted;
            t.route_hits += s.route_hits;
            t.route_misses += s.route_misses;
            t.route_switches += s.route_switches;
            t.bounced += s.bounced;
            t.held += s.held;
            t.moves_refused += s.moves_refused;
            t.pause_ns_max = t.pause_ns_max.max(s.pause_ns_max);
            t.pause_ns_total += s.pause_ns_total;
            t.load_permille += s.load_permille;
        }
        t
    }
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

/// Where a shard publishes its counters.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct MetricsCell {
    fields: [AtomicU64; 30],
}

impl MetricsCell {
    pub(crate) fn publish(
        &self,
        c: &Counters,
        entities: usize,
        parks: u64,
        poisoned: bool,
        checkpoints: u64,
        load: f32,
    ) {
        let values = [
            c.handled,
            c.sent,
            c.overflowed,
            c.activations,
            c.deactivations,
            c.panics,
            c.ring_full,
            c.timers_fired,
            c.busy_ns,
            entities as u64,
            parks,
            c.records_logged,
            c.records_failed,
            c.gated_released,
            c.gated_dropped,
            checkpoints,
            poisoned as u64,
            c.migrations_out,
            c.migrations_in,
            c.forwarded,
            c.rerouted,
            c.held,
            c.moves_refused,
            c.pause_ns_max,
            (load * 1000.0).round() as u64,
            c.pause_ns_total,
            c.route_hits,
            c.route_misses,
            c.route_switches,
            c.bounced,
        ];
        for (cell, v) in self.fields.iter().zip(values) {
            cell.store(v, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self, shard: usize, core: usize) -> ShardMetrics {
        let f = |i: usize| self.fields[i].load(Ordering::Relaxed);
        ShardMetrics {
            shard,
            core,
            handled: f(0),
            sent: f(1),
            overflowed: f(2),
            activations: f(3),
            deactivations: f(4),
            panics: f(5),
            ring_full: f(6),
            timers_fired: f(7),
            busy_ns: f(8),
            entities: f(9),
            parks: f(10),
            records_logged: f(11),
            records_failed: f(12),
            gated_released: f(13),
            gated_dropped: f(14),
            checkpoints: f(15),
            log_poisoned: f(16),
            migrations_out: f(17),
            migrations_in: f(18),
            forwarded: f(19),
            rerouted: f(20),
            held: f(21),
            moves_refused: f(22),
            pause_ns_max: f(23),
            load_permille: f(24),
            pause_ns_total: f(25),
            route_hits: f(26),
            route_misses: f(27),
            route_switches: f(28),
            bounced: f(29),
        }
    }
}
