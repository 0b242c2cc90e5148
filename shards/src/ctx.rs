//! Layer 3, user API: `Ctx`, what a handler can do besides changing its own
//! state. It borrows the shard's services and uses only what a handler may:
//! sends, asks, timers, moves, pins, the clock.

use std::marker::PhantomData;
use std::time::Duration;

use crate::entity::Entity;
use crate::envelope::{Envelope, Op};
use crate::error::{AskError, SendError};
use crate::id::{EntityId, KindId, SenderId, TimerId};
use crate::services::continuations::Continuation;
use crate::services::moves::PendingMove;
use crate::services::Services;

/// The handler's view of its shard.
///
/// Sends from a handler never block and never drop: messages for another
/// shard wait in order in that destination's outbox until the runtime
/// publishes them; a message for an entity of this shard goes on the local
/// queue and is handled after the current one, never re-entrantly.
pub struct Ctx<'a, E: Entity> {
    svc: &'a mut Services,
    id: EntityId,
    stop: bool,
    _entity: PhantomData<fn(E)>,
}

impl<'a, E: Entity> Ctx<'a, E> {
    pub(crate) fn new(svc: &'a mut Services, id: EntityId) -> Self {
        Ctx {
            svc,
            id,
            stop: false,
            _entity: PhantomData,
        }
    }

    pub(crate) fn stop_requested(self) -> bool {
        self.stop
    }

    /// The key of the entity being handled.
    #[inline]
    pub fn key(&self) -> u64 {
        self.id.key
    }

    /// The index of the shard the entity lives on.
    #[inline]
    pub fn shard(&self) -> usize {
        self.svc.shard()
    }

    /// Number of shards in the engine.
    #[inline]
    pub fn shard_count(&self) -> usize {
        self.svc.spec().shard_count
    }

    /// The shard's clock: time since the engine started, read once per pass of
    /// the shard loop (cheap, and the same for every message of a pass).
    #[inline]
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.svc.now_ns())
    }

    /// Messages this shard holds for other shards' rings, waiting for room.
    /// A handler that sends a lot (a producer, a broadcaster) watches this to
    /// pace itself: once [`Ctx::overflow_cap`] wait for one shard, sends to
    /// it fail with [`SendError::Overflow`]. Messages for this shard's own
    /// entities never count: they go on the local queue.
    #[inline]
    pub fn backlog(&self) -> usize {
        self.svc.shard_backlog()
    }

    /// How many messages may wait for one other shard before sends to it fail
    /// (the engine's `overflow_cap`).
    #[inline]
    pub fn overflow_cap(&self) -> usize {
        self.svc.spec().overflow_cap
    }

    #[inline]
    fn sender(&self) -> SenderId {
        self.svc.shard() as SenderId
    }

    #[inline]
    fn kind_of<T: Entity>(&self) -> Option<KindId> {
        if T::KIND == E::KIND {
            return Some(self.id.kind);
        }
        self.svc.kinds().id_of::<T>()
    }

    /// Sends `msg` to entity `key` of kind `T`; its reply is dropped.
    ///
    /// # Errors
    ///
    /// [`SendError::Overflow`] when `overflow_cap` messages already wait for the
    /// target's shard; [`SendError::UnknownKind`] when `T` is not registered.
    /// Both hand the message back.
    #[inline]
    pub fn tell<T: Entity>(&mut self, key: u64, msg: T::Msg) -> Result<(), SendError<T::Msg>> {
        let Some(kind) = self.kind_of::<T>() else {
            return Err(SendError::UnknownKind(msg));
        };
        let env = Envelope::new(kind, key, Op::Tell, msg).with_route(self.sender(), 0);
        self.svc.send(env).map_err(|env| {
            // SAFETY: made just above with `T::Msg`.
            SendError::Overflow(unsafe { env.take::<T::Msg>() })
        })
    }

    /// Asks entity `key` of kind `T`. The reply (or the error that replaced it)
    /// comes back to this entity as one of its own messages, made by `then` —
    /// a continuation as a message, so exclusivity and ordering hold and the
    /// handler never waits.
    ///
    /// `then` runs on this shard. A closure that captures nothing costs no
    /// allocation.
    ///
    /// # Errors
    ///
    /// As [`Ctx::tell`], and [`SendError::Overflow`] too when
    /// [`CONTINUATIONS_MAX`](crate::limits::CONTINUATIONS_MAX) asks of this
    /// shard already wait for their replies; when sending fails, `then` is
    /// dropped uncalled.
    pub fn ask<T, F>(&mut self, key: u64, msg: T::Msg, then: F) -> Result<(), SendError<T::Msg>>
    where
        T: Entity,
        F: FnOnce(Result<T::Reply, AskError>) -> E::Msg + 'static,
    {
        let Some(kind) = self.kind_of::<T>() else {
            return Err(SendError::UnknownKind(msg));
        };
        let parked = self.svc.park_continuation(Continuation {
            asker: self.id,
            call: Box::new(move |reply, asker: EntityId| {
                // SAFETY: a successful `ReplyEntity` for this continuation was made
                // by the handler of kind `T`, with `Envelope::new::<T::Reply>`.
                let reply = reply.map(|env| unsafe { env.take::<T::Reply>() });
                Envelope::new(asker.kind, asker.key, Op::Tell, then(reply))
            }),
        });
        let Ok(token) = parked else {
            // Too many asks wait for their replies (`CONTINUATIONS_MAX`).
            return Err(SendError::Overflow(msg));
        };
        let env = Envelope::new(kind, key, Op::AskEntity, msg).with_route(self.sender(), token);
        self.svc.send(env).map_err(|env| {
            // Never sent: its continuation never runs.
            drop(self.svc.take_continuation(token));
            // SAFETY: made just above with `T::Msg`.
            SendError::Overflow(unsafe { env.take::<T::Msg>() })
        })
    }

    /// Sends `msg` to this entity after `delay` on the shard's clock.
    pub fn after(&mut self, delay: Duration, msg: E::Msg) -> TimerId {
        let deadline = self.svc.now_ns().saturating_add(duration_ns(delay));
        let env =
            Envelope::new(self.id.kind, self.id.key, Op::Tell, msg).with_route(self.sender(), 0);
        self.svc.timers_mut().once(deadline, env)
    }

    /// Sends a clone of `msg` to this entity every `period` (the first after
    /// one period), until cancelled. A period below 1 ns counts as 1 ns.
    pub fn every(&mut self, period: Duration, msg: E::Msg) -> TimerId
    where
        E::Msg: Clone,
    {
        let period_ns = duration_ns(period).max(1);
        let first = self.svc.now_ns().saturating_add(period_ns);
        let (id, sender) = (self.id, self.sender());
        let make = Box::new(move || {
            Envelope::new(id.kind, id.key, Op::Tell, msg.clone()).with_route(sender, 0)
        });
        self.svc.timers_mut().every(first, period_ns, id, make)
    }

    /// Cancels a timer. Returns whether it was still pending.
    pub fn cancel(&mut self, timer: TimerId) -> bool {
        self.svc.timers_mut().cancel(timer)
    }

    /// Moves this entity to shard `shard` once the handler returns (at the
    /// end of the shard's pass): to sit beside the entities it talks to
    /// most, say. Every sender's order holds across the move, as with any
    /// other. Returns `false` (and does nothing) if there is no such shard.
    /// A pinned entity stays where it is.
    pub fn move_to(&mut self, shard: usize) -> bool {
        if shard >= self.svc.spec().shard_count {
            return false;
        }
        self.svc.moves_mut().request_own(PendingMove {
            id: self.id,
            target: shard,
            reply: None,
        });
        true
    }

    /// Keeps this entity on its shard: explicit moves are refused and the
    /// rebalancer passes it by, until [`Ctx::unpin`]. (For state tied to the
    /// shard, such as a shard-local task's handle.)
    pub fn pin(&mut self) {
        self.svc.moves_mut().set_pinned(self.id, true);
    }

    /// Lets this entity move again after [`Ctx::pin`].
    pub fn unpin(&mut self) {
        self.svc.moves_mut().set_pinned(self.id, false);
    }

    /// Deactivates this entity once the handler returns: its state is dropped,
    /// its timers are cancelled (their messages dropped), and its next message
    /// activates it afresh. A durable entity is deleted (a tombstone is
    /// logged).
    pub fn stop(&mut self) {
        self.stop = true;
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
