//! The rebalancing rule, deterministically: a shard clearly busier than the
//! least busy one for long enough moves about half the gap's worth of its
//! hottest movable entities there — never one that alone outweighs that,
//! never a pinned one, never one of a kind that opted out — and once the gap
//! is small, or flips, it moves nothing.

use std::sync::Arc;

use percore_shards::driver::{RebalancePolicy, Shard};
use percore_shards::testing::{Config, World};
use percore_shards::{Ctx, Entity, Kinds};

struct Busy;

impl Entity for Busy {
    const KIND: &'static str = "rebalance.busy";
    type Msg = bool;
    type Reply = ();

    fn activate(_key: u64) -> Self {
        Busy
    }

    fn handle(&mut self, pin: bool, ctx: &mut Ctx<'_, Self>) {
        if pin {
            ctx.pin();
        }
    }
}

struct Fixed;

impl Entity for Fixed {
    const KIND: &'static str = "rebalance.fixed";
    const MOVABLE: bool = false;
    type Msg = ();
    type Reply = ();

    fn activate(_key: u64) -> Self {
        Fixed
    }

    fn handle(&mut self, _: (), _ctx: &mut Ctx<'_, Self>) {}
}

const POLICY: RebalancePolicy = RebalancePolicy {
    enabled: true,
    min_gap: 0.2,
    sustain_windows: 2,
    max_moves_per_window: 4,
    cooldown_windows: 10,
};

/// One shard of a two-shard test world, traffic and windows driven by hand.
struct Rebalance {
    w: World,
    busy: u16,
    fixed: u16,
    window: u32,
}

impl Rebalance {
    fn new() -> Rebalance {
        let mut kinds = Kinds::new();
        let busy = kinds.register::<Busy>().unwrap();
        let fixed = kinds.register::<Fixed>().unwrap();
        Rebalance {
            w: World::new(Arc::new(kinds), Config::new(2), 0),
            busy,
            fixed,
            window: 0,
        }
    }

    /// Shard 0, where the test delivers everything.
    fn shard(&mut self) -> &mut Shard {
        self.w.shard_mut(0)
    }

    /// One window of traffic: `n` messages to each of `keys` of `kind`, then
    /// the window ends with `loads`. Returns how many moves were queued.
    fn window(&mut self, traffic: &[(u16, u64, u32)], loads: [f32; 2]) -> usize {
        for &(kind, key, n) in traffic {
            for _ in 0..n {
                if kind == self.busy {
                    self.w.deliver_now::<Busy>(0, 0, key, false, None);
                } else {
                    self.w.deliver_now::<Fixed>(0, 0, key, (), None);
                }
            }
        }
        self.window += 1;
        self.w.shard_mut(0).end_window(self.window, &loads, &POLICY)
    }

    /// The `n`-th key of `kind` (from 0) whose home is shard 0, where the
    /// test delivers everything.
    fn key(&self, kind: u16, n: usize) -> u64 {
        (0..)
            .filter(|&k| self.w.kinds().home_shard(kind, k, 2) == 0)
            .nth(n)
            .unwrap()
    }

    /// Carries the queued moves out; returns the keys that left.
    fn moved(&mut self) -> Vec<u64> {
        let before: Vec<u64> = (0..1000)
            .filter(|&k| self.w.shard(0).owns(self.busy, k))
            .collect();
        self.shard().run_moves();
        before
            .into_iter()
            .filter(|&k| !self.w.shard(0).owns(self.busy, k))
            .collect()
    }
}

#[test]
fn a_sustained_gap_moves_half_its_worth_of_the_hottest_and_then_nothing() {
    let mut w = Rebalance::new();
    // Eight equally hot entities and a few lukewarm ones.
    let hot_keys: Vec<u64> = (0..8).map(|n| w.key(w.busy, n)).collect();
    let mut traffic: Vec<(u16, u64, u32)> = hot_keys.iter().map(|&k| (w.busy, k, 100)).collect();
    traffic.extend((8..12).map(|n| (w.busy, w.key(w.busy, n), 5)));
    // Heat warms up over a few balanced windows; then the gap must last two
    // windows.
    for _ in 0..6 {
        assert_eq!(w.window(&traffic, [0.5, 0.5]), 0);
    }
    assert_eq!(
        w.window(&traffic, [0.9, 0.1]),
        0,
        "one window is not sustained"
    );
    let queued = w.window(&traffic, [0.9, 0.1]);
    let moved = w.moved();
    assert_eq!(moved.len(), queued);
    // Each hot one carries about 100/820 of 0.9 = 0.11 and half the gap is
    // 0.4: three hot ones fit, a fourth would not; what is left of the budget
    // takes a lukewarm one (the cap is four per window).
    let hot: Vec<u64> = moved
        .iter()
        .copied()
        .filter(|k| hot_keys.contains(k))
        .collect();
    assert_eq!(hot.len(), 3, "about half the gap's worth: {moved:?}");
    assert_eq!(queued, 4, "{moved:?}");
    assert_eq!(w.shard().counters().migrations_out, 4);

    // Balanced (a gap below 0.2), or the other shard the busier: nothing moves,
    // however long it lasts.
    let remaining: Vec<(u16, u64, u32)> = traffic
        .iter()
        .copied()
        .filter(|(_, k, _)| !moved.contains(k))
        .collect();
    for _ in 0..20 {
        assert_eq!(w.window(&remaining, [0.55, 0.45]), 0);
        assert_eq!(w.window(&remaining, [0.3, 0.7]), 0);
    }
}

#[test]
fn an_entity_that_outweighs_half_the_gap_stays() {
    let mut w = Rebalance::new();
    // One entity carries nearly all the load: moving it would only move the
    // hot spot.
    let (spot, other) = (w.key(w.busy, 0), w.key(w.busy, 1));
    let traffic = [(w.busy, spot, 1_000), (w.busy, other, 10)];
    let mut moved = Vec::new();
    for _ in 0..5 {
        w.window(&traffic, [0.9, 0.1]);
        moved.extend(w.moved());
    }
    assert!(!moved.contains(&spot), "the hot spot itself moved");
    assert_eq!(moved, [other], "the small one goes instead");
}

#[test]
fn pinned_and_unmovable_entities_stay() {
    let mut w = Rebalance::new();
    // Key 0 pins itself; the fixed kind opted out.
    w.w.deliver_now::<Busy>(0, 0, 0, true, None);
    let traffic = [(w.busy, 0, 100), (w.fixed, 1, 100), (w.fixed, 2, 100)];
    for _ in 0..5 {
        w.window(&traffic, [0.9, 0.0]);
        w.shard().run_moves();
    }
    assert!(w.w.shard(0).owns(w.busy, 0));
    assert!(w.w.shard(0).owns(w.fixed, 1) && w.w.shard(0).owns(w.fixed, 2));
    assert_eq!(w.shard().counters().migrations_out, 0);
}
