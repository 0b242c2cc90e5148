//! Live migration: heat, the move protocol, and the rebalancing policy.
//!
//! # Routing
//!
//! Every sender addresses an entity at its *home* shard (a hash of kind and
//! key), whether or not it still lives there. A home shard whose entity moved
//! away keeps a pointer to its owner and forwards what arrives for it to
//! the owner, on the ring between them. Each hop is FIFO, so every sender's
//! order holds along the path sender → home → owner.
//!
//! # A move from owner O to shard T (home H)
//!
//! 1. O takes the entity out of its table (its value, timers, heat and log
//!    state — a pointer move, no serialization) and sends it to T
//!    ([`Op::Transfer`]). From then on O forwards whatever reaches it for the
//!    entity to T, behind the entity, flagged [`STRAGGLER`].
//! 2. If O is the home, its pointer now says T and nothing else is needed: all
//!    traffic went through O and keeps doing so.
//! 3. Otherwise messages may still be on their way H → O. O tells H where the
//!    entity went ([`Op::Moved`]); H switches its pointer to T and sends a
//!    [`Op::Marker`] to O behind everything it had sent there; O passes the
//!    marker on to T. (When T is the home itself, T sends the marker on the
//!    entity's arrival.)
//! 4. Until the marker arrives, T handles stragglers (they came the old way)
//!    and holds everything that came the new way, in order; the marker
//!    guarantees nothing older is still behind, so T then handles what it
//!    held and the entity is settled. An entity moves again only once settled.
//!
//! Messages the new way may even reach T before the entity does (its
//! transfer waited in O's overflow queue): T holds them the same way.
//!
//! The design note sketches senders that learn the new home and send to it
//! directly. That is only safe when the forwarded message is already in the
//! ring when the sender learns — not when it waits in an overflow queue or
//! takes two hops — so percore routes through the home and pays one extra
//! ring hop for moved entities (counted as `rerouted`).

use std::any::Any;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasherDefault;

use crate::entity::{home_shard, KindId};
use crate::envelope::{Envelope, Op, SenderId, CLIENT_BIT, STRAGGLER};
use crate::shard::{Held, Route, Shard};
use crate::table::KeyHasher;
use crate::timers::MovedTimer;

/// Set in [`Envelope::status`] of a message a home shard forwarded to the
/// entity's current owner elsewhere.
pub const REROUTED: u8 = 0x40;

/// An entity's identity on a shard: its kind and key.
pub type EntityRef = (KindId, u64);
pub(crate) type PairMap<V> = HashMap<EntityRef, V, BuildHasherDefault<KeyHasher>>;
pub(crate) type PairSet = HashSet<EntityRef, BuildHasherDefault<KeyHasher>>;

/// What a shard knows about an entity that moved.
pub(crate) enum Place {
    /// It lives on that shard: what arrives for it goes there. Kept for good
    /// by the home; by an old owner until the marker passes.
    Away(usize),
    /// It moved here and its home is elsewhere (it may have stopped since:
    /// its next message activates it here).
    Guest,
    /// It is moving here and waits for the marker (and perhaps for itself).
    Settling(Box<Settling>),
}

impl Place {
    fn name(&self) -> String {
        match self {
            Place::Away(s) => format!("away({s})"),
            Place::Guest => "guest".into(),
            Place::Settling(s) => format!("settling(arrived {}, held {})", s.arrived, s.held.len()),
        }
    }
}

pub(crate) struct Settling {
    /// Messages that came the new way, in order.
    held: VecDeque<Envelope>,
    /// Whether the entity itself arrived.
    arrived: bool,
    /// When it left its old owner (for the pause figure).
    left_ns: u64,
    reply: Option<(SenderId, u64)>,
}

impl Settling {
    fn waiting() -> Self {
        Settling {
            held: VecDeque::new(),
            arrived: false,
            left_ns: 0,
            reply: None,
        }
    }
}

/// An entity's value and bookkeeping on its way out of its table (opaque
/// outside this crate).
pub struct Departure {
    pub(crate) state: Box<dyn Any + Send>,
    pub(crate) heat: HeatCell,
    /// Durable kinds: (kind hash, version, last logged encoding).
    pub(crate) durable: Option<(u64, u64, Option<Vec<u8>>)>,
}

/// What travels in an [`Op::Transfer`].
pub(crate) struct Migrant {
    departure: Departure,
    timers: Vec<MovedTimer>,
    /// Outputs of its durable handler still held on the old owner, routed
    /// as seen from the new one: they wait there for its first record.
    held: Vec<Held>,
    origin: usize,
    /// Whether a marker follows (the old owner was not the home).
    settle: bool,
    left_ns: u64,
    reply: Option<(SenderId, u64)>,
}

/// The payload of an [`Op::Migrate`] request: move the entity to `target`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoveRequest {
    /// The shard to move to.
    pub target: u32,
}

/// The answer to an explicit move (the payload of its `ReplyClient`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveOutcome {
    /// The entity now lives on the requested shard (it was moved, or was
    /// there already).
    Done,
    /// The entity pinned itself ([`Ctx::pin`](crate::Ctx::pin)).
    Pinned,
    /// The entity was not active and its activation panicked.
    Panicked,
    /// No such shard.
    NoSuchShard,
}

/// Heat of one entity: messages handled per window, smoothed.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HeatCell {
    pub(crate) window: u32,
    pub(crate) count: u32,
    smoothed: f32,
}

/// Weight of the newest window in the smoothed heat.
const HEAT_ALPHA: f32 = 0.5;

impl HeatCell {
    /// Folds the windows since the last one this entity was handled in.
    /// Returns the smoothed heat as of the end of the last window.
    #[inline]
    pub(crate) fn roll(&mut self, now: u32) -> f32 {
        if now > self.window {
            let gap = now - self.window;
            let mut s = HEAT_ALPHA * self.count as f32 + (1.0 - HEAT_ALPHA) * self.smoothed;
            if gap > 1 {
                s *= (1.0 - HEAT_ALPHA).powi(gap.min(64) as i32 - 1);
            }
            self.smoothed = s;
            self.count = 0;
            self.window = now;
        }
        self.smoothed
    }
}

/// One of a shard's hottest entities.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hot {
    /// Smoothed messages per window.
    pub heat: f32,
    /// Its kind.
    pub kind: KindId,
    /// Its key.
    pub key: u64,
}

/// How many hottest entities a shard tracks per window.
pub const HOT_LIST_LEN: usize = 16;

/// The hottest entities seen in a window (each entity is offered once per
/// window, on its first message).
#[derive(Default)]
pub(crate) struct HotList {
    list: Vec<Hot>,
}

impl HotList {
    #[inline]
    pub(crate) fn offer(&mut self, heat: f32, kind: KindId, key: u64) {
        if heat <= 0.0 {
            return;
        }
        let hot = Hot { heat, kind, key };
        if self.list.len() < HOT_LIST_LEN {
            self.list.push(hot);
            return;
        }
        let (i, min) = self
            .list
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.heat.total_cmp(&b.1.heat))
            .map(|(i, h)| (i, h.heat))
            .expect("the list is full");
        if heat > min {
            self.list[i] = hot;
        }
    }

    fn take_sorted(&mut self) -> Vec<Hot> {
        let mut list = std::mem::take(&mut self.list);
        list.sort_by(|a, b| b.heat.total_cmp(&a.heat));
        list
    }
}

/// When and how much the automatic rebalancer moves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RebalancePolicy {
    /// Whether it moves anything at all.
    pub enabled: bool,
    /// A shard moves entities away when its load (share of the window spent
    /// handling messages, 0..1) exceeds the least loaded shard's by at least
    /// this much.
    pub min_gap: f32,
    /// ... for this many windows in a row (hysteresis: a passing burst moves
    /// nothing). After a round of moves the count starts again.
    pub sustain_windows: u32,
    /// Most entities one shard moves per window.
    pub max_moves_per_window: u32,
    /// An entity that arrived within this many windows is not moved again.
    pub cooldown_windows: u32,
}

impl Default for RebalancePolicy {
    fn default() -> Self {
        RebalancePolicy {
            enabled: false,
            min_gap: 0.2,
            sustain_windows: 3,
            max_moves_per_window: 4,
            cooldown_windows: 20,
        }
    }
}

/// A move waiting for the end of the pass (opaque outside this crate).
pub struct PendingMove {
    kind: KindId,
    key: u64,
    target: usize,
    reply: Option<(SenderId, u64)>,
}

impl PendingMove {
    pub(crate) fn new(
        kind: KindId,
        key: u64,
        target: usize,
        reply: Option<(SenderId, u64)>,
    ) -> Self {
        PendingMove {
            kind,
            key,
            target,
            reply,
        }
    }

    /// The request again as an envelope, to route after its entity.
    fn into_request(self) -> Envelope {
        let target = self.target as u32;
        let (sender, token) = self.reply.unwrap_or((NO_REPLY, 0));
        Envelope::new(self.kind, self.key, Op::Migrate, MoveRequest { target })
            .with_route(sender, token)
    }
}

/// Migration state of one shard.
#[derive(Default)]
pub(crate) struct Migration {
    pub(crate) places: PairMap<Place>,
    pub(crate) moves: Vec<PendingMove>,
    /// Rings the runtime must drain before anything else (see `Op::Fence`).
    pub(crate) fences: Vec<usize>,
    /// Moves of entities still settling, for the next pass.
    pub(crate) deferred: Vec<PendingMove>,
    /// Durable entities that left, until their new owner's record is durable:
    /// (kind hash, version, encoding). Checkpoints keep writing them.
    pub(crate) departed: PairMap<(u64, u64, Vec<u8>)>,
    /// Durable arrivals to confirm to their old owner once logged here:
    /// (kind, key, old owner).
    pub(crate) arrivals: Vec<(KindId, u64, usize)>,
    /// Logged arrivals waiting to be durable: (LSN, kind, key, old owner, version).
    pub(crate) arrival_lsns: VecDeque<(u64, KindId, u64, usize, u64)>,
    /// Window of each recent arrival (cooldown).
    pub(crate) arrived_in: PairMap<u32>,
    pub(crate) hottest: Vec<Hot>,
    pub(crate) streak: u32,
    pub(crate) handled_at_window: u64,
    pub(crate) pauses: Vec<u64>,
    /// Departure times of entities settled but not yet stamped.
    pub(crate) unstamped: Vec<u64>,
}

impl Shard {
    /// The slow path of [`Shard::deliver`] for addressed envelopes: the
    /// entity moved, is moving, or the envelope was forwarded.
    pub(crate) fn route_addressed(&mut self, mut env: Envelope) {
        let id = (env.kind, env.key);
        let me = self.index();
        let place = self.mig.places.get_mut(&id);
        match place {
            Some(Place::Away(to)) => {
                let to = *to;
                if self.is_home(id) {
                    env.status = REROUTED;
                    self.svc.counters.rerouted += 1;
                } else {
                    env.status = STRAGGLER;
                    self.svc.counters.forwarded += 1;
                }
                self.svc.to_shards[to].push(env);
            }
            Some(Place::Settling(s)) => {
                if env.status & STRAGGLER != 0 && s.arrived {
                    env.status = 0;
                    self.deliver_here(env);
                } else {
                    debug_assert_eq!(env.status & STRAGGLER, 0, "a straggler before its entity");
                    self.svc.counters.held += 1;
                    s.held.push_back(env);
                }
            }
            Some(Place::Guest) => {
                env.status = 0;
                self.deliver_here(env);
            }
            None => {
                if env.status & REROUTED != 0 && !self.is_home(id) {
                    // Routed here by the home, ahead of the entity itself.
                    let mut s = Settling::waiting();
                    self.svc.counters.held += 1;
                    s.held.push_back(env);
                    self.mig.places.insert(id, Place::Settling(Box::new(s)));
                } else {
                    debug_assert!(
                        env.status == 0 || self.is_home(id),
                        "shard {me} got a forwarded envelope for an entity it knows nothing of"
                    );
                    env.status = 0;
                    self.deliver_here(env);
                }
            }
        }
    }

    /// Hands an addressed envelope to the entity on this shard.
    #[inline]
    pub(crate) fn deliver_here(&mut self, env: Envelope) {
        if env.op == Op::Migrate {
            // SAFETY: `Op::Migrate` envelopes are made with a `MoveRequest`,
            // which is `Copy` and inline.
            let req = unsafe { env.read::<MoveRequest>() };
            let reply = (env.sender != NO_REPLY).then_some((env.sender, env.token));
            self.mig.moves.push(PendingMove {
                kind: env.kind,
                key: env.key,
                target: req.target as usize,
                reply,
            });
            return;
        }
        let kind = env.kind as usize;
        debug_assert!(kind < self.tables.len(), "envelope of unknown kind");
        self.tables[kind].deliver(env, &mut self.svc);
    }

    fn is_home(&self, (kind, key): EntityRef) -> bool {
        let hash = self.svc.kinds.get(kind).hash;
        home_shard(hash, key, self.svc.spec.shard_count) == self.index()
    }

    /// Handles a migration control envelope.
    pub(crate) fn deliver_control(&mut self, env: Envelope) {
        match env.op {
            Op::Transfer => self.arrive(env),
            Op::Moved => {
                // The old owner says the entity moved on: point there, and
                // send the marker down the old path behind what went that way.
                // SAFETY: `Op::Moved` envelopes carry the new owner as a `u32`.
                let to = unsafe { env.read::<u32>() } as usize;
                let old = env.sender as usize;
                self.mig.places.insert((env.kind, env.key), Place::Away(to));
                let marker = Envelope::empty(env.kind, env.key, Op::Marker, 0)
                    .with_route(self.index() as SenderId, 0);
                self.svc.to_shards[old].push(marker);
            }
            Op::Marker => self.marker(env),
            Op::Fence => {
                // SAFETY: `Op::Fence` envelopes carry a shard index as a `u32`.
                let from = unsafe { env.read::<u32>() } as usize;
                self.mig.fences.push(from);
            }
            Op::Released => {
                // SAFETY: `Op::Released` envelopes carry the version as a `u64`.
                let version = unsafe { env.read::<u64>() };
                let id = (env.kind, env.key);
                if self.mig.departed.get(&id).is_some_and(|d| d.1 <= version) {
                    self.mig.departed.remove(&id);
                }
            }
            _ => unreachable!("not a control envelope: {:?}", env.op),
        }
    }

    fn arrive(&mut self, env: Envelope) {
        let (kind, key) = (env.kind, env.key);
        let id = (kind, key);
        // SAFETY: `Op::Transfer` envelopes are made with a `Migrant`.
        let m: Migrant = unsafe { env.take::<Migrant>() };
        let durable = m.departure.durable.is_some();
        self.tables[kind as usize].admit(key, m.departure, &mut self.svc);
        for t in m.timers {
            self.svc.timers.adopt(t);
        }
        // Held outputs follow the entity and wait for its record here (logged
        // this pass, with the state they followed): released before anything
        // it emits here, so its order holds.
        self.svc.held.extend(m.held);
        if durable {
            self.mig.arrivals.push((kind, key, m.origin));
        }
        self.svc.counters.migrations_in += 1;
        // What it sent from its old shard may still wait in rings from there:
        // every shard it may send to drains that ring before it sees anything
        // this shard sends next. (Its old shard had handed everything for
        // other shards to rings when it left: see `run_moves`.)
        // The old shard itself gets one too: what the entity sent there sat
        // in its local queue, which it runs before going on.
        let fence_from = m.origin as u32;
        for d in 0..self.svc.spec.shard_count {
            if d != self.index() {
                let fence = Envelope::new(kind, key, Op::Fence, fence_from)
                    .with_route(self.index() as SenderId, 0);
                self.svc.to_shards[d].push(fence);
            }
        }
        self.mig.arrived_in.insert(id, self.svc.window);
        let home = self.is_home(id);
        let earlier = self.mig.places.remove(&id);
        if !m.settle {
            debug_assert!(
                earlier.is_none(),
                "shard {}: {:?} precedes a transfer of {id:?} from its home {}",
                self.index(),
                earlier.as_ref().map(Place::name),
                m.origin
            );
            self.mig.places.insert(id, Place::Guest);
            self.settled(m.left_ns, m.reply, kind, key);
            return;
        }
        let mut s = match earlier {
            Some(Place::Settling(s)) => s,
            Some(Place::Away(_)) | None => Box::new(Settling::waiting()),
            Some(Place::Guest) => unreachable!("a guest arriving again"),
        };
        s.arrived = true;
        s.left_ns = m.left_ns;
        s.reply = m.reply;
        self.mig.places.insert(id, Place::Settling(s));
        if home {
            // Back home: the home is the one that sends the marker down the
            // old path (there is no pointer elsewhere to switch).
            let marker =
                Envelope::empty(kind, key, Op::Marker, 0).with_route(self.index() as SenderId, 0);
            self.svc.to_shards[m.origin].push(marker);
        }
    }

    fn marker(&mut self, env: Envelope) {
        let id = (env.kind, env.key);
        match self.mig.places.remove(&id) {
            Some(Place::Away(to)) => {
                // An old owner: pass the marker on behind the stragglers; it
                // never hears of this entity again.
                debug_assert!(!self.is_home(id));
                self.svc.to_shards[to].push(env);
            }
            Some(Place::Settling(s)) => {
                debug_assert!(s.arrived, "a marker overtook its entity");
                if !self.is_home(id) {
                    self.mig.places.insert(id, Place::Guest);
                }
                let Settling {
                    held,
                    left_ns,
                    reply,
                    ..
                } = *s;
                self.settled(left_ns, reply, env.kind, env.key);
                for held in held {
                    self.route_addressed(held);
                }
            }
            other => {
                debug_assert!(false, "unexpected marker");
                if let Some(p) = other {
                    self.mig.places.insert(id, p);
                }
            }
        }
    }

    fn settled(&mut self, left_ns: u64, reply: Option<(SenderId, u64)>, kind: KindId, key: u64) {
        self.mig.unstamped.push(left_ns);
        if let Some((sender, token)) = reply {
            self.answer_move(sender, token, kind, key, MoveOutcome::Done);
        }
    }

    fn answer_move(
        &mut self,
        sender: SenderId,
        token: u64,
        kind: KindId,
        key: u64,
        outcome: MoveOutcome,
    ) {
        if sender & CLIENT_BIT != 0 {
            let env = Envelope::new(kind, key, Op::ReplyClient, outcome).with_route(sender, token);
            self.svc.to_clients[(sender & !CLIENT_BIT) as usize].push(env);
        }
    }

    /// Carries out the moves requested during this pass (explicit requests
    /// and the rebalancer's). Call once per pass, after
    /// [`Shard::commit`](Shard::commit) when the shard logs: a durable entity
    /// leaves only after its last change here was appended, so the outputs
    /// this shard holds for that change wait for the right record.
    pub fn run_moves(&mut self) {
        if !self.has_moves() {
            return;
        }
        self.mig.moves.append(&mut self.svc.self_moves);
        // An entity leaves only when everything this shard holds for other
        // shards is in rings: what it sent from here cannot then be
        // overtaken by what it sends from its new shard (the receivers drain
        // the ring from here first, on its fence; this shard runs its local
        // queue first).
        if self.svc.to_shards.iter().any(|o| !o.is_empty()) {
            return;
        }
        for mv in std::mem::take(&mut self.mig.moves) {
            self.move_one(mv);
        }
        self.mig.moves.append(&mut self.mig.deferred);
    }

    fn move_one(&mut self, mv: PendingMove) {
        let id = (mv.kind, mv.key);
        match self.mig.places.get(&id) {
            // It left earlier in this pass: the request follows it.
            Some(Place::Away(_)) => return self.route_addressed(mv.into_request()),
            // A request that came the old way (a straggler), or the entity's
            // own (it handled a straggler), while it waits for its marker: it
            // moves once settled. (The rebalancer's picks skip settling
            // entities.)
            Some(Place::Settling(_)) => return self.mig.deferred.push(mv),
            // A deferred request whose entity has left and been forgotten
            // here since: ask its home again.
            None if !self.is_home(id) => return self.svc.send_home(mv.into_request()),
            Some(Place::Guest) | None => {}
        }
        let PendingMove {
            kind,
            key,
            target,
            reply,
        } = mv;
        let me = self.index();
        let answer = |shard: &mut Shard, outcome| {
            if let Some((sender, token)) = reply {
                shard.answer_move(sender, token, kind, key, outcome);
            }
        };
        if target >= self.svc.spec.shard_count {
            return answer(self, MoveOutcome::NoSuchShard);
        }
        if target == me {
            return answer(self, MoveOutcome::Done);
        }
        if self.svc.pinned.contains(&id) {
            self.svc.counters.moves_refused += 1;
            return answer(self, MoveOutcome::Pinned);
        }
        if !self.tables[kind as usize].ensure_active(key, &mut self.svc) {
            return answer(self, MoveOutcome::Panicked);
        }
        let departure = self.tables[kind as usize]
            .depart(key, &mut self.svc)
            .expect("active just above");
        if let Some((hash, version, Some(bytes))) = &departure.durable {
            self.mig
                .departed
                .insert(id, (*hash, *version, bytes.clone()));
        }
        let timers = self.svc.timers.take_owned_by(kind, key);
        let held = self.take_held_of(id, target);
        let home = home_shard(
            self.svc.kinds.get(kind).hash,
            key,
            self.svc.spec.shard_count,
        );
        let settle = home != me;
        let migrant = Migrant {
            departure,
            timers,
            held,
            origin: me,
            settle,
            left_ns: self.svc.now_ns,
            reply,
        };
        self.mig.arrived_in.remove(&id);
        self.mig.places.insert(id, Place::Away(target));
        let transfer =
            Envelope::new(kind, key, Op::Transfer, migrant).with_route(me as SenderId, 0);
        self.svc.to_shards[target].push(transfer);
        // Timer firings already queued here for it follow it, behind it (an
        // old owner that is not its home forgets it once the marker passes).
        if me != home && !self.svc.local.is_empty() {
            let local = std::mem::take(&mut self.svc.local);
            for mut env in local {
                if (env.kind, env.key) == id && env.op.is_addressed() {
                    env.status = STRAGGLER;
                    self.svc.counters.forwarded += 1;
                    self.svc.to_shards[target].push(env);
                } else {
                    self.svc.local.push_back(env);
                }
            }
        }
        if settle && target != home {
            let moved =
                Envelope::new(kind, key, Op::Moved, target as u32).with_route(me as SenderId, 0);
            self.svc.to_shards[home].push(moved);
        }
        self.svc.counters.migrations_out += 1;
    }

    /// Lifts the outputs `id`'s durable handler emitted here that still wait
    /// for this shard's log, re-routed as seen from shard `to`.
    fn take_held_of(&mut self, id: EntityRef, to: usize) -> Vec<Held> {
        let me = self.index();
        let mut taken = Vec::new();
        let mut lift = |batch: &mut Vec<Held>| {
            let mut i = 0;
            while i < batch.len() {
                if batch[i].from == id {
                    let mut h = batch.remove(i);
                    h.route = match h.route {
                        Route::Local => Route::Shard(me),
                        Route::Shard(s) if s == to => Route::Local,
                        other => other,
                    };
                    taken.push(h);
                } else {
                    i += 1;
                }
            }
        };
        for (_, batch) in &mut self.svc.held_batches {
            lift(batch);
        }
        lift(&mut self.svc.held);
        taken
    }

    /// Shards whose inbound ring the runtime must drain completely before
    /// delivering anything more (an entity that sends moved from there);
    /// this shard's own index means its local queue, as long as it is now
    /// ([`Shard::run_local`] of [`Shard::local_len`]). Check after each
    /// delivery from a ring.
    #[inline]
    pub fn take_fences(&mut self) -> Option<Vec<usize>> {
        if self.mig.fences.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.mig.fences))
        }
    }

    /// Ends a heat window: records this shard's hottest entities and, when
    /// `policy` says this shard is clearly busier than the least busy one,
    /// queues moves of its hottest movable entities there (carried out by
    /// [`Shard::run_moves`]). `window` is the index of the window that now
    /// begins; `loads` holds every shard's share of the ending window spent
    /// handling messages. Returns how many moves it queued.
    pub fn end_window(&mut self, window: u32, loads: &[f32], policy: &RebalancePolicy) -> usize {
        let handled = self.svc.counters.handled;
        let total = handled - self.mig.handled_at_window;
        self.mig.handled_at_window = handled;
        self.mig.hottest = self.svc.hot.take_sorted();
        self.svc.window = window.max(self.svc.window);
        let cooldown = policy.cooldown_windows;
        if !self.mig.arrived_in.is_empty() {
            self.mig
                .arrived_in
                .retain(|_, at| window.saturating_sub(*at) <= cooldown);
        }
        let me = self.index();
        if !policy.enabled || loads.len() < 2 || total == 0 {
            self.mig.streak = 0;
            return 0;
        }
        let mine = loads[me];
        let (least, least_load) = loads
            .iter()
            .enumerate()
            .filter(|&(s, _)| s != me)
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(s, &l)| (s, l))
            .expect("two shards or more");
        if mine - least_load < policy.min_gap {
            self.mig.streak = 0;
            return 0;
        }
        self.mig.streak += 1;
        if self.mig.streak < policy.sustain_windows {
            return 0;
        }
        // Move about half the gap, hottest first, never an entity whose load
        // alone exceeds what is left of that (it would only move the hot spot).
        let mut budget = (mine - least_load) / 2.0;
        let mut queued = 0;
        for hot in self.mig.hottest.clone() {
            if queued >= policy.max_moves_per_window as usize || budget <= 0.0 {
                break;
            }
            let id = (hot.kind, hot.key);
            let share = hot.heat / total as f32 * mine;
            if share > budget
                || !self.tables[hot.kind as usize].movable()
                || !self.tables[hot.kind as usize].contains(hot.key)
                || self.svc.pinned.contains(&id)
                || self.mig.arrived_in.contains_key(&id)
                || matches!(
                    self.mig.places.get(&id),
                    Some(Place::Settling(_) | Place::Away(_))
                )
            {
                continue;
            }
            budget -= share;
            queued += 1;
            self.mig.moves.push(PendingMove {
                kind: hot.kind,
                key: hot.key,
                target: least,
                reply: None,
            });
        }
        if queued > 0 {
            self.mig.streak = 0;
        }
        queued
    }

    /// The hottest entities of the last completed window, hottest first.
    pub fn hottest(&self) -> &[Hot] {
        &self.mig.hottest
    }

    /// Smoothed heat (messages per window) of entity `key` of `kind`, if it
    /// lives here.
    pub fn heat_of(&self, kind: KindId, key: u64) -> Option<f32> {
        self.tables
            .get(kind as usize)?
            .heat_of(key, self.svc.window)
    }

    /// Whether entities settled here since the last [`Shard::stamp_settled`].
    #[inline]
    pub fn has_unstamped(&self) -> bool {
        !self.mig.unstamped.is_empty()
    }

    /// Records the pauses of the entities that settled since the last call,
    /// as ending at `now_ns` (the runtime reads its clock right after the
    /// deliveries that settled them, so a pause is never understated).
    pub fn stamp_settled(&mut self, now_ns: u64) {
        for left_ns in std::mem::take(&mut self.mig.unstamped) {
            let pause = now_ns.saturating_sub(left_ns);
            let c = &mut self.svc.counters;
            c.pause_ns_total += pause;
            c.pause_ns_max = c.pause_ns_max.max(pause);
            if self.mig.pauses.len() < 1 << 16 {
                self.mig.pauses.push(pause);
            }
        }
    }

    /// Whether moves wait to be carried out (see [`Shard::run_moves`]).
    #[inline]
    pub fn has_moves(&self) -> bool {
        !self.mig.moves.is_empty() || !self.svc.self_moves.is_empty()
    }

    /// Moves the pauses recorded since the last call (nanoseconds an entity
    /// could not handle messages, one per arrival) into `out`.
    pub fn take_pauses(&mut self, out: &mut Vec<u64>) {
        out.append(&mut self.mig.pauses);
    }

    /// Whether entity `key` of `kind` lives on this shard now.
    pub fn owns(&self, kind: KindId, key: u64) -> bool {
        self.tables
            .get(kind as usize)
            .is_some_and(|t| t.contains(key))
    }

    /// Whether migrations are in flight here: entities waiting for their
    /// marker, or moves not yet carried out.
    pub fn migrating(&self) -> bool {
        !self.mig.moves.is_empty()
            || self
                .mig
                .places
                .values()
                .any(|p| matches!(p, Place::Settling(_)))
    }

    /// After [`Shard::commit`] logged this pass: notes the LSNs of durable
    /// arrivals, so their old owners hear once the records are durable.
    pub(crate) fn note_arrival_lsns(&mut self) {
        for (kind, key, origin) in std::mem::take(&mut self.mig.arrivals) {
            let found = self
                .svc
                .inflight
                .iter()
                .rev()
                .find(|(_, k, key2)| *k == kind && *key2 == key)
                .map(|&(lsn, ..)| lsn);
            let version = self.tables[kind as usize].version_of(key);
            if let (Some(lsn), Some(version)) = (found, version) {
                self.mig
                    .arrival_lsns
                    .push_back((lsn, kind, key, origin, version));
            }
        }
    }

    /// Records below `lsn_end` are durable: confirms the arrivals among them.
    pub(crate) fn release_arrivals(&mut self, lsn_end: u64) {
        while let Some(&(lsn, kind, key, origin, version)) = self.mig.arrival_lsns.front() {
            if lsn >= lsn_end {
                break;
            }
            self.mig.arrival_lsns.pop_front();
            let env = Envelope::new(kind, key, Op::Released, version)
                .with_route(self.index() as SenderId, 0);
            self.svc.to_shards[origin].push(env);
        }
    }
}

/// The sender of a move request that wants no answer (the rebalancer's).
pub const NO_REPLY: SenderId = SenderId::MAX;
