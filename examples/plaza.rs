//! The plaza: a small online world in which a crowd gathers, run twice in one
//! process — with the rebalancer off, then on — so you can see what moving hot
//! entities between cores buys.
//!
//! `Room`s hold their players; `Player`s tick at 30 Hz on a timer, wander
//! between rooms and emote. A room that gets an emote does a little work
//! (visibility, say) and echoes it to every player in the room: a broadcast.
//! The plaza district — the plaza and the streets around it — happens to hash
//! onto one shard. After a calm spell every player heads for the district, so
//! that shard carries every broadcast while the other one idles.
//!
//! For each run it prints, per shard: its load (share of the time spent
//! handling messages), and the latency of every message it handled — from
//! the moment it was sent to the moment its handler ran — at p50, p99 and
//! p99.9; then migrations and their pauses.
//!
//! ```sh
//! cargo run --release --example plaza -- [--players N] [--seconds S] [--emote-percent P] [--work N] [--learn-routes]
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use percore::{Ctx, Engine, Entity, RebalanceConfig};

/// Rooms in the world; the first `DISTRICT` rooms picked below form the plaza
/// district.
const ROOMS: u64 = 48;
const DISTRICT: usize = 8;
const TICK: Duration = Duration::from_millis(33);

/// Set once the crowd heads for the plaza.
static CROWD: AtomicBool = AtomicBool::new(false);
/// The plaza district's room keys.
static DISTRICT_ROOMS: OnceLock<Vec<u64>> = OnceLock::new();
/// Emotes, in hundredths of a percent of ticks.
static EMOTE_BP: OnceLock<u64> = OnceLock::new();
/// Rounds of visibility work per player in the room, per emote.
static WORK: OnceLock<u64> = OnceLock::new();
/// Message latencies by the shard that handled them.
static LATENCY: OnceLock<Vec<Mutex<Histogram<u64>>>> = OnceLock::new();
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn now_ns() -> u64 {
    EPOCH.get().expect("set in main").elapsed().as_nanos() as u64
}

fn record(shard: usize, sent_ns: u64) {
    let latency = now_ns().saturating_sub(sent_ns).max(1);
    if let Some(h) = LATENCY.get().and_then(|l| l.get(shard)) {
        h.lock().unwrap().saturating_record(latency);
    }
}

/// A room and who is in it.
#[derive(Default)]
struct Room {
    players: Vec<u64>,
    work: u64,
}

enum RoomMsg {
    Join { player: u64, sent_ns: u64 },
    Leave { player: u64, sent_ns: u64 },
    Emote { sent_ns: u64 },
}

impl Entity for Room {
    const KIND: &'static str = "plaza.room";
    type Msg = RoomMsg;
    type Reply = ();

    fn activate(_key: u64) -> Self {
        Room::default()
    }

    fn handle(&mut self, msg: RoomMsg, ctx: &mut Ctx<'_, Self>) {
        match msg {
            RoomMsg::Join { player, sent_ns } => {
                record(ctx.shard(), sent_ns);
                self.players.push(player);
            }
            RoomMsg::Leave { player, sent_ns } => {
                record(ctx.shard(), sent_ns);
                self.players.retain(|&p| p != player);
            }
            RoomMsg::Emote { sent_ns } => {
                record(ctx.shard(), sent_ns);
                // Who sees whom: a little work per player in the room.
                let mut x = self.work;
                let rounds = *WORK.get().expect("set in main");
                for &p in &self.players {
                    for _ in 0..rounds {
                        x = (x ^ p).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(5);
                    }
                }
                self.work = std::hint::black_box(x);
                let echo = now_ns();
                for &p in &self.players {
                    let _ = ctx.tell::<Player>(p, PlayerMsg::Echo { sent_ns: echo });
                }
            }
        }
    }
}

/// A player: in a room, ticking at 30 Hz.
struct Player {
    room: u64,
    rng: u64,
    started: bool,
}

#[derive(Clone)]
enum PlayerMsg {
    Start,
    Tick,
    Echo { sent_ns: u64 },
}

impl Entity for Player {
    const KIND: &'static str = "plaza.player";
    type Msg = PlayerMsg;
    type Reply = ();

    fn activate(key: u64) -> Self {
        Player {
            room: u64::MAX,
            rng: key.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            started: false,
        }
    }

    fn handle(&mut self, msg: PlayerMsg, ctx: &mut Ctx<'_, Self>) {
        match msg {
            PlayerMsg::Start if !self.started => {
                self.started = true;
                // Spread the first ticks over one period.
                let offset = Duration::from_nanos(self.next() % TICK.as_nanos() as u64);
                ctx.after(offset, PlayerMsg::Tick);
                let room = self.next() % ROOMS;
                self.go(room, ctx);
            }
            PlayerMsg::Start => {}
            PlayerMsg::Tick => {
                ctx.after(TICK, PlayerMsg::Tick);
                let district = DISTRICT_ROOMS.get().expect("set in main");
                let r = self.next();
                if CROWD.load(Ordering::Relaxed) {
                    if !district.contains(&self.room) {
                        self.go(district[(r % district.len() as u64) as usize], ctx);
                    } else if r % 100 < 3 {
                        // Milling about inside the district.
                        self.go(district[((r >> 8) % district.len() as u64) as usize], ctx);
                    }
                } else if r % 100 < 3 {
                    self.go((r >> 8) % ROOMS, ctx);
                }
                if (r >> 20) % 10_000 < *EMOTE_BP.get().expect("set in main") {
                    let _ = ctx.tell::<Room>(self.room, RoomMsg::Emote { sent_ns: now_ns() });
                }
            }
            PlayerMsg::Echo { sent_ns } => record(ctx.shard(), sent_ns),
        }
    }
}

impl Player {
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn go(&mut self, room: u64, ctx: &mut Ctx<'_, Self>) {
        let (player, sent_ns) = (ctx.key(), now_ns());
        if self.room != u64::MAX {
            let _ = ctx.tell::<Room>(self.room, RoomMsg::Leave { player, sent_ns });
        }
        self.room = room;
        let _ = ctx.tell::<Room>(room, RoomMsg::Join { player, sent_ns });
    }
}

struct Options {
    players: u64,
    seconds: u64,
    emote_percent: f64,
    work: u64,
    /// Shards learn moved rooms' shards (`RebalanceConfig::learn_routes`).
    learn_routes: bool,
}

fn options() -> Options {
    let mut o = Options {
        players: 1_000,
        seconds: 6,
        emote_percent: 80.0,
        work: 64,
        learn_routes: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--players" => o.players = value().parse().unwrap_or_else(|_| usage("--players N")),
            "--seconds" => o.seconds = value().parse().unwrap_or_else(|_| usage("--seconds S")),
            "--emote-percent" => {
                o.emote_percent = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--emote-percent P"))
            }
            "--work" => o.work = value().parse().unwrap_or_else(|_| usage("--work N")),
            "--learn-routes" => o.learn_routes = true,
            _ => usage(&format!("unknown option {a}")),
        }
    }
    if o.seconds < 3 {
        usage("--seconds must be at least 3");
    }
    o
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "plaza: {problem}\nusage: plaza [--players N] [--seconds S (>= 3)] [--emote-percent P] [--work N] [--learn-routes]"
    );
    std::process::exit(2);
}

/// What one run measured.
struct RunReport {
    per_shard: Vec<(f64, u64, u64, u64, u64)>,
    migrations: u64,
    /// Messages homes forwarded to moved entities, and shards' sends that
    /// reached a moved entity straight from their route cache or not.
    rerouted: u64,
    route_hits: u64,
    route_misses: u64,
    pauses: percore::PauseStats,
}

fn run(o: &Options, rebalance: bool) -> RunReport {
    let engine = Engine::builder()
        .oversubscribe(true)
        .register::<Room>()
        .register::<Player>()
        .rebalance(RebalanceConfig {
            enabled: rebalance,
            learn_routes: o.learn_routes,
            ..RebalanceConfig::default()
        })
        .build()
        .expect("the engine starts");
    let shards = engine.shard_count();
    LATENCY.get_or_init(|| {
        (0..64)
            .map(|_| Mutex::new(Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()))
            .collect()
    });
    DISTRICT_ROOMS.get_or_init(|| {
        (0..ROOMS)
            .filter(|&r| engine.shard_of::<Room>(r) == Some(0))
            .take(DISTRICT)
            .collect()
    });
    CROWD.store(false, Ordering::Relaxed);
    let client = engine.client().expect("a client");
    let batch: Vec<(u64, PlayerMsg)> = (0..o.players).map(|p| (p, PlayerMsg::Start)).collect();
    client
        .tell_batch::<Player, _>(batch)
        .expect("players start");
    // A calm spell, then the crowd gathers; measure once it has.
    std::thread::sleep(Duration::from_secs(1));
    CROWD.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    for h in LATENCY.get().unwrap() {
        h.lock().unwrap().reset();
    }
    let before = engine.metrics();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(o.seconds - 2));
    let after = engine.metrics();
    let elapsed = started.elapsed().as_nanos() as f64;
    let per_shard = (0..shards)
        .map(|s| {
            let busy = (after.shards[s].busy_ns - before.shards[s].busy_ns) as f64 / elapsed;
            let h = LATENCY.get().unwrap()[s].lock().unwrap();
            (
                busy,
                h.len(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
            )
        })
        .collect();
    let pauses = engine.migration_pauses();
    drop(client);
    let metrics = engine.shutdown().expect("clean shutdown");
    RunReport {
        per_shard,
        migrations: metrics.total().migrations_out,
        rerouted: metrics.total().rerouted,
        route_hits: metrics.total().route_hits,
        route_misses: metrics.total().route_misses,
        pauses,
    }
}

fn print(name: &str, r: &RunReport) {
    println!("{name}:");
    for (s, &(load, n, p50, p99, p999)) in r.per_shard.iter().enumerate() {
        println!(
            "  shard {s}: load {:5.1} %   {n:>9} messages   latency p50 {:>8.1} µs  p99 {:>8.1} µs  p99.9 {:>8.1} µs",
            load * 100.0,
            p50 as f64 / 1e3,
            p99 as f64 / 1e3,
            p999 as f64 / 1e3
        );
    }
    println!(
        "  migrations {}   pause p50 {:.1} µs  p99 {:.1} µs  max {:.1} µs",
        r.migrations,
        r.pauses.p50_ns as f64 / 1e3,
        r.pauses.p99_ns as f64 / 1e3,
        r.pauses.max_ns as f64 / 1e3
    );
    println!(
        "  routing: {} rerouted by a home, route cache {} hits / {} misses",
        r.rerouted, r.route_hits, r.route_misses
    );
}

fn worst_p99(r: &RunReport) -> u64 {
    r.per_shard.iter().map(|s| s.3).max().unwrap_or(0)
}

fn main() {
    let o = options();
    EPOCH.get_or_init(Instant::now);
    EMOTE_BP.get_or_init(|| (o.emote_percent * 100.0) as u64);
    WORK.get_or_init(|| o.work);
    println!(
        "plaza: {} players in {ROOMS} rooms, 30 Hz ticks, {}% emote per tick; the {DISTRICT}-room \
         plaza district lives on shard 0; the crowd gathers after 1 s; measured for {} s",
        o.players,
        o.emote_percent,
        o.seconds - 2
    );
    let off = run(&o, false);
    print("rebalancing off", &off);
    let on = run(&o, true);
    print("rebalancing on", &on);
    println!(
        "worst shard's p99: off {:.1} µs, on {:.1} µs",
        worst_p99(&off) as f64 / 1e3,
        worst_p99(&on) as f64 / 1e3
    );
}
