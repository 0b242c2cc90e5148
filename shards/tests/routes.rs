//! Lazy routes, deterministically: a shard whose message to a moved entity
//! had to be forwarded learns where the entity lives and sends there
//! directly; when that route goes stale the message goes through the home
//! (never activating a fresh entity where the old one lived), and order and
//! state hold throughout.

use std::sync::Arc;

use percore_shards::driver::{MoveOutcome, Shard};
use percore_shards::testing::{open_reply, Config, World};
use percore_shards::{Ctx, Entity, Kinds};

/// Counts what it handles and checks each value is the next.
struct Counter {
    last: u64,
}

impl Entity for Counter {
    const KIND: &'static str = "routes.counter";
    type Msg = u64;
    type Reply = u64;

    fn activate(_key: u64) -> Self {
        Counter { last: 0 }
    }

    fn handle(&mut self, seq: u64, _ctx: &mut Ctx<'_, Self>) -> u64 {
        assert_eq!(seq, self.last + 1, "out of order or a fresh activation");
        self.last = seq;
        seq
    }
}

/// Tells counter `COUNTER` the number it is given.
struct Relay;

const COUNTER: u64 = 7;

impl Entity for Relay {
    const KIND: &'static str = "routes.relay";
    type Msg = u64;
    type Reply = ();

    fn activate(_key: u64) -> Self {
        Relay
    }

    fn handle(&mut self, seq: u64, ctx: &mut Ctx<'_, Self>) {
        ctx.tell::<Counter>(COUNTER, seq).unwrap();
    }
}

/// A test world with a counter and relays; every step settles it.
struct Routes {
    w: World,
    counter: u16,
    relay: u16,
    next_token: u64,
}

impl Routes {
    fn new(n: usize) -> Routes {
        let mut kinds = Kinds::new();
        let counter = kinds.register::<Counter>().unwrap();
        let relay = kinds.register::<Relay>().unwrap();
        let cfg = Config {
            overflow_cap: 1 << 10,
            ..Config::new(n)
        };
        Routes {
            w: World::new(Arc::new(kinds), cfg, 0),
            counter,
            relay,
            next_token: 1,
        }
    }

    fn home(&self, kind: u16, key: u64) -> usize {
        self.w.home(kind, key)
    }

    /// A relay key whose home is `shard`.
    fn relay_on(&self, shard: usize) -> u64 {
        (0..).find(|&k| self.home(self.relay, k) == shard).unwrap()
    }

    /// Delivers everything in flight until nothing is left; only move
    /// requests are answered, and each must be done.
    fn settle(&mut self) {
        self.w.settle();
        for env in self.w.take_replies(0) {
            // SAFETY: only move requests are answered here.
            let (_, outcome) = unsafe { open_reply::<MoveOutcome>(env) };
            assert_eq!(outcome, Ok(MoveOutcome::Done));
        }
    }

    fn relay_tells(&mut self, relay: u64, seq: u64) {
        self.w.tell::<Relay>(0, relay, seq);
        self.settle();
    }

    fn move_counter(&mut self, target: usize) {
        let token = self.next_token;
        self.next_token += 1;
        self.w.migrate::<Counter>(0, COUNTER, target, token);
        self.settle();
        assert!(self.w.shard(target).owns(self.counter, COUNTER));
    }

    fn total(&self, f: impl Fn(&Shard) -> u64) -> u64 {
        self.w.shards().iter().map(f).sum()
    }
}

#[test]
fn a_sender_learns_where_a_moved_entity_lives_and_sends_there_directly() {
    let mut w = Routes::new(3);
    let home = w.home(w.counter, COUNTER);
    let owner = (home + 1) % 3;
    let sender = (home + 2) % 3;
    let relay = w.relay_on(sender);
    let mut seq = 0;
    seq += 1;
    w.relay_tells(relay, seq);
    w.move_counter(owner);
    // The first message after the move goes to the home and is forwarded
    // (a miss, and a hint); the rest go straight to the owner.
    for _ in 0..10 {
        seq += 1;
        w.relay_tells(relay, seq);
    }
    let c = w.w.shard(owner).counters();
    assert_eq!(c.route_misses, 1, "{c:?}");
    assert_eq!(c.route_hits, 9, "{c:?}");
    // The home forwarded the miss and the switch marker behind it.
    assert_eq!(w.w.shard(home).counters().rerouted, 2);
    assert_eq!(w.w.shard(sender).counters().route_switches, 1);
}

#[test]
fn a_stale_route_goes_through_the_home_and_never_activates_a_fresh_entity() {
    let mut w = Routes::new(3);
    let home = w.home(w.counter, COUNTER);
    let first = (home + 1) % 3;
    let sender = (home + 2) % 3;
    let relay = w.relay_on(sender);
    let mut seq = 0;
    w.move_counter(first);
    for _ in 0..3 {
        seq += 1;
        w.relay_tells(relay, seq);
    }
    assert!(w.w.shard(first).counters().route_hits > 0);
    // It tours: first → sender's shard → home → first, while the relay's
    // cache still names `first`; the counter checks every number comes
    // once, in order, to the one entity (a fresh one would expect 1).
    for target in [sender, home, first, home] {
        w.move_counter(target);
        for _ in 0..3 {
            seq += 1;
            w.relay_tells(relay, seq);
        }
    }
    assert!(w.total(|s| s.counters().bounced) > 0, "no route went stale");
    assert_eq!(
        w.total(|s| s.counters().activations),
        2,
        "counter and relay"
    );
    assert_eq!(w.total(|s| s.counters().handled), 2 * seq);
}
