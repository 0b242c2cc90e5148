//! The owner's half of lazy routing: for each entity it holds and each
//! sending shard whose stream to it is not in its default state, a *lane* —
//! which class of route (home or direct) it handles now, and what came the
//! other way, held in order until the sender's switch marker.
//!
//! The sender's half (the route cache, epochs, switch markers) and the
//! vocabulary are in `services::route_cache`.
//!
//! Learning: when an owner hands an entity a message of another shard's
//! stream that was forwarded on the way (it went to the home, or to a shard
//! the entity had left), it counts a *route miss* and sends that shard an
//! [`Op::Hint`] naming itself; a message that came straight from the
//! sender's cache is a *route hit*.
//!
//! Lanes exist only for streams that are on a direct route or mid-switch,
//! so at most [`LANES_MAX`](crate::limits::LANES_MAX); they travel with
//! their entity when it moves.

use std::collections::VecDeque;

use crate::envelope::{Envelope, Op, DIRECT, REROUTED, STRAGGLER};
use crate::hash::EntityMap;
use crate::id::{EntityId, SenderId};
use crate::migrate::Protocol;

/// One sending shard's stream to an entity, as its owner sees it. Exists
/// only when not in its default state (home class, nothing held).
pub(super) struct Lane {
    stream: u32,
    /// The class handled now: direct (`true`) or home.
    direct: bool,
    /// Messages of the other class, in order, waiting for the marker.
    held: VecDeque<Envelope>,
}

/// The lanes of one entity.
pub(super) type Lanes = Vec<Lane>;

/// The lanes of every entity of one shard that has any.
#[derive(Default)]
pub(super) struct LaneMap {
    map: EntityMap<Lanes>,
}

impl LaneMap {
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Takes entity `id`'s lanes, to travel with it.
    pub(super) fn take(&mut self, id: EntityId) -> Lanes {
        self.map.remove(&id).unwrap_or_default()
    }

    /// Installs the lanes of an entity that arrived.
    pub(super) fn put(&mut self, id: EntityId, lanes: Lanes) {
        if !lanes.is_empty() {
            let earlier = self.map.insert(id, lanes);
            debug_assert!(earlier.is_none(), "lanes of an entity that lived elsewhere");
        }
    }

    /// Whether lanes hold messages waiting for a switch marker.
    pub(super) fn holding(&self) -> bool {
        self.map
            .values()
            .any(|lanes| lanes.iter().any(|l| !l.held.is_empty()))
    }

    /// The class stream `s` of `id` is handled in now.
    fn class(&self, id: EntityId, s: u32) -> bool {
        self.map
            .get(&id)
            .and_then(|lanes| lanes.iter().find(|l| l.stream == s))
            .is_some_and(|l| l.direct)
    }

    /// The index of stream `s`'s lane of `id`, made in its default state if
    /// there is none.
    fn lane_index(&mut self, id: EntityId, s: u32) -> usize {
        let lanes = self.map.entry(id).or_default();
        match lanes.iter().position(|l| l.stream == s) {
            Some(i) => i,
            None => {
                lanes.push(Lane {
                    stream: s,
                    direct: false,
                    held: VecDeque::new(),
                });
                lanes.len() - 1
            }
        }
    }
}

impl Protocol<'_> {
    /// Hands an addressed envelope that reached its entity's shard to the
    /// entity: counts route hits and misses, hints the sending shard, keeps
    /// each shard's stream in order through its lane.
    pub(super) fn hand(&mut self, mut env: Envelope) {
        let flags = env.status;
        env.status = 0;
        if let Some(stream) = env.stream() {
            let id = EntityId::new(env.kind, env.key);
            let direct = flags & DIRECT != 0;
            if env.op != Op::Switch {
                // Direct routes never name the home: a direct message there
                // was sent home by a shard the entity had left.
                let detour =
                    flags & (REROUTED | STRAGGLER) != 0 || (direct && self.svc.is_home(id));
                if detour {
                    self.svc.counters_mut().route_misses += 1;
                    if self.svc.routes().learns() {
                        let me = self.me();
                        let hint = Envelope::new(id.kind, id.key, Op::Hint, me as u32)
                            .with_route(me as SenderId, 0);
                        self.svc.out().push_to_shard(stream, hint);
                    }
                } else if direct {
                    self.svc.counters_mut().route_hits += 1;
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
        id: EntityId,
        stream: usize,
        direct: bool,
        env: Envelope,
    ) -> Option<Envelope> {
        let s = stream as u32;
        let current = self.mig.lanes.class(id, s);
        if direct != current {
            debug_assert_ne!(env.op, Op::Switch, "a switch before the last was handled");
            let i = self.mig.lanes.lane_index(id, s);
            self.mig.lanes.map.get_mut(&id).expect("made just above")[i]
                .held
                .push_back(env);
            self.svc.counters_mut().held += 1;
            return None;
        }
        if env.op != Op::Switch {
            return Some(env);
        }
        // The marker: everything of the old class is handled. Flip, answer,
        // release what came the new way.
        let i = self.mig.lanes.lane_index(id, s);
        let lanes = self.mig.lanes.map.get_mut(&id).expect("made just above");
        lanes[i].direct = !current;
        let held = std::mem::take(&mut lanes[i].held);
        if !lanes[i].direct {
            lanes.swap_remove(i);
            if lanes.is_empty() {
                self.mig.lanes.map.remove(&id);
            }
        }
        let me = self.me();
        let ack = Envelope::empty(id.kind, id.key, Op::Switched, 0).with_route(me as SenderId, 0);
        self.svc.out().push_to_shard(stream, ack);
        for env in held {
            if let Some(env) = self.lane(id, stream, !current, env) {
                self.deliver_here(env);
            }
        }
        None
    }
}
