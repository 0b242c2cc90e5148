//! Asymmetric store-load barriers for the wakeup protocol.
//!
//! For the protocol (`wake.rs`) to be sound both sides need a store-load
//! barrier; as in Seastar (and glommio), the expensive half goes to the
//! sleeper, once per idle spell: `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`
//! serialises every running thread of the process, so the sender's half is a
//! compiler fence and a busy sender pays no fence, no read-modify-write and no
//! syscall per message. Where `membarrier` is unavailable both halves fall
//! back to `SeqCst` fences (which is what the loom model checks).

use std::sync::atomic::{compiler_fence, fence, AtomicU8, Ordering};

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
