//! The shard loop: its state, its passes over every source of work, and
//! delivering from inbound rings.

use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use percore_shards::driver::{Envelope, Shard, ShardSpec};
use percore_shards::EntityId;
use rtrb::chunks::ReadChunk;
use rtrb::{Consumer, Producer};

use super::{
    GATHER_MIN, GATHER_STREAK, IDLE_PUBLISH_GAP_NS, LOCAL_BATCH, LOCAL_SLICE, METRICS_INTERVAL_NS,
    RING_DRAIN_BATCH, TIMER_BATCH,
};
use crate::clients::registry::ClientEnds;
use crate::config::IdlePolicy;
use crate::durability::{self, ShardLog, ShardRecovery};
use crate::error::Error;
use crate::shared::Shared;

/// Prefetches what delivering each envelope of `chunk` will read first (see
/// [`Shard::prefetch`]), so the deliveries that follow find it in the cache.
/// One pass over the chunk before delivering it: the chunk stays one read and
/// one commit of the ring (prefetching sixteen envelopes ahead in chunks of
/// sixteen made the producer and consumer trade the ring's index lines
/// sixteen times as often: `versus --child percore fanout` 45 → 29 M/s).
/// `versus --child percore activate`: 8.7 → 10.9 M/s (see
/// `percore_shards::driver::Table` for the rest).
#[inline]
fn prefetch(shard: &Shard, chunk: &ReadChunk<'_, Envelope>) {
    let (first, second) = chunk.as_slices();
    shard.prefetch(
        first
            .iter()
            .chain(second)
            .map(|env| EntityId::new(env.kind, env.key)),
    );
}

pub(super) struct ShardLoop {
    pub(super) index: usize,
    pub(super) shared: Arc<Shared>,
    pub(super) shard: Shard,
    pub(super) inbound: Vec<(usize, Consumer<Envelope>)>,
    pub(super) outbound: Vec<Option<Producer<Envelope>>>,
    /// Clients by slot; `active` lists the occupied slots.
    pub(super) clients: Vec<Option<ClientEnds>>,
    pub(super) active: Vec<usize>,
    /// Closed clients whose requests are still being drained.
    pub(super) closing: Vec<usize>,
    pub(super) client_epoch: u64,
    /// Envelopes pushed to / popped from other shards' rings (quiescence).
    pub(super) sent: u64,
    pub(super) received: u64,
    pub(super) marked_idle: bool,
    pub(super) parks: u64,
    /// Envelopes the last pass took from rings (the rest of its work came
    /// from the local queue and timers).
    pub(super) ring_work: usize,
    pub(super) metrics_at_ns: u64,
    /// The shard's durable log, when durable kinds are registered.
    pub(super) log: Option<ShardLog>,
    /// Heat windows: when the next one starts, when the current one started,
    /// busy time at its start, and the load of the last one.
    pub(super) next_window_ns: u64,
    pub(super) window_started_ns: u64,
    pub(super) busy_at_window: u64,
    pub(super) load: f32,
    /// Scratch for migration pauses on their way to the shared histogram.
    pub(super) pauses: Vec<u64>,
}

impl ShardLoop {
    pub(super) fn new(
        index: usize,
        shared: Arc<Shared>,
        inbound: Vec<(usize, Consumer<Envelope>)>,
        outbound: Vec<Option<Producer<Envelope>>>,
    ) -> Self {
        let spec = ShardSpec {
            shard: index,
            shard_count: shared.shard_count(),
            client_slots: shared.config.max_clients,
            overflow_cap: shared.config.overflow_cap,
        };
        let mut shard = Shard::new(spec, shared.kinds.clone());
        shard.set_route_learning(shared.config.rebalance.learn_routes);
        let clients = (0..shared.config.max_clients).map(|_| None).collect();
        ShardLoop {
            index,
            shared,
            shard,
            inbound,
            outbound,
            clients,
            active: Vec::new(),
            closing: Vec::new(),
            client_epoch: u64::MAX,
            sent: 0,
            received: 0,
            marked_idle: false,
            parks: 0,
            ring_work: 0,
            metrics_at_ns: 0,
            log: None,
            next_window_ns: 0,
            window_started_ns: 0,
            busy_at_window: 0,
            load: 0.0,
            pauses: Vec::new(),
        }
    }

    /// Opens this shard's log, restores the entities recovery handed it and
    /// runs their `recovered` hooks.
    pub(super) fn open_log(&mut self, recovery: &ShardRecovery) -> Result<(), Error> {
        let config = &self.shared.config;
        let data_dir = config.data_dir.as_ref().expect("checked at build");
        let dir = crate::log::shard_dir(data_dir, self.index);
        let log = ShardLog::open(
            &dir,
            config.durability,
            config.segment_len_bytes,
            config.checkpoint_len_bytes,
            self.shared.doorbells[self.index].raw_fd(),
            &recovery.resume,
        )?;
        durability::restore(&mut self.shard, recovery).map_err(|detail| Error::Recovery {
            shard: self.index,
            detail,
        })?;
        self.log = Some(log);
        self.shard.run_recovered_hooks();
        Ok(())
    }

    /// The loop never yields to glommio's scheduler: with nothing else on
    /// the executor it gains nothing, and glommio 0.9 was seen to park its
    /// reactor in `io_uring_enter` after such a yield although the task was
    /// runnable, leaving the shard deaf to its doorbell (engine_ordering).
    /// The doorbell is waited for with `ppoll`, the log has its own ring.
    pub(super) async fn run(&mut self, doorbell: File) {
        let idle = self.shared.config.idle;
        let mut idle_since_ns: Option<u64> = None;
        // Passes in a row that found work (see `gather`); a parking engine
        // never gathers, it exists to save CPU.
        let mut streak = 0u32;
        let gathers = !matches!(idle, IdlePolicy::Park);
        // A busy pass's end is the next one's start: one clock read per pass
        // (`versus many`: the clock was 9 % of a busy shard's time).
        let mut clock: Option<u64> = None;
        // Whether counters changed since they were last published.
        let mut unpublished = false;
        loop {
            let start_ns = clock.take().unwrap_or_else(|| self.shared.now_ns());
            self.shard.set_now(start_ns);
            let stopping = self.shared.stopping.load(Ordering::Acquire);
            let sealed = self.shared.sealed.load(Ordering::Acquire);

            if start_ns >= self.next_window_ns {
                self.end_window(start_ns, stopping);
            }
            let work = self.pass(stopping);
            if work > 0 {
                let end_ns = self.account_busy_pass(start_ns, &mut unpublished);
                idle_since_ns = None;
                streak += 1;
                if gathers && streak >= GATHER_STREAK && work < GATHER_MIN && self.only_rings(work)
                {
                    self.gather();
                } else {
                    clock = Some(end_ns);
                }
                continue;
            }

            // Nothing to do this pass.
            streak = 0;
            let spin = match idle {
                IdlePolicy::Poll => true,
                IdlePolicy::SpinThenPark { spin_us } => {
                    let since = *idle_since_ns.get_or_insert(start_ns);
                    start_ns - since < spin_us * 1000 && !stopping
                }
                IdlePolicy::Park => false,
            };
            // Counters go out on an idle pass after work (a reader that saw
            // its reply sees them soon after) — before parking, or once
            // IDLE_PUBLISH_GAP_NS passed since the last time — then as on a
            // busy shard. Not on every idle pass: between the asks of a
            // ping-pong that was one publish per ask (`versus ask` p50).
            let since_published = start_ns - self.metrics_at_ns;
            if (unpublished && (!spin || since_published >= IDLE_PUBLISH_GAP_NS))
                || since_published >= METRICS_INTERVAL_NS
            {
                self.publish_metrics(start_ns);
                unpublished = false;
            }
            if sealed && self.quiet() {
                if unpublished {
                    self.publish_metrics(start_ns);
                    unpublished = false;
                }
                if self.quiesce() {
                    return;
                }
            }
            if spin {
                std::hint::spin_loop();
                continue;
            }
            // The idle spell goes on: a wake that finds nothing to do (the
            // PARK_MAX look, a spurious byte) parks again without spinning;
            // the spin restarts only after real work.
            self.park(&doorbell, stopping);
        }
    }

    /// After a pass that did work: no longer idle for shutdown, busy time
    /// counted, metrics published if a millisecond has passed (else noted in
    /// `unpublished`). Returns the pass's end.
    fn account_busy_pass(&mut self, start_ns: u64, unpublished: &mut bool) -> u64 {
        if self.marked_idle {
            self.shared.quiescence[self.index]
                .idle
                .store(false, Ordering::Release);
            self.marked_idle = false;
        }
        let end_ns = self.shared.now_ns();
        self.shard.counters_mut().busy_ns += end_ns - start_ns;
        if end_ns - self.metrics_at_ns >= METRICS_INTERVAL_NS {
            self.publish_metrics(end_ns);
            *unpublished = false;
        } else {
            *unpublished = true;
        }
        end_ns
    }

    /// A quiet shard of a sealed engine: reports itself idle for shutdown;
    /// once told to terminate, finishes its log. Returns whether to exit.
    fn quiesce(&mut self) -> bool {
        self.publish_quiescence();
        if !self.shared.terminate.load(Ordering::Acquire) {
            return false;
        }
        if let Some(log) = &mut self.log {
            log.finish(&mut self.shard);
            self.flush();
        }
        true
    }

    /// Every ring this shard reads: other shards', then its clients' requests.
    pub(super) fn inbound_rings(&self) -> impl Iterator<Item = &Consumer<Envelope>> {
        let clients = self
            .active
            .iter()
            .map(|&slot| &self.clients[slot].as_ref().expect("active slot").requests);
        self.inbound.iter().map(|(_, r)| r).chain(clients)
    }

    /// One pass over every source of work. Returns how many things it did.
    fn pass(&mut self, stopping: bool) -> usize {
        let mut work = 0;
        let epoch = self.shared.client_epoch[self.index].load(Ordering::Acquire);
        if epoch != self.client_epoch {
            self.client_epoch = epoch;
            self.sync_clients();
        }
        for i in 0..self.inbound.len() {
            work += self.drain_inbound(i, RING_DRAIN_BATCH);
        }
        // Client requests wait in their rings (and their senders wait) while
        // this shard's outgoing backlog is high: external load is pushed back
        // to clients rather than into handler overflow. Shard rings above
        // always drain, so no cycle of full rings can deadlock.
        let backlog_max = self.shard.overflow_cap() / 2;
        for &slot in &self.active {
            // Checked before each message: a handler may fan out thousands.
            if self.shard.shard_backlog() > backlog_max {
                break;
            }
            let ends = self.clients[slot].as_mut().expect("active slot");
            let n = ends.requests.slots().min(RING_DRAIN_BATCH);
            if n == 0 {
                continue;
            }
            let chunk = ends.requests.read_chunk(n).expect("slots() said so");
            prefetch(&self.shard, &chunk);
            let mut chunk = chunk.into_iter();
            while self.shard.shard_backlog() <= backlog_max {
                let Some(env) = chunk.next() else { break };
                // SAFETY: a client ring carries only envelopes `Client` built
                // with `Kinds::message`/`move_request` on this engine's registry.
                unsafe { self.shard.deliver(env) };
            }
            work += chunk.iterated();
        }
        if !self.closing.is_empty() {
            self.release_closed();
        }
        self.ring_work = work;
        if !stopping {
            work += self.shard.fire_timers(TIMER_BATCH);
        }
        // The local queue in slices, publishing between them: a message a
        // handler sends elsewhere should not wait for a long pass to end
        // (the plaza example's broadcasts showed it).
        let mut local = 0;
        while local < LOCAL_BATCH {
            let n = self.shard.run_local(LOCAL_SLICE);
            local += n;
            if n < LOCAL_SLICE {
                break;
            }
            if self.shard.shard_backlog() > 0 {
                self.flush();
            }
        }
        work += local;
        if let Some(log) = &mut self.log {
            log.commit_and_poll(&mut self.shard);
        }
        self.flush();
        // Moves go after the flush: an entity leaves only once everything
        // this shard holds for others is in rings (see `Shard::run_moves`).
        if self.shard.has_moves() {
            // The departure time of a pause, read now rather than at the
            // start of the pass.
            self.shard.set_now(self.shared.now_ns());
            self.shard.run_moves();
            self.flush();
        }
        work
    }

    /// Delivers up to `max` envelopes from inbound ring `i`. A fence (an
    /// entity that sends arrived from another shard) makes it stop and first
    /// drain everything already in the ring the fence names, where that
    /// entity's earlier messages may wait. Returns how many it delivered from
    /// ring `i`.
    fn drain_inbound(&mut self, i: usize, max: usize) -> usize {
        let (from, ring) = &mut self.inbound[i];
        let from = *from;
        let ready = ring.slots();
        let n = ready.min(max);
        if n == 0 {
            return 0;
        }
        let mut fences = None;
        let chunk = ring.read_chunk(n).expect("slots() said so");
        prefetch(&self.shard, &chunk);
        let mut chunk = chunk.into_iter();
        for env in chunk.by_ref() {
            // SAFETY: a shard ring carries only what another shard of this
            // engine (same registry) took from its outbox.
            unsafe { self.shard.deliver(env) };
            if let Some(f) = self.shard.take_fences() {
                fences = Some(f);
                break;
            }
        }
        let taken = chunk.iterated();
        drop(chunk);
        // Publish what handlers sent to other shards now, not at the end of
        // a long pass (client replies go at its end).
        if self.shard.shard_backlog() > 0 {
            self.flush();
        }
        if self.shard.has_unstamped() {
            self.shard.stamp_settled(self.shared.now_ns());
        }
        self.received += taken as u64;
        // The sender may have parked with more for us waiting for room. It
        // says so before it announces sleep and unsays it once awake; the
        // load pairs with its barrier like any wakeup (crate::mesh::wake), so
        // it cannot miss the room made here.
        // (Waking it only when the ring was full at our read lost wakeups:
        // it can fill the ring while we read a chunk, and we never see it
        // full again — fanout waited for PARK_MAX.)
        let n = self.shared.shard_count();
        if self.shared.blocked[from * n + self.index].wake_needed() {
            self.shared.doorbells[from].notify();
        }
        for f in fences.into_iter().flatten() {
            if f == self.index {
                let queued = self.shard.local_len();
                self.shard.run_local(queued);
            } else if let Some(j) = self.inbound.iter().position(|(s, _)| *s == f) {
                self.drain_inbound(j, usize::MAX);
            }
        }
        taken
    }
}
