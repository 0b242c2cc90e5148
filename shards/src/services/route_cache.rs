//! Lazy routing: shards learn where moved entities live and send to them
//! directly, without breaking any sender's order.
//!
//! Two halves, one per role of a shard:
//!
//! - **As a sender** (messages its handlers send with
//!   [`Ctx::tell`](crate::Ctx::tell) and [`Ctx::ask`](crate::Ctx::ask)) a
//!   shard keeps a *route cache*: for some entities, the shard to send to
//!   instead of their home. Everything the shard sends to one entity forms
//!   its *stream* to that entity (the stream tag on each message names the
//!   shard). The stream is cut into *epochs*, each sent on one route: the
//!   home route (untagged, the default) or a direct route (flagged
//!   [`DIRECT`]). Routes alternate: home, direct, home, direct… (a switch
//!   from one direct route to another goes home in between, even if no
//!   message takes that epoch).
//! - **As an owner** a shard keeps, for each entity it holds and each
//!   sending shard whose stream to it is not in its default state, a
//!   *lane*: which class of route (home or direct) it handles now, and what
//!   came the other way, held in order.
//!
//! A switch: the sender sends an [`Op::Switch`] marker down the route it
//! leaves, then sends the next epoch on the new one. The owner handles
//! messages of the current class, holds those of the other class, and on
//! the marker flips its class, acknowledges ([`Op::Switched`]) and releases
//! what it held. A sender switches a route again only once the switch
//! before was acknowledged, so at most two epochs of a stream are ever in
//! flight — the class (one bit, [`DIRECT`]) is enough to tell them apart.
//!
//! Learning: when an owner hands an entity a message of another shard's
//! stream that was forwarded on the way (it went to the home, or to a
//! shard the entity had left), it counts a *route miss* and sends that
//! shard an [`Op::Hint`] naming itself; a message that came straight from
//! the sender's cache is a *route hit*. A hint naming the entity's home
//! means "drop the route".
//!
//! The ordering proof, and how stale routes and moving senders are made
//! safe, is in the [`migrate`](crate::migrate) module docs.
//!
//! # Costs and limits
//!
//! - A shard whose cache is empty pays one branch per send; one whose
//!   cache is not pays a hash lookup.
//! - The cache holds at most [`ROUTE_CACHE_CAP`] entities. When it is full
//!   a new hint is dropped and one cached route (whichever the map yields
//!   first) is switched back home, so later hints find room.
//! - Lanes exist only for streams that are on a direct route or mid-switch;
//!   they travel with their entity when it moves.

use std::collections::VecDeque;

use crate::envelope::{Envelope, Op, SenderId, DIRECT, STRAGGLER};
use crate::migrate::{EntityRef, REROUTED};
use crate::shard::{Services, Shard};

/// Most entities one shard's route cache holds.
pub const ROUTE_CACHE_CAP: usize = 1024;

/// What a sending shard knows of its route to one entity. An entry exists
/// only while the route is direct, a switch is unacknowledged, or a switch
/// waits to be made.
#[derive(Default)]
pub(crate) struct RouteEntry {
    /// The shard messages go to, or `None` for the entity's home.
    to: Option<u32>,
    /// A switch marker went down the previous route; no new switch until
    /// the owner acknowledges it (at most two epochs in flight).
    pending: bool,
    /// The route to switch to once the pending switch is acknowledged.
    want: Option<Option<u32>>,
    /// Sends may not take the current route (it is direct and older than
    /// an entity that arrived here since, see `rebase_routes`): they wait
    /// here, in order, until the route is switched home.
    park: bool,
    parked: VecDeque<Envelope>,
}

/// One sending shard's stream to an entity, as its owner sees it. Exists
/// only when not in its default state (home class, nothing held).
pub(crate) struct Lane {
    stream: u32,
    /// The class handled now: direct (`true`) or home.
    direct: bool,
    /// Messages of the other class, in order, waiting for the marker.
    held: VecDeque<Envelope>,
}

/// The lanes of one entity.
pub(crate) type Lanes = Vec<Lane>;

impl Services {
    /// Puts a message a handler sent on its route (the cache's, or the
    /// home) and tags it with this shard's stream. Fails, handing it back,
    /// when `cap` messages already wait for that destination.
    #[inline]
    pub(crate) fn route_message(&mut self, mut env: Envelope, cap: usize) -> Result<(), Envelope> {
        env.set_stream(self.spec.shard);
        // NB: one test when nothing ever moved (see the `tell_cross_core` bench).
        if self.routes.is_empty() {
            return self.push_on(None, env, cap);
        }
        let to = match self.routes.get_mut(&(env.kind, env.key)) {
            None => None,
            Some(e) if e.park => {
                if e.parked.len() >= cap {
                    return Err(env);
                }
                e.parked.push_back(env);
                return Ok(());
            }
            Some(e) => e.to,
        };
        self.push_on(to, env, cap)
    }

    #[inline]
    fn push_on(&mut self, to: Option<u32>, mut env: Envelope, cap: usize) -> Result<(), Envelope> {
        let dest = match to {
            None => self
                .kinds
                .home_shard(env.kind, env.key, self.spec.shard_count),
            Some(shard) => {
                env.status |= DIRECT;
                shard as usize
            }
        };
        let queue = if dest == self.spec.shard {
            &mut self.local
        } else {
            &mut self.to_shards[dest].queue
        };
        if queue.len() >= cap {
            env.status &= !DIRECT;
            return Err(env);
        }
        queue.push_back(env);
        Ok(())
    }

    /// Sends the switch marker down the current route and makes `to` the
    /// route; what was parked goes the new way.
    fn switch_route(&mut self, id: EntityRef, to: Option<u32>) {
        let me = self.spec.shard;
        let e = self.routes.get_mut(&id).expect("switching a known route");
        debug_assert!(!e.pending, "a switch before the last was acknowledged");
        debug_assert!(e.to != to);
        debug_assert!(
            e.to.is_none() || to.is_none(),
            "direct routes switch home in between"
        );
        let old = std::mem::replace(&mut e.to, to);
        e.pending = true;
        e.park = false;
        let parked = std::mem::take(&mut e.parked);
        let mut marker = Envelope::empty(id.0, id.1, Op::Switch, 0).with_route(me as SenderId, 0);
        marker.set_stream(me);
        let _ = self.push_on(old, marker, usize::MAX);
        for env in parked {
            let _ = self.push_on(to, env, usize::MAX);
        }
        self.counters.route_switches += 1;
    }

    /// Takes the next step towards the route `e.want` names, if no switch
    /// is pending; forgets the entry once it is back home with nothing to do.
    fn advance_route(&mut self, id: EntityRef) {
        let Some(e) = self.routes.get_mut(&id) else {
            return;
        };
        if e.pending {
            return;
        }
        if e.park {
            // A direct route older than an arrival: home first, whatever
            // comes next.
            return self.switch_route(id, None);
        }
        match e.want {
            Some(want) if want == e.to => e.want = None,
            Some(Some(_)) if e.to.is_some() => {
                // Direct to direct: home first (the class alternates).
                return self.switch_route(id, None);
            }
            Some(want) => {
                e.want = None;
                return self.switch_route(id, want);
            }
            None => {}
        }
        let e = &self.routes[&id];
        if e.to.is_none() && !e.park && e.parked.is_empty() {
            self.routes.remove(&id);
        }
    }

    /// A hint: entity `id` lives on shard `owner`.
    pub(crate) fn take_hint(&mut self, id: EntityRef, owner: usize) {
        let home = self.kinds.home_shard(id.0, id.1, self.spec.shard_count);
        let want = (owner != home).then_some(owner as u32);
        let full = self.routes.len() >= ROUTE_CACHE_CAP;
        match self.routes.get_mut(&id) {
            Some(e) => {
                e.want = Some(want);
                self.advance_route(id);
            }
            None if want.is_none() => {}
            None if full => {
                // Full: make room for a later hint by sending one route home.
                let victim = self
                    .routes
                    .iter()
                    .find(|(_, e)| !e.pending && e.to.is_some() && e.want.is_none())
                    .map(|(id, _)| *id);
                if let Some(victim) = victim {
                    self.switch_route(victim, None);
                }
            }
            None => {
                let e = RouteEntry {
                    want: Some(want),
                    ..RouteEntry::default()
                };
                self.routes.insert(id, e);
                self.advance_route(id);
            }
        }
    }

    /// The owner of `id` handled this shard's last switch marker.
    pub(crate) fn switched(&mut self, id: EntityRef) {
        match self.routes.get_mut(&id) {
            Some(e) => {
                debug_assert!(e.pending, "an acknowledgement without a switch");
                e.pending = false;
                self.advance_route(id);
            }
            None => debug_assert!(false, "an acknowledgement for a forgotten route"),
        }
    }

    /// Sends every route home (and forgets hints still to be followed), so
    /// the cache empties once the owners acknowledge. Entities leave this
    /// shard only with an empty cache (see `Shard::run_moves`).
    pub(crate) fn flush_routes(&mut self) {
        let ids: Vec<EntityRef> = self.routes.keys().copied().collect();
        for id in ids {
            let e = self.routes.get_mut(&id).expect("listed just above");
            e.want = Some(None);
            self.advance_route(id);
        }
    }

    /// An entity that sends may have arrived: no message may take a direct
    /// route chosen before its arrival (see the `migrate` docs). Such routes
    /// switch home; those mid-switch park their sends until they can.
    pub(crate) fn rebase_routes(&mut self) {
        let ids: Vec<EntityRef> = self
            .routes
            .iter()
            .filter(|(_, e)| e.to.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let e = self.routes.get_mut(&id).expect("listed just above");
            if e.pending {
                // Home next (see `advance_route`); a direct route wanted
                // later is taken after that.
                e.park = true;
            } else {
                self.switch_route(id, None);
            }
        }
    }

    /// Whether a route switch waits for its acknowledgement.
    pub(crate) fn routes_pending(&self) -> bool {
        self.routes.values().any(|e| e.pending)
    }
}

impl Shard {
    /// Hands an addressed envelope that reached its entity's shard to the
    /// entity: counts route hits and misses, hints the sending shard, keeps
    /// each shard's stream in order through its lane.
    pub(crate) fn hand(&mut self, mut env: Envelope) {
        let flags = env.status;
        env.status = 0;
        if let Some(stream) = env.stream() {
            let id = (env.kind, env.key);
            let direct = flags & DIRECT != 0;
            if env.op != Op::Switch {
                // Direct routes never name the home: a direct message there
                // was sent home by a shard the entity had left.
                let detour = flags & (REROUTED | STRAGGLER) != 0 || (direct && self.is_home(id));
                if detour {
                    self.svc.counters.route_misses += 1;
                    if self.svc.learn_routes {
                        let hint = Envelope::new(id.0, id.1, Op::Hint, self.index() as u32)
                            .with_route(self.index() as SenderId, 0);
                        self.push_to(stream, hint);
                    }
                } else if direct {
                    self.svc.counters.route_hits += 1;
                }
            }
            if direct || env.op == Op::Switch || !self.mig.lanes.is_empty() {
                match self.lane(id, stream, direct, env) {
                    Some(e) => env = e,
                    None => return,
                }
            }
        }
        self.deliver_here(env);
    }

    /// Passes `env` (of `stream`, class `direct`) through its lane: returns
    /// it if it may be handled now; holds it, or takes a switch marker.
    fn lane(
        &mut self,
        id: EntityRef,
        stream: usize,
        direct: bool,
        env: Envelope,
    ) -> Option<Envelope> {
        let s = stream as u32;
        let current = self
            .mig
            .lanes
            .get(&id)
            .and_then(|lanes| lanes.iter().find(|l| l.stream == s))
            .is_some_and(|l| l.direct);
        if direct != current {
            debug_assert_ne!(env.op, Op::Switch, "a switch before the last was handled");
            let lanes = self.mig.lanes.entry(id).or_default();
            let lane = match lanes.iter().position(|l| l.stream == s) {
                Some(i) => &mut lanes[i],
                None => {
                    lanes.push(Lane {
                        stream: s,
                        direct: false,
                        held: VecDeque::new(),
                    });
                    lanes.last_mut().expect("pushed just above")
                }
            };
            lane.held.push_back(env);
            self.svc.counters.held += 1;
            return None;
        }
        if env.op != Op::Switch {
            return Some(env);
        }
        // The marker: everything of the old class is handled. Flip, answer,
        // release what came the new way.
        let lanes = self.mig.lanes.entry(id).or_default();
        let i = match lanes.iter().position(|l| l.stream == s) {
            Some(i) => i,
            None => {
                lanes.push(Lane {
                    stream: s,
                    direct: false,
                    held: VecDeque::new(),
                });
                lanes.len() - 1
            }
        };
        lanes[i].direct = !current;
        let held = std::mem::take(&mut lanes[i].held);
        if !lanes[i].direct {
            lanes.swap_remove(i);
            if lanes.is_empty() {
                self.mig.lanes.remove(&id);
            }
        }
        let ack =
            Envelope::empty(id.0, id.1, Op::Switched, 0).with_route(self.index() as SenderId, 0);
        self.push_to(stream, ack);
        for env in held {
            if let Some(env) = self.lane(id, stream, !current, env) {
                self.deliver_here(env);
            }
        }
        None
    }

    /// Queues a control envelope for shard `to` (the local queue for this one).
    pub(crate) fn push_to(&mut self, to: usize, env: Envelope) {
        if to == self.index() {
            self.svc.local.push_back(env);
        } else {
            self.svc.to_shards[to].push(env);
        }
    }

    /// Takes entity `id`'s lanes, to travel with it.
    pub(crate) fn take_lanes(&mut self, id: EntityRef) -> Lanes {
        self.mig.lanes.remove(&id).unwrap_or_default()
    }

    /// Installs the lanes of an entity that arrived.
    pub(crate) fn put_lanes(&mut self, id: EntityRef, lanes: Lanes) {
        if !lanes.is_empty() {
            let earlier = self.mig.lanes.insert(id, lanes);
            debug_assert!(earlier.is_none(), "lanes of an entity that lived elsewhere");
        }
    }

    /// Whether lanes hold messages waiting for a switch marker.
    pub(crate) fn lanes_holding(&self) -> bool {
        self.mig
            .lanes
            .values()
            .any(|lanes| lanes.iter().any(|l| !l.held.is_empty()))
    }
}
