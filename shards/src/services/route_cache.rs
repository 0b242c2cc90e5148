//! Layer 2, services: the route cache — a shard, as a *sender*, learns where
//! moved entities live and sends to them directly, without breaking any
//! sender's order.
//!
//! Messages a shard's handlers send with [`Ctx::tell`](crate::Ctx::tell) and
//! [`Ctx::ask`](crate::Ctx::ask) to one entity form that shard's *stream* to
//! it (the stream tag on each message names the shard). The stream is cut
//! into *epochs*, each sent on one route: the home route (untagged, the
//! default) or a direct route (flagged [`DIRECT`]). Routes alternate: home,
//! direct, home, direct… (a switch from one direct route to another goes
//! home in between, even if no message takes that epoch).
//!
//! A switch: the sender sends an [`Op::Switch`] marker down the route it
//! leaves, then sends the next epoch on the new one. The entity's owner
//! keeps a *lane* per such stream (see `migrate::lanes`): it handles
//! messages of the current class, holds those of the other class, and on
//! the marker flips its class, acknowledges ([`Op::Switched`]) and releases
//! what it held. A sender switches a route again only once the switch
//! before was acknowledged, so at most two epochs of a stream are ever in
//! flight — the class (one bit, [`DIRECT`]) is enough to tell them apart.
//!
//! Learning: an owner that hands an entity a message of another shard's
//! stream that was forwarded on the way sends that shard an [`Op::Hint`]
//! naming itself ([`RouteCache::take_hint`]). A hint naming the entity's
//! home means "drop the route".
//!
//! The ordering proof, and how stale routes and moving senders are made
//! safe, is in the `migrate` module docs.
//!
//! # Costs and limits
//!
//! - A shard whose cache is empty pays one branch per send; one whose
//!   cache is not pays a hash lookup.
//! - The cache holds at most [`ROUTE_CACHE_CAP`] entities. When it is full
//!   a new hint is dropped (counted) and one cached route (whichever the
//!   map yields first) is switched back home, so later hints find room.

use std::collections::VecDeque;

use crate::envelope::{Envelope, Op, DIRECT};
use crate::hash::EntityMap;
use crate::id::{EntityId, SenderId};
use crate::kind_index::KindIndex;
use crate::limits::ROUTE_CACHE_CAP;
use crate::services::counters::Counters;
use crate::services::outbox::Outboxes;

/// What a sending shard knows of its route to one entity. An entry exists
/// only while the route is direct, a switch is unacknowledged, or a switch
/// waits to be made.
#[derive(Default)]
struct RouteEntry {
    /// The shard messages go to, or `None` for the entity's home.
    to: Option<u32>,
    /// A switch marker went down the previous route; no new switch until
    /// the owner acknowledges it (at most two epochs in flight).
    pending: bool,
    /// The route to switch to once the pending switch is acknowledged.
    want: Option<Option<u32>>,
    /// Sends may not take the current route (it is direct and older than
    /// an entity that arrived here since, see `rebase`): they wait here, in
    /// order, until the route is switched home.
    park: bool,
    parked: VecDeque<Envelope>,
}

/// Where a route cache sends: the shard's outboxes, the kinds (for homes),
/// and the counters. Borrowed for one operation.
pub(crate) struct Wires<'a> {
    pub(crate) out: &'a mut Outboxes,
    pub(crate) kinds: &'a KindIndex,
    pub(crate) shard: usize,
    pub(crate) shard_count: usize,
    pub(crate) counters: &'a mut Counters,
}

/// One shard's route cache. At most [`ROUTE_CACHE_CAP`] entries.
pub(crate) struct RouteCache {
    entries: EntityMap<RouteEntry>,
    /// Whether owners on this shard hint senders whose messages took a detour.
    learn: bool,
}

impl Default for RouteCache {
    fn default() -> Self {
        RouteCache {
            entries: EntityMap::default(),
            learn: true,
        }
    }
}

/// Puts `env` on route `to` (`None`: the entity's home). Fails, handing it
/// back, when `cap` messages already wait for that destination.
#[inline]
fn push_on(
    to: Option<u32>,
    mut env: Envelope,
    cap: usize,
    out: &mut Outboxes,
    kinds: &KindIndex,
    shard_count: usize,
) -> Result<(), Envelope> {
    let dest = match to {
        None => kinds.home_shard(env.kind, env.key, shard_count),
        Some(shard) => {
            env.status |= DIRECT;
            shard as usize
        }
    };
    let queue = out.queue_for(dest);
    if queue.len() >= cap {
        env.status &= !DIRECT;
        return Err(env);
    }
    queue.push_back(env);
    Ok(())
}

impl RouteCache {
    /// Whether owners here hint senders (see `Shard::set_route_learning`).
    #[inline]
    pub(crate) fn learns(&self) -> bool {
        self.learn
    }

    pub(crate) fn set_learning(&mut self, on: bool) {
        self.learn = on;
    }

    /// Whether no route is cached (every message goes to its home).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Puts a message a handler sent on its route (the cache's, or the
    /// home) and tags it with this shard's stream. Fails, handing it back,
    /// when `cap` messages already wait for that destination.
    #[inline]
    pub(crate) fn route(
        &mut self,
        mut env: Envelope,
        cap: usize,
        out: &mut Outboxes,
        kinds: &KindIndex,
        shard: usize,
        shard_count: usize,
    ) -> Result<(), Envelope> {
        env.set_stream(shard);
        // NB: one test when nothing ever moved (see the `tell_cross_core` bench).
        if self.entries.is_empty() {
            return push_on(None, env, cap, out, kinds, shard_count);
        }
        let to = match self.entries.get_mut(&EntityId::new(env.kind, env.key)) {
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
        push_on(to, env, cap, out, kinds, shard_count)
    }

    /// Sends the switch marker down the current route and makes `to` the
    /// route; what was parked goes the new way.
    fn switch(&mut self, id: EntityId, to: Option<u32>, w: &mut Wires<'_>) {
        let e = self.entries.get_mut(&id).expect("switching a known route");
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
        let mut marker =
            Envelope::empty(id.kind, id.key, Op::Switch, 0).with_route(w.shard as SenderId, 0);
        marker.set_stream(w.shard);
        let _ = push_on(old, marker, usize::MAX, w.out, w.kinds, w.shard_count);
        for env in parked {
            let _ = push_on(to, env, usize::MAX, w.out, w.kinds, w.shard_count);
        }
        w.counters.route_switches += 1;
    }

    /// Takes the next step towards the route `e.want` names, if no switch
    /// is pending; forgets the entry once it is back home with nothing to do.
    fn advance(&mut self, id: EntityId, w: &mut Wires<'_>) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        if e.pending {
            return;
        }
        if e.park {
            // A direct route older than an arrival: home first, whatever
            // comes next.
            return self.switch(id, None, w);
        }
        match e.want {
            Some(want) if want == e.to => e.want = None,
            Some(Some(_)) if e.to.is_some() => {
                // Direct to direct: home first (the class alternates).
                return self.switch(id, None, w);
            }
            Some(want) => {
                e.want = None;
                return self.switch(id, want, w);
            }
            None => {}
        }
        let e = &self.entries[&id];
        if e.to.is_none() && !e.park && e.parked.is_empty() {
            self.entries.remove(&id);
        }
    }

    /// A hint: entity `id` lives on shard `owner`.
    pub(crate) fn take_hint(&mut self, id: EntityId, owner: usize, w: &mut Wires<'_>) {
        let home = w.kinds.home_shard(id.kind, id.key, w.shard_count);
        let want = (owner != home).then_some(owner as u32);
        let full = self.entries.len() >= ROUTE_CACHE_CAP;
        match self.entries.get_mut(&id) {
            Some(e) => {
                e.want = Some(want);
                self.advance(id, w);
            }
            None if want.is_none() => {}
            None if full => {
                // Full: make room for a later hint by sending one route home.
                w.counters.hints_dropped += 1;
                let victim = self
                    .entries
                    .iter()
                    .find(|(_, e)| !e.pending && e.to.is_some() && e.want.is_none())
                    .map(|(id, _)| *id);
                if let Some(victim) = victim {
                    self.switch(victim, None, w);
                }
            }
            None => {
                let e = RouteEntry {
                    want: Some(want),
                    ..RouteEntry::default()
                };
                self.entries.insert(id, e);
                self.advance(id, w);
            }
        }
    }

    /// The owner of `id` handled this shard's last switch marker.
    pub(crate) fn switched(&mut self, id: EntityId, w: &mut Wires<'_>) {
        match self.entries.get_mut(&id) {
            Some(e) => {
                debug_assert!(e.pending, "an acknowledgement without a switch");
                e.pending = false;
                self.advance(id, w);
            }
            None => debug_assert!(false, "an acknowledgement for a forgotten route"),
        }
    }

    /// Sends every route home (and forgets hints still to be followed), so
    /// the cache empties once the owners acknowledge. Entities leave this
    /// shard only with an empty cache (see `migrate::handoff`).
    pub(crate) fn flush(&mut self, w: &mut Wires<'_>) {
        let ids: Vec<EntityId> = self.entries.keys().copied().collect();
        for id in ids {
            let e = self.entries.get_mut(&id).expect("listed just above");
            e.want = Some(None);
            self.advance(id, w);
        }
    }

    /// An entity that sends may have arrived: no message may take a direct
    /// route chosen before its arrival (see the `migrate` docs). Such routes
    /// switch home; those mid-switch park their sends until they can.
    pub(crate) fn rebase(&mut self, w: &mut Wires<'_>) {
        let ids: Vec<EntityId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.to.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let e = self.entries.get_mut(&id).expect("listed just above");
            if e.pending {
                // Home next (see `advance`); a direct route wanted later is
                // taken after that.
                e.park = true;
            } else {
                self.switch(id, None, w);
            }
        }
    }

    /// Whether a route switch waits for its acknowledgement.
    pub(crate) fn pending(&self) -> bool {
        self.entries.values().any(|e| e.pending)
    }
}
