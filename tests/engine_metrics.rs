//! Metrics on the real engine: after known traffic, each shard's snapshot
//! counts exactly the messages it handled, the entities it activated and the
//! messages its handlers sent — both the live snapshot (once the shards are
//! idle) and the final one `shutdown` returns.

mod common;

use std::time::Duration;

use percore::{Ctx, Engine, Entity, Metrics};

use common::{test_engine, HANG_GUARD};

/// Counts; on `Spread(n)` sends one message to each of `n` other counters.
struct Counter(u64);

enum CounterMsg {
    Add,
    Spread(u64),
    Get,
}

/// Keys that `Spread` reaches start here.
const SPREAD_BASE: u64 = 10_000;

impl Entity for Counter {
    const KIND: &'static str = "metrics.counter";
    type Msg = CounterMsg;
    type Reply = u64;

    fn activate(_key: u64) -> Self {
        Counter(0)
    }

    fn handle(&mut self, msg: CounterMsg, ctx: &mut Ctx<'_, Self>) -> u64 {
        match msg {
            CounterMsg::Add => self.0 += 1,
            CounterMsg::Spread(n) => {
                for i in 0..n {
                    ctx.tell::<Counter>(SPREAD_BASE + i, CounterMsg::Add)
                        .unwrap();
                }
            }
            CounterMsg::Get => {}
        }
        self.0
    }
}

const KEYS: u64 = 40;
const TELLS_PER_KEY: u64 = 25;
const SPREAD: u64 = 30;

/// What each shard must have counted for [`send_known_traffic`]:
/// `(handled, activations, sent)` per shard.
fn expected(engine: &Engine) -> Vec<(u64, u64, u64)> {
    let mut per_shard = vec![(0, 0, 0); engine.shard_count()];
    let home = |key| engine.shard_of::<Counter>(key).unwrap();
    for key in 0..KEYS {
        // The tells and one ask per key.
        per_shard[home(key)].0 += TELLS_PER_KEY + 1;
        per_shard[home(key)].1 += 1;
    }
    // Key 0 spreads: its handler sends SPREAD messages, each handled (and
    // activating an entity) on the target's shard.
    per_shard[home(0)].0 += 1;
    per_shard[home(0)].2 += SPREAD;
    for i in 0..SPREAD {
        per_shard[home(SPREAD_BASE + i)].0 += 1;
        per_shard[home(SPREAD_BASE + i)].1 += 1;
    }
    per_shard
}

fn send_known_traffic(engine: &Engine) {
    let client = engine.client().unwrap();
    for _ in 0..TELLS_PER_KEY {
        for key in 0..KEYS {
            client.tell::<Counter>(key, CounterMsg::Add).unwrap();
        }
    }
    client
        .tell::<Counter>(0, CounterMsg::Spread(SPREAD))
        .unwrap();
    for key in 0..KEYS {
        assert_eq!(
            client
                .ask::<Counter>(key, CounterMsg::Get)
                .map_err(percore::AskError::from),
            Ok(TELLS_PER_KEY)
        );
    }
}

fn observed(metrics: &Metrics) -> Vec<(u64, u64, u64)> {
    metrics
        .shards
        .iter()
        .map(|s| (s.handled, s.activations, s.sent))
        .collect()
}

#[test]
fn final_metrics_count_exactly_the_traffic_sent() {
    let engine = test_engine(2).register::<Counter>().build().unwrap();
    let want = expected(&engine);
    let cores = engine.cores().to_vec();
    send_known_traffic(&engine);
    let metrics = engine.shutdown().unwrap();
    assert_eq!(observed(&metrics), want);
    for (i, shard) in metrics.shards.iter().enumerate() {
        assert_eq!((shard.shard, shard.core), (i, cores[i]));
        assert_eq!(shard.panics, 0);
        assert_eq!(shard.deactivations, 0);
        assert_eq!(shard.entities, shard.activations, "every entity still live");
    }
    let total = metrics.total();
    assert_eq!(total.handled, KEYS * (TELLS_PER_KEY + 1) + 1 + SPREAD);
    assert_eq!(total.activations, KEYS + SPREAD);
    assert_eq!(total.sent, SPREAD);
}

#[test]
fn live_metrics_catch_up_with_the_traffic_once_the_shards_are_idle() {
    let engine = test_engine(2).register::<Counter>().build().unwrap();
    let want = expected(&engine);
    send_known_traffic(&engine);
    // Shards publish when they go idle; the spread may still be in flight,
    // so wait for the snapshot to match (never for a fixed time).
    let deadline = std::time::Instant::now() + HANG_GUARD;
    let mut metrics = engine.metrics();
    while observed(&metrics) != want {
        assert!(
            std::time::Instant::now() < deadline,
            "metrics never matched the traffic: {:?} != {want:?}",
            observed(&metrics)
        );
        std::thread::sleep(Duration::from_millis(1));
        metrics = engine.metrics();
    }
    // Idle shards publish nothing new: the snapshot stays put.
    assert_eq!(observed(&engine.metrics()), want);
    assert!(metrics.total().busy_ns > 0);
}
