//! Layer 1, data: timers on a shard's clock: one-shot and periodic messages to entities,
//! cancellable, fired in deadline order (ties in creation order).
//!
//! A binary heap of deadlines over a slab of timer entries. Cancelling frees
//! the entry at once; its heap node is skipped lazily when it comes up (the
//! generation in the node no longer matches).
//!
//! Timers belong to their entity: each entity's live timers form a list
//! threaded through their entries, found from the entity in one lookup. When
//! the entity migrates, [`Timers::take_owned_by`] lifts its timers out and the
//! new shard [`Timers::adopt`]s them under the same ids, so a [`TimerId`] the
//! entity kept still cancels its timer; when it stops, panics or is deleted,
//! [`Timers::cancel_owned_by`] drops them (their messages with them), so no
//! timer outlives its entity's life.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::envelope::Envelope;
use crate::hash::{EntityMap, KeyMap};
use crate::id::{EntityId, TimerId};

/// No entry (the end of an owner's list).
const NIL: u32 = u32::MAX;

/// Makes the message of each firing of a periodic timer.
pub(crate) type MessageFactory = Box<dyn FnMut() -> Envelope + Send>;

enum Payload {
    Once(Envelope),
    Every {
        period_ns: u64,
        make: MessageFactory,
    },
}

struct Entry {
    id: u64,
    generation: u32,
    deadline_ns: u64,
    owner: EntityId,
    payload: Payload,
    /// Neighbours in the owner's list of live timers (`NIL` at the ends).
    prev: u32,
    next: u32,
}

/// A timer lifted out of one shard to follow its entity to another.
pub(crate) struct MovedTimer {
    id: u64,
    deadline_ns: u64,
    owner: EntityId,
    payload: Payload,
}

/// The timers of one shard.
#[derive(Default)]
pub(crate) struct Timers {
    /// (deadline, creation sequence, slot, generation); the sequence breaks ties
    /// so equal deadlines fire in creation order.
    heap: BinaryHeap<Reverse<(u64, u64, u32, u32)>>,
    entries: Vec<Option<Entry>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    /// Timer id → slot.
    index: KeyMap<u32>,
    /// Owner → the first slot of its list of live timers.
    /// Invariant: an owner is here exactly while it has a live timer.
    owners: EntityMap<u32>,
    /// The next id's low bits; the shard index sits above bit 48.
    next_id: u64,
    id_base: u64,
    sequence: u64,
    live: usize,
}

impl Timers {
    /// No timers, on shard 0.
    #[cfg(test)]
    pub fn new() -> Self {
        Self::default()
    }

    /// No timers, on shard `shard` (its ids never collide with another
    /// shard's).
    pub fn for_shard(shard: usize) -> Self {
        Timers {
            id_base: (shard as u64) << 48,
            ..Self::default()
        }
    }

    /// Number of live (not yet fired or cancelled) timers.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Fires `env` once at `deadline_ns`; the timer belongs to the entity
    /// `env` is addressed to.
    pub fn once(&mut self, deadline_ns: u64, env: Envelope) -> TimerId {
        let owner = EntityId::new(env.kind, env.key);
        let id = self.fresh_id();
        self.add(id, deadline_ns, owner, Payload::Once(env))
    }

    /// Fires `make()` at `first_ns` and then every `period_ns` (at least 1);
    /// the timer belongs to entity `owner`.
    pub fn every(
        &mut self,
        first_ns: u64,
        period_ns: u64,
        owner: EntityId,
        make: MessageFactory,
    ) -> TimerId {
        let period_ns = period_ns.max(1);
        let id = self.fresh_id();
        self.add(id, first_ns, owner, Payload::Every { period_ns, make })
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.id_base | self.next_id
    }

    fn add(&mut self, id: u64, deadline_ns: u64, owner: EntityId, payload: Payload) -> TimerId {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.entries.push(None);
                self.generations.push(0);
                (self.entries.len() - 1) as u32
            }
        };
        let generation = self.generations[slot as usize];
        let next = self.owners.insert(owner, slot).unwrap_or(NIL);
        if next != NIL {
            self.entry_mut(next).prev = slot;
        }
        self.entries[slot as usize] = Some(Entry {
            id,
            generation,
            deadline_ns,
            owner,
            payload,
            prev: NIL,
            next,
        });
        self.index.insert(id, slot);
        self.sequence += 1;
        self.heap
            .push(Reverse((deadline_ns, self.sequence, slot, generation)));
        self.live += 1;
        TimerId(id)
    }

    /// Cancels a timer; its message is dropped. Returns whether it was live.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        match self.index.get(&id.0) {
            Some(&slot) => {
                drop(self.release(slot));
                true
            }
            None => false,
        }
    }

    /// Cancels every live timer of entity `owner` (it stopped, panicked or
    /// was deleted), dropping their messages. Returns how many.
    pub fn cancel_owned_by(&mut self, owner: EntityId) -> usize {
        let mut n = 0;
        while let Some(&slot) = self.owners.get(&owner) {
            drop(self.release(slot));
            n += 1;
        }
        n
    }

    fn entry_mut(&mut self, slot: u32) -> &mut Entry {
        self.entries[slot as usize].as_mut().expect("live entry")
    }

    fn release(&mut self, slot: u32) -> Entry {
        let entry = self.entries[slot as usize].take().expect("live entry");
        // Unlink it from its owner's list.
        if entry.next != NIL {
            self.entry_mut(entry.next).prev = entry.prev;
        }
        if entry.prev != NIL {
            self.entry_mut(entry.prev).next = entry.next;
        } else if entry.next != NIL {
            self.owners.insert(entry.owner, entry.next);
        } else {
            self.owners.remove(&entry.owner);
        }
        self.index.remove(&entry.id);
        self.generations[slot as usize] = self.generations[slot as usize].wrapping_add(1);
        self.free.push(slot);
        self.live -= 1;
        entry
    }

    /// Lifts out every timer of entity `owner` (it is moving to another
    /// shard), in creation order.
    pub fn take_owned_by(&mut self, owner: EntityId) -> Vec<MovedTimer> {
        let mut moved = Vec::new();
        while let Some(&slot) = self.owners.get(&owner) {
            let e = self.release(slot);
            moved.push(MovedTimer {
                id: e.id,
                deadline_ns: e.deadline_ns,
                owner: e.owner,
                payload: e.payload,
            });
        }
        // The list runs newest first; adopting in creation order keeps ties
        // firing in creation order on the new shard.
        moved.reverse();
        moved
    }

    /// Takes over a timer that came with its entity, under the same id.
    pub fn adopt(&mut self, t: MovedTimer) {
        self.add(t.id, t.deadline_ns, t.owner, t.payload);
    }

    /// The earliest live deadline, if any.
    pub fn next_deadline(&mut self) -> Option<u64> {
        while let Some(&Reverse((deadline, _, slot, generation))) = self.heap.peek() {
            if self.is_live(slot, generation) {
                return Some(deadline);
            }
            self.heap.pop();
        }
        None
    }

    fn is_live(&self, slot: u32, generation: u32) -> bool {
        matches!(&self.entries[slot as usize], Some(e) if e.generation == generation)
    }

    /// Pops at most `max` timers due at `now_ns`, in order, handing each
    /// message to `fire`. Periodic timers are re-armed one period after their
    /// deadline, or one period after `now_ns` if they fell behind (no bursts of
    /// catch-up firings). Returns how many fired.
    pub fn fire_due(&mut self, now_ns: u64, max: usize, mut fire: impl FnMut(Envelope)) -> usize {
        let mut fired = 0;
        while fired < max {
            let Some(&Reverse((deadline, _, slot, generation))) = self.heap.peek() else {
                break;
            };
            if !self.is_live(slot, generation) {
                self.heap.pop();
                continue;
            }
            if deadline > now_ns {
                break;
            }
            self.heap.pop();
            fired += 1;
            let entry = self.entries[slot as usize].as_mut().expect("live entry");
            match &mut entry.payload {
                Payload::Every { period_ns, make } => {
                    let env = make();
                    let mut next = deadline.saturating_add(*period_ns);
                    if next <= now_ns {
                        next = now_ns.saturating_add(*period_ns);
                    }
                    entry.deadline_ns = next;
                    self.sequence += 1;
                    self.heap
                        .push(Reverse((next, self.sequence, slot, generation)));
                    fire(env);
                }
                Payload::Once(_) => {
                    if let Payload::Once(env) = self.release(slot).payload {
                        fire(env);
                    }
                }
            }
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Op;

    fn env(tag: u64) -> Envelope {
        Envelope::new(0, tag, Op::Tell, tag)
    }

    fn fire_keys(t: &mut Timers, now: u64) -> Vec<u64> {
        let mut keys = Vec::new();
        t.fire_due(now, usize::MAX, |e| keys.push(e.key));
        keys
    }

    #[test]
    fn fire_in_deadline_then_creation_order() {
        let mut t = Timers::new();
        t.once(30, env(3));
        t.once(10, env(1));
        t.once(20, env(2));
        t.once(20, env(22));
        assert_eq!(t.next_deadline(), Some(10));
        assert_eq!(fire_keys(&mut t, 5), Vec::<u64>::new());
        assert_eq!(fire_keys(&mut t, 20), vec![1, 2, 22]);
        assert_eq!(fire_keys(&mut t, 100), vec![3]);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn every_repeats_and_cancel_stops_it() {
        let mut t = Timers::new();
        let id = t.every(10, 10, EntityId::new(0, 7), Box::new(|| env(7)));
        assert_eq!(fire_keys(&mut t, 10), vec![7]);
        assert_eq!(fire_keys(&mut t, 20), vec![7]);
        // Fell far behind: one firing, re-armed from now.
        assert_eq!(fire_keys(&mut t, 95), vec![7]);
        assert_eq!(t.next_deadline(), Some(105));
        assert!(t.cancel(id));
        assert!(!t.cancel(id), "second cancel is a no-op");
        assert_eq!(fire_keys(&mut t, 1000), Vec::<u64>::new());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn stale_ids_do_not_cancel_reused_slots() {
        let mut t = Timers::new();
        let a = t.once(5, env(1));
        assert_eq!(fire_keys(&mut t, 5), vec![1]);
        let b = t.once(6, env(2));
        assert!(!t.cancel(a), "a fired already; its slot now belongs to b");
        assert_eq!(fire_keys(&mut t, 6), vec![2]);
        assert!(!t.cancel(b));
    }

    #[test]
    fn timers_follow_their_entity_under_the_same_id() {
        let mut a = Timers::for_shard(0);
        let mut b = Timers::for_shard(1);
        let keep = a.once(50, env(1));
        let moving = a.once(10, env(2));
        let periodic = a.every(20, 20, EntityId::new(0, 2), Box::new(|| env(2)));
        let theirs = b.once(30, env(3));
        assert_ne!(moving, theirs, "ids are unique across shards");
        let moved = a.take_owned_by(EntityId::new(0, 2));
        assert_eq!(moved.len(), 2);
        assert_eq!(a.len(), 1);
        for t in moved {
            b.adopt(t);
        }
        assert_eq!(fire_keys(&mut b, 20), vec![2, 2]);
        assert!(b.cancel(periodic), "the id still names the moved timer");
        assert!(!b.cancel(moving), "it fired already");
        assert_eq!(fire_keys(&mut b, 100), vec![3]);
        assert!(a.cancel(keep));
    }

    #[test]
    fn fire_due_respects_its_bound() {
        let mut t = Timers::new();
        for i in 0..10 {
            t.once(1, env(i));
        }
        assert_eq!(t.fire_due(1, 4, |_| {}), 4);
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn cancel_owned_by_drops_exactly_one_entitys_timers() {
        let mut t = Timers::new();
        let a1 = t.once(10, env(1));
        let b = t.once(10, Envelope::new(0, 2, Op::Tell, 2u64));
        let a2 = t.every(5, 5, EntityId::new(0, 1), Box::new(|| env(1)));
        let a3 = t.once(7, env(1));
        assert!(t.cancel(a3), "unlinking from the middle of a list");
        assert_eq!(t.cancel_owned_by(EntityId::new(0, 1)), 2);
        assert_eq!(t.cancel_owned_by(EntityId::new(0, 1)), 0);
        assert!(
            !t.cancel(a1) && !t.cancel(a2),
            "cancelled with their entity"
        );
        assert_eq!(t.len(), 1);
        assert_eq!(fire_keys(&mut t, 100), vec![2]);
        assert!(!t.cancel(b));
        assert_eq!(
            t.cancel_owned_by(EntityId::new(0, 2)),
            0,
            "a fired one-shot left its list"
        );
    }
}
