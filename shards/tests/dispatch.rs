//! The shard's rules, checked in one thread with no runtime: activation,
//! exclusivity of state, replies to clients, continuations across shards,
//! panic isolation, stopping, the overflow cap, and timers on the shard clock.

use std::sync::Arc;
use std::time::Duration;

use percore_shards::testing::{open_reply, Config, World};
use percore_shards::{AskError, Ctx, Entity, Kinds, SendError};

/// Counts what it is sent; panics on `Boom`; stops on `Stop`; asks a peer on
/// `AskPeer` and records the answer.
#[derive(Default)]
struct Acc {
    total: u64,
    answers: Vec<Result<u64, AskError>>,
}

#[derive(Clone)]
enum AccMsg {
    Add(u64),
    Boom,
    Stop,
    AskPeer { peer: u64, boom: bool },
    Answer(Result<u64, AskError>),
    Spray { to: u64, n: u64 },
    Get,
}

impl Entity for Acc {
    const KIND: &'static str = "acc";
    type Msg = AccMsg;
    type Reply = (u64, usize);

    fn activate(_key: u64) -> Self {
        Acc::default()
    }

    fn handle(&mut self, msg: AccMsg, ctx: &mut Ctx<'_, Self>) -> (u64, usize) {
        match msg {
            AccMsg::Add(n) => self.total += n,
            AccMsg::Boom => panic!("boom (expected by the test)"),
            AccMsg::Stop => ctx.stop(),
            AccMsg::AskPeer { peer, boom } => {
                let msg = if boom { AccMsg::Boom } else { AccMsg::Get };
                ctx.ask::<Acc, _>(peer, msg, |r| AccMsg::Answer(r.map(|(t, _)| t)))
                    .unwrap_or_else(|_| panic!("send failed"));
            }
            AccMsg::Answer(r) => {
                // Fold answers into the total as base-100 digits, so their
                // order shows: a value v is v, an error is 99.
                self.total = self.total * 100 + r.unwrap_or(99);
                self.answers.push(r);
            }
            AccMsg::Spray { to, n } => {
                for i in 0..n {
                    if let Err(e) = ctx.tell::<Acc>(to, AccMsg::Add(i)) {
                        assert!(matches!(e, SendError::Overflow(AccMsg::Add(_))));
                        self.answers.push(Err(AskError::Overflow));
                    }
                }
            }
            AccMsg::Get => {}
        }
        (self.total, self.answers.len())
    }
}

fn kinds() -> Arc<Kinds> {
    let mut k = Kinds::new();
    k.register::<Acc>().unwrap();
    Arc::new(k)
}

fn world(n: usize, overflow_cap: usize) -> World {
    let cfg = Config {
        clients: 2,
        overflow_cap,
        ..Config::new(n)
    };
    World::new(kinds(), cfg, 0)
}

fn key_on(shard: usize, count: usize, skip: u64) -> u64 {
    let k = kinds();
    (skip..)
        .find(|&key| k.home_shard(0, key, count) == shard)
        .unwrap()
}

type Replies = Vec<(u64, Result<(u64, usize), AskError>)>;

/// Settles the world and opens what client 0 received.
fn client_replies(w: &mut World) -> Replies {
    w.settle();
    w.take_replies(0)
        .into_iter()
        // SAFETY: replies of kind `Acc` carry `(u64, usize)`.
        .map(|env| unsafe { open_reply::<(u64, usize)>(env) })
        .collect()
}

#[test]
fn first_message_activates_and_state_persists() {
    let mut w = world(1, 16);
    w.deliver_now::<Acc>(0, 0, 5, AccMsg::Add(2), None);
    w.deliver_now::<Acc>(0, 0, 5, AccMsg::Add(3), None);
    w.deliver_now::<Acc>(0, 0, 5, AccMsg::Get, Some(77));
    assert_eq!(client_replies(&mut w), vec![(77, Ok((5, 0)))]);
    assert_eq!(w.shard(0).counters().activations, 1);
    assert_eq!(w.shard(0).counters().handled, 3);
    assert_eq!(w.shard(0).entity_count(), 1);
}

#[test]
fn panic_fails_the_ask_and_the_entity_restarts_fresh() {
    let mut w = world(1, 16);
    w.deliver_now::<Acc>(0, 0, 1, AccMsg::Add(10), None);
    w.deliver_now::<Acc>(0, 0, 2, AccMsg::Add(20), None);
    w.deliver_now::<Acc>(0, 0, 1, AccMsg::Boom, Some(1));
    w.deliver_now::<Acc>(0, 0, 1, AccMsg::Get, Some(2));
    w.deliver_now::<Acc>(0, 0, 2, AccMsg::Get, Some(3));
    assert_eq!(
        client_replies(&mut w),
        vec![
            (1, Err(AskError::Panicked)),
            (2, Ok((0, 0))),  // fresh state
            (3, Ok((20, 0))), // the neighbour is untouched
        ]
    );
    assert_eq!(w.shard(0).counters().panics, 1);
    assert_eq!(w.shard(0).counters().activations, 3);
}

#[test]
fn stop_deactivates_after_the_reply() {
    let mut w = world(1, 16);
    w.deliver_now::<Acc>(0, 0, 9, AccMsg::Add(4), None);
    w.deliver_now::<Acc>(0, 0, 9, AccMsg::Stop, Some(1));
    assert_eq!(w.shard(0).entity_count(), 0);
    w.deliver_now::<Acc>(0, 0, 9, AccMsg::Get, Some(2));
    assert_eq!(
        client_replies(&mut w),
        vec![(1, Ok((4, 0))), (2, Ok((0, 0)))]
    );
    assert_eq!(w.shard(0).counters().deactivations, 1);
}

#[test]
fn continuation_brings_the_reply_back_across_shards() {
    let mut w = world(2, 16);
    let asker = key_on(0, 2, 0);
    let peer = key_on(1, 2, 0);
    w.deliver_now::<Acc>(1, 0, peer, AccMsg::Add(42), None);
    w.deliver_now::<Acc>(0, 0, asker, AccMsg::AskPeer { peer, boom: false }, None);
    assert_eq!(w.shard(0).pending_asks(), 1);
    w.settle();
    assert_eq!(w.shard(0).pending_asks(), 0);
    w.deliver_now::<Acc>(0, 0, asker, AccMsg::Get, Some(1));
    assert_eq!(client_replies(&mut w), vec![(1, Ok((42, 1)))]);
}

#[test]
fn continuation_on_the_same_shard_and_after_a_panic() {
    let mut w = world(1, 16);
    w.deliver_now::<Acc>(0, 0, 2, AccMsg::Add(7), None);
    w.deliver_now::<Acc>(
        0,
        0,
        1,
        AccMsg::AskPeer {
            peer: 2,
            boom: false,
        },
        None,
    );
    w.deliver_now::<Acc>(
        0,
        0,
        1,
        AccMsg::AskPeer {
            peer: 2,
            boom: true,
        },
        None,
    );
    w.settle();
    assert_eq!(w.shard(0).pending_asks(), 0);
    // The asker got both answers, in order: the value, then the panic.
    w.deliver_now::<Acc>(0, 0, 1, AccMsg::Get, Some(9));
    assert_eq!(client_replies(&mut w), vec![(9, Ok((7 * 100 + 99, 2)))]);
    assert_eq!(w.shard(0).counters().panics, 1);
}

#[test]
fn overflow_cap_refuses_and_hands_the_message_back() {
    let mut w = world(2, 4);
    let sprayer = key_on(0, 2, 0);
    let target = key_on(1, 2, 0);
    w.deliver_now::<Acc>(0, 0, sprayer, AccMsg::Spray { to: target, n: 10 }, None);
    // Four wait in the outbox to shard 1; six were refused.
    assert_eq!(w.shard_mut(0).outbox_to_shard(1).len(), 4);
    w.deliver_now::<Acc>(0, 0, sprayer, AccMsg::Get, Some(1));
    assert_eq!(client_replies(&mut w), vec![(1, Ok((0, 6)))]);
    w.settle();
    w.deliver_now::<Acc>(1, 0, target, AccMsg::Get, Some(2));
    // 0 + 1 + 2 + 3: the first four, in order.
    assert_eq!(client_replies(&mut w), vec![(2, Ok((6, 0)))]);
}

#[test]
fn timers_fire_on_the_shard_clock() {
    struct Alarm {
        fired: Vec<u64>,
        every: Option<percore_shards::TimerId>,
    }
    #[derive(Clone)]
    enum A {
        Arm,
        Fire(u64),
        Cancel,
        Get,
    }
    impl Entity for Alarm {
        const KIND: &'static str = "alarm";
        type Msg = A;
        type Reply = Vec<u64>;
        fn activate(_: u64) -> Self {
            Alarm {
                fired: vec![],
                every: None,
            }
        }
        fn handle(&mut self, m: A, ctx: &mut Ctx<'_, Self>) -> Vec<u64> {
            match m {
                A::Arm => {
                    ctx.after(Duration::from_nanos(300), A::Fire(3));
                    ctx.after(Duration::from_nanos(100), A::Fire(1));
                    let gone = ctx.after(Duration::from_nanos(200), A::Fire(99));
                    assert!(ctx.cancel(gone));
                    self.every = Some(ctx.every(Duration::from_nanos(1000), A::Fire(1000)));
                }
                A::Fire(n) => self.fired.push(n),
                A::Cancel => {
                    let id = self.every.take().unwrap();
                    assert!(ctx.cancel(id));
                }
                A::Get => {}
            }
            self.fired.clone()
        }
    }
    let mut k = Kinds::new();
    k.register::<Alarm>().unwrap();
    let cfg = Config {
        overflow_cap: 8,
        ..Config::new(1)
    };
    let mut w = World::new(Arc::new(k), cfg, 0);
    w.deliver_now::<Alarm>(0, 0, 1, A::Arm, None);
    assert_eq!(w.shard_mut(0).next_deadline_ns(), Some(100));
    for now in [150, 350, 1000, 2000, 2500] {
        w.advance_to(now);
        w.shard_mut(0).fire_timers(usize::MAX);
        w.settle();
    }
    w.deliver_now::<Alarm>(0, 0, 1, A::Cancel, None);
    w.advance_to(10_000);
    w.shard_mut(0).fire_timers(usize::MAX);
    w.settle();
    w.ask::<Alarm>(0, 1, A::Get, 5);
    w.settle();
    let env = w.take_replies(0).pop().unwrap();
    // SAFETY: replies of `Alarm` are `Vec<u64>`.
    let (token, fired) = unsafe { open_reply::<Vec<u64>>(env) };
    assert_eq!(token, 5);
    let fired = fired.unwrap();
    assert_eq!(fired, vec![1, 3, 1000, 1000]);
    assert_eq!(w.shard(0).timer_count(), 0);
}

#[test]
fn duplicate_kind_names_are_refused() {
    struct Other;
    impl Entity for Other {
        const KIND: &'static str = "acc";
        type Msg = ();
        type Reply = ();
        fn activate(_: u64) -> Self {
            Other
        }
        fn handle(&mut self, _: (), _: &mut Ctx<'_, Self>) {}
    }
    let mut k = Kinds::new();
    k.register::<Acc>().unwrap();
    assert_eq!(k.register::<Other>().unwrap_err().name, "acc");
    assert!(k.register::<Acc>().is_err());
}
