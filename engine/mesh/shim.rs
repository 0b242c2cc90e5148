//! What the wakeup flags (`wake.rs`) are built from: `std` atomics and the
//! engine's asymmetric barriers, or — when compiled with `--cfg loom` by the
//! model in `loom/` — loom's atomics, with both barriers as `SeqCst` fences
//! (what the membarrier pair guarantees, and what the engine falls back to
//! where membarrier is unavailable). tokio's pattern: the code under test is
//! the code that runs, only its primitives are swapped.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(not(loom))]
pub(crate) use super::barrier::{heavy_barrier, light_barrier};

/// The sender's half of the store-load barrier (loom: a `SeqCst` fence).
#[cfg(loom)]
#[inline(always)]
pub(crate) fn light_barrier() {
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// The sleeper's half of the store-load barrier (loom: a `SeqCst` fence).
#[cfg(loom)]
pub(crate) fn heavy_barrier() {
    loom::sync::atomic::fence(Ordering::SeqCst);
}
