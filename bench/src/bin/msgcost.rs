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
//!   (in batches of 64, as the runtime publishes).

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Arc;

use percore::{Ctx, Entity};
use percore_shards::driver::{Envelope, Op, Shard, ShardSpec, CLIENT_BIT};
use percore_shards::Kinds;

/// Adds what it is sent; with a non-zero `relay`, tells that many
/// neighbours' worth of messages to key + 1 instead.
struct Sink(u64);

#[derive(Clone, Copy)]
enum Msg {
    Add(u64),
    Relay(u64),
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

fn shard() -> (Shard, Arc<Kinds>) {
    let mut kinds = Kinds::new();
    kinds.register::<Sink>().expect("one kind");
    let kinds = Arc::new(kinds);
    let spec = ShardSpec {
        shard: 0,
        shard_count: 1,
        client_slots: 1,
        overflow_cap: 1 << 20,
    };
    (Shard::new(spec, kinds.clone()), kinds)
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(path), Some(n)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: msgcost deliver|activate|local|ask N");
        return ExitCode::from(2);
    };
    let (mut shard, kinds) = shard();
    for key in 0..1_000 {
        deliver(&mut shard, message(&kinds, key, Op::Tell, Msg::Add(0)));
    }
    match path.as_str() {
        "deliver" => {
            for i in 0..n {
                deliver(
                    &mut shard,
                    message(&kinds, i % 1_000, Op::Tell, Msg::Add(1)),
                );
            }
        }
        "activate" => {
            for i in 0..n {
                deliver(
                    &mut shard,
                    message(&kinds, 1_000 + i, Op::Tell, Msg::Add(1)),
                );
            }
        }
        "local" => {
            let mut left = n;
            while left > 0 {
                let burst = left.min(1_000);
                deliver(&mut shard, message(&kinds, 0, Op::Tell, Msg::Relay(burst)));
                shard.run_local(usize::MAX);
                left -= burst;
            }
        }
        "ask" => {
            for i in 0..n {
                deliver(
                    &mut shard,
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
