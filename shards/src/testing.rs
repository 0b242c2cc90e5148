//! One seeded test world for the whole shard (feature `testing`).
//!
//! A [`World`] stands in for the runtime the way a deterministic simulation
//! does: N [`Shard`]s built from one [`Kinds`], client slots, a clock, bounded
//! rings between shards and to clients (tiny by default, so overflow queues
//! fill), and an in-memory log per shard ([`MemLog`]) that becomes durable,
//! or fails, when the world says so. [`World::step`] does one thing chosen by
//! the world's seeded [`Rng`] — delivers some envelopes from one ring or client
//! queue, runs part of a local queue, fires due timers, publishes outboxes,
//! flushes a log, hands replies to a client, ends a heat window, carries out
//! moves — so every seed explores a different interleaving and a failing seed
//! replays exactly. [`World::crash`] drops every shard and everything in
//! memory and rebuilds the shards from what the logs made durable, through
//! the recovery fold, as the engine does at start.
//!
//! Directed tests use the same world without the dice: [`World::settle`]
//! delivers everything in FIFO order, and the shards, logs and outboxes are
//! reachable one by one. [`Counted`] is a payload wrapper that counts
//! constructions and drops, so a simulation can tell that every message was
//! dropped exactly once.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;

use crate::entity::Entity;
use crate::envelope::{Envelope, Op};
use crate::error::AskError;
use crate::id::{KindId, SenderId, CLIENT_BIT};
use crate::kinds::Kinds;
use crate::log::fold::{Fold, StoredId};
use crate::log::{LogRefusal, LogSink};
use crate::rebalance::RebalancePolicy;
use crate::services::moves::MoveRequest;
use crate::services::ShardSpec;
use crate::shard::Shard;

/// splitmix64: a small seeded generator, so a failing seed replays exactly.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True once in `n` times on average.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// How a [`World`] is built and how its dice are loaded.
#[derive(Clone, Debug)]
pub struct Config {
    /// Number of shards.
    pub shards: usize,
    /// Client slots per shard.
    pub clients: usize,
    /// Capacity of each ring between two shards and of each shard's reply
    /// ring to a client.
    pub ring_cap: usize,
    /// Each shard's cap on envelopes waiting for one destination.
    pub overflow_cap: usize,
    /// The rebalancer's policy; `None` leaves heat windows out of the dice.
    pub rebalance: Option<RebalancePolicy>,
    /// A heat window ends on about one in this many window throws.
    pub window_odds: u64,
    /// Most nanoseconds one clock step advances (0: the clock stands still).
    pub max_tick_ns: u64,
    /// Of every hundred log flushes, how many fail their records instead.
    pub fail_percent: u64,
}

impl Config {
    /// `shards` shards, one client, rings of four, no rebalancer, a clock
    /// that moves up to 40 µs a step and a log that never fails.
    pub fn new(shards: usize) -> Self {
        Config {
            shards,
            clients: 1,
            ring_cap: 4,
            overflow_cap: 1 << 20,
            rebalance: None,
            window_odds: 1,
            max_tick_ns: 40_000,
            fail_percent: 0,
        }
    }
}

/// One record appended to a [`MemLog`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its log sequence number.
    pub lsn: u64,
    /// The kind's stable hash.
    pub kind_hash: u64,
    /// The entity's key.
    pub key: u64,
    /// The entity's version.
    pub version: u64,
    /// The encoded state, or `None` for a tombstone.
    pub state: Option<Vec<u8>>,
}

/// An in-memory shard log: records are appended, then made durable or failed
/// in order by the world; only durable ones survive a [`World::crash`].
#[derive(Default, Debug)]
pub struct MemLog {
    appended: Vec<Record>,
    durable: Vec<Record>,
    pending: VecDeque<Record>,
    next_lsn: u64,
    refuse: Option<LogRefusal>,
}

impl MemLog {
    /// Every record ever appended (durable, pending or failed), oldest first.
    pub fn appended(&self) -> &[Record] {
        &self.appended
    }

    /// The records that are durable, oldest first.
    pub fn durable(&self) -> &[Record] {
        &self.durable
    }

    /// How many records wait to be resolved.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Makes the log refuse appends (`Some`) or take them again (`None`).
    pub fn refuse(&mut self, refusal: Option<LogRefusal>) {
        self.refuse = refusal;
    }

    /// Makes the oldest `n` pending records durable; returns the end of the
    /// durable LSNs for [`Shard::durable_through`], if any record resolved.
    pub fn make_durable(&mut self, n: usize) -> Option<u64> {
        let n = n.min(self.pending.len());
        if n == 0 {
            return None;
        }
        let moved: Vec<Record> = self.pending.drain(..n).collect();
        let end = moved.last().map(|r| r.lsn + 1);
        self.durable.extend(moved);
        end
    }

    /// Fails every pending record (a log fails in order); returns their LSNs
    /// for [`Shard::failed`], if there were any.
    pub fn fail_pending(&mut self) -> Option<Range<u64>> {
        let first = self.pending.front()?.lsn;
        let end = self.pending.back().map(|r| r.lsn + 1)?;
        self.pending.clear();
        Some(first..end)
    }

    fn append(&mut self, kind_hash: u64, key: u64, version: u64, state: Option<&[u8]>) -> u64 {
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        let record = Record {
            lsn,
            kind_hash,
            key,
            version,
            state: state.map(<[u8]>::to_vec),
        };
        self.appended.push(record.clone());
        self.pending.push_back(record);
        lsn
    }
}

impl LogSink for MemLog {
    fn append_state(
        &mut self,
        kind_hash: u64,
        key: u64,
        version: u64,
        payload: &[u8],
    ) -> Result<u64, LogRefusal> {
        match &self.refuse {
            Some(r) => Err(r.clone()),
            None => Ok(self.append(kind_hash, key, version, Some(payload))),
        }
    }

    fn append_tombstone(
        &mut self,
        kind_hash: u64,
        key: u64,
        version: u64,
    ) -> Result<u64, LogRefusal> {
        match &self.refuse {
            Some(r) => Err(r.clone()),
            None => Ok(self.append(kind_hash, key, version, None)),
        }
    }

    fn unresolved_max(&self) -> Option<u64> {
        self.pending.back().map(|r| r.lsn)
    }
}

thread_local! {
    static PAYLOADS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// A payload that counts, per thread, how many were made (including clones)
/// and how many dropped; see [`payload_counts`]. A message that is never
/// dropped, or dropped twice, shows as a difference.
#[derive(Debug, PartialEq, Eq)]
pub struct Counted<T>(T);

impl<T> Counted<T> {
    /// Wraps `value`, counting one construction.
    pub fn new(value: T) -> Self {
        PAYLOADS.with(|p| {
            let (made, dropped) = p.get();
            p.set((made + 1, dropped));
        });
        Counted(value)
    }

    /// The wrapped value.
    pub fn get(&self) -> &T {
        &self.0
    }
}

impl<T: Clone> Clone for Counted<T> {
    fn clone(&self) -> Self {
        Counted::new(self.0.clone())
    }
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        PAYLOADS.with(|p| {
            let (made, dropped) = p.get();
            p.set((made, dropped + 1));
        });
    }
}

/// (made, dropped) [`Counted`] payloads on this thread since the last
/// [`reset_payload_counts`].
pub fn payload_counts() -> (u64, u64) {
    PAYLOADS.with(Cell::get)
}

/// Sets this thread's [`Counted`] figures back to zero.
pub fn reset_payload_counts() {
    PAYLOADS.with(|p| p.set((0, 0)));
}

/// The sender id of client slot `client`.
pub fn client_id(client: usize) -> SenderId {
    CLIENT_BIT | client as SenderId
}

/// Opens a reply: its token and its value or error.
///
/// # Safety
///
/// A successful reply must carry an `R` (the reply type of the kind asked,
/// or [`MoveOutcome`](crate::driver::MoveOutcome) for a move request).
pub unsafe fn open_reply<R>(env: Envelope) -> (u64, Result<R, AskError>) {
    let token = env.token;
    match env.error_status() {
        Some(e) => (token, Err(e)),
        // SAFETY: the caller guarantees the payload is an `R`.
        None => (token, Ok(unsafe { env.take::<R>() })),
    }
}

/// A recovered live entity for one shard: (kind hash, key, version, state,
/// foreign), as the engine's recovery plan holds it.
type LiveRecord = (u64, u64, u64, Vec<u8>, bool);

/// N shards, their rings, clients, clock and logs, driven from one seed.
/// See the module docs.
pub struct World {
    /// The world's dice; tests may throw them too (same seed, same run).
    pub rng: Rng,
    cfg: Config,
    kinds: Arc<Kinds>,
    shards: Vec<Shard>,
    logs: Vec<MemLog>,
    /// rings[from][to]
    rings: Vec<Vec<VecDeque<Envelope>>>,
    /// requests[client][shard]: what a client sent, not yet taken.
    requests: Vec<Vec<VecDeque<Envelope>>>,
    /// replies[shard][client]: the bounded reply rings.
    replies: Vec<Vec<VecDeque<Envelope>>>,
    /// What each client received and the test has not taken yet.
    inbox: Vec<Vec<Envelope>>,
    now_ns: u64,
    window: u32,
    draining: bool,
    crashes: u32,
}

impl World {
    /// A world of `cfg.shards` fresh shards of `kinds`, seeded with `seed`.
    pub fn new(kinds: Arc<Kinds>, cfg: Config, seed: u64) -> Self {
        let n = cfg.shards;
        let mut w = World {
            rng: Rng(seed),
            kinds,
            shards: Vec::new(),
            logs: (0..n).map(|_| MemLog::default()).collect(),
            rings: Vec::new(),
            requests: Vec::new(),
            replies: Vec::new(),
            inbox: Vec::new(),
            now_ns: 0,
            window: 0,
            draining: false,
            crashes: 0,
            cfg,
        };
        w.fresh_memory();
        w
    }

    fn fresh_memory(&mut self) {
        let (n, c) = (self.cfg.shards, self.cfg.clients);
        self.shards = (0..n)
            .map(|shard| {
                let spec = ShardSpec {
                    shard,
                    shard_count: n,
                    client_slots: c,
                    overflow_cap: self.cfg.overflow_cap,
                };
                let mut s = Shard::new(spec, self.kinds.clone());
                s.set_now(self.now_ns);
                s
            })
            .collect();
        self.rings = (0..n)
            .map(|_| (0..n).map(|_| VecDeque::new()).collect())
            .collect();
        self.requests = (0..c)
            .map(|_| (0..n).map(|_| VecDeque::new()).collect())
            .collect();
        self.replies = (0..n)
            .map(|_| (0..c).map(|_| VecDeque::new()).collect())
            .collect();
        self.inbox = (0..c).map(|_| Vec::new()).collect();
    }

    /// Number of shards.
    pub fn n(&self) -> usize {
        self.shards.len()
    }

    /// The registry every shard shares.
    pub fn kinds(&self) -> &Arc<Kinds> {
        &self.kinds
    }

    /// The world's configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Shard `i`.
    pub fn shard(&self, i: usize) -> &Shard {
        &self.shards[i]
    }

    /// Shard `i`, to drive by hand.
    pub fn shard_mut(&mut self, i: usize) -> &mut Shard {
        &mut self.shards[i]
    }

    /// Every shard.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Shard `i`'s log.
    pub fn log(&self, i: usize) -> &MemLog {
        &self.logs[i]
    }

    /// Shard `i`'s log, to refuse appends, say.
    pub fn log_mut(&mut self, i: usize) -> &mut MemLog {
        &mut self.logs[i]
    }

    /// The world's clock, in nanoseconds.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// How many times the world crashed.
    pub fn crashes(&self) -> u32 {
        self.crashes
    }

    /// The home shard of entity `key` of `kind`.
    pub fn home(&self, kind: KindId, key: u64) -> usize {
        self.kinds.home_shard(kind, key, self.n())
    }

    /// Client `client` sends `env` (built by a typed constructor) to the
    /// entity's home.
    fn send(&mut self, client: usize, env: Envelope) {
        let home = self.home(env.kind, env.key);
        self.requests[client][home].push_back(env);
    }

    /// The envelope of `msg` for entity `key` of kind `E` from client
    /// `client`: a tell, or with a token an ask.
    fn message<E: Entity>(
        &self,
        client: usize,
        key: u64,
        msg: E::Msg,
        token: Option<u64>,
    ) -> Envelope {
        let op = if token.is_some() {
            Op::AskClient
        } else {
            Op::Tell
        };
        match self.kinds.message::<E>(key, op, msg) {
            Ok(env) => env.with_route(client_id(client), token.unwrap_or(0)),
            Err(_) => panic!("kind {} is not registered", E::KIND),
        }
    }

    /// Client `client` tells entity `key` of kind `E` `msg`.
    pub fn tell<E: Entity>(&mut self, client: usize, key: u64, msg: E::Msg) {
        let env = self.message::<E>(client, key, msg, None);
        self.send(client, env);
    }

    /// Client `client` asks entity `key` of kind `E` `msg`; the reply will
    /// carry `token`.
    pub fn ask<E: Entity>(&mut self, client: usize, key: u64, msg: E::Msg, token: u64) {
        let env = self.message::<E>(client, key, msg, Some(token));
        self.send(client, env);
    }

    /// Client `client` asks that entity `key` of kind `E` move to `target`;
    /// the [`MoveOutcome`](crate::driver::MoveOutcome) will carry `token`.
    pub fn migrate<E: Entity>(&mut self, client: usize, key: u64, target: usize, token: u64) {
        let req = MoveRequest {
            target: target as u32,
        };
        let Some(env) = self.kinds.move_request::<E>(key, req) else {
            panic!("kind {} is not registered", E::KIND);
        };
        self.send(client, env.with_route(client_id(client), token));
    }

    /// Hands a message from client `client` to shard `shard` at once, past
    /// the rings (a tell, or with a token an ask), for tests that decide
    /// what one pass holds.
    pub fn deliver_now<E: Entity>(
        &mut self,
        shard: usize,
        client: usize,
        key: u64,
        msg: E::Msg,
        token: Option<u64>,
    ) {
        let env = self.message::<E>(client, key, msg, token);
        self.deliver(shard, env);
    }

    /// Takes what client `client` received so far (open them with
    /// [`open_reply`]).
    pub fn take_replies(&mut self, client: usize) -> Vec<Envelope> {
        std::mem::take(&mut self.inbox[client])
    }

    /// Moves the clock forward by `ns` on every shard.
    pub fn advance(&mut self, ns: u64) {
        self.now_ns += ns;
        for s in &mut self.shards {
            let now = self.now_ns.max(s.now_ns());
            s.set_now(now);
        }
    }

    /// Moves the clock to `now_ns` (if later) on every shard.
    pub fn advance_to(&mut self, now_ns: u64) {
        self.advance(now_ns.saturating_sub(self.now_ns));
    }

    /// Ends shard `i`'s pass: logs what changed and closes the output gate.
    pub fn commit(&mut self, i: usize) {
        self.shards[i].commit(&mut self.logs[i]);
    }

    /// Makes the oldest `n` pending records of shard `i`'s log durable and
    /// tells the shard. Returns whether any was.
    pub fn make_durable(&mut self, i: usize, n: usize) -> bool {
        match self.logs[i].make_durable(n) {
            Some(end) => {
                self.shards[i].durable_through(end);
                true
            }
            None => false,
        }
    }

    /// Fails every pending record of shard `i`'s log with `err` and tells the
    /// shard. Returns whether any was pending.
    pub fn fail_log(&mut self, i: usize, err: AskError) -> bool {
        match self.logs[i].fail_pending() {
            Some(lsns) => {
                self.shards[i].failed(lsns, err);
                true
            }
            None => false,
        }
    }

    /// Delivers `env` to shard `i` as the runtime does: then drains every
    /// ring a fence names, and stamps arrivals. Every envelope here came
    /// from a typed constructor of the world's registry or from an outbox of
    /// one of its shards.
    fn deliver(&mut self, i: usize, env: Envelope) {
        // SAFETY: as the function's docs: typed for the registry every shard
        // of the world shares.
        unsafe { self.shards[i].deliver(env) };
        self.honour_fences(i);
        let now = self.shards[i].now_ns();
        self.shards[i].stamp_settled(now);
    }

    /// Drains, as the runtime does, every ring a fence names.
    fn honour_fences(&mut self, s: usize) {
        if let Some(fences) = self.shards[s].take_fences() {
            for from in fences {
                if from == s {
                    let queued = self.shards[s].local_len();
                    self.shards[s].run_local(queued);
                    continue;
                }
                while let Some(env) = self.rings[from][s].pop_front() {
                    // SAFETY: from a ring between the world's shards, which
                    // share one registry.
                    unsafe { self.shards[s].deliver(env) };
                    self.honour_fences(s);
                }
            }
        }
    }

    /// Publishes shard `s`'s outboxes into the bounded rings: everything
    /// that fits (`all`) or a random part of it. Returns whether anything
    /// moved.
    pub fn publish(&mut self, s: usize, all: bool) -> bool {
        let cap = self.cfg.ring_cap;
        let mut did = false;
        for to in 0..self.n() {
            if to == s {
                continue;
            }
            let room = cap - self.rings[s][to].len().min(cap);
            let out = self.shards[s].outbox_to_shard(to);
            let mut k = out.len().min(room);
            if !all && k > 0 {
                k = 1 + self.rng.below(k as u64) as usize;
            }
            let moved: Vec<Envelope> = out.drain(k).collect();
            did |= !moved.is_empty();
            self.rings[s][to].extend(moved);
        }
        for c in 0..self.cfg.clients {
            let room = cap - self.replies[s][c].len().min(cap);
            let out = self.shards[s].outbox_to_client(c);
            let k = out.len().min(room);
            let moved: Vec<Envelope> = out.drain(k).collect();
            did |= !moved.is_empty();
            self.replies[s][c].extend(moved);
        }
        did
    }

    /// Client `c` takes up to `max` replies from shard `s`'s reply ring.
    fn receive(&mut self, s: usize, c: usize, max: usize) -> bool {
        let k = self.replies[s][c].len().min(max);
        self.inbox[c].extend(self.replies[s][c].drain(..k));
        k > 0
    }

    /// Delivers up to `max` envelopes to shard `s` from its inbound ring
    /// `from` (a shard index, or `n + client` for a client's requests).
    fn drain(&mut self, s: usize, from: usize, max: usize) -> bool {
        let n = self.n();
        let mut did = false;
        for _ in 0..max {
            let env = if from < n {
                self.rings[from][s].pop_front()
            } else {
                self.requests[from - n][s].pop_front()
            };
            let Some(env) = env else { break };
            self.deliver(s, env);
            did = true;
        }
        did
    }

    /// One random step of one random shard; the pass that ran handlers ends
    /// with a commit. Returns whether anything happened.
    pub fn step(&mut self) -> bool {
        let n = self.n();
        let s = self.rng.below(n as u64) as usize;
        let did = match self.rng.below(9) {
            0 | 1 => {
                let from = self.rng.below((n + self.cfg.clients) as u64) as usize;
                let k = 1 + self.rng.below(4) as usize;
                self.drain(s, from, k)
            }
            2 => self.shards[s].run_local(1 + self.rng.below(4) as usize) > 0,
            3 => self.publish(s, false),
            4 => {
                if !self.draining && self.cfg.max_tick_ns > 0 {
                    let ns = self.rng.below(self.cfg.max_tick_ns);
                    self.advance(ns);
                }
                self.shards[s].fire_timers(8) > 0
            }
            5 => {
                if self.cfg.fail_percent > 0 && self.rng.below(100) < self.cfg.fail_percent {
                    self.fail_log(s, AskError::StorageFull)
                } else {
                    let k = 1 + self.rng.below(4) as usize;
                    self.make_durable(s, k)
                }
            }
            6 => {
                let c = self.rng.below(self.cfg.clients as u64) as usize;
                let k = 1 + self.rng.below(4) as usize;
                self.receive(s, c, k)
            }
            7 => match self.cfg.rebalance {
                Some(policy) if self.rng.one_in(self.cfg.window_odds) => {
                    // A heat window ends with made-up loads, so the
                    // rebalancer moves things too.
                    self.window += 1;
                    let loads: Vec<f32> =
                        (0..n).map(|_| self.rng.below(100) as f32 / 100.0).collect();
                    let queued = self.shards[s].end_window(self.window, &loads, &policy);
                    self.shards[s].run_moves();
                    queued > 0
                }
                _ => false,
            },
            _ => {
                let had = self.shards[s].has_moves();
                self.shards[s].run_moves();
                had && !self.shards[s].has_moves()
            }
        };
        self.commit(s);
        did
    }

    /// Whether anything is in flight: in a ring, a client queue, an outbox, a
    /// local queue, a move, or waiting for a log.
    pub fn busy(&self) -> bool {
        self.rings.iter().flatten().any(|r| !r.is_empty())
            || self.requests.iter().flatten().any(|r| !r.is_empty())
            || self.replies.iter().flatten().any(|r| !r.is_empty())
            || self.logs.iter().any(|l| l.pending_len() > 0)
            || self.shards.iter().any(|s| {
                s.local_len() > 0
                    || s.has_outbound()
                    || s.migrating()
                    || s.has_moves()
                    || s.has_unresolved()
            })
    }

    /// One random step with the clock standing still, if anything is in
    /// flight ([`World::busy`]); returns whether it was.
    pub fn step_quiet(&mut self) -> bool {
        if !self.busy() {
            return false;
        }
        self.draining = true;
        self.step();
        self.draining = false;
        true
    }

    /// Steps at random, with the clock standing still, until nothing is in
    /// flight.
    ///
    /// # Panics
    ///
    /// When the world makes no progress within `max_steps` steps.
    pub fn run_until_quiet(&mut self, max_steps: u64) {
        let mut steps = 0;
        while self.step_quiet() {
            steps += 1;
            assert!(steps <= max_steps, "no end in sight: {}", self.describe());
        }
    }

    /// A one-line picture of what is in flight, for failure messages.
    pub fn describe(&self) -> String {
        let rings: Vec<usize> = self.rings.iter().flatten().map(VecDeque::len).collect();
        let reqs: Vec<usize> = self.requests.iter().flatten().map(VecDeque::len).collect();
        let shards: Vec<(usize, bool, bool, bool)> = self
            .shards
            .iter()
            .map(|s| {
                (
                    s.local_len(),
                    s.has_outbound(),
                    s.migrating(),
                    s.has_unresolved(),
                )
            })
            .collect();
        let logs: Vec<usize> = self.logs.iter().map(MemLog::pending_len).collect();
        format!("rings {rings:?} requests {reqs:?} shards {shards:?} logs {logs:?}")
    }

    /// Delivers everything in flight in FIFO order — local queues, outboxes,
    /// rings, client requests, moves, commits, every log made durable, replies
    /// into the clients' inboxes — until nothing moves.
    ///
    /// # Panics
    ///
    /// When it does not settle within 100 000 rounds.
    pub fn settle(&mut self) {
        let (n, c) = (self.n(), self.cfg.clients);
        for _ in 0..100_000 {
            let mut did = false;
            for s in 0..n {
                did |= self.shards[s].run_local(usize::MAX) > 0;
                for from in 0..n + c {
                    did |= self.drain(s, from, usize::MAX);
                }
                self.commit(s);
                did |= self.make_durable(s, usize::MAX);
                did |= self.publish(s, true);
                if self.shards[s].has_moves() {
                    self.shards[s].run_moves();
                    self.commit(s);
                    did |= self.publish(s, true);
                }
                for client in 0..c {
                    did |= self.receive(s, client, usize::MAX);
                }
            }
            if !did && !self.busy() {
                return;
            }
        }
        panic!("the world never settled: {}", self.describe());
    }

    /// A crash: every shard is dropped with everything in memory (rings,
    /// queues, undelivered replies, records not yet durable), then the
    /// shards are rebuilt from the durable records of every log through the
    /// recovery fold, each entity on its home shard, and run their recovered
    /// hooks, as the engine does at start.
    ///
    /// # Panics
    ///
    /// When a recovered state does not restore.
    pub fn crash(&mut self) {
        self.crashes += 1;
        self.shards.clear();
        self.rings.clear();
        self.requests.clear();
        self.replies.clear();
        self.inbox.clear();
        for log in &mut self.logs {
            log.pending.clear();
        }
        self.fresh_memory();
        self.recover();
    }

    /// Drops every shard and everything in memory, as [`World::crash`] does,
    /// without recovering: afterwards every payload the world held is gone.
    pub fn drop_memory(&mut self) {
        self.shards.clear();
        self.rings.clear();
        self.requests.clear();
        self.replies.clear();
        self.inbox.clear();
    }

    fn recover(&mut self) {
        let n = self.n();
        // The fold keeps (origin log, bytes); tombstones keep no payload, so
        // their newest log is noted apart, as the engine does.
        let mut fold = Fold::<(usize, Vec<u8>)>::new();
        let mut tombstone_logs: HashMap<(u64, u64), (u64, usize)> = HashMap::new();
        for (origin, log) in self.logs.iter().enumerate() {
            for r in &log.durable {
                let id = StoredId {
                    kind_hash: r.kind_hash,
                    key: r.key,
                };
                match &r.state {
                    Some(bytes) => {
                        fold.insert(id, r.version, Some((origin, bytes.clone())));
                    }
                    None => {
                        let at = tombstone_logs
                            .entry((r.kind_hash, r.key))
                            .or_insert((r.version, origin));
                        if r.version >= at.0 {
                            *at = (r.version, origin);
                        }
                        fold.insert(id, r.version, None);
                    }
                }
            }
        }
        let mut live: Vec<Vec<LiveRecord>> = vec![Vec::new(); n];
        let mut deleted: Vec<Vec<(u64, u64, u64, bool)>> = vec![Vec::new(); n];
        for (id, latest) in fold.into_entries() {
            let Some(kind) = self.kinds.id_of_hash(id.kind_hash) else {
                continue;
            };
            let shard = self.kinds.home_shard(kind, id.key, n);
            match latest.state {
                Some((origin, bytes)) => {
                    live[shard].push((
                        id.kind_hash,
                        id.key,
                        latest.version,
                        bytes,
                        origin != shard,
                    ));
                }
                None => {
                    let origin = tombstone_logs
                        .get(&(id.kind_hash, id.key))
                        .map_or(shard, |&(_, o)| o);
                    deleted[shard].push((id.kind_hash, id.key, latest.version, origin != shard));
                }
            }
        }
        for (s, shard) in self.shards.iter_mut().enumerate() {
            deleted[s].sort_unstable();
            for &(kind, key, version, foreign) in &deleted[s] {
                shard.restore_tombstone(kind, key, version, foreign);
            }
            // Activation order must not depend on hashing.
            live[s].sort_unstable_by_key(|e| (e.0, e.1));
            for (kind, key, version, bytes, foreign) in &live[s] {
                shard
                    .restore(*kind, *key, *version, bytes, *foreign)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            shard.run_recovered_hooks();
        }
        for s in 0..n {
            self.commit(s);
        }
    }
}

/// Prints, if the thread panics while it lives, the seed and the one-line
/// command that replays it; see [`replay_guard`].
pub struct ReplayGuard {
    seed: u64,
    test: &'static str,
}

/// A guard for one seed of simulation test file `test` (its name under
/// `shards/tests/`): a failure prints `seed N failed; replay: SIM_SEED=N
/// cargo test -p percore-shards --test TEST`.
pub fn replay_guard(test: &'static str, seed: u64) -> ReplayGuard {
    ReplayGuard { seed, test }
}

impl Drop for ReplayGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "seed {} failed; replay: SIM_SEED={} cargo test -p percore-shards --test {} -- --nocapture",
                self.seed, self.seed, self.test
            );
        }
    }
}
