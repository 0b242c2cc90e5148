//! The idle side of the shard loop: whether there is work, gathering a
//! trickle into batches, and parking on the doorbell (the sleeper's half of
//! the wakeup protocol, `crate::mesh::wake`).

use std::fs::File;
use std::io::Read as _;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rtrb::Consumer;

use super::shard_loop::ShardLoop;
use super::{GATHER_CHECK_SPINS, GATHER_MAX_SPINS, GATHER_MIN};
use crate::durability::ShardLog;

impl ShardLoop {
    /// Lets a stream fill the rings before the next pass. A shard that
    /// re-reads a ring's tail while its producer is appending one envelope
    /// at a time pulls the tail's cache line away from the producer on every
    /// message, so both sides pay a transfer per message; waiting here lets
    /// the producer append several with the line to itself, and the next
    /// pass takes them as one chunk. Ends as soon as `GATHER_MIN` envelopes
    /// wait, when nothing new arrived between two looks (the stream paused:
    /// no use waiting), or after `GATHER_MAX_SPINS`.
    /// `versus --child percore tell`: 20 M/s → 30 M/s one tell at a time.
    pub(super) fn gather(&self) {
        let mut waiting = 0;
        let mut spun = 0;
        while spun < GATHER_MAX_SPINS {
            for _ in 0..GATHER_CHECK_SPINS {
                std::hint::spin_loop();
            }
            spun += GATHER_CHECK_SPINS;
            let now = self.ready();
            if now >= GATHER_MIN || (now > 0 && now == waiting) {
                return;
            }
            waiting = now;
        }
    }

    /// Whether the pass that did `work` did nothing but take from rings, and
    /// nothing else waits: gathering is for a shard fed by a trickle, never
    /// for one with its own work queued (a producer entity, a timer due, a
    /// backlog to publish).
    pub(super) fn only_rings(&mut self, work: usize) -> bool {
        self.ring_work == work
            && self.shard.local_len() == 0
            && self.shard.shard_backlog() == 0
            && self
                .shard
                .next_deadline_ns()
                .is_none_or(|at| at > self.shard.now_ns())
    }

    /// Envelopes waiting in every inbound ring, other shards' and clients'.
    pub(super) fn ready(&self) -> usize {
        self.inbound_rings().map(Consumer::slots).sum()
    }

    /// Whether this shard holds no work and waits for nothing: `idle()`, and
    /// its log has nothing in flight and no output waits for it.
    pub(super) fn quiet(&mut self) -> bool {
        self.idle()
            && !self.shard.migrating()
            && self.drained()
            && !self.shard.has_unresolved()
            && self.log.as_ref().is_none_or(ShardLog::is_idle)
    }

    /// Whether this shard has nothing to do now, so it may park: inbound rings
    /// and local queue empty, and nothing waiting to be published that could
    /// be published — an outbox whose ring is full is fine, as the consumer
    /// rings this shard's doorbell when it drains a full ring (and the
    /// re-check after announcing sleep pairs with that). Replies waiting for a
    /// client that does not read do not hold the shard awake. A log flush in
    /// flight does not count: its completion rings the doorbell.
    pub(super) fn idle(&mut self) -> bool {
        self.shard.local_len() == 0
            && self.inbound_rings().all(Consumer::is_empty)
            && self.outbound.iter().enumerate().all(|(d, ring)| {
                ring.as_ref()
                    .is_none_or(|r| r.is_full() || self.shard.outbox_to_shard(d).is_empty())
            })
            && self.active.iter().all(|&slot| {
                let ring = &self.clients[slot].as_ref().expect("active").replies;
                ring.is_full() || self.shard.outbox_to_client(slot).is_empty()
            })
    }

    /// Whether nothing is left to hand to other shards (shutdown waits for it).
    pub(super) fn drained(&mut self) -> bool {
        (0..self.outbound.len()).all(|d| self.shard.outbox_to_shard(d).is_empty())
    }

    /// Parks until the doorbell rings or the next timer is due.
    ///
    /// The thread blocks in `ppoll(2)` on the doorbell (an eventfd) rather than in
    /// glommio's reactor: glommio 0.9's `UnixStream::read` was seen to miss a
    /// byte already in a socket and never complete (reproduced without
    /// percore, when the doorbell was a socket pair, during the engine_wakeup
    /// and engine_ordering tests). A parked shard has no other task to run
    /// on its executor, and its log writer's completions write to the same
    /// doorbell, so blocking the thread here loses nothing.
    pub(super) fn park(&mut self, doorbell: &File, stopping: bool) {
        let shared = self.shared.clone();
        let bell = &shared.doorbells[self.index];
        // Rings full with more to send: their consumers wake this shard when
        // they make room (see `drain_inbound`).
        let n = shared.shard_count();
        for d in 0..n {
            if d != self.index && !self.shard.outbox_to_shard(d).is_empty() {
                shared.blocked[self.index * n + d].mark();
            }
        }
        for &slot in &self.active {
            if !self.shard.outbox_to_client(slot).is_empty() {
                let ends = self.clients[slot].as_ref().expect("active slot");
                ends.signals.reply_blocked[self.index].mark();
            }
        }
        bell.prepare_sleep();
        // Re-check every source after announcing sleep (see crate::mesh::wake).
        let epoch = self.shared.client_epoch[self.index].load(Ordering::Acquire);
        if !self.idle()
            || epoch != self.client_epoch
            || self.shared.terminate.load(Ordering::Acquire)
        {
            bell.cancel_sleep();
            self.unmark_blocked();
            return;
        }
        let timer = if stopping {
            None
        } else {
            self.shard
                .next_deadline_ns()
                .map(|d| Duration::from_nanos(d.saturating_sub(self.shared.now_ns())))
        };
        // Defence in depth, not part of the protocol: a parked shard looks
        // again after at most PARK_MAX, so a wakeup lost to a bug costs
        // latency, never a hang (20 wakeups a second cost an idle shard far
        // below 1 % of a core; see versus `idle`).
        let timeout = Some(timer.map_or(PARK_MAX, |t| t.min(PARK_MAX)));
        if timeout == Some(Duration::ZERO) {
            bell.cancel_sleep();
            self.unmark_blocked();
            return;
        }
        self.parks += 1;
        wait_readable(doorbell, timeout);
        // The count carries no information: one read resets it (without
        // waiting: it is non-blocking); a ring that comes later only costs one
        // spurious pass.
        let mut count = [0u8; 8];
        let _ = (&*doorbell).read(&mut count);
        bell.cancel_sleep();
        self.unmark_blocked();
    }

    /// Awake again: takes back the blocked marks `park` set (only the
    /// producer clears them; see `BlockedFlag`). The next park marks anew.
    pub(super) fn unmark_blocked(&self) {
        let n = self.shared.shard_count();
        for d in (0..n).filter(|&d| d != self.index) {
            self.shared.blocked[self.index * n + d].clear();
        }
        for &slot in &self.active {
            let ends = self.clients[slot].as_ref().expect("active slot");
            ends.signals.reply_blocked[self.index].clear();
        }
    }
}

/// Longest a shard stays parked without looking at its rings (see `park`).
const PARK_MAX: Duration = Duration::from_millis(50);

/// Blocks until `doorbell` (its eventfd) is readable or `timeout` passes
/// (forever if `None`).
fn wait_readable(doorbell: &File, timeout: Option<Duration>) {
    let mut fds = libc::pollfd {
        fd: doorbell.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds` is one valid pollfd, `ts_ptr` is null or points to a timespec
    // that outlives the call, and no signal mask is passed. EINTR and errors
    // only end the wait early, which costs one spurious pass.
    unsafe {
        libc::ppoll(&mut fds, 1, ts_ptr, std::ptr::null());
    }
}
