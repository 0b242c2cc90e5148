//! Asks on the real engine (contract §5): every ask gets exactly its own
//! reply — from many threads at once, from async code with several asks in
//! flight, and from entity to entity, where the reply comes back to the
//! asker as a message (a continuation) on the same shard or across shards,
//! including the error that replaces a reply when the target panics.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use futures_lite::future::block_on;
use percore::{AskError, Ctx, Engine, Entity};

use common::{guarded, keys_on_shard, recv, test_engine};

/// Answers every question with who it is and what it was asked.
struct Echo {
    asked: u64,
}

enum EchoMsg {
    /// Reply with `(key, id, how many asks this entity handled so far)`.
    Ask(u64),
    /// Block the shard until `release` is dropped or sent to; say so on
    /// `started` first.
    Block {
        started: mpsc::Sender<()>,
        release: mpsc::Receiver<()>,
    },
    /// Panic.
    Panic,
}

impl Entity for Echo {
    const KIND: &'static str = "ask.echo";
    type Msg = EchoMsg;
    type Reply = (u64, u64, u64);

    fn activate(_key: u64) -> Self {
        Echo { asked: 0 }
    }

    fn handle(&mut self, msg: EchoMsg, ctx: &mut Ctx<'_, Self>) -> (u64, u64, u64) {
        match msg {
            EchoMsg::Ask(id) => {
                self.asked += 1;
                (ctx.key(), id, self.asked)
            }
            EchoMsg::Block { started, release } => {
                started.send(()).unwrap();
                let _ = release.recv();
                (ctx.key(), u64::MAX, self.asked)
            }
            EchoMsg::Panic => panic!("echo {} was told to panic", ctx.key()),
        }
    }
}

fn echo_engine(shards: usize) -> Engine {
    test_engine(shards)
        .register::<Echo>()
        .register::<Asker>()
        .build()
        .expect("engine starts")
}

#[test]
fn asks_from_many_threads_each_get_their_own_reply() {
    const THREADS: u64 = 4;
    const ASKS: u64 = 2_000;
    const KEYS: u64 = 16;
    let engine = echo_engine(2);
    let total = guarded("asks from many threads", move || {
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let client = engine.client().unwrap();
                scope.spawn(move || {
                    for i in 0..ASKS {
                        let id = thread << 32 | i;
                        let key = (i * 7 + thread) % KEYS;
                        let (k, echoed, _) = client.ask::<Echo>(key, EchoMsg::Ask(id)).unwrap();
                        assert_eq!(
                            (k, echoed),
                            (key, id),
                            "thread {thread} got another's reply"
                        );
                    }
                });
            }
        });
        // Every ask was handled exactly once: the per-entity counts add up.
        let client = engine.client().unwrap();
        (0..KEYS)
            .map(|key| client.ask::<Echo>(key, EchoMsg::Ask(0)).unwrap().2 - 1)
            .sum::<u64>()
    });
    assert_eq!(total, THREADS * ASKS);
}

#[test]
fn async_asks_in_flight_together_resolve_to_their_own_replies() {
    let engine = echo_engine(2);
    let client = engine.client().unwrap();
    // Every request is sent when `ask_async` is called, so all 64 are in
    // flight before the first is awaited; await them in reverse to make the
    // client stash replies that arrive for other asks.
    let futures: Vec<_> = (0..64u64)
        .map(|id| (id, client.ask_async::<Echo>(id % 5, EchoMsg::Ask(id))))
        .collect();
    block_on(async {
        for (id, future) in futures.into_iter().rev() {
            let (key, echoed, _) = future.await.unwrap();
            assert_eq!((key, echoed), (id % 5, id));
        }
    });
}

/// More asks in flight than the reply ring holds: the shard must keep the
/// extra replies and deliver them once the client makes room.
fn async_asks_in_flight_beyond_the_ring_capacity(asks: u64) {
    let engine = test_engine(1)
        .ring_capacity(2)
        .register::<Echo>()
        .build()
        .unwrap();
    let replies = guarded("awaiting async asks", move || {
        let client = engine.client().unwrap();
        let futures: Vec<_> = (0..asks)
            .map(|id| (id, client.ask_async::<Echo>(id % 3, EchoMsg::Ask(id))))
            .collect();
        block_on(async {
            let mut replies = Vec::new();
            for (id, future) in futures {
                replies.push((id, future.await));
            }
            replies
        })
    });
    assert_eq!(replies.len() as u64, asks);
    for (id, reply) in replies {
        let (key, echoed, _) = reply.unwrap();
        assert_eq!((key, echoed), (id % 3, id));
    }
}

#[test]
fn five_async_asks_through_two_slot_rings_all_resolve() {
    async_asks_in_flight_beyond_the_ring_capacity(5);
}

#[test]
fn async_asks_far_beyond_the_ring_capacity_all_resolve() {
    async_asks_in_flight_beyond_the_ring_capacity(500);
}

#[test]
fn dropped_async_ask_does_not_disturb_later_replies() {
    let engine = echo_engine(1);
    let client = engine.client().unwrap();
    let abandoned = client.ask_async::<Echo>(1, EchoMsg::Ask(111));
    drop(abandoned);
    // The abandoned ask is still handled (it was sent), but its reply must
    // not be handed to anyone else.
    for id in 0..10 {
        let (_, echoed, count) = client.ask::<Echo>(1, EchoMsg::Ask(id)).unwrap();
        assert_eq!(echoed, id);
        assert_eq!(count, id + 2, "the abandoned ask was handled once, first");
    }
}

#[test]
fn blocking_ask_after_abandoned_asks_filled_the_reply_ring_gets_its_reply() {
    let engine = test_engine(1)
        .ring_capacity(2)
        .register::<Echo>()
        .build()
        .unwrap();
    let reply = guarded("a blocking ask", move || {
        let client = engine.client().unwrap();
        // Three asks whose askers stop waiting: their replies still come, and
        // fill the two-slot reply ring, but nobody is owed them.
        for id in 0..3 {
            drop(client.ask_async::<Echo>(1, EchoMsg::Ask(id)));
        }
        client
            .ask::<Echo>(1, EchoMsg::Ask(3))
            .map_err(AskError::from)
    });
    assert_eq!(reply, Ok((1, 3, 4)));
}

#[test]
fn timed_out_ask_leaves_its_late_reply_to_no_one() {
    let engine = echo_engine(1);
    let client = engine.client().unwrap();
    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    client
        .tell::<Echo>(
            1,
            EchoMsg::Block {
                started: started_tx,
                release: release_rx,
            },
        )
        .unwrap();
    recv(&started, "blocking handler start");
    // The shard is stuck in a handler we control: no reply can come.
    let timed_out = client
        .ask_timeout::<Echo>(2, EchoMsg::Ask(7), Duration::from_millis(20))
        .map_err(AskError::from);
    assert_eq!(timed_out, Err(AskError::Timeout));
    release.send(()).unwrap();
    // The late reply to id 7 arrives first on the same ring and is discarded.
    assert_eq!(client.ask::<Echo>(2, EchoMsg::Ask(8)).unwrap(), (2, 8, 2));
}

#[test]
fn asking_a_panicking_handler_returns_panicked() {
    let engine = echo_engine(2);
    let client = engine.client().unwrap();
    assert_eq!(
        client
            .ask::<Echo>(3, EchoMsg::Panic)
            .map_err(AskError::from),
        Err(AskError::Panicked)
    );
    let future = client.ask_async::<Echo>(3, EchoMsg::Panic);
    assert_eq!(
        block_on(future).map_err(AskError::from),
        Err(AskError::Panicked)
    );
    assert_eq!(client.ask::<Echo>(3, EchoMsg::Ask(5)).unwrap(), (3, 5, 1));
}

/// Asks `Echo` entities from inside a handler; each continuation reports the
/// result it was resumed with, tagged with the asker's shard.
struct Asker {
    resumed: u64,
}

/// Where a continuation reports: (asker key, asker shard, request id, result,
/// continuations this asker had run before).
type Report = (u64, usize, u64, Result<(u64, u64, u64), AskError>, u64);

enum AskerMsg {
    Ask {
        target: u64,
        id: u64,
        panic: bool,
        report: mpsc::Sender<Report>,
    },
    Resumed {
        id: u64,
        result: Result<(u64, u64, u64), AskError>,
        report: mpsc::Sender<Report>,
    },
}

impl Entity for Asker {
    const KIND: &'static str = "ask.asker";
    type Msg = AskerMsg;
    type Reply = ();

    fn activate(_key: u64) -> Self {
        Asker { resumed: 0 }
    }

    fn handle(&mut self, msg: AskerMsg, ctx: &mut Ctx<'_, Self>) {
        match msg {
            AskerMsg::Ask {
                target,
                id,
                panic,
                report,
            } => {
                let msg = if panic {
                    EchoMsg::Panic
                } else {
                    EchoMsg::Ask(id)
                };
                ctx.ask::<Echo, _>(target, msg, move |result| AskerMsg::Resumed {
                    id,
                    result,
                    report,
                })
                .expect("room to send");
            }
            AskerMsg::Resumed { id, result, report } => {
                // Runs as this entity's own message: state is ours to touch.
                report
                    .send((ctx.key(), ctx.shard(), id, result, self.resumed))
                    .unwrap();
                self.resumed += 1;
            }
        }
    }
}

/// An `Asker` on shard 0, and `Echo` targets on shard 0 and on shard 1.
fn asker_and_targets(engine: &Engine) -> (u64, u64, u64) {
    let asker = keys_on_shard::<Asker>(engine, 0, 0, 1)[0];
    let local = keys_on_shard::<Echo>(engine, 0, 0, 1)[0];
    let remote = keys_on_shard::<Echo>(engine, 1, 0, 1)[0];
    (asker, local, remote)
}

fn entity_asks_resume_with_their_own_replies(target_shard: usize) {
    let engine = echo_engine(2);
    let (asker, local, remote) = asker_and_targets(&engine);
    let target = [local, remote][target_shard];
    assert_eq!(engine.shard_of::<Echo>(target), Some(target_shard));
    let client = engine.client().unwrap();
    let (report, reports) = mpsc::channel();
    const ASKS: u64 = 200;
    for id in 0..ASKS {
        client
            .tell::<Asker>(
                asker,
                AskerMsg::Ask {
                    target,
                    id,
                    panic: false,
                    report: report.clone(),
                },
            )
            .unwrap();
    }
    for n in 0..ASKS {
        let (key, shard, id, result, before) = recv(&reports, "continuation");
        assert_eq!((key, shard), (asker, 0), "continuation ran on the asker");
        // One asker, one target: replies come back in ask order.
        assert_eq!(id, n);
        assert_eq!(result, Ok((target, id, id + 1)));
        assert_eq!(before, n, "each continuation ran exactly once");
    }
}

#[test]
fn entity_ask_on_the_same_shard_resumes_the_asker_with_its_reply() {
    entity_asks_resume_with_their_own_replies(0);
}

#[test]
fn entity_ask_across_shards_resumes_the_asker_with_its_reply() {
    entity_asks_resume_with_their_own_replies(1);
}

#[test]
fn entity_ask_to_a_panicking_target_resumes_with_panicked() {
    let engine = echo_engine(2);
    let (asker, local, remote) = asker_and_targets(&engine);
    let client = engine.client().unwrap();
    let (report, reports) = mpsc::channel();
    for (id, target) in [(0, local), (1, remote)] {
        for (panic, id) in [(true, id * 10), (false, id * 10 + 1)] {
            client
                .tell::<Asker>(
                    asker,
                    AskerMsg::Ask {
                        target,
                        id,
                        panic,
                        report: report.clone(),
                    },
                )
                .unwrap();
        }
    }
    let mut results: Vec<_> = (0..4)
        .map(|_| {
            let (_, _, id, result, _) = recv(&reports, "continuation");
            (id, result)
        })
        .collect();
    results.sort_by_key(|r| r.0);
    assert_eq!(
        results,
        vec![
            (0, Err(AskError::Panicked)),
            // The target restarted fresh: this is its first handled ask.
            (1, Ok((local, 1, 1))),
            (10, Err(AskError::Panicked)),
            (11, Ok((remote, 11, 1))),
        ]
    );
}

#[test]
fn entity_asks_from_many_askers_to_many_targets_are_never_swapped() {
    let engine = echo_engine(2);
    let client = engine.client().unwrap();
    let (report, reports) = mpsc::channel();
    const ASKERS: u64 = 12;
    const TARGETS: u64 = 9;
    const ROUNDS: u64 = 50;
    for round in 0..ROUNDS {
        for asker in 0..ASKERS {
            let id = asker << 32 | round;
            client
                .tell::<Asker>(
                    asker,
                    AskerMsg::Ask {
                        target: (asker + round) % TARGETS,
                        id,
                        panic: false,
                        report: report.clone(),
                    },
                )
                .unwrap();
        }
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..ASKERS * ROUNDS {
        let (asker, shard, id, result, _) = recv(&reports, "continuation");
        assert_eq!(Some(shard), engine.shard_of::<Asker>(asker));
        assert_eq!(id >> 32, asker, "continuation resumed the wrong asker");
        let (target, echoed, _) = result.unwrap();
        assert_eq!(echoed, id);
        assert_eq!(target, (asker + (id & 0xffff_ffff)) % TARGETS);
        assert!(seen.insert(id), "reply {id} delivered twice");
    }
}
