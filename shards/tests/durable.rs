//! The output gate and the durable bookkeeping, checked in one thread with a
//! log that reports durability only when the test says so: a reply is never
//! released before its record is durable; changes in one pass coalesce into one
//! record; unchanged states are not logged but their replies still wait for
//! earlier records; failures and panics put entities back at their last
//! durable (or logged) state; deletions are tombstones with rising versions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use percore_shards::envelope::CLIENT_BIT;
use percore_shards::{
    AskError, Codec, Ctx, Entity, Envelope, Kinds, LogRefusal, LogSink, Op, Shard, ShardSpec,
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

/// A log that remembers what was appended and resolves nothing by itself.
#[derive(Default)]
struct TestLog {
    records: Vec<(u64, u64, Option<u64>)>, // (key, version, balance or None for a tombstone)
    resolved: u64,                         // LSNs below this are resolved
    refuse: Option<LogRefusal>,
}

impl LogSink for TestLog {
    fn append_state(
        &mut self,
        _: u64,
        key: u64,
        version: u64,
        payload: &[u8],
    ) -> Result<u64, LogRefusal> {
        if let Some(r) = &self.refuse {
            return Err(r.clone());
        }
        let a: Account = bytemuck::pod_read_unaligned(payload);
        self.records.push((key, version, Some(a.balance)));
        Ok(self.records.len() as u64 - 1)
    }

    fn append_tombstone(&mut self, _: u64, key: u64, version: u64) -> Result<u64, LogRefusal> {
        self.records.push((key, version, None));
        Ok(self.records.len() as u64 - 1)
    }

    fn unresolved_max(&self) -> Option<u64> {
        let next = self.records.len() as u64;
        (next > self.resolved).then(|| next - 1)
    }
}

fn shard(count: usize, index: usize) -> Shard {
    let mut kinds = Kinds::new();
    kinds.register_durable::<Account>(Codec::of_pod()).unwrap();
    Shard::new(
        ShardSpec {
            shard: index,
            shard_count: count,
            client_slots: 1,
            overflow_cap: 64,
        },
        Arc::new(kinds),
    )
}

fn ask(key: u64, msg: Msg, token: u64) -> Envelope {
    raw(0, key, Op::AskClient, msg).with_route(CLIENT_BIT, token)
}

fn tell(key: u64, msg: Msg) -> Envelope {
    raw(0, key, Op::Tell, msg)
}

fn replies(s: &mut Shard) -> Vec<(u64, Result<u64, AskError>)> {
    let out = s.outbox_to_client(0);
    let n = out.len();
    out.drain(n)
        .map(|env| {
            let token = env.token;
            match env.error_status() {
                Some(e) => (token, Err(e)),
                // SAFETY: replies of `Account` are `u64`.
                None => (token, Ok(unsafe { env.take::<u64>() })),
            }
        })
        .collect()
}

/// Marks everything appended so far durable and tells the shard.
fn make_durable(s: &mut Shard, log: &mut TestLog) {
    log.resolved = log.records.len() as u64;
    s.durable_through(log.resolved);
}

#[test]
fn reply_is_released_only_once_its_record_is_durable() {
    let mut s = shard(1, 0);
    let mut log = TestLog::default();
    deliver(&mut s, ask(1, Msg::Add(5), 10));
    assert!(replies(&mut s).is_empty(), "held before the pass ends");
    s.commit(&mut log);
    assert_eq!(log.records, vec![(1, 1, Some(5))]);
    assert!(
        replies(&mut s).is_empty(),
        "held while the record is in flight"
    );
    assert!(s.has_unresolved());
    make_durable(&mut s, &mut log);
    assert_eq!(replies(&mut s), vec![(10, Ok(5))]);
    assert!(!s.has_unresolved());
    assert_eq!(s.counters().gated_released, 1);
}

#[test]
fn changes_within_a_pass_coalesce_into_one_record() {
    let mut s = shard(1, 0);
    let mut log = TestLog::default();
    for _ in 0..10 {
        deliver(&mut s, tell(1, Msg::Add(1)));
    }
    deliver(&mut s, ask(1, Msg::Get, 1));
    s.commit(&mut log);
    assert_eq!(
        log.records,
        vec![(1, 1, Some(10))],
        "one record, the final state"
    );
    make_durable(&mut s, &mut log);
    assert_eq!(replies(&mut s), vec![(1, Ok(10))]);
}

#[test]
fn unchanged_state_is_not_logged_but_waits_for_earlier_records() {
    let mut s = shard(1, 0);
    let mut log = TestLog::default();
    deliver(&mut s, tell(1, Msg::Add(3)));
    s.commit(&mut log);
    assert_eq!(log.records.len(), 1);
    // Next pass: a read of the new, not yet durable, state.
    deliver(&mut s, ask(1, Msg::Get, 7));
    s.commit(&mut log);
    assert_eq!(log.records.len(), 1, "nothing changed, nothing logged");
    assert!(
        replies(&mut s).is_empty(),
        "the read depends on the record in flight"
    );
    make_durable(&mut s, &mut log);
    assert_eq!(replies(&mut s), vec![(7, Ok(3))]);
    // With nothing in flight, a read goes out at the end of its pass.
    deliver(&mut s, ask(1, Msg::Get, 8));
    s.commit(&mut log);
    assert_eq!(replies(&mut s), vec![(8, Ok(3))]);
}

#[test]
fn failed_record_restores_the_last_durable_state_and_fails_the_reply() {
    let mut s = shard(1, 0);
    let mut log = TestLog::default();
    deliver(&mut s, tell(1, Msg::Add(5)));
    s.commit(&mut log);
    make_durable(&mut s, &mut log);
    deliver(&mut s, ask(1, Msg::Add(7), 2));
    s.commit(&mut log);
    assert_eq!(log.records.last(), Some(&(1, 2, Some(12))));
    // The disk filled up: record 1 failed.
    s.failed(1..2, AskError::StorageFull);
    log.resolved = 2;
    assert_eq!(replies(&mut s), vec![(2, Err(AskError::StorageFull))]);
    deliver(&mut s, ask(1, Msg::Get, 3));
    s.commit(&mut log);
    assert_eq!(
        replies(&mut s),
        vec![(3, Ok(5))],
        "back at the durable state"
    );
    // A later change uses a fresh version: 2 was burnt.
    deliver(&mut s, tell(1, Msg::Add(1)));
    s.commit(&mut log);
    assert_eq!(log.records.last(), Some(&(1, 3, Some(6))));
}

#[test]
fn refused_append_fails_the_pass_outputs_and_restores_the_entity() {
    let mut s = shard(1, 0);
    let mut log = TestLog::default();
    deliver(&mut s, tell(1, Msg::Add(5)));
    s.commit(&mut log);
    make_durable(&mut s, &mut log);
    log.refuse = Some(LogRefusal::Failed { retryable: false });
    deliver(&mut s, ask(1, Msg::Add(1), 4));
    s.commit(&mut log);
    assert_eq!(replies(&mut s), vec![(4, Err(AskError::StorageFailed))]);
    log.refuse = None;
    deliver(&mut s, ask(1, Msg::Get, 5));
    s.commit(&mut log);
    assert_eq!(replies(&mut s), vec![(5, Ok(5))]);
}

#[test]
fn panic_puts_a_durable_entity_back_at_its_last_logged_state() {
    let mut s = shard(1, 0);
    let mut log = TestLog::default();
    deliver(&mut s, tell(1, Msg::Add(5)));
    s.commit(&mut log); // logged, not yet durable
    deliver(&mut s, ask(1, Msg::Boom, 1));
    deliver(&mut s, ask(1, Msg::Get, 2));
    s.commit(&mut log);
    make_durable(&mut s, &mut log);
    assert_eq!(
        replies(&mut s),
        vec![(1, Err(AskError::Panicked)), (2, Ok(5))]
    );
    assert_eq!(log.records.len(), 1, "the panicked change was never logged");
}

#[test]
fn stop_logs_a_tombstone_and_the_next_life_logs_higher_versions() {
    let mut s = shard(1, 0);
    let mut log = TestLog::default();
    deliver(&mut s, tell(1, Msg::Add(5)));
    s.commit(&mut log);
    deliver(&mut s, tell(1, Msg::Close));
    s.commit(&mut log);
    assert_eq!(log.records, vec![(1, 1, Some(5)), (1, 2, None)]);
    assert_eq!(s.entity_count(), 0);
    deliver(&mut s, tell(1, Msg::Add(1)));
    s.commit(&mut log);
    assert_eq!(
        log.records.last(),
        Some(&(1, 3, Some(1))),
        "fresh, above the tombstone"
    );
}

#[test]
fn tells_to_other_shards_and_local_entities_are_gated_too() {
    let mut s = shard(2, 0);
    let mut log = TestLog::default();
    let kinds = s.kinds().clone();
    let local = (0..).find(|&k| kinds.home_shard(0, k, 2) == 0).unwrap();
    let remote = (0..).find(|&k| kinds.home_shard(0, k, 2) == 1).unwrap();
    let sender = (local + 1..)
        .find(|&k| kinds.home_shard(0, k, 2) == 0)
        .unwrap();
    // A fresh entity's first state is a change: it is logged, and what it
    // emits waits for that record.
    deliver(&mut s, tell(sender, Msg::Notify { to: remote }));
    deliver(&mut s, tell(sender, Msg::Notify { to: local }));
    assert!(s.outbox_to_shard(1).is_empty());
    assert_eq!(s.local_len(), 0);
    s.commit(&mut log);
    assert_eq!(log.records.len(), 1);
    assert!(
        s.outbox_to_shard(1).is_empty(),
        "held behind the first record"
    );
    assert_eq!(s.local_len(), 0, "local messages are held too");
    make_durable(&mut s, &mut log);
    assert_eq!(s.outbox_to_shard(1).len(), 1);
    assert_eq!(s.local_len(), 1);
    // Now with a record in flight the same tells wait.
    deliver(&mut s, tell(sender, Msg::Add(1)));
    deliver(&mut s, tell(sender, Msg::Notify { to: remote }));
    s.commit(&mut log);
    assert_eq!(s.outbox_to_shard(1).len(), 1, "the new tell is held");
    make_durable(&mut s, &mut log);
    assert_eq!(s.outbox_to_shard(1).len(), 2);
}

#[test]
fn restored_entities_come_back_and_run_their_hook() {
    let mut s = shard(1, 0);
    let hash = s.kinds().get(0).hash;
    let before = RECOVERED.load(Ordering::Relaxed);
    s.restore(
        hash,
        9,
        4,
        bytemuck::bytes_of(&Account { balance: 77 }),
        false,
    )
    .unwrap();
    assert!(
        s.restore(hash, 9, 4, &[0; 8], false).is_err(),
        "twice is an error"
    );
    assert!(
        s.restore(hash, 10, 1, &[1, 2, 3], false).is_err(),
        "bad bytes are an error"
    );
    s.run_recovered_hooks();
    assert_eq!(RECOVERED.load(Ordering::Relaxed) - before, 1);
    let mut log = TestLog::default();
    deliver(&mut s, ask(9, Msg::Add(1), 1));
    s.commit(&mut log);
    assert_eq!(
        log.records,
        vec![(9, 5, Some(78))],
        "versions continue from the log"
    );
}
