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

criterion_group!(benches, migration);
criterion_main!(benches);
