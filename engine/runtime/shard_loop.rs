//! The shard loop itself.

use std::fs::File;
use std::io::Read as _;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use percore_shards::{Destination, Envelope, Shard, ShardSpec};
use rtrb::chunks::ReadChunk;
use rtrb::{Consumer, Producer};

use super::{
    GATHER_CHECK_SPINS, GATHER_MAX_SPINS, GATHER_MIN, GATHER_STREAK, LOCAL_BATCH, LOCAL_SLICE,
    METRICS_INTERVAL_NS, RING_DRAIN_BATCH, TIMER_BATCH,
};
use crate::config::IdlePolicy;
use crate::durability::{self, ShardLog, ShardRecovery};
use crate::error::Error;
use crate::metrics::RuntimeFigures;
use crate::shared::{ClientEnds, Shared};

/// Everything a shard thread starts with.
pub(crate) struct ShardInit {
    pub(crate) index: usize,
    pub(crate) core: usize,
    pub(crate) shared: Arc<Shared>,
    /// `(from shard, ring)` for every other shard.
    pub(crate) inbound: Vec<(usize, Consumer<Envelope>)>,
    /// Ring to every other shard; `None` at this shard's own index.
    pub(crate) outbound: Vec<Option<Producer<Envelope>>>,
    /// The doorbell's eventfd, to wait on.
    pub(crate) doorbell: File,
    /// Recovered entities and where this shard's log continues (durable
    /// kinds only).
    pub(crate) recovery: Option<ShardRecovery>,
}

/// Starts shard `init.index` on its own thread. Reports on `ready` whether its
/// executor started.
pub(crate) fn spawn_shard(
    init: ShardInit,
    ready: mpsc::Sender<Result<(), Error>>,
) -> std::io::Result<JoinHandle<()>> {
    let name = format!("percore-shard-{}", init.index);
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let (index, core) = (init.index, init.core);
            let executor = LocalExecutorBuilder::new(Placement::Fixed(core))
                .name(&name)
                // The shard does no glommio storage I/O (the log has its own ring),
                // so the registered buffer stays at glommio's minimum.
                .io_memory(64 << 10)
                .ring_depth(64)
                .make();
            let executor = match executor {
                Ok(ex) => ex,
                Err(e) => {
                    let _ = ready.send(Err(executor_error(index, core, e)));
                    return;
                }
            };
            executor.run(async move {
                let doorbell = init.doorbell;
                let mut shard_loop =
                    ShardLoop::new(init.index, init.shared, init.inbound, init.outbound);
                if let Some(recovery) = init.recovery {
                    if let Err(e) = shard_loop.open_log(&recovery) {
                        let _ = ready.send(Err(e));
                        return;
                    }
                }
                let _ = ready.send(Ok(()));
                shard_loop.run(doorbell).await;
            });
        })
}

/// Prefetches what delivering each envelope of `chunk` will read first (see
/// [`Shard::prefetch`]), so the deliveries that follow find it in the cache.
/// One pass over the chunk before delivering it: the chunk stays one read and
/// one commit of the ring (prefetching sixteen envelopes ahead in chunks of
/// sixteen made the producer and consumer trade the ring's index lines
/// sixteen times as often: `versus --child percore fanout` 45 → 29 M/s).
/// `versus --child percore activate`: 8.7 → 10.9 M/s (see
/// `percore_shards::table` for the rest).
#[inline]
fn prefetch(shard: &Shard, chunk: &ReadChunk<'_, Envelope>) {
    let (first, second) = chunk.as_slices();
    shard.prefetch(first.iter().chain(second).map(|env| (env.kind, env.key)));
}

fn executor_error(shard: usize, core: usize, e: glommio::GlommioError<()>) -> Error {
    let text = e.to_string();
    let detail = if text.contains("memlock") || text.contains("MemLock") {
        format!(
            "{text}; raise the locked-memory limit to at least 512 KiB \
             (`ulimit -l`, or `memlock` in /etc/security/limits.conf)"
        )
    } else {
        text
    };
    Error::Executor {
        shard,
        core,
        detail,
    }
}

struct ShardLoop {
    index: usize,
    shared: Arc<Shared>,
    shard: Shard,
    inbound: Vec<(usize, Consumer<Envelope>)>,
    outbound: Vec<Option<Producer<Envelope>>>,
    /// Clients by slot; `active` lists the occupied slots.
    clients: Vec<Option<ClientEnds>>,
    active: Vec<usize>,
    /// Closed clients whose requests are still being drained.
    closing: Vec<usize>,
    client_epoch: u64,
    /// Envelopes pushed to / popped from other shards' rings (quiescence).
    sent: u64,
    received: u64,
    marked_idle: bool,
    parks: u64,
    /// Envelopes the last pass took from rings (the rest of its work came
    /// from the local queue and timers).
    ring_work: usize,
    metrics_at_ns: u64,
    /// The shard's durable log, when durable kinds are registered.
    log: Option<ShardLog>,
    /// Heat windows: when the next one starts, when the current one started,
    /// busy time at its start, and the load of the last one.
    next_window_ns: u64,
    window_started_ns: u64,
    busy_at_window: u64,
    load: f32,
    /// Scratch for migration pauses on their way to the shared histogram.
    pauses: Vec<u64>,
}

impl ShardLoop {
    fn new(
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
    fn open_log(&mut self, recovery: &ShardRecovery) -> Result<(), Error> {
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
    async fn run(&mut self, doorbell: File) {
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
                    unpublished = false;
                } else {
                    unpublished = true;
                }
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

            // Nothing to do this pass. Counters go out on the first idle pass
            // after work (a reader that saw its reply sees them soon after),
            // then as on a busy shard.
            streak = 0;
            if unpublished || start_ns - self.metrics_at_ns >= METRICS_INTERVAL_NS {
                self.publish_metrics(start_ns);
                unpublished = false;
            }
            if sealed && self.quiet() {
                self.publish_quiescence();
                if self.shared.terminate.load(Ordering::Acquire) {
                    if let Some(log) = &mut self.log {
                        log.finish(&mut self.shard);
                        self.flush();
                    }
                    return;
                }
            }
            match idle {
                IdlePolicy::Poll => {
                    std::hint::spin_loop();
                    continue;
                }
                IdlePolicy::SpinThenPark { spin_us } => {
                    let since = *idle_since_ns.get_or_insert(start_ns);
                    if start_ns - since < spin_us * 1000 && !stopping {
                        std::hint::spin_loop();
                        continue;
                    }
                }
                IdlePolicy::Park => {}
            }
            // The idle spell goes on: a wake that finds nothing to do (the
            // PARK_MAX look, a spurious byte) parks again without spinning;
            // the spin restarts only after real work.
            self.park(&doorbell, stopping);
        }
    }

    /// Lets a stream fill the rings before the next pass. A shard that
    /// re-reads a ring's tail while its producer is appending one envelope
    /// at a time pulls the tail's cache line away from the producer on every
    /// message, so both sides pay a transfer per message; waiting here lets
    /// the producer append several with the line to itself, and the next
    /// pass takes them as one chunk. Ends as soon as `GATHER_MIN` envelopes
    /// wait, when nothing new arrived between two looks (the stream paused:
    /// no use waiting), or after `GATHER_MAX_SPINS`.
    /// `versus --child percore tell`: 20 M/s → 30 M/s one tell at a time.
    fn gather(&self) {
        let mut waiting = 0;
        let mut spun = 0;
        while spun < GATHER_MAX_SPINS {
            for _ in 0..GATHER_CHECK_SPINS {
                std::hint::spin_loop();
            }
            spun += GATHER_CHECK_SPINS;
            let now = self.ready();
            if now >= GATHER_MIN || (now > 0 && now == waiting) {
                return;
            }
            waiting = now;
        }
    }

    /// Whether the pass that did `work` did nothing but take from rings, and
    /// nothing else waits: gathering is for a shard fed by a trickle, never
    /// for one with its own work queued (a producer entity, a timer due, a
    /// backlog to publish).
    fn only_rings(&mut self, work: usize) -> bool {
        self.ring_work == work
            && self.shard.local_len() == 0
            && self.shard.shard_backlog() == 0
            && self
                .shard
                .next_deadline_ns()
                .is_none_or(|at| at > self.shard.now_ns())
    }

    /// Envelopes waiting in every inbound ring, other shards' and clients'.
    fn ready(&self) -> usize {
        self.inbound_rings().map(Consumer::slots).sum()
    }

    /// Every ring this shard reads: other shards', then its clients' requests.
    fn inbound_rings(&self) -> impl Iterator<Item = &Consumer<Envelope>> {
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
                self.shard.deliver(env);
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
            self.shard.deliver(env);
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

    /// Ends a heat window: publishes this shard's load, lets the shard note
    /// its hottest entities and, by the rebalancing policy, queue moves.
    fn end_window(&mut self, now_ns: u64, stopping: bool) {
        let config = &self.shared.config.rebalance;
        let window_ns = config.window_ms * 1_000_000;
        let busy = self.shard.counters().busy_ns;
        let elapsed = now_ns.saturating_sub(self.window_started_ns).max(1);
        self.load = ((busy - self.busy_at_window) as f32 / elapsed as f32).min(1.0);
        let window = (now_ns / window_ns) as u32;
        self.shared.publish_load(self.index, window, self.load);
        let mut policy = config.policy();
        policy.enabled &= !stopping;
        let loads = if policy.enabled {
            self.shared.loads(window)
        } else {
            Vec::new()
        };
        self.shard.end_window(window, &loads, &policy);
        *self.shared.hottest[self.index]
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = self.shard.hottest().to_vec();
        self.window_started_ns = now_ns;
        self.busy_at_window = busy;
        self.next_window_ns = (u64::from(window) + 1) * window_ns;
    }

    /// Publishes every outbox: one chunk per destination, then a doorbell.
    fn flush(&mut self) {
        for (dest, ring) in self.outbound.iter_mut().enumerate() {
            let Some(ring) = ring else { continue };
            let (out, counters) = self.shard.outbox_and_counters(Destination::Shard(dest));
            if out.is_empty() {
                continue;
            }
            let n = ring.slots().min(out.len());
            if n > 0 {
                let chunk = ring.write_chunk_uninit(n).expect("slots() said so");
                let pushed = chunk.fill_from_iter(out.drain(n));
                debug_assert_eq!(pushed, n);
                self.sent += n as u64;
                self.shared.doorbells[dest].notify();
            }
            if !out.is_empty() {
                out.note_ring_full(counters);
            }
        }
        for &slot in &self.active {
            let (out, counters) = self.shard.outbox_and_counters(Destination::Client(slot));
            if out.is_empty() {
                continue;
            }
            let ends = self.clients[slot].as_mut().expect("active slot");
            let n = ends.replies.slots().min(out.len());
            if n > 0 {
                let chunk = ends.replies.write_chunk_uninit(n).expect("slots() said so");
                chunk.fill_from_iter(out.drain(n));
                ends.signals.parker.notify();
            }
            if !out.is_empty() {
                out.note_ring_full(counters);
            }
        }
    }

    /// Takes the ends of newly registered clients and marks closed ones as
    /// closing (they are released by `release_closed`).
    fn sync_clients(&mut self) {
        for slot in 0..self.clients.len() {
            let offer = self.shared.clients[slot].offers[self.index]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(ends) = offer {
                debug_assert!(self.clients[slot].is_none());
                self.clients[slot] = Some(ends);
                self.active.push(slot);
            }
        }
        // A closed client pushed its last envelope before it set `closed`; its
        // requests are drained like anyone's (backlog rules included) and its
        // slot is released once its ring is empty (`release_closed`).
        for &slot in &self.active {
            let ends = self.clients[slot].as_ref().expect("active slot");
            if ends.signals.closed.load(Ordering::Acquire) && !self.closing.contains(&slot) {
                self.closing.push(slot);
            }
        }
    }

    /// Lets go of closed clients whose requests have all been handled: their
    /// replies (queued or held behind the output gate) have no reader.
    fn release_closed(&mut self) {
        let mut i = 0;
        while i < self.closing.len() {
            let slot = self.closing[i];
            let ends = self.clients[slot].as_ref().expect("closing slot is active");
            if !ends.requests.is_empty() {
                i += 1;
                continue;
            }
            self.closing.swap_remove(i);
            self.shard.forget_client(slot);
            self.clients[slot] = None;
            let at = self.active.iter().position(|&s| s == slot).expect("active");
            self.active.swap_remove(at);
            self.shared.release_client_slot(slot);
        }
    }

    /// Whether this shard holds no work and waits for nothing: `idle()`, and
    /// its log has nothing in flight and no output waits for it.
    fn quiet(&mut self) -> bool {
        self.idle()
            && !self.shard.migrating()
            && self.drained()
            && !self.shard.has_unresolved()
            && self.log.as_ref().is_none_or(ShardLog::is_idle)
    }

    /// Whether this shard has nothing to do now, so it may park: inbound rings
    /// and local queue empty, and nothing waiting to be published that could
    /// be published — an outbox whose ring is full is fine, as the consumer
    /// rings this shard's doorbell when it drains a full ring (and the
    /// re-check after announcing sleep pairs with that). Replies waiting for a
    /// client that does not read do not hold the shard awake. A log flush in
    /// flight does not count: its completion rings the doorbell.
    fn idle(&mut self) -> bool {
        self.shard.local_len() == 0
            && self.inbound_rings().all(Consumer::is_empty)
            && self.outbound.iter().enumerate().all(|(d, ring)| {
                ring.as_ref()
                    .is_none_or(|r| r.is_full() || self.shard.outbox_to_shard(d).is_empty())
            })
            && self.active.iter().all(|&slot| {
                let ring = &self.clients[slot].as_ref().expect("active").replies;
                ring.is_full() || self.shard.outbox_to_client(slot).is_empty()
            })
    }

    /// Whether nothing is left to hand to other shards (shutdown waits for it).
    fn drained(&mut self) -> bool {
        (0..self.outbound.len()).all(|d| self.shard.outbox_to_shard(d).is_empty())
    }

    fn publish_quiescence(&mut self) {
        let q = &self.shared.quiescence[self.index];
        q.sent.store(self.sent, Ordering::Relaxed);
        q.received.store(self.received, Ordering::Relaxed);
        q.idle.store(true, Ordering::Release);
        self.marked_idle = true;
    }

    fn publish_metrics(&mut self, now_ns: u64) {
        self.metrics_at_ns = now_ns;
        let (poisoned, checkpoints) = self
            .log
            .as_ref()
            .map_or((false, 0), |l| (l.poisoned, l.checkpoints));
        self.shared.metrics[self.index].publish(
            self.shard.counters(),
            RuntimeFigures {
                entities: self.shard.entity_count(),
                parks: self.parks,
                poisoned,
                checkpoints,
                load: self.load,
            },
        );
        self.shard.take_pauses(&mut self.pauses);
        if !self.pauses.is_empty() {
            let mut h = self.shared.pauses[self.index]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for p in self.pauses.drain(..) {
                h.saturating_record(p.max(1));
            }
        }
    }

    /// Parks until the doorbell rings or the next timer is due.
    ///
    /// The thread blocks in `ppoll(2)` on the doorbell (an eventfd) rather than in
    /// glommio's reactor: glommio 0.9's `UnixStream::read` was seen to miss a
    /// byte already in a socket and never complete (reproduced without
    /// percore, when the doorbell was a socket pair, during the engine_wakeup
    /// and engine_ordering tests). A parked shard has no other task to run
    /// on its executor, and its log writer's completions write to the same
    /// doorbell, so blocking the thread here loses nothing.
    fn park(&mut self, doorbell: &File, stopping: bool) {
        let shared = self.shared.clone();
        let bell = &shared.doorbells[self.index];
        // Rings full with more to send: their consumers wake this shard when
        // they make room (see `drain_inbound`).
        let n = shared.shard_count();
        for d in 0..n {
            if d != self.index && !self.shard.outbox_to_shard(d).is_empty() {
                shared.blocked[self.index * n + d].mark();
            }
        }
        for &slot in &self.active {
            if !self.shard.outbox_to_client(slot).is_empty() {
                let ends = self.clients[slot].as_ref().expect("active slot");
                ends.signals.reply_blocked[self.index].mark();
            }
        }
        bell.prepare_sleep();
        // Re-check every source after announcing sleep (see crate::mesh::wake).
        let epoch = self.shared.client_epoch[self.index].load(Ordering::Acquire);
        if !self.idle()
            || epoch != self.client_epoch
            || self.shared.terminate.load(Ordering::Acquire)
        {
            bell.cancel_sleep();
            self.unmark_blocked();
            return;
        }
        let timer = if stopping {
            None
        } else {
            self.shard
                .next_deadline_ns()
                .map(|d| Duration::from_nanos(d.saturating_sub(self.shared.now_ns())))
        };
        // Defence in depth, not part of the protocol: a parked shard looks
        // again after at most PARK_MAX, so a wakeup lost to a bug costs
        // latency, never a hang (20 wakeups a second cost an idle shard far
        // below 1 % of a core; see versus `idle`).
        let timeout = Some(timer.map_or(PARK_MAX, |t| t.min(PARK_MAX)));
        if timeout == Some(Duration::ZERO) {
            bell.cancel_sleep();
            self.unmark_blocked();
            return;
        }
        self.parks += 1;
        wait_readable(doorbell, timeout);
        // The count carries no information: one read resets it (without
        // waiting: it is non-blocking); a ring that comes later only costs one
        // spurious pass.
        let mut count = [0u8; 8];
        let _ = (&*doorbell).read(&mut count);
        bell.cancel_sleep();
        self.unmark_blocked();
    }

    /// Awake again: takes back the blocked marks `park` set (only the
    /// producer clears them; see `BlockedFlag`). The next park marks anew.
    fn unmark_blocked(&self) {
        let n = self.shared.shard_count();
        for d in (0..n).filter(|&d| d != self.index) {
            self.shared.blocked[self.index * n + d].clear();
        }
        for &slot in &self.active {
            let ends = self.clients[slot].as_ref().expect("active slot");
            ends.signals.reply_blocked[self.index].clear();
        }
    }
}

/// Longest a shard stays parked without looking at its rings (see `park`).
const PARK_MAX: Duration = Duration::from_millis(50);

/// Blocks until `socket` (the doorbell) is readable or `timeout` passes (forever if `None`).
fn wait_readable(socket: &File, timeout: Option<Duration>) {
    let mut fds = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds` is one valid pollfd, `ts_ptr` is null or points to a timespec
    // that outlives the call, and no signal mask is passed. EINTR and errors
    // only end the wait early, which costs one spurious pass.
    unsafe {
        libc::ppoll(&mut fds, 1, ts_ptr, std::ptr::null());
    }
}
