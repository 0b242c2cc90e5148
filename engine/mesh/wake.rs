//! The flags of the wakeup protocol (Seastar's; DESIGN.md "Wakeups"), the
//! part of the mesh that the `loom` model in `loom/` checks as it is.
//!
//! - [`SleepFlag`]: a sender publishes (pushes on a ring), then
//!   [`SleepFlag::wake_needed`] reads the receiver's flag behind the light
//!   barrier; only if it is set does it clear it (one read-modify-write) and
//!   the caller rings the receiver's doorbell. A receiver about to park calls
//!   [`SleepFlag::announce`] (set, heavy barrier), re-checks every inbound
//!   ring, and only then parks.
//! - [`BlockedFlag`]: a producer about to park with envelopes waiting on a
//!   full ring marks the ring's flag *before* it announces sleep, and clears
//!   it once awake; the consumer, after every read that freed room, calls
//!   [`BlockedFlag::wake_needed`] and, if it is set, wakes the producer as
//!   any sender would (the lost-wakeup fix of 2026-11: waking only when the
//!   ring was seen full missed a producer that filled it during the read).
//!
//! Why it is sound: each side stores its announcement, passes a store-load
//! barrier, then loads the other's. The two barriers are ordered one way or
//! the other, so either the sleeper's re-check sees the message (or the room)
//! or the sender's load sees the flag and rings. Neither side ever misses
//! both.

use super::shim::{heavy_barrier, light_barrier, AtomicBool, Ordering};

/// A receiver's `sleeping` flag: set while it is about to park or parked.
pub(crate) struct SleepFlag {
    sleeping: AtomicBool,
}

impl Default for SleepFlag {
    fn default() -> Self {
        SleepFlag::new()
    }
}

impl SleepFlag {
    /// Awake.
    pub(crate) fn new() -> Self {
        SleepFlag {
            sleeping: AtomicBool::new(false),
        }
    }

    /// The sender's half, after publishing: whether the receiver sleeps and
    /// this caller must ring its doorbell (the flag is cleared, so one
    /// sender rings). A busy receiver costs a compiler fence and a load.
    #[inline]
    pub(crate) fn wake_needed(&self) -> bool {
        light_barrier();
        self.sleeping.load(Ordering::Relaxed) && self.claim()
    }

    /// Clears the flag if it is still set; whether this caller did. A
    /// compare-exchange, not a swap: a sender that finds the flag already
    /// cleared (by another sender, or by the receiver waking) writes
    /// nothing.
    #[cold]
    fn claim(&self) -> bool {
        self.sleeping
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// The receiver is about to park: after this, re-check every source of
    /// work, and park only if all are empty.
    pub(crate) fn announce(&self) {
        self.sleeping.store(true, Ordering::Relaxed);
        heavy_barrier();
    }

    /// The receiver did not park after all, or woke up; or a waker that
    /// rings regardless (shutdown) clears it.
    pub(crate) fn cancel(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }
}

/// Set by a producer that parks with envelopes waiting on a full ring,
/// cleared by that producer when it stops sleeping; a consumer that frees
/// room while it is set wakes the producer.
///
/// Only the producer clears it. A consumer that cleared it (as the engine
/// did until the loom model in `loom/` found the interleaving) could erase
/// a later mark: the producer, awake, refills the ring and marks again while
/// a consumer that saw the earlier mark clears it; the producer parks on a
/// full ring, and the consumer's next read finds no mark and wakes no one.
pub(crate) struct BlockedFlag {
    blocked: AtomicBool,
}

impl Default for BlockedFlag {
    fn default() -> Self {
        BlockedFlag::new()
    }
}

impl BlockedFlag {
    /// Not blocked.
    pub(crate) fn new() -> Self {
        BlockedFlag {
            blocked: AtomicBool::new(false),
        }
    }

    /// The producer, before [`SleepFlag::announce`] (whose heavy barrier
    /// orders this store too).
    pub(crate) fn mark(&self) {
        self.blocked.store(true, Ordering::Relaxed);
    }

    /// The producer, once it is awake again (it woke, or did not park after
    /// all): it re-checks its rings itself from here on.
    pub(crate) fn clear(&self) {
        // Written only when set: the consumer reads this line after every
        // read, and a store of `false` over `false` would still take it away.
        if self.blocked.load(Ordering::Relaxed) {
            self.blocked.store(false, Ordering::Relaxed);
        }
    }

    /// The consumer, after a read that freed room: whether the producer may
    /// be parked waiting for it, so the caller must wake it (through its
    /// [`SleepFlag::wake_needed`] and doorbell, as for any message: that
    /// rings only if it sleeps).
    #[inline]
    pub(crate) fn wake_needed(&self) -> bool {
        light_barrier();
        self.blocked.load(Ordering::Relaxed)
    }
}
