//! Layer 5, protocol: live migration — moving an entity between shards while
//! every sender keeps its order — as state structs acting on the tables and
//! the services. [`Protocol`] borrows both for one step; its methods live
//! beside the state they change: what a shard knows of moved entities
//! (`place`), the owner's half of lazy routing (`lanes`), and the move itself
//! (`handoff`). The sender's half of lazy routing is the route cache
//! (`services::route_cache`); which entities to move is `rebalance`.
//!
//! # Routing
//!
//! Clients address an entity at its *home* shard (a hash of kind and key),
//! whether or not it still lives there. So do shards, until they learn
//! better (see `services::route_cache`): a shard's handlers' messages to an
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
//! bounced for ([`BOUNCED_CAP`](crate::limits::BOUNCED_CAP), beyond which
//! every arrival rejoins).
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
//! **Bounds.** Every map here has its bound, or what it is proportional
//! to, in [`limits`](crate::limits).
//!
//! **Cost.** A shard whose route cache is empty pays one branch per send.
//! A miss costs the sender one hint; a stale route one extra hop through
//! the home. Moves from a shard cost a round of switch markers when its
//! cache is not empty; arrivals send its direct routes home.

mod handoff;
mod lanes;
mod place;

use std::collections::VecDeque;

use crate::dispatch::Tables;
use crate::envelope::Envelope;
use crate::hash::EntityMap;
use crate::id::EntityId;
use crate::limits::PAUSES_KEPT_MAX;
use crate::rebalance::{self, RebalancePolicy};
use crate::services::heat::Hot;
use crate::services::Services;

use handoff::{Arrival, Departed, LoggedArrival};
use lanes::LaneMap;
use place::{Bounced, Place, Places};

/// Migration state of one shard.
#[derive(Default)]
pub(crate) struct Migration {
    /// What this shard knows of entities that moved (see
    /// [`PLACE_BYTES_PER_MOVED_ENTITY`](crate::limits::PLACE_BYTES_PER_MOVED_ENTITY)).
    places: Places,
    /// Lanes of the entities here whose senders' streams are not in their
    /// default state (at most [`LANES_MAX`](crate::limits::LANES_MAX)).
    lanes: LaneMap,
    /// Entities this shard (not their home) sent direct messages on to the
    /// home for, since they last arrived here.
    bounced: Bounced,
    /// Rings the runtime must drain before anything else (see `Op::Fence`).
    fences: Vec<usize>,
    /// Durable entities that left, until their new owner's record is durable
    /// (see [`DEPARTED_PER_PASS_MAX`](crate::limits::DEPARTED_PER_PASS_MAX)).
    /// Checkpoints keep writing them.
    departed: EntityMap<Departed>,
    /// Durable arrivals to confirm to their old owner once logged here.
    arrivals: Vec<Arrival>,
    /// Logged arrivals waiting to be durable, in LSN order.
    arrival_lsns: VecDeque<LoggedArrival>,
    /// Window of each recent arrival (cooldown); pruned every window.
    arrived_in: EntityMap<u32>,
    /// The hottest entities of the last completed window, hottest first.
    hottest: Vec<Hot>,
    /// Windows in a row this shard was clearly the busiest.
    streak: u32,
    /// `handled` at the start of the current window.
    handled_at_window: u64,
    /// Pauses recorded since the runtime last took them (at most
    /// [`PAUSES_KEPT_MAX`]).
    pauses: Vec<u64>,
    /// Departure times of entities settled but not yet stamped.
    unstamped: Vec<u64>,
    /// Moves wait for the route cache to empty: hints are not taken.
    draining: bool,
}

impl Migration {
    /// Whether addressed envelopes with no status may go straight to their
    /// entity's table: nothing is settling here, no sender's stream is
    /// switching. (An entity that is not in its table may still have moved
    /// away: see `Shard::dispatch`.)
    #[inline]
    pub(crate) fn quiet(&self) -> bool {
        self.places.settling() == 0 && self.lanes.is_empty()
    }

    /// Whether no entity of this shard moved anywhere: a table miss is a
    /// first message, never an entity that lives elsewhere.
    #[inline]
    pub(crate) fn no_places(&self) -> bool {
        self.places.is_empty()
    }

    /// Whether durable arrivals wait for their LSNs (see
    /// [`Protocol::note_arrival_lsns`]).
    #[inline]
    pub(crate) fn has_arrivals(&self) -> bool {
        !self.arrivals.is_empty()
    }

    /// Shards whose inbound ring the runtime must drain completely before
    /// delivering anything more.
    #[inline]
    pub(crate) fn take_fences(&mut self) -> Option<Vec<usize>> {
        if self.fences.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.fences))
        }
    }

    /// The hottest entities of the last completed window, hottest first.
    pub(crate) fn hottest(&self) -> &[Hot] {
        &self.hottest
    }

    /// Whether entities settled here since the last stamp.
    #[inline]
    pub(crate) fn has_unstamped(&self) -> bool {
        !self.unstamped.is_empty()
    }

    /// Records the pauses of the entities that settled since the last call,
    /// as ending at `now_ns`.
    pub(crate) fn stamp_settled(&mut self, now_ns: u64, svc: &mut Services) {
        for left_ns in std::mem::take(&mut self.unstamped) {
            let pause = now_ns.saturating_sub(left_ns);
            let c = svc.counters_mut();
            c.pause_ns_total += pause;
            c.pause_ns_max = c.pause_ns_max.max(pause);
            if self.pauses.len() < PAUSES_KEPT_MAX {
                self.pauses.push(pause);
            } else {
                c.pauses_dropped += 1;
            }
        }
    }

    /// Moves the pauses recorded since the last call into `out`.
    pub(crate) fn take_pauses(&mut self, out: &mut Vec<u64>) {
        out.append(&mut self.pauses);
    }

    /// Whether migrations are in flight here: entities waiting for their
    /// marker, moves not yet carried out, route switches not yet
    /// acknowledged, or messages held for a sender's switch marker.
    pub(crate) fn migrating(&self, svc: &Services) -> bool {
        svc.moves().any_requested()
            || svc.routes().pending()
            || self.lanes.holding()
            || self.places.settling() > 0
    }
}

/// One step of the protocol: the shard's tables, services and migration
/// state, borrowed together.
pub(crate) struct Protocol<'a> {
    pub(crate) tables: &'a mut Tables,
    pub(crate) svc: &'a mut Services,
    pub(crate) mig: &'a mut Migration,
}

impl Protocol<'_> {
    /// This shard's index.
    #[inline]
    fn me(&self) -> usize {
        self.svc.shard()
    }

    /// Hands an addressed envelope to the entity on this shard.
    #[inline]
    fn deliver_here(&mut self, env: Envelope) {
        self.tables.deliver_here(env, self.svc);
    }

    /// Ends a heat window: records this shard's hottest entities and, when
    /// `policy` says this shard is clearly busier than the least busy one,
    /// queues moves of its hottest movable entities there (carried out by
    /// [`Protocol::run_moves`]). Returns how many moves it queued.
    pub(crate) fn end_window(
        &mut self,
        window: u32,
        loads: &[f32],
        policy: &RebalancePolicy,
    ) -> usize {
        let handled = self.svc.counters().handled;
        let total = handled - self.mig.handled_at_window;
        self.mig.handled_at_window = handled;
        self.mig.hottest = self.svc.heat_mut().take_sorted();
        self.svc.heat_mut().begin_window(window);
        let cooldown = policy.cooldown_windows;
        if !self.mig.arrived_in.is_empty() {
            self.mig
                .arrived_in
                .retain(|_, at| window.saturating_sub(*at) <= cooldown);
        }
        // Only entities that may move now are offered to the plan.
        let movable: Vec<Hot> = self
            .mig
            .hottest
            .iter()
            .copied()
            .filter(|hot| self.may_move(hot.id()))
            .collect();
        let plan = rebalance::plan(self.me(), loads, total, &movable, policy, self.mig.streak);
        self.mig.streak = plan.streak;
        let queued = plan.moves.len();
        for id in plan.moves {
            self.svc
                .moves_mut()
                .request(crate::services::moves::PendingMove {
                    id,
                    target: plan.target,
                    reply: None,
                });
        }
        queued
    }

    /// Whether the rebalancer may pick `id`: a movable kind, living and
    /// settled here, not pinned, not just arrived.
    fn may_move(&self, id: EntityId) -> bool {
        let table = self.tables.get(id.kind);
        table.movable()
            && table.contains(id.key)
            && !self.svc.moves().is_pinned(&id)
            && !self.mig.arrived_in.contains_key(&id)
            && !matches!(
                self.mig.places.get(&id),
                Some(Place::Settling(_) | Place::Away(_))
            )
    }
}
