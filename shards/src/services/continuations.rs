//! Layer 2, services: the continuations of this shard's entities' asks, each
//! waiting in a slot named by the ask's token until its reply comes back.

use crate::envelope::Envelope;
use crate::error::AskError;
use crate::id::EntityId;
use crate::limits::CONTINUATIONS_MAX;

/// Turns the reply to an ask (or the error that replaced it) into a message
/// for the asker.
pub(crate) type ContinuationFn = Box<dyn FnOnce(Result<Envelope, AskError>, EntityId) -> Envelope>;

/// A continuation: what to do with the reply to an entity's ask.
pub(crate) struct Continuation {
    /// The entity that asked.
    pub(crate) asker: EntityId,
    pub(crate) call: ContinuationFn,
}

/// The waiting continuations of one shard. At most [`CONTINUATIONS_MAX`].
#[derive(Default)]
pub(crate) struct Continuations {
    /// `None` marks a free slot. Invariant: the free slots are exactly those
    /// listed in `free`.
    slots: Vec<Option<Continuation>>,
    free: Vec<u32>,
}

impl Continuations {
    /// Parks `c`; returns its token, or hands it back when
    /// [`CONTINUATIONS_MAX`] wait already.
    pub(crate) fn park(&mut self, c: Continuation) -> Result<u64, Continuation> {
        match self.free.pop() {
            Some(slot) => {
                debug_assert!(self.slots[slot as usize].is_none());
                self.slots[slot as usize] = Some(c);
                Ok(slot as u64)
            }
            None if self.slots.len() >= CONTINUATIONS_MAX => Err(c),
            None => {
                self.slots.push(Some(c));
                Ok((self.slots.len() - 1) as u64)
            }
        }
    }

    /// Takes the continuation waiting under `token` (its reply came, or its
    /// ask was never sent).
    pub(crate) fn take(&mut self, token: u64) -> Option<Continuation> {
        let slot = token as usize;
        let c = self.slots.get_mut(slot).and_then(Option::take)?;
        self.free.push(slot as u32);
        Some(c)
    }

    /// Continuations waiting for their reply.
    pub(crate) fn waiting(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}
