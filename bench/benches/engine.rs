//! Criterion benches of the engine alone, each beside its physical limit:
//! cross-core tell against a raw rtrb ring between the same two cores,
//! same-shard tell (the local fast path), the ask round trip, 100 000
//! entities at random keys, activation, and the inner parts (ring batches,
//! table lookup, envelope encode, one shard's tell path without rings).
//!
//! Run with `cargo bench -p percore-bench --bench engine`. Shards poll
//! (IdlePolicy::Poll) so the figures show the engine, not wakeup latency;
//! the bench thread is pinned to core 0, the measured shard to core 1.

// criterion_group! generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use percore::{Ctx, Engine, Entity, IdlePolicy};
use percore_shards::driver::Table;
use percore_shards::driver::CLIENT_BIT;
use percore_shards::driver::{Envelope, Op, Shard, ShardSpec};
use percore_shards::Kinds;

/// Adds what it is sent.
struct Sink(u64);

impl Entity for Sink {
    const KIND: &'static str = "sink";
    type Msg = u64;
    type Reply = u64;
    fn activate(_: u64) -> Self {
        Sink(0)
    }
    fn handle(&mut self, n: u64, _: &mut Ctx<'_, Self>) -> u64 {
        self.0 += n;
        self.0
    }
}

/// Counts its messages where the bench thread can see them (the same-shard
/// bench waits for the count: the relay's tells and the bench's asks are
/// different senders, so an ask proves nothing about the relay's tells).
/// It publishes its count once per `BATCH` messages, so the bench thread's
/// polling does not pull the counter's cache line away on every message.
struct LocalSink(u64);

static LOCAL_HANDLED: AtomicU64 = AtomicU64::new(0);

impl Entity for LocalSink {
    const KIND: &'static str = "local-sink";
    type Msg = ();
    type Reply = ();
    fn activate(_: u64) -> Self {
        LocalSink(0)
    }
    fn handle(&mut self, _: (), _: &mut Ctx<'_, Self>) {
        self.0 += 1;
        if self.0.is_multiple_of(BATCH) {
            LOCAL_HANDLED.store(self.0, Ordering::Release);
        }
    }
}

/// Sends `n` tells to local sink `to` on its own shard.
struct Relay;

impl Entity for Relay {
    const KIND: &'static str = "relay";
    type Msg = (u64, u64);
    type Reply = ();
    fn activate(_: u64) -> Self {
        Relay
    }
    fn handle(&mut self, (to, n): (u64, u64), ctx: &mut Ctx<'_, Self>) {
        for _ in 0..n {
            if let Err(e) = ctx.tell::<LocalSink>(to, ()) {
                panic!("relay send failed: {e}");
            }
        }
    }
}

const BATCH: u64 = 10_000;

fn pin(core: usize) {
    core_affinity::set_for_current(core_affinity::CoreId { id: core });
}

fn engine(cores: &[usize]) -> Engine {
    Engine::builder()
        .cores(cores.iter().copied())
        .idle(IdlePolicy::Poll)
        .overflow_cap(1 << 20)
        .register::<Sink>()
        .register::<Relay>()
        .register::<LocalSink>()
        .build()
        .expect("engine starts")
}

fn tell_cross_core(c: &mut Criterion) {
    let mut g = c.benchmark_group("tell_cross_core");
    g.throughput(Throughput::Elements(BATCH));
    pin(0);
    {
        // The physical limit: a raw rtrb ring from core 0 to core 1.
        let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(1024);
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let consumer = {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::spawn(move || {
                pin(1);
                let mut sum = 0u64;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    while let Ok(v) = rx.pop() {
                        sum = sum.wrapping_add(v);
                        n += 1;
                    }
                    received.store(n, Ordering::Release);
                }
                black_box(sum);
            })
        };
        let mut sent = 0u64;
        g.bench_function("raw_rtrb", |b| {
            b.iter(|| {
                for i in 0..BATCH {
                    let mut v = i;
                    while let Err(rtrb::PushError::Full(back)) = tx.push(v) {
                        v = back;
                        std::hint::spin_loop();
                    }
                }
                sent += BATCH;
                while received.load(Ordering::Acquire) < sent {
                    std::hint::spin_loop();
                }
            })
        });
        stop.store(true, Ordering::Relaxed);
        consumer.join().unwrap();
    }
    {
        let engine = engine(&[1]);
        let client = engine.client().unwrap();
        g.bench_function("percore", |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    client.tell::<Sink>(0, 1).unwrap();
                }
                black_box(client.ask::<Sink>(0, 0).unwrap())
            })
        });
        g.bench_function("percore_batch", |b| {
            b.iter(|| {
                client
                    .tell_batch::<Sink, _>((0..BATCH).map(|_| (0, 1)))
                    .unwrap();
                black_box(client.ask::<Sink>(0, 0).unwrap())
            })
        });
    }
    g.finish();
}

fn tell_same_shard(c: &mut Criterion) {
    let mut g = c.benchmark_group("tell_same_shard");
    g.throughput(Throughput::Elements(BATCH));
    pin(0);
    let engine = engine(&[1]);
    let client = engine.client().unwrap();
    let mut expected = 0;
    g.bench_function("percore", |b| {
        b.iter(|| {
            expected += BATCH;
            client.tell::<Relay>(0, (7, BATCH)).unwrap();
            while LOCAL_HANDLED.load(Ordering::Acquire) < expected {
                std::hint::spin_loop();
            }
        })
    });
    g.finish();
}

fn ask_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("ask_round_trip");
    pin(0);
    let engine = engine(&[1]);
    let client = engine.client().unwrap();
    g.bench_function("percore", |b| {
        b.iter(|| black_box(client.ask::<Sink>(0, 1).unwrap()))
    });
    g.finish();
}

fn many_random_keys(c: &mut Criterion) {
    const ENTITIES: u64 = 100_000;
    let mut g = c.benchmark_group("many_random_keys");
    g.throughput(Throughput::Elements(BATCH));
    pin(0);
    let engine = engine(&[1]);
    let client = engine.client().unwrap();
    client
        .tell_batch::<Sink, _>((0..ENTITIES).map(|k| (k, 0)))
        .unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    g.bench_function("percore", |b| {
        b.iter(|| {
            client
                .tell_batch::<Sink, _>((0..BATCH).map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % ENTITIES, 1)
                }))
                .unwrap();
            black_box(client.ask::<Sink>(0, 0).unwrap())
        })
    });
    g.finish();
}

fn activation(c: &mut Criterion) {
    let mut g = c.benchmark_group("activation");
    g.throughput(Throughput::Elements(BATCH));
    pin(0);
    let engine = engine(&[1]);
    let client = engine.client().unwrap();
    let mut next = 1u64 << 32;
    g.bench_function("percore", |b| {
        b.iter(|| {
            let first = next;
            next += BATCH;
            client
                .tell_batch::<Sink, _>((first..next).map(|k| (k, 1)))
                .unwrap();
            black_box(client.ask::<Sink>(0, 0).unwrap())
        })
    });
    g.finish();
}

fn inner_parts(c: &mut Criterion) {
    let mut g = c.benchmark_group("inner");
    g.throughput(Throughput::Elements(64));
    g.bench_function("ring_push_pop_batch_64", |b| {
        let (mut tx, mut rx) = rtrb::RingBuffer::<Envelope>::new(1024);
        b.iter(|| {
            let chunk = tx.write_chunk_uninit(64).unwrap();
            // SAFETY: read back below as the `u64` it is; never delivered.
            chunk.fill_from_iter(
                (0..64u64).map(|k| unsafe { Envelope::new_unchecked(0, k, Op::Tell, k) }),
            );
            let chunk = rx.read_chunk(64).unwrap();
            for env in chunk {
                // SAFETY: made above with `u64`.
                black_box(unsafe { env.take::<u64>() });
            }
        })
    });
    g.bench_function("envelope_encode_decode_64", |b| {
        b.iter(|| {
            for k in 0..64u64 {
                // SAFETY: read back just below as the `(u64, u64)` it is.
                let env = unsafe { Envelope::new_unchecked(0, k, Op::Tell, black_box((k, k))) };
                // SAFETY: made just above with `(u64, u64)`.
                black_box(unsafe { env.take::<(u64, u64)>() });
            }
        })
    });
    let mut table = Table::new();
    for k in 0..100_000u64 {
        table.insert(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), k);
    }
    let keys: Vec<u64> = (0..64u64)
        .map(|i| (i * 1543 % 100_000).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    g.bench_function("table_lookup_100k_64", |b| {
        b.iter(|| {
            for &k in &keys {
                black_box(table.find(k));
            }
        })
    });
    // One shard alone, no rings: 64 tells to live entities, round the 1 000
    // of them (the dispatch and table hit path the index's hash and group
    // scan were measured with).
    let mut kinds = Kinds::new();
    let sink = kinds.register::<Sink>().unwrap();
    let spec = ShardSpec {
        shard: 0,
        shard_count: 1,
        client_slots: 1,
        overflow_cap: 1024,
    };
    let _ = sink;
    let kinds = Arc::new(kinds);
    let mut shard = Shard::new(spec, kinds.clone());
    let tell = |key: u64| match kinds.message::<Sink>(key, Op::Tell, 1u64) {
        Ok(env) => env.with_route(CLIENT_BIT, 0),
        Err(_) => unreachable!("Sink is registered"),
    };
    for key in 0..1_000 {
        // SAFETY: built by `Kinds::message` on this shard's registry.
        unsafe { shard.deliver(tell(key)) };
    }
    let mut key = 0;
    g.bench_function("shard_tell_live_1000_64", |b| {
        b.iter(|| {
            for _ in 0..64 {
                // SAFETY: as above.
                unsafe { shard.deliver(tell(key)) };
                key = (key + 1) % 1_000;
            }
        })
    });
    g.bench_function("table_insert_remove_64", |b| {
        b.iter_batched_ref(
            Table::<u64>::new,
            |t| {
                for k in 0..64u64 {
                    t.insert(k, k);
                }
                for _ in 0..64 {
                    black_box(t.remove(0));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    tell_cross_core,
    tell_same_shard,
    ask_round_trip,
    many_random_keys,
    activation,
    inner_parts
);

criterion_main!(benches);
