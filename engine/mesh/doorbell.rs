//! A shard's doorbell: its `sleeping` flag and the eventfd it parks on.

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};

use super::padded::CachePadded;
use super::wake::SleepFlag;

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
