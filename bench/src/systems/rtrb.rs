//! The raw rtrb ring between pinned threads: the physical limit of percore's design,
//! with none of its addressing, dispatch or wake-ups.
//!
//! API used, as rtrb's docs recommend for throughput: `RingBuffer::new`, publication in
//! chunks of [`BATCH`] with `Producer::write_chunk_uninit` +
//! `WriteChunkUninit::fill_from_iter`, consumption of whatever is ready with
//! `Consumer::read_chunk`; single `push`/`pop` for request/reply. rtrb has no way to
//! wait, so both sides spin, then yield ([`Backoff`]). `many` uses one ring per
//! (sender, receiver) pair, the mesh percore builds, with senders buffering [`BATCH`]
//! messages per destination.
//!
//! `tell` reports two figures, each compared like with like: `msgs_per_s` is one
//! `push` and one `pop` per message — the cost of the ring when a sender sends one
//! message per call, as every peer's `tell` and percore's `Client::tell` do (the "raw
//! rtrb" figure DESIGN.md was written against) — and `batched_msgs_per_s` publishes
//! in chunks of [`BATCH`], the limit for percore's `Client::tell_batch`. Chunked
//! publication is an order of magnitude faster, and its figure depends on the chunk
//! size (on the 2-core development machine: about 32 M/s unbatched, 360 M/s in
//! chunks of 16, 620 M/s in chunks of 64).
//!
//! Skipped: `activate` (a ring has no entities) and `idle` (rtrb cannot wait, so any
//! figure would measure our choice of backoff, not rtrb).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ::rtrb::{Consumer, Producer, PushError, RingBuffer};

use super::System;
use crate::harness::{spawn_on, Backoff, CORES, QUEUE_CAPACITY, RECEIVER_CORE, SENDER_CORE};
use crate::measure::{rate, Figure, Latencies};
use crate::workload::{
    fanout_player_sum, shard_of, sum_below, ManyPlan, Scale, Workload, FANOUT_PLAYERS, MANY_KEYS,
    MANY_SENDERS,
};

/// The rtrb entry of the system table.
pub const SYSTEM: System = System {
    name: "rtrb",
    workloads: &[
        (Workload::Tell, tell),
        (Workload::Ask, ask),
        (Workload::Many, many),
        (Workload::Fanout, fanout),
    ],
};

/// Messages published per chunk: percore's ring mesh flushes every 16 items (DESIGN.md,
/// "Ring mesh", after Seastar), so this is the ring used the way percore uses it.
pub const BATCH: usize = 16;

/// Most messages a `many` receiver takes from one ring before turning to the other,
/// so one sender cannot starve the other.
const DRAIN_MAX: usize = 256;

/// Publishes every item in chunks of at most [`BATCH`], waiting while the ring is
/// full.
fn push_all<T>(producer: &mut Producer<T>, items: impl Iterator<Item = T>) {
    let mut items = items.peekable();
    let mut backoff = Backoff::new();
    while items.peek().is_some() {
        let free = producer.slots().min(BATCH);
        if free == 0 {
            backoff.snooze();
            continue;
        }
        backoff.reset();
        let chunk = producer
            .write_chunk_uninit(free)
            .expect("free slots were just counted");
        chunk.fill_from_iter(&mut items);
    }
}

/// Pops `count` items in chunks of whatever is ready, handing each to `handle`, and
/// returns when the last one was handled.
fn drain<T>(consumer: &mut Consumer<T>, count: u64, mut handle: impl FnMut(T)) -> Instant {
    let mut left = count;
    let mut backoff = Backoff::new();
    while left > 0 {
        let ready = consumer.slots();
        if ready == 0 {
            backoff.snooze();
            continue;
        }
        backoff.reset();
        let chunk = consumer
            .read_chunk(ready)
            .expect("ready slots were just counted");
        left -= ready as u64;
        chunk.into_iter().for_each(&mut handle);
    }
    Instant::now()
}

fn push_wait<T>(producer: &mut Producer<T>, mut item: T) {
    let mut backoff = Backoff::new();
    loop {
        match producer.push(item) {
            Ok(()) => return,
            Err(PushError::Full(back)) => {
                item = back;
                backoff.snooze();
            }
        }
    }
}

fn pop_wait<T>(consumer: &mut Consumer<T>) -> T {
    let mut backoff = Backoff::new();
    loop {
        if let Ok(item) = consumer.pop() {
            return item;
        }
        backoff.snooze();
    }
}

fn tell(scale: Scale) -> Vec<Figure> {
    let n = scale.tell_msgs();
    vec![
        rate("msgs_per_s", n, tell_once(n, false)),
        rate("batched_msgs_per_s", n, tell_once(n, true)),
    ]
}

/// Sends `0..n` across cores, in chunks or one `push`/`pop` per message, and returns
/// the time from the first send to the last message handled.
fn tell_once(n: u64, chunked: bool) -> Duration {
    let (mut producer, mut consumer) = RingBuffer::<u64>::new(QUEUE_CAPACITY);
    let ready = Arc::new(Barrier::new(2));
    let receiver = spawn_on(RECEIVER_CORE, "rtrb-receiver", {
        let ready = Arc::clone(&ready);
        move || {
            let mut state = 0u64;
            ready.wait();
            let end = if chunked {
                drain(&mut consumer, n, |v| state += v)
            } else {
                for _ in 0..n {
                    state += pop_wait(&mut consumer);
                }
                Instant::now()
            };
            assert_eq!(state, sum_below(n));
            end
        }
    });
    let sender = spawn_on(SENDER_CORE, "rtrb-sender", move || {
        ready.wait();
        let start = Instant::now();
        if chunked {
            push_all(&mut producer, 0..n);
        } else {
            for i in 0..n {
                push_wait(&mut producer, i);
            }
        }
        start
    });
    let start = sender.join().expect("sender");
    let end = receiver.join().expect("receiver");
    end - start
}

fn ask(scale: Scale) -> Vec<Figure> {
    let warmup = scale.ask_warmup();
    let total = warmup + scale.ask_samples();
    let (mut request_tx, mut request_rx) = RingBuffer::<u64>::new(QUEUE_CAPACITY);
    let (mut reply_tx, mut reply_rx) = RingBuffer::<u64>::new(QUEUE_CAPACITY);
    let receiver = spawn_on(RECEIVER_CORE, "rtrb-receiver", move || {
        let mut state = 0u64;
        for _ in 0..total {
            state += pop_wait(&mut request_rx);
            push_wait(&mut reply_tx, state);
        }
    });
    let asker = spawn_on(SENDER_CORE, "rtrb-asker", move || {
        let mut latencies = Latencies::new();
        for i in 0..total {
            let start = Instant::now();
            push_wait(&mut request_tx, 1);
            let state = pop_wait(&mut reply_rx);
            let latency = start.elapsed();
            debug_assert_eq!(state, i + 1);
            if i >= warmup {
                latencies.record(latency);
            }
        }
        latencies
    });
    let latencies = asker.join().expect("asker");
    receiver.join().expect("receiver");
    latencies.figures()
}

fn many(scale: Scale) -> Vec<Figure> {
    type Msg = (u32, u64);
    let plan = ManyPlan::new(scale);
    let total = plan.total();
    let receivers = CORES.len();
    // rings[sender][receiver] and its consumer end, gathered per receiver.
    let mut producers: Vec<Vec<Producer<Msg>>> = (0..MANY_SENDERS).map(|_| Vec::new()).collect();
    let mut consumers: Vec<Vec<Consumer<Msg>>> = (0..receivers).map(|_| Vec::new()).collect();
    for sender_rings in &mut producers {
        for receiver_rings in &mut consumers {
            let (producer, consumer) = RingBuffer::new(QUEUE_CAPACITY);
            sender_rings.push(producer);
            receiver_rings.push(consumer);
        }
    }
    let ready = Arc::new(Barrier::new(MANY_SENDERS + receivers));
    let receiver_threads: Vec<_> = consumers
        .into_iter()
        .enumerate()
        .map(|(shard, mut rings)| {
            let expected = plan.expected_for(shard, receivers);
            let ready = Arc::clone(&ready);
            spawn_on(CORES[shard], "rtrb-receiver", move || {
                let mut states = vec![0u64; (MANY_KEYS as usize).div_ceil(receivers)];
                let mut left = expected;
                let mut backoff = Backoff::new();
                ready.wait();
                while left > 0 {
                    let mut progressed = false;
                    for ring in &mut rings {
                        let ready = ring.slots().min(DRAIN_MAX);
                        if ready == 0 {
                            continue;
                        }
                        progressed = true;
                        left -= ready as u64;
                        let chunk = ring.read_chunk(ready).expect("ready slots were counted");
                        for (key, value) in chunk {
                            states[key as usize / receivers] += value;
                        }
                    }
                    if progressed {
                        backoff.reset();
                    } else {
                        backoff.snooze();
                    }
                }
                let end = Instant::now();
                assert_eq!(states.iter().sum::<u64>(), expected);
                end
            })
        })
        .collect();
    let sender_threads: Vec<_> = producers
        .into_iter()
        .zip(plan.keys)
        .enumerate()
        .map(|(sender, (mut rings, keys))| {
            let ready = Arc::clone(&ready);
            spawn_on(CORES[sender], "rtrb-sender", move || {
                let mut buffers: Vec<Vec<Msg>> =
                    (0..receivers).map(|_| Vec::with_capacity(BATCH)).collect();
                ready.wait();
                let start = Instant::now();
                for key in keys {
                    let shard = shard_of(u64::from(key), receivers);
                    buffers[shard].push((key, 1));
                    if buffers[shard].len() == BATCH {
                        push_all(&mut rings[shard], buffers[shard].drain(..));
                    }
                }
                for (ring, buffer) in rings.iter_mut().zip(&mut buffers) {
                    push_all(ring, buffer.drain(..));
                }
                start
            })
        })
        .collect();
    let start = sender_threads
        .into_iter()
        .map(|t| t.join().expect("sender"))
        .min()
        .expect("two senders");
    let end = receiver_threads
        .into_iter()
        .map(|t| t.join().expect("receiver"))
        .max()
        .expect("two receivers");
    vec![rate("msgs_per_s", total, end - start)]
}

fn fanout(scale: Scale) -> Vec<Figure> {
    let rounds = scale.fanout_rounds();
    let deliveries = rounds * FANOUT_PLAYERS;
    let (mut producer, mut consumer) = RingBuffer::<(u32, u64)>::new(QUEUE_CAPACITY);
    let ready = Arc::new(Barrier::new(2));
    let players = spawn_on(RECEIVER_CORE, "rtrb-players", {
        let ready = Arc::clone(&ready);
        move || {
            let mut players = vec![0u64; FANOUT_PLAYERS as usize];
            ready.wait();
            let end = drain(&mut consumer, deliveries, |(player, round)| {
                players[player as usize] += round;
            });
            assert!(players.iter().all(|&p| p == fanout_player_sum(rounds)));
            end
        }
    });
    let room = spawn_on(SENDER_CORE, "rtrb-room", move || {
        ready.wait();
        let start = Instant::now();
        let broadcasts =
            (0..rounds).flat_map(|round| (0..FANOUT_PLAYERS as u32).map(move |p| (p, round)));
        push_all(&mut producer, broadcasts);
        start
    });
    let start = room.join().expect("room");
    let end = players.join().expect("players");
    vec![rate("deliveries_per_s", deliveries, end - start)]
}
