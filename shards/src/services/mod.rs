//! Layer 2, services: everything of a shard except its entity tables — what
//! handlers use (through [`Ctx`](crate::Ctx)) and what the dispatch and
//! migration layers act on. One struct per service, each with private
//! fields and its own methods; [`Services`] only composes them and routes
//! what handlers emit between them (the gate, the route cache, the
//! outboxes).

pub(crate) mod continuations;
pub(crate) mod counters;
pub(crate) mod gate;
pub(crate) mod heat;
pub(crate) mod moves;
pub(crate) mod outbox;
pub(crate) mod route_cache;

use std::sync::Arc;

use crate::envelope::{Envelope, Op, TOKEN_MASK};
use crate::error::AskError;
use crate::id::{EntityId, KindId, SenderId, CLIENT_BIT};
use crate::kind_index::KindIndex;
use crate::limits::MAX_SHARDS;
use crate::log::{LogRefusal, LogSink};
use crate::timers::Timers;

use continuations::{Continuation, Continuations};
use counters::Counters;
use gate::{Gate, Held};
use heat::Heat;
use moves::Moves;
use outbox::{Outboxes, Route};
use route_cache::{RouteCache, Wires};

/// Sizes and identity of one shard.
#[derive(Clone, Copy, Debug)]
pub struct ShardSpec {
    /// This shard's index.
    pub shard: usize,
    /// Number of shards in the engine, at most [`MAX_SHARDS`].
    pub shard_count: usize,
    /// Client slots (the engine's `max_clients`).
    pub client_slots: usize,
    /// Most envelopes a handler may leave waiting for one destination
    /// (including this shard's own local queue) before its sends fail.
    pub overflow_cap: usize,
}

impl ShardSpec {
    /// Checks the spec.
    ///
    /// # Panics
    ///
    /// If `shard >= shard_count`, `shard_count` exceeds [`MAX_SHARDS`] or
    /// `overflow_cap == 0`.
    pub(crate) fn check(&self) {
        assert!(self.shard < self.shard_count, "shard index out of range");
        assert!(
            self.shard_count <= MAX_SHARDS,
            "at most {MAX_SHARDS} shards"
        );
        assert!(self.overflow_cap > 0, "overflow_cap must be at least 1");
    }
}

/// What handlers may use besides their own entity: everything of the shard
/// except the entity tables.
pub(crate) struct Services {
    spec: ShardSpec,
    kinds: Arc<KindIndex>,
    out: Outboxes,
    continuations: Continuations,
    timers: Timers,
    now_ns: u64,
    counters: Counters,
    gate: Gate,
    heat: Heat,
    moves: Moves,
    routes: RouteCache,
    /// A message the fast path found no entity for, on a shard entities moved
    /// to or from: handed back to the shard to route (see `Shard::dispatch`).
    missed: Option<Envelope>,
}

impl Services {
    /// Hands back a message the fast path could not deliver here.
    #[inline]
    pub(crate) fn set_missed(&mut self, env: Envelope) {
        debug_assert!(self.missed.is_none());
        self.missed = Some(env);
    }

    /// The message the last fast-path delivery handed back, if any.
    #[inline]
    pub(crate) fn take_missed(&mut self) -> Option<Envelope> {
        self.missed.take()
    }

    pub(crate) fn new(spec: ShardSpec, kinds: Arc<KindIndex>) -> Self {
        spec.check();
        Services {
            spec,
            kinds,
            out: Outboxes::new(spec.shard, spec.shard_count, spec.client_slots),
            continuations: Continuations::default(),
            timers: Timers::for_shard(spec.shard),
            now_ns: 0,
            counters: Counters::default(),
            gate: Gate::default(),
            heat: Heat::default(),
            moves: Moves::default(),
            routes: RouteCache::default(),
            missed: None,
        }
    }

    #[inline]
    pub(crate) fn spec(&self) -> &ShardSpec {
        &self.spec
    }

    /// This shard's index.
    #[inline]
    pub(crate) fn shard(&self) -> usize {
        self.spec.shard
    }

    #[inline]
    pub(crate) fn kinds(&self) -> &KindIndex {
        &self.kinds
    }

    /// Whether this shard is the home of `id`.
    #[inline]
    pub(crate) fn is_home(&self, id: EntityId) -> bool {
        self.kinds
            .home_shard(id.kind, id.key, self.spec.shard_count)
            == self.spec.shard
    }

    /// The home shard of `id`.
    #[inline]
    pub(crate) fn home_of(&self, id: EntityId) -> usize {
        self.kinds
            .home_shard(id.kind, id.key, self.spec.shard_count)
    }

    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        self.now_ns
    }

    #[inline]
    pub(crate) fn set_now(&mut self, now_ns: u64) {
        debug_assert!(now_ns >= self.now_ns, "the shard clock went backwards");
        self.now_ns = now_ns;
    }

    #[inline]
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    #[inline]
    pub(crate) fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    #[inline]
    pub(crate) fn out(&mut self) -> &mut Outboxes {
        &mut self.out
    }

    #[inline]
    pub(crate) fn out_ref(&self) -> &Outboxes {
        &self.out
    }

    /// An outbox and the counters together (to publish and count in one go).
    #[inline]
    pub(crate) fn outbox_and_counters(
        &mut self,
        dest: outbox::Destination,
    ) -> (&mut outbox::Outbox, &mut Counters) {
        (self.out.get(dest), &mut self.counters)
    }

    #[inline]
    pub(crate) fn timers(&self) -> &Timers {
        &self.timers
    }

    #[inline]
    pub(crate) fn timers_mut(&mut self) -> &mut Timers {
        &mut self.timers
    }

    /// Moves up to `max` due timers' messages onto the local queue. Returns
    /// how many fired.
    pub(crate) fn fire_timers(&mut self, max: usize) -> usize {
        let out = &mut self.out;
        let fired = self
            .timers
            .fire_due(self.now_ns, max, |env| out.push_local(env));
        self.counters.timers_fired += fired as u64;
        fired
    }

    #[inline]
    pub(crate) fn gate(&self) -> &Gate {
        &self.gate
    }

    #[inline]
    pub(crate) fn gate_mut(&mut self) -> &mut Gate {
        &mut self.gate
    }

    #[inline]
    pub(crate) fn heat(&self) -> &Heat {
        &self.heat
    }

    #[inline]
    pub(crate) fn heat_mut(&mut self) -> &mut Heat {
        &mut self.heat
    }

    #[inline]
    pub(crate) fn moves(&self) -> &Moves {
        &self.moves
    }

    #[inline]
    pub(crate) fn moves_mut(&mut self) -> &mut Moves {
        &mut self.moves
    }

    /// Parks a continuation; returns its token, or counts a refusal and
    /// hands it back when too many wait.
    pub(crate) fn park_continuation(&mut self, c: Continuation) -> Result<u64, Continuation> {
        self.continuations.park(c).inspect_err(|_| {
            self.counters.asks_refused += 1;
        })
    }

    /// Takes the continuation waiting under `token`.
    pub(crate) fn take_continuation(&mut self, token: u64) -> Option<Continuation> {
        self.continuations.take(token)
    }

    /// Entity asks still waiting for their reply.
    pub(crate) fn continuations_waiting(&self) -> usize {
        self.continuations.waiting()
    }

    /// Envelopes waiting in the outboxes for other shards' rings.
    #[inline]
    pub(crate) fn shard_backlog(&self) -> usize {
        self.out.shard_backlog()
    }

    /// Queues a handler's message by its destination. Fails, handing the
    /// envelope back, when that destination has `overflow_cap` waiting.
    #[inline]
    pub(crate) fn send(&mut self, env: Envelope) -> Result<(), Envelope> {
        let cap = self.spec.overflow_cap;
        if self.gate.is_closed() {
            if self.gate.held_len() >= cap {
                return Err(env);
            }
            // Routed when released: a route switch in between must not
            // leave it behind its own marker.
            self.gate.hold(Route::Entity, env);
        } else {
            self.route_message(env, cap)?;
        }
        self.counters.sent += 1;
        Ok(())
    }

    #[inline]
    fn route_message(&mut self, env: Envelope, cap: usize) -> Result<(), Envelope> {
        self.routes.route(
            env,
            cap,
            &mut self.out,
            &self.kinds,
            self.spec.shard,
            self.spec.shard_count,
        )
    }

    /// Routes a handler's reply to whoever asked. Replies are never capped: an
    /// ask gets exactly one answer.
    #[inline]
    pub(crate) fn answer<R: Send + 'static>(
        &mut self,
        op: Op,
        sender: SenderId,
        token: u64,
        id: EntityId,
        reply: R,
    ) {
        match op {
            Op::Tell => drop(reply),
            Op::AskClient => {
                let env = Envelope::new(id.kind, id.key, Op::ReplyClient, reply);
                self.queue_for_client(sender, env.with_route(sender, token));
            }
            Op::AskEntity => {
                let env = Envelope::new(id.kind, id.key, Op::ReplyEntity, reply);
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
        id: EntityId,
        err: AskError,
    ) {
        match op {
            Op::Tell => {}
            Op::AskClient => {
                let env = Envelope::error(id.kind, id.key, Op::ReplyClient, err);
                self.queue_for_client(sender, env.with_route(sender, token));
            }
            Op::AskEntity => {
                let env = Envelope::error(id.kind, id.key, Op::ReplyEntity, err);
                self.queue_for_origin(sender, env.with_route(sender, token & TOKEN_MASK));
            }
            _ => unreachable!("only messages reach handlers"),
        }
    }

    // NB: the reply paths test the gate themselves and push straight to
    // their queue: through the general `emit` (which also routes entity
    // messages) the compiler kept a call per reply (`msgcost ask`).
    #[inline]
    fn queue_for_client(&mut self, sender: SenderId, env: Envelope) {
        debug_assert!(sender & CLIENT_BIT != 0);
        let slot = (sender & !CLIENT_BIT) as usize;
        if self.gate.is_closed() {
            self.hold(Route::Client(slot), env);
        } else {
            self.out.client_outbox(slot).push(env);
        }
    }

    #[inline]
    fn queue_for_origin(&mut self, shard: SenderId, env: Envelope) {
        let shard = shard as usize;
        if self.gate.is_closed() {
            let route = if shard == self.spec.shard {
                Route::Local
            } else {
                Route::Shard(shard)
            };
            self.hold(route, env);
        } else {
            self.out.push_to_shard(shard, env);
        }
    }

    /// Holds an output of a durable handler behind the gate.
    #[cold]
    #[inline(never)]
    fn hold(&mut self, route: Route, env: Envelope) {
        self.gate.hold(route, env);
    }

    #[inline]
    fn route(&mut self, route: Route, env: Envelope) {
        match route {
            Route::Entity => {
                let _ = self.route_message(env, usize::MAX);
            }
            other => self.out.push(other, env),
        }
    }

    /// Sends a message the shard itself made (a continuation's) to its
    /// entity's home. Never capped: it answers something already sent.
    #[inline]
    pub(crate) fn send_home(&mut self, env: Envelope) {
        let dest = self.home_of(EntityId::new(env.kind, env.key));
        self.out.push_to_shard(dest, env);
    }

    /// Releases held outputs whose records are durable; fails those whose
    /// records failed (replies become `err`, asks answer their own asker with
    /// `err`, tells are dropped).
    pub(crate) fn release_held(&mut self, through_lsn: u64, failed: Option<AskError>) {
        while let Some(batch) = self.gate.pop_batch_below(through_lsn) {
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
                self.out.push_to_shard(env.sender as usize, e);
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
    pub(crate) fn fail_pass_outputs_of(&mut self, from: EntityId, err: AskError) {
        for Held { route, env, .. } in self.gate.take_pass_outputs_of(from) {
            self.fail_held(route, env, err);
        }
    }

    /// Ends the pass's log work after the dirty entities were appended
    /// (`failed`: the last refusal among them): appends the deletions and
    /// closes the gate over what this pass held — failed at once when a
    /// change was lost, waiting for the highest unresolved LSN otherwise, or
    /// released when nothing is unresolved.
    pub(crate) fn close_pass(&mut self, sink: &mut dyn LogSink, failed: Option<LogRefusal>) {
        let c = &mut self.counters;
        let tomb_failed =
            self.gate
                .log_tombstones(sink, &mut c.records_logged, &mut c.records_failed);
        let failed = tomb_failed.or(failed);
        let held = self.gate.take_pass_held();
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
                self.fail_held(route, env, err);
            }
            return;
        }
        match sink.unresolved_max() {
            Some(lsn) => self.gate.wait_for(lsn, held),
            None => {
                for Held { route, env, .. } in held {
                    self.counters.gated_released += 1;
                    self.route(route, env);
                }
            }
        }
    }

    /// Forgets client slot `slot` (its handle was dropped): drops its queued
    /// and held replies, so a later occupant of the slot never sees them.
    pub(crate) fn forget_client(&mut self, slot: usize) {
        self.out.client_outbox(slot).clear();
        self.gate.forget_client(slot);
    }

    fn wires(&mut self) -> (&mut RouteCache, Wires<'_>) {
        let w = Wires {
            out: &mut self.out,
            kinds: &self.kinds,
            shard: self.spec.shard,
            shard_count: self.spec.shard_count,
            counters: &mut self.counters,
        };
        (&mut self.routes, w)
    }

    /// A hint: entity `id` lives on shard `owner`.
    pub(crate) fn take_hint(&mut self, id: EntityId, owner: usize) {
        let (routes, mut w) = self.wires();
        routes.take_hint(id, owner, &mut w);
    }

    /// The owner of `id` handled this shard's last switch marker.
    pub(crate) fn switched(&mut self, id: EntityId) {
        let (routes, mut w) = self.wires();
        routes.switched(id, &mut w);
    }

    /// Sends every cached route home.
    pub(crate) fn flush_routes(&mut self) {
        let (routes, mut w) = self.wires();
        routes.flush(&mut w);
    }

    /// Switches home every direct route chosen before an arrival.
    pub(crate) fn rebase_routes(&mut self) {
        let (routes, mut w) = self.wires();
        routes.rebase(&mut w);
    }

    #[inline]
    pub(crate) fn routes(&self) -> &RouteCache {
        &self.routes
    }

    pub(crate) fn routes_mut(&mut self) -> &mut RouteCache {
        &mut self.routes
    }

    /// Offers an entity to the hot list of the window.
    #[inline]
    pub(crate) fn offer_hot(&mut self, heat: f32, kind: KindId, key: u64) {
        self.heat.offer(heat, kind, key);
    }
}
