//! percore itself: entities on pinned shards, driven through client handles.
//!
//! API used: `Engine::builder()` with the default configuration except where a
//! workload places its shards (`cores`), `Engine::client()` per sending
//! thread, `Client::tell` one message at a time (no batching, like the peers'
//! one-at-a-time sends), `Client::ask` for request/reply, and `Ctx::tell` from
//! a handler for `fanout`. `many` is sent the percore way, by entities: one
//! driver entity on each shard tells its share of the keys with `Ctx::tell`,
//! pacing itself with `Ctx::backlog` (`msgs_per_s`: two threads on two
//! cores, like DashMap's); the same messages sent by two client threads, one
//! pinned to each core beside the shards, give `client_msgs_per_s`. `ask` is measured twice: with the default idle
//! policy (shards spin 200 µs before parking, clients 50 µs: `p50_ns`, …) and
//! with everything parking at once (`IdlePolicy::Park`, no client spin:
//! `park_p50_ns`, …).
//!
//! The durable workloads register `bytemuck::Pod` states with
//! `EngineBuilder::register_durable_pod` on one shard on [`RECEIVER_CORE`],
//! with a fresh `EngineBuilder::data_dir` under
//! [`scratch::base_dir`] and otherwise the default
//! configuration (synced durability, 64 MiB segments, 256 MiB between
//! checkpoints):
//!
//! - `durable_ask`: `Client::ask` from [`SENDER_CORE`], each ask one change
//!   of a 16-byte state, so each reply waits for a write and an `fdatasync`.
//! - `durable_records`: `Client::tell_batch` of one change to each of
//!   [`DURABLE_KEYS`] entities per round; the records are counted with the
//!   shard's `records_logged` metric, the end is the reply to an ask sent
//!   after the last round (held until every record before it is durable).
//!   Measured synced (`records_per_s`), then buffered
//!   (`buffered_records_per_s`, `DurabilityLevel::Buffered`).
//! - `recovery`: an engine writes the log (buffered, to be quick, and with
//!   checkpoints out of reach so the log keeps every record), then the time of
//!   `EngineBuilder::build` on that data directory is measured, its
//!   `Engine::recovery().log_bytes` divided by it: first after evicting the
//!   log's files from the page cache (`cold_gb_per_s`), then with them cached
//!   by that first start (`gb_per_s`, and `records_per_s`). Checkpoints stay
//!   out of reach in every start, so both read the same log. How much of the
//!   log's files is in the page cache before each start goes to stderr.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use percore::bytemuck::{Pod, Zeroable};
use percore::{Ctx, DurabilityLevel, Engine, EngineBuilder, EngineConfig, Entity, IdlePolicy};

use super::System;
use crate::harness::{pin, spawn_on, Countdown, CORES, RECEIVER_CORE, SENDER_CORE};
use crate::measure::{self, gb_per_s, rate, Figure, Latencies};
use crate::scratch::{self, ScratchDir};
use crate::workload::{
    fanout_player_sum, ManyPlan, Scale, Workload, DURABLE_KEYS, DURABLE_STATE_LEN_BYTES,
    FANOUT_PLAYERS, MANY_KEYS, RECOVERY_STATE_LEN_BYTES,
};

/// The percore entry of the system table.
pub const SYSTEM: System = System {
    name: "percore",
    workloads: &[
        (Workload::Tell, tell),
        (Workload::Ask, ask),
        (Workload::Many, many),
        (Workload::Activate, activate),
        (Workload::Fanout, fanout),
        (Workload::Idle, idle),
        (Workload::DurableAsk, durable_ask),
        (Workload::DurableRecords, durable_records),
        (Workload::Recovery, recovery),
    ],
};

/// Messages the current workload's receivers expect in all (one workload runs
/// per child process, so process-wide statics are the workload's own).
static EXPECTED: AtomicU64 = AtomicU64::new(u64::MAX);
/// Opened by the receivers when the last expected message is handled.
static DONE: OnceLock<Countdown> = OnceLock::new();

fn done() -> &'static Countdown {
    DONE.get().expect("the workload sets the countdown first")
}

/// Adds what it is sent; the one that handles the last expected message of a
/// `tell` opens the countdown.
struct Counter {
    state: u64,
    handled: u64,
}

impl Entity for Counter {
    const KIND: &'static str = "counter";
    type Msg = u64;
    type Reply = u64;

    fn activate(_key: u64) -> Self {
        Counter {
            state: 0,
            handled: 0,
        }
    }

    fn handle(&mut self, value: u64, _: &mut Ctx<'_, Self>) -> u64 {
        self.state += value;
        self.handled += 1;
        if self.handled == EXPECTED.load(Ordering::Relaxed) {
            done().arrive();
        }
        self.state
    }
}

/// A fanout player: adds the round numbers; arrives at the countdown on the
/// last round.
struct Player {
    sum: u64,
}

impl Entity for Player {
    const KIND: &'static str = "player";
    type Msg = u64;
    type Reply = u64;

    fn activate(_key: u64) -> Self {
        Player { sum: 0 }
    }

    fn handle(&mut self, round: u64, _: &mut Ctx<'_, Self>) -> u64 {
        self.sum += round;
        if round + 1 == EXPECTED.load(Ordering::Relaxed) {
            assert_eq!(self.sum, fanout_player_sum(round + 1));
            done().arrive();
        }
        self.sum
    }
}

/// A fanout room: broadcasts each round to its players.
struct Room {
    players: Vec<u64>,
}

enum RoomMsg {
    Join(Vec<u64>),
    Round(u64),
}

impl Entity for Room {
    const KIND: &'static str = "room";
    type Msg = RoomMsg;
    type Reply = ();

    fn activate(_key: u64) -> Self {
        Room {
            players: Vec::new(),
        }
    }

    fn handle(&mut self, msg: RoomMsg, ctx: &mut Ctx<'_, Self>) {
        match msg {
            RoomMsg::Join(players) => self.players = players,
            RoomMsg::Round(round) => {
                for &p in &self.players {
                    ctx.tell::<Player>(p, round)
                        .unwrap_or_else(|_| panic!("room outbox overflowed"));
                }
            }
        }
    }
}

/// A durable account: plain old data, logged as its 16 bytes. A message adds
/// its amount and counts the change; 0 changes nothing (no record), so an ask
/// of 0 only waits for the records logged before it.
#[derive(Clone, Copy, Pod, Zeroable)]
#[bytemuck(crate = "percore::bytemuck")]
#[repr(C)]
pub struct Account {
    balance: u64,
    changes: u64,
}

const _: () = assert!(std::mem::size_of::<Account>() == DURABLE_STATE_LEN_BYTES);

impl Entity for Account {
    const KIND: &'static str = "account";
    type Msg = u64;
    type Reply = u64;

    fn activate(_key: u64) -> Self {
        Account::zeroed()
    }

    fn handle(&mut self, amount: u64, _: &mut Ctx<'_, Self>) -> u64 {
        if amount != 0 {
            self.balance += amount;
            self.changes += 1;
        }
        self.balance
    }
}

/// A durable profile whose 1 KiB state fills the log `recovery` reads: a
/// message counts itself and stores its value in one of the other words; 0
/// changes nothing.
#[derive(Clone, Copy, Pod, Zeroable)]
#[bytemuck(crate = "percore::bytemuck")]
#[repr(C)]
pub struct Profile {
    words: [u64; RECOVERY_STATE_LEN_BYTES / 8],
}

const _: () = assert!(std::mem::size_of::<Profile>() == RECOVERY_STATE_LEN_BYTES);

impl Entity for Profile {
    const KIND: &'static str = "profile";
    type Msg = u64;
    type Reply = u64;

    fn activate(_key: u64) -> Self {
        Profile::zeroed()
    }

    fn handle(&mut self, value: u64, _: &mut Ctx<'_, Self>) -> u64 {
        if value != 0 {
            self.words[0] += 1;
            let slot = 1 + (self.words[0] as usize) % (self.words.len() - 1);
            self.words[slot] = value;
        }
        self.words[0]
    }
}

/// The keys each `many` driver sends to, by driver (shard) index.
static MANY_KEYS_BY_DRIVER: OnceLock<Vec<Vec<u32>>> = OnceLock::new();
/// The `many` drivers' own keys (one homed on each shard, by index), and one
/// `Counter` key homed on each shard for the final probes.
static MANY_PLACES: OnceLock<(Vec<u64>, Vec<u64>)> = OnceLock::new();
/// Tells a `many` driver sends per turn before it lets the shard run a pass
/// of other work (its own `Go` goes behind them on the local queue).
const DRIVER_TURN: usize = 256;

/// A `many` sender living on a shard: on `Go` it tells the next
/// [`DRIVER_TURN`] keys of its list, pacing itself by the shard's backlog for
/// other shards, then queues another `Go`; at the end it asks one key on
/// every shard and opens the countdown when every answer is back (each
/// shard's ring and local queue are FIFO, so they come after its tells).
struct Driver {
    index: usize,
    next: usize,
    probes: usize,
}

#[derive(Clone, Copy)]
enum DriverMsg {
    Go,
    Probe,
}

impl Entity for Driver {
    const KIND: &'static str = "driver";
    type Msg = DriverMsg;
    type Reply = ();

    fn activate(key: u64) -> Self {
        let (drivers, _) = MANY_PLACES.get().expect("places are set first");
        Driver {
            index: drivers
                .iter()
                .position(|&d| d == key)
                .expect("a driver key"),
            next: 0,
            probes: 0,
        }
    }

    fn handle(&mut self, msg: DriverMsg, ctx: &mut Ctx<'_, Self>) {
        let keys = &MANY_KEYS_BY_DRIVER.get().expect("the plan is set first")[self.index];
        match msg {
            DriverMsg::Go => {
                let end = (self.next + DRIVER_TURN).min(keys.len());
                let room = ctx.overflow_cap() / 2;
                while self.next < end && ctx.backlog() < room {
                    ctx.tell::<Counter>(u64::from(keys[self.next]), 1)
                        .expect("paced under the overflow cap");
                    self.next += 1;
                }
                if self.next < keys.len() {
                    if ctx.backlog() < room {
                        let me = ctx.key();
                        ctx.tell::<Driver>(me, DriverMsg::Go).expect("local");
                    } else {
                        // Let a pass publish the backlog first.
                        ctx.after(Duration::ZERO, DriverMsg::Go);
                    }
                    return;
                }
                let (_, probes) = MANY_PLACES.get().expect("places are set first");
                for &probe in probes {
                    ctx.ask::<Counter, _>(probe, 0, |_| DriverMsg::Probe)
                        .expect("probe");
                }
            }
            DriverMsg::Probe => {
                self.probes += 1;
                if self.probes == ctx.shard_count() {
                    done().arrive();
                }
            }
        }
    }
}

fn builder() -> EngineBuilder {
    Engine::builder()
        .register::<Counter>()
        .register::<Driver>()
        .register::<Player>()
        .register::<Room>()
}

fn start(builder: EngineBuilder) -> Engine {
    builder.build().expect("percore engine starts")
}

/// One shard on [`RECEIVER_CORE`] with the durable kinds and its log under
/// `dir`; `config` is the default one unless a workload says otherwise.
fn durable_builder(dir: &Path, config: EngineConfig) -> EngineBuilder {
    Engine::builder()
        .config(config)
        .cores([RECEIVER_CORE])
        .data_dir(dir)
        .register_durable_pod::<Account>()
        .register_durable_pod::<Profile>()
}

/// Waits until the (only) shard has published at least `at_least` logged
/// records, and returns its count. Shards publish metrics at least every
/// millisecond while busy and whenever they go idle.
///
/// # Panics
///
/// Panics if the count is not reached within a minute (a hang, not a slow disk).
fn records_logged_at_least(engine: &Engine, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logged = engine.metrics().total().records_logged;
        if logged >= at_least {
            return logged;
        }
        assert!(
            Instant::now() < deadline,
            "only {logged} of {at_least} records logged after a minute"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn tell(scale: Scale) -> Vec<Figure> {
    let n = scale.tell_msgs();
    // Entity 0 takes the one-at-a-time tells, entity 1 the batched ones; each
    // opens the countdown at its n-th message.
    EXPECTED.store(n, Ordering::Relaxed);
    let _ = DONE.set(Countdown::new(2));
    let engine = start(builder().cores([RECEIVER_CORE]));
    let client = engine.client().expect("client");
    let (single, batched) = spawn_on(SENDER_CORE, "percore-sender", move || {
        let start = Instant::now();
        for i in 0..n {
            client.tell::<Counter>(0, i).expect("tell");
        }
        // Wait for entity 0's last message before timing the batched run.
        let single = client.ask::<Counter>(0, 0).map(|_| start.elapsed());
        let start = Instant::now();
        client
            .tell_batch::<Counter, _>((0..n).map(|i| (1, i)))
            .expect("tell_batch");
        (single.expect("ask"), start)
    })
    .join()
    .expect("sender");
    let end = done().wait();
    engine.shutdown().expect("shutdown");
    vec![
        rate("msgs_per_s", n, single),
        rate("batched_msgs_per_s", n, end - batched),
    ]
}

fn ask_latencies(engine: &Engine, scale: Scale) -> Latencies {
    let warmup = scale.ask_warmup();
    let total = warmup + scale.ask_samples();
    let client = engine.client().expect("client");
    spawn_on(SENDER_CORE, "percore-asker", move || {
        let mut latencies = Latencies::new();
        for i in 0..total {
            let start = Instant::now();
            let state = client.ask::<Counter>(0, 1).expect("ask");
            let latency = start.elapsed();
            debug_assert_eq!(state, i + 1);
            if i >= warmup {
                latencies.record(latency);
            }
        }
        latencies
    })
    .join()
    .expect("asker")
}

fn ask(scale: Scale) -> Vec<Figure> {
    EXPECTED.store(u64::MAX, Ordering::Relaxed);
    let spinning = start(builder().cores([RECEIVER_CORE]));
    let mut figures = ask_latencies(&spinning, scale).figures();
    spinning.shutdown().expect("shutdown");
    let parking = start(
        builder()
            .cores([RECEIVER_CORE])
            .idle(IdlePolicy::Park)
            .client_spin(Duration::ZERO),
    );
    for f in ask_latencies(&parking, scale).figures() {
        let metric = match f.metric {
            "p50_ns" => "park_p50_ns",
            "p99_ns" => "park_p99_ns",
            "p999_ns" => "park_p999_ns",
            other => other,
        };
        figures.push(Figure::new(metric, f.value));
    }
    parking.shutdown().expect("shutdown");
    figures
}

fn many(scale: Scale) -> Vec<Figure> {
    let mut figures = many_from_entities(scale);
    if std::env::var_os("XX_ONLY").is_none() {
        figures.extend(many_from_clients(scale));
    }
    figures
}

/// Starts the `many` engine (both cores) and activates every key first, as
/// the peers prefill theirs.
fn many_engine() -> Engine {
    EXPECTED.store(u64::MAX, Ordering::Relaxed);
    let engine = start(builder().cores(CORES));
    let client = engine.client().expect("client");
    for key in 0..MANY_KEYS {
        client.tell::<Counter>(key, 0).expect("tell");
    }
    // A client's ring to a shard is FIFO: a reply from a few keys (both
    // shards among them) means the prefill before them was handled.
    for key in 0..64 {
        client.ask::<Counter>(key, 0).expect("ask");
    }
    engine
}

/// `many` the percore way: the two senders are entities, one on each
/// shard ([`Driver`]), so two threads on two cores do all the work, as
/// DashMap's two threads do.
fn many_from_entities(scale: Scale) -> Vec<Figure> {
    let plan = ManyPlan::new(scale);
    let total = plan.total();
    let _ = MANY_KEYS_BY_DRIVER.set(plan.keys.to_vec());
    let _ = DONE.set(Countdown::new(plan.keys.len()));
    let engine = many_engine();
    let client = engine.client().expect("client");
    let drivers: Vec<u64> = (0..CORES.len())
        .map(|s| first_key_on::<Driver>(&client, s))
        .collect();
    let probes = (0..CORES.len())
        .map(|s| first_key_on::<Counter>(&client, s))
        .collect();
    let _ = MANY_PLACES.set((drivers.clone(), probes));
    let before = engine.metrics().total().handled;
    let start = Instant::now();
    for &driver in &drivers {
        client.tell::<Driver>(driver, DriverMsg::Go).expect("go");
    }
    let end = done().wait();
    let handled = engine.shutdown().expect("shutdown").total().handled - before;
    assert!(handled >= total, "every message handled");
    vec![rate("msgs_per_s", total, end - start)]
}

/// The smallest key of kind `E` whose home is `shard`.
fn first_key_on<E: Entity>(client: &percore::Client, shard: usize) -> u64 {
    (0..)
        .find(|&k| client.shard_of::<E>(k) == Some(shard))
        .expect("every shard is some key's home")
}

/// `many` from two client threads, one pinned to each core, sharing the
/// cores with the shards.
fn many_from_clients(scale: Scale) -> Vec<Figure> {
    let plan = ManyPlan::new(scale);
    let total = plan.total();
    let engine = many_engine();
    let clients: Vec<_> = CORES
        .iter()
        .map(|_| engine.client().expect("client"))
        .collect();
    let ready = std::sync::Arc::new(std::sync::Barrier::new(CORES.len()));
    let senders: Vec<_> = plan
        .keys
        .into_iter()
        .zip(clients)
        .enumerate()
        .map(|(sender, (keys, client))| {
            let ready = ready.clone();
            spawn_on(CORES[sender], "percore-sender", move || {
                ready.wait();
                let start = Instant::now();
                for &key in &keys {
                    client.tell::<Counter>(u64::from(key), 1).expect("tell");
                }
                // The last key this sender sent to has handled everything this
                // client sent to its shard before the ask (FIFO per ring); ask
                // one key per shard to cover both.
                for &key in keys.iter().rev().take(64) {
                    client.ask::<Counter>(u64::from(key), 0).expect("ask");
                }
                (start, Instant::now())
            })
        })
        .collect();
    let (mut start, mut end) = (None::<Instant>, None::<Instant>);
    for s in senders {
        let (s0, s1) = s.join().expect("sender");
        start = Some(start.map_or(s0, |x| x.min(s0)));
        end = Some(end.map_or(s1, |x| x.max(s1)));
    }
    let handled = engine.shutdown().expect("shutdown").total().handled;
    assert!(handled >= total, "every message handled");
    vec![rate(
        "client_msgs_per_s",
        total,
        end.unwrap() - start.unwrap(),
    )]
}

fn activate(scale: Scale) -> Vec<Figure> {
    let n = scale.activate_entities();
    EXPECTED.store(u64::MAX, Ordering::Relaxed);
    let engine = start(builder().cores([RECEIVER_CORE]));
    let client = engine.client().expect("client");
    // Warm the engine's own allocations (rings, first table) before measuring.
    client.ask::<Counter>(u64::MAX, 0).expect("ask");
    let (elapsed, rss_before, rss_after) = spawn_on(SENDER_CORE, "percore-activator", move || {
        let rss_before = measure::rss_bytes();
        let start = Instant::now();
        for key in 0..n {
            client.tell::<Counter>(key, 1).expect("tell");
        }
        client.ask::<Counter>(n - 1, 0).expect("ask");
        let elapsed = start.elapsed();
        (elapsed, rss_before, measure::rss_bytes())
    })
    .join()
    .expect("activator");
    let live = engine.metrics().total().entities;
    assert!(live >= n, "{live} entities live, expected {n}");
    let figures = measure::activation(n, elapsed, rss_before, rss_after);
    engine.shutdown().expect("shutdown");
    figures
}

fn fanout(scale: Scale) -> Vec<Figure> {
    let rounds = scale.fanout_rounds();
    let deliveries = rounds * FANOUT_PLAYERS;
    EXPECTED.store(rounds, Ordering::Relaxed);
    let _ = DONE.set(Countdown::new(FANOUT_PLAYERS as usize));
    let engine = start(builder().cores(CORES));
    // The room on the sender's core, its players on the receiver's.
    let room = (0..)
        .find(|&k| engine.shard_of::<Room>(k) == Some(0))
        .expect("a key on shard 0");
    let players: Vec<u64> = (0..)
        .filter(|&k| engine.shard_of::<Player>(k) == Some(1))
        .take(FANOUT_PLAYERS as usize)
        .collect();
    // Players activate with their first round, as actors spawn with theirs.
    let client = engine.client().expect("client");
    client
        .ask::<Room>(room, RoomMsg::Join(players))
        .expect("join");
    let start = spawn_on(SENDER_CORE, "percore-driver", move || {
        let start = Instant::now();
        for round in 0..rounds {
            client
                .tell::<Room>(room, RoomMsg::Round(round))
                .expect("tell");
        }
        start
    })
    .join()
    .expect("driver");
    let end = done().wait();
    engine.shutdown().expect("shutdown");
    vec![rate("deliveries_per_s", deliveries, end - start)]
}

fn idle(scale: Scale) -> Vec<Figure> {
    let engine = start(builder());
    let client = engine.client().expect("client");
    client.ask::<Counter>(0, 1).expect("ask");
    pin(SENDER_CORE);
    let figures = measure::watch_idle(scale.idle());
    drop(client);
    engine.shutdown().expect("shutdown");
    figures
}

fn durable_ask(scale: Scale) -> Vec<Figure> {
    let warmup = scale.durable_ask_warmup();
    let total = warmup + scale.durable_ask_samples();
    let dir = ScratchDir::new("percore-durable-ask");
    let engine = start(durable_builder(dir.path(), EngineConfig::default()));
    let client = engine.client().expect("client");
    let latencies = spawn_on(SENDER_CORE, "percore-asker", move || {
        let mut latencies = Latencies::new();
        for i in 0..total {
            let start = Instant::now();
            let balance = client.ask::<Account>(0, 1).expect("durable ask");
            let latency = start.elapsed();
            debug_assert_eq!(balance, i + 1);
            if i >= warmup {
                latencies.record(latency);
            }
        }
        latencies
    })
    .join()
    .expect("asker");
    let logged = engine.shutdown().expect("shutdown").total().records_logged;
    assert_eq!(logged, total, "one record per ask");
    latencies.figures()
}

/// Logs [`Scale::durable_rounds`] changes of each of [`DURABLE_KEYS`] accounts
/// at durability `level` and returns records logged per second.
fn records_per_s(scale: Scale, level: DurabilityLevel) -> f64 {
    let dir = ScratchDir::new("percore-durable-records");
    let engine = start(durable_builder(dir.path(), EngineConfig::default()).durability(level));
    let client = engine.client().expect("client");
    // Activate every account (one record each), unmeasured.
    client
        .tell_batch::<Account, _>((0..DURABLE_KEYS).map(|key| (key, 1)))
        .expect("tell_batch");
    client.ask::<Account>(0, 0).expect("ask");
    let before = records_logged_at_least(&engine, DURABLE_KEYS);
    let rounds = scale.durable_rounds();
    let start = Instant::now();
    for round in 0..rounds {
        client
            .tell_batch::<Account, _>((0..DURABLE_KEYS).map(|key| (key, round + 2)))
            .expect("tell_batch");
    }
    // Held until every record before it is durable (the output gate).
    client.ask::<Account>(0, 0).expect("ask");
    let elapsed = start.elapsed();
    drop(client);
    let after = engine.shutdown().expect("shutdown").total().records_logged;
    let records = after - before;
    if records != DURABLE_KEYS * rounds {
        eprintln!(
            "versus: percore durable_records: {records} records logged for {} changes",
            DURABLE_KEYS * rounds
        );
    }
    rate("records_per_s", records, elapsed).value
}

fn durable_records(scale: Scale) -> Vec<Figure> {
    pin(SENDER_CORE);
    vec![
        Figure::new(
            "records_per_s",
            records_per_s(scale, DurabilityLevel::Synced),
        ),
        Figure::new(
            "buffered_records_per_s",
            records_per_s(scale, DurabilityLevel::Buffered),
        ),
    ]
}

/// The configuration of the engines of `recovery`: checkpoints out of reach,
/// so that no start rewrites the log the next one reads (a start counts the log
/// it recovered towards its next checkpoint, and would begin one at once).
fn recovery_config() -> EngineConfig {
    EngineConfig {
        checkpoint_len_bytes: u64::MAX,
        ..EngineConfig::default()
    }
}

/// Starts an engine on `dir` and returns how long `build` took and what it
/// recovered, then shuts it down. What was cached beforehand goes to stderr,
/// labelled `what`.
fn timed_recovery(dir: &Path, what: &str, keys: u64) -> (Duration, percore::RecoveryReport) {
    let files = scratch::files_under(dir).expect("list the log");
    let cached = scratch::resident_share(&files).unwrap_or(f64::NAN);
    let file_bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let builder = durable_builder(dir, recovery_config());
    let began = Instant::now();
    let engine = start(builder);
    let elapsed = began.elapsed();
    let report = engine.recovery();
    engine.shutdown().expect("shutdown");
    assert_eq!(report.entities, keys, "every profile recovered");
    eprintln!(
        "versus: percore recovery ({what}): {:.1} MB of records in {:.1} MB of segment files \
         ({:.1} MB of them in the page cache before the start), {} records, {:.1} ms",
        report.log_bytes as f64 / 1e6,
        file_bytes as f64 / 1e6,
        cached * file_bytes as f64 / 1e6,
        report.records,
        elapsed.as_secs_f64() * 1e3
    );
    (elapsed, report)
}

fn recovery(scale: Scale) -> Vec<Figure> {
    pin(SENDER_CORE);
    let keys = scale.recovery_keys();
    let rounds = scale.recovery_rounds();
    let dir = ScratchDir::new("percore-recovery");
    {
        // Buffered: quick to write, and the bytes on disk are the same.
        let config = EngineConfig {
            durability: DurabilityLevel::Buffered,
            ..recovery_config()
        };
        let engine = start(durable_builder(dir.path(), config));
        let client = engine.client().expect("client");
        for round in 1..=rounds {
            client
                .tell_batch::<Profile, _>((0..keys).map(|key| (key, round)))
                .expect("tell_batch");
        }
        client.ask::<Profile>(0, 0).expect("ask");
        drop(client);
        let logged = engine.shutdown().expect("shutdown").total().records_logged;
        assert_eq!(logged, keys * rounds, "one record per change");
    }
    for file in scratch::files_under(dir.path()).expect("list the log") {
        scratch::evict(&file).expect("evict the log from the page cache");
    }
    let (cold, cold_report) = timed_recovery(dir.path(), "cold", keys);
    let (warm, warm_report) = timed_recovery(dir.path(), "warm", keys);
    vec![
        gb_per_s("gb_per_s", warm_report.log_bytes, warm),
        gb_per_s("cold_gb_per_s", cold_report.log_bytes, cold),
        rate("records_per_s", warm_report.records, warm),
    ]
}
