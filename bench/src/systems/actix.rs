//! actix actors.
//!
//! API used, as in actix's README and docs: `impl Actor` with `Context<Self>`,
//! `#[derive(Message)]` + `#[rtype(..)]` messages with one `Handler` each,
//! `Actor::start` inside an arbiter's event loop (actors of a core are started from
//! a future running on that core's `Arbiter`), `Addr::do_send` to send (actix's
//! fire-and-forget, which queues even past the mailbox capacity) and
//! `Addr::send(msg).await` for request/reply. Each core gets an `Arbiter` (actix's
//! event loop thread) pinned to it; the sending side is a current-thread tokio runtime
//! (the one actix-rt is built on) pinned to the other core. `idle` runs a default
//! `System` with one actor.
//!
//! A `tell` run ends with one `send(..).await` to the receiver: actix handles a
//! mailbox in order, so its reply means every earlier message was handled.

use std::future::Future;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use ::actix::{Actor, Addr, Arbiter, Context, Handler, Message, System};

use super::System as Entry;
use crate::harness::{pin, runtime_thread, Countdown, CORES, RECEIVER_CORE, SENDER_CORE};
use crate::measure::{self, rate, Figure, IdleWatch, Latencies, IDLE_SETTLE};
use crate::workload::{
    fanout_player_sum, note_scaled_down, shard_of, sum_below, ManyPlan, Scale, Workload,
    FANOUT_PLAYERS, MANY_KEYS,
};

/// The actix entry of the system table.
pub const SYSTEM: Entry = Entry {
    name: "actix",
    workloads: &[
        (Workload::Tell, tell),
        (Workload::Ask, ask),
        (Workload::Many, many),
        (Workload::Activate, activate),
        (Workload::Fanout, fanout),
        (Workload::Idle, idle),
    ],
};

/// The receiving actor of `tell`, `ask`, `activate` and `idle`.
#[derive(Default)]
struct Counter {
    state: u64,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

/// Adds a value to the receiver's state.
#[derive(Message)]
#[rtype(result = "()")]
struct Add(u64);

/// Adds a value and replies with the new state.
#[derive(Message)]
#[rtype(result = "u64")]
struct AddGet(u64);

impl Handler<Add> for Counter {
    type Result = ();

    fn handle(&mut self, Add(value): Add, _: &mut Context<Self>) {
        self.state += value;
    }
}

impl Handler<AddGet> for Counter {
    type Result = u64;

    fn handle(&mut self, AddGet(value): AddGet, _: &mut Context<Self>) -> u64 {
        self.state += value;
        self.state
    }
}

/// A `many` entity: counts down the messages it expects, then arrives.
struct Keyed {
    state: u64,
    left: u32,
    done: Arc<Countdown>,
}

impl Actor for Keyed {
    type Context = Context<Self>;
}

impl Handler<Add> for Keyed {
    type Result = ();

    fn handle(&mut self, Add(value): Add, _: &mut Context<Self>) {
        self.state += value;
        self.left -= 1;
        if self.left == 0 {
            self.done.arrive();
        }
    }
}

/// One round of a room's broadcast, as delivered to a player.
#[derive(Message)]
#[rtype(result = "()")]
struct Deliver(u64);

/// A `fanout` player: arrives when it handled the last round.
struct Player {
    state: u64,
    last_round: u64,
    done: Arc<Countdown>,
}

impl Actor for Player {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Player {
    type Result = ();

    fn handle(&mut self, Deliver(round): Deliver, _: &mut Context<Self>) {
        self.state += round;
        if round == self.last_round {
            assert_eq!(self.state, fanout_player_sum(self.last_round + 1));
            self.done.arrive();
        }
    }
}

/// Asks the room to broadcast one round.
#[derive(Message)]
#[rtype(result = "()")]
struct Broadcast(u64);

/// The `fanout` room: sends to every player each round it is asked to broadcast.
struct Room {
    players: Vec<Addr<Player>>,
}

impl Actor for Room {
    type Context = Context<Self>;
}

impl Handler<Broadcast> for Room {
    type Result = ();

    fn handle(&mut self, Broadcast(round): Broadcast, _: &mut Context<Self>) {
        for player in &self.players {
            player.do_send(Deliver(round));
        }
    }
}

/// An actix `Arbiter` whose thread is pinned to `core`. Needs a `System` in the
/// calling thread.
fn pinned_arbiter(core: usize) -> Arbiter {
    let arbiter = Arbiter::new();
    let (pinned_tx, pinned) = mpsc::channel();
    arbiter.spawn_fn(move || {
        pin(core);
        let _ = pinned_tx.send(());
    });
    pinned.recv().expect("arbiter thread runs");
    arbiter
}

/// Runs `fut` on `arbiter`'s event loop (where `Actor::start` places actors) and
/// waits for its output.
fn run_on<T, F>(arbiter: &Arbiter, fut: F) -> T
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    arbiter.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().expect("arbiter task completes")
}

fn tell(scale: Scale) -> Vec<Figure> {
    let n = scale.tell_msgs();
    let _system = System::new();
    let arbiter = pinned_arbiter(RECEIVER_CORE);
    let actor = run_on(&arbiter, async { Counter::default().start() });
    let sender = runtime_thread(SENDER_CORE, "actix-sender", move || async move {
        let start = Instant::now();
        for i in 0..n {
            actor.do_send(Add(i));
        }
        let state = actor.send(AddGet(0)).await.expect("actor replies");
        let end = Instant::now();
        assert_eq!(state, sum_below(n));
        end - start
    });
    vec![rate("msgs_per_s", n, sender.join().expect("sender"))]
}

fn ask(scale: Scale) -> Vec<Figure> {
    let warmup = scale.ask_warmup();
    let total = warmup + scale.ask_samples();
    let _system = System::new();
    let arbiter = pinned_arbiter(RECEIVER_CORE);
    let actor = run_on(&arbiter, async { Counter::default().start() });
    let asker = runtime_thread(SENDER_CORE, "actix-asker", move || async move {
        let mut latencies = Latencies::new();
        for i in 0..total {
            let start = Instant::now();
            let state = actor.send(AddGet(1)).await.expect("actor replies");
            let latency = start.elapsed();
            debug_assert_eq!(state, i + 1);
            if i >= warmup {
                latencies.record(latency);
            }
        }
        latencies
    });
    asker.join().expect("asker").figures()
}

fn many(scale: Scale) -> Vec<Figure> {
    let plan = ManyPlan::new(scale);
    let total = plan.total();
    let _system = System::new();
    let arbiters: Vec<_> = CORES.iter().map(|&core| pinned_arbiter(core)).collect();
    let live = plan.per_key.iter().filter(|&&count| count > 0).count();
    let done = Arc::new(Countdown::new(live));
    let mut actors: Vec<Option<Addr<Keyed>>> = vec![None; MANY_KEYS as usize];
    for (shard, arbiter) in arbiters.iter().enumerate() {
        let mine: Vec<(usize, u32)> = plan
            .per_key
            .iter()
            .enumerate()
            .filter(|&(key, _)| shard_of(key as u64, CORES.len()) == shard)
            .map(|(key, &count)| (key, count))
            .collect();
        let done = Arc::clone(&done);
        let started = run_on(arbiter, async move {
            mine.into_iter()
                .map(|(key, left)| {
                    let keyed = Keyed {
                        state: 0,
                        left,
                        done: Arc::clone(&done),
                    };
                    (key, keyed.start())
                })
                .collect::<Vec<_>>()
        });
        for (key, actor) in started {
            actors[key] = Some(actor);
        }
    }
    let actors: Arc<Vec<Addr<Keyed>>> =
        Arc::new(actors.into_iter().map(|a| a.expect("started")).collect());
    let senders: Vec<_> = plan
        .keys
        .into_iter()
        .enumerate()
        .map(|(sender, keys)| {
            let actors = Arc::clone(&actors);
            runtime_thread(CORES[sender], "actix-sender", move || async move {
                let start = Instant::now();
                for key in keys {
                    actors[key as usize].do_send(Add(1));
                }
                start
            })
        })
        .collect();
    let start = senders
        .into_iter()
        .map(|t| t.join().expect("sender"))
        .min()
        .expect("two senders");
    let end = done.wait();
    // Shutting 100 000 actors down is not measured; the child exits right after.
    std::mem::forget(actors);
    vec![rate("msgs_per_s", total, end - start)]
}

fn activate(scale: Scale) -> Vec<Figure> {
    let n = scale.activate_entities_slow();
    if n < scale.activate_entities() {
        note_scaled_down("actix", n);
    }
    let _system = System::new();
    let arbiter = pinned_arbiter(RECEIVER_CORE);
    let rss_before = measure::rss_bytes();
    let (elapsed, actors) = run_on(&arbiter, async move {
        let start = Instant::now();
        let mut actors = Vec::with_capacity(n as usize);
        for _ in 0..n {
            actors.push(Counter::default().start());
        }
        // `start` queues each actor's first poll (where it starts) on the arbiter's
        // FIFO task queue, so once the last one has replied, every one has started.
        actors
            .last()
            .expect("at least one actor")
            .send(AddGet(0))
            .await
            .expect("actor replies");
        (start.elapsed(), actors)
    });
    let rss_after = measure::rss_bytes();
    // Tearing a million actors down is not measured; the child exits right after.
    std::mem::forget(actors);
    measure::activation(n, elapsed, rss_before, rss_after)
}

fn fanout(scale: Scale) -> Vec<Figure> {
    let rounds = scale.fanout_rounds();
    let _system = System::new();
    let room_arbiter = pinned_arbiter(SENDER_CORE);
    let players_arbiter = pinned_arbiter(RECEIVER_CORE);
    let done = Arc::new(Countdown::new(FANOUT_PLAYERS as usize));
    let players = run_on(&players_arbiter, {
        let done = Arc::clone(&done);
        async move {
            (0..FANOUT_PLAYERS)
                .map(|_| {
                    Player {
                        state: 0,
                        last_round: rounds - 1,
                        done: Arc::clone(&done),
                    }
                    .start()
                })
                .collect::<Vec<_>>()
        }
    });
    let room = run_on(&room_arbiter, async move { Room { players }.start() });
    let start = Instant::now();
    for round in 0..rounds {
        room.do_send(Broadcast(round));
    }
    let end = done.wait();
    vec![rate(
        "deliveries_per_s",
        rounds * FANOUT_PLAYERS,
        end - start,
    )]
}

fn idle(scale: Scale) -> Vec<Figure> {
    let system = System::new();
    system.block_on(async move {
        let _actor = Counter::default().start();
        ::actix::clock::sleep(IDLE_SETTLE).await;
        let watch = IdleWatch::start();
        ::actix::clock::sleep(scale.idle()).await;
        watch.finish()
    })
}
