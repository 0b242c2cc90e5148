//! One shard's single-threaded world: its entity tables and the services their
//! handlers use (outgoing queues, continuations, timers, counters).
//!
//! The runtime drives a shard: it hands in envelopes from the rings
//! ([`Shard::deliver`]), the time ([`Shard::set_now`]), runs the local queue and
//! due timers, and takes back what the shard wants sent from the outboxes
//! ([`Shard::outbox_to_shard`], [`Shard::outbox_to_client`]). Nothing here blocks,
//! spawns or reads a clock.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::dispatch::ErasedTable;
use crate::durable::{LogRefusal, LogSink};
use crate::entity::KindId;
use crate::envelope::{Envelope, Op, SenderId, CLIENT_BIT, MAX_SHARDS, TOKEN_MASK};
use crate::error::AskError;
use crate::kinds::Kinds;
use crate::migrate::{EntityRef, HotList, Migration, PairMap, PairSet, PendingMove};
use crate::routes::RouteEntry;
use crate::timers::Timers;

/// Most keys [`Shard::prefetch`] hands a table in one call (one virtual call
/// per run of keys of one kind, not per key).
const PREFETCH_RUN_MAX: usize = 16;

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
    /// Sum of migration pauses (from leaving the old owner to being settled
    /// here), nanoseconds.
    pub pause_ns_total: u64,
    /// Longest migration pause, nanoseconds.
    pub pause_ns_max: u64,
}

/// Where a shard sends: to another shard, or to a client handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Shard index.
    Shard(usize),
    /// Client slot.
    Client(usize),
}

/// Messages waiting to be published to one destination, in send order.
///
/// Everything a pass produces for a destination is staged here and published
/// in one batch; what does not fit in the ring stays, in order, and goes first
/// next time (the overflow queue).
#[derive(Default)]
pub struct Outbox {
    pub(crate) queue: VecDeque<Envelope>,
    /// How many envelopes at the front were already counted as overflowed.
    counted: usize,
}

impl Outbox {
    /// Number of envelopes waiting.
    #[inline]
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Takes up to `n` envelopes from the front, for publishing.
    #[inline]
    pub fn drain(&mut self, n: usize) -> std::collections::vec_deque::Drain<'_, Envelope> {
        let n = n.min(self.queue.len());
        self.counted = self.counted.saturating_sub(n);
        self.queue.drain(..n)
    }

    /// After a publish that left envelopes behind (the ring was full): counts
    /// the newly overflowed ones and the ring-full event.
    pub fn note_ring_full(&mut self, counters: &mut Counters) {
        counters.ring_full += 1;
        counters.overflowed += (self.queue.len() - self.counted) as u64;
        self.counted = self.queue.len();
    }

    /// Drops everything waiting (a client that went away). Returns how many.
    pub fn clear(&mut self) -> usize {
        let n = self.queue.len();
        self.queue.clear();
        self.counted = 0;
        n
    }

    #[inline]
    pub(crate) fn push(&mut self, env: Envelope) {
        self.queue.push_back(env);
    }
}

/// Where an envelope goes, decided when it is emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// A message a handler sent: routed by the route cache when released.
    Entity,
    Local,
    Shard(usize),
    Client(usize),
}

/// An output of a durable handler, held until the change it follows is durable.
pub(crate) struct Held {
    pub(crate) route: Route,
    pub(crate) env: Envelope,
    /// The entity whose handler emitted it (its held outputs move with it).
    pub(crate) from: EntityRef,
}

/// A continuation: what to do with the reply to an entity's ask.
pub(crate) struct Continuation {
    pub(crate) kind: KindId,
    pub(crate) key: u64,
    #[allow(clippy::type_complexity)]
    pub(crate) call: Box<dyn FnOnce(Result<Envelope, AskError>, KindId, u64) -> Envelope>,
}

/// Sizes and identity of one shard.
#[derive(Clone, Copy, Debug)]
pub struct ShardSpec {
    /// This shard's index.
    pub shard: usize,
    /// Number of shards in the engine.
    pub shard_count: usize,
    /// Client slots (the engine's `max_clients`).
    pub client_slots: usize,
    /// Most envelopes a handler may leave waiting for one destination
    /// (including this shard's own local queue) before its sends fail.
    pub overflow_cap: usize,
}

/// What handlers may use besides their own entity: everything of the shard
/// except the entity tables.
pub struct Services {
    pub(crate) spec: ShardSpec,
    pub(crate) kinds: Arc<Kinds>,
    /// Messages to entities of this shard, handled after the current one.
    pub(crate) local: VecDeque<Envelope>,
    pub(crate) to_shards: Vec<Outbox>,
    pub(crate) to_clients: Vec<Outbox>,
    /// Continuations of this shard's entities' asks; `None` marks a free slot.
    pub(crate) pending: Vec<Option<Continuation>>,
    pub(crate) pending_free: Vec<u32>,
    pub(crate) timers: Timers,
    pub(crate) now_ns: u64,
    pub(crate) counters: Counters,
    /// Set while a durable kind's handler runs: what it emits is held.
    pub(crate) gate: bool,
    /// The entity whose handler runs behind the gate.
    pub(crate) gate_from: EntityRef,
    /// Outputs held during the current pass.
    pub(crate) held: Vec<Held>,
    /// Held outputs of earlier passes, each waiting for its LSN, in order.
    pub(crate) held_batches: VecDeque<(u64, Vec<Held>)>,
    /// Durable entities handled this pass: (kind, key).
    pub(crate) dirty: Vec<(KindId, u64)>,
    /// Deletions to log this pass: (kind hash, key, version).
    pub(crate) tombstones: Vec<(u64, u64, u64)>,
    /// Appended state records not yet resolved: (LSN, kind, key), in order.
    pub(crate) inflight: VecDeque<(u64, KindId, u64)>,
    /// Index of the current heat window.
    pub(crate) window: u32,
    /// Hottest entities offered in the current window.
    pub(crate) hot: HotList,
    /// Entities that refuse to move.
    pub(crate) pinned: PairSet,
    /// Moves handlers asked for ([`Ctx::move_to`](crate::Ctx::move_to)).
    pub(crate) self_moves: Vec<PendingMove>,
    /// The route cache: entities this shard sends to somewhere other than
    /// their home, or is switching routes for (see `routes`).
    pub(crate) routes: PairMap<RouteEntry>,
    /// Whether an owner hints senders whose messages took a detour (see
    /// [`Shard::set_route_learning`]).
    pub(crate) learn_routes: bool,
}

impl Services {
    /// Envelopes waiting in the outboxes for other shards' rings.
    #[inline]
    pub(crate) fn shard_backlog(&self) -> usize {
        self.to_shards.iter().map(Outbox::len).sum()
    }

    /// Queues a handler's message by its destination. Fails, handing the
    /// envelope back, when that destination has `overflow_cap` waiting.
    #[inline]
    pub(crate) fn send(&mut self, env: Envelope) -> Result<(), Envelope> {
        let cap = self.spec.overflow_cap;
        if self.gate {
            if self.held.len() >= cap {
                return Err(env);
            }
            // Routed when released: a route switch in between must not
            // leave it behind its own marker.
            let from = self.gate_from;
            self.held.push(Held {
                route: Route::Entity,
                env,
                from,
            });
        } else {
            self.route_message(env, cap)?;
        }
        self.counters.sent += 1;
        Ok(())
    }

    /// Routes a handler's reply to whoever asked. Replies are never capped: an
    /// ask gets exactly one answer.
    #[inline]
    pub(crate) fn answer<R: Send + 'static>(
        &mut self,
        op: Op,
        sender: SenderId,
        token: u64,
        kind: KindId,
        key: u64,
        reply: R,
    ) {
        match op {
            Op::Tell => drop(reply),
            Op::AskClient => {
                let env = Envelope::new(kind, key, Op::ReplyClient, reply);
                self.queue_for_client(sender, env.with_route(sender, token));
            }
            Op::AskEntity => {
                let env = Envelope::new(kind, key, Op::ReplyEntity, reply);
                self.queue_for_origin(sender, env.with_route(sender, token & TOKEN_MASK));
            }
            _ => unreachable!("only messages reach handlers"),
        }
    }

    /// Routes an error in place of a reply (nothing for a tell).
    pub(crate) fn fail(
        &mut self,
        op: Op,
        sender: SenderId,
        token: u64,
        kind: KindId,
        key: u64,
        err: AskError,
    ) {
        match op {
            Op::Tell => {}
            Op::AskClient => {
                let env = Envelope::error(kind, key, Op::ReplyClient, err);
                self.queue_for_client(sender, env.with_route(sender, token));
            }
            Op::AskEntity => {
                let env = Envelope::error(kind, key, Op::ReplyEntity, err);
                self.queue_for_origin(sender, env.with_route(sender, token & TOKEN_MASK));
            }
            _ => unreachable!("only messages reach handlers"),
        }
    }

    #[inline]
    fn queue_for_client(&mut self, sender: SenderId, env: Envelope) {
        debug_assert!(sender & CLIENT_BIT != 0);
        let slot = (sender & !CLIENT_BIT) as usize;
        self.emit(Route::Client(slot), env);
    }

    #[inline]
    fn queue_for_origin(&mut self, shard: SenderId, env: Envelope) {
        let shard = shard as usize;
        let route = if shard == self.spec.shard {
            Route::Local
        } else {
            Route::Shard(shard)
        };
        self.emit(route, env);
    }

    /// Queues an envelope on its route, or holds it behind the output gate.
    #[inline]
    fn emit(&mut self, route: Route, env: Envelope) {
        if self.gate {
            let from = self.gate_from;
            self.held.push(Held { route, env, from });
        } else {
            self.route(route, env);
        }
    }

    #[inline]
    fn route(&mut self, route: Route, env: Envelope) {
        match route {
            Route::Entity => {
                let _ = self.route_message(env, usize::MAX);
            }
            Route::Local => self.local.push_back(env),
            Route::Shard(s) => self.to_shards[s].push(env),
            Route::Client(c) => self.to_clients[c].push(env),
        }
    }

    /// Releases held outputs whose records are durable; fails those whose
    /// records failed (replies become `err`, asks answer their own asker with
    /// `err`, tells are dropped).
    fn release_held(&mut self, through_lsn: u64, failed: Option<AskError>) {
        while let Some((lsn, _)) = self.held_batches.front() {
            if *lsn >= through_lsn {
                break;
            }
            let (_, batch) = self.held_batches.pop_front().expect("front exists");
            for Held { route, env, .. } in batch {
                match failed {
                    None => {
                        self.counters.gated_released += 1;
                        self.route(route, env);
                    }
                    Some(err) => self.fail_held(route, env, err),
                }
            }
        }
    }

    fn fail_held(&mut self, route: Route, env: Envelope, err: AskError) {
        match env.op {
            Op::ReplyClient | Op::ReplyEntity => {
                let e = Envelope::error(env.kind, env.key, env.op, err)
                    .with_route(env.sender, env.token);
                self.route(route, e);
            }
            Op::AskEntity => {
                // The durable entity asked someone; answer its own continuation
                // (on the shard it asked from, which it may have left since).
                let e = Envelope::error(env.kind, env.key, Op::ReplyEntity, err)
                    .with_route(env.sender, env.token & TOKEN_MASK);
                if env.sender as usize == self.spec.shard {
                    self.local.push_back(e);
                } else {
                    self.to_shards[env.sender as usize].push(e);
                }
            }
            _ => {
                // Tells are dropped, their payloads with them (asks from
                // clients are never held).
                drop(env);
                self.counters.gated_dropped += 1;
            }
        }
    }

    /// Fails what entity `from` emitted behind the gate in this pass: its
    /// change is lost (see `KindTable::restart_durable`).
    pub(crate) fn fail_pass_outputs_of(&mut self, from: EntityRef, err: AskError) {
        let (mine, others): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.from == from);
        self.held = others;
        for Held { route, env, .. } in mine {
            self.fail_held(route, env, err);
        }
    }

    /// Sends a message the shard itself made (a continuation's) to its
    /// entity's home. Never capped: it answers something already sent.
    #[inline]
    pub(crate) fn send_home(&mut self, env: Envelope) {
        let dest = self
            .kinds
            .home_shard(env.kind, env.key, self.spec.shard_count);
        if dest == self.spec.shard {
            self.local.push_back(env);
        } else {
            self.to_shards[dest].push(env);
        }
    }

    #[inline]
    pub(crate) fn offer_hot(&mut self, heat: f32, kind: KindId, key: u64) {
        self.hot.offer(heat, kind, key);
    }

    pub(crate) fn pin(&mut self, id: EntityRef, pinned: bool) {
        if pinned {
            self.pinned.insert(id);
        } else {
            self.pinned.remove(&id);
        }
    }

    pub(crate) fn park_continuation(&mut self, c: Continuation) -> u64 {
        match self.pending_free.pop() {
            Some(slot) => {
                debug_assert!(self.pending[slot as usize].is_none());
                self.pending[slot as usize] = Some(c);
                slot as u64
            }
            None => {
                self.pending.push(Some(c));
                (self.pending.len() - 1) as u64
            }
        }
    }
}

/// One shard: entity tables plus services. Single-threaded; see the module docs.
pub struct Shard {
    pub(crate) tables: Vec<Box<dyn ErasedTable>>,
    pub(crate) svc: Services,
    pub(crate) mig: Migration,
}

impl Shard {
    /// A shard with an empty table for every kind in `kinds`.
    ///
    /// # Panics
    ///
    /// If `spec.shard >= spec.shard_count`, `spec.shard_count` exceeds
    /// [`MAX_SHARDS`] or `spec.overflow_cap == 0`.
    pub fn new(spec: ShardSpec, kinds: Arc<Kinds>) -> Self {
        assert!(spec.shard < spec.shard_count, "shard index out of range");
        assert!(
            spec.shard_count <= MAX_SHARDS,
            "at most {MAX_SHARDS} shards"
        );
        assert!(spec.overflow_cap > 0, "overflow_cap must be at least 1");
        let tables = kinds.make_tables();
        Shard {
            tables,
            svc: Services {
                spec,
                kinds,
                local: VecDeque::new(),
                to_shards: (0..spec.shard_count).map(|_| Outbox::default()).collect(),
                to_clients: (0..spec.client_slots).map(|_| Outbox::default()).collect(),
                pending: Vec::new(),
                pending_free: Vec::new(),
                timers: Timers::for_shard(spec.shard),
                now_ns: 0,
                counters: Counters::default(),
                gate: false,
                gate_from: (0, 0),
                held: Vec::new(),
                held_batches: VecDeque::new(),
                dirty: Vec::new(),
                tombstones: Vec::new(),
                inflight: VecDeque::new(),
                window: 0,
                hot: HotList::default(),
                pinned: PairSet::default(),
                self_moves: Vec::new(),
                routes: PairMap::default(),
                learn_routes: true,
            },
            mig: Migration::default(),
        }
    }

    /// This shard's index.
    pub fn index(&self) -> usize {
        self.svc.spec.shard
    }

    /// The registry this shard was built with.
    pub fn kinds(&self) -> &Arc<Kinds> {
        &self.svc.kinds
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
    pub(crate) fn dispatch(&mut self, env: Envelope) {
        match env.op {
            Op::Tell | Op::AskClient | Op::AskEntity | Op::Migrate => {
                // NB: one test for the common case (nothing settling here);
                // see the `tell_cross_core` bench. An entity that moved away
                // is not in its table: a miss, where entities have moved, is
                // checked against the places before it activates anything,
                // so settled moves cost the deliveries that hit nothing.
                if env.status == 0 && self.mig.quiet() {
                    if let Some(env) = self.deliver_here_if(env, self.mig.no_places()) {
                        self.route_addressed(env);
                    }
                } else {
                    self.route_addressed(env);
                }
            }
            Op::Switch | Op::Rejoin => self.route_addressed(env),
            Op::ReplyEntity => self.resume(env),
            Op::ReplyClient => debug_assert!(false, "a client reply reached a shard"),
            Op::Transfer
            | Op::Moved
            | Op::Marker
            | Op::Released
            | Op::Fence
            | Op::Switched
            | Op::Hint => self.deliver_control(env),
        }
    }

    /// Starts loading what delivering envelopes for `targets` (kind and key
    /// of each) will read first (the index lines of their tables), without
    /// waiting. A runtime that holds a batch of envelopes calls this before
    /// it hands them to [`Shard::deliver`], so the index misses of the batch
    /// overlap instead of each stalling the shard in turn. Any kind and key
    /// are harmless: an unknown kind is ignored, a key that is not here costs
    /// one wasted line. Tables small enough to stay in the cache skip it, and
    /// when every table is that small this returns before looking at
    /// `targets`.
    #[inline]
    pub fn prefetch(&self, targets: impl IntoIterator<Item = (KindId, u64)>) {
        if !self.tables.iter().any(|t| t.prefetch_pays()) {
            return;
        }
        // Runs of one kind go to their table in one call.
        let mut run = [0u64; PREFETCH_RUN_MAX];
        let (mut kind, mut len) = (0, 0);
        for (k, key) in targets {
            if len == PREFETCH_RUN_MAX || (len > 0 && k != kind) {
                self.prefetch_run(kind, &run[..len]);
                len = 0;
            }
            kind = k;
            run[len] = key;
            len += 1;
        }
        if len > 0 {
            self.prefetch_run(kind, &run[..len]);
        }
    }

    #[inline]
    fn prefetch_run(&self, kind: KindId, keys: &[u64]) {
        if let Some(table) = self.tables.get(kind as usize) {
            table.prefetch(keys);
        }
    }

    /// Runs the continuation waiting for `reply` and delivers its message to
    /// the asker.
    fn resume(&mut self, reply: Envelope) {
        let slot = reply.token as usize;
        let Some(c) = self.svc.pending.get_mut(slot).and_then(Option::take) else {
            debug_assert!(false, "reply for a continuation that does not exist");
            return;
        };
        self.svc.pending_free.push(slot as u32);
        let result = match reply.error_status() {
            Some(err) => Err(err),
            None => Ok(reply),
        };
        let Continuation { kind, key, call } = c;
        match catch_unwind(AssertUnwindSafe(move || call(result, kind, key))) {
            // The asker may have moved since it asked: its home knows where.
            Ok(msg) => self.svc.send_home(msg),
            Err(_) => self.svc.counters.panics += 1,
        }
    }

    /// Handles up to `max` messages from the local queue (messages this
    /// shard's handlers sent to entities of this shard, and due timers).
    /// Returns how many it handled.
    pub fn run_local(&mut self, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Some(env) = self.svc.local.pop_front() else {
                break;
            };
            self.dispatch(env);
            n += 1;
        }
        n
    }

    /// Messages waiting in the local queue.
    pub fn local_len(&self) -> usize {
        self.svc.local.len()
    }

    /// Sets the shard's clock (nanoseconds since the engine started).
    #[inline]
    pub fn set_now(&mut self, now_ns: u64) {
        debug_assert!(now_ns >= self.svc.now_ns, "the shard clock went backwards");
        self.svc.now_ns = now_ns;
    }

    /// The shard's clock.
    pub fn now_ns(&self) -> u64 {
        self.svc.now_ns
    }

    /// Moves up to `max` due timers' messages onto the local queue. Returns how
    /// many fired.
    pub fn fire_timers(&mut self, max: usize) -> usize {
        let Services {
            timers,
            local,
            now_ns,
            counters,
            ..
        } = &mut self.svc;
        let fired = timers.fire_due(*now_ns, max, |env| local.push_back(env));
        counters.timers_fired += fired as u64;
        fired
    }

    /// The earliest timer deadline, if any timer is live.
    pub fn next_deadline_ns(&mut self) -> Option<u64> {
        self.svc.timers.next_deadline()
    }

    /// Live timers.
    pub fn timer_count(&self) -> usize {
        self.svc.timers.len()
    }

    /// What waits to be published to shard `shard`.
    #[inline]
    pub fn outbox_to_shard(&mut self, shard: usize) -> &mut Outbox {
        &mut self.svc.to_shards[shard]
    }

    /// What waits to be published to client slot `slot`.
    #[inline]
    pub fn outbox_to_client(&mut self, slot: usize) -> &mut Outbox {
        &mut self.svc.to_clients[slot]
    }

    /// An outbox and the counters together (to publish and count in one go).
    #[inline]
    pub fn outbox_and_counters(&mut self, dest: Destination) -> (&mut Outbox, &mut Counters) {
        let out = match dest {
            Destination::Shard(s) => &mut self.svc.to_shards[s],
            Destination::Client(c) => &mut self.svc.to_clients[c],
        };
        (out, &mut self.svc.counters)
    }

    /// Whether any outbox holds envelopes.
    pub fn has_outbound(&self) -> bool {
        self.svc.to_shards.iter().any(|o| !o.is_empty())
            || self.svc.to_clients.iter().any(|o| !o.is_empty())
    }

    /// Logs what this pass changed and closes the output gate over what the
    /// durable handlers emitted: every dirty durable entity whose encoding
    /// changed is appended once, deletions are appended, and the outputs held
    /// this pass wait for the highest unresolved LSN (or go at once if the log
    /// has nothing unresolved). Call once at the end of every pass.
    pub fn commit(&mut self, sink: &mut dyn LogSink) {
        let dirty = std::mem::take(&mut self.svc.dirty);
        let mut failed = None;
        for &(kind, key) in &dirty {
            match self.tables[kind as usize].log_dirty(key, sink) {
                Ok(Some(lsn)) => {
                    self.svc.counters.records_logged += 1;
                    self.svc.inflight.push_back((lsn, kind, key));
                }
                Ok(None) => {}
                Err(refusal) => {
                    self.svc.counters.records_failed += 1;
                    failed = Some(refusal);
                }
            }
        }
        self.svc.dirty = dirty;
        self.svc.dirty.clear();
        if !self.mig.arrivals.is_empty() {
            self.note_arrival_lsns();
        }
        for (hash, key, version) in std::mem::take(&mut self.svc.tombstones) {
            match sink.append_tombstone(hash, key, version) {
                Ok(_) => self.svc.counters.records_logged += 1,
                Err(refusal) => {
                    self.svc.counters.records_failed += 1;
                    failed = Some(refusal);
                }
            }
        }
        let held = std::mem::take(&mut self.svc.held);
        if held.is_empty() {
            return;
        }
        if let Some(LogRefusal::Failed { retryable }) = failed {
            // Something this pass emitted may depend on a change that is lost.
            let err = if retryable {
                AskError::StorageFull
            } else {
                AskError::StorageFailed
            };
            for Held { route, env, .. } in held {
                self.svc.fail_held(route, env, err);
            }
            return;
        }
        match sink.unresolved_max() {
            Some(lsn) => self.svc.held_batches.push_back((lsn, held)),
            None => {
                for Held { route, env, .. } in held {
                    self.svc.counters.gated_released += 1;
                    self.svc.route(route, env);
                }
            }
        }
    }

    /// Records below `lsn_end` are durable: held outputs waiting for them go
    /// out, their entities' durable copies advance.
    pub fn durable_through(&mut self, lsn_end: u64) {
        while let Some(&(lsn, kind, key)) = self.svc.inflight.front() {
            if lsn >= lsn_end {
                break;
            }
            self.svc.inflight.pop_front();
            self.tables[kind as usize].resolve(key, lsn, true);
        }
        self.release_arrivals(lsn_end);
        self.svc.release_held(lsn_end, None);
    }

    /// Records in `lsns` failed: their entities go back to their last durable
    /// state, held outputs waiting for them fail with `err`.
    pub fn failed(&mut self, lsns: std::ops::Range<u64>, err: AskError) {
        while let Some(&(lsn, kind, key)) = self.svc.inflight.front() {
            if lsn >= lsns.end {
                break;
            }
            self.svc.inflight.pop_front();
            let ok = lsn < lsns.start;
            self.tables[kind as usize].resolve(key, lsn, ok);
            if !ok {
                self.svc.counters.records_failed += 1;
            }
        }
        self.svc.release_held(lsns.start, None);
        self.svc.release_held(lsns.end, Some(err));
    }

    /// Whether records or held outputs wait for the log.
    pub fn has_unresolved(&self) -> bool {
        !self.svc.inflight.is_empty() || !self.svc.held_batches.is_empty()
    }

    /// Whether any kind of this shard is durable.
    pub fn has_durable_kinds(&self) -> bool {
        self.tables.iter().any(|t| t.is_durable())
    }

    /// Puts a recovered entity (its last durable record) in its table.
    ///
    /// # Errors
    ///
    /// When the kind is unknown or not durable, the key is recovered twice, or
    /// the payload does not decode.
    ///
    /// `foreign` marks an entity recovered from another shard's log (the shard
    /// count changed): its new home logs it again, with a higher version, at
    /// the end of its first pass, so no other shard's checkpoint can delete its
    /// only record.
    pub fn restore(
        &mut self,
        kind_hash: u64,
        key: u64,
        version: u64,
        bytes: &[u8],
        foreign: bool,
    ) -> Result<(), String> {
        let kind = self
            .svc
            .kinds
            .id_of_hash(kind_hash)
            .ok_or_else(|| format!("no registered kind has hash {kind_hash:#x}"))?;
        self.tables[kind as usize].restore(key, version, bytes, foreign)?;
        if foreign {
            self.svc.dirty.push((kind, key));
        }
        Ok(())
    }

    /// Remembers a recovered deletion so the key's next life logs a higher
    /// version; a `foreign` one (from another shard's log) is logged again here.
    pub fn restore_tombstone(&mut self, kind_hash: u64, key: u64, version: u64, foreign: bool) {
        if let Some(kind) = self.svc.kinds.id_of_hash(kind_hash) {
            self.tables[kind as usize].restore_tombstone(key, version);
            if foreign {
                self.svc.tombstones.push((kind_hash, key, version));
            }
        }
    }

    /// Runs every recovered entity's [`Entity::recovered`](crate::Entity::recovered) hook.
    pub fn run_recovered_hooks(&mut self) {
        for table in &mut self.tables {
            table.run_recovered(&mut self.svc);
        }
    }

    /// Appends every durable entity's last logged state and every remembered
    /// deletion (between the log's checkpoint begin and end markers). Returns
    /// how many records.
    ///
    /// # Errors
    ///
    /// The sink's refusal.
    pub fn checkpoint(&mut self, sink: &mut dyn LogSink) -> Result<usize, LogRefusal> {
        let mut n = 0;
        for table in &mut self.tables {
            n += table.checkpoint(sink)?;
        }
        // Entities that moved away stay in this log's checkpoints until their
        // new owner's record is durable: otherwise a checkpoint here could
        // delete their only durable record.
        for (&(_, key), (hash, version, bytes)) in &self.mig.departed {
            sink.append_state(*hash, key, *version, bytes)?;
            n += 1;
        }
        Ok(n)
    }

    /// Forgets client slot `slot` (its handle was dropped): drops its queued
    /// and held replies, so a later occupant of the slot never sees them.
    pub fn forget_client(&mut self, slot: usize) {
        self.svc.to_clients[slot].clear();
        self.svc.held.retain(|h| h.route != Route::Client(slot));
        for (_, batch) in &mut self.svc.held_batches {
            batch.retain(|h| h.route != Route::Client(slot));
        }
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
    /// a shard it had left), so they learn to send to it directly (see
    /// `routes`). On by default. Off, no shard ever caches a route: moved
    /// entities are reached through their home, and the route protocol
    /// (lanes, switch markers) stays idle. Misses are counted either way.
    pub fn set_route_learning(&mut self, on: bool) {
        self.svc.learn_routes = on;
    }

    /// The overflow cap this shard was built with.
    pub fn overflow_cap(&self) -> usize {
        self.svc.spec.overflow_cap
    }

    /// Entity asks still waiting for their reply.
    pub fn pending_asks(&self) -> usize {
        self.svc.pending.len() - self.svc.pending_free.len()
    }

    /// The shard's counters.
    pub fn counters(&self) -> &Counters {
        &self.svc.counters
    }

    /// The shard's counters, for the runtime to add what it measures.
    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.svc.counters
    }

    /// Live entities on this shard, all kinds.
    pub fn entity_count(&self) -> usize {
        self.tables.iter().map(|t| t.len()).sum()
    }

    /// Live entities of `kind`.
    pub fn entity_count_of(&self, kind: KindId) -> usize {
        self.tables[kind as usize].len()
    }

    /// Bytes the tables use beyond entity states (keys, indexes, slack).
    pub fn table_overhead_bytes(&self) -> usize {
        self.tables.iter().map(|t| t.overhead_bytes()).sum()
    }
}
