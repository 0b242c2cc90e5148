//! The models. Each thread is one side of the protocol written as the engine
//! writes it (`Doorbell::notify`, the shard loop's `park` and
//! `drain_inbound`, the client's `poll_reply`); the assertion is that every
//! message is delivered, and loom fails any interleaving in which a thread
//! sleeps forever on its doorbell.

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use crate::wake::{BlockedFlag, SleepFlag};

/// Runs `f` under loom with at most `PREEMPTIONS` preemptions per execution
/// (unless `LOOM_MAX_PREEMPTIONS` says otherwise). Bounded so that CI runs
/// the models in about half a minute: the full-ring model explores every
/// interleaving within 6 preemptions in ~20 s (7: ~75 s; unbounded: over
/// 8 minutes). The lost wakeup this model found in the engine needed 4.
fn model(f: impl Fn() + Sync + Send + 'static) {
    const PREEMPTIONS: usize = 6;
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(PREEMPTIONS);
    }
    builder.check(f);
}

/// A single-producer single-consumer ring with rtrb's orderings: the
/// producer publishes its tail with `Release`, the consumer its head; each
/// reads the other's with `Acquire`.
struct Ring {
    slots: Vec<UnsafeCell<u64>>,
    head: AtomicUsize,
    tail: AtomicUsize,
}

impl Ring {
    fn new(capacity: usize) -> Self {
        Ring {
            slots: (0..capacity).map(|_| UnsafeCell::new(0)).collect(),
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
        }
    }

    /// Producer only.
    fn push(&self, value: u64) -> bool {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        if tail - head == self.slots.len() {
            return false;
        }
        // SAFETY: the slot at `tail` is outside the consumer's readable range
        // until the `Release` store below publishes it.
        self.slots[tail % self.slots.len()].with_mut(|p| unsafe { *p = value });
        self.tail.store(tail + 1, Ordering::Release);
        true
    }

    /// Consumer only.
    fn pop(&self) -> Option<u64> {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        // SAFETY: the producer published this slot (`Acquire` above) and does
        // not reuse it until the `Release` store below.
        let value = self.slots[head % self.slots.len()].with(|p| unsafe { *p });
        self.head.store(head + 1, Ordering::Release);
        Some(value)
    }

    /// Consumer's look (the sleeper's re-check).
    fn is_empty(&self) -> bool {
        self.head.load(Ordering::Relaxed) == self.tail.load(Ordering::Acquire)
    }

    /// Producer's look (a full ring lets a shard park).
    fn is_full(&self) -> bool {
        self.tail.load(Ordering::Relaxed) - self.head.load(Ordering::Acquire) == self.slots.len()
    }
}

/// A shard's or client's doorbell: `SleepFlag` plus the eventfd stand-in (a
/// count that `wait` blocks on and resets).
#[derive(Default)]
struct Bell {
    sleeping: SleepFlag,
    count: Mutex<u64>,
    rung: Condvar,
}

impl Bell {
    /// `Doorbell::notify`: after publishing.
    fn notify(&self) {
        if self.sleeping.wake_needed() {
            *self.count.lock().unwrap() += 1;
            self.rung.notify_one();
        }
    }

    /// The `ppoll` on the eventfd and its read. No timeout: a lost wakeup
    /// blocks forever, which loom reports as a deadlock.
    fn wait(&self) {
        let mut count = self.count.lock().unwrap();
        while *count == 0 {
            count = self.rung.wait(count).unwrap();
        }
        *count = 0;
    }
}

/// The shard sleeper: a sender pushes `MESSAGES` on a ring with room for
/// all; the receiver drains, announces sleep, re-checks, parks. No message
/// is left unseen with the receiver asleep.
#[test]
fn a_sleeping_shard_never_misses_a_message() {
    const MESSAGES: u64 = 2;
    model(|| {
        let ring = Arc::new(Ring::new(2));
        let bell = Arc::new(Bell::default());

        let sender = {
            let (ring, bell) = (ring.clone(), bell.clone());
            thread::spawn(move || {
                for m in 0..MESSAGES {
                    assert!(ring.push(m), "the ring has room for every message");
                    bell.notify();
                }
            })
        };

        let mut next = 0;
        while next < MESSAGES {
            if let Some(m) = ring.pop() {
                assert_eq!(m, next, "in order");
                next += 1;
                continue;
            }
            bell.sleeping.announce();
            if !ring.is_empty() {
                bell.sleeping.cancel();
                continue;
            }
            bell.wait();
            bell.sleeping.cancel();
        }
        sender.join().unwrap();
    });
}

/// The full-ring producer (the lost-wakeup fix of 2026-11): a producer with
/// more messages than its ring holds parks when the ring is full, having
/// marked the ring's blocked flag before it announced sleep, and clears the
/// mark once awake; the consumer, itself parking when the ring is empty,
/// checks the flag after every read that freed room and wakes the producer.
/// Neither sleeps forever; every message arrives, in order. (Three messages
/// through one slot: a producer that refills the ring and marks it again
/// while the consumer handles an earlier mark is the case that matters.)
#[test]
fn a_producer_parked_on_a_full_ring_is_woken_when_room_is_made() {
    const MESSAGES: u64 = 3;
    model(|| {
        let ring = Arc::new(Ring::new(1));
        let producer_bell = Arc::new(Bell::default());
        let consumer_bell = Arc::new(Bell::default());
        let blocked = Arc::new(BlockedFlag::new());

        let producer = {
            let (ring, producer_bell, consumer_bell, blocked) = (
                ring.clone(),
                producer_bell.clone(),
                consumer_bell.clone(),
                blocked.clone(),
            );
            thread::spawn(move || {
                let mut next = 0;
                while next < MESSAGES {
                    if ring.push(next) {
                        next += 1;
                        consumer_bell.notify();
                        continue;
                    }
                    // The shard loop's `park` with an outbox for a full ring.
                    blocked.mark();
                    producer_bell.sleeping.announce();
                    if ring.is_full() {
                        producer_bell.wait();
                    }
                    producer_bell.sleeping.cancel();
                    blocked.clear();
                }
            })
        };

        let mut next = 0;
        while next < MESSAGES {
            if let Some(m) = ring.pop() {
                assert_eq!(m, next, "in order");
                next += 1;
                // `drain_inbound` after a read: wake a blocked producer.
                if blocked.wake_needed() {
                    producer_bell.notify();
                }
                continue;
            }
            consumer_bell.sleeping.announce();
            if !ring.is_empty() {
                consumer_bell.sleeping.cancel();
                continue;
            }
            consumer_bell.wait();
            consumer_bell.sleeping.cancel();
        }
        producer.join().unwrap();
    });
}
