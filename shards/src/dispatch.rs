//! Delivering one envelope to one entity: find or activate it, run its
//! handler under `catch_unwind`, route the reply, restart it after a panic.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::ctx::Ctx;
use crate::entity::{Entity, KindId};
use crate::envelope::Envelope;
use crate::error::AskError;
use crate::shard::Services;
use crate::table::Table;

/// A kind's table with its type erased, so a shard can hold one per kind.
pub trait ErasedTable {
    /// Handles `env` (a `Tell`, `AskClient` or `AskEntity` for this kind).
    fn deliver(&mut self, env: Envelope, svc: &mut Services);
    /// Live entities.
    fn len(&self) -> usize;
    /// Whether there is no live entity.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes used beyond the entities' states.
    fn overhead_bytes(&self) -> usize;
}

pub(crate) struct KindTable<E: Entity> {
    kind: KindId,
    table: Table<E>,
}

impl<E: Entity> KindTable<E> {
    pub(crate) fn new(kind: KindId) -> Self {
        KindTable {
            kind,
            table: Table::new(),
        }
    }
}

impl<E: Entity> ErasedTable for KindTable<E> {
    fn deliver(&mut self, env: Envelope, svc: &mut Services) {
        debug_assert_eq!(env.kind, self.kind);
        let (key, op, sender, token) = (env.key, env.op, env.sender, env.token);
        // SAFETY: an envelope addressed to this kind with a message operation was
        // made by `Envelope::new::<E::Msg>`: the client and `Ctx` look the kind id
        // up from `E`'s type, and kind ids are the same on every shard.
        let msg = unsafe { env.take::<E::Msg>() };
        let slot = match self.table.find(key) {
            Some(slot) => slot,
            None => match catch_unwind(|| E::activate(key)) {
                Ok(state) => {
                    svc.counters.activations += 1;
                    self.table.insert(key, state)
                }
                Err(_) => {
                    svc.counters.panics += 1;
                    svc.fail(op, sender, token, self.kind, key, AskError::Panicked);
                    return;
                }
            },
        };
        let mut ctx = Ctx::<E>::new(svc, self.kind, key);
        let state = self.table.get_mut(slot);
        let outcome = catch_unwind(AssertUnwindSafe(|| state.handle(msg, &mut ctx)));
        let stop = ctx.stop_requested();
        svc.counters.handled += 1;
        match outcome {
            Ok(reply) => {
                if stop {
                    drop_state(self.table.remove(slot), svc);
                }
                svc.answer(op, sender, token, self.kind, key, reply);
            }
            Err(_) => {
                svc.counters.panics += 1;
                drop_state(self.table.remove(slot), svc);
                svc.fail(op, sender, token, self.kind, key, AskError::Panicked);
            }
        }
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn overhead_bytes(&self) -> usize {
        self.table.overhead_bytes()
    }
}

/// Drops a deactivated entity; a panicking `Drop` must not take the shard down.
fn drop_state<E>(state: E, svc: &mut Services) {
    svc.counters.deactivations += 1;
    if catch_unwind(AssertUnwindSafe(move || drop(state))).is_err() {
        svc.counters.panics += 1;
    }
}
