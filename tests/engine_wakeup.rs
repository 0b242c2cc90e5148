//! Wakeups on the real engine: a shard that parks when idle (Seastar's
//! protocol: `sleeping` flag, full barrier, re-check, then a doorbell the
//! executor awaits) always wakes for new work. Each ask below finds its shard
//! parked (clients do not spin, shards park at once), so every ask exercises
//! one park and one wakeup; a single lost wakeup leaves an ask unanswered.

mod common;

use std::time::Duration;

use common::{test_engine, Echo, HANG_GUARD};

#[test]
fn parked_shards_wake_for_every_ask() {
    const ASKS: u64 = 300_000;
    let engine = test_engine(4)
        .client_spin(Duration::ZERO)
        .register::<Echo>()
        .build()
        .unwrap();
    let client = engine.client().unwrap();
    for i in 0..ASKS {
        // The timeout only turns a lost wakeup into a failure instead of a
        // hang; a healthy engine answers in microseconds.
        let reply = client.ask_timeout::<Echo>(i % 7, i, HANG_GUARD);
        if reply != Ok(i) {
            // Dropping the engine would wait for the sleeping shard forever:
            // leak it so the failure is reported.
            std::mem::forget(client);
            std::mem::forget(engine);
            panic!("ask {i} of {ASKS}: got {reply:?}; its shard never woke");
        }
    }
}
