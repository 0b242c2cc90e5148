//! `msgcost`: one shard's per-message paths, single-threaded, for counting
//! instructions with valgrind's callgrind (a figure the machine cannot blur).
//!
//! ```text
//! cargo build --release -p percore-bench --bin msgcost
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/msgcost PATH N
//! ```
//!
//! Runs path `PATH` `N` times on one shard (no rings, no threads): the
//! instructions per message are the difference between two runs with
//! different `N`, divided by the difference in `N` (set-up and exit cancel
//! out). Paths:
//!
//! - `deliver`: a tell to one of 1 000 live entities (take, look up, handle,
//!   drop the reply);
//! - `activate`: a tell to a new key (look up, activate, insert, handle);
//! - `local`: an entity's tell to a neighbour on its shard (send, local
//!   queue, deliver);
//! - `ask`: a client ask to a live entity, its reply taken from the outbox
//!   (in batches of 64, as the runtime publishes);
//! - `local_moved`: `local` on a shard of two from which an unrelated entity
//!   has moved away to the other (a settled move must cost nothing here);
//! - `cross`: an entity on shard 0 of two tells entities on shard 1 (1 000
//!   keys round robin); shard 0's outbox is published into an rtrb ring in
//!   chunks and shard 1 delivers from it, as the runtime does.

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Arc;

use percore::{Ctx, Entity};
use percore_shards::driver::{Envelope, MoveRequest, Op, Shard, ShardSpec, CLIENT_BIT, NO_REPLY};
use percore_shards::{kind_hash, Kinds};

/// Adds what it is sent; with a non-zero `relay`, tells that many
/// neighbours' worth of messages to key + 1 instead.
struct Sink(u64);

#[derive(Clone, Copy)]
enum Msg {
    Add(u64),
    Relay(u64),
    /// Tell entity `to` `Add(1)`.
    Send(u64),
}

impl Entity for Sink {
    const KIND: &'static str = "sink";
    type Msg = Msg;
    type Reply = u64;
    fn activate(_: u64) -> Self {
        Sink(0)
    }
    fn handle(&mut self, msg: Msg, ctx: &mut Ctx<'_, Self>) -> u64 {
        match msg {
            Msg::Add(n) => self.0 += n,
            Msg::Send(to) => {
                let _ = ctx.tell::<Sink>(to, Msg::Add(1));
            }
            Msg::Relay(n) => {
                let to = ctx.key() + 1;
                for _ in 0..n {
                    let _ = ctx.tell::<Sink>(to, Msg::Add(1));
                }
            }
        }
        self.0
    }
}

fn shards(count: usize) -> (Vec<Shard>, Arc<Kinds>) {
    let mut kinds = Kinds::new();
    kinds.register::<Sink>().expect("one kind");
    let kinds = Arc::new(kinds);
    let shards = (0..count)
        .map(|shard| {
            let spec = ShardSpec {
                shard,
                shard_count: count,
                client_slots: 1,
                overflow_cap: 1 << 20,
            };
            Shard::new(spec, kinds.clone())
        })
        .collect();
    (shards, kinds)
}

/// Moves every envelope between the shards until none is left to move.
fn settle(shards: &mut [Shard]) {
    loop {
        let mut moved = 0;
        for from in 0..shards.len() {
            shards[from].run_local(usize::MAX);
            if shards[from].has_moves() {
                shards[from].run_moves();
            }
            for to in 0..shards.len() {
                let out = shards[from].outbox_to_shard(to);
                let n = out.len();
                let envs: Vec<Envelope> = out.drain(n).collect();
                moved += envs.len();
                for env in envs {
                    deliver(&mut shards[to], env);
                    let _ = shards[to].take_fences();
                }
            }
            let out = shards[from].outbox_to_client(0);
            let n = out.len();
            out.drain(n).for_each(drop);
        }
        if moved == 0 {
            return;
        }
    }
}

/// Keys of `Sink` homed on shard 0 of two: a pair of neighbours (k, k + 1)
/// and another key.
fn keys_on_first_of_two() -> (u64, u64) {
    let home = |key| percore_shards::driver::home_shard(kind_hash(Sink::KIND), key, 2);
    let pair = (0..)
        .find(|&k| home(k) == 0 && home(k + 1) == 0)
        .expect("a pair");
    let other = (pair + 2..).find(|&k| home(k) == 0).expect("a key");
    (pair, other)
}

fn message(kinds: &Kinds, key: u64, op: Op, msg: Msg) -> Envelope {
    match kinds.message::<Sink>(key, op, msg) {
        Ok(env) => env.with_route(CLIENT_BIT, key),
        Err(_) => unreachable!("Sink is registered"),
    }
}

fn deliver(shard: &mut Shard, env: Envelope) {
    // SAFETY: built by `Kinds::message` on this shard's registry.
    unsafe { shard.deliver(env) }
}

/// `n` tells from entity `from` to `from + 1`, in bursts of 1 000.
fn local(shard: &mut Shard, kinds: &Kinds, from: u64, n: u64) {
    let mut left = n;
    while left > 0 {
        let burst = left.min(1_000);
        deliver(shard, message(kinds, from, Op::Tell, Msg::Relay(burst)));
        shard.run_local(usize::MAX);
        left -= burst;
    }
}

/// `n` tells from an entity on shard 0 to entities on shard 1, through a
/// ring, in bursts of 256 (one pass: handle, publish, deliver).
fn cross(shards: &mut [Shard], kinds: &Kinds, n: u64) {
    let home = |key| percore_shards::driver::home_shard(kind_hash(Sink::KIND), key, 2);
    let from = (0..).find(|&k| home(k) == 0).expect("a key on shard 0");
    let targets: Vec<u64> = (0..).filter(|&k| home(k) == 1).take(1_000).collect();
    let (mut tx, mut rx) = rtrb::RingBuffer::<Envelope>::new(1024);
    let mut next = 0;
    let mut left = n;
    while left > 0 {
        let burst = left.min(256);
        for _ in 0..burst {
            let to = targets[next % targets.len()];
            next += 1;
            deliver(
                &mut shards[0],
                message(kinds, from, Op::Tell, Msg::Send(to)),
            );
        }
        shards[0].run_local(usize::MAX);
        let out = shards[0].outbox_to_shard(1);
        let len = out.len();
        let chunk = tx.write_chunk_uninit(len).expect("room");
        chunk.fill_from_iter(out.drain(len));
        let chunk = rx.read_chunk(len).expect("published");
        for env in chunk {
            deliver(&mut shards[1], env);
        }
        left -= burst;
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(path), Some(n)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: msgcost deliver|activate|local|local_moved|cross|ask N");
        return ExitCode::from(2);
    };
    if path == "cross" {
        let (mut shards, kinds) = shards(2);
        cross(&mut shards, &kinds, n);
        black_box(shards[1].counters().handled);
        return ExitCode::SUCCESS;
    }
    if path == "local_moved" {
        let (mut shards, kinds) = shards(2);
        let (pair, other) = keys_on_first_of_two();
        deliver(
            &mut shards[0],
            message(&kinds, other, Op::Tell, Msg::Add(0)),
        );
        let request = kinds
            .move_request::<Sink>(other, MoveRequest { target: 1 })
            .expect("registered")
            .with_route(NO_REPLY, 0);
        deliver(&mut shards[0], request);
        settle(&mut shards);
        assert!(shards[1].owns(0, other), "the unrelated entity moved");
        local(&mut shards[0], &kinds, pair, n);
        black_box(shards[0].counters().handled);
        return ExitCode::SUCCESS;
    }
    let (mut shards, kinds) = shards(1);
    let shard = &mut shards[0];
    for key in 0..1_000 {
        deliver(shard, message(&kinds, key, Op::Tell, Msg::Add(0)));
    }
    match path.as_str() {
        "deliver" => {
            for i in 0..n {
                deliver(shard, message(&kinds, i % 1_000, Op::Tell, Msg::Add(1)));
            }
        }
        "activate" => {
            for i in 0..n {
                deliver(shard, message(&kinds, 1_000 + i, Op::Tell, Msg::Add(1)));
            }
        }
        "local" => local(shard, &kinds, 0, n),
        "ask" => {
            for i in 0..n {
                deliver(
                    shard,
                    message(&kinds, i % 1_000, Op::AskClient, Msg::Add(1)),
                );
                // Replies leave in batches, as the runtime publishes them.
                if i % 64 == 63 || i + 1 == n {
                    let out = shard.outbox_to_client(0);
                    let len = out.len();
                    for reply in out.drain(len) {
                        // SAFETY: replies of `Sink` are `u64`.
                        black_box(unsafe { reply.take::<u64>() });
                    }
                }
            }
        }
        other => {
            eprintln!("msgcost: unknown path {other:?}");
            return ExitCode::from(2);
        }
    }
    black_box(shard.counters().handled);
    ExitCode::SUCCESS
}
