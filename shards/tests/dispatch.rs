//! The shard's rules, checked in one thread with no runtime: activation,
//! exclusivity of state, replies to clients, continuations across shards,
//! panic isolation, stopping, the overflow cap, and timers on the shard clock.

use std::sync::Arc;
use std::time::Duration;

use percore_shards::envelope::CLIENT_BIT;
use percore_shards::{AskError, Ctx, Entity, Envelope, Kinds, Op, SendError, Shard, ShardSpec};

/// Builds an envelope by hand.
fn raw<M: Send + 'static>(kind: u16, key: u64, op: Op, msg: M) -> Envelope {
    // SAFETY: every call in this file pairs a kind with its own message,
    // reply or move-request type.
    unsafe { Envelope::new_unchecked(kind, key, op, msg) }
}

/// Hands `env` to `shard`.
fn deliver(shard: &mut Shard, env: Envelope) {
    // SAFETY: as `raw`: every envelope here is typed by its kind, and every
    // shard of a test shares one registry.
    unsafe { shard.deliver(env) }
}

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

fn shards(n: usize, overflow_cap: usize) -> Vec<Shard> {
    let kinds = kinds();
    (0..n)
        .map(|i| {
            Shard::new(
                ShardSpec {
                    shard: i,
                    shard_count: n,
                    client_slots: 2,
                    overflow_cap,
                },
                kinds.clone(),
            )
        })
        .collect()
}

/// Moves every envelope from every shard's outboxes to its destination and
/// runs local queues, until nothing moves.
fn settle(shards: &mut [Shard]) {
    loop {
        let mut moved = 0;
        for i in 0..shards.len() {
            moved += shards[i].run_local(usize::MAX);
            for j in 0..shards.len() {
                let out: Vec<Envelope> = {
                    let o = shards[i].outbox_to_shard(j);
                    let n = o.len();
                    o.drain(n).collect()
                };
                moved += out.len();
                for env in out {
                    deliver(&mut shards[j], env);
                }
            }
        }
        if moved == 0 {
            return;
        }
    }
}

fn key_on(shard: usize, count: usize, skip: u64) -> u64 {
    let k = kinds();
    (skip..)
        .find(|&key| k.home_shard(0, key, count) == shard)
        .unwrap()
}

fn tell(key: u64, msg: AccMsg) -> Envelope {
    raw(0, key, Op::Tell, msg)
}

fn ask_from_client(key: u64, msg: AccMsg, token: u64) -> Envelope {
    raw(0, key, Op::AskClient, msg).with_route(CLIENT_BIT, token)
}

type Replies = Vec<(u64, Result<(u64, usize), AskError>)>;

fn client_replies(shard: &mut Shard) -> Replies {
    let out = shard.outbox_to_client(0);
    let n = out.len();
    out.drain(n)
        .map(|env| {
            let token = env.token;
            let r = match env.error_status() {
                Some(e) => Err(e),
                // SAFETY: replies of kind `Acc` carry `(u64, usize)`.
                None => Ok(unsafe { env.take::<(u64, usize)>() }),
            };
            (token, r)
        })
        .collect()
}

#[test]
fn first_message_activates_and_state_persists() {
    let mut s = shards(1, 16);
    deliver(&mut s[0], tell(5, AccMsg::Add(2)));
    deliver(&mut s[0], tell(5, AccMsg::Add(3)));
    deliver(&mut s[0], ask_from_client(5, AccMsg::Get, 77));
    assert_eq!(client_replies(&mut s[0]), vec![(77, Ok((5, 0)))]);
    assert_eq!(s[0].counters().activations, 1);
    assert_eq!(s[0].counters().handled, 3);
    assert_eq!(s[0].entity_count(), 1);
}

#[test]
fn panic_fails_the_ask_and_the_entity_restarts_fresh() {
    let mut s = shards(1, 16);
    deliver(&mut s[0], tell(1, AccMsg::Add(10)));
    deliver(&mut s[0], tell(2, AccMsg::Add(20)));
    deliver(&mut s[0], ask_from_client(1, AccMsg::Boom, 1));
    deliver(&mut s[0], ask_from_client(1, AccMsg::Get, 2));
    deliver(&mut s[0], ask_from_client(2, AccMsg::Get, 3));
    assert_eq!(
        client_replies(&mut s[0]),
        vec![
            (1, Err(AskError::Panicked)),
            (2, Ok((0, 0))),  // fresh state
            (3, Ok((20, 0))), // the neighbour is untouched
        ]
    );
    assert_eq!(s[0].counters().panics, 1);
    assert_eq!(s[0].counters().activations, 3);
}

#[test]
fn stop_deactivates_after_the_reply() {
    let mut s = shards(1, 16);
    deliver(&mut s[0], tell(9, AccMsg::Add(4)));
    deliver(&mut s[0], ask_from_client(9, AccMsg::Stop, 1));
    assert_eq!(s[0].entity_count(), 0);
    deliver(&mut s[0], ask_from_client(9, AccMsg::Get, 2));
    assert_eq!(
        client_replies(&mut s[0]),
        vec![(1, Ok((4, 0))), (2, Ok((0, 0)))]
    );
    assert_eq!(s[0].counters().deactivations, 1);
}

#[test]
fn continuation_brings_the_reply_back_across_shards() {
    let mut s = shards(2, 16);
    let asker = key_on(0, 2, 0);
    let peer = key_on(1, 2, 0);
    deliver(&mut s[1], tell(peer, AccMsg::Add(42)));
    deliver(
        &mut s[0],
        tell(asker, AccMsg::AskPeer { peer, boom: false }),
    );
    assert_eq!(s[0].pending_asks(), 1);
    settle(&mut s);
    assert_eq!(s[0].pending_asks(), 0);
    deliver(&mut s[0], ask_from_client(asker, AccMsg::Get, 1));
    assert_eq!(client_replies(&mut s[0]), vec![(1, Ok((42, 1)))]);
}

#[test]
fn continuation_on_the_same_shard_and_after_a_panic() {
    let mut s = shards(1, 16);
    deliver(&mut s[0], tell(2, AccMsg::Add(7)));
    deliver(
        &mut s[0],
        tell(
            1,
            AccMsg::AskPeer {
                peer: 2,
                boom: false,
            },
        ),
    );
    deliver(
        &mut s[0],
        tell(
            1,
            AccMsg::AskPeer {
                peer: 2,
                boom: true,
            },
        ),
    );
    settle(&mut s);
    assert_eq!(s[0].pending_asks(), 0);
    // The asker got both answers, in order: the value, then the panic.
    deliver(&mut s[0], ask_from_client(1, AccMsg::Get, 9));
    assert_eq!(client_replies(&mut s[0]), vec![(9, Ok((7 * 100 + 99, 2)))]);
    assert_eq!(s[0].counters().panics, 1);
}

#[test]
fn overflow_cap_refuses_and_hands_the_message_back() {
    let mut s = shards(2, 4);
    let sprayer = key_on(0, 2, 0);
    let target = key_on(1, 2, 0);
    deliver(
        &mut s[0],
        tell(sprayer, AccMsg::Spray { to: target, n: 10 }),
    );
    // Four wait in the outbox to shard 1; six were refused.
    assert_eq!(s[0].outbox_to_shard(1).len(), 4);
    deliver(&mut s[0], ask_from_client(sprayer, AccMsg::Get, 1));
    assert_eq!(client_replies(&mut s[0]), vec![(1, Ok((0, 6)))]);
    settle(&mut s);
    deliver(&mut s[1], ask_from_client(target, AccMsg::Get, 2));
    // 0 + 1 + 2 + 3: the first four, in order.
    assert_eq!(client_replies(&mut s[1]), vec![(2, Ok((6, 0)))]);
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
    let spec = ShardSpec {
        shard: 0,
        shard_count: 1,
        client_slots: 1,
        overflow_cap: 8,
    };
    let mut s = Shard::new(spec, Arc::new(k));
    deliver(&mut s, raw(0, 1, Op::Tell, A::Arm));
    assert_eq!(s.next_deadline_ns(), Some(100));
    for now in [150, 350, 1000, 2000, 2500] {
        s.set_now(now);
        s.fire_timers(usize::MAX);
        s.run_local(usize::MAX);
    }
    deliver(&mut s, raw(0, 1, Op::Tell, A::Cancel));
    s.set_now(10_000);
    s.fire_timers(usize::MAX);
    s.run_local(usize::MAX);
    deliver(
        &mut s,
        raw(0, 1, Op::AskClient, A::Get).with_route(CLIENT_BIT, 5),
    );
    let out = s.outbox_to_client(0);
    let env = out.drain(1).next().unwrap();
    // SAFETY: replies of `Alarm` are `Vec<u64>`.
    let fired = unsafe { env.take::<Vec<u64>>() };
    assert_eq!(fired, vec![1, 3, 1000, 1000]);
    assert_eq!(s.timer_count(), 0);
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
