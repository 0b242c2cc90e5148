//! State shared by the engine handle, its shard threads and its clients.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use percore_shards::{Hot, Kinds};

use crate::clients::registry::{ClientSlot, SlotPool};
use crate::config::EngineConfig;
use crate::mesh::wake::BlockedFlag;
use crate::mesh::{CachePadded, Doorbell};
use crate::metrics::MetricsCell;

/// Per-shard facts the shutdown coordinator reads to detect quiescence
/// (Mattern's four-counter method: two identical collections of all shards'
/// counters, everyone idle, every sent envelope received).
#[derive(Default)]
pub(crate) struct Quiescence {
    pub(crate) idle: AtomicBool,
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
}

/// An empty histogram of migration pauses: 1 ns to 60 s, 2 significant digits.
pub(crate) fn pause_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("valid bounds")
}

/// What the engine handle, its shard threads and its clients share.
pub(crate) struct Shared {
    pub(crate) kinds: Arc<Kinds>,
    pub(crate) config: EngineConfig,
    pub(crate) cores: Vec<usize>,
    pub(crate) doorbells: Vec<Doorbell>,
    pub(crate) metrics: Vec<MetricsCell>,
    pub(crate) quiescence: Vec<CachePadded<Quiescence>>,
    /// Bumped (per shard) when a client registers or closes.
    pub(crate) client_epoch: Vec<CachePadded<AtomicU64>>,
    pub(crate) clients: Vec<ClientSlot>,
    pub(crate) slots: SlotPool,
    /// Clients refuse new work once this is set.
    pub(crate) stopping: AtomicBool,
    /// Set once `seal_clients` has returned: from then on no client pushes,
    /// so a shard that saw this and found its rings empty may report idle.
    pub(crate) sealed: AtomicBool,
    /// Shards exit at their next idle moment once this is set.
    pub(crate) terminate: AtomicBool,
    /// Set after every shard thread has exited.
    pub(crate) terminated: AtomicBool,
    pub(crate) epoch: Instant,
    /// Each shard's load in its last heat window: the window's index in the
    /// high half, the load (`f32` bits, 0..1) in the low half.
    pub(crate) loads: Vec<CachePadded<AtomicU64>>,
    /// Each shard's hottest entities of its last heat window.
    pub(crate) hottest: Vec<Mutex<Vec<Hot>>>,
    /// Migration pauses recorded by each shard (nanoseconds).
    pub(crate) pauses: Vec<Mutex<hdrhistogram::Histogram<u64>>>,
    /// `blocked[from * n + to]`: shard `from` parked with envelopes for
    /// shard `to` waiting on a full ring; `to` wakes it when it frees room.
    pub(crate) blocked: Vec<CachePadded<BlockedFlag>>,
}

impl Shared {
    /// The state of a new engine: its configuration, the core of each shard,
    /// its kinds and the shards' doorbells.
    pub(crate) fn new(
        config: EngineConfig,
        cores: Vec<usize>,
        kinds: Kinds,
        doorbells: Vec<Doorbell>,
    ) -> Self {
        let n = cores.len();
        let max_clients = config.max_clients;
        Shared {
            kinds: Arc::new(kinds),
            config,
            cores,
            doorbells,
            metrics: (0..n).map(|_| MetricsCell::default()).collect(),
            quiescence: (0..n).map(|_| CachePadded(Quiescence::default())).collect(),
            client_epoch: (0..n).map(|_| CachePadded(AtomicU64::new(0))).collect(),
            clients: (0..max_clients).map(|_| ClientSlot::new(n)).collect(),
            slots: SlotPool::new(max_clients),
            stopping: AtomicBool::new(false),
            sealed: AtomicBool::new(false),
            terminate: AtomicBool::new(false),
            terminated: AtomicBool::new(false),
            epoch: Instant::now(),
            loads: (0..n).map(|_| CachePadded(AtomicU64::new(0))).collect(),
            hottest: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
            blocked: (0..n * n)
                .map(|_| CachePadded(BlockedFlag::new()))
                .collect(),
            pauses: (0..n).map(|_| Mutex::new(pause_histogram())).collect(),
        }
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.cores.len()
    }

    /// Nanoseconds since the engine started.
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Publishes shard `shard`'s load in the heat window before `window`.
    pub(crate) fn publish_load(&self, shard: usize, window: u32, load: f32) {
        let v = (u64::from(window) << 32) | u64::from(load.to_bits());
        self.loads[shard].store(v, Ordering::Relaxed);
    }

    /// Every shard's load in its last heat window, as seen at `window`. A
    /// shard that ended no window lately was parked all along: its load
    /// counts as 0. (A shard parked for a while ends its windows when it
    /// wakes, at least every 50 ms.)
    pub(crate) fn loads(&self, window: u32) -> Vec<f32> {
        self.loads
            .iter()
            .map(|l| {
                let v = l.load(Ordering::Relaxed);
                let (at, load) = ((v >> 32) as u32, f32::from_bits(v as u32));
                if at.saturating_add(2) < window {
                    0.0
                } else {
                    load
                }
            })
            .collect()
    }

    pub(crate) fn bump_client_epochs(&self) {
        for (epoch, bell) in self.client_epoch.iter().zip(&self.doorbells) {
            epoch.fetch_add(1, Ordering::Release);
            bell.force();
        }
    }

    /// Called by a shard when it has drained and dropped its ends of a closed
    /// client: the last shard to do so frees the slot.
    pub(crate) fn release_client_slot(&self, slot: usize) {
        if self.clients[slot].holders.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.clients[slot]
                .signals
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = None;
            self.slots.release(slot);
        }
    }

    /// After `stopping` is set: waits until no client is between its check of
    /// `stopping` and its push, so every client message is either refused or
    /// already in a ring.
    pub(crate) fn seal_clients(&self) {
        crate::mesh::heavy_barrier();
        for slot in &self.clients {
            let signals = slot
                .signals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(s) = signals {
                while s.busy.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Wakes every client that may be parked waiting for a reply.
    pub(crate) fn wake_all_clients(&self) {
        for slot in &self.clients {
            let signals = slot
                .signals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(s) = signals {
                s.parker.wake();
            }
        }
    }
}
