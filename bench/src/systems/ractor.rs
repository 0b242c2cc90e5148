//! ractor actors on tokio.
//!
//! API used, as in ractor's README and docs: `impl Actor` with a message type, a
//! state built in `pre_start`, and `handle`; `Actor::spawn(None, actor, args).await`
//! (which returns once `pre_start` ran); `ActorRef::cast` to send (ractor mailboxes are
//! unbounded, so sending never waits); the `call!` macro for request/reply with an
//! `RpcReplyPort`. Actors run on current-thread runtimes pinned per core (see
//! [`crate::harness`]); `idle` uses the default multi-thread runtime. Default crate
//! features, as `cargo add ractor` gives.
//!
//! A `tell` run ends with one `call!` to the receiver: ractor handles a mailbox in
//! order, so its reply means every earlier message was handled.

use std::sync::Arc;
use std::time::Instant;

use ::ractor::{call, Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::System;
use crate::harness::{runtime_thread, CoreRuntime, Countdown, CORES, RECEIVER_CORE, SENDER_CORE};
use crate::measure::{self, rate, Figure, Latencies};
use crate::workload::{
    fanout_player_sum, note_scaled_down, shard_of, sum_below, ManyPlan, Scale, Workload,
    FANOUT_PLAYERS, MANY_KEYS,
};

/// The ractor entry of the system table.
pub const SYSTEM: System = System {
    name: "ractor",
    workloads: &[
        (Workload::Tell, tell),
        (Workload::Ask, ask),
        (Workload::Many, many),
        (Workload::Activate, activate),
        (Workload::Fanout, fanout),
        (Workload::Idle, idle),
    ],
};

/// The receiving actor of `tell`, `ask`, `activate` and `idle`; its state is a `u64`.
struct Counter;

/// Messages of [`Counter`].
enum CounterMsg {
    /// Adds a value to the state.
    Add(u64),
    /// Adds a value and replies with the new state.
    AddGet(u64, RpcReplyPort<u64>),
}

impl Actor for Counter {
    type Msg = CounterMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<CounterMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<CounterMsg>,
        message: CounterMsg,
        state: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CounterMsg::Add(value) => *state += value,
            CounterMsg::AddGet(value, reply) => {
                *state += value;
                let _ = reply.send(*state);
            }
        }
        Ok(())
    }
}

/// Adds a value to a `many` entity.
struct Add(u64);

/// A `many` entity: counts down the messages it expects, then arrives.
struct Keyed;

/// State of a [`Keyed`] actor.
struct KeyedState {
    state: u64,
    left: u32,
    done: Arc<Countdown>,
}

impl Actor for Keyed {
    type Msg = Add;
    type State = KeyedState;
    type Arguments = (u32, Arc<Countdown>);

    async fn pre_start(
        &self,
        _: ActorRef<Add>,
        (left, done): (u32, Arc<Countdown>),
    ) -> Result<KeyedState, ActorProcessingErr> {
        Ok(KeyedState {
            state: 0,
            left,
            done,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<Add>,
        Add(value): Add,
        keyed: &mut KeyedState,
    ) -> Result<(), ActorProcessingErr> {
        keyed.state += value;
        keyed.left -= 1;
        if keyed.left == 0 {
            keyed.done.arrive();
        }
        Ok(())
    }
}

/// One round of a room's broadcast, as delivered to a player.
struct Deliver(u64);

/// A `fanout` player: arrives when it handled the last round.
struct Player;

/// State of a [`Player`].
struct PlayerState {
    state: u64,
    last_round: u64,
    done: Arc<Countdown>,
}

impl Actor for Player {
    type Msg = Deliver;
    type State = PlayerState;
    type Arguments = (u64, Arc<Countdown>);

    async fn pre_start(
        &self,
        _: ActorRef<Deliver>,
        (last_round, done): (u64, Arc<Countdown>),
    ) -> Result<PlayerState, ActorProcessingErr> {
        Ok(PlayerState {
            state: 0,
            last_round,
            done,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<Deliver>,
        Deliver(round): Deliver,
        player: &mut PlayerState,
    ) -> Result<(), ActorProcessingErr> {
        player.state += round;
        if round == player.last_round {
            assert_eq!(player.state, fanout_player_sum(player.last_round + 1));
            player.done.arrive();
        }
        Ok(())
    }
}

/// Asks the room to broadcast one round.
struct Broadcast(u64);

/// The `fanout` room: casts to every player each round it is asked to broadcast.
struct Room;

impl Actor for Room {
    type Msg = Broadcast;
    type State = Vec<ActorRef<Deliver>>;
    type Arguments = Vec<ActorRef<Deliver>>;

    async fn pre_start(
        &self,
        _: ActorRef<Broadcast>,
        players: Vec<ActorRef<Deliver>>,
    ) -> Result<Vec<ActorRef<Deliver>>, ActorProcessingErr> {
        Ok(players)
    }

    async fn handle(
        &self,
        _: ActorRef<Broadcast>,
        Broadcast(round): Broadcast,
        players: &mut Vec<ActorRef<Deliver>>,
    ) -> Result<(), ActorProcessingErr> {
        for player in players.iter() {
            player.cast(Deliver(round))?;
        }
        Ok(())
    }
}

/// Spawns a [`Counter`] on `runtime` and returns its reference.
fn spawn_counter(runtime: &CoreRuntime) -> ActorRef<CounterMsg> {
    runtime.run(async {
        let (actor, _) = Actor::spawn(None, Counter, ()).await.expect("spawn");
        actor
    })
}

fn tell(scale: Scale) -> Vec<Figure> {
    let n = scale.tell_msgs();
    let runtime = CoreRuntime::start(RECEIVER_CORE);
    let actor = spawn_counter(&runtime);
    let sender = runtime_thread(SENDER_CORE, "ractor-sender", move || async move {
        let start = Instant::now();
        for i in 0..n {
            actor.cast(CounterMsg::Add(i)).expect("actor alive");
        }
        let state = call!(actor, CounterMsg::AddGet, 0).expect("actor replies");
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
    let actor = spawn_counter(&runtime);
    let asker = runtime_thread(SENDER_CORE, "ractor-asker", move || async move {
        let mut latencies = Latencies::new();
        for i in 0..total {
            let start = Instant::now();
            let state = call!(actor, CounterMsg::AddGet, 1).expect("actor replies");
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
    let mut actors: Vec<Option<ActorRef<Add>>> = vec![None; MANY_KEYS as usize];
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
            let mut spawned = Vec::with_capacity(mine.len());
            for (key, left) in mine {
                let (actor, _) = Actor::spawn(None, Keyed, (left, Arc::clone(&done)))
                    .await
                    .expect("spawn");
                spawned.push((key, actor));
            }
            spawned
        });
        for (key, actor) in spawned {
            actors[key] = Some(actor);
        }
    }
    let actors: Arc<Vec<ActorRef<Add>>> =
        Arc::new(actors.into_iter().map(|a| a.expect("spawned")).collect());
    let senders: Vec<_> = plan
        .keys
        .into_iter()
        .enumerate()
        .map(|(sender, keys)| {
            let actors = Arc::clone(&actors);
            runtime_thread(CORES[sender], "ractor-sender", move || async move {
                let start = Instant::now();
                for key in keys {
                    actors[key as usize].cast(Add(1)).expect("actor alive");
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
        note_scaled_down("ractor", n);
    }
    let runtime = CoreRuntime::start(RECEIVER_CORE);
    let rss_before = measure::rss_bytes();
    let (elapsed, actors) = runtime.run(async move {
        let start = Instant::now();
        let mut actors = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let (actor, _) = Actor::spawn(None, Counter, ()).await.expect("spawn");
            actors.push(actor);
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
            let mut players = Vec::with_capacity(FANOUT_PLAYERS as usize);
            for _ in 0..FANOUT_PLAYERS {
                let (player, _) = Actor::spawn(None, Player, (rounds - 1, Arc::clone(&done)))
                    .await
                    .expect("spawn");
                players.push(player);
            }
            players
        }
    });
    let room = room_runtime.run(async move {
        let (room, _) = Actor::spawn(None, Room, players).await.expect("spawn");
        room
    });
    let start = Instant::now();
    for round in 0..rounds {
        room.cast(Broadcast(round)).expect("room alive");
    }
    let end = done.wait();
    vec![rate(
        "deliveries_per_s",
        rounds * FANOUT_PLAYERS,
        end - start,
    )]
}

fn idle(scale: Scale) -> Vec<Figure> {
    let runtime = ::tokio::runtime::Runtime::new().expect("default tokio runtime");
    let (actor, _) = runtime
        .block_on(Actor::spawn(None, Counter, ()))
        .expect("spawn");
    let figures = measure::watch_idle(scale.idle());
    drop(actor);
    figures
}
