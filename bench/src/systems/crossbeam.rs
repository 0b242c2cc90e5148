//! A crossbeam channel between pinned threads: the usual "threads and a channel"
//! design.
//!
//! API used: `crossbeam_channel::bounded` (capacity [`QUEUE_CAPACITY`]), blocking
//! `Sender::send` and `Receiver::recv` (which spin briefly, then park). Request/reply
//! uses a pair of channels, requests one way and replies the other, which is what a
//! single client of a worker thread does. `many` has one channel per receiving thread,
//! shared by both senders, with the keys' states in a `Vec` on the receiver: percore's
//! design done by hand with this channel.
//!
//! Skipped: `activate` (a channel has no entities).

use std::sync::{Arc, Barrier};
use std::time::Instant;

use ::crossbeam_channel::{bounded, Receiver};

use super::System;
use crate::harness::{spawn_on, CORES, QUEUE_CAPACITY, RECEIVER_CORE, SENDER_CORE};
use crate::measure::{self, rate, Figure, Latencies};
use crate::workload::{
    fanout_player_sum, shard_of, sum_below, ManyPlan, Scale, Workload, FANOUT_PLAYERS, MANY_KEYS,
};

/// The crossbeam-channel entry of the system table.
pub const SYSTEM: System = System {
    name: "crossbeam",
    workloads: &[
        (Workload::Tell, tell),
        (Workload::Ask, ask),
        (Workload::Many, many),
        (Workload::Fanout, fanout),
        (Workload::Idle, idle),
    ],
};

/// Receives `count` messages, handing each to `handle`; returns when the last was
/// handled.
fn receive<T>(rx: &Receiver<T>, count: u64, mut handle: impl FnMut(T)) -> Instant {
    for _ in 0..count {
        handle(rx.recv().expect("senders outlive the count"));
    }
    Instant::now()
}

fn tell(scale: Scale) -> Vec<Figure> {
    let n = scale.tell_msgs();
    let (tx, rx) = bounded::<u64>(QUEUE_CAPACITY);
    let ready = Arc::new(Barrier::new(2));
    let receiver = spawn_on(RECEIVER_CORE, "crossbeam-receiver", {
        let ready = Arc::clone(&ready);
        move || {
            let mut state = 0u64;
            ready.wait();
            let end = receive(&rx, n, |v| state += v);
            assert_eq!(state, sum_below(n));
            end
        }
    });
    let sender = spawn_on(SENDER_CORE, "crossbeam-sender", move || {
        ready.wait();
        let start = Instant::now();
        for i in 0..n {
            tx.send(i).expect("receiver alive");
        }
        start
    });
    let start = sender.join().expect("sender");
    let end = receiver.join().expect("receiver");
    vec![rate("msgs_per_s", n, end - start)]
}

fn ask(scale: Scale) -> Vec<Figure> {
    let warmup = scale.ask_warmup();
    let total = warmup + scale.ask_samples();
    let (request_tx, request_rx) = bounded::<u64>(QUEUE_CAPACITY);
    let (reply_tx, reply_rx) = bounded::<u64>(QUEUE_CAPACITY);
    let receiver = spawn_on(RECEIVER_CORE, "crossbeam-receiver", move || {
        let mut state = 0u64;
        for request in request_rx {
            state += request;
            reply_tx.send(state).expect("asker alive");
        }
    });
    let asker = spawn_on(SENDER_CORE, "crossbeam-asker", move || {
        let mut latencies = Latencies::new();
        for i in 0..total {
            let start = Instant::now();
            request_tx.send(1).expect("receiver alive");
            let state = reply_rx.recv().expect("receiver replies");
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
    let plan = ManyPlan::new(scale);
    let total = plan.total();
    let receivers = CORES.len();
    let channels: Vec<_> = (0..receivers)
        .map(|_| bounded::<(u32, u64)>(QUEUE_CAPACITY))
        .collect();
    let ready = Arc::new(Barrier::new(plan.keys.len() + receivers));
    let receiver_threads: Vec<_> = channels
        .iter()
        .enumerate()
        .map(|(shard, (_, rx))| {
            let rx = rx.clone();
            let expected = plan.expected_for(shard, receivers);
            let ready = Arc::clone(&ready);
            spawn_on(CORES[shard], "crossbeam-receiver", move || {
                let mut states = vec![0u64; (MANY_KEYS as usize).div_ceil(receivers)];
                ready.wait();
                let end = receive(&rx, expected, |(key, value)| {
                    states[key as usize / receivers] += value;
                });
                assert_eq!(states.iter().sum::<u64>(), expected);
                end
            })
        })
        .collect();
    let txs: Vec<_> = channels.into_iter().map(|(tx, _)| tx).collect();
    let sender_threads: Vec<_> = plan
        .keys
        .into_iter()
        .enumerate()
        .map(|(sender, keys)| {
            let txs = txs.clone();
            let ready = Arc::clone(&ready);
            spawn_on(CORES[sender], "crossbeam-sender", move || {
                ready.wait();
                let start = Instant::now();
                for key in keys {
                    txs[shard_of(u64::from(key), receivers)]
                        .send((key, 1))
                        .expect("receiver alive");
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
    let (tx, rx) = bounded::<(u32, u64)>(QUEUE_CAPACITY);
    let ready = Arc::new(Barrier::new(2));
    let players = spawn_on(RECEIVER_CORE, "crossbeam-players", {
        let ready = Arc::clone(&ready);
        move || {
            let mut players = vec![0u64; FANOUT_PLAYERS as usize];
            ready.wait();
            let end = receive(&rx, deliveries, |(player, round)| {
                players[player as usize] += round;
            });
            assert!(players.iter().all(|&p| p == fanout_player_sum(rounds)));
            end
        }
    });
    let room = spawn_on(SENDER_CORE, "crossbeam-room", move || {
        ready.wait();
        let start = Instant::now();
        for round in 0..rounds {
            for player in 0..FANOUT_PLAYERS as u32 {
                tx.send((player, round)).expect("players alive");
            }
        }
        start
    });
    let start = room.join().expect("room");
    let end = players.join().expect("players");
    vec![rate("deliveries_per_s", deliveries, end - start)]
}

fn idle(scale: Scale) -> Vec<Figure> {
    let (tx, rx) = bounded::<u64>(QUEUE_CAPACITY);
    let receiver = spawn_on(RECEIVER_CORE, "crossbeam-receiver", move || {
        rx.iter().sum::<u64>()
    });
    let figures = measure::watch_idle(scale.idle());
    drop(tx);
    receiver.join().expect("receiver");
    figures
}
