//! Timers on a shard's clock: one-shot and periodic messages to entities,
//! cancellable, fired in deadline order (ties in creation order).
//!
//! A binary heap of deadlines over a slab of timer entries. Cancelling frees
//! the entry at once; its heap node is skipped lazily when it comes up (the
//! generation in the node no longer matches).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::envelope::Envelope;

/// Names a timer so it can be cancelled. Stale ids (fired or cancelled timers)
/// are harmless: cancelling them does nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    slot: u32,
    generation: u32,
}

/// Makes the message of each firing of a periodic timer.
pub type MessageFactory = Box<dyn FnMut() -> Envelope>;

enum Payload {
    Once(Envelope),
    Every {
        period_ns: u64,
        make: MessageFactory,
    },
}

struct Entry {
    generation: u32,
    payload: Payload,
}

/// The timers of one shard.
#[derive(Default)]
pub struct Timers {
    /// (deadline, creation sequence, slot, generation); the sequence breaks ties
    /// so equal deadlines fire in creation order.
    heap: BinaryHeap<Reverse<(u64, u64, u32, u32)>>,
    entries: Vec<Option<Entry>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    sequence: u64,
    live: usize,
}

impl Timers {
    /// No timers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of live (not yet fired or cancelled) timers.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no timer is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Fires `env` once at `deadline_ns`.
    pub fn once(&mut self, deadline_ns: u64, env: Envelope) -> TimerId {
        self.add(deadline_ns, Payload::Once(env))
    }

    /// Fires `make()` at `first_ns` and then every `period_ns` (at least 1).
    pub fn every(&mut self, first_ns: u64, period_ns: u64, make: MessageFactory) -> TimerId {
        let period_ns = period_ns.max(1);
        self.add(first_ns, Payload::Every { period_ns, make })
    }

    fn add(&mut self, deadline_ns: u64, payload: Payload) -> TimerId {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.entries.push(None);
                self.generations.push(0);
                (self.entries.len() - 1) as u32
            }
        };
        let generation = self.generations[slot as usize];
        self.entries[slot as usize] = Some(Entry {
            generation,
            payload,
        });
        self.sequence += 1;
        self.heap
            .push(Reverse((deadline_ns, self.sequence, slot, generation)));
        self.live += 1;
        TimerId { slot, generation }
    }

    /// Cancels a timer. Returns whether it was live.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        match self.entries.get(id.slot as usize) {
            Some(Some(entry)) if entry.generation == id.generation => {
                // Dropping the pending envelope leaks a boxed payload at worst
                // (its type is not known here); inline payloads need no drop.
                self.release(id.slot);
                true
            }
            _ => false,
        }
    }

    fn release(&mut self, slot: u32) {
        self.entries[slot as usize] = None;
        self.generations[slot as usize] = self.generations[slot as usize].wrapping_add(1);
        self.free.push(slot);
        self.live -= 1;
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
                    self.sequence += 1;
                    self.heap
                        .push(Reverse((next, self.sequence, slot, generation)));
                    fire(env);
                }
                Payload::Once(_) => {
                    let entry = self.entries[slot as usize].take().expect("live entry");
                    self.release(slot);
                    if let Payload::Once(env) = entry.payload {
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
        assert!(t.is_empty());
    }

    #[test]
    fn every_repeats_and_cancel_stops_it() {
        let mut t = Timers::new();
        let id = t.every(10, 10, Box::new(|| env(7)));
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
    fn fire_due_respects_its_bound() {
        let mut t = Timers::new();
        for i in 0..10 {
            t.once(1, env(i));
        }
        assert_eq!(t.fire_due(1, 4, |_| {}), 4);
        assert_eq!(t.len(), 6);
    }
}
