//! Lazy routes, deterministically: a shard whose message to a moved entity
//! had to be forwarded learns where the entity lives and sends there
//! directly; when that route goes stale the message goes through the home
//! (never activating a fresh entity where the old one lived), and order and
//! state hold throughout.

use std::sync::Arc;

use percore_shards::envelope::CLIENT_BIT;
use percore_shards::{
    Ctx, Entity, Envelope, Kinds, MoveOutcome, MoveRequest, Op, Shard, ShardSpec,
};

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

struct World {
    shards: Vec<Shard>,
    counter: u16,
    relay: u16,
    next_token: u64,
}

impl World {
    fn new(n: usize) -> World {
        let mut kinds = Kinds::new();
        let counter = kinds.register::<Counter>().unwrap();
        let relay = kinds.register::<Relay>().unwrap();
        let kinds = Arc::new(kinds);
        let shards = (0..n)
            .map(|shard| {
                let spec = ShardSpec {
                    shard,
                    shard_count: n,
                    client_slots: 1,
                    overflow_cap: 1 << 10,
                };
                Shard::new(spec, kinds.clone())
            })
            .collect();
        World {
            shards,
            counter,
            relay,
            next_token: 1,
        }
    }

    fn home(&self, kind: u16, key: u64) -> usize {
        self.shards[0]
            .kinds()
            .home_shard(kind, key, self.shards.len())
    }

    /// A relay key whose home is `shard`.
    fn relay_on(&self, shard: usize) -> u64 {
        (0..).find(|&k| self.home(self.relay, k) == shard).unwrap()
    }

    /// Delivers everything in flight, ring by ring in FIFO order, until
    /// nothing is left; runs moves between rounds.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut did = false;
            for s in 0..self.shards.len() {
                did |= self.shards[s].run_local(usize::MAX) > 0;
                for to in 0..self.shards.len() {
                    let out = self.shards[s].outbox_to_shard(to);
                    let n = out.len();
                    let envs: Vec<Envelope> = out.drain(n).collect();
                    for env in envs {
                        did = true;
                        deliver(&mut self.shards[to], env);
                        let _ = self.shards[to].take_fences();
                    }
                }
                let out = self.shards[s].outbox_to_client(0);
                let n = out.len();
                for env in out.drain(n) {
                    did = true;
                    // SAFETY: only move requests are answered here.
                    assert_eq!(unsafe { env.take::<MoveOutcome>() }, MoveOutcome::Done);
                }
                if self.shards[s].has_moves() {
                    self.shards[s].run_moves();
                    did = true;
                }
            }
            if !did && !self.shards.iter().any(Shard::migrating) {
                return;
            }
        }
        panic!("the world never settled");
    }

    fn client(&mut self, kind: u16, key: u64, env: Envelope) {
        let home = self.home(kind, key);
        deliver(&mut self.shards[home], env);
        self.settle();
    }

    fn relay_tells(&mut self, relay: u64, seq: u64) {
        let env = raw(self.relay, relay, Op::Tell, seq).with_route(CLIENT_BIT, 0);
        self.client(self.relay, relay, env);
    }

    fn move_counter(&mut self, target: usize) {
        let token = self.next_token;
        self.next_token += 1;
        let req = MoveRequest {
            target: target as u32,
        };
        let env = raw(self.counter, COUNTER, Op::Migrate, req).with_route(CLIENT_BIT, token);
        self.client(self.counter, COUNTER, env);
        assert!(self.shards[target].owns(self.counter, COUNTER));
    }

    fn total(&self, f: impl Fn(&Shard) -> u64) -> u64 {
        self.shards.iter().map(f).sum()
    }
}

#[test]
fn a_sender_learns_where_a_moved_entity_lives_and_sends_there_directly() {
    let mut w = World::new(3);
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
    let c = w.shards[owner].counters();
    assert_eq!(c.route_misses, 1, "{c:?}");
    assert_eq!(c.route_hits, 9, "{c:?}");
    // The home forwarded the miss and the switch marker behind it.
    assert_eq!(w.shards[home].counters().rerouted, 2);
    assert_eq!(w.shards[sender].counters().route_switches, 1);
}

#[test]
fn a_stale_route_goes_through_the_home_and_never_activates_a_fresh_entity() {
    let mut w = World::new(3);
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
    assert!(w.shards[first].counters().route_hits > 0);
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
