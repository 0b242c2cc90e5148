//! A tokio mpsc channel between tasks on two cores: the usual async design without an
//! actor framework.
//!
//! API used: `tokio::sync::mpsc::channel` (bounded, capacity [`QUEUE_CAPACITY`]),
//! `Sender::send(..).await`, and on the receiving side `Receiver::recv_many`, tokio's
//! documented way to take messages in batches. Request/reply sends a
//! `tokio::sync::oneshot::Sender` with each request, as the tokio tutorial teaches.
//! Sender and receiver each run on a current-thread runtime pinned to its core (see
//! [`crate::harness`] for why not a multi-thread runtime); `idle` uses the default
//! multi-thread runtime (`Runtime::new`, what `#[tokio::main]` builds). `many` has one
//! receiving task per core, owning the states of its keys in a `Vec`: percore's
//! design done by hand with tokio.
//!
//! Skipped: `activate` (a channel has no entities).

use std::time::Instant;

use ::tokio::sync::{mpsc, oneshot};

use super::System;
use crate::harness::{
    runtime_thread, CoreRuntime, CORES, QUEUE_CAPACITY, RECEIVER_CORE, SENDER_CORE,
};
use crate::measure::{self, rate, Figure, Latencies};
use crate::workload::{
    fanout_player_sum, shard_of, sum_below, ManyPlan, Scale, Workload, FANOUT_PLAYERS, MANY_KEYS,
};

/// The tokio mpsc entry of the system table.
pub const SYSTEM: System = System {
    name: "tokio",
    workloads: &[
        (Workload::Tell, tell),
        (Workload::Ask, ask),
        (Workload::Many, many),
        (Workload::Fanout, fanout),
        (Workload::Idle, idle),
    ],
};

/// Most messages a receiver takes per `recv_many`.
const RECV_MANY_MAX: usize = 256;

/// Receives `count` messages in batches, handing each to `handle`; returns when the
/// last was handled.
async fn receive<T>(rx: &mut mpsc::Receiver<T>, count: u64, mut handle: impl FnMut(T)) -> Instant {
    let mut batch = Vec::with_capacity(RECV_MANY_MAX);
    let mut left = count;
    while left > 0 {
        let got = rx.recv_many(&mut batch, RECV_MANY_MAX).await;
        assert!(got > 0, "senders outlive the count");
        left -= got as u64;
        batch.drain(..).for_each(&mut handle);
    }
    Instant::now()
}

fn tell(scale: Scale) -> Vec<Figure> {
    let n = scale.tell_msgs();
    let receiver_runtime = CoreRuntime::start(RECEIVER_CORE);
    let (tx, mut rx) = mpsc::channel::<u64>(QUEUE_CAPACITY);
    let receiver = receiver_runtime.spawn(async move {
        let mut state = 0u64;
        let end = receive(&mut rx, n, |v| state += v).await;
        assert_eq!(state, sum_below(n));
        end
    });
    let sender = runtime_thread(SENDER_CORE, "tokio-sender", move || async move {
        let start = Instant::now();
        for i in 0..n {
            tx.send(i).await.expect("receiver alive");
        }
        start
    });
    let start = sender.join().expect("sender");
    let end = receiver.wait();
    vec![rate("msgs_per_s", n, end - start)]
}

/// A request of the `ask` workload: a value to add, and where to send the new state.
struct AddGet {
    value: u64,
    reply: oneshot::Sender<u64>,
}

fn ask(scale: Scale) -> Vec<Figure> {
    let warmup = scale.ask_warmup();
    let total = warmup + scale.ask_samples();
    let receiver_runtime = CoreRuntime::start(RECEIVER_CORE);
    let (tx, mut rx) = mpsc::channel::<AddGet>(QUEUE_CAPACITY);
    receiver_runtime.handle().spawn(async move {
        let mut state = 0u64;
        while let Some(AddGet { value, reply }) = rx.recv().await {
            state += value;
            let _ = reply.send(state);
        }
    });
    let asker = runtime_thread(SENDER_CORE, "tokio-asker", move || async move {
        let mut latencies = Latencies::new();
        for i in 0..total {
            let start = Instant::now();
            let (reply, replied) = oneshot::channel();
            tx.send(AddGet { value: 1, reply })
                .await
                .expect("receiver alive");
            let state = replied.await.expect("receiver replies");
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
    let receivers = CORES.len();
    let runtimes: Vec<_> = CORES.iter().map(|&core| CoreRuntime::start(core)).collect();
    let mut txs = Vec::new();
    let mut pending = Vec::new();
    for (shard, runtime) in runtimes.iter().enumerate() {
        let (tx, mut rx) = mpsc::channel::<(u32, u64)>(QUEUE_CAPACITY);
        let expected = plan.expected_for(shard, receivers);
        txs.push(tx);
        pending.push(runtime.spawn(async move {
            let mut states = vec![0u64; (MANY_KEYS as usize).div_ceil(receivers)];
            let end = receive(&mut rx, expected, |(key, value)| {
                states[key as usize / receivers] += value;
            })
            .await;
            assert_eq!(states.iter().sum::<u64>(), expected);
            end
        }));
    }
    let senders: Vec<_> = plan
        .keys
        .into_iter()
        .enumerate()
        .map(|(sender, keys)| {
            let txs = txs.clone();
            runtime_thread(CORES[sender], "tokio-sender", move || async move {
                let start = Instant::now();
                for key in keys {
                    txs[shard_of(u64::from(key), receivers)]
                        .send((key, 1))
                        .await
                        .expect("receiver alive");
                }
                start
            })
        })
        .collect();
    drop(txs);
    let start = senders
        .into_iter()
        .map(|t| t.join().expect("sender"))
        .min()
        .expect("two senders");
    let end = pending
        .into_iter()
        .map(|p| p.wait())
        .max()
        .expect("two receivers");
    vec![rate("msgs_per_s", total, end - start)]
}

fn fanout(scale: Scale) -> Vec<Figure> {
    let rounds = scale.fanout_rounds();
    let deliveries = rounds * FANOUT_PLAYERS;
    let players_runtime = CoreRuntime::start(RECEIVER_CORE);
    let (tx, mut rx) = mpsc::channel::<(u32, u64)>(QUEUE_CAPACITY);
    let players = players_runtime.spawn(async move {
        let mut players = vec![0u64; FANOUT_PLAYERS as usize];
        let end = receive(&mut rx, deliveries, |(player, round)| {
            players[player as usize] += round;
        })
        .await;
        assert!(players.iter().all(|&p| p == fanout_player_sum(rounds)));
        end
    });
    let room = runtime_thread(SENDER_CORE, "tokio-room", move || async move {
        let start = Instant::now();
        for round in 0..rounds {
            for player in 0..FANOUT_PLAYERS as u32 {
                tx.send((player, round)).await.expect("players alive");
            }
        }
        start
    });
    let start = room.join().expect("room");
    let end = players.wait();
    vec![rate("deliveries_per_s", deliveries, end - start)]
}

fn idle(scale: Scale) -> Vec<Figure> {
    let runtime = ::tokio::runtime::Runtime::new().expect("default tokio runtime");
    let (tx, mut rx) = mpsc::channel::<u64>(QUEUE_CAPACITY);
    runtime.spawn(async move { while rx.recv().await.is_some() {} });
    let figures = measure::watch_idle(scale.idle());
    drop(tx);
    figures
}
