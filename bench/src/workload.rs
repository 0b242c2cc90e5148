//! The workloads, defined once for every system, and their sizes.
//!
//! | workload | what runs | figures |
//! |---|---|---|
//! | `tell` | one sender thread on [`SENDER_CORE`], one receiving entity/actor on [`RECEIVER_CORE`]; [`Scale::tell_msgs`] messages carrying a `u64` the receiver adds to its state; ends when the receiver has handled the last one | `msgs_per_s` |
//! | `ask` | sequential request/reply round trips from one thread to an entity/actor on the other core (request: a `u64` to add, reply: the new state); [`Scale::ask_warmup`] unrecorded, then [`Scale::ask_samples`] recorded | `p50_ns`, `p99_ns`, `p999_ns` |
//! | `many` | [`MANY_KEYS`] entities (keys, actors), two senders, one per core, sending the keys of a [`ManyPlan`] (threads; on percore, one entity on each shard, with the client-thread variant reported beside it); ends when every message is handled | `msgs_per_s` |
//! | `activate` | create [`Scale::activate_entities`] entities on one core, ending when all are live | `per_s`, `bytes_per_entity` |
//! | `fanout` | a room on [`SENDER_CORE`] sends one message to each of [`FANOUT_PLAYERS`] players on [`RECEIVER_CORE`], [`Scale::fanout_rounds`] times; ends when every player handled the last round | `deliveries_per_s` |
//! | `idle` | the system in its default configuration, one idle receiver, nothing to do for [`Scale::idle`] | `cpu_pct` (of one core) |
//! | `durable_ask` | like `ask`, but every request changes a durable entity's [`DURABLE_STATE_LEN_BYTES`]-byte state (synced durability), so every reply waits for its record to be written and `fdatasync`ed; [`Scale::durable_ask_warmup`] unrecorded, then [`Scale::durable_ask_samples`] recorded. The raw counterpart writes one [`DURABLE_RECORD_LEN_BYTES`]-byte record and `fdatasync`s per round trip | `p50_ns`, `p99_ns`, `p999_ns` |
//! | `durable_records` | [`Scale::durable_rounds`] rounds of one tell to each of [`DURABLE_KEYS`] durable entities on one shard, sent in batches from the other core: one record per tell, group commit; synced, then again buffered. The raw counterpart writes the same bytes in 1 MiB batches, each `fdatasync`ed | `records_per_s`, `buffered_records_per_s` |
//! | `recovery` | a log of about [`Scale::recovery_log_bytes`] of [`RECOVERY_STATE_LEN_BYTES`]-byte states of [`Scale::recovery_keys`] entities, then engine starts that recover it: first with the log evicted from the page cache, then with it cached. The raw counterpart reads a file of that size | `gb_per_s`, `cold_gb_per_s` (and `records_per_s`) |
//!
//! A system skips a workload that makes no sense for it (a raw channel has nothing to
//! activate) by leaving it out of its table entry; nothing is printed for it. The
//! durable workloads run on percore and on `fdatasync`, the raw file I/O they are
//! measured against, both in a [`ScratchDir`](crate::scratch::ScratchDir) (the same
//! filesystem for both).
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
    /// Sequential request/reply latency when every request changes a durable state.
    DurableAsk,
    /// Durable records logged per second by one shard under group commit.
    DurableRecords,
    /// Bytes of log read per second by an engine recovering at start.
    Recovery,
}

impl Workload {
    /// Every workload, in the order they run and are reported.
    pub const ALL: [Workload; 9] = [
        Workload::Tell,
        Workload::Ask,
        Workload::Many,
        Workload::Activate,
        Workload::Fanout,
        Workload::Idle,
        Workload::DurableAsk,
        Workload::DurableRecords,
        Workload::Recovery,
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
            Workload::DurableAsk => "durable_ask",
            Workload::DurableRecords => "durable_records",
            Workload::Recovery => "recovery",
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

/// Size of the durable state changed by `durable_ask` and `durable_records` (two
/// `u64`s, logged as its bytes).
pub const DURABLE_STATE_LEN_BYTES: usize = 16;

/// Size of one logged record of a [`DURABLE_STATE_LEN_BYTES`] state: the 64-byte
/// header and the padded payload. The raw counterparts write records of this size.
pub const DURABLE_RECORD_LEN_BYTES: usize = percore::log::record_len(DURABLE_STATE_LEN_BYTES);

/// Durable entities told once per round in `durable_records`.
pub const DURABLE_KEYS: u64 = 100_000;

/// Size of the durable state whose changes fill the log `recovery` reads back.
pub const RECOVERY_STATE_LEN_BYTES: usize = 1024;

/// Size of one logged record of a [`RECOVERY_STATE_LEN_BYTES`] state.
pub const RECOVERY_RECORD_LEN_BYTES: usize = percore::log::record_len(RECOVERY_STATE_LEN_BYTES);

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

    /// Round trips made before recording in `durable_ask`.
    pub fn durable_ask_warmup(self) -> u64 {
        self.pick(100, 500)
    }

    /// Round trips recorded in `durable_ask` (each one waits for an `fdatasync`).
    pub fn durable_ask_samples(self) -> u64 {
        self.pick(1_000, 10_000)
    }

    /// Rounds of one tell to each of [`DURABLE_KEYS`] entities in `durable_records`,
    /// after the unmeasured round that activates them.
    pub fn durable_rounds(self) -> u64 {
        self.pick(2, 20)
    }

    /// Entities whose changes fill the log in `recovery`.
    pub fn recovery_keys(self) -> u64 {
        self.pick(10_000, 100_000)
    }

    /// Rounds of one change to each of [`Scale::recovery_keys`] entities that fill
    /// the log in `recovery`.
    pub fn recovery_rounds(self) -> u64 {
        self.pick(6, 10)
    }

    /// Approximate size of the log `recovery` reads back: about 65 MB in a quick run,
    /// 1.09 GB in a full one.
    pub fn recovery_log_bytes(self) -> u64 {
        self.recovery_keys() * self.recovery_rounds() * RECOVERY_RECORD_LEN_BYTES as u64
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
