//! The workloads, defined once for every system, and their sizes.
//!
//! | workload | what runs | figures |
//! |---|---|---|
//! | `tell` | one sender thread on [`SENDER_CORE`], one receiving entity/actor on [`RECEIVER_CORE`]; [`Scale::tell_msgs`] messages carrying a `u64` the receiver adds to its state; ends when the receiver has handled the last one | `msgs_per_s` |
//! | `ask` | sequential request/reply round trips from one thread to an entity/actor on the other core (request: a `u64` to add, reply: the new state); [`Scale::ask_warmup`] unrecorded, then [`Scale::ask_samples`] recorded | `p50_ns`, `p99_ns`, `p999_ns` |
//! | `many` | [`MANY_KEYS`] entities (keys, actors), two sender threads (one per core) sending the keys of a [`ManyPlan`]; ends when every message is handled | `msgs_per_s` |
//! | `activate` | create [`Scale::activate_entities`] entities on one core, ending when all are live | `per_s`, `bytes_per_entity` |
//! | `fanout` | a room on [`SENDER_CORE`] sends one message to each of [`FANOUT_PLAYERS`] players on [`RECEIVER_CORE`], [`Scale::fanout_rounds`] times; ends when every player handled the last round | `deliveries_per_s` |
//! | `idle` | the system in its default configuration, one idle receiver, nothing to do for [`Scale::idle`] | `cpu_pct` (of one core) |
//!
//! A system skips a workload that makes no sense for it (a raw channel has nothing to
//! activate) by leaving it out of its table entry; nothing is printed for it.
//!
//! [`SENDER_CORE`]: crate::harness::SENDER_CORE
//! [`RECEIVER_CORE`]: crate::harness::RECEIVER_CORE

use std::time::Duration;

use crate::harness::XorShift;

/// One of the workloads every system may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    /// Cross-core fire-and-forget messages to one entity.
    Tell,
    /// Sequential cross-core request/reply latency.
    Ask,
    /// Messages to random keys among [`MANY_KEYS`] entities from two senders.
    Many,
    /// Creating many entities: rate and memory.
    Activate,
    /// One entity broadcasting to [`FANOUT_PLAYERS`] others.
    Fanout,
    /// CPU used while there is nothing to do.
    Idle,
}

impl Workload {
    /// Every workload, in the order they run and are reported.
    pub const ALL: [Workload; 6] = [
        Workload::Tell,
        Workload::Ask,
        Workload::Many,
        Workload::Activate,
        Workload::Fanout,
        Workload::Idle,
    ];

    /// The workload's name on the command line and in the output.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Tell => "tell",
            Workload::Ask => "ask",
            Workload::Many => "many",
            Workload::Activate => "activate",
            Workload::Fanout => "fanout",
            Workload::Idle => "idle",
        }
    }

    /// The workload called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }
}

/// Entities addressed by the `many` workload.
pub const MANY_KEYS: u64 = 100_000;

/// Sender threads in the `many` workload, one per core.
pub const MANY_SENDERS: usize = 2;

/// Players a room broadcasts to in the `fanout` workload.
pub const FANOUT_PLAYERS: u64 = 1_000;

/// Seed of the first sender's key stream in `many`; the second uses the next seed.
const MANY_SEED: u64 = 0x5EED_0F4A_1100;

/// How big a run is: `--quick` (a smoke check, well under a minute for every peer) or
/// full (long enough for stable medians).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    /// Whether this is the reduced `--quick` run.
    pub quick: bool,
}

impl Scale {
    /// The reduced run.
    pub const QUICK: Scale = Scale { quick: true };
    /// The full run.
    pub const FULL: Scale = Scale { quick: false };

    fn pick(self, quick: u64, full: u64) -> u64 {
        if self.quick {
            quick
        } else {
            full
        }
    }

    /// Messages sent in `tell`.
    pub fn tell_msgs(self) -> u64 {
        self.pick(200_000, 2_000_000)
    }

    /// Round trips made before recording in `ask` (warm caches, connections, JIT-less
    /// but lazily allocated mailboxes).
    pub fn ask_warmup(self) -> u64 {
        self.pick(2_000, 20_000)
    }

    /// Round trips recorded in `ask`.
    pub fn ask_samples(self) -> u64 {
        self.pick(20_000, 100_000)
    }

    /// Messages sent in `many`, over both senders.
    pub fn many_msgs(self) -> u64 {
        self.pick(400_000, 4_000_000)
    }

    /// Entities created in `activate` (1 000 000 in both runs).
    pub fn activate_entities(self) -> u64 {
        1_000_000
    }

    /// Entities created in `activate` by systems that create them too slowly for a
    /// quick run (actor frameworks): 100 000 in a quick run, which the system module
    /// states on stderr.
    pub fn activate_entities_slow(self) -> u64 {
        self.pick(100_000, 1_000_000)
    }

    /// Rounds of broadcast in `fanout`.
    pub fn fanout_rounds(self) -> u64 {
        self.pick(100, 1_000)
    }

    /// How long `idle` watches the CPU.
    pub fn idle(self) -> Duration {
        Duration::from_secs(self.pick(1, 5))
    }

    /// Fresh child processes run per (system, workload); the reported figure is
    /// their median. `idle` runs fewer, each run is already a 5-second average.
    pub fn repetitions(self, workload: Workload) -> usize {
        match (self.quick, workload) {
            (true, _) => 1,
            (false, Workload::Idle) => 3,
            (false, _) => 5,
        }
    }
}

/// Says on stderr that `system` creates `count` entities in `activate` instead of
/// [`Scale::activate_entities`], because a quick run cannot afford more.
pub fn note_scaled_down(system: &str, count: u64) {
    eprintln!(
        "versus: {system} activate: {count} actors instead of {} in --quick \
         (too slow for a smoke run); per_s and bytes_per_entity are per actor as usual",
        Scale::FULL.activate_entities()
    );
}

/// The keys the two senders of `many` send to, generated up front (outside the
/// measured time) so every system sends exactly the same stream.
pub struct ManyPlan {
    /// Keys in `0..MANY_KEYS`, one list per sender, in sending order.
    pub keys: [Vec<u32>; MANY_SENDERS],
    /// How many messages each key receives over both senders.
    pub per_key: Vec<u32>,
}

impl ManyPlan {
    /// The plan for `scale`: [`Scale::many_msgs`] keys split evenly between senders.
    pub fn new(scale: Scale) -> Self {
        let per_sender = scale.many_msgs() / MANY_SENDERS as u64;
        let mut per_key = vec![0u32; MANY_KEYS as usize];
        let keys = std::array::from_fn(|sender| {
            let mut rng = XorShift::new(MANY_SEED + sender as u64);
            (0..per_sender)
                .map(|_| {
                    let key = rng.below(MANY_KEYS) as u32;
                    per_key[key as usize] += 1;
                    key
                })
                .collect()
        });
        Self { keys, per_key }
    }

    /// Messages sent, over both senders.
    pub fn total(&self) -> u64 {
        self.keys.iter().map(|k| k.len() as u64).sum()
    }

    /// Messages destined to keys that `shard_of(key, shards) == shard`.
    pub fn expected_for(&self, shard: usize, shards: usize) -> u64 {
        self.per_key
            .iter()
            .enumerate()
            .filter(|&(key, _)| shard_of(key as u64, shards) == shard)
            .map(|(_, &count)| u64::from(count))
            .sum()
    }
}

/// The receiving thread or runtime that owns `key` when keys are spread over `shards`
/// by hand (raw channels, actors placed per core).
pub fn shard_of(key: u64, shards: usize) -> usize {
    (key % shards as u64) as usize
}

/// The expected final state of a receiver that was sent `0..n`: their sum.
pub fn sum_below(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// The expected final state of each fanout player: the sum of the round numbers.
pub fn fanout_player_sum(rounds: u64) -> u64 {
    sum_below(rounds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for workload in Workload::ALL {
            assert_eq!(Workload::from_name(workload.name()), Some(workload));
        }
    }

    #[test]
    fn many_plan_counts_every_message_once() {
        let plan = ManyPlan::new(Scale::QUICK);
        assert_eq!(plan.total(), Scale::QUICK.many_msgs());
        assert_eq!(
            plan.expected_for(0, 2) + plan.expected_for(1, 2),
            plan.total()
        );
    }
}
