//! Panic isolation on the real engine (contract §8): a handler that panics on
//! one message does not take its shard down. The asker gets
//! `AskError::Panicked`, the entity is dropped and comes back fresh on its
//! next message, every other entity on the shard keeps its state and keeps
//! being served, later messages from the same sender are still handled in
//! order, and the shard's metrics count the panic.
//!
//! The panics below print the default hook's message; that is expected.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use percore::{AskError, Ctx, Entity};

use common::{guarded, keys_on_shard, test_engine};

/// A key whose activation always panics.
const UNBORN: u64 = 13_013;

/// Counts what it is sent; panics when told to. Counts its own drops in a
/// shared counter it is handed, so the test can see the old state go.
struct Fragile {
    total: u64,
    drops: Option<Arc<AtomicU64>>,
}

enum FragileMsg {
    Add(u64),
    /// Remember where to count this entity's drop.
    Watch(Arc<AtomicU64>),
    Panic,
}

impl Drop for Fragile {
    fn drop(&mut self) {
        if let Some(drops) = &self.drops {
            drops.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Entity for Fragile {
    const KIND: &'static str = "panic.fragile";
    type Msg = FragileMsg;
    type Reply = u64;

    fn activate(key: u64) -> Self {
        assert_ne!(key, UNBORN, "activation of key {key} panics");
        Fragile {
            total: 0,
            drops: None,
        }
    }

    fn handle(&mut self, msg: FragileMsg, ctx: &mut Ctx<'_, Self>) -> u64 {
        match msg {
            FragileMsg::Add(n) => self.total += n,
            FragileMsg::Watch(drops) => self.drops = Some(drops),
            FragileMsg::Panic => {
                // Half-done work before the panic must not survive it.
                self.total += 1_000_000;
                panic!("entity {} was told to panic", ctx.key());
            }
        }
        self.total
    }
}

#[test]
fn panicking_handler_fails_its_asker_and_its_entity_comes_back_fresh() {
    let engine = test_engine(2).register::<Fragile>().build().unwrap();
    // Two entities on the same shard: the victim and a bystander.
    let keys = keys_on_shard::<Fragile>(&engine, 0, 0, 2);
    let (victim, bystander) = (keys[0], keys[1]);
    let client = engine.client().unwrap();
    let drops = Arc::new(AtomicU64::new(0));

    client
        .tell::<Fragile>(victim, FragileMsg::Watch(drops.clone()))
        .unwrap();
    assert_eq!(
        client
            .ask::<Fragile>(victim, FragileMsg::Add(5))
            .map_err(AskError::from),
        Ok(5)
    );
    assert_eq!(
        client
            .ask::<Fragile>(bystander, FragileMsg::Add(7))
            .map_err(AskError::from),
        Ok(7)
    );

    assert_eq!(
        client
            .ask::<Fragile>(victim, FragileMsg::Panic)
            .map_err(AskError::from),
        Err(AskError::Panicked)
    );
    assert_eq!(drops.load(Ordering::SeqCst), 1, "the old state was dropped");

    // Fresh: neither the 5 nor the half-done panic survived.
    assert_eq!(
        client
            .ask::<Fragile>(victim, FragileMsg::Add(1))
            .map_err(AskError::from),
        Ok(1)
    );
    // The bystander on the same shard kept its state and is still served.
    assert_eq!(
        client
            .ask::<Fragile>(bystander, FragileMsg::Add(1))
            .map_err(AskError::from),
        Ok(8)
    );

    drop(client);
    let metrics = engine.shutdown().unwrap();
    let shard0 = metrics.shards[0];
    assert_eq!(shard0.panics, 1);
    // The victim twice (first message, after the panic), the bystander once.
    assert_eq!(shard0.activations, 3);
    assert_eq!(shard0.deactivations, 1);
    assert_eq!(metrics.total().panics, 1);
}

#[test]
fn panic_on_a_told_message_leaves_the_senders_later_messages_in_order() {
    let engine = test_engine(2).register::<Fragile>().build().unwrap();
    let client = engine.client().unwrap();
    for key in 0..8 {
        client.tell::<Fragile>(key, FragileMsg::Add(3)).unwrap();
        client.tell::<Fragile>(key, FragileMsg::Panic).unwrap();
        for _ in 0..10 {
            client.tell::<Fragile>(key, FragileMsg::Add(2)).unwrap();
        }
    }
    for key in 0..8 {
        // Only what came after the panic counts, all of it.
        assert_eq!(
            client
                .ask::<Fragile>(key, FragileMsg::Add(0))
                .map_err(AskError::from),
            Ok(20)
        );
    }
    drop(client);
    let metrics = engine.shutdown().unwrap();
    assert_eq!(metrics.total().panics, 8);
    assert_eq!(metrics.total().activations, 16);
    // 8 × (add, panic, ten adds, final ask).
    assert_eq!(metrics.total().handled, 8 * 13);
}

#[test]
fn panicking_activation_fails_the_asker_and_the_shard_serves_on() {
    let engine = test_engine(1).register::<Fragile>().build().unwrap();
    let client = engine.client().unwrap();
    for round in 1..=3 {
        assert_eq!(
            client
                .ask::<Fragile>(UNBORN, FragileMsg::Add(1))
                .map_err(AskError::from),
            Err(AskError::Panicked)
        );
        assert_eq!(
            client
                .ask::<Fragile>(1, FragileMsg::Add(1))
                .map_err(AskError::from),
            Ok(round)
        );
    }
    assert_eq!(
        client
            .ask::<Fragile>(1, FragileMsg::Add(0))
            .map_err(AskError::from),
        Ok(3)
    );
    drop(client);
    let metrics = engine.shutdown().unwrap();
    assert_eq!(metrics.total().panics, 3);
    assert_eq!(metrics.total().activations, 1);
}

#[test]
fn many_threads_keep_being_served_while_one_entity_keeps_panicking() {
    let engine = test_engine(2).register::<Fragile>().build().unwrap();
    const ROUNDS: u64 = 300;
    let metrics = guarded("panics among steady traffic", move || {
        std::thread::scope(|scope| {
            let panicker = engine.client().unwrap();
            scope.spawn(move || {
                for _ in 0..ROUNDS {
                    assert_eq!(
                        panicker
                            .ask::<Fragile>(0, FragileMsg::Panic)
                            .map_err(AskError::from),
                        Err(AskError::Panicked)
                    );
                }
            });
            for key in 1..=3 {
                let client = engine.client().unwrap();
                scope.spawn(move || {
                    for round in 1..=ROUNDS {
                        assert_eq!(
                            client
                                .ask::<Fragile>(key, FragileMsg::Add(1))
                                .map_err(AskError::from),
                            Ok(round)
                        );
                    }
                });
            }
        });
        engine.shutdown().unwrap()
    });
    assert_eq!(metrics.total().panics, ROUNDS);
}
