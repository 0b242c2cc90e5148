//! `Ctx`: what a handler can do besides changing its own state.

use std::marker::PhantomData;
use std::time::Duration;

use crate::entity::{Entity, KindId};
use crate::envelope::{Envelope, Op, SenderId};
use crate::error::{AskError, SendError};
use crate::shard::{Continuation, Services};
use crate::timers::TimerId;

/// The handler's view of its shard.
///
/// Sends from a handler never block and never drop: messages for another
/// shard wait in order in that destination's outbox until the runtime
/// publishes them; a message for an entity of this shard goes on the local
/// queue and is handled after the current one, never re-entrantly.
pub struct Ctx<'a, E: Entity> {
    svc: &'a mut Services,
    kind: KindId,
    key: u64,
    stop: bool,
    _entity: PhantomData<fn(E)>,
}

impl<'a, E: Entity> Ctx<'a, E> {
    pub(crate) fn new(svc: &'a mut Services, kind: KindId, key: u64) -> Self {
        Ctx {
            svc,
            kind,
            key,
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
        self.key
    }

    /// The index of the shard the entity lives on.
    #[inline]
    pub fn shard(&self) -> usize {
        self.svc.spec.shard
    }

    /// Number of shards in the engine.
    #[inline]
    pub fn shard_count(&self) -> usize {
        self.svc.spec.shard_count
    }

    /// The shard's clock: time since the engine started, read once per pass of
    /// the shard loop (cheap, and the same for every message of a pass).
    #[inline]
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.svc.now_ns)
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
        self.svc.spec.overflow_cap
    }

    #[inline]
    fn sender(&self) -> SenderId {
        self.svc.spec.shard as SenderId
    }

    #[inline]
    fn kind_of<T: Entity>(&self) -> Option<KindId> {
        if T::KIND == E::KIND {
            return Some(self.kind);
        }
        self.svc.kinds.id_of::<T>()
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
    /// As [`Ctx::tell`]; when sending fails, `then` is dropped uncalled.
    pub fn ask<T, F>(&mut self, key: u64, msg: T::Msg, then: F) -> Result<(), SendError<T::Msg>>
    where
        T: Entity,
        F: FnOnce(Result<T::Reply, AskError>) -> E::Msg + 'static,
    {
        let Some(kind) = self.kind_of::<T>() else {
            return Err(SendError::UnknownKind(msg));
        };
        let token = self.svc.park_continuation(Continuation {
            kind: self.kind,
            key: self.key,
            call: Box::new(move |reply, asker_kind, asker_key| {
                // SAFETY: a successful `ReplyEntity` for this continuation was made
                // by the handler of kind `T`, with `Envelope::new::<T::Reply>`.
                let reply = reply.map(|env| unsafe { env.take::<T::Reply>() });
                Envelope::new(asker_kind, asker_key, Op::Tell, then(reply))
            }),
        });
        let env = Envelope::new(kind, key, Op::AskEntity, msg).with_route(self.sender(), token);
        self.svc.send(env).map_err(|env| {
            let slot = token as usize;
            self.svc.pending[slot] = None;
            self.svc.pending_free.push(slot as u32);
            // SAFETY: made just above with `T::Msg`.
            SendError::Overflow(unsafe { env.take::<T::Msg>() })
        })
    }

    /// Sends `msg` to this entity after `delay` on the shard's clock.
    pub fn after(&mut self, delay: Duration, msg: E::Msg) -> TimerId {
        let deadline = self.svc.now_ns.saturating_add(duration_ns(delay));
        let env = Envelope::new(self.kind, self.key, Op::Tell, msg).with_route(self.sender(), 0);
        self.svc.timers.once(deadline, env)
    }

    /// Sends a clone of `msg` to this entity every `period` (the first after
    /// one period), until cancelled. A period below 1 ns counts as 1 ns.
    pub fn every(&mut self, period: Duration, msg: E::Msg) -> TimerId
    where
        E::Msg: Clone,
    {
        let period_ns = duration_ns(period).max(1);
        let first = self.svc.now_ns.saturating_add(period_ns);
        let (kind, key, sender) = (self.kind, self.key, self.sender());
        let make =
            Box::new(move || Envelope::new(kind, key, Op::Tell, msg.clone()).with_route(sender, 0));
        self.svc.timers.every(first, period_ns, kind, key, make)
    }

    /// Cancels a timer. Returns whether it was still pending.
    pub fn cancel(&mut self, timer: TimerId) -> bool {
        self.svc.timers.cancel(timer)
    }

    /// Moves this entity to shard `shard` once the handler returns (at the
    /// end of the shard's pass): to sit beside the entities it talks to
    /// most, say. Every sender's order holds across the move, as with any
    /// other. Returns `false` (and does nothing) if there is no such shard.
    /// A pinned entity stays where it is.
    pub fn move_to(&mut self, shard: usize) -> bool {
        if shard >= self.svc.spec.shard_count {
            return false;
        }
        let mv = crate::migrate::PendingMove::new(self.kind, self.key, shard, None);
        self.svc.self_moves.push(mv);
        true
    }

    /// Keeps this entity on its shard: explicit moves are refused and the
    /// rebalancer passes it by, until [`Ctx::unpin`]. (For state tied to the
    /// shard, such as a shard-local task's handle.)
    pub fn pin(&mut self) {
        self.svc.pin((self.kind, self.key), true);
    }

    /// Lets this entity move again after [`Ctx::pin`].
    pub fn unpin(&mut self) {
        self.svc.pin((self.kind, self.key), false);
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
