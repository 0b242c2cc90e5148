//! State shared by the engine handle, its shard threads and its clients.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use percore_shards::{Envelope, Hot, Kinds};
use rtrb::{Consumer, Producer};

use crate::config::EngineConfig;
use crate::mesh::wake::BlockedFlag;
use crate::metrics::MetricsCell;
use crate::sync::{CachePadded, Doorbell, Parker};

/// What a client shares with the shards: its parker and its state flags.
pub(crate) struct ClientSignals {
    /// Shards wake the client through this when they publish replies.
    pub(crate) parker: Parker,
    /// Set by the client, with a light barrier, while it checks `stopping` and
    /// pushes; shutdown waits for it to clear (see `Shared::seal_clients`).
    pub(crate) busy: CachePadded<AtomicBool>,
    /// Set when the client handle is dropped; its shards then drain what it
    /// sent and release the slot.
    pub(crate) closed: AtomicBool,
    /// `reply_blocked[shard]`: that shard parked with replies for this client
    /// waiting on a full reply ring; the client wakes it when it reads.
    pub(crate) reply_blocked: Vec<BlockedFlag>,
}

impl ClientSignals {
    pub(crate) fn new(shards: usize) -> Self {
        ClientSignals {
            parker: Parker::default(),
            busy: CachePadded(AtomicBool::new(false)),
            closed: AtomicBool::new(false),
            reply_blocked: (0..shards).map(|_| BlockedFlag::new()).collect(),
        }
    }
}

/// The shard's ends of one client's rings.
pub(crate) struct ClientEnds {
    pub(crate) requests: Consumer<Envelope>,
    pub(crate) replies: Producer<Envelope>,
    pub(crate) signals: Arc<ClientSignals>,
}

/// One client slot: the ends offered to each shard, and how many shards still
/// hold ends of the current occupant.
pub(crate) struct ClientSlot {
    pub(crate) offers: Vec<Mutex<Option<ClientEnds>>>,
    pub(crate) signals: Mutex<Option<Arc<ClientSignals>>>,
    pub(crate) holders: AtomicUsize,
}

/// Longest [`Engine::client`](crate::Engine::client) waits for the slot of a
/// dropped client to be freed when no slot is free. Freeing takes one pass
/// of each shard (they are woken for it), so this is only reached when a
/// shard is stuck in a long handler.
pub(crate) const SLOT_FREE_WAIT_MAX: Duration = Duration::from_secs(1);

/// The free client slots, and how many slots are being freed: a dropped
/// client's slot returns once every shard has drained its requests, which
/// happens after `drop` returns; `take` waits for it rather than failing.
pub(crate) struct SlotPool {
    state: Mutex<SlotState>,
    freed: Condvar,
}

struct SlotState {
    free: Vec<usize>,
    /// Slots of dropped clients not yet released by every shard.
    closing: usize,
}

impl SlotPool {
    pub(crate) fn new(slots: usize) -> Self {
        SlotPool {
            state: Mutex::new(SlotState {
                free: (0..slots).rev().collect(),
                closing: 0,
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A free slot. With none free but some being freed, waits for one, up
    /// to [`SLOT_FREE_WAIT_MAX`], or until `stop` turns true (checked on
    /// every wakeup; shutdown calls [`SlotPool::wake_all`]).
    pub(crate) fn take(&self, stop: impl Fn() -> bool) -> Option<usize> {
        let deadline = Instant::now() + SLOT_FREE_WAIT_MAX;
        let mut state = self.lock();
        loop {
            if let Some(slot) = state.free.pop() {
                return Some(slot);
            }
            let now = Instant::now();
            if state.closing == 0 || now >= deadline || stop() {
                return None;
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A client was dropped: its slot will be released.
    pub(crate) fn closing(&self) {
        self.lock().closing += 1;
    }

    /// The last shard let go of a dropped client: its slot is free.
    pub(crate) fn release(&self, slot: usize) {
        let mut state = self.lock();
        debug_assert!(state.closing > 0, "a slot released that was not closing");
        state.closing = state.closing.saturating_sub(1);
        state.free.push(slot);
        drop(state);
        self.freed.notify_all();
    }

    /// Returns a slot `take` gave that was not used after all.
    pub(crate) fn give_back(&self, slot: usize) {
        self.lock().free.push(slot);
        self.freed.notify_all();
    }

    /// Wakes every `take` waiting (shutdown: they re-check and give up).
    pub(crate) fn wake_all(&self) {
        let _state = self.lock();
        self.freed.notify_all();
    }
}

/// Per-shard facts the shutdown coordinator reads to detect quiescence
/// (Mattern's four-counter method: two identical collections of all shards'
/// counters, everyone idle, every sent envelope received).
#[derive(Default)]
pub(crate) struct Quiescence {
    pub(crate) idle: AtomicBool,
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
}

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
        crate::sync::heavy_barrier();
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
