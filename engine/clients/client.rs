//! The [`Client`] handle: tell, tell_batch, ask (blocking), migrate.

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Waker;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use percore_shards::driver::KeyMap;
use percore_shards::driver::{Envelope, MoveOutcome, MoveRequest, Op};
use percore_shards::driver::{SenderId, CLIENT_BIT};
use percore_shards::{AskError, Entity, KindId};
use rtrb::{Consumer, Producer, PushError};

use super::ask::{AskFuture, AskState};
use super::registry::ClientSignals;
use crate::error::{ClientAskError, MigrateError, TellBatchError, TellError};
use crate::mesh::{light_barrier, thread_waker};
use crate::shared::Shared;

/// A handle for sending to entities from outside the engine.
///
/// `Send` but not `Sync`: make one per thread with
/// [`Engine::client`](crate::Engine::client) (each owns a request ring and a
/// reply ring per shard, so its sends need no locks). Messages from one client
/// to one entity are handled in the order they were sent.
///
/// Dropping a client lets the shards finish what it sent, then frees its
/// slot; [`Engine::client`](crate::Engine::client) waits for a slot being
/// freed, so a new client can be made right after a drop.
pub struct Client {
    pub(super) shared: Arc<Shared>,
    slot: usize,
    sender: SenderId,
    pub(super) signals: Arc<ClientSignals>,
    requests: RefCell<Vec<Producer<Envelope>>>,
    replies: RefCell<Vec<Consumer<Envelope>>>,
    /// Replies that arrived while waiting for another one.
    stash: RefCell<KeyMap<Envelope>>,
    /// Asks whose caller stopped waiting (timeout, dropped future): their
    /// replies are dropped on arrival (an envelope drops its own payload).
    abandoned: RefCell<KeyMap<()>>,
    next_token: Cell<u64>,
    thread_waker: RefCell<Option<(ThreadId, Waker)>>,
    /// `tell_batch`'s staging run, kept to reuse its allocation.
    run: RefCell<Vec<Envelope>>,
    /// Envelopes `publish` pushed during the current `tell_batch`.
    published: Cell<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PushFail {
    Full,
    ShuttingDown,
}

/// Most envelopes [`Client::tell_batch`] publishes to one ring at once.
/// NB: chunks of 64 amortise the ring's index update and the wakeup check;
/// see the `tell_cross_core/percore_batch` bench.
pub const BATCH_CHUNK: usize = 64;

impl PushFail {
    fn into_tell_error<M>(self, msg: M) -> TellError<M> {
        match self {
            PushFail::Full => TellError::Full(msg),
            PushFail::ShuttingDown => TellError::ShuttingDown(msg),
        }
    }
}

impl Client {
    pub(crate) fn new(
        shared: Arc<Shared>,
        slot: usize,
        signals: Arc<ClientSignals>,
        requests: Vec<Producer<Envelope>>,
        replies: Vec<Consumer<Envelope>>,
    ) -> Self {
        Client {
            shared,
            slot,
            sender: CLIENT_BIT | slot as SenderId,
            signals,
            requests: RefCell::new(requests),
            replies: RefCell::new(replies),
            stash: RefCell::new(KeyMap::default()),
            abandoned: RefCell::new(KeyMap::default()),
            next_token: Cell::new(1),
            thread_waker: RefCell::new(None),
            run: RefCell::new(Vec::with_capacity(BATCH_CHUNK)),
            published: Cell::new(0),
        }
    }

    /// The client's slot (0 ..< `max_clients`).
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The shard that owns `key` of kind `E`, or `None` if `E` is not registered.
    pub fn shard_of<E: Entity>(&self, key: u64) -> Option<usize> {
        let kind = self.shared.kinds.id_of::<E>()?;
        Some(self.home(kind, key))
    }

    #[inline]
    fn home(&self, kind: KindId, key: u64) -> usize {
        self.shared
            .kinds
            .home_shard(kind, key, self.shared.shard_count())
    }

    /// Sends `msg` to entity `key` of kind `E`, fire and forget. When the ring
    /// to its shard is full, waits (spinning briefly, then sleeping) up to the
    /// configured `send_wait_us_max`.
    ///
    /// # Errors
    ///
    /// Hands the message back in [`TellError::Full`] after the wait,
    /// [`TellError::ShuttingDown`] once the engine stops taking messages, or
    /// [`TellError::UnknownKind`].
    ///
    /// # Example
    ///
    /// ```
    /// # use percore::{Ctx, Engine, Entity, IdlePolicy};
    /// # struct Counter(u64);
    /// # impl Entity for Counter {
    /// #     const KIND: &'static str = "counter";
    /// #     type Msg = u64;
    /// #     type Reply = u64;
    /// #     fn activate(_: u64) -> Self { Counter(0) }
    /// #     fn handle(&mut self, n: u64, _: &mut Ctx<'_, Self>) -> u64 { self.0 += n; self.0 }
    /// # }
    /// let engine = Engine::builder().shards(1).idle(IdlePolicy::Park).register::<Counter>().build()?;
    /// let client = engine.client()?;
    /// client.tell::<Counter>(7, 5).unwrap();
    /// assert_eq!(client.ask::<Counter>(7, 1)?, 6);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn tell<E: Entity>(&self, key: u64, msg: E::Msg) -> Result<(), TellError<E::Msg>> {
        self.send_tell::<E>(key, msg, true)
    }

    /// Like [`Client::tell`] but never waits: a full ring hands the message
    /// back at once in [`TellError::Full`].
    ///
    /// # Errors
    ///
    /// As [`Client::tell`], with no wait.
    #[inline]
    pub fn try_tell<E: Entity>(&self, key: u64, msg: E::Msg) -> Result<(), TellError<E::Msg>> {
        self.send_tell::<E>(key, msg, false)
    }

    fn send_tell<E: Entity>(
        &self,
        key: u64,
        msg: E::Msg,
        wait: bool,
    ) -> Result<(), TellError<E::Msg>> {
        let env = match self.shared.kinds.message::<E>(key, Op::Tell, msg) {
            Ok(env) => env.with_route(self.sender, 0),
            Err(msg) => return Err(TellError::UnknownKind(msg)),
        };
        let shard = self.home(env.kind, key);
        match self.send_one(shard, env, wait) {
            Ok(()) => {
                self.shared.doorbells[shard].notify();
                Ok(())
            }
            // SAFETY: made above with `E::Msg`.
            Err((env, fail)) => Err(fail.into_tell_error(unsafe { env.take::<E::Msg>() })),
        }
    }

    /// Sends every `(key, msg)` of `batch` to entities of kind `E`. Runs of
    /// consecutive messages for one shard are published as one chunk (up to
    /// [`BATCH_CHUNK`] envelopes: one index update and one wakeup check per
    /// chunk instead of per message). Waits like [`Client::tell`] when a ring
    /// is full. Messages are sent in batch order; per-entity order holds as
    /// for single tells.
    ///
    /// # Errors
    ///
    /// Stops at the first message that cannot be sent and returns a
    /// [`TellBatchError`]: how many were sent (a prefix of `batch`), why it
    /// stopped (as [`Client::tell`]: full after the wait, shutting down,
    /// unknown kind), and every message not sent — the one that failed, the
    /// rest of its chunk and the rest of `batch` — with its key, in batch
    /// order. No message is dropped.
    pub fn tell_batch<E: Entity, I>(&self, batch: I) -> Result<usize, TellBatchError<E::Msg>>
    where
        I: IntoIterator<Item = (u64, E::Msg)>,
    {
        let mut batch = batch.into_iter();
        let Some(kind) = self.shared.kinds.id_of::<E>() else {
            return batch_result(0, TellError::UnknownKind(()), Vec::new(), batch);
        };
        if let Err(fail) = self.enter() {
            return batch_result(0, fail.into_tell_error(()), Vec::new(), batch);
        }
        let mut requests = self.requests.borrow_mut();
        let mut run = self.run.borrow_mut();
        let mut run_shard = usize::MAX;
        // The message in hand when a publish failed: it was never staged.
        let mut failed = None;
        self.published.set(0);
        for (key, msg) in batch.by_ref() {
            let shard = self.home(kind, key);
            if (shard != run_shard && !run.is_empty()) || run.len() == BATCH_CHUNK {
                if let Err(fail) = self.publish(&mut requests[run_shard], run_shard, &mut run) {
                    failed = Some((fail, Some((key, msg))));
                    break;
                }
            }
            run_shard = shard;
            let env = match self.shared.kinds.message::<E>(key, Op::Tell, msg) {
                Ok(env) => env,
                Err(_) => unreachable!("kind {kind} is registered"),
            };
            run.push(env.with_route(self.sender, 0));
        }
        if failed.is_none() && !run.is_empty() {
            if let Err(fail) = self.publish(&mut requests[run_shard], run_shard, &mut run) {
                failed = Some((fail, None));
            }
        }
        let total = self.published.take();
        self.leave();
        let Some((fail, in_hand)) = failed else {
            debug_assert!(run.is_empty());
            return Ok(total);
        };
        // Unsent, in batch order: what is left of the staged run (the failed
        // envelope first), the message in hand, the rest of the batch.
        let mut unsent: Vec<(u64, E::Msg)> = run
            .drain(..)
            // SAFETY: every staged envelope was made above with `E::Msg`.
            .map(|env| (env.key, unsafe { env.take::<E::Msg>() }))
            .collect();
        unsent.extend(in_hand);
        batch_result(total, fail.into_tell_error(()), unsent, batch)
    }

    /// Publishes `run` (envelopes for `shard`) in chunks as room allows,
    /// waiting like `push`; counts what it published in `self.published`.
    /// On failure every unsent envelope stays in `run`, in order, for the
    /// caller to hand back.
    fn publish(
        &self,
        ring: &mut Producer<Envelope>,
        shard: usize,
        run: &mut Vec<Envelope>,
    ) -> Result<(), PushFail> {
        let mut deadline = None;
        let mut round = 0u32;
        loop {
            let n = ring.slots().min(run.len());
            if n > 0 {
                let chunk = ring.write_chunk_uninit(n).expect("slots() said so");
                chunk.fill_from_iter(run.drain(..n));
                self.published.set(self.published.get() + n);
                self.shared.doorbells[shard].notify();
            }
            if run.is_empty() {
                return Ok(());
            }
            self.shared.doorbells[shard].notify();
            self.leave();
            let deadline = *deadline.get_or_insert_with(|| {
                Instant::now() + Duration::from_micros(self.shared.config.send_wait_us_max)
            });
            let outcome = if Instant::now() >= deadline {
                Err(PushFail::Full)
            } else {
                backoff(round);
                round += 1;
                self.enter()
            };
            if let Err(fail) = outcome {
                if fail == PushFail::Full {
                    // Re-enter so the caller's `leave` pairs up.
                    let _ = self.enter();
                }
                return Err(fail);
            }
        }
    }

    /// Asks entity `key` of kind `E` and blocks until the reply comes.
    ///
    /// # Errors
    ///
    /// When the request was not sent the message comes back:
    /// [`ClientAskError::Full`] if the ring stayed full for
    /// `send_wait_us_max`, [`ClientAskError::ShuttingDown`],
    /// [`ClientAskError::UnknownKind`]. Once it was sent,
    /// [`ClientAskError::Failed`] says why no reply came
    /// ([`AskError::Panicked`], [`AskError::ShuttingDown`], a durable change
    /// that failed); the message was the entity's by then.
    pub fn ask<E: Entity>(
        &self,
        key: u64,
        msg: E::Msg,
    ) -> Result<E::Reply, ClientAskError<E::Msg>> {
        let (shard, token) = self.send_ask::<E>(key, msg)?;
        self.wait_reply::<E::Reply>(shard, token, None)
            .map_err(ClientAskError::Failed)
    }

    /// Like [`Client::ask`], giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Client::ask`], plus `Failed(`[`AskError::Timeout`]`)`; a late
    /// reply is discarded when it arrives.
    pub fn ask_timeout<E: Entity>(
        &self,
        key: u64,
        msg: E::Msg,
        timeout: Duration,
    ) -> Result<E::Reply, ClientAskError<E::Msg>> {
        let deadline = Instant::now() + timeout;
        let (shard, token) = self.send_ask::<E>(key, msg)?;
        self.wait_reply::<E::Reply>(shard, token, Some(deadline))
            .map_err(ClientAskError::Failed)
    }

    /// Asks without blocking the thread: a future that resolves to the reply
    /// and works in any executor (it registers the task's waker and is woken by
    /// the shard). The request is sent when this is called, not when the
    /// future is first polled. Several may be in flight at once.
    ///
    /// # Errors
    ///
    /// The future resolves to the errors of [`Client::ask`]; a request that
    /// could not be sent hands its message back in the error.
    pub fn ask_async<E: Entity>(&self, key: u64, msg: E::Msg) -> AskFuture<'_, E> {
        let state = match self.send_ask::<E>(key, msg) {
            Ok((shard, token)) => AskState::Waiting { shard, token },
            Err(e) => AskState::Failed(e),
        };
        AskFuture::new(self, state)
    }

    /// Sends an ask; on failure hands the message back.
    fn send_ask<E: Entity>(
        &self,
        key: u64,
        msg: E::Msg,
    ) -> Result<(usize, u64), ClientAskError<E::Msg>> {
        let env = match self.shared.kinds.message::<E>(key, Op::AskClient, msg) {
            Ok(env) => env,
            Err(msg) => return Err(ClientAskError::UnknownKind(msg)),
        };
        let shard = self.home(env.kind, key);
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        let env = env.with_route(self.sender, token);
        match self.send_one(shard, env, true) {
            Ok(()) => {
                self.shared.doorbells[shard].notify();
                Ok((shard, token))
            }
            Err((env, fail)) => {
                // SAFETY: made above with `E::Msg`.
                let msg = unsafe { env.take::<E::Msg>() };
                Err(fail.into_tell_error(msg).into())
            }
        }
    }

    /// Moves entity `key` of kind `E` to shard `shard` and blocks until it is
    /// there. Messages sent to it before and after keep their order; asks in
    /// flight are answered from wherever it is. Moving a key that was never
    /// activated activates it on its way. A no-op if it is there already.
    ///
    /// # Errors
    ///
    /// [`MigrateError::NoSuchShard`], [`MigrateError::UnknownKind`],
    /// [`MigrateError::Pinned`] when the entity pinned itself,
    /// [`MigrateError::Panicked`] when activating it panicked, or the send's
    /// [`MigrateError::Full`] / [`MigrateError::ShuttingDown`].
    pub fn migrate<E: Entity>(&self, key: u64, shard: usize) -> Result<(), MigrateError> {
        let shard_count = self.shared.shard_count();
        if shard >= shard_count {
            return Err(MigrateError::NoSuchShard { shard, shard_count });
        }
        let request = MoveRequest {
            target: shard as u32,
        };
        let env = self
            .shared
            .kinds
            .move_request::<E>(key, request)
            .ok_or(MigrateError::UnknownKind)?;
        let home = self.home(env.kind, key);
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        let env = env.with_route(self.sender, token);
        if let Err((_, fail)) = self.send_one(home, env, true) {
            return Err(match fail {
                PushFail::Full => MigrateError::Full,
                PushFail::ShuttingDown => MigrateError::ShuttingDown,
            });
        }
        self.shared.doorbells[home].notify();
        match self.wait_reply::<MoveOutcome>(home, token, None) {
            Ok(MoveOutcome::Done) => Ok(()),
            Ok(MoveOutcome::Pinned) => Err(MigrateError::Pinned),
            Ok(MoveOutcome::Panicked) => Err(MigrateError::Panicked),
            Ok(MoveOutcome::NoSuchShard) => Err(MigrateError::NoSuchShard { shard, shard_count }),
            Err(_) => Err(MigrateError::ShuttingDown),
        }
    }

    /// Marks the client busy and checks that the engine still takes messages
    /// (the client half of shutdown sealing; see `Shared::seal_clients`).
    #[inline]
    fn enter(&self) -> Result<(), PushFail> {
        self.signals.busy.store(true, Ordering::Relaxed);
        light_barrier();
        if self.shared.stopping.load(Ordering::Relaxed) {
            self.leave();
            return Err(PushFail::ShuttingDown);
        }
        Ok(())
    }

    /// `enter`, push, `leave`.
    #[inline]
    // The envelope goes back by value: boxing it would allocate on the error path
    // of every send.
    #[allow(clippy::result_large_err)]
    fn send_one(
        &self,
        shard: usize,
        env: Envelope,
        wait: bool,
    ) -> Result<(), (Envelope, PushFail)> {
        let mut requests = self.requests.borrow_mut();
        if let Err(fail) = self.enter() {
            return Err((env, fail));
        }
        let r = self.push(&mut requests[shard], shard, env, wait);
        self.leave();
        r
    }

    #[inline]
    fn leave(&self) {
        self.signals.busy.store(false, Ordering::Release);
    }

    #[allow(clippy::result_large_err)] // see `send_one`
    /// Pushes one envelope, waiting (boundedly) for room if `wait`. Must be
    /// called between `enter` and `leave`; while it sleeps it leaves and
    /// re-enters, so a shutdown never waits for a client stuck on a full ring.
    fn push(
        &self,
        ring: &mut Producer<Envelope>,
        shard: usize,
        env: Envelope,
        wait: bool,
    ) -> Result<(), (Envelope, PushFail)> {
        let mut env = match ring.push(env) {
            Ok(()) => return Ok(()),
            Err(PushError::Full(env)) if wait => env,
            Err(PushError::Full(env)) => return Err((env, PushFail::Full)),
        };
        let deadline = Instant::now() + Duration::from_micros(self.shared.config.send_wait_us_max);
        let mut round = 0u32;
        loop {
            // The shard may be asleep with its ring full only if it parked
            // before our pushes: make sure it drains.
            self.shared.doorbells[shard].notify();
            self.leave();
            if Instant::now() >= deadline {
                return Err((env, PushFail::Full));
            }
            backoff(round);
            round += 1;
            if let Err(fail) = self.enter() {
                return Err((env, fail));
            }
            match ring.push(env) {
                Ok(()) => return Ok(()),
                Err(PushError::Full(back)) => env = back,
            }
        }
    }

    /// Takes the reply for `token` from the stash or the reply ring of `shard`.
    pub(super) fn poll_reply(&self, shard: usize, token: u64) -> Option<Envelope> {
        {
            let mut stash = self.stash.borrow_mut();
            if !stash.is_empty() {
                if let Some(env) = stash.remove(&token) {
                    return Some(env);
                }
            }
        }
        // The reply comes from the shard the entity lives on: its home
        // (looked at first), or wherever it moved.
        let mut replies = self.replies.borrow_mut();
        let n = replies.len();
        for from in (0..n).map(|i| (shard + i) % n) {
            let ring = &mut replies[from];
            if ring.is_empty() {
                continue;
            }
            let mut found = None;
            while let Ok(env) = ring.pop() {
                if env.token == token {
                    found = Some(env);
                    break;
                }
                self.file_stray(env);
            }
            // A shard with more replies for a full ring parks until told there
            // is room; it says so before it announces sleep and unsays it once
            // awake (see the shard loop's `park` and `BlockedFlag`), and this
            // load pairs with its barrier.
            if self.signals.reply_blocked[from].wake_needed() {
                self.shared.doorbells[from].notify();
            }
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// A reply for another ask: keep it for its asker, or drop it if its asker
    /// gave up.
    fn file_stray(&self, env: Envelope) {
        if self.abandoned.borrow_mut().remove(&env.token).is_some() {
            drop(env);
        } else {
            self.stash.borrow_mut().insert(env.token, env);
        }
    }

    pub(super) fn abandon(&self, token: u64) {
        if self.stash.borrow_mut().remove(&token).is_none() {
            self.abandoned.borrow_mut().insert(token, ());
        }
    }

    fn wait_reply<R: Send + 'static>(
        &self,
        shard: usize,
        token: u64,
        deadline: Option<Instant>,
    ) -> Result<R, AskError> {
        let spin = Duration::from_micros(self.shared.config.client_spin_us);
        let spin_until = Instant::now() + spin;
        let mut polls = 0u32;
        loop {
            if let Some(env) = self.poll_reply(shard, token) {
                return decode_reply(env);
            }
            if self.shared.terminated.load(Ordering::Acquire) {
                // Every shard has exited; a last look, then give up.
                if let Some(env) = self.poll_reply(shard, token) {
                    return decode_reply(env);
                }
                self.abandon(token);
                return Err(AskError::ShuttingDown);
            }
            // The clock is read every 64 polls while spinning; with no spin
            // budget the client parks after its first look.
            polls = polls.wrapping_add(1);
            if !spin.is_zero() && !polls.is_multiple_of(64) {
                std::hint::spin_loop();
                continue;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                self.abandon(token);
                return Err(AskError::Timeout);
            }
            if now < spin_until {
                continue;
            }
            let waker = self.current_thread_waker();
            self.signals.parker.prepare_sleep(&waker);
            if let Some(env) = self.poll_reply(shard, token) {
                self.signals.parker.cancel_sleep();
                return decode_reply(env);
            }
            if !self.shared.terminated.load(Ordering::Acquire) {
                // Bounded so a deadline is honoured; wakeups are not lost (see crate::mesh::wake).
                let nap = deadline.map_or(Duration::from_millis(100), |d| {
                    d.saturating_duration_since(now)
                        .min(Duration::from_millis(100))
                });
                std::thread::park_timeout(nap);
            }
            self.signals.parker.cancel_sleep();
        }
    }

    fn current_thread_waker(&self) -> Waker {
        let me = std::thread::current();
        let mut cached = self.thread_waker.borrow_mut();
        match &*cached {
            Some((id, w)) if *id == me.id() => w.clone(),
            _ => {
                let w = thread_waker(me.clone());
                *cached = Some((me.id(), w.clone()));
                w
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Replies that will never be read: dropped here, payloads with them
        // (what the shards answer after this, they drop when they see the
        // client closed).
        for ring in self.replies.borrow_mut().iter_mut() {
            while let Ok(env) = ring.pop() {
                drop(env);
            }
        }
        // Counted as closing before any shard can see `closed` and release
        // the slot, so `Engine::client` knows to wait for it.
        self.shared.slots.closing();
        self.signals.closed.store(true, Ordering::Release);
        self.shared.bump_client_epochs();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("slot", &self.slot).finish()
    }
}

pub(super) fn decode_reply<R>(env: Envelope) -> Result<R, AskError> {
    match env.error_status() {
        Some(err) => Err(err),
        // SAFETY: a successful `ReplyClient` for this token was made by the
        // handler of the kind asked, whose reply type is `R`.
        None => Ok(unsafe { env.take::<R>() }),
    }
}

/// The batch's error's error with `unsent` followed by what is left
/// of `rest` (the messages the batch never reached), in order.
fn batch_result<M>(
    sent: usize,
    reason: TellError<()>,
    mut unsent: Vec<(u64, M)>,
    rest: impl Iterator<Item = (u64, M)>,
) -> Result<usize, TellBatchError<M>> {
    unsent.extend(rest);
    if unsent.is_empty() {
        // An empty batch: nothing was refused.
        return Ok(sent);
    }
    Err(TellBatchError {
        sent,
        reason,
        unsent,
    })
}

/// Waits without burning a core: a few spins, then yields, then sleeps
/// growing to 1 ms.
fn backoff(round: u32) {
    if round < 16 {
        std::hint::spin_loop();
    } else if round < 32 {
        std::thread::yield_now();
    } else {
        let us = 1u64 << (round - 32).min(10);
        std::thread::sleep(Duration::from_micros(us));
    }
}
