//! Layer 2, services: the shard's counters, monotonic; the runtime publishes
//! snapshots.

/// Counters of one shard. Monotonic; the runtime publishes snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages handed to a handler.
    pub handled: u64,
    /// Messages handlers sent (to any entity, on this shard or another).
    pub sent: u64,
    /// Messages that found their ring full and waited in an overflow queue.
    pub overflowed: u64,
    /// Entities activated.
    pub activations: u64,
    /// Entities deactivated (stopped themselves or panicked).
    pub deactivations: u64,
    /// Panics caught (handlers, activations, continuations, drops).
    pub panics: u64,
    /// Flushes that found a ring full.
    pub ring_full: u64,
    /// Timer firings.
    pub timers_fired: u64,
    /// Nanoseconds spent handling messages (measured by the runtime per pass).
    pub busy_ns: u64,
    /// Durable state records (and tombstones) appended to the log.
    pub records_logged: u64,
    /// Changes of durable entities the log refused or failed (the entity went
    /// back to its last durable state).
    pub records_failed: u64,
    /// Outputs of durable handlers released after their records were durable.
    pub gated_released: u64,
    /// Tells of durable handlers dropped because their change failed to log.
    pub gated_dropped: u64,
    /// Entities that left this shard.
    pub migrations_out: u64,
    /// Entities that arrived on this shard.
    pub migrations_in: u64,
    /// Messages an old owner forwarded behind an entity that left it.
    pub forwarded: u64,
    /// Messages the home shard sent on to an entity living elsewhere
    /// (clients always address the home; shards do until they learn).
    pub rerouted: u64,
    /// Messages other shards' handlers sent that reached their entity here
    /// straight from the sender's route cache (sent to this shard, not to
    /// the home). Counted where the entity lives.
    pub route_hits: u64,
    /// Messages shards' handlers sent that reached their entity here only
    /// after a detour: the sender's route was absent (it sent to the home)
    /// or stale (it sent to a shard the entity had left). Each one sends its
    /// sender a hint. Counted where the entity lives.
    pub route_misses: u64,
    /// Route changes this shard made as a sender (switch markers sent).
    pub route_switches: u64,
    /// Direct messages this shard sent to the entity's home because the
    /// entity no longer lived here (a sender's stale route).
    pub bounced: u64,
    /// Messages held by a new owner until the migration marker arrived, or
    /// by an owner until a sender's route switch marker arrived.
    pub held: u64,
    /// Explicit moves refused (the entity pinned itself).
    pub moves_refused: u64,
    /// Moves put off to a later pass because a pass carries out at most
    /// [`MOVES_PER_PASS_MAX`](crate::limits::MOVES_PER_PASS_MAX).
    pub moves_deferred: u64,
    /// Entity asks refused because [`CONTINUATIONS_MAX`](crate::limits::CONTINUATIONS_MAX)
    /// continuations already waited (the ask failed with `Overflow`).
    pub asks_refused: u64,
    /// Route hints dropped because the route cache was full
    /// ([`ROUTE_CACHE_CAP`](crate::limits::ROUTE_CACHE_CAP)).
    pub hints_dropped: u64,
    /// Bounces of entities the shard could not remember one by one
    /// ([`BOUNCED_CAP`](crate::limits::BOUNCED_CAP)); while any is
    /// outstanding, every arrival waits for a rejoin marker.
    pub bounce_overflows: u64,
    /// Migration pauses not kept one by one
    /// ([`PAUSES_KEPT_MAX`](crate::limits::PAUSES_KEPT_MAX)).
    pub pauses_dropped: u64,
    /// Sum of migration pauses (from leaving the old owner to being settled
    /// here), nanoseconds.
    pub pause_ns_total: u64,
    /// Longest migration pause, nanoseconds.
    pub pause_ns_max: u64,
}

impl Counters {
    /// Adds `other`'s counts to these (the longest pause is a maximum): the
    /// engine's totals over its shards. The one place that lists every
    /// counter; the destructuring makes a counter added and missed here a
    /// compile error.
    pub fn add(&mut self, other: &Counters) {
        let Counters {
            handled,
            sent,
            overflowed,
            activations,
            deactivations,
            panics,
            ring_full,
            timers_fired,
            busy_ns,
            records_logged,
            records_failed,
            gated_released,
            gated_dropped,
            migrations_out,
            migrations_in,
            forwarded,
            rerouted,
            route_hits,
            route_misses,
            route_switches,
            bounced,
            held,
            moves_refused,
            moves_deferred,
            asks_refused,
            hints_dropped,
            bounce_overflows,
            pauses_dropped,
            pause_ns_total,
            pause_ns_max,
        } = *other;
        self.handled += handled;
        self.sent += sent;
        self.overflowed += overflowed;
        self.activations += activations;
        self.deactivations += deactivations;
        self.panics += panics;
        self.ring_full += ring_full;
        self.timers_fired += timers_fired;
        self.busy_ns += busy_ns;
        self.records_logged += records_logged;
        self.records_failed += records_failed;
        self.gated_released += gated_released;
        self.gated_dropped += gated_dropped;
        self.migrations_out += migrations_out;
        self.migrations_in += migrations_in;
        self.forwarded += forwarded;
        self.rerouted += rerouted;
        self.route_hits += route_hits;
        self.route_misses += route_misses;
        self.route_switches += route_switches;
        self.bounced += bounced;
        self.held += held;
        self.moves_refused += moves_refused;
        self.moves_deferred += moves_deferred;
        self.asks_refused += asks_refused;
        self.hints_dropped += hints_dropped;
        self.bounce_overflows += bounce_overflows;
        self.pauses_dropped += pauses_dropped;
        self.pause_ns_total += pause_ns_total;
        self.pause_ns_max = self.pause_ns_max.max(pause_ns_max);
    }
}
