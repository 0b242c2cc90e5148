//! What the shard loop hands to others: outboxes into rings (then the
//! receivers' doorbells), its metrics and its quiescence counters.

use std::sync::atomic::Ordering;

use percore_shards::driver::Destination;

use super::shard_loop::ShardLoop;
use crate::metrics::RuntimeFigures;

impl ShardLoop {
    /// Publishes every outbox: one chunk per destination, then a doorbell.
    pub(super) fn flush(&mut self) {
        for (dest, ring) in self.outbound.iter_mut().enumerate() {
            let Some(ring) = ring else { continue };
            let (out, counters) = self.shard.outbox_and_counters(Destination::Shard(dest));
            if out.is_empty() {
                continue;
            }
            let n = ring.slots().min(out.len());
            if n > 0 {
                let chunk = ring.write_chunk_uninit(n).expect("slots() said so");
                let pushed = chunk.fill_from_iter(out.drain(n));
                debug_assert_eq!(pushed, n);
                self.sent += n as u64;
                self.shared.doorbells[dest].notify();
            }
            if !out.is_empty() {
                out.note_ring_full(counters);
            }
        }
        for &slot in &self.active {
            let (out, counters) = self.shard.outbox_and_counters(Destination::Client(slot));
            if out.is_empty() {
                continue;
            }
            let ends = self.clients[slot].as_mut().expect("active slot");
            let n = ends.replies.slots().min(out.len());
            if n > 0 {
                let chunk = ends.replies.write_chunk_uninit(n).expect("slots() said so");
                chunk.fill_from_iter(out.drain(n));
                ends.signals.parker.notify();
            }
            if !out.is_empty() {
                out.note_ring_full(counters);
            }
        }
    }

    pub(super) fn publish_quiescence(&mut self) {
        let q = &self.shared.quiescence[self.index];
        q.sent.store(self.sent, Ordering::Relaxed);
        q.received.store(self.received, Ordering::Relaxed);
        q.idle.store(true, Ordering::Release);
        self.marked_idle = true;
    }

    pub(super) fn publish_metrics(&mut self, now_ns: u64) {
        self.metrics_at_ns = now_ns;
        let (poisoned, checkpoints) = self
            .log
            .as_ref()
            .map_or((false, 0), |l| (l.poisoned, l.checkpoints));
        self.shared.metrics[self.index].publish(
            self.shard.counters(),
            RuntimeFigures {
                entities: self.shard.entity_count(),
                parks: self.parks,
                poisoned,
                checkpoints,
                load: self.load,
            },
        );
        self.shard.take_pauses(&mut self.pauses);
        if !self.pauses.is_empty() {
            let mut h = self.shared.pauses[self.index]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for p in self.pauses.drain(..) {
                h.saturating_record(p.max(1));
            }
        }
    }
}
