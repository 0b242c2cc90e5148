//! Layer 6, driver: one shard's single-threaded world — its entity tables,
//! the services their handlers use, and its migration state — and the only
//! `impl Shard`: short delegations that the runtime calls.
//!
//! The runtime drives a shard: it hands in envelopes from the rings
//! ([`Shard::deliver`]), the time ([`Shard::set_now`]), runs the local queue and
//! due timers, and takes back what the shard wants sent from the outboxes
//! ([`Shard::outbox_to_shard`], [`Shard::outbox_to_client`]). Nothing here blocks,
//! spawns or reads a clock.

use std::sync::Arc;

use crate::dispatch::{self, Tables};
use crate::envelope::{Disarmed, Envelope, Op};
use crate::error::{AskError, RestoreError};
use crate::id::{EntityId, KindId};
use crate::kinds::Kinds;
use crate::log::{LogRefusal, LogSink};
use crate::migrate::{Migration, Protocol};
use crate::rebalance::RebalancePolicy;
use crate::services::counters::Counters;
use crate::services::heat::Hot;
use crate::services::outbox::{Destination, Outbox};
use crate::services::{Services, ShardSpec};

/// One shard: entity tables plus services. Single-threaded; see the module docs.
pub struct Shard {
    tables: Tables,
    svc: Services,
    mig: Migration,
    kinds: Arc<Kinds>,
}

impl Shard {
    /// A shard with an empty table for every kind in `kinds`.
    ///
    /// # Panics
    ///
    /// If `spec.shard >= spec.shard_count`, `spec.shard_count` exceeds
    /// [`MAX_SHARDS`](crate::MAX_SHARDS) or `spec.overflow_cap == 0`.
    pub fn new(spec: ShardSpec, kinds: Arc<Kinds>) -> Self {
        Shard {
            tables: kinds.make_tables(),
            svc: Services::new(spec, kinds.index()),
            mig: Migration::default(),
            kinds,
        }
    }

    #[inline]
    fn proto(&mut self) -> Protocol<'_> {
        Protocol {
            tables: &mut self.tables,
            svc: &mut self.svc,
            mig: &mut self.mig,
        }
    }

    /// This shard's index.
    pub fn index(&self) -> usize {
        self.svc.shard()
    }

    /// The registry this shard was built with.
    pub fn kinds(&self) -> &Arc<Kinds> {
        &self.kinds
    }

    /// Handles one envelope that arrived from a ring.
    ///
    /// # Safety
    ///
    /// `env` must come from this crate's typed constructors for the registry
    /// this shard was built with ([`Kinds::message`], [`Kinds::move_request`]),
    /// or from an outbox of a shard built with the same registry. A handler
    /// reads a message's payload as its kind's `Msg` type: an envelope whose
    /// kind id names another type than its payload's would be read as the
    /// wrong type.
    #[inline]
    pub unsafe fn deliver(&mut self, env: Envelope) {
        self.dispatch(env);
    }

    /// Handles one envelope this shard's own services made or took from a
    /// ring (see [`Shard::deliver`] for why that matters).
    #[inline]
    fn dispatch(&mut self, env: Envelope) {
        match env.op {
            Op::Tell | Op::AskClient | Op::AskEntity | Op::Migrate => {
                // NB: one test for the common case (nothing settling here);
                // see the `tell_cross_core` bench. An entity that moved away
                // is not in its table: a miss, where entities have moved, is
                // checked against the places before it activates anything,
                // so settled moves cost the deliveries that hit nothing.
                if env.status == 0 && self.mig.quiet() {
                    let activate = self.mig.no_places();
                    self.tables
                        .deliver_here_if(Disarmed::new(env), &mut self.svc, activate);
                    if !activate {
                        if let Some(env) = self.svc.take_missed() {
                            self.proto().route_addressed(env);
                        }
                    }
                } else {
                    self.proto().route_addressed(env);
                }
            }
            Op::Switch | Op::Rejoin => self.proto().route_addressed(env),
            Op::ReplyEntity => dispatch::resume(&mut self.svc, env),
            Op::ReplyClient => debug_assert!(false, "a client reply reached a shard"),
            Op::Transfer
            | Op::Moved
            | Op::Marker
            | Op::Released
            | Op::Fence
            | Op::Switched
            | Op::Hint => self.proto().deliver_control(env),
        }
    }

    /// Starts loading what delivering envelopes for `targets` will read
    /// first (the index lines of their tables), without waiting. A runtime
    /// that holds a batch of envelopes calls this before it hands them to
    /// [`Shard::deliver`], so the index misses of the batch overlap instead
    /// of each stalling the shard in turn. Any kind and key are harmless: an
    /// unknown kind is ignored, a key that is not here costs one wasted
    /// line. Tables small enough to stay in the cache skip it, and when every
    /// table is that small this returns before looking at `targets`.
    #[inline]
    pub fn prefetch(&self, targets: impl IntoIterator<Item = EntityId>) {
        self.tables.prefetch(targets);
    }

    /// Handles up to `max` messages from the local queue (messages this
    /// shard's handlers sent to entities of this shard, and due timers).
    /// Returns how many it handled.
    pub fn run_local(&mut self, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Some(env) = self.svc.out().pop_local() else {
                break;
            };
            self.dispatch(env);
            n += 1;
        }
        n
    }

    /// Messages waiting in the local queue.
    pub fn local_len(&self) -> usize {
        self.svc.out_ref().local_len()
    }

    /// Sets the shard's clock (nanoseconds since the engine started).
    #[inline]
    pub fn set_now(&mut self, now_ns: u64) {
        self.svc.set_now(now_ns);
    }

    /// The shard's clock.
    pub fn now_ns(&self) -> u64 {
        self.svc.now_ns()
    }

    /// Moves up to `max` due timers' messages onto the local queue. Returns how
    /// many fired.
    pub fn fire_timers(&mut self, max: usize) -> usize {
        self.svc.fire_timers(max)
    }

    /// The earliest timer deadline, if any timer is live.
    pub fn next_deadline_ns(&mut self) -> Option<u64> {
        self.svc.timers_mut().next_deadline()
    }

    /// Live timers.
    pub fn timer_count(&self) -> usize {
        self.svc.timers().len()
    }

    /// What waits to be published to shard `shard`.
    #[inline]
    pub fn outbox_to_shard(&mut self, shard: usize) -> &mut Outbox {
        self.svc.out().shard_outbox(shard)
    }

    /// What waits to be published to client slot `slot`.
    #[inline]
    pub fn outbox_to_client(&mut self, slot: usize) -> &mut Outbox {
        self.svc.out().client_outbox(slot)
    }

    /// An outbox and the counters together (to publish and count in one go).
    #[inline]
    pub fn outbox_and_counters(&mut self, dest: Destination) -> (&mut Outbox, &mut Counters) {
        self.svc.outbox_and_counters(dest)
    }

    /// Whether any outbox holds envelopes.
    pub fn has_outbound(&self) -> bool {
        self.svc.out_ref().has_outbound()
    }

    /// Logs what this pass changed and closes the output gate over what the
    /// durable handlers emitted: every dirty durable entity whose encoding
    /// changed is appended once, deletions are appended, and the outputs held
    /// this pass wait for the highest unresolved LSN (or go at once if the log
    /// has nothing unresolved). Call once at the end of every pass.
    pub fn commit(&mut self, sink: &mut dyn LogSink) {
        let failed = self.tables.log_dirty(&mut self.svc, sink);
        if self.mig.has_arrivals() {
            self.proto().note_arrival_lsns();
        }
        self.svc.close_pass(sink, failed);
    }

    /// Records below `lsn_end` are durable: held outputs waiting for them go
    /// out, their entities' durable copies advance.
    pub fn durable_through(&mut self, lsn_end: u64) {
        self.tables.durable_through(&mut self.svc, lsn_end);
        self.proto().release_arrivals(lsn_end);
        self.svc.release_held(lsn_end, None);
    }

    /// Records in `lsns` failed: their entities go back to their last durable
    /// state, held outputs waiting for them fail with `err`.
    pub fn failed(&mut self, lsns: std::ops::Range<u64>, err: AskError) {
        self.tables.failed(&mut self.svc, lsns.clone());
        self.svc.release_held(lsns.start, None);
        self.svc.release_held(lsns.end, Some(err));
    }

    /// Whether records or held outputs wait for the log.
    pub fn has_unresolved(&self) -> bool {
        self.svc.gate().has_unresolved()
    }

    /// Whether any kind of this shard is durable.
    pub fn has_durable_kinds(&self) -> bool {
        self.tables.iter().any(|t| t.is_durable())
    }

    /// Puts a recovered entity (its last durable record) in its table.
    ///
    /// `foreign` marks an entity recovered from another shard's log (the shard
    /// count changed): its new home logs it again, with a higher version, at
    /// the end of its first pass, so no other shard's checkpoint can delete its
    /// only record.
    ///
    /// # Errors
    ///
    /// [`RestoreError`] when the kind is unknown or not durable, the key is
    /// recovered twice, or the payload does not decode.
    pub fn restore(
        &mut self,
        kind_hash: u64,
        key: u64,
        version: u64,
        bytes: &[u8],
        foreign: bool,
    ) -> Result<(), RestoreError> {
        self.tables
            .restore(&mut self.svc, kind_hash, key, version, bytes, foreign)
    }

    /// Remembers a recovered deletion so the key's next life logs a higher
    /// version; a `foreign` one (from another shard's log) is logged again here.
    pub fn restore_tombstone(&mut self, kind_hash: u64, key: u64, version: u64, foreign: bool) {
        self.tables
            .restore_tombstone(&mut self.svc, kind_hash, key, version, foreign);
    }

    /// Runs every recovered entity's [`Entity::recovered`](crate::Entity::recovered) hook.
    pub fn run_recovered_hooks(&mut self) {
        self.tables.run_recovered(&mut self.svc);
    }

    /// Appends every durable entity's last logged state and every remembered
    /// deletion (between the log's checkpoint begin and end markers),
    /// including entities that left and whose new owner's record is not yet
    /// durable. Returns how many records.
    ///
    /// # Errors
    ///
    /// The sink's refusal.
    pub fn checkpoint(&mut self, sink: &mut dyn LogSink) -> Result<usize, LogRefusal> {
        let n = self.tables.checkpoint(sink)?;
        Ok(n + self.proto().checkpoint_departed(sink)?)
    }

    /// Forgets client slot `slot` (its handle was dropped): drops its queued
    /// and held replies, so a later occupant of the slot never sees them.
    pub fn forget_client(&mut self, slot: usize) {
        self.svc.forget_client(slot);
    }

    /// Envelopes waiting to be published to other shards, all destinations.
    /// The runtime stops taking client requests while this is high, so an
    /// external flood is pushed back to the clients instead of overflowing
    /// handler sends.
    #[inline]
    pub fn shard_backlog(&self) -> usize {
        self.svc.shard_backlog()
    }

    /// Whether this shard, as an entity's owner, hints the shards whose
    /// messages reached the entity only after a detour (through its home, or
    /// a shard it had left), so they learn to send to it directly. On by
    /// default. Off, no shard ever caches a route: moved entities are
    /// reached through their home, and the route protocol (lanes, switch
    /// markers) stays idle. Misses are counted either way.
    pub fn set_route_learning(&mut self, on: bool) {
        self.svc.routes_mut().set_learning(on);
    }

    /// The overflow cap this shard was built with.
    pub fn overflow_cap(&self) -> usize {
        self.svc.spec().overflow_cap
    }

    /// Entity asks still waiting for their reply.
    pub fn pending_asks(&self) -> usize {
        self.svc.continuations_waiting()
    }

    /// The shard's counters.
    pub fn counters(&self) -> &Counters {
        self.svc.counters()
    }

    /// The shard's counters, for the runtime to add what it measures.
    pub fn counters_mut(&mut self) -> &mut Counters {
        self.svc.counters_mut()
    }

    /// Live entities on this shard, all kinds.
    pub fn entity_count(&self) -> usize {
        self.tables.iter().map(|t| t.len()).sum()
    }

    /// Live entities of `kind`.
    pub fn entity_count_of(&self, kind: KindId) -> usize {
        self.tables.get(kind).len()
    }

    /// Bytes the tables use beyond entity states (keys, indexes, slack).
    pub fn table_overhead_bytes(&self) -> usize {
        self.tables.iter().map(|t| t.overhead_bytes()).sum()
    }

    /// Carries out the moves requested during this pass (explicit requests
    /// and the rebalancer's; at most
    /// [`MOVES_PER_PASS_MAX`](crate::limits::MOVES_PER_PASS_MAX), the rest
    /// next pass). Call once per pass, after [`Shard::commit`] when the
    /// shard logs: a durable entity leaves only after its last change here
    /// was appended, so the outputs this shard holds for that change wait
    /// for the right record.
    pub fn run_moves(&mut self) {
        if self.has_moves() {
            self.proto().run_moves();
        }
    }

    /// Shards whose inbound ring the runtime must drain completely before
    /// delivering anything more (an entity that sends moved from there);
    /// this shard's own index means its local queue, as long as it is now
    /// ([`Shard::run_local`] of [`Shard::local_len`]). Check after each
    /// delivery from a ring.
    #[inline]
    pub fn take_fences(&mut self) -> Option<Vec<usize>> {
        self.mig.take_fences()
    }

    /// Ends a heat window: records this shard's hottest entities and, when
    /// `policy` says this shard is clearly busier than the least busy one,
    /// queues moves of its hottest movable entities there (carried out by
    /// [`Shard::run_moves`]). `window` is the index of the window that now
    /// begins; `loads` holds every shard's share of the ending window spent
    /// handling messages. Returns how many moves it queued.
    pub fn end_window(&mut self, window: u32, loads: &[f32], policy: &RebalancePolicy) -> usize {
        self.proto().end_window(window, loads, policy)
    }

    /// The hottest entities of the last completed window, hottest first.
    pub fn hottest(&self) -> &[Hot] {
        self.mig.hottest()
    }

    /// Smoothed heat (messages per window) of entity `key` of `kind`, if it
    /// lives here.
    pub fn heat_of(&self, kind: KindId, key: u64) -> Option<f32> {
        self.tables
            .try_get(kind)?
            .heat_of(key, self.svc.heat().window())
    }

    /// Whether entities settled here since the last [`Shard::stamp_settled`].
    #[inline]
    pub fn has_unstamped(&self) -> bool {
        self.mig.has_unstamped()
    }

    /// Records the pauses of the entities that settled since the last call,
    /// as ending at `now_ns` (the runtime reads its clock right after the
    /// deliveries that settled them, so a pause is never understated).
    pub fn stamp_settled(&mut self, now_ns: u64) {
        self.mig.stamp_settled(now_ns, &mut self.svc);
    }

    /// Whether moves wait to be carried out (see [`Shard::run_moves`]).
    #[inline]
    pub fn has_moves(&self) -> bool {
        self.svc.moves().any()
    }

    /// Moves the pauses recorded since the last call (nanoseconds an entity
    /// could not handle messages, one per arrival) into `out`.
    pub fn take_pauses(&mut self, out: &mut Vec<u64>) {
        self.mig.take_pauses(out);
    }

    /// Whether entity `key` of `kind` lives on this shard now.
    pub fn owns(&self, kind: KindId, key: u64) -> bool {
        self.tables.try_get(kind).is_some_and(|t| t.contains(key))
    }

    /// Whether migrations are in flight here: entities waiting for their
    /// marker, moves not yet carried out, route switches not yet
    /// acknowledged, or messages held for a sender's switch marker.
    pub fn migrating(&self) -> bool {
        self.mig.migrating(&self.svc)
    }
}
