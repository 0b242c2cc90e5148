//! What a shard knows of an entity that moved ([`Place`]), and how it routes
//! an addressed envelope by that knowledge (the slow path of delivery).

use std::collections::VecDeque;

use crate::envelope::{Envelope, Op, DIRECT, REROUTED, STRAGGLER};
use crate::hash::{EntityMap, EntitySet};
use crate::id::{EntityId, ReplyTo};
use crate::limits::BOUNCED_CAP;
use crate::migrate::Protocol;

/// What a shard knows about an entity that moved.
pub(super) enum Place {
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
    pub(super) fn name(&self) -> String {
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

/// An entity moving here: what waits for it, and what it waits for.
pub(super) struct Settling {
    /// Messages that came the new way, in order.
    pub(super) held: VecDeque<Envelope>,
    /// Messages that came straight from their sender's route cache, in
    /// order: handled after `held`, where what the same senders sent before
    /// and this shard bounced to the home comes back (see [`Bounced`]).
    pub(super) direct: VecDeque<Envelope>,
    /// Whether the entity itself arrived.
    pub(super) arrived: bool,
    /// Markers still to come once it arrived: the home's [`Op::Marker`]
    /// (it came from a shard that is not its home) and this shard's own
    /// [`Op::Rejoin`] (this shard bounced messages for it). Settled when it
    /// arrived and none is due.
    pub(super) due: u8,
    /// When it left its old owner (for the pause figure).
    pub(super) left_ns: u64,
    /// Who asked for the move and wants an answer once settled.
    pub(super) reply: Option<ReplyTo>,
}

impl Settling {
    pub(super) fn waiting() -> Self {
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

/// The places of one shard, with a count of those settling (the delivery
/// fast path tests it). Not capped: see
/// [`PLACE_BYTES_PER_MOVED_ENTITY`](crate::limits::PLACE_BYTES_PER_MOVED_ENTITY).
#[derive(Default)]
pub(super) struct Places {
    /// Changed only through [`Places::set`] and [`Places::clear`], which
    /// keep `settling` true to it.
    map: EntityMap<Place>,
    /// How many places are [`Place::Settling`]. Settled places (an entity
    /// away from its home, a guest) leave deliveries on the fast path.
    settling: usize,
}

impl Places {
    #[inline]
    pub(super) fn settling(&self) -> usize {
        self.settling
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub(super) fn get(&self, id: &EntityId) -> Option<&Place> {
        self.map.get(id)
    }

    pub(super) fn get_mut(&mut self, id: &EntityId) -> Option<&mut Place> {
        self.map.get_mut(id)
    }

    /// Sets what this shard knows of `id`; returns what it knew before.
    pub(super) fn set(&mut self, id: EntityId, place: Place) -> Option<Place> {
        self.settling += usize::from(matches!(place, Place::Settling(_)));
        let old = self.map.insert(id, place);
        self.settling -= usize::from(matches!(old, Some(Place::Settling(_))));
        old
    }

    /// Forgets what this shard knew of `id`.
    pub(super) fn clear(&mut self, id: &EntityId) -> Option<Place> {
        let old = self.map.remove(id);
        self.settling -= usize::from(matches!(old, Some(Place::Settling(_))));
        old
    }
}

/// Entities this shard (not their home) sent direct messages on to the
/// home for, since they last arrived here: their next arrival waits for an
/// [`Op::Rejoin`]. At most [`BOUNCED_CAP`]; past that, `overflow` makes
/// every arrival wait for one.
#[derive(Default)]
pub(super) struct Bounced {
    set: EntitySet,
    overflow: bool,
}

impl Bounced {
    /// Notes a bounce of `id`; returns `false` when it could not be
    /// remembered one by one (the set is full).
    fn note(&mut self, id: EntityId) -> bool {
        if self.set.len() < BOUNCED_CAP {
            self.set.insert(id);
            true
        } else if !self.set.contains(&id) {
            self.overflow = true;
            false
        } else {
            true
        }
    }

    /// Whether an arrival of `id` must wait for a rejoin marker.
    pub(super) fn take(&mut self, id: EntityId) -> bool {
        self.set.remove(&id) || self.overflow
    }
}

impl Protocol<'_> {
    /// The slow path of delivery for addressed envelopes: the entity moved,
    /// is moving, or the envelope was forwarded.
    pub(crate) fn route_addressed(&mut self, mut env: Envelope) {
        let id = EntityId::new(env.kind, env.key);
        let me = self.me();
        match self.mig.places.get_mut(&id) {
            Some(Place::Away(to)) => {
                let to = *to;
                // Keep DIRECT: the owner's lanes tell a sender's routes by it.
                let direct = env.status & DIRECT;
                if self.svc.is_home(id) {
                    env.status = REROUTED | direct;
                    self.svc.counters_mut().rerouted += 1;
                } else {
                    env.status = STRAGGLER | direct;
                    self.svc.counters_mut().forwarded += 1;
                }
                self.svc.out().push_remote(to, env);
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
                    self.svc.counters_mut().held += 1;
                    s.direct.push_back(env);
                } else {
                    debug_assert_eq!(env.status & STRAGGLER, 0, "a straggler before its entity");
                    self.svc.counters_mut().held += 1;
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
                let home = self.svc.is_home(id);
                if env.status & REROUTED != 0 && !home {
                    // Routed here by the home, ahead of the entity itself.
                    let mut s = Settling::waiting();
                    self.svc.counters_mut().held += 1;
                    s.held.push_back(env);
                    self.mig.places.set(id, Place::Settling(Box::new(s)));
                } else if env.status == DIRECT && !home {
                    // A sender's stale route: the entity is not here (only
                    // its home may activate it without a place). Its home
                    // knows where it is; what goes there after this comes
                    // back here only behind a rejoin marker.
                    if !self.mig.bounced.note(id) {
                        self.svc.counters_mut().bounce_overflows += 1;
                    }
                    self.svc.counters_mut().bounced += 1;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_entry_is_what_the_limit_says() {
        // `PLACE_BYTES_PER_MOVED_ENTITY` assumes a 32-byte map entry (plus
        // the map's control byte and slack).
        assert!(std::mem::size_of::<(EntityId, Place)>() <= 32);
    }
}
