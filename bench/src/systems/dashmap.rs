//! A DashMap shared by threads: the "shared state, no actors" design, where senders
//! update an entity's state in place under the map's shard lock instead of sending it
//! a message.
//!
//! API used: `DashMap::new()` (default hasher and shard count, as `cargo add dashmap`
//! users get), `DashMap::insert` to create an entry, `DashMap::get_mut` to update one.
//! Keys are `u64`, states `u64`, like percore's entities in these workloads.
//!
//! - `many`: two threads, one per core, update random keys of a map prefilled with
//!   every key (the prefill is not measured).
//! - `activate`: one thread on [`RECEIVER_CORE`] inserts the keys into an empty map.
//! - `fanout`: the room thread updates each player's entry itself; there is no
//!   receiving core, which is the point of shared state.
//!
//! Skipped: `tell` and `ask` (there is no receiver to send to: the "message" would be
//! a local update on the sender's own core) and `idle` (a map has no threads).

use std::sync::{Arc, Barrier};
use std::time::Instant;

use ::dashmap::DashMap;

use super::System;
use crate::harness::{spawn_on, CORES, RECEIVER_CORE, SENDER_CORE};
use crate::measure::{self, rate, Figure};
use crate::workload::{fanout_player_sum, ManyPlan, Scale, Workload, FANOUT_PLAYERS, MANY_KEYS};

/// The DashMap entry of the system table.
pub const SYSTEM: System = System {
    name: "dashmap",
    workloads: &[
        (Workload::Many, many),
        (Workload::Activate, activate),
        (Workload::Fanout, fanout),
    ],
};

fn many(scale: Scale) -> Vec<Figure> {
    let plan = ManyPlan::new(scale);
    let total = plan.total();
    let map: Arc<DashMap<u64, u64>> = Arc::new(DashMap::new());
    for key in 0..MANY_KEYS {
        map.insert(key, 0);
    }
    let ready = Arc::new(Barrier::new(plan.keys.len()));
    let threads: Vec<_> = plan
        .keys
        .into_iter()
        .enumerate()
        .map(|(sender, keys)| {
            let map = Arc::clone(&map);
            let ready = Arc::clone(&ready);
            spawn_on(CORES[sender], "dashmap-sender", move || {
                ready.wait();
                let start = Instant::now();
                for key in keys {
                    *map.get_mut(&u64::from(key)).expect("prefilled key") += 1;
                }
                (start, Instant::now())
            })
        })
        .collect();
    let spans: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("sender"))
        .collect();
    let start = spans.iter().map(|s| s.0).min().expect("two senders");
    let end = spans.iter().map(|s| s.1).max().expect("two senders");
    assert_eq!(map.iter().map(|e| *e.value()).sum::<u64>(), total);
    vec![rate("msgs_per_s", total, end - start)]
}

fn activate(scale: Scale) -> Vec<Figure> {
    let n = scale.activate_entities();
    let creator = spawn_on(RECEIVER_CORE, "dashmap-creator", move || {
        let rss_before = measure::rss_bytes();
        let start = Instant::now();
        let map: DashMap<u64, u64> = DashMap::new();
        for key in 0..n {
            map.insert(key, 0);
        }
        let elapsed = start.elapsed();
        let rss_after = measure::rss_bytes();
        assert_eq!(map.len() as u64, n);
        // Freeing the map is not measured; the child exits right after.
        std::mem::forget(map);
        measure::activation(n, elapsed, rss_before, rss_after)
    });
    creator.join().expect("creator")
}

fn fanout(scale: Scale) -> Vec<Figure> {
    let rounds = scale.fanout_rounds();
    let map: DashMap<u64, u64> = DashMap::new();
    for player in 0..FANOUT_PLAYERS {
        map.insert(player, 0);
    }
    let room = spawn_on(SENDER_CORE, "dashmap-room", move || {
        let start = Instant::now();
        for round in 0..rounds {
            for player in 0..FANOUT_PLAYERS {
                *map.get_mut(&player).expect("player entry") += round;
            }
        }
        let elapsed = start.elapsed();
        assert!(map.iter().all(|e| *e.value() == fanout_player_sum(rounds)));
        elapsed
    });
    let elapsed = room.join().expect("room");
    vec![rate("deliveries_per_s", rounds * FANOUT_PLAYERS, elapsed)]
}
