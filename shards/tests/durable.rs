//! The output gate and the durable bookkeeping, checked in one thread with a
//! log that reports durability only when the test says so: a reply is never
//! released before its record is durable; changes in one pass coalesce into one
//! record; unchanged states are not logged but their replies still wait for
//! earlier records; failures and panics put entities back at their last
//! durable (or logged) state; deletions are tombstones with rising versions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use percore_shards::driver::LogRefusal;
use percore_shards::testing::{open_reply, Config, World};
use percore_shards::{AskError, Codec, Ctx, Entity, Kinds};

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Account {
    balance: u64,
}

#[derive(Clone, Copy)]
enum Msg {
    Add(u64),
    Get,
    Boom,
    Close,
    Notify { to: u64 },
}

static RECOVERED: AtomicU64 = AtomicU64::new(0);

impl Entity for Account {
    const KIND: &'static str = "account";
    type Msg = Msg;
    type Reply = u64;

    fn activate(_: u64) -> Self {
        Account { balance: 0 }
    }

    fn handle(&mut self, msg: Msg, ctx: &mut Ctx<'_, Self>) -> u64 {
        match msg {
            Msg::Add(n) => self.balance += n,
            Msg::Get => {}
            Msg::Boom => {
                self.balance += 1_000_000; // a change that must not survive
                panic!("boom (expected by the test)");
            }
            Msg::Close => ctx.stop(),
            Msg::Notify { to } => {
                ctx.tell::<Account>(to, Msg::Add(1))
                    .unwrap_or_else(|_| panic!("overflow"));
            }
        }
        self.balance
    }

    fn recovered(&mut self, _: &mut Ctx<'_, Self>) {
        RECOVERED.fetch_add(1, Ordering::Relaxed);
    }
}

fn world(count: usize) -> World {
    let mut kinds = Kinds::new();
    kinds.register_durable::<Account>(Codec::of_pod()).unwrap();
    let cfg = Config {
        overflow_cap: 64,
        ..Config::new(count)
    };
    World::new(Arc::new(kinds), cfg, 0)
}

/// Shard 0's log as (key, version, balance or `None` for a tombstone).
fn records(w: &World) -> Vec<(u64, u64, Option<u64>)> {
    w.log(0)
        .appended()
        .iter()
        .map(|r| {
            let balance = r.state.as_ref().map(|bytes| {
                let a: Account = bytemuck::pod_read_unaligned(bytes);
                a.balance
            });
            (r.key, r.version, balance)
        })
        .collect()
}

/// What shard 0 has released to client 0 (straight from its outbox).
fn replies(w: &mut World) -> Vec<(u64, Result<u64, AskError>)> {
    let out = w.shard_mut(0).outbox_to_client(0);
    let n = out.len();
    out.drain(n)
        // SAFETY: replies of `Account` are `u64`.
        .map(|env| unsafe { open_reply::<u64>(env) })
        .collect()
}

/// Marks everything appended so far durable and tells the shard.
fn make_durable(w: &mut World) {
    w.make_durable(0, usize::MAX);
}

#[test]
fn reply_is_released_only_once_its_record_is_durable() {
    let mut w = world(1);
    w.deliver_now::<Account>(0, 0, 1, Msg::Add(5), Some(10));
    assert!(replies(&mut w).is_empty(), "held before the pass ends");
    w.commit(0);
    assert_eq!(records(&w), vec![(1, 1, Some(5))]);
    assert!(
        replies(&mut w).is_empty(),
        "held while the record is in flight"
    );
    assert!(w.shard_mut(0).has_unresolved());
    make_durable(&mut w);
    assert_eq!(replies(&mut w), vec![(10, Ok(5))]);
    assert!(!w.shard_mut(0).has_unresolved());
    assert_eq!(w.shard(0).counters().gated_released, 1);
}

#[test]
fn changes_within_a_pass_coalesce_into_one_record() {
    let mut w = world(1);
    for _ in 0..10 {
        w.deliver_now::<Account>(0, 0, 1, Msg::Add(1), None);
    }
    w.deliver_now::<Account>(0, 0, 1, Msg::Get, Some(1));
    w.commit(0);
    assert_eq!(
        records(&w),
        vec![(1, 1, Some(10))],
        "one record, the final state"
    );
    make_durable(&mut w);
    assert_eq!(replies(&mut w), vec![(1, Ok(10))]);
}

#[test]
fn unchanged_state_is_not_logged_but_waits_for_earlier_records() {
    let mut w = world(1);
    w.deliver_now::<Account>(0, 0, 1, Msg::Add(3), None);
    w.commit(0);
    assert_eq!(records(&w).len(), 1);
    // Next pass: a read of the new, not yet durable, state.
    w.deliver_now::<Account>(0, 0, 1, Msg::Get, Some(7));
    w.commit(0);
    assert_eq!(records(&w).len(), 1, "nothing changed, nothing logged");
    assert!(
        replies(&mut w).is_empty(),
        "the read depends on the record in flight"
    );
    make_durable(&mut w);
    assert_eq!(replies(&mut w), vec![(7, Ok(3))]);
    // With nothing in flight, a read goes out at the end of its pass.
    w.deliver_now::<Account>(0, 0, 1, Msg::Get, Some(8));
    w.commit(0);
    assert_eq!(replies(&mut w), vec![(8, Ok(3))]);
}

#[test]
fn failed_record_restores_the_last_durable_state_and_fails_the_reply() {
    let mut w = world(1);
    w.deliver_now::<Account>(0, 0, 1, Msg::Add(5), None);
    w.commit(0);
    make_durable(&mut w);
    w.deliver_now::<Account>(0, 0, 1, Msg::Add(7), Some(2));
    w.commit(0);
    assert_eq!(records(&w).last(), Some(&(1, 2, Some(12))));
    // The disk filled up: record 1 failed.
    assert!(w.fail_log(0, AskError::StorageFull));
    assert_eq!(replies(&mut w), vec![(2, Err(AskError::StorageFull))]);
    w.deliver_now::<Account>(0, 0, 1, Msg::Get, Some(3));
    w.commit(0);
    assert_eq!(
        replies(&mut w),
        vec![(3, Ok(5))],
        "back at the durable state"
    );
    // A later change uses a fresh version: 2 was burnt.
    w.deliver_now::<Account>(0, 0, 1, Msg::Add(1), None);
    w.commit(0);
    assert_eq!(records(&w).last(), Some(&(1, 3, Some(6))));
}

#[test]
fn refused_append_fails_the_pass_outputs_and_restores_the_entity() {
    let mut w = world(1);
    w.deliver_now::<Account>(0, 0, 1, Msg::Add(5), None);
    w.commit(0);
    make_durable(&mut w);
    w.log_mut(0)
        .refuse(Some(LogRefusal::Failed { retryable: false }));
    w.deliver_now::<Account>(0, 0, 1, Msg::Add(1), Some(4));
    w.commit(0);
    assert_eq!(replies(&mut w), vec![(4, Err(AskError::StorageFailed))]);
    w.log_mut(0).refuse(None);
    w.deliver_now::<Account>(0, 0, 1, Msg::Get, Some(5));
    w.commit(0);
    assert_eq!(replies(&mut w), vec![(5, Ok(5))]);
}

#[test]
fn panic_puts_a_durable_entity_back_at_its_last_logged_state() {
    let mut w = world(1);
    w.deliver_now::<Account>(0, 0, 1, Msg::Add(5), None);
    w.commit(0); // logged, not yet durable
    w.deliver_now::<Account>(0, 0, 1, Msg::Boom, Some(1));
    w.deliver_now::<Account>(0, 0, 1, Msg::Get, Some(2));
    w.commit(0);
    make_durable(&mut w);
    assert_eq!(
        replies(&mut w),
        vec![(1, Err(AskError::Panicked)), (2, Ok(5))]
    );
    assert_eq!(records(&w).len(), 1, "the panicked change was never logged");
}

#[test]
fn stop_logs_a_tombstone_and_the_next_life_logs_higher_versions() {
    let mut w = world(1);
    w.deliver_now::<Account>(0, 0, 1, Msg::Add(5), None);
    w.commit(0);
    w.deliver_now::<Account>(0, 0, 1, Msg::Close, None);
    w.commit(0);
    assert_eq!(records(&w), vec![(1, 1, Some(5)), (1, 2, None)]);
    assert_eq!(w.shard_mut(0).entity_count(), 0);
    w.deliver_now::<Account>(0, 0, 1, Msg::Add(1), None);
    w.commit(0);
    assert_eq!(
        records(&w).last(),
        Some(&(1, 3, Some(1))),
        "fresh, above the tombstone"
    );
}

#[test]
fn tells_to_other_shards_and_local_entities_are_gated_too() {
    let mut w = world(2);
    let kinds = w.shard(0).kinds().clone();
    let local = (0..).find(|&k| kinds.home_shard(0, k, 2) == 0).unwrap();
    let remote = (0..).find(|&k| kinds.home_shard(0, k, 2) == 1).unwrap();
    let sender = (local + 1..)
        .find(|&k| kinds.home_shard(0, k, 2) == 0)
        .unwrap();
    // A fresh entity's first state is a change: it is logged, and what it
    // emits waits for that record.
    w.deliver_now::<Account>(0, 0, sender, Msg::Notify { to: remote }, None);
    w.deliver_now::<Account>(0, 0, sender, Msg::Notify { to: local }, None);
    assert!(w.shard_mut(0).outbox_to_shard(1).is_empty());
    assert_eq!(w.shard_mut(0).local_len(), 0);
    w.commit(0);
    assert_eq!(records(&w).len(), 1);
    assert!(
        w.shard_mut(0).outbox_to_shard(1).is_empty(),
        "held behind the first record"
    );
    assert_eq!(w.shard_mut(0).local_len(), 0, "local messages are held too");
    make_durable(&mut w);
    assert_eq!(w.shard_mut(0).outbox_to_shard(1).len(), 1);
    assert_eq!(w.shard_mut(0).local_len(), 1);
    // Now with a record in flight the same tells wait.
    w.deliver_now::<Account>(0, 0, sender, Msg::Add(1), None);
    w.deliver_now::<Account>(0, 0, sender, Msg::Notify { to: remote }, None);
    w.commit(0);
    assert_eq!(
        w.shard_mut(0).outbox_to_shard(1).len(),
        1,
        "the new tell is held"
    );
    make_durable(&mut w);
    assert_eq!(w.shard_mut(0).outbox_to_shard(1).len(), 2);
}

#[test]
fn restored_entities_come_back_and_run_their_hook() {
    let mut w = world(1);
    let hash = w.shard(0).kinds().get(0).hash;
    let before = RECOVERED.load(Ordering::Relaxed);
    w.shard_mut(0)
        .restore(
            hash,
            9,
            4,
            bytemuck::bytes_of(&Account { balance: 77 }),
            false,
        )
        .unwrap();
    assert!(
        w.shard_mut(0).restore(hash, 9, 4, &[0; 8], false).is_err(),
        "twice is an error"
    );
    assert!(
        w.shard_mut(0)
            .restore(hash, 10, 1, &[1, 2, 3], false)
            .is_err(),
        "bad bytes are an error"
    );
    w.shard_mut(0).run_recovered_hooks();
    assert_eq!(RECOVERED.load(Ordering::Relaxed) - before, 1);
    w.deliver_now::<Account>(0, 0, 9, Msg::Add(1), Some(1));
    w.commit(0);
    assert_eq!(
        records(&w),
        vec![(9, 5, Some(78))],
        "versions continue from the log"
    );
}
