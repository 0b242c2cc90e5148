//! Cross-thread signalling: asymmetric barriers, doorbells and parkers.
//!
//! The wakeup protocol is Seastar's. A sender publishes (pushes on a ring),
//! then reads the receiver's `sleeping` flag; only if it is set does it clear
//! it and ring the doorbell (a syscall). A receiver about to park sets
//! `sleeping`, issues a full barrier, re-checks every inbound ring, and only
//! then parks. For this to be sound both sides need a store-load barrier; as in
//! Seastar (and glommio), the expensive half goes to the sleeper, once per
//! idle spell: `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` serialises every
//! running thread of the process, so the sender's half is a compiler fence and
//! a busy sender pays no fence, no read-modify-write and no syscall per message.
//! Where `membarrier` is unavailable both halves fall back to `SeqCst` fences.

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{compiler_fence, fence, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};
use std::thread::Thread;

use crate::mesh::wake::SleepFlag;

/// 0 = not probed, 1 = membarrier registered, 2 = fall back to fences.
static BARRIER_MODE: AtomicU8 = AtomicU8::new(0);

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

/// Registers the process for expedited `membarrier` (idempotent). Called when
/// an engine starts.
pub(crate) fn init_barriers() {
    if BARRIER_MODE.load(Ordering::Acquire) != 0 {
        return;
    }
    // SAFETY: membarrier takes two integer arguments and touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
            0,
        )
    };
    let mode = if rc == 0 { 1 } else { 2 };
    BARRIER_MODE.store(mode, Ordering::Release);
}

/// The sender's half of the store-load barrier.
#[inline(always)]
pub(crate) fn light_barrier() {
    if BARRIER_MODE.load(Ordering::Relaxed) == 1 {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The sleeper's half: serialises every thread of the process.
pub(crate) fn heavy_barrier() {
    if BARRIER_MODE.load(Ordering::Relaxed) == 1 {
        // SAFETY: as in `init_barriers`.
        let rc =
            unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) };
        if rc == 0 {
            return;
        }
    }
    fence(Ordering::SeqCst);
}

/// Pads a value to its own cache line pair (128 bytes: adjacent-line
/// prefetchers pull lines in pairs on x86).
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A shard's doorbell: the `sleeping` flag and an eventfd the shard waits on
/// when it parks.
///
/// An eventfd rather than a socket pair: a write only adds to a counter, a
/// socket write allocates and queues a buffer, and the wakeup of the shard
/// parked on it was slower (`versus --child percore ask`, everything parking:
/// p50 about 15 µs with a socket pair, 4–6 µs with an eventfd).
pub(crate) struct Doorbell {
    sleeping: CachePadded<SleepFlag>,
    tx: File,
}

/// What one ring of a doorbell writes (an eventfd takes 8-byte counts).
pub(crate) const RING: [u8; 8] = 1u64.to_ne_bytes();

impl Doorbell {
    /// A doorbell and the handle the shard waits on (the same eventfd).
    pub(crate) fn new() -> std::io::Result<(Self, File)> {
        // SAFETY: eventfd takes two integers and returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        let tx = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let rx = tx.try_clone()?;
        let bell = Doorbell {
            sleeping: CachePadded(SleepFlag::new()),
            tx,
        };
        Ok((bell, rx))
    }

    /// The eventfd's descriptor (the log writer rings it after a flush).
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.tx.as_raw_fd()
    }

    /// After publishing to the shard: wake it if it sleeps.
    #[inline]
    pub(crate) fn notify(&self) {
        if self.sleeping.wake_needed() {
            self.ring();
        }
    }

    /// Wakes the shard whether or not it looks asleep (shutdown).
    pub(crate) fn force(&self) {
        self.sleeping.cancel();
        self.ring();
    }

    #[cold]
    fn ring(&self) {
        // A counter at its maximum means wakeups are pending already.
        let _ = (&self.tx).write(&RING);
    }

    /// The shard is about to park: after this, re-check every inbound ring.
    pub(crate) fn prepare_sleep(&self) {
        self.sleeping.announce();
    }

    /// The shard did not park after all, or woke up.
    pub(crate) fn cancel_sleep(&self) {
        self.sleeping.cancel();
    }
}

/// Unparks a thread; a [`Waker`] for blocking waits.
struct ThreadWake(Thread);

impl Wake for ThreadWake {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker that unparks `thread`.
pub(crate) fn thread_waker(thread: Thread) -> Waker {
    Waker::from(Arc::new(ThreadWake(thread)))
}

/// How a client sleeps while it waits for replies: the same protocol as the
/// doorbell, with [`Waker`]s (a thread unparker for blocking asks, executors'
/// wakers for async ones; several async asks of one client may wait in
/// different tasks, so all registered wakers are woken).
#[derive(Default)]
pub(crate) struct Parker {
    sleeping: CachePadded<SleepFlag>,
    wakers: Mutex<Vec<Waker>>,
}

impl Parker {
    /// After publishing replies for this client: wake it if it sleeps.
    #[inline]
    pub(crate) fn notify(&self) {
        if self.sleeping.wake_needed() {
            self.wake_all();
        }
    }

    /// Wakes the client if it sleeps (shutdown: replies will not come).
    pub(crate) fn wake(&self) {
        self.notify();
    }

    #[cold]
    fn wake_all(&self) {
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers {
            w.wake();
        }
    }

    /// Registers `waker` and announces sleep; re-check for replies after this.
    pub(crate) fn prepare_sleep(&self, waker: &Waker) {
        {
            let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            if !wakers.iter().any(|w| w.will_wake(waker)) {
                wakers.push(waker.clone());
            }
        }
        self.sleeping.announce();
    }

    /// Did not sleep after all.
    pub(crate) fn cancel_sleep(&self) {
        self.sleeping.cancel();
    }
}
