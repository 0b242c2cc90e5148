//! Durable kinds on the real engine (contract §6 and §8), across restarts on
//! one data directory:
//!
//! - a restart with another shard count (1 → 2 → 1) recovers every entity
//!   exactly once at its latest state;
//! - the `recovered` hook runs once per recovered entity, before any message;
//! - a panicking durable handler puts its entity back at its last logged state
//!   (not a fresh one) and its asker gets `AskError::Panicked`;
//! - `ctx.stop()` deletes a durable entity: it is not recovered, its next life
//!   is, with versions that keep increasing;
//! - a `bytemuck::Pod` state round-trips with no encoding code;
//! - durability "off" serves but recovers nothing;
//! - changes made within one pass coalesce into fewer records than messages;
//! - twenty restarts with a little traffic each leave no segments behind, and
//!   restarts after torn tails checkpoint soon enough to keep the log bounded.
//!
//! Two tests began as reproductions of engine bugs (since fixed): entities
//! moved by a shard-count change lost when the shard whose log held them
//! checkpointed; and a shard stalling for good under CPU contention.

mod common_durable;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use percore::bytemuck::{Pod, Zeroable};
use percore::log::{
    list_segments, list_shard_dirs, recover_data_dir, recover_shard, shard_dir, RecordType,
};
use percore::{AskError, ClientAskError, Ctx, DurabilityLevel, DurableState, Engine, Entity};

use common_durable::{
    durable_engine, guarded, keys_on_shard, wait_for_metrics, DataDir, SEGMENT_LEN_BYTES,
};

/// Checkpoint threshold that no test here reaches unless it means to.
const NO_CHECKPOINT: u64 = 1 << 30;

/// A durable counter with a hand-written 16-byte encoding.
struct Cell {
    value: u64,
    writes: u64,
}

enum CellMsg {
    Add(u64),
    Get,
    /// Changes the state, then panics: the change must not survive.
    AddThenPanic(u64),
    /// Deletes the entity after replying.
    Stop,
}

impl Entity for Cell {
    const KIND: &'static str = "durable_engine.cell";
    type Msg = CellMsg;
    /// `(value, writes)`.
    type Reply = (u64, u64);

    fn activate(_key: u64) -> Self {
        Cell {
            value: 0,
            writes: 0,
        }
    }

    fn handle(&mut self, msg: CellMsg, ctx: &mut Ctx<'_, Self>) -> (u64, u64) {
        match msg {
            CellMsg::Add(n) => {
                self.value += n;
                self.writes += 1;
            }
            CellMsg::Get => {}
            CellMsg::AddThenPanic(n) => {
                self.value += n;
                self.writes += 1;
                panic!("cell {} was told to panic", ctx.key());
            }
            CellMsg::Stop => ctx.stop(),
        }
        (self.value, self.writes)
    }
}

impl DurableState for Cell {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.value.to_le_bytes());
        out.extend_from_slice(&self.writes.to_le_bytes());
    }

    fn decode(key: u64, bytes: &[u8]) -> Result<Self, percore::DecodeError> {
        if bytes.len() != 16 {
            return Err(format!("cell {key}: {} bytes, expected 16", bytes.len()).into());
        }
        let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
        Ok(Cell {
            value: word(0),
            writes: word(8),
        })
    }
}

/// A durable entity with an 8 KiB state, to fill a shard's log quickly.
struct Wide {
    bumps: u64,
}

const WIDE_LEN_BYTES: usize = 8 << 10;

impl Entity for Wide {
    const KIND: &'static str = "durable_engine.wide";
    type Msg = ();
    type Reply = u64;

    fn activate(_key: u64) -> Self {
        Wide { bumps: 0 }
    }

    fn handle(&mut self, (): (), _ctx: &mut Ctx<'_, Self>) -> u64 {
        self.bumps += 1;
        self.bumps
    }
}

impl DurableState for Wide {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bumps.to_le_bytes());
        out.resize(WIDE_LEN_BYTES, 0xa5);
    }

    fn decode(key: u64, bytes: &[u8]) -> Result<Self, percore::DecodeError> {
        if bytes.len() != WIDE_LEN_BYTES {
            return Err(format!("wide {key}: {} bytes", bytes.len()).into());
        }
        Ok(Wide {
            bumps: u64::from_le_bytes(bytes[..8].try_into().unwrap()),
        })
    }
}

fn cell_engine(dir: &Path, shards: usize) -> Engine {
    durable_engine(dir, shards, NO_CHECKPOINT)
        .register_durable::<Cell>()
        .build()
        .expect("engine starts")
}

fn get(client: &percore::Client, key: u64) -> (u64, u64) {
    client.ask::<Cell>(key, CellMsg::Get).expect("get")
}

#[test]
fn restart_with_another_shard_count_recovers_every_entity_once_at_its_latest_state() {
    const CELLS: u64 = 300;
    let dir = DataDir::new("reshard");
    let path = dir.path().to_path_buf();
    guarded("three lives on 1, 2 and 1 shards", move || {
        // Life 1, one shard: cell k holds k + 1 after one write.
        let engine = cell_engine(&path, 1);
        assert_eq!(engine.recovery().entities, 0, "a fresh directory");
        let client = engine.client().unwrap();
        for key in 0..CELLS {
            assert_eq!(
                client.ask::<Cell>(key, CellMsg::Add(key + 1)).unwrap(),
                (key + 1, 1)
            );
        }
        drop(client);
        engine.shutdown().unwrap();

        // Life 2, two shards: every cell is back, wherever its home is now;
        // then each gets a second write.
        let engine = cell_engine(&path, 2);
        assert_eq!(engine.recovery().entities, CELLS);
        let client = engine.client().unwrap();
        let mut on_shard = [0u64; 2];
        for key in 0..CELLS {
            on_shard[engine.shard_of::<Cell>(key).unwrap()] += 1;
            assert_eq!(get(&client, key), (key + 1, 1), "cell {key} in life 2");
            client.ask::<Cell>(key, CellMsg::Add(1000)).unwrap();
        }
        assert!(
            on_shard.iter().all(|&n| n > 0),
            "both shards own cells: {on_shard:?}"
        );
        let live = engine.metrics().total().entities;
        assert_eq!(live, CELLS, "no cell was activated twice");
        drop(client);
        engine.shutdown().unwrap();

        // Life 3, one shard again: the latest state of each, once.
        let engine = cell_engine(&path, 1);
        assert_eq!(engine.recovery().entities, CELLS);
        let client = engine.client().unwrap();
        let mut sum = 0;
        for key in 0..CELLS {
            let (value, writes) = get(&client, key);
            assert_eq!((value, writes), (key + 1001, 2), "cell {key} in life 3");
            sum += value;
        }
        assert_eq!(sum, CELLS * (CELLS + 1) / 2 + CELLS * 1000);
        assert_eq!(engine.metrics().total().activations, 0, "nothing fresh");
        drop(client);
        engine.shutdown().unwrap();
    });
}

#[test]
fn entities_moved_by_a_shard_count_change_survive_a_checkpoint_of_the_shard_that_logged_them() {
    const CELLS: u64 = 200;
    let dir = DataDir::new("reshard-checkpoint");
    let path = dir.path().to_path_buf();
    guarded("a checkpoint after a reshard", move || {
        // Life 1, one shard: every cell is logged in shard 0's log.
        let engine = cell_engine(&path, 1);
        let client = engine.client().unwrap();
        for key in 0..CELLS {
            client.ask::<Cell>(key, CellMsg::Add(key + 1)).unwrap();
        }
        drop(client);
        engine.shutdown().unwrap();

        // Life 2, two shards, checkpoints every megabyte: half the cells now
        // live on shard 1, their only records still in shard 0's log. Shard
        // 0 alone gets traffic until it has checkpointed (and so deleted its
        // old segments). The cells themselves are not touched.
        let engine = durable_engine(path.as_path(), 2, common_durable::SEGMENT_LEN_BYTES)
            .register_durable::<Cell>()
            .register_durable::<Wide>()
            .build()
            .unwrap();
        assert_eq!(engine.recovery().entities, CELLS);
        let moved = (0..CELLS)
            .filter(|&k| engine.shard_of::<Cell>(k) == Some(1))
            .count();
        assert!(moved > 0, "some cells moved to shard 1");
        let wides = keys_on_shard::<Wide>(&engine, 0, 0, 8);
        let client = engine.client().unwrap();
        let mut asks = 0;
        while engine.metrics().shards[0].checkpoints == 0 {
            // 8 KiB per record: a checkpoint is due every ~130 asks.
            assert!(asks < 100_000, "shard 0 never checkpointed");
            client.ask::<Wide>(wides[asks % wides.len()], ()).unwrap();
            asks += 1;
        }
        drop(client);
        engine.shutdown().unwrap();

        // Life 3, one shard: every cell is still there.
        let engine = cell_engine_with_wide(&path);
        let client = engine.client().unwrap();
        let lost: Vec<u64> = (0..CELLS)
            .filter(|&key| get(&client, key) != (key + 1, 1))
            .collect();
        assert!(
            lost.is_empty(),
            "{} of {CELLS} cells came back fresh after shard 0 checkpointed \
             (they had moved to shard 1, which never logged them): {lost:?}",
            lost.len()
        );
        drop(client);
        engine.shutdown().unwrap();
    });
}

fn cell_engine_with_wide(dir: &Path) -> Engine {
    durable_engine(dir, 1, NO_CHECKPOINT)
        .register_durable::<Cell>()
        .register_durable::<Wide>()
        .build()
        .expect("engine starts")
}

/// Calls of `Hooked::recovered`, all lives of the test.
static HOOKS: AtomicU64 = AtomicU64::new(0);

/// Counts what happens to it around recovery.
struct Hooked {
    /// Persisted.
    value: u64,
    /// Persisted: messages its `recovered` hook sent it.
    from_hook: u64,
    /// Not persisted: set by the hook.
    hooked: bool,
    /// Not persisted: messages handled in this life.
    handled: u64,
    /// Not persisted: `handled` when the hook ran.
    handled_at_hook: u64,
}

enum HookedMsg {
    Set(u64),
    FromHook,
    Get,
}

#[derive(Debug, PartialEq, Eq)]
struct HookedView {
    value: u64,
    from_hook: u64,
    hooked: bool,
    handled_at_hook: u64,
}

impl Entity for Hooked {
    const KIND: &'static str = "durable_engine.hooked";
    type Msg = HookedMsg;
    type Reply = HookedView;

    fn activate(_key: u64) -> Self {
        Hooked {
            value: 0,
            from_hook: 0,
            hooked: false,
            handled: 0,
            handled_at_hook: 0,
        }
    }

    fn handle(&mut self, msg: HookedMsg, _ctx: &mut Ctx<'_, Self>) -> HookedView {
        self.handled += 1;
        match msg {
            HookedMsg::Set(v) => self.value = v,
            HookedMsg::FromHook => self.from_hook += 1,
            HookedMsg::Get => {}
        }
        HookedView {
            value: self.value,
            from_hook: self.from_hook,
            hooked: self.hooked,
            handled_at_hook: self.handled_at_hook,
        }
    }

    fn recovered(&mut self, ctx: &mut Ctx<'_, Self>) {
        HOOKS.fetch_add(1, Ordering::SeqCst);
        self.hooked = true;
        self.handled_at_hook = self.handled;
        ctx.tell::<Hooked>(ctx.key(), HookedMsg::FromHook)
            .expect("a hook can send");
    }
}

impl DurableState for Hooked {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.value.to_le_bytes());
        out.extend_from_slice(&self.from_hook.to_le_bytes());
    }

    fn decode(key: u64, bytes: &[u8]) -> Result<Self, percore::DecodeError> {
        if bytes.len() != 16 {
            return Err(format!("hooked {key}: {} bytes", bytes.len()).into());
        }
        let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
        Ok(Hooked {
            value: word(0),
            from_hook: word(8),
            ..Hooked::activate(key)
        })
    }
}

#[test]
fn recovered_hook_runs_once_per_recovered_entity_before_any_message() {
    const KEYS: u64 = 100;
    let dir = DataDir::new("hook");
    let path = dir.path().to_path_buf();
    guarded("three lives with hooks", move || {
        let start = |shards| {
            durable_engine(path.as_path(), shards, NO_CHECKPOINT)
                .register_durable::<Hooked>()
                .build()
                .unwrap()
        };
        let engine = start(2);
        let client = engine.client().unwrap();
        for key in 0..KEYS {
            let v = client.ask::<Hooked>(key, HookedMsg::Set(key * 3)).unwrap();
            assert!(!v.hooked, "a fresh entity is not recovered");
        }
        drop(client);
        engine.shutdown().unwrap();
        assert_eq!(HOOKS.load(Ordering::SeqCst), 0, "no hook without recovery");

        for life in 1..=2u64 {
            let engine = start(if life == 1 { 1 } else { 2 });
            assert_eq!(engine.recovery().entities, KEYS);
            // Every hook ran while the engine started, before `build` returned.
            assert_eq!(HOOKS.load(Ordering::SeqCst), life * KEYS);
            let client = engine.client().unwrap();
            for key in 0..KEYS {
                let v = client.ask::<Hooked>(key, HookedMsg::Get).unwrap();
                assert_eq!(v.value, key * 3, "key {key}");
                assert!(v.hooked, "key {key}: a message came before the hook");
                assert_eq!(v.handled_at_hook, 0, "key {key}: handled before its hook");
            }
            // The hook's own message arrives too (from the shard, so in no
            // promised order with the client's): wait for all of them.
            for key in 0..KEYS {
                let deadline = std::time::Instant::now() + common_durable::HANG_GUARD;
                loop {
                    let v = client.ask::<Hooked>(key, HookedMsg::Get).unwrap();
                    if v.from_hook == life {
                        break;
                    }
                    assert!(v.from_hook < life, "key {key}: hook message twice");
                    assert!(std::time::Instant::now() < deadline, "hook message lost");
                }
            }
            assert_eq!(HOOKS.load(Ordering::SeqCst), life * KEYS, "once each");
            drop(client);
            engine.shutdown().unwrap();
        }
    });
}

#[test]
fn panicking_durable_handler_restores_its_last_logged_state() {
    let dir = DataDir::new("panic");
    let path = dir.path().to_path_buf();
    guarded("panics in durable handlers", move || {
        let engine = cell_engine(&path, 2);
        let client = engine.client().unwrap();
        for (key, shard) in [(0, 0), (1, 1)] {
            let key = keys_on_shard::<Cell>(&engine, shard, key * 1000, 1)[0];
            for _ in 0..3 {
                client.ask::<Cell>(key, CellMsg::Add(5)).unwrap();
            }
            assert_eq!(
                client
                    .ask::<Cell>(key, CellMsg::AddThenPanic(100))
                    .map_err(AskError::from),
                Err(AskError::Panicked)
            );
            assert_eq!(get(&client, key), (15, 3), "back at its last logged state");
            // A told panic too: the next ask sees the same state.
            client
                .tell::<Cell>(key, CellMsg::AddThenPanic(100))
                .unwrap();
            assert_eq!(get(&client, key), (15, 3));
            client.ask::<Cell>(key, CellMsg::Add(1)).unwrap();
        }
        // An entity whose first message panics has no logged state: it starts
        // afresh, as a plain entity would.
        let fresh = 777;
        assert_eq!(
            client
                .ask::<Cell>(fresh, CellMsg::AddThenPanic(9))
                .map_err(AskError::from),
            Err(AskError::Panicked)
        );
        assert_eq!(get(&client, fresh), (0, 0));
        let m = wait_for_metrics(&engine, "five panics counted", |m| m.total().panics >= 5);
        assert_eq!(m.total().panics, 5);
        drop(client);
        engine.shutdown().unwrap();

        // The restored state is what the log holds, not just what memory held.
        let engine = cell_engine(&path, 2);
        let client = engine.client().unwrap();
        for (key, shard) in [(0, 0), (1, 1)] {
            let key = keys_on_shard::<Cell>(&engine, shard, key * 1000, 1)[0];
            assert_eq!(get(&client, key), (16, 4), "key {key} after restart");
        }
        drop(client);
        engine.shutdown().unwrap();
    });
}

#[test]
fn stopped_durable_entity_is_deleted_and_its_next_life_is_recovered() {
    let dir = DataDir::new("stop");
    let path = dir.path().to_path_buf();
    guarded("a deletion across restarts", move || {
        let key = 42;
        let engine = cell_engine(&path, 2);
        let client = engine.client().unwrap();
        assert_eq!(client.ask::<Cell>(key, CellMsg::Add(7)).unwrap(), (7, 1));
        assert_eq!(client.ask::<Cell>(key, CellMsg::Add(7)).unwrap(), (14, 2));
        assert_eq!(client.ask::<Cell>(key, CellMsg::Stop).unwrap(), (14, 2));
        drop(client);
        engine.shutdown().unwrap();

        // Deleted: not recovered, a fresh activation; then a new life.
        let engine = cell_engine(&path, 2);
        assert_eq!(
            engine.recovery().entities,
            0,
            "a deleted entity stays deleted"
        );
        let client = engine.client().unwrap();
        assert_eq!(get(&client, key), (0, 0), "a fresh activation");
        assert_eq!(client.ask::<Cell>(key, CellMsg::Add(3)).unwrap(), (3, 1));
        drop(client);
        engine.shutdown().unwrap();

        // The new life is recovered.
        let engine = cell_engine(&path, 1);
        assert_eq!(engine.recovery().entities, 1);
        let client = engine.client().unwrap();
        assert_eq!(get(&client, key), (3, 1));
        drop(client);
        engine.shutdown().unwrap();

        // In the log: every state of the first life is below the tombstone,
        // every state of the new life above it.
        let kind = percore::log::kind_hash(Cell::KIND);
        let mut first_life = Vec::new();
        let mut tombstones = Vec::new();
        let mut new_life = Vec::new();
        for (_, log) in recover_data_dir(path.as_path()).unwrap() {
            for r in log.records() {
                if r.header.kind != kind || r.header.key != key {
                    continue;
                }
                match r.record_type() {
                    RecordType::Tombstone => tombstones.push(r.header.version),
                    RecordType::State => {
                        let cell = Cell::decode(key, r.payload).unwrap();
                        if cell.value >= 7 {
                            first_life.push(r.header.version);
                        } else {
                            new_life.push(r.header.version);
                        }
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(tombstones.len(), 1, "one deletion logged");
        let deleted_at = tombstones[0];
        assert!(!first_life.is_empty() && !new_life.is_empty());
        assert!(
            first_life.iter().all(|&v| v < deleted_at),
            "first life {first_life:?}, tombstone {deleted_at}"
        );
        assert!(
            new_life.iter().all(|&v| v > deleted_at),
            "new life {new_life:?}, tombstone {deleted_at}"
        );
    });
}

/// A plain-old-data state: logged as its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[bytemuck(crate = "percore::bytemuck")]
#[repr(C)]
struct Tally {
    count: u64,
    sum: u64,
    last: u64,
}

enum TallyMsg {
    Add(u64),
    Get,
}

impl Entity for Tally {
    const KIND: &'static str = "durable_engine.tally";
    type Msg = TallyMsg;
    type Reply = Tally;

    fn activate(_key: u64) -> Self {
        Tally::zeroed()
    }

    fn handle(&mut self, msg: TallyMsg, _ctx: &mut Ctx<'_, Self>) -> Tally {
        if let TallyMsg::Add(n) = msg {
            self.count += 1;
            self.sum += n;
            self.last = n;
        }
        *self
    }
}

#[test]
fn pod_state_round_trips_through_the_log() {
    const KEYS: u64 = 64;
    let dir = DataDir::new("pod");
    let path = dir.path().to_path_buf();
    guarded("pod states across a restart", move || {
        let start = |shards| {
            durable_engine(path.as_path(), shards, NO_CHECKPOINT)
                .register_durable_pod::<Tally>()
                .build()
                .unwrap()
        };
        let expected = |key: u64| Tally {
            count: 5,
            sum: (key + 1) * 15,
            last: (key + 1) * 5,
        };
        let engine = start(2);
        let client = engine.client().unwrap();
        for key in 0..KEYS {
            for i in 1..=5 {
                client
                    .tell::<Tally>(key, TallyMsg::Add((key + 1) * i))
                    .unwrap();
            }
            assert_eq!(
                client.ask::<Tally>(key, TallyMsg::Get).unwrap(),
                expected(key)
            );
        }
        drop(client);
        engine.shutdown().unwrap();

        let engine = start(1);
        assert_eq!(engine.recovery().entities, KEYS);
        let client = engine.client().unwrap();
        for key in 0..KEYS {
            assert_eq!(
                client.ask::<Tally>(key, TallyMsg::Get).unwrap(),
                expected(key)
            );
        }
        drop(client);
        engine.shutdown().unwrap();

        // The payload is the value's bytes, as they are.
        let kind = percore::log::kind_hash(Tally::KIND);
        let logs = recover_data_dir(path.as_path()).unwrap();
        let payload = logs
            .iter()
            .flat_map(|(_, log)| log.records())
            .filter(|r| r.header.kind == kind && r.header.key == 3)
            .max_by_key(|r| r.header.version)
            .map(|r| r.payload.to_vec())
            .expect("key 3 is logged");
        assert_eq!(payload, bytemuck_bytes(&expected(3)));
    });
}

fn bytemuck_bytes(t: &Tally) -> Vec<u8> {
    percore::bytemuck::bytes_of(t).to_vec()
}

#[test]
fn durability_off_serves_but_recovers_nothing() {
    let dir = DataDir::new("off");
    let path = dir.path().to_path_buf();
    guarded("durability off", move || {
        let start = |level| {
            durable_engine(path.as_path(), 2, NO_CHECKPOINT)
                .durability(level)
                .register_durable::<Cell>()
                .build()
                .unwrap()
        };
        let engine = start(DurabilityLevel::Off);
        let client = engine.client().unwrap();
        for key in 0..50 {
            client.tell::<Cell>(key, CellMsg::Add(key)).unwrap();
            assert_eq!(
                client.ask::<Cell>(key, CellMsg::Add(1)).unwrap(),
                (key + 1, 2)
            );
        }
        drop(client);
        engine.shutdown().unwrap();

        for level in [DurabilityLevel::Off, DurabilityLevel::Synced] {
            let engine = start(level);
            let r = engine.recovery();
            assert_eq!((r.entities, r.records), (0, 0), "{level:?}: {r:?}");
            let client = engine.client().unwrap();
            assert_eq!(get(&client, 7), (0, 0), "{level:?}: a fresh cell");
            drop(client);
            engine.shutdown().unwrap();
        }
    });
}

#[test]
fn changes_within_a_pass_coalesce_into_fewer_records_than_messages() {
    const MESSAGES: u64 = 20_000;
    let dir = DataDir::new("coalesce");
    let path = dir.path().to_path_buf();
    guarded("a burst of tells", move || {
        let engine = cell_engine(&path, 1);
        let client = engine.client().unwrap();
        let key = 5;
        let sent = client
            .tell_batch::<Cell, _>((0..MESSAGES).map(|_| (key, CellMsg::Add(1))))
            .unwrap();
        assert_eq!(sent as u64, MESSAGES);
        assert_eq!(get(&client, key), (MESSAGES, MESSAGES));
        // Shards publish metrics after their passes: wait for the one that
        // released the reply (every output of a durable handler is gated).
        let m = wait_for_metrics(&engine, "every message handled", |m| {
            m.total().handled > MESSAGES && m.total().gated_released >= 1
        });
        let logged = m.total().records_logged;
        // One entity, many messages per pass (a pass drains up to a batch of
        // each ring): at most one record per pass.
        assert!(
            (1..MESSAGES).contains(&logged),
            "{logged} records for {MESSAGES} changes"
        );
        drop(client);
        engine.shutdown().unwrap();

        let engine = cell_engine(&path, 1);
        let client = engine.client().unwrap();
        assert_eq!(
            get(&client, key),
            (MESSAGES, MESSAGES),
            "the last change is logged"
        );
        drop(client);
        engine.shutdown().unwrap();
    });
}

/// Asks another durable entity from its handler and counts the answer.
struct Relay {
    count: u64,
}

enum RelayMsg {
    /// From a client: count, and ask `to` to count too.
    Forward(u64),
    /// From another relay.
    Bump,
    /// The answer to a `Bump`.
    Answered,
}

impl Entity for Relay {
    const KIND: &'static str = "durable_engine.relay";
    type Msg = RelayMsg;
    type Reply = u64;

    fn activate(_key: u64) -> Self {
        Relay { count: 0 }
    }

    fn handle(&mut self, msg: RelayMsg, ctx: &mut Ctx<'_, Self>) -> u64 {
        self.count += 1;
        if let RelayMsg::Forward(to) = msg {
            ctx.ask::<Relay, _>(to, RelayMsg::Bump, |_| RelayMsg::Answered)
                .expect("room to send");
        }
        self.count
    }
}

impl DurableState for Relay {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.count.to_le_bytes());
        // A kilobyte per record, like an entity with some real state.
        out.resize(1024, 0);
    }

    fn decode(key: u64, bytes: &[u8]) -> Result<Self, percore::DecodeError> {
        let count = bytes
            .get(..8)
            .ok_or_else(|| format!("relay {key}: {} bytes", bytes.len()))?;
        Ok(Relay {
            count: u64::from_le_bytes(count.try_into().unwrap()),
        })
    }
}

#[test]
fn durable_asks_between_entities_on_two_busy_shards_never_stall() {
    const ROUNDS: usize = 8;
    const THREADS: u64 = 32;
    const ASKS: u64 = 1_500;
    /// Far beyond any ask's latency: only a stalled engine reaches it.
    const STALL: std::time::Duration = std::time::Duration::from_secs(30);
    for round in 0..ROUNDS {
        let dir = DataDir::new("relay");
        let engine = durable_engine(dir.path(), 2, NO_CHECKPOINT)
            .register_durable::<Relay>()
            .build()
            .unwrap();
        let stalled = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let client = engine.client().unwrap();
                let stalled = &stalled;
                scope.spawn(move || {
                    let mut x = thread + 1;
                    for _ in 0..ASKS {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let (from, to) = (x % 200, (x >> 20) % 200);
                        match client.ask_timeout::<Relay>(from, RelayMsg::Forward(to), STALL) {
                            Ok(_) => {}
                            Err(ClientAskError::Failed(AskError::Timeout)) => {
                                stalled.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            Err(e) => panic!("ask failed: {e}"),
                        }
                    }
                });
            }
        });
        let stalled = stalled.into_inner();
        if stalled > 0 {
            let metrics = engine.metrics();
            // A stalled shard never reaches quiescence: do not wait for it.
            std::mem::forget(engine);
            panic!(
                "round {round}: {stalled} client threads got no reply within {STALL:?}; \
                 shards: {:?}",
                metrics.shards
            );
        }
        engine.shutdown().unwrap();
    }
}

/// Per shard log under `dir`: its segment files and their bytes on disk.
fn log_footprint(dir: &Path) -> Vec<(usize, u64)> {
    list_shard_dirs(dir)
        .unwrap()
        .iter()
        .map(|(_, shard)| {
            let segments = list_segments(shard).unwrap();
            let bytes = segments
                .iter()
                .map(|(_, path)| std::fs::metadata(path).unwrap().len())
                .sum();
            (segments.len(), bytes)
        })
        .collect()
}

#[test]
fn twenty_restarts_with_a_little_traffic_each_leave_no_segments_behind() {
    let dir = DataDir::new("restarts");
    let path = dir.path().to_path_buf();
    guarded("twenty lives with a little traffic each", move || {
        for life in 1..=20u64 {
            let engine = cell_engine(&path, 2);
            let client = engine.client().unwrap();
            for key in 0..8 {
                assert_eq!(
                    client.ask::<Cell>(key, CellMsg::Add(1)).unwrap(),
                    (life, life),
                    "cell {key} in life {life}"
                );
            }
            drop(client);
            engine.shutdown().unwrap();
            let footprint = log_footprint(&path);
            assert_eq!(footprint.len(), 2);
            for (shard, &(files, bytes)) in footprint.iter().enumerate() {
                // The segment written and the one prepared ahead of it.
                assert!(
                    files <= 2 && bytes <= 2 * SEGMENT_LEN_BYTES,
                    "life {life}, shard {shard}: {files} segments, {bytes} bytes"
                );
            }
        }
    });
}

/// Writes garbage after the last record of the shard log in `shard`, as a
/// power failure in the middle of a flush leaves it: that segment cannot be
/// appended to.
fn tear_tail(shard: &Path) {
    let recovered = recover_shard(shard).unwrap();
    let (path, valid_len) = recovered
        .segments()
        .filter(|&(_, _, valid_len)| valid_len > 0)
        .map(|(_, path, valid_len)| (path.to_path_buf(), valid_len))
        .last()
        .expect("a segment holds records");
    drop(recovered);
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(&[0xee; 48], valid_len as u64)
        .unwrap();
}

#[test]
fn restarts_after_torn_tails_checkpoint_and_reclaim_the_segments_they_leave() {
    let dir = DataDir::new("torn-restarts");
    let path = dir.path().to_path_buf();
    guarded("twenty lives, each ending in a torn tail", move || {
        let mut checkpoints = 0;
        for life in 1..=20u64 {
            // Checkpoints every two segments' worth: each torn tail leaves
            // most of a segment unused, and that counts.
            let engine = durable_engine(&path, 1, 2 * SEGMENT_LEN_BYTES)
                .register_durable::<Cell>()
                .build()
                .unwrap();
            // The last life's torn tail, and those of torn segments no
            // checkpoint has deleted yet.
            assert_eq!(engine.recovery().torn_tails > 0, life > 1);
            let client = engine.client().unwrap();
            for key in 0..8 {
                assert_eq!(
                    client.ask::<Cell>(key, CellMsg::Add(1)).unwrap(),
                    (life, life),
                    "cell {key} in life {life}"
                );
            }
            drop(client);
            checkpoints += engine.shutdown().unwrap().total().checkpoints;
            tear_tail(&shard_dir(&path, 0));
            // At most: two torn segments, the one written last and the one
            // prepared ahead; the next start checkpoints and deletes the first
            // three.
            let footprint = log_footprint(&path);
            let (files, bytes) = footprint[0];
            assert!(
                files <= 4 && bytes <= 4 * SEGMENT_LEN_BYTES,
                "life {life}: {files} segments, {bytes} bytes ({checkpoints} checkpoints)"
            );
        }
        assert!(checkpoints >= 5, "only {checkpoints} checkpoints");
    });
}
