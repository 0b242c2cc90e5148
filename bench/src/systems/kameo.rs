//! kameo actors on tokio.
//!
//! API used, as in kameo's README and docs: `#[derive(Actor)]`, one
//! `impl Message<M> for A` per message, `Spawn::spawn_with_mailbox` with
//! `mailbox::bounded(QUEUE_CAPACITY)` for the messaging workloads (so no actor has a
//! smaller mailbox than any other system's queue) and plain `Spawn::spawn` (default
//! mailbox) for `activate` and `idle`; `ActorRef::tell(msg).await` to send,
//! `ActorRef::ask(msg).await` for request/reply, `ActorRef::wait_for_startup` to know
//! an actor is live. Actors run on current-thread runtimes pinned per core (see
//! [`crate::harness`]); `idle` uses the default multi-thread runtime. Default crate
//! features, as `cargo add kameo` gives.
//!
//! A `tell` run ends with one `ask` to the receiver: kameo handles a mailbox in order,
//! so its reply means every earlier message was handled.

use std::sync::Arc;
use std::time::Instant;

use ::kameo::actor::{ActorRef, Spawn};
use ::kameo::mailbox;
use ::kameo::message::{Context, Message};
use ::kameo::Actor;

use super::System;
use crate::harness::{
    runtime_thread, CoreRuntime, Countdown, CORES, QUEUE_CAPACITY, RECEIVER_CORE, SENDER_CORE,
};
use crate::measure::{self, rate, Figure, Latencies};
use crate::workload::{
    fanout_player_sum, note_scaled_down, shard_of, sum_below, ManyPlan, Scale, Workload,
    FANOUT_PLAYERS, MANY_KEYS,
};

/// The kameo entry of the system table.
pub const SYSTEM: System = System {
    name: "kameo",
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
#[derive(Actor, Default)]
struct Counter {
    state: u64,
}

/// Adds a value to the receiver's state.
struct Add(u64);

/// Adds a value and replies with the new state.
struct AddGet(u64);

impl Message<Add> for Counter {
    type Reply = ();

    async fn handle(&mut self, Add(value): Add, _: &mut Context<Self, Self::Reply>) {
        self.state += value;
    }
}

impl Message<AddGet> for Counter {
    type Reply = u64;

    async fn handle(&mut self, AddGet(value): AddGet, _: &mut Context<Self, u64>) -> u64 {
        self.state += value;
        self.state
    }
}

/// One of the `many` entities: counts down the messages it expects, then arrives.
#[derive(Actor)]
struct Keyed {
    state: u64,
    left: u32,
    done: Arc<Countdown>,
}

impl Message<Add> for Keyed {
    type Reply = ();

    async fn handle(&mut self, Add(value): Add, _: &mut Context<Self, Self::Reply>) {
        self.state += value;
        self.left -= 1;
        if self.left == 0 {
            self.done.arrive();
        }
    }
}

/// A `fanout` player: arrives when it handled the last round.
#[derive(Actor)]
struct Player {
    state: u64,
    last_round: u64,
    done: Arc<Countdown>,
}

/// One round of a room's broadcast, as delivered to a player.
struct Deliver(u64);

impl Message<Deliver> for Player {
    type Reply = ();

    async fn handle(&mut self, Deliver(round): Deliver, _: &mut Context<Self, Self::Reply>) {
        self.state += round;
        if round == self.last_round {
            assert_eq!(self.state, fanout_player_sum(self.last_round + 1));
            self.done.arrive();
        }
    }
}

/// The `fanout` room: tells every player each round it is asked to broadcast.
#[derive(Actor)]
struct Room {
    players: Vec<ActorRef<Player>>,
}

/// Asks the room to broadcast one round.
struct Broadcast(u64);

impl Message<Broadcast> for Room {
    type Reply = ();

    async fn handle(&mut self, Broadcast(round): Broadcast, _: &mut Context<Self, Self::Reply>) {
        for player in &self.players {
            player.tell(Deliver(round)).await.expect("player alive");
        }
    }
}

fn tell(scale: Scale) -> Vec<Figure> {
    let n = scale.tell_msgs();
    let runtime = CoreRuntime::start(RECEIVER_CORE);
    let actor = runtime.run(async {
        Counter::spawn_with_mailbox(Counter::default(), mailbox::bounded(QUEUE_CAPACITY))
    });
    let sender = runtime_thread(SENDER_CORE, "kameo-sender", move || async move {
        let start = Instant::now();
        for i in 0..n {
            actor.tell(Add(i)).await.expect("actor alive");
        }
        let state = actor.ask(AddGet(0)).await.expect("actor replies");
        let end = Instant::now();
        assert_eq!(state, sum_below(n));
        end - start
    });
    vec![rate("msgs_per_s", n, sender.join().expect("sender"))]
}

fn ask(scale: Scale) -> Vec<Figure> {
    let warmup = scale.ask_warmup();
    let total = warmup + scale.ask_samples();
    let runtime = CoreRuntime::start(RECEIVER_CORE);
    let actor = runtime.run(async {
        Counter::spawn_with_mailbox(Counter::default(), mailbox::bounded(QUEUE_CAPACITY))
    });
    let asker = runtime_thread(SENDER_CORE, "kameo-asker", move || async move {
        let mut latencies = Latencies::new();
        for i in 0..total {
            let start = Instant::now();
            let state = actor.ask(AddGet(1)).await.expect("actor replies");
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
    let runtimes: Vec<_> = CORES.iter().map(|&core| CoreRuntime::start(core)).collect();
    let live = plan.per_key.iter().filter(|&&count| count > 0).count();
    let done = Arc::new(Countdown::new(live));
    // Spawn each actor on the runtime of its core, from that runtime.
    let mut actors: Vec<Option<ActorRef<Keyed>>> = vec![None; MANY_KEYS as usize];
    for (shard, runtime) in runtimes.iter().enumerate() {
        let mine: Vec<(usize, u32)> = plan
            .per_key
            .iter()
            .enumerate()
            .filter(|&(key, _)| shard_of(key as u64, CORES.len()) == shard)
            .map(|(key, &count)| (key, count))
            .collect();
        let done = Arc::clone(&done);
        let spawned = runtime.run(async move {
            mine.into_iter()
                .map(|(key, left)| {
                    let keyed = Keyed {
                        state: 0,
                        left,
                        done: Arc::clone(&done),
                    };
                    (
                        key,
                        Keyed::spawn_with_mailbox(keyed, mailbox::bounded(QUEUE_CAPACITY)),
                    )
                })
                .collect::<Vec<_>>()
        });
        for (key, actor) in spawned {
            actors[key] = Some(actor);
        }
    }
    let actors: Arc<Vec<ActorRef<Keyed>>> =
        Arc::new(actors.into_iter().map(|a| a.expect("spawned")).collect());
    let senders: Vec<_> = plan
        .keys
        .into_iter()
        .enumerate()
        .map(|(sender, keys)| {
            let actors = Arc::clone(&actors);
            runtime_thread(CORES[sender], "kameo-sender", move || async move {
                let start = Instant::now();
                for key in keys {
                    actors[key as usize]
                        .tell(Add(1))
                        .await
                        .expect("actor alive");
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
    std::mem::forget(runtimes);
    vec![rate("msgs_per_s", total, end - start)]
}

fn activate(scale: Scale) -> Vec<Figure> {
    let n = scale.activate_entities_slow();
    if n < scale.activate_entities() {
        note_scaled_down("kameo", n);
    }
    let runtime = CoreRuntime::start(RECEIVER_CORE);
    let rss_before = measure::rss_bytes();
    let (elapsed, actors) = runtime.run(async move {
        let start = Instant::now();
        let mut actors = Vec::with_capacity(n as usize);
        for _ in 0..n {
            actors.push(Counter::spawn(Counter::default()));
        }
        for actor in &actors {
            actor.wait_for_startup().await;
        }
        (start.elapsed(), actors)
    });
    let rss_after = measure::rss_bytes();
    // Tearing a million actors down is not measured; the child exits right after.
    std::mem::forget(actors);
    std::mem::forget(runtime);
    measure::activation(n, elapsed, rss_before, rss_after)
}

fn fanout(scale: Scale) -> Vec<Figure> {
    let rounds = scale.fanout_rounds();
    let room_runtime = CoreRuntime::start(SENDER_CORE);
    let players_runtime = CoreRuntime::start(RECEIVER_CORE);
    let done = Arc::new(Countdown::new(FANOUT_PLAYERS as usize));
    let players = players_runtime.run({
        let done = Arc::clone(&done);
        async move {
            (0..FANOUT_PLAYERS)
                .map(|_| {
                    let player = Player {
                        state: 0,
                        last_round: rounds - 1,
                        done: Arc::clone(&done),
                    };
                    Player::spawn_with_mailbox(player, mailbox::bounded(QUEUE_CAPACITY))
                })
                .collect::<Vec<_>>()
        }
    });
    let room = room_runtime.run(async move {
        Room::spawn_with_mailbox(Room { players }, mailbox::bounded(QUEUE_CAPACITY))
    });
    let start = Instant::now();
    room_runtime.run(async move {
        for round in 0..rounds {
            room.tell(Broadcast(round)).await.expect("room alive");
        }
    });
    let end = done.wait();
    vec![rate(
        "deliveries_per_s",
        rounds * FANOUT_PLAYERS,
        end - start,
    )]
}

fn idle(scale: Scale) -> Vec<Figure> {
    let runtime = ::tokio::runtime::Runtime::new().expect("default tokio runtime");
    let actor = {
        let _entered = runtime.enter();
        Counter::spawn(Counter::default())
    };
    let figures = measure::watch_idle(scale.idle());
    drop(actor);
    figures
}
