//! Nothing leaks (contract §9), on the real engine: every message is handled
//! or dropped exactly once, whatever path discards it — a cancelled timer, a
//! stopped or panicked entity's pending timers, a reply for a client that
//! went away, messages still queued when the engine shuts down.
//!
//! Every payload here holds a clone of one `Arc` (a witness): once every
//! message is gone, the witness's strong count is back to one. A payload
//! that is discarded without its destructor keeps the count up for good.
//! Payloads of both shapes travel: one small enough to sit inside the
//! envelope (a pointer) and one that is boxed.
//!
//! Began as reproductions of defects: `Envelope` had no destructor, so every
//! discarded message leaked what it owned (100 000 `after(1 h, 4 KiB Vec)` +
//! `cancel` grew the process by 392 MiB, never returned), and a stopped
//! entity's timers lived on until shutdown.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures_lite::future::block_on;
use percore::{Ctx, Entity};

use common::{guarded, keys_on_shard, test_engine};

/// Keys per path and shard.
const KEYS: usize = 300;

/// Far beyond any test: a timer set with it never fires here.
const HOUR: Duration = Duration::from_secs(3600);

#[derive(Clone)]
enum KeepMsg {
    /// Sets an `after` and an `every` timer carrying the witness (one inline,
    /// one boxed); cancels both if `cancel`.
    Arm {
        witness: Arc<()>,
        cancel: bool,
    },
    /// A timer's message; never handled here.
    Inline(Arc<()>),
    /// The padding only makes the payload too big to travel inline.
    Boxed(Arc<()>, #[allow(dead_code)] [u64; 8]),
    /// Echoes the witness back in the reply.
    Echo(Arc<()>),
    Stop,
    Panic,
    Sync,
}

/// Sets timers on request; stops or panics on request.
struct Keeper;

impl Entity for Keeper {
    const KIND: &'static str = "engine_drops.keeper";
    type Msg = KeepMsg;
    type Reply = Option<Arc<()>>;

    fn activate(_key: u64) -> Self {
        Keeper
    }

    fn handle(&mut self, msg: KeepMsg, ctx: &mut Ctx<'_, Self>) -> Option<Arc<()>> {
        match msg {
            KeepMsg::Arm { witness, cancel } => {
                let once = ctx.after(HOUR, KeepMsg::Inline(witness.clone()));
                let every = ctx.every(HOUR, KeepMsg::Boxed(witness, [7; 8]));
                if cancel {
                    assert!(ctx.cancel(once) && ctx.cancel(every));
                }
                None
            }
            KeepMsg::Inline(w) | KeepMsg::Boxed(w, _) => {
                panic!("a one-hour timer fired ({} clones)", Arc::strong_count(&w))
            }
            KeepMsg::Echo(witness) => Some(witness),
            KeepMsg::Stop => {
                ctx.stop();
                None
            }
            KeepMsg::Panic => panic!("told to panic"),
            KeepMsg::Sync => None,
        }
    }
}

fn quiet_expected_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.to_string().contains("told to panic") {
            default_hook(info);
        }
    }));
}

fn witness_clones(witness: &Arc<()>) -> usize {
    Arc::strong_count(witness) - 1
}

#[test]
fn cancelled_stopped_and_panicked_timers_drop_their_messages() {
    guarded("timers discarded three ways", || {
        quiet_expected_panics();
        let engine = test_engine(2).register::<Keeper>().build().unwrap();
        let client = engine.client().unwrap();
        let witness = Arc::new(());
        let mut keys = Vec::new();
        for shard in 0..2 {
            keys.extend(keys_on_shard::<Keeper>(&engine, shard, 0, 3 * KEYS));
        }
        for (i, &key) in keys.iter().enumerate() {
            let arm = |cancel| KeepMsg::Arm {
                witness: witness.clone(),
                cancel,
            };
            match i % 3 {
                0 => client.tell::<Keeper>(key, arm(true)).unwrap(),
                1 => {
                    client.tell::<Keeper>(key, arm(false)).unwrap();
                    client.tell::<Keeper>(key, KeepMsg::Stop).unwrap();
                }
                _ => {
                    client.tell::<Keeper>(key, arm(false)).unwrap();
                    client.tell::<Keeper>(key, KeepMsg::Panic).unwrap();
                }
            }
        }
        for &key in &keys {
            client.ask::<Keeper>(key, KeepMsg::Sync).unwrap();
        }
        assert_eq!(
            witness_clones(&witness),
            0,
            "timer messages outlived their cancel, stop or panic"
        );
        let metrics = engine.shutdown().unwrap();
        assert_eq!(metrics.total().timers_fired, 0);
    });
}

#[test]
fn pending_timers_are_dropped_at_shutdown() {
    guarded("timers pending at shutdown", || {
        let engine = test_engine(2).register::<Keeper>().build().unwrap();
        let client = engine.client().unwrap();
        let witness = Arc::new(());
        for key in 0..KEYS as u64 {
            let arm = KeepMsg::Arm {
                witness: witness.clone(),
                cancel: false,
            };
            client.ask::<Keeper>(key, arm).unwrap();
        }
        assert_eq!(
            witness_clones(&witness),
            2 * KEYS,
            "two live timers per key"
        );
        drop(client);
        engine.shutdown().unwrap();
        assert_eq!(
            witness_clones(&witness),
            0,
            "shutdown leaked timer messages"
        );
    });
}

#[test]
fn replies_for_a_client_that_went_away_are_dropped() {
    guarded("replies nobody reads", || {
        let engine = test_engine(2).register::<Keeper>().build().unwrap();
        let witness = Arc::new(());
        {
            let gone = engine.client().unwrap();
            let asks: Vec<_> = (0..KEYS as u64)
                .map(|key| gone.ask_async::<Keeper>(key, KeepMsg::Echo(witness.clone())))
                .collect();
            // Some replies are read, the rest abandoned, then the client goes.
            for ask in asks.into_iter().take(KEYS / 3) {
                assert!(block_on(ask).unwrap().is_some());
            }
            // Asks sent without a future to read them: left for the shard to
            // answer after the client is gone.
            for key in 0..KEYS as u64 {
                std::mem::forget(gone.ask_async::<Keeper>(key, KeepMsg::Echo(witness.clone())));
            }
        }
        let client = engine.client().unwrap();
        for key in 0..KEYS as u64 {
            client.ask::<Keeper>(key, KeepMsg::Sync).unwrap();
        }
        drop(client);
        engine.shutdown().unwrap();
        assert_eq!(
            witness_clones(&witness),
            0,
            "replies (or asks) for a client that went away leaked"
        );
    });
}

#[test]
fn a_hundred_thousand_cancelled_timers_hold_nothing() {
    guarded("100 000 timers set and cancelled", || {
        let engine = test_engine(1).register::<Keeper>().build().unwrap();
        let client = engine.client().unwrap();
        let witness = Arc::new(());
        for round in 0..(100_000 / 2 / KEYS as u64) {
            for key in 0..KEYS as u64 {
                let arm = KeepMsg::Arm {
                    witness: witness.clone(),
                    cancel: true,
                };
                client
                    .tell::<Keeper>(round * KEYS as u64 + key, arm)
                    .unwrap();
            }
        }
        client.ask::<Keeper>(0, KeepMsg::Sync).unwrap();
        assert_eq!(witness_clones(&witness), 0);
        drop(client);
        engine.shutdown().unwrap();
    });
}
