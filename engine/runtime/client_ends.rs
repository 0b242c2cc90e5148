//! The shard's ends of its clients' rings: taking those of new clients,
//! letting go of closed ones once drained.

use std::sync::atomic::Ordering;

use super::shard_loop::ShardLoop;

impl ShardLoop {
    /// Takes the ends of newly registered clients and marks closed ones as
    /// closing (they are released by `release_closed`).
    pub(super) fn sync_clients(&mut self) {
        for slot in 0..self.clients.len() {
            let offer = self.shared.clients[slot].offers[self.index]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(ends) = offer {
                debug_assert!(self.clients[slot].is_none());
                self.clients[slot] = Some(ends);
                self.active.push(slot);
            }
        }
        // A closed client pushed its last envelope before it set `closed`; its
        // requests are drained like anyone's (backlog rules included) and its
        // slot is released once its ring is empty (`release_closed`).
        for &slot in &self.active {
            let ends = self.clients[slot].as_ref().expect("active slot");
            if ends.signals.closed.load(Ordering::Acquire) && !self.closing.contains(&slot) {
                self.closing.push(slot);
            }
        }
    }

    /// Lets go of closed clients whose requests have all been handled: their
    /// replies (queued or held behind the output gate) have no reader.
    pub(super) fn release_closed(&mut self) {
        let mut i = 0;
        while i < self.closing.len() {
            let slot = self.closing[i];
            let ends = self.clients[slot].as_ref().expect("closing slot is active");
            if !ends.requests.is_empty() {
                i += 1;
                continue;
            }
            self.closing.swap_remove(i);
            self.shard.forget_client(slot);
            self.clients[slot] = None;
            let at = self.active.iter().position(|&s| s == slot).expect("active");
            self.active.swap_remove(at);
            self.shared.release_client_slot(slot);
        }
    }
}
