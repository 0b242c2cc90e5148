//! Layer 2, services: the output gate and the shard's log bookkeeping for
//! durable kinds (contract point 6).
//!
//! - While a durable kind's handler runs the gate is closed: everything it
//!   emits (replies, tells, asks — to other shards, clients, or entities of
//!   its own shard) is held.
//! - At the end of the pass every dirty durable entity whose encoding changed
//!   is appended once (changes within a pass coalesce), deletions are
//!   appended, and the outputs held this pass wait for the highest
//!   unresolved LSN.
//! - A failed record (full disk, failed fsync) restores its entity to its
//!   last durable state and fails the held replies; held tells are dropped.

use std::collections::VecDeque;

use crate::envelope::Envelope;
use crate::id::EntityId;
use crate::log::{LogRefusal, LogSink};
use crate::services::outbox::Route;

/// An output of a durable handler, held until the change it follows is durable.
pub(crate) struct Held {
    pub(crate) route: Route,
    pub(crate) env: Envelope,
    /// The entity whose handler emitted it (its held outputs move with it).
    pub(crate) from: EntityId,
}

/// The outputs of one pass, waiting for the log to be durable through `lsn`.
struct HeldBatch {
    lsn: u64,
    outputs: Vec<Held>,
}

/// A deletion to log at the end of the pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tombstone {
    pub(crate) kind_hash: u64,
    pub(crate) key: u64,
    pub(crate) version: u64,
}

/// An appended state record not yet resolved (durable or failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Inflight {
    pub(crate) lsn: u64,
    pub(crate) id: EntityId,
}

/// The output gate and the log bookkeeping of one shard.
#[derive(Default)]
pub(crate) struct Gate {
    /// Set while a durable kind's handler runs: what it emits is held.
    closed: bool,
    /// The entity whose handler runs behind the gate.
    from: EntityId,
    /// Outputs held during the current pass.
    held: Vec<Held>,
    /// Held outputs of earlier passes, each waiting for its LSN, in order.
    batches: VecDeque<HeldBatch>,
    /// Durable entities handled this pass.
    dirty: Vec<EntityId>,
    /// Deletions to log this pass.
    tombstones: Vec<Tombstone>,
    /// Appended state records not yet resolved, in LSN order.
    inflight: VecDeque<Inflight>,
}

impl Gate {
    /// Whether outputs are held now.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Closes the gate (for a durable handler of `from`) or opens it.
    #[inline]
    pub(crate) fn set(&mut self, closed: bool, from: EntityId) {
        self.closed = closed;
        self.from = from;
    }

    #[inline]
    pub(crate) fn open(&mut self) {
        self.closed = false;
    }

    /// Outputs held in this pass.
    #[inline]
    pub(crate) fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Holds `env`, bound for `route`, until the pass's records are durable.
    #[inline]
    pub(crate) fn hold(&mut self, route: Route, env: Envelope) {
        let from = self.from;
        self.held.push(Held { route, env, from });
    }

    /// Holds outputs that came with an entity from its old shard.
    pub(crate) fn hold_arrived(&mut self, held: Vec<Held>) {
        self.held.extend(held);
    }

    /// Marks durable entity `id` for logging at the end of the pass.
    #[inline]
    pub(crate) fn mark_dirty(&mut self, id: EntityId) {
        self.dirty.push(id);
    }

    /// Takes the entities marked dirty; hand the buffer back with
    /// [`Gate::return_dirty`] to reuse it.
    pub(crate) fn take_dirty(&mut self) -> Vec<EntityId> {
        std::mem::take(&mut self.dirty)
    }

    pub(crate) fn return_dirty(&mut self, mut dirty: Vec<EntityId>) {
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Queues a deletion for the log.
    pub(crate) fn push_tombstone(&mut self, t: Tombstone) {
        self.tombstones.push(t);
    }

    /// A state record of `id` was appended as `lsn`.
    pub(crate) fn note_appended(&mut self, lsn: u64, id: EntityId) {
        self.inflight.push_back(Inflight { lsn, id });
    }

    /// The LSN of the last record appended for `id` that is not resolved.
    pub(crate) fn inflight_lsn_of(&self, id: EntityId) -> Option<u64> {
        self.inflight
            .iter()
            .rev()
            .find(|r| r.id == id)
            .map(|r| r.lsn)
    }

    /// Takes the oldest unresolved record if its LSN is below `lsn_end`.
    pub(crate) fn pop_inflight_below(&mut self, lsn_end: u64) -> Option<Inflight> {
        match self.inflight.front() {
            Some(r) if r.lsn < lsn_end => self.inflight.pop_front(),
            _ => None,
        }
    }

    /// Appends this pass's deletions. Returns the last refusal, if any;
    /// `logged` and `failed` count records.
    pub(crate) fn log_tombstones(
        &mut self,
        sink: &mut dyn LogSink,
        logged: &mut u64,
        failed: &mut u64,
    ) -> Option<LogRefusal> {
        let mut refusal = None;
        for t in self.tombstones.drain(..) {
            match sink.append_tombstone(t.kind_hash, t.key, t.version) {
                Ok(_) => *logged += 1,
                Err(r) => {
                    *failed += 1;
                    refusal = Some(r);
                }
            }
        }
        refusal
    }

    /// Takes the outputs held in this pass.
    pub(crate) fn take_pass_held(&mut self) -> Vec<Held> {
        std::mem::take(&mut self.held)
    }

    /// Outputs of this pass wait for the log to be durable through `lsn`.
    pub(crate) fn wait_for(&mut self, lsn: u64, outputs: Vec<Held>) {
        self.batches.push_back(HeldBatch { lsn, outputs });
    }

    /// Takes the oldest batch of held outputs if it waits for an LSN below
    /// `lsn_end`.
    pub(crate) fn pop_batch_below(&mut self, lsn_end: u64) -> Option<Vec<Held>> {
        match self.batches.front() {
            Some(b) if b.lsn < lsn_end => self.batches.pop_front().map(|b| b.outputs),
            _ => None,
        }
    }

    /// Takes what entity `from` emitted behind the gate in this pass.
    pub(crate) fn take_pass_outputs_of(&mut self, from: EntityId) -> Vec<Held> {
        let (mine, others): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.from == from);
        self.held = others;
        mine
    }

    /// Lifts every output of `id` still held (this pass's and earlier
    /// passes'), to travel with it; `reroute` re-aims each as seen from the
    /// entity's new shard.
    pub(crate) fn take_all_of(
        &mut self,
        id: EntityId,
        reroute: impl Fn(Route) -> Route,
    ) -> Vec<Held> {
        let mut taken = Vec::new();
        let mut lift = |batch: &mut Vec<Held>| {
            let mut i = 0;
            while i < batch.len() {
                if batch[i].from == id {
                    let mut h = batch.remove(i);
                    h.route = reroute(h.route);
                    taken.push(h);
                } else {
                    i += 1;
                }
            }
        };
        for b in &mut self.batches {
            lift(&mut b.outputs);
        }
        lift(&mut self.held);
        taken
    }

    /// Drops every held output for client slot `slot` (its handle went away).
    pub(crate) fn forget_client(&mut self, slot: usize) {
        self.held.retain(|h| h.route != Route::Client(slot));
        for b in &mut self.batches {
            b.outputs.retain(|h| h.route != Route::Client(slot));
        }
    }

    /// Whether records or held outputs wait for the log.
    pub(crate) fn has_unresolved(&self) -> bool {
        !self.inflight.is_empty() || !self.batches.is_empty()
    }
}
