//! Live migration: heat, the move protocol, and the rebalancing policy.
//!
//! # Routing
//!
//! Clients address an entity at its *home* shard (a hash of kind and key),
//! whether or not it still lives there. So do shards, until they learn
//! better (see [`routes`](crate::routes)): a shard's handlers' messages to an
//! entity form that shard's *stream* to it, sent on the home route or, once
//! the shard learned where the entity lives, directly there ([`DIRECT`]).
//! A home shard whose entity moved away keeps a pointer to its owner and
//! forwards what arrives for it to the owner, on the ring between them.
//!
//! # A move from owner O to shard T (home H)
//!
//! 1. O takes the entity out of its table (its value, timers, heat, log
//!    state and its senders' lanes — a pointer move, no serialization) and
//!    sends it to T ([`Op::Transfer`]). From then on O forwards whatever
//!    reaches it for the entity to T, behind the entity, flagged
//!    [`STRAGGLER`].
//! 2. If O is the home, its pointer now says T and nothing else is needed:
//!    all home-route traffic went through O and keeps doing so.
//! 3. Otherwise messages may still be on their way H → O. O tells H where the
//!    entity went ([`Op::Moved`]); H switches its pointer to T and sends a
//!    [`Op::Marker`] to O behind everything it had sent there; O passes the
//!    marker on to T and forgets the entity. (When T is the home itself, T
//!    sends the marker on the entity's arrival.)
//! 4. If T, not being the home, sent messages for the entity on to H while
//!    the entity was away (see *Stale routes*), T also sends an
//!    [`Op::Rejoin`] marker to H, routed like a message, so it comes back
//!    behind them.
//! 5. Until its markers arrive, T handles stragglers (they came the old way)
//!    and holds everything else in order: what came from H, and — after
//!    that — what came straight from senders' caches. The markers guarantee
//!    nothing older is still behind, so T then handles what it held and the
//!    entity is settled. An entity moves again only once settled.
//!
//! Messages the new way may even reach T before the entity does (its
//! transfer waited in O's overflow queue): T holds them the same way.
//!
//! # Lazy routes, and why every sender's order holds
//!
//! The claim: for each sender and entity, messages are handled in the order
//! sent. Clients and home-route traffic keep the argument above: each hop is
//! FIFO, H decides every forward in arrival order, and the markers make T
//! wait for anything still on an older path ("H-order"). What is new is
//! that a shard's stream to an entity may take two routes.
//!
//! **Epochs.** A shard S sends its stream in epochs, each on one route,
//! alternating home and direct; a switch sends an [`Op::Switch`] marker down
//! the old route before anything goes the new way, and S switches again
//! only once the owner acknowledged ([`Op::Switched`]) the last marker. The
//! owner's lane for S handles one class (home or direct) at a time, holds
//! the other, and flips on the marker. So it suffices that (a) each epoch
//! reaches the entity in the order sent, and (b) at most two epochs are in
//! flight — true because the acknowledgement is sent only once the marker,
//! and so everything before it, was handled — so the class names the epoch.
//! Lanes travel with the entity in its transfer; whatever reaches its old
//! shards later is forwarded behind it, so a lane sees each epoch in order
//! wherever the entity goes.
//!
//! **(a) for a home epoch** is H-order. **For a direct epoch**, sent to
//! shard C: every message crosses the ring S → C (FIFO) and C treats each in
//! turn by its state for the entity: it lives here (handle), it is settling
//! here (hold, in order, behind what H routed here), it just left (forward
//! behind it as a straggler, while C keeps its pointer), or C knows nothing
//! of it.
//!
//! **Stale routes.** A shard that is not an entity's home knows for sure
//! whether the entity lives there: only the home may activate an entity it
//! has no record of. So C, knowing nothing of the entity, never activates
//! it: it *bounces* the message to H, which routes it by H-order, and
//! remembers that it did. Messages C bounced and messages C forwarded before
//! its pointer went do not overtake each other: the pointer goes only when
//! H's marker passes C, and H sends that marker, and T waits for it, behind
//! everything H routed on the old path. If the entity comes back to C, C
//! sends a rejoin marker to H behind everything it bounced and holds the
//! direct messages that reach it until the marker has come back; the
//! bounced ones come back before it and are handled first. C keeps no
//! pointer it would have to keep forever: only the set of entities it
//! bounced for ([`BOUNCED_CAP`], beyond which every arrival rejoins).
//!
//! **Moving senders.** A sender is an entity, not a shard; an entity E that
//! moves from S1 to S2 switches streams. Before any entity leaves S1, S1
//! sends every cached route home and waits for the acknowledgements (no
//! hints are taken meanwhile): so every message E sent from S1 and not yet
//! handled waits on a home route, in a ring to its target's home (S1's
//! outboxes are empty too), in no lane. On E's arrival S2 sends every shard
//! an [`Op::Fence`]: the home drains the ring from S1 before anything S2
//! sends it next. And S2 switches home every direct route it chose before
//! the arrival (one mid-switch parks its sends until it can): so E's next
//! message to any entity either goes home behind the fence, or takes a
//! direct route whose switch marker did — and in both cases reaches the
//! entity after every message E sent from S1 (H-order).
//!
//! **Durable entities.** What a durable handler sends waits for the log and
//! is routed only when released, so it never lands behind a switch marker
//! sent after it; outputs held when an entity leaves are released, and
//! routed, on its new shard, after its arrival.
//!
//! **Cost.** A shard whose route cache is empty pays one branch per send.
//! A miss costs the sender one hint; a stale route one extra hop through
//! the home. Moves from a shard cost a round of switch markers when its
//! cache is not empty; arrivals send its direct routes home.

use std::any::Any;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasherDefault;

use crate::entity::{home_shard, KindId};
use crate::envelope::{Envelope, Op, SenderId, CLIENT_BIT, DIRECT, STRAGGLER};
use crate::routes::Lanes;
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
            Place::Settling(s) => format!(
                "settling(arrived {}, markers due {}, held {} + {})",
                s.arrived,
                s.due,
                s.held.len(),
                s.direct.len()
            ),
        }
    }
}

pub(crate) struct Settling {
    /// Messages that came the new way, in order.
    held: VecDeque<Envelope>,
    /// Messages that came straight from their sender's route cache, in
    /// order: handled after `held`, where what the same senders sent before
    /// and this shard bounced to the home comes back (see `Migration::bounced`).
    direct: VecDeque<Envelope>,
    /// Whether the entity itself arrived.
    arrived: bool,
    /// Markers still to come once it arrived: the home's [`Op::Marker`]
    /// (it came from a shard that is not its home) and this shard's own
    /// [`Op::Rejoin`] (this shard bounced messages for it, see
    /// `Migration::bounced`). Settled when it arrived and none is due.
    due: u8,
    /// When it left its old owner (for the pause figure).
    left_ns: u64,
    reply: Option<(SenderId, u64)>,
}

impl Settling {
    fn waiting() -> Self {
        Settling {
            held: VecDeque::new(),
            direct: VecDeque::new(),
            arrived: false,
            due: 0,
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
    /// Its lanes: the streams of shards that send to it by a direct route
    /// or are switching (see `routes`), with what they hold.
    lanes: Lanes,
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
    /// Changed only through [`Migration::set_place`] and
    /// [`Migration::clear_place`], which keep `settling` true to it.
    pub(crate) places: PairMap<Place>,
    /// How many `places` are [`Place::Settling`]. Settled places (an
    /// entity away from its home, a guest) leave deliveries on the fast path.
    settling: usize,
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
    /// Lanes of the entities here whose senders' streams are not in their
    /// default state (see `routes`).
    pub(crate) lanes: PairMap<Lanes>,
    /// Entities this shard (not their home) sent direct messages on to the
    /// home for, since they last arrived here: their next arrival waits for
    /// an [`Op::Rejoin`]. At most [`BOUNCED_CAP`]; past that,
    /// `bounced_overflow` makes every arrival wait for one.
    pub(crate) bounced: PairSet,
    pub(crate) bounced_overflow: bool,
    /// Moves wait for the route cache to empty: hints are not taken.
    pub(crate) draining: bool,
}

/// Most entities a shard remembers, one by one, having bounced messages
/// for to their home (past that, every arrival waits for a rejoin marker).
pub const BOUNCED_CAP: usize = 4096;

impl Migration {
    /// Whether addressed envelopes with no status may go straight to their
    /// entity's table: nothing is settling here, no sender's stream is
    /// switching. (An entity that is not in its table may still have moved
    /// away: see [`Shard::dispatch`].)
    #[inline]
    pub(crate) fn quiet(&self) -> bool {
        self.settling == 0 && self.lanes.is_empty()
    }

    /// Whether no entity of this shard moved anywhere: a table miss is a
    /// first message, never an entity that lives elsewhere.
    #[inline]
    pub(crate) fn no_places(&self) -> bool {
        self.places.is_empty()
    }

    /// Sets what this shard knows of `id`; returns what it knew before.
    pub(crate) fn set_place(&mut self, id: EntityRef, place: Place) -> Option<Place> {
        self.settling += usize::from(matches!(place, Place::Settling(_)));
        let old = self.places.insert(id, place);
        self.settling -= usize::from(matches!(old, Some(Place::Settling(_))));
        old
    }

    /// Forgets what this shard knew of `id`.
    pub(crate) fn clear_place(&mut self, id: &EntityRef) -> Option<Place> {
        let old = self.places.remove(id);
        self.settling -= usize::from(matches!(old, Some(Place::Settling(_))));
        old
    }

    fn note_bounce(&mut self, id: EntityRef) {
        if self.bounced.len() < BOUNCED_CAP {
            self.bounced.insert(id);
        } else if !self.bounced.contains(&id) {
            self.bounced_overflow = true;
        }
    }

    /// Whether an arrival of `id` must wait for a rejoin marker.
    fn take_bounced(&mut self, id: EntityRef) -> bool {
        self.bounced.remove(&id) || self.bounced_overflow
    }
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
                // Keep DIRECT: the owner's lanes tell a sender's routes by it.
                let direct = env.status & DIRECT;
                if self.is_home(id) {
                    env.status = REROUTED | direct;
                    self.svc.counters.rerouted += 1;
                } else {
                    env.status = STRAGGLER | direct;
                    self.svc.counters.forwarded += 1;
                }
                self.svc.to_shards[to].push(env);
            }
            Some(Place::Settling(s)) if env.op == Op::Rejoin => {
                debug_assert!(s.arrived && s.due > 0, "an unexpected rejoin marker");
                s.due -= 1;
                if s.due == 0 {
                    self.settle(id);
                }
            }
            Some(Place::Settling(s)) => {
                if env.status & STRAGGLER != 0 && s.arrived {
                    self.hand(env);
                } else if env.status == DIRECT {
                    self.svc.counters.held += 1;
                    s.direct.push_back(env);
                } else {
                    debug_assert_eq!(env.status & STRAGGLER, 0, "a straggler before its entity");
                    self.svc.counters.held += 1;
                    s.held.push_back(env);
                }
            }
            Some(Place::Guest) => self.hand(env),
            None => {
                debug_assert_ne!(
                    env.op,
                    Op::Rejoin,
                    "shard {me}: a rejoin marker went astray"
                );
                let home = self.is_home(id);
                if env.status & REROUTED != 0 && !home {
                    // Routed here by the home, ahead of the entity itself.
                    let mut s = Settling::waiting();
                    self.svc.counters.held += 1;
                    s.held.push_back(env);
                    self.mig.set_place(id, Place::Settling(Box::new(s)));
                } else if env.status == DIRECT && !home {
                    // A sender's stale route: the entity is not here (only
                    // its home may activate it without a place). Its home
                    // knows where it is; what goes there after this comes
                    // back here only behind a rejoin marker.
                    self.mig.note_bounce(id);
                    self.svc.counters.bounced += 1;
                    self.svc.send_home(env);
                } else {
                    debug_assert!(
                        env.status == 0 || home,
                        "shard {me} got a forwarded envelope for an entity it knows nothing of"
                    );
                    self.hand(env);
                }
            }
        }
    }

    /// Hands an addressed envelope to the entity on this shard.
    #[inline]
    pub(crate) fn deliver_here(&mut self, env: Envelope) {
        if let Some(env) = self.deliver_here_if(env, true) {
            unreachable!("{env:?} was not delivered");
        }
    }

    /// Hands an addressed envelope to the entity on this shard; when the
    /// entity is not live here and `activate` is false, hands it back.
    #[inline]
    pub(crate) fn deliver_here_if(&mut self, env: Envelope, activate: bool) -> Option<Envelope> {
        debug_assert!(env.status == 0 && !matches!(env.op, Op::Switch | Op::Rejoin));
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
            return None;
        }
        let kind = env.kind as usize;
        debug_assert!(kind < self.tables.len(), "envelope of unknown kind");
        self.tables[kind].deliver(env, &mut self.svc, activate)
    }

    pub(crate) fn is_home(&self, (kind, key): EntityRef) -> bool {
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
                self.mig.set_place((env.kind, env.key), Place::Away(to));
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
            Op::Hint => {
                // SAFETY: `Op::Hint` envelopes carry the owner as a `u32`.
                let owner = unsafe { env.read::<u32>() } as usize;
                // A shard emptying its cache to let entities leave learns
                // again once they left (see `run_moves`).
                if !self.mig.draining {
                    self.svc.take_hint((env.kind, env.key), owner);
                }
            }
            Op::Switched => self.svc.switched((env.kind, env.key)),
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
        self.put_lanes(id, m.lanes);
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
        // It may send: no message may take a direct route chosen before it
        // came (see the module docs).
        self.svc.rebase_routes();
        self.mig.arrived_in.insert(id, self.svc.window);
        let home = self.is_home(id);
        let rejoin = !home && self.mig.take_bounced(id);
        let earlier = self.mig.clear_place(&id);
        if !m.settle && !rejoin {
            debug_assert!(
                earlier.is_none(),
                "shard {}: {:?} precedes a transfer of {id:?} from its home {}",
                self.index(),
                earlier.as_ref().map(Place::name),
                m.origin
            );
            self.mig.set_place(id, Place::Guest);
            self.settled(m.left_ns, m.reply, kind, key);
            return;
        }
        let mut s = match earlier {
            Some(Place::Settling(s)) => s,
            Some(Place::Away(_)) | None => Box::new(Settling::waiting()),
            Some(Place::Guest) => unreachable!("a guest arriving again"),
        };
        s.arrived = true;
        s.due = u8::from(m.settle) + u8::from(rejoin);
        s.left_ns = m.left_ns;
        s.reply = m.reply;
        self.mig.set_place(id, Place::Settling(s));
        if rejoin {
            // Behind what this shard sent home for it while it was away.
            let marker =
                Envelope::empty(kind, key, Op::Rejoin, 0).with_route(self.index() as SenderId, 0);
            self.svc.send_home(marker);
        }
        if home && m.settle {
            // Back home: the home is the one that sends the marker down the
            // old path (there is no pointer elsewhere to switch).
            let marker =
                Envelope::empty(kind, key, Op::Marker, 0).with_route(self.index() as SenderId, 0);
            self.svc.to_shards[m.origin].push(marker);
        }
    }

    fn marker(&mut self, env: Envelope) {
        let id = (env.kind, env.key);
        match self.mig.places.get_mut(&id) {
            Some(Place::Away(to)) => {
                // An old owner: pass the marker on behind the stragglers; it
                // never hears of this entity again (senders whose cached
                // route still names this shard are sent to the home).
                let to = *to;
                debug_assert!(!self.is_home(id));
                self.mig.clear_place(&id);
                self.svc.to_shards[to].push(env);
            }
            Some(Place::Settling(s)) => {
                debug_assert!(s.arrived && s.due > 0, "a marker overtook its entity");
                s.due -= 1;
                if s.due == 0 {
                    self.settle(id);
                }
            }
            other => {
                debug_assert!(
                    false,
                    "unexpected marker at {:?}",
                    other.as_ref().map(|p| p.name())
                );
            }
        }
    }

    /// Every marker came: the entity is settled here; what was held goes on.
    fn settle(&mut self, id: EntityRef) {
        let Some(Place::Settling(s)) = self.mig.clear_place(&id) else {
            unreachable!("settling");
        };
        if !self.is_home(id) {
            self.mig.set_place(id, Place::Guest);
        }
        let Settling {
            held,
            direct,
            left_ns,
            reply,
            ..
        } = *s;
        self.settled(left_ns, reply, id.0, id.1);
        for held in held.into_iter().chain(direct) {
            self.route_addressed(held);
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
        // ... and only when this shard routes everything through homes and
        // its switches home were acknowledged: then every message an
        // entity sent from here and not yet handled waits in a ring to its
        // target's home, where the fence of its arrival elsewhere orders it
        // (see the module docs). No hints are taken meanwhile.
        if !self.svc.routes.is_empty() {
            self.mig.draining = true;
            self.svc.flush_routes();
            return;
        }
        self.mig.draining = false;
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
        let lanes = self.take_lanes(id);
        let migrant = Migrant {
            departure,
            timers,
            held,
            origin: me,
            settle,
            lanes,
            left_ns: self.svc.now_ns,
            reply,
        };
        self.mig.arrived_in.remove(&id);
        self.mig.set_place(id, Place::Away(target));
        let transfer =
            Envelope::new(kind, key, Op::Transfer, migrant).with_route(me as SenderId, 0);
        self.svc.to_shards[target].push(transfer);
        // Timer firings already queued here for it follow it, behind it (an
        // old owner that is not its home forgets it once the marker passes).
        if me != home && !self.svc.local.is_empty() {
            let local = std::mem::take(&mut self.svc.local);
            for mut env in local {
                if (env.kind, env.key) == id && env.op.is_addressed() {
                    env.status |= STRAGGLER;
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
    /// marker, moves not yet carried out, route switches not yet
    /// acknowledged, or messages held for a sender's switch marker.
    pub fn migrating(&self) -> bool {
        !self.mig.moves.is_empty()
            || self.svc.routes_pending()
            || self.lanes_holding()
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
