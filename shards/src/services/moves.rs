//! Layer 2, services: moves asked for during a pass — by a request
//! ([`Op::Migrate`](crate::driver::Op::Migrate)), the rebalancer, or an
//! entity itself ([`Ctx::move_to`](crate::Ctx::move_to)) — and the entities
//! that refuse to move. The migration protocol carries them out at the end
//! of the pass.

use crate::envelope::{Envelope, Op};
use crate::hash::EntitySet;
use crate::id::{EntityId, ReplyTo, NO_REPLY};

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

/// A move waiting for the end of the pass.
pub(crate) struct PendingMove {
    pub(crate) id: EntityId,
    pub(crate) target: usize,
    /// Who asked for an answer (clients only), if anyone.
    pub(crate) reply: Option<ReplyTo>,
}

impl PendingMove {
    /// The move an [`Op::Migrate`] envelope asks for.
    pub(crate) fn of_request(env: &Envelope) -> Self {
        debug_assert_eq!(env.op, Op::Migrate);
        // SAFETY: `Op::Migrate` envelopes are made with a `MoveRequest`
        // (`Kinds::move_request`, `PendingMove::into_request`), which is
        // `Copy` and inline.
        let req = unsafe { env.read::<MoveRequest>() };
        let reply = (env.sender != NO_REPLY).then_some(ReplyTo {
            sender: env.sender,
            token: env.token,
        });
        PendingMove {
            id: EntityId::new(env.kind, env.key),
            target: req.target as usize,
            reply,
        }
    }

    /// The request again as an envelope, to route after its entity.
    pub(crate) fn into_request(self) -> Envelope {
        let target = self.target as u32;
        let (sender, token) = self.reply.map_or((NO_REPLY, 0), |r| (r.sender, r.token));
        Envelope::new(
            self.id.kind,
            self.id.key,
            Op::Migrate,
            MoveRequest { target },
        )
        .with_route(sender, token)
    }
}

/// Moves asked for in this pass, and pins.
#[derive(Default)]
pub(crate) struct Moves {
    /// Requests and the rebalancer's picks, in arrival order.
    requested: Vec<PendingMove>,
    /// Moves entities asked for themselves; carried out after `requested`.
    own: Vec<PendingMove>,
    /// Entities that refuse to move.
    pinned: EntitySet,
}

impl Moves {
    #[inline]
    pub(crate) fn request(&mut self, mv: PendingMove) {
        self.requested.push(mv);
    }

    pub(crate) fn request_own(&mut self, mv: PendingMove) {
        self.own.push(mv);
    }

    /// Whether any move waits.
    #[inline]
    pub(crate) fn any(&self) -> bool {
        !self.requested.is_empty() || !self.own.is_empty()
    }

    /// Whether requested moves (not counting entities' own) wait.
    pub(crate) fn any_requested(&self) -> bool {
        !self.requested.is_empty()
    }

    /// Puts the entities' own moves behind the requests; returns whether any
    /// move waits.
    pub(crate) fn gather(&mut self) -> bool {
        self.requested.append(&mut self.own);
        !self.requested.is_empty()
    }

    /// Takes up to `max` waiting moves, requests first; the rest stay, in
    /// order, for the next pass. Returns the batch and how many stayed.
    pub(crate) fn take_batch(&mut self, max: usize) -> (Vec<PendingMove>, usize) {
        self.gather();
        if self.requested.len() <= max {
            return (std::mem::take(&mut self.requested), 0);
        }
        let rest = self.requested.split_off(max);
        let stayed = rest.len();
        (std::mem::replace(&mut self.requested, rest), stayed)
    }

    pub(crate) fn set_pinned(&mut self, id: EntityId, pinned: bool) {
        if pinned {
            self.pinned.insert(id);
        } else {
            self.pinned.remove(&id);
        }
    }

    #[inline]
    pub(crate) fn is_pinned(&self, id: &EntityId) -> bool {
        self.pinned.contains(id)
    }
}
