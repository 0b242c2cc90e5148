//! Criterion bench of live migration: the pause of an entity with small
//! state moving back and forth between two shards — the time from leaving
//! its old shard to being settled on the new one, during which it handles
//! nothing — while it keeps a stream of messages to itself going.
//!
//! Criterion reports the mean pause per move (each iteration's time is the
//! pause the engine measured, not the client's round trip); the run also
//! prints the engine's own pause histogram (p50/p99/max over every move of
//! the bench) to stderr.
//!
//! A second group, `after_unrelated_move`, measures what a settled move
//! costs the shard it touched: an entity telling a neighbour on its own
//! shard, before any move and again once an unrelated entity has moved away
//! from that shard and back home (both figures should match: a settled move
//! must leave the delivery fast path intact).
//!
//! Run with `cargo bench -p percore-bench --bench migration`. Shards poll
//! (IdlePolicy::Poll) so the pause shows the protocol, not wakeup latency.

// criterion_group! generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use percore::{Client, Ctx, Engine, Entity, IdlePolicy};

/// Hops between the two shards on its own: each time it finds itself on a
/// new shard it asks to move to the other one ([`Ctx::move_to`]), and it
/// keeps a message to itself in flight so it always has something to do.
/// No client thread competes with the two polling shards for the two cores.
struct Hopper {
    last: usize,
}

/// Moves still to make in this sample.
static REMAINING: AtomicU64 = AtomicU64::new(0);

impl Entity for Hopper {
    const KIND: &'static str = "hopper";
    type Msg = ();
    type Reply = ();
    fn activate(_: u64) -> Self {
        Hopper { last: usize::MAX }
    }
    fn handle(&mut self, _: (), ctx: &mut Ctx<'_, Self>) {
        if REMAINING.load(Ordering::Relaxed) == 0 {
            return;
        }
        if ctx.shard() != self.last {
            self.last = ctx.shard();
            REMAINING.fetch_sub(1, Ordering::Relaxed);
            ctx.move_to(1 - ctx.shard());
        }
        let key = ctx.key();
        let _ = ctx.tell::<Hopper>(key, ());
    }
}

/// Lets the hopper make `iters` moves and returns the sum of the pauses the
/// engine measured for them.
fn hops(engine: &Engine, client: &Client, key: u64, iters: u64) -> Duration {
    let before = engine.metrics().total();
    REMAINING.store(iters, Ordering::Relaxed);
    client.tell::<Hopper>(key, ()).expect("tell");
    // Pauses are published with the metrics: wait until every move is in.
    loop {
        std::thread::sleep(Duration::from_micros(200));
        let after = engine.metrics().total();
        if after.migrations_in >= before.migrations_in + iters {
            return Duration::from_nanos(after.pause_ns_total - before.pause_ns_total);
        }
    }
}

/// Tells its neighbour (key + 1, same shard) `n` times, in bursts of
/// [`BURST`] so the local queue stays bounded, then records how long it took.
struct Pinger;

/// Local tells per handler call of [`Pinger`].
const BURST: u64 = 1_000;

/// Neighbour messages handled so far in this sample.
static PINGS: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy)]
enum PingMsg {
    /// Send this many more pings to the neighbour.
    Send(u64),
    /// A ping (to the neighbour).
    Ping,
}

impl Entity for Pinger {
    const KIND: &'static str = "pinger";
    type Msg = PingMsg;
    type Reply = ();
    fn activate(_: u64) -> Self {
        Pinger
    }
    fn handle(&mut self, msg: PingMsg, ctx: &mut Ctx<'_, Self>) {
        match msg {
            PingMsg::Send(left) => {
                let burst = left.min(BURST);
                let neighbour = ctx.key() + 1;
                for _ in 0..burst {
                    ctx.tell::<Pinger>(neighbour, PingMsg::Ping)
                        .expect("local queue");
                }
                if left > burst {
                    let me = ctx.key();
                    ctx.tell::<Pinger>(me, PingMsg::Send(left - burst))
                        .expect("local queue");
                }
            }
            PingMsg::Ping => {
                PINGS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Pings per criterion iteration: enough that the client's tell and the
/// wait for the last ping are noise next to the pings themselves.
const PINGS_PER_ITER: u64 = 10_000;

/// Has the pinger at `key` send `iters` pings and waits until all are handled.
fn pings(client: &Client, key: u64, iters: u64) -> Duration {
    let iters = iters * PINGS_PER_ITER;
    PINGS.store(0, Ordering::Relaxed);
    let start = std::time::Instant::now();
    client
        .tell::<Pinger>(key, PingMsg::Send(iters))
        .expect("tell");
    while PINGS.load(Ordering::Relaxed) < iters {
        std::hint::spin_loop();
    }
    start.elapsed()
}

fn unrelated_move(c: &mut Criterion) {
    let engine = Engine::builder()
        .shards(2)
        .oversubscribe(true)
        .idle(IdlePolicy::Poll)
        .register::<Pinger>()
        .build()
        .expect("engine");
    let client = engine.client().expect("client");
    // A pinger whose neighbour shares its home, and an unrelated entity
    // homed on the same shard.
    let shard_of = |key| engine.shard_of::<Pinger>(key).expect("registered");
    let key = (0..)
        .find(|&k| shard_of(k) == 0 && shard_of(k + 1) == 0)
        .expect("a pair");
    let unrelated = (key + 2..).find(|&k| shard_of(k) == 0).expect("a key");
    let mut group = c.benchmark_group("after_unrelated_move");
    group.throughput(criterion::Throughput::Elements(PINGS_PER_ITER));
    group.bench_function("local_tell_before_any_move", |b| {
        b.iter_custom(|iters| pings(&client, key, iters))
    });
    client.migrate::<Pinger>(unrelated, 1).expect("move away");
    client.migrate::<Pinger>(unrelated, 0).expect("move home");
    client
        .migrate::<Pinger>(unrelated, 1)
        .expect("move away again");
    group.bench_function("local_tell_after_unrelated_move", |b| {
        b.iter_custom(|iters| pings(&client, key, iters))
    });
    group.finish();
    drop(client);
    engine.shutdown().expect("shutdown");
}

fn migration(c: &mut Criterion) {
    let engine = Engine::builder()
        .shards(2)
        .oversubscribe(true)
        .idle(IdlePolicy::Poll)
        .register::<Hopper>()
        .build()
        .expect("engine");
    let client = engine.client().expect("client");
    let key = 7;
    let mut group = c.benchmark_group("migration_pause");
    group.bench_function("small_state", |b| {
        b.iter_custom(|iters| hops(&engine, &client, key, iters))
    });
    group.finish();
    let p = engine.migration_pauses();
    eprintln!(
        "migration pauses over the whole bench: {} moves, p50 {} ns, p99 {} ns, max {} ns",
        p.count, p.p50_ns, p.p99_ns, p.max_ns
    );
    drop(client);
    engine.shutdown().expect("shutdown");
}

criterion_group!(benches, migration, unrelated_move);
criterion_main!(benches);
