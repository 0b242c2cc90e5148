//! The client registry: slots, the rings and signals each client shares with
//! the shards, and how a new client is set up.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use percore_shards::driver::Envelope;
use rtrb::{Consumer, Producer, RingBuffer};

use super::client::Client;
use crate::error::Error;
use crate::mesh::wake::BlockedFlag;
use crate::mesh::{CachePadded, Parker};
use crate::shared::Shared;

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

impl ClientSlot {
    /// An empty slot of an engine of `shards` shards.
    pub(crate) fn new(shards: usize) -> Self {
        ClientSlot {
            offers: (0..shards).map(|_| Mutex::new(None)).collect(),
            signals: Mutex::new(None),
            holders: AtomicUsize::new(0),
        }
    }
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

/// A new client of the engine `shared`: a free slot (waiting for one being
/// freed, see [`SlotPool::take`]), a request ring and a reply ring per shard,
/// offered to the shards, which take them at their next pass.
pub(crate) fn register(shared: &Arc<Shared>) -> Result<Client, Error> {
    if shared.stopping.load(Ordering::Acquire) {
        return Err(Error::ShuttingDown);
    }
    let slot = shared
        .slots
        .take(|| shared.stopping.load(Ordering::Acquire));
    if shared.stopping.load(Ordering::Acquire) {
        if let Some(slot) = slot {
            shared.slots.give_back(slot);
        }
        return Err(Error::ShuttingDown);
    }
    let slot = slot.ok_or(Error::TooManyClients {
        max: shared.config.max_clients,
    })?;
    let n = shared.shard_count();
    let cap = shared.config.ring_capacity;
    let signals = Arc::new(ClientSignals::new(n));
    let mut requests = Vec::with_capacity(n);
    let mut replies = Vec::with_capacity(n);
    let entry = &shared.clients[slot];
    entry.holders.store(n, Ordering::Release);
    *entry.signals.lock().unwrap_or_else(|e| e.into_inner()) = Some(signals.clone());
    for offer in &entry.offers {
        let (req_tx, req_rx) = RingBuffer::new(cap);
        let (rep_tx, rep_rx) = RingBuffer::new(cap);
        requests.push(req_tx);
        replies.push(rep_rx);
        *offer.lock().unwrap_or_else(|e| e.into_inner()) = Some(ClientEnds {
            requests: req_rx,
            replies: rep_tx,
            signals: signals.clone(),
        });
    }
    shared.bump_client_epochs();
    Ok(Client::new(
        shared.clone(),
        slot,
        signals,
        requests,
        replies,
    ))
}
