//! Layer 2, services: where a shard's envelopes wait to leave — the local
//! queue (for entities of this shard, handled after the current message) and
//! one outbox per other shard and per client slot, published by the runtime.

use std::collections::VecDeque;

use crate::envelope::Envelope;
use crate::services::counters::Counters;

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
    queue: VecDeque<Envelope>,
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
    /// This shard's local queue.
    Local,
    /// Another shard.
    Shard(usize),
    /// A client slot.
    Client(usize),
}

/// The local queue and every outbox of one shard.
pub(crate) struct Outboxes {
    /// This shard's index.
    me: usize,
    /// Messages to entities of this shard, handled after the current one.
    local: VecDeque<Envelope>,
    to_shards: Vec<Outbox>,
    to_clients: Vec<Outbox>,
}

impl Outboxes {
    pub(crate) fn new(me: usize, shards: usize, clients: usize) -> Self {
        Outboxes {
            me,
            local: VecDeque::new(),
            to_shards: (0..shards).map(|_| Outbox::default()).collect(),
            to_clients: (0..clients).map(|_| Outbox::default()).collect(),
        }
    }

    /// Queues `env` on `route` (never [`Route::Entity`], which the route
    /// cache resolves).
    #[inline]
    pub(crate) fn push(&mut self, route: Route, env: Envelope) {
        match route {
            Route::Local => self.local.push_back(env),
            Route::Shard(s) => self.to_shards[s].push(env),
            Route::Client(c) => self.to_clients[c].push(env),
            Route::Entity => unreachable!("entity routes go through the route cache"),
        }
    }

    /// Queues `env` for shard `shard`: the local queue for this one.
    #[inline]
    pub(crate) fn push_to_shard(&mut self, shard: usize, env: Envelope) {
        if shard == self.me {
            self.local.push_back(env);
        } else {
            self.to_shards[shard].push(env);
        }
    }

    /// Queues `env` for another shard.
    #[inline]
    pub(crate) fn push_remote(&mut self, shard: usize, env: Envelope) {
        debug_assert_ne!(shard, self.me, "the local queue is not an outbox");
        self.to_shards[shard].push(env);
    }

    /// The queue `env` for shard `shard` would join (the local queue for this
    /// one), to check its length against a cap before pushing.
    #[inline]
    pub(crate) fn queue_for(&mut self, shard: usize) -> &mut VecDeque<Envelope> {
        if shard == self.me {
            &mut self.local
        } else {
            &mut self.to_shards[shard].queue
        }
    }

    #[inline]
    pub(crate) fn push_local(&mut self, env: Envelope) {
        self.local.push_back(env);
    }

    #[inline]
    pub(crate) fn pop_local(&mut self) -> Option<Envelope> {
        self.local.pop_front()
    }

    pub(crate) fn local_len(&self) -> usize {
        self.local.len()
    }

    /// Takes the local queue out (to sift what follows a departing entity);
    /// put the rest back with [`Outboxes::push_local`].
    pub(crate) fn take_local(&mut self) -> VecDeque<Envelope> {
        std::mem::take(&mut self.local)
    }

    /// Envelopes waiting in the outboxes for other shards' rings.
    #[inline]
    pub(crate) fn shard_backlog(&self) -> usize {
        self.to_shards.iter().map(Outbox::len).sum()
    }

    /// Whether anything waits for another shard.
    pub(crate) fn has_shard_outbound(&self) -> bool {
        self.to_shards.iter().any(|o| !o.is_empty())
    }

    /// Whether any outbox holds envelopes.
    pub(crate) fn has_outbound(&self) -> bool {
        self.has_shard_outbound() || self.to_clients.iter().any(|o| !o.is_empty())
    }

    #[inline]
    pub(crate) fn shard_outbox(&mut self, shard: usize) -> &mut Outbox {
        &mut self.to_shards[shard]
    }

    #[inline]
    pub(crate) fn client_outbox(&mut self, slot: usize) -> &mut Outbox {
        &mut self.to_clients[slot]
    }

    #[inline]
    pub(crate) fn get(&mut self, dest: Destination) -> &mut Outbox {
        match dest {
            Destination::Shard(s) => &mut self.to_shards[s],
            Destination::Client(c) => &mut self.to_clients[c],
        }
    }
}
