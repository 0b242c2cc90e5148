//! Live migration on the real engine (contract §7): entities moved back and
//! forth — explicitly by a client and automatically by the rebalancer — while
//! client threads and entities hammer them, with nothing lost, duplicated or
//! reordered; timers and continuations follow a moved entity; pinned entities
//! stay; the rebalancer spreads a hot spot and then stops moving.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use percore::{Ctx, Entity, MigrateError, RebalanceConfig, TimerId};

use common::{guarded, keys_on_shard, test_engine};

/// Checks each sender's sequence numbers arrive 0, 1, 2, … and reports.
#[derive(Default)]
struct Sink {
    next: HashMap<u64, u64>,
    violations: Vec<String>,
}

enum SinkMsg {
    Seq { sender: u64, seq: u64 },
    Report,
}

#[derive(Debug, Default)]
struct SinkReport {
    next: HashMap<u64, u64>,
    violations: Vec<String>,
    shard: usize,
}

impl Entity for Sink {
    const KIND: &'static str = "migration.sink";
    type Msg = SinkMsg;
    type Reply = Option<SinkReport>;

    fn activate(_key: u64) -> Self {
        Sink::default()
    }

    fn handle(&mut self, msg: SinkMsg, ctx: &mut Ctx<'_, Self>) -> Option<SinkReport> {
        match msg {
            SinkMsg::Seq { sender, seq } => {
                let next = self.next.entry(sender).or_insert(0);
                if seq != *next {
                    self.violations.push(format!(
                        "sink {}: sender {sender} sent {seq}, expected {next}",
                        ctx.key()
                    ));
                }
                *next = seq + 1;
                None
            }
            SinkMsg::Report => Some(SinkReport {
                next: self.next.clone(),
                violations: self.violations.clone(),
                shard: ctx.shard(),
            }),
        }
    }
}

/// Sends its own numbered stream to the sinks when told, by tell or ask.
#[derive(Default)]
struct Relay {
    next: HashMap<u64, u64>,
    asked: u64,
    answered: u64,
}

enum RelayMsg {
    Send { sink: u64, ask: bool },
    Answered,
    Count,
}

/// Relays number their streams from here up (clients use their index).
const RELAY_SENDER: u64 = 1 << 32;

impl Entity for Relay {
    const KIND: &'static str = "migration.relay";
    type Msg = RelayMsg;
    /// (per-sink counts sent, asks sent, asks answered)
    type Reply = (HashMap<u64, u64>, u64, u64);

    fn activate(_key: u64) -> Self {
        Relay::default()
    }

    fn handle(&mut self, msg: RelayMsg, ctx: &mut Ctx<'_, Self>) -> Self::Reply {
        match msg {
            RelayMsg::Send { sink, ask } => {
                let seq = self.next.entry(sink).or_insert(0);
                let m = SinkMsg::Seq {
                    sender: RELAY_SENDER + ctx.key(),
                    seq: *seq,
                };
                *seq += 1;
                if ask {
                    self.asked += 1;
                    ctx.ask::<Sink, _>(sink, m, |r| {
                        assert!(r.is_ok(), "a relay's ask failed: {:?}", r.err());
                        RelayMsg::Answered
                    })
                    .unwrap_or_else(|_| panic!("relay send failed"));
                } else {
                    ctx.tell::<Sink>(sink, m)
                        .unwrap_or_else(|_| panic!("relay send failed"));
                }
            }
            RelayMsg::Answered => self.answered += 1,
            RelayMsg::Count => {}
        }
        (self.next.clone(), self.asked, self.answered)
    }
}

const SINKS: u64 = 6;
const RELAYS: u64 = 3;
const CLIENTS: u64 = 3;
const PER_CLIENT: u64 = 12_000;

/// A small xorshift generator: each thread gets its own seeded stream.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

#[test]
fn moves_under_load_lose_duplicate_and_reorder_nothing() {
    guarded("migration under load", || {
        let engine = test_engine(3)
            .register::<Sink>()
            .register::<Relay>()
            // The rebalancer moves things too, on short windows and a low bar.
            .rebalance(RebalanceConfig {
                enabled: true,
                window_ms: 5,
                min_gap_percent: 5,
                sustain_windows: 1,
                max_moves_per_window: 2,
                cooldown_windows: 2,
                // Relays learn where moved sinks went (off by default).
                learn_routes: true,
            })
            .build()
            .unwrap();
        let engine = Arc::new(engine);
        let done = Arc::new(AtomicBool::new(false));

        // The mover: explicit moves of sinks and relays, back and forth.
        let mover = {
            let engine = engine.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let client = engine.client().unwrap();
                let mut next = rng(99);
                let mut moves = 0u64;
                while !done.load(Ordering::Acquire) {
                    let shard = (next() % 3) as usize;
                    let r = if next().is_multiple_of(3) {
                        client.migrate::<Relay>(next() % RELAYS, shard)
                    } else {
                        client.migrate::<Sink>(next() % SINKS, shard)
                    };
                    r.expect("an explicit move failed");
                    moves += 1;
                }
                moves
            })
        };

        let senders: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let engine = engine.clone();
                std::thread::spawn(move || {
                    let client = engine.client().unwrap();
                    let mut next = rng(c + 1);
                    let mut seq = [0u64; SINKS as usize];
                    for i in 0..PER_CLIENT {
                        let r = next();
                        if r.is_multiple_of(10) {
                            let relay = (r >> 8) % RELAYS;
                            let sink = (r >> 16) % SINKS;
                            let ask = (r >> 24).is_multiple_of(2);
                            client
                                .tell::<Relay>(relay, RelayMsg::Send { sink, ask })
                                .unwrap_or_else(|_| panic!("tell failed"));
                            continue;
                        }
                        let sink = (r >> 8) % SINKS;
                        let msg = SinkMsg::Seq {
                            sender: c,
                            seq: seq[sink as usize],
                        };
                        seq[sink as usize] += 1;
                        if i % 7 == 0 {
                            assert!(client.ask::<Sink>(sink, msg).unwrap().is_none());
                        } else {
                            client
                                .tell::<Sink>(sink, msg)
                                .unwrap_or_else(|_| panic!("tell failed"));
                        }
                    }
                    seq
                })
            })
            .collect();
        let sent: Vec<[u64; SINKS as usize]> =
            senders.into_iter().map(|t| t.join().unwrap()).collect();
        done.store(true, Ordering::Release);
        let explicit = mover.join().unwrap();

        let client = engine.client().unwrap();
        // Relays: each stream's count, once every relay ask came back.
        let mut relay_sent: HashMap<(u64, u64), u64> = HashMap::new();
        for relay in 0..RELAYS {
            let deadline = Instant::now() + common::HANG_GUARD;
            loop {
                let (next, asked, answered) = client.ask::<Relay>(relay, RelayMsg::Count).unwrap();
                if asked == answered {
                    for (sink, n) in next {
                        relay_sent.insert((sink, RELAY_SENDER + relay), n);
                    }
                    break;
                }
                assert!(Instant::now() < deadline, "relay {relay}: asks unanswered");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let mut shards_seen = std::collections::HashSet::new();
        for sink in 0..SINKS {
            let report = client.ask::<Sink>(sink, SinkMsg::Report).unwrap().unwrap();
            assert!(report.violations.is_empty(), "{:?}", report.violations);
            shards_seen.insert(report.shard);
            for (c, seqs) in sent.iter().enumerate() {
                let got = report.next.get(&(c as u64)).copied().unwrap_or(0);
                assert_eq!(got, seqs[sink as usize], "sink {sink}: client {c}'s count");
            }
            for relay in 0..RELAYS {
                let sender = RELAY_SENDER + relay;
                let want = relay_sent.get(&(sink, sender)).copied().unwrap_or(0);
                let got = report.next.get(&sender).copied().unwrap_or(0);
                assert_eq!(got, want, "sink {sink}: relay {relay}'s count");
            }
        }
        drop(client);
        let engine = Arc::into_inner(engine).expect("every thread let go");
        let pauses = engine.migration_pauses();
        let metrics = engine.shutdown().unwrap();
        let t = metrics.total();
        assert!(explicit > 50, "only {explicit} explicit moves");
        assert_eq!(t.migrations_in, t.migrations_out);
        assert!(t.migrations_in >= explicit / 2, "{t:?}");
        assert_eq!(t.panics, 0);
        assert!(pauses.count > 0 && pauses.max_ns >= pauses.p99_ns);
        eprintln!(
            "{explicit} explicit moves answered, {} migrations, {} forwarded, {} rerouted, \
             {} held, route hits {} misses {} switches {} bounced {}; pause p50 {} ns p99 {} ns",
            t.migrations_in,
            t.forwarded,
            t.rerouted,
            t.held,
            t.route_hits,
            t.route_misses,
            t.route_switches,
            t.bounced,
            pauses.p50_ns,
            pauses.p99_ns
        );
    });
}

/// Ticks on a timer, asks a peer, and tells where it lives.
#[derive(Default)]
struct Ticker {
    ticks: u64,
    timer: Option<TimerId>,
    answers: Vec<u64>,
}

#[derive(Clone)]
enum TickerMsg {
    Start,
    Tick,
    Cancel,
    AskPeer(u64),
    Answer(u64),
    Where,
}

impl Entity for Ticker {
    const KIND: &'static str = "migration.ticker";
    type Msg = TickerMsg;
    /// (shard, ticks, answers, whether a cancel found its timer)
    type Reply = (usize, u64, Vec<u64>, bool);

    fn activate(_key: u64) -> Self {
        Ticker::default()
    }

    fn handle(&mut self, msg: TickerMsg, ctx: &mut Ctx<'_, Self>) -> Self::Reply {
        let mut cancelled = false;
        match msg {
            TickerMsg::Start => {
                self.timer = Some(ctx.every(Duration::from_millis(1), TickerMsg::Tick));
            }
            TickerMsg::Tick => self.ticks += 1,
            TickerMsg::Cancel => cancelled = self.timer.take().is_some_and(|t| ctx.cancel(t)),
            TickerMsg::AskPeer(peer) => {
                ctx.ask::<Sink, _>(peer, SinkMsg::Report, |r| {
                    TickerMsg::Answer(r.unwrap().unwrap().shard as u64)
                })
                .unwrap_or_else(|_| panic!("ask failed"));
            }
            TickerMsg::Answer(a) => self.answers.push(a),
            TickerMsg::Where => {}
        }
        (ctx.shard(), self.ticks, self.answers.clone(), cancelled)
    }
}

#[test]
fn timers_and_continuations_follow_a_moved_entity() {
    guarded("a ticker moving", || {
        let engine = test_engine(2)
            .register::<Ticker>()
            .register::<Sink>()
            .build()
            .unwrap();
        let key = keys_on_shard::<Ticker>(&engine, 0, 0, 1)[0];
        let client = engine.client().unwrap();
        client.ask::<Ticker>(key, TickerMsg::Start).unwrap();
        // An ask in flight when the asker moves: its continuation still
        // comes back to the entity, wherever it is.
        client.tell::<Ticker>(key, TickerMsg::AskPeer(5)).unwrap();
        client.migrate::<Ticker>(key, 1).unwrap();
        let (shard, ..) = client.ask::<Ticker>(key, TickerMsg::Where).unwrap();
        assert_eq!(shard, 1, "the ticker lives on shard 1 now");
        let deadline = Instant::now() + common::HANG_GUARD;
        let (before, answers) = loop {
            let (_, ticks, answers, _) = client.ask::<Ticker>(key, TickerMsg::Where).unwrap();
            if !answers.is_empty() {
                break (ticks, answers);
            }
            assert!(
                Instant::now() < deadline,
                "the continuation never came back"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(answers.len(), 1);
        // The timer keeps ticking on the new shard...
        loop {
            let (shard, ticks, ..) = client.ask::<Ticker>(key, TickerMsg::Where).unwrap();
            assert_eq!(shard, 1);
            if ticks > before + 3 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the timer did not follow the entity"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // ... and the id the entity kept still cancels it there.
        let (.., cancelled) = client.ask::<Ticker>(key, TickerMsg::Cancel).unwrap();
        assert!(cancelled, "the moved timer's id no longer named it");
        client.migrate::<Ticker>(key, 0).unwrap();
        let (shard, ticks, ..) = client.ask::<Ticker>(key, TickerMsg::Where).unwrap();
        assert_eq!(shard, 0);
        std::thread::sleep(Duration::from_millis(20));
        let (_, later, ..) = client.ask::<Ticker>(key, TickerMsg::Where).unwrap();
        assert_eq!(later, ticks, "a cancelled timer fired");
        drop(client);
        engine.shutdown().unwrap();
    });
}

/// Pins itself on request.
#[derive(Default)]
struct Anchor;

impl Entity for Anchor {
    const KIND: &'static str = "migration.anchor";
    type Msg = bool;
    type Reply = usize;

    fn activate(_key: u64) -> Self {
        Anchor
    }

    fn handle(&mut self, pin: bool, ctx: &mut Ctx<'_, Self>) -> usize {
        if pin {
            ctx.pin();
        } else {
            ctx.unpin();
        }
        ctx.shard()
    }
}

#[test]
fn pinned_entities_and_bad_requests_are_refused() {
    guarded("refused moves", || {
        let engine = test_engine(2).register::<Anchor>().build().unwrap();
        let client = engine.client().unwrap();
        let key = keys_on_shard::<Anchor>(&engine, 0, 0, 1)[0];
        assert_eq!(client.ask::<Anchor>(key, true).unwrap(), 0);
        assert_eq!(client.migrate::<Anchor>(key, 1), Err(MigrateError::Pinned));
        assert_eq!(client.ask::<Anchor>(key, false).unwrap(), 0);
        client.migrate::<Anchor>(key, 1).unwrap();
        assert_eq!(client.ask::<Anchor>(key, false).unwrap(), 1);
        // Already there: nothing to do.
        client.migrate::<Anchor>(key, 1).unwrap();
        assert_eq!(
            client.migrate::<Anchor>(key, 2),
            Err(MigrateError::NoSuchShard {
                shard: 2,
                shard_count: 2
            })
        );
        assert_eq!(client.migrate::<Sink>(0, 0), Err(MigrateError::UnknownKind));
        drop(client);
        let metrics = engine.shutdown().unwrap();
        assert_eq!(metrics.total().moves_refused, 1);
    });
}

/// Burns a little CPU per message, so a shard full of them is busy.
#[derive(Default)]
struct Hot(u64);

impl Entity for Hot {
    const KIND: &'static str = "migration.hot";
    type Msg = u64;
    type Reply = usize;

    fn activate(_key: u64) -> Self {
        Hot(0)
    }

    fn handle(&mut self, n: u64, ctx: &mut Ctx<'_, Self>) -> usize {
        let mut x = self.0 ^ n;
        for _ in 0..400 {
            x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(7);
        }
        self.0 = std::hint::black_box(x);
        ctx.shard()
    }
}

#[test]
fn rebalancing_spreads_a_hot_spot_and_then_stays_put() {
    guarded("a hot spot", || {
        const HOT: usize = 8;
        let engine = test_engine(2)
            .register::<Hot>()
            .rebalance(RebalanceConfig {
                enabled: true,
                window_ms: 20,
                min_gap_percent: 25,
                sustain_windows: 2,
                max_moves_per_window: 4,
                cooldown_windows: 50,
                learn_routes: false,
            })
            .build()
            .unwrap();
        // Every hot entity lives on shard 0; shard 1 has nothing to do.
        let keys = keys_on_shard::<Hot>(&engine, 0, 0, HOT);
        let client = engine.client().unwrap();
        let where_now = |client: &percore::Client| -> Vec<usize> {
            keys.iter()
                .map(|&k| client.ask::<Hot>(k, 0).unwrap())
                .collect()
        };
        assert!(where_now(&client).iter().all(|&s| s == 0));
        let start = Instant::now();
        let mut i = 0u64;
        let mut spread_at = None;
        // Until it has spread and then run 2 s more (the machine is small and
        // shared with other tests: loads may take a while to show the gap).
        while spread_at.is_none_or(|at: Duration| start.elapsed() < at + Duration::from_secs(2))
            && start.elapsed() < Duration::from_secs(60)
        {
            for &k in &keys {
                client.tell::<Hot>(k, i).unwrap();
            }
            i += 1;
            if i.is_multiple_of(2_000) && spread_at.is_none() {
                let shards = where_now(&client);
                if shards.contains(&1) && shards.contains(&0) {
                    spread_at = Some(start.elapsed());
                }
            }
        }
        let spread_at = spread_at.expect("the rebalancer never moved a hot entity off shard 0");
        let shards = where_now(&client);
        let on_1 = shards.iter().filter(|&&s| s == 1).count();
        drop(client);
        let metrics = engine.shutdown().unwrap();
        let moves = metrics.total().migrations_out;
        eprintln!(
            "spread after {spread_at:?}; {on_1} of {HOT} hot entities on shard 1; {moves} moves; \
             loads at the end {:?}",
            metrics
                .shards
                .iter()
                .map(|s| s.load_permille)
                .collect::<Vec<_>>()
        );
        assert!((1..HOT).contains(&on_1), "not spread: {shards:?}");
        // Hysteresis: once balanced, nothing bounces back and forth. Loads
        // are measured on a small shared machine, so a stray move or two
        // may happen; a policy that bounces makes dozens in these seconds. (The
        // exact rule is checked deterministically in shards/tests/rebalance.rs.)
        assert!(
            moves <= 2 * HOT as u64,
            "{moves} moves for {HOT} hot entities: bouncing"
        );
    });
}
