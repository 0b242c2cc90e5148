//! Layer 1, data: the envelope, what travels on every ring, 64 bytes, one
//! cache line. The only code in the crate that stores payloads untyped.
//!
//! A message of any type travels type-erased: small messages (up to
//! [`INLINE_BYTES`], alignment up to 8) are copied into the envelope itself, so
//! the hot path allocates nothing; larger ones are boxed and the box pointer
//! travels. The receiving side knows the type from the envelope's kind (and
//! operation), so it reads the value back with the same rule.
//!
//! An envelope also records how to drop its payload (a function made for the
//! payload's type when the envelope was built; none for payloads without drop
//! glue), so dropping an envelope that was never taken — a cancelled timer, a
//! reply for a client that went away, a ring dropped at shutdown — drops what
//! the message owns exactly once (contract point 9).

use std::mem::{align_of, needs_drop, size_of, ManuallyDrop, MaybeUninit};

use crate::error::AskError;
use crate::id::{KindId, SenderId, CLIENT_BIT};
use crate::limits::{MAX_SHARDS, STREAM_TAG_BITS};

/// Bytes of message payload stored inline in an envelope: room for a
/// `String` or `Vec` (24 bytes) or four words.
pub const INLINE_BYTES: usize = 32;
const INLINE_WORDS: usize = INLINE_BYTES / 8;

/// Drops the payload stored at the pointer (inline value or box pointer).
type DropFn = unsafe fn(*mut u64);

/// What an envelope asks of its receiver.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Deliver the message; drop the reply.
    Tell = 0,
    /// Deliver the message; send the reply to the client named by `sender`,
    /// tagged with `token`.
    AskClient = 1,
    /// Deliver the message; send the reply to shard `sender`, where `token`
    /// names the waiting continuation.
    AskEntity = 2,
    /// A reply (or, with a non-zero status, an error) travelling back to the
    /// shard that holds continuation `token`.
    ReplyEntity = 3,
    /// A reply (or error) travelling to the client that asked; `token` is its
    /// request id.
    ReplyClient = 4,
    /// Migration: an entity itself (its value, timers, heat, log state) on its
    /// way to its new owner. Payload: a boxed `Migrant`.
    Transfer = 5,
    /// Migration: the old owner tells the entity's home shard where the entity
    /// went. Payload: the new owner's index (`u32`).
    Moved = 6,
    /// Migration: travels home → old owner → new owner behind every message
    /// the home shard routed through the old owner; once it arrives, the new
    /// owner handles the messages it held back. No payload.
    Marker = 7,
    /// Migration: a request to move the entity to another shard. Payload: a
    /// `MoveRequest`. Routed like a message, so it is ordered with them.
    Migrate = 8,
    /// Migration: a durable entity's new owner tells the old one that its
    /// arrival record is durable, so the old owner's checkpoints may forget
    /// it. Payload: the version logged.
    Released = 9,
    /// Migration: an entity that sends arrived on the sending shard from
    /// shard `from` (the payload, `u32`); the receiver must first handle
    /// everything already in its ring from `from`, where the entity's earlier
    /// messages may still wait.
    Fence = 10,
    /// Routing: a shard that sends to the entity changed its route to it
    /// (see `services::route_cache`). Travels the old route, behind everything the shard
    /// sent that way, and is routed like a message; the entity's owner then
    /// handles what the shard sent the new way. No payload; the stream tag
    /// names the shard.
    Switch = 11,
    /// Routing: the owner handled a [`Op::Switch`]; the shard may switch
    /// that route again. Sent to the switching shard. No payload.
    Switched = 12,
    /// Routing: the entity lives on shard `owner` (the payload, `u32`); the
    /// receiver, which sent it a message that had to be forwarded, may send
    /// there directly from now on.
    Hint = 13,
    /// Migration: travels from an entity's new owner to its home and back,
    /// routed like a message, behind every message the new owner had sent
    /// to the home for it while it lived elsewhere (see `migrate`). No
    /// payload.
    Rejoin = 14,
}

impl Op {
    /// Whether the envelope is routed to an entity (by kind and key) and may
    /// be forwarded or held on the way.
    #[inline]
    pub fn is_addressed(self) -> bool {
        matches!(
            self,
            Op::Tell | Op::AskClient | Op::AskEntity | Op::Migrate | Op::Switch | Op::Rejoin
        )
    }
}

/// Set in [`Envelope::status`] of a message an old owner forwarded to the
/// entity's new owner (it travelled the old path, so the new owner handles it
/// at once instead of holding it for the migration marker). Message
/// envelopes otherwise carry status 0; only replies carry error codes.
pub const STRAGGLER: u8 = 0x80;

/// Set in [`Envelope::status`] of a message its sending shard addressed to
/// the shard its route cache names rather than to the entity's home (see
/// `services::route_cache`). Kept when the message is forwarded: it says which of the
/// sending shard's routes the message took.
pub const DIRECT: u8 = 0x20;

/// Set in [`Envelope::status`] of a message a home shard forwarded to the
/// entity's current owner elsewhere.
pub const REROUTED: u8 = 0x40;

/// Bits of [`Envelope::token`] left to the token itself in messages shards
/// send; the bits above carry the sending shard's stream tag.
pub const TOKEN_MASK: u64 = (1 << STREAM_SHIFT) - 1;
const STREAM_SHIFT: u32 = 64 - STREAM_TAG_BITS;

/// One message in flight. Exactly one cache line.
///
/// An envelope owns its payload; dropping it without [`Envelope::take`] drops
/// the payload through the drop function recorded when it was built.
#[repr(C, align(64))]
pub struct Envelope {
    /// The entity's key.
    pub key: u64,
    /// Request id (client asks) or continuation slot (entity asks).
    pub token: u64,
    /// Who sent it; see [`SenderId`].
    pub sender: SenderId,
    /// Which kind the entity is (for replies: the kind that answered).
    pub kind: KindId,
    /// What to do with it.
    pub op: Op,
    /// 0 for a message or successful reply; otherwise an [`AskError`] code, and
    /// the envelope has no payload.
    pub status: u8,
    /// Drops the payload if the envelope is dropped untaken; `None` when there
    /// is no payload or it needs no drop. Invariant: `Some` only if the
    /// payload holds a live value of the type the function was made for.
    drop_payload: Option<DropFn>,
    payload: MaybeUninit<[u64; INLINE_WORDS]>,
}

const _: () = assert!(size_of::<Envelope>() == 64);
const _: () = assert!(INLINE_BYTES >= size_of::<String>() && INLINE_WORDS * 8 == INLINE_BYTES);

// SAFETY: an envelope's payload is only ever written by `Envelope::new::<M>` with
// `M: Send`, so moving the envelope to another thread moves a `Send` value (and
// its drop function runs on whichever thread drops it, as `M`'s drop would).
unsafe impl Send for Envelope {}

/// Whether values of `M` travel inside the envelope (true) or boxed (false).
#[inline(always)]
pub const fn is_inline<M>() -> bool {
    size_of::<M>() <= INLINE_BYTES && align_of::<M>() <= 8
}

/// Drops an inline `M`.
///
/// # Safety
///
/// `payload` points at a live `M` written by `Envelope::new::<M>`, not taken.
unsafe fn drop_inline<M>(payload: *mut u64) {
    // SAFETY: as the function's contract.
    unsafe { payload.cast::<M>().drop_in_place() }
}

/// Drops a boxed `M`.
///
/// # Safety
///
/// `payload` holds a `Box<M>` pointer written by `Envelope::new::<M>`, not taken.
unsafe fn drop_boxed<M>(payload: *mut u64) {
    // SAFETY: as the function's contract: the pointer came from `Box::into_raw`.
    drop(unsafe { Box::from_raw(payload.cast::<*mut M>().read()) })
}

impl Envelope {
    /// Wraps `msg` for entity `key` of `kind`. Crate-private: a message
    /// envelope is only built with its payload type tied to its kind (see
    /// [`Kinds::message`](crate::Kinds::message)); otherwise a handler could
    /// read it as another type.
    #[inline]
    pub(crate) fn new<M: Send + 'static>(kind: KindId, key: u64, op: Op, msg: M) -> Self {
        let mut env = Self::empty(kind, key, op, 0);
        if is_inline::<M>() {
            // SAFETY: `M` fits in the payload (checked above) and the payload is
            // 8-aligned because the envelope is 64-aligned and the payload sits at
            // offset 32; `M`'s alignment is at most 8.
            unsafe { env.payload.as_mut_ptr().cast::<M>().write(msg) };
            if needs_drop::<M>() {
                env.drop_payload = Some(drop_inline::<M>);
            }
        } else {
            let ptr = Box::into_raw(Box::new(msg));
            // SAFETY: a pointer is 8 bytes and the payload is 8-aligned.
            unsafe { env.payload.as_mut_ptr().cast::<*mut M>().write(ptr) };
            env.drop_payload = Some(drop_boxed::<M>);
        }
        env
    }

    /// Wraps `msg` for entity `key` of `kind` with any operation, for tests
    /// and tools that drive a [`Shard`](crate::driver::Shard) by hand. Programs use
    /// [`Kinds::message`](crate::Kinds::message), which ties the payload type
    /// to the kind.
    ///
    /// # Safety
    ///
    /// The payload must be what the receiver reads for `op`: for a message
    /// (`Tell`, `AskClient`, `AskEntity`) the `Msg` type of the entity type
    /// registered as `kind`; for a reply its `Reply` type; for `Migrate` a
    /// [`MoveRequest`](crate::driver::MoveRequest); others are the engine's own.
    #[inline]
    pub unsafe fn new_unchecked<M: Send + 'static>(kind: KindId, key: u64, op: Op, msg: M) -> Self {
        Self::new(kind, key, op, msg)
    }

    /// An envelope with no payload (errors, control messages).
    #[inline]
    pub fn empty(kind: KindId, key: u64, op: Op, status: u8) -> Self {
        Envelope {
            key,
            token: 0,
            sender: 0,
            kind,
            op,
            status,
            drop_payload: None,
            payload: MaybeUninit::uninit(),
        }
    }

    /// An error reply: no payload, `status` set from `err`.
    #[inline]
    pub fn error(kind: KindId, key: u64, op: Op, err: AskError) -> Self {
        Self::empty(kind, key, op, err.code())
    }

    /// Sets the token and sender (builder style).
    #[inline]
    pub fn with_route(mut self, sender: SenderId, token: u64) -> Self {
        self.sender = sender;
        self.token = token;
        self
    }

    /// Tags a message as part of shard `shard`'s stream to its entity: the
    /// shard that put it on a route (see `services::route_cache`). Kept in the top bits of
    /// the token; the rest keeps the token itself.
    #[inline]
    pub(crate) fn set_stream(&mut self, shard: usize) {
        debug_assert!(shard < MAX_SHARDS);
        self.token = (self.token & TOKEN_MASK) | ((shard as u64 + 1) << STREAM_SHIFT);
    }

    /// The shard whose stream this message is part of, if a shard put it on
    /// a route (not a client, a timer or a continuation).
    #[inline]
    pub(crate) fn stream(&self) -> Option<usize> {
        if !matches!(self.op, Op::Tell | Op::AskEntity | Op::Switch)
            || self.sender & CLIENT_BIT != 0
        {
            return None;
        }
        match self.token >> STREAM_SHIFT {
            0 => None,
            tag => Some(tag as usize - 1),
        }
    }

    /// The error this envelope carries instead of a payload, if any.
    #[inline]
    pub fn error_status(&self) -> Option<AskError> {
        AskError::from_code(self.status)
    }

    /// Reads a small `Copy` payload without consuming the envelope.
    ///
    /// # Safety
    ///
    /// As [`Envelope::take`], and `M` must be stored inline ([`is_inline`]).
    #[inline]
    pub unsafe fn read<M: Copy>(&self) -> M {
        debug_assert!(is_inline::<M>());
        // SAFETY: the caller guarantees `new::<M>` wrote an inline `M` here; `M`
        // is `Copy`, so reading it leaves nothing to drop twice.
        unsafe { self.payload.as_ptr().cast::<M>().read() }
    }

    /// Takes the payload out.
    ///
    /// # Safety
    ///
    /// The envelope must have been made by `Envelope::new::<M>` with this very
    /// `M` (not [`Envelope::empty`] or [`Envelope::error`]).
    #[inline]
    pub unsafe fn take<M>(self) -> M {
        debug_assert_eq!(
            self.status & !(STRAGGLER | DIRECT),
            0,
            "taking the payload of an error envelope"
        );
        // The payload moves out: the envelope's own drop must not run.
        let this = ManuallyDrop::new(self);
        if is_inline::<M>() {
            // SAFETY: the caller guarantees `new::<M>` wrote an `M` inline here.
            unsafe { this.payload.as_ptr().cast::<M>().read() }
        } else {
            // SAFETY: the caller guarantees `new::<M>` stored a `Box<M>` pointer here.
            unsafe { *Box::from_raw(this.payload.as_ptr().cast::<*mut M>().read()) }
        }
    }
}

/// An envelope on its way to a handler, its destructor disarmed: the hot
/// path hands it down by value as plain bytes (a type with drop glue was
/// copied at every by-value hand-off: `msgcost cross`, 8 instructions a
/// hop), and whoever holds it last either takes its payload or re-arms it.
pub(crate) struct Disarmed(ManuallyDrop<Envelope>);

impl Disarmed {
    /// Disarms `env`.
    #[inline(always)]
    pub(crate) fn new(env: Envelope) -> Self {
        Disarmed(ManuallyDrop::new(env))
    }

    /// Takes the payload out.
    ///
    /// # Safety
    ///
    /// As [`Envelope::take`].
    #[inline(always)]
    pub(crate) unsafe fn take<M>(self) -> M {
        // SAFETY: as the caller's; the envelope was disarmed, so nothing else
        // drops the payload.
        unsafe { ManuallyDrop::into_inner(self.0).take::<M>() }
    }

    /// Arms it again (it goes somewhere that may drop it).
    #[inline(always)]
    pub(crate) fn rearm(self) -> Envelope {
        ManuallyDrop::into_inner(self.0)
    }
}

impl std::ops::Deref for Disarmed {
    type Target = Envelope;
    #[inline(always)]
    fn deref(&self) -> &Envelope {
        &self.0
    }
}

impl Drop for Envelope {
    #[inline]
    fn drop(&mut self) {
        if let Some(drop_payload) = self.drop_payload {
            // SAFETY: the field's invariant: the payload holds a live value of
            // the type `drop_payload` was made for, and `take` (the only way the
            // value leaves) skips this drop.
            unsafe { drop_payload(self.payload.as_mut_ptr().cast::<u64>()) }
        }
    }
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("kind", &self.kind)
            .field("key", &self.key)
            .field("op", &self.op)
            .field("sender", &self.sender)
            .field("token", &self.token)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_round_trip_inline() {
        assert!(is_inline::<(u64, u64, u32)>());
        let env = Envelope::new(3, 7, Op::Tell, (1u64, 2u64, 3u32));
        assert_eq!((env.kind, env.key, env.op), (3, 7, Op::Tell));
        // SAFETY: made with this type just above.
        assert_eq!(unsafe { env.take::<(u64, u64, u32)>() }, (1, 2, 3));
    }

    #[test]
    fn large_and_owning_values_round_trip_boxed() {
        assert!(!is_inline::<[u64; 5]>());
        let env = Envelope::new(0, 0, Op::Tell, [9u64; 5]);
        // SAFETY: made with this type just above.
        assert_eq!(unsafe { env.take::<[u64; 5]>() }, [9; 5]);
        let env = Envelope::new(0, 0, Op::Tell, String::from("hello"));
        // SAFETY: made with this type just above.
        assert_eq!(unsafe { env.take::<String>() }, "hello");
    }

    #[test]
    fn over_aligned_values_are_boxed() {
        #[repr(align(16))]
        #[derive(Debug, PartialEq)]
        struct A(u8);
        assert!(!is_inline::<A>());
        let env = Envelope::new(0, 0, Op::Tell, A(5));
        // SAFETY: made with this type just above.
        assert_eq!(unsafe { env.take::<A>() }, A(5));
    }

    #[test]
    fn error_envelopes_carry_their_code() {
        let env = Envelope::error(1, 2, Op::ReplyClient, AskError::Panicked);
        assert_eq!(env.error_status(), Some(AskError::Panicked));
        let ok = Envelope::new(1, 2, Op::ReplyClient, 5u8);
        assert_eq!(ok.error_status(), None);
    }

    use std::sync::atomic::{AtomicU32, Ordering};

    /// Drops of `Counted` values (only the test below makes them).
    static DROPS: AtomicU32 = AtomicU32::new(0);

    /// Counts its drops; `PAD` words decide whether it travels inline.
    struct Counted<const PAD: usize>([u64; PAD]);

    impl<const PAD: usize> Drop for Counted<PAD> {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn untaken_payloads_drop_exactly_once() {
        let drops = || DROPS.load(Ordering::Relaxed);
        assert!(is_inline::<Counted<1>>());
        assert!(!is_inline::<Counted<8>>());
        drop(Envelope::new(0, 0, Op::Tell, Counted::<1>([0; 1])));
        drop(Envelope::new(0, 0, Op::Tell, Counted::<8>([0; 8])));
        assert_eq!(drops(), 2, "dropping an envelope drops its payload");
        let taken = Envelope::new(0, 0, Op::Tell, Counted::<1>([0; 1]));
        // SAFETY: made with this type just above.
        let value = unsafe { taken.take::<Counted<1>>() };
        assert_eq!(drops(), 2, "taking moves the payload out, nothing dropped");
        drop(value);
        assert_eq!(drops(), 3);
        // An owning inline payload (a `String` fits) gives its heap back.
        drop(Envelope::new(0, 0, Op::Tell, String::from("not leaked")));
        drop(Envelope::empty(0, 0, Op::Tell, 0));
    }
}
