//! Delivering one envelope to one entity: find or activate it, run its
//! handler under `catch_unwind`, route the reply, restart it after a panic;
//! for durable kinds also the per-entity log bookkeeping (see `durable`).

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::ctx::Ctx;
use crate::durable::{Codec, DurableMeta, LogRefusal, LogSink};
use crate::entity::{Entity, KindId};
use crate::envelope::Envelope;
use crate::error::AskError;
use crate::migrate::{Departure, HeatCell};
use crate::shard::Services;
use crate::table::{KeyMap, Slot, Table, Vacancy};

/// A table with fewer entities stays in the core's cache (for small states
/// its index and slab fit in 2 MiB of L2), so prefetching its lines would
/// only cost time (the pass that gathers keys for it included).
const PREFETCH_ENTITIES_MIN: usize = 1 << 15;

/// A kind's table with its type erased, so a shard can hold one per kind.
pub trait ErasedTable {
    /// Handles `env` (a `Tell`, `AskClient` or `AskEntity` for this kind).
    /// When the entity is not live here and `activate` is false, hands the
    /// envelope back untouched instead of activating it (it may live on
    /// another shard).
    fn deliver(&mut self, env: Envelope, svc: &mut Services, activate: bool) -> Option<Envelope>;
    /// Starts loading the index lines `deliver` will read first for entities
    /// `keys` (see [`Shard::prefetch`](crate::Shard::prefetch)).
    fn prefetch(&self, keys: &[u64]);
    /// Whether the table is too big for the cache, so [`Self::prefetch`]
    /// does something.
    fn prefetch_pays(&self) -> bool;
    /// Live entities.
    fn len(&self) -> usize;
    /// Whether there is no live entity.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes used beyond the entities' states.
    fn overhead_bytes(&self) -> usize;
    /// Whether the kind is durable.
    fn is_durable(&self) -> bool;
    /// Appends entity `key`'s state if it changed since it was last logged.
    /// Returns the LSN appended, if any.
    ///
    /// # Errors
    ///
    /// The sink's refusal; the entity is back at its last logged state.
    fn log_dirty(&mut self, key: u64, sink: &mut dyn LogSink) -> Result<Option<u64>, LogRefusal>;
    /// Record `lsn` of entity `key` is durable (`true`) or failed (`false`).
    fn resolve(&mut self, key: u64, lsn: u64, durable: bool);
    /// Puts a recovered entity in the table.
    ///
    /// # Errors
    ///
    /// The codec's message when `bytes` do not decode.
    /// With `relog`, the entity is logged again at the end of the next pass
    /// (it came from another shard's log). Returns whether it must be marked
    /// dirty.
    fn restore(&mut self, key: u64, version: u64, bytes: &[u8], relog: bool) -> Result<(), String>;
    /// Remembers a recovered deletion, so the key's next life logs a higher version.
    fn restore_tombstone(&mut self, key: u64, version: u64);
    /// Runs [`Entity::recovered`] on every entity.
    fn run_recovered(&mut self, svc: &mut Services);
    /// Appends every live entity's last logged state and every remembered
    /// deletion (a checkpoint). Returns how many records.
    ///
    /// # Errors
    ///
    /// The sink's refusal.
    fn checkpoint(&mut self, sink: &mut dyn LogSink) -> Result<usize, LogRefusal>;
    /// Whether the rebalancer may move entities of this kind
    /// ([`Entity::MOVABLE`]).
    fn movable(&self) -> bool;
    /// Whether entity `key` is live here.
    fn contains(&self, key: u64) -> bool;
    /// Activates entity `key` if it is not live (a move of a virtual entity).
    /// Returns whether it is live afterwards (activation may panic).
    fn ensure_active(&mut self, key: u64, svc: &mut Services) -> bool;
    /// Takes entity `key` out of the table to move it: its value, heat and
    /// log state.
    fn depart(&mut self, key: u64, svc: &mut Services) -> Option<Departure>;
    /// Puts an entity that moved here into the table; a durable one is logged
    /// again here, with a higher version, at the end of the pass.
    fn admit(&mut self, key: u64, d: Departure, svc: &mut Services);
    /// Smoothed messages per window of entity `key`, if live.
    fn heat_of(&self, key: u64, window: u32) -> Option<f32>;
    /// Version of the last record appended for durable entity `key`, if live.
    fn version_of(&self, key: u64) -> Option<u64>;
}

/// Log bookkeeping of a durable kind, parallel to the table's slots.
struct DurableSide<E> {
    codec: Codec<E>,
    /// `meta[slot]` belongs to the entity in `slot` (same swap-removes).
    meta: Vec<DurableMeta>,
    /// Versions of deleted entities, so a new life starts above them.
    retired: KeyMap<u64>,
    scratch: Vec<u8>,
    /// Encoding of the state before the running handler, when the entity
    /// had changed earlier in the pass (`preimage_valid`).
    preimage: Vec<u8>,
    preimage_valid: bool,
}

/// A live entity in its table: its heat beside its state, so a delivery
/// reads one slab entry (key, heat and state together) after the index
/// line. `versus --child percore activate`: one slab push per activation
/// instead of two.
struct Live<E> {
    heat: HeatCell,
    state: E,
}

pub(crate) struct KindTable<E: Entity> {
    kind: KindId,
    hash: u64,
    table: Table<Live<E>>,
    durable: Option<DurableSide<E>>,
}

impl<E: Entity> KindTable<E> {
    pub(crate) fn new(kind: KindId, hash: u64, codec: Option<Codec<E>>) -> Self {
        KindTable {
            kind,
            hash,
            table: Table::new(),
            durable: codec.map(|codec| DurableSide {
                codec,
                meta: Vec::new(),
                retired: KeyMap::default(),
                scratch: Vec::new(),
                preimage: Vec::new(),
                preimage_valid: false,
            }),
        }
    }

    /// Adds entity `key` (at `vacancy` if its lookup just found one).
    fn insert(
        &mut self,
        key: u64,
        state: E,
        vacancy: Option<Vacancy>,
        meta: impl FnOnce(&mut KeyMap<u64>) -> DurableMeta,
    ) -> Slot {
        let live = Live {
            heat: HeatCell::default(),
            state,
        };
        let slot = match vacancy {
            Some(v) => self.table.insert_vacant(v, key, live),
            None => self.table.insert(key, live),
        };
        if let Some(d) = &mut self.durable {
            let m = meta(&mut d.retired);
            d.meta.push(m);
            debug_assert_eq!(d.meta.len(), self.table.len());
        }
        slot
    }

    fn remove(&mut self, slot: Slot) -> E {
        if let Some(d) = &mut self.durable {
            d.meta.swap_remove(slot);
        }
        self.table.remove(slot).state
    }

    /// Restarts the durable entity at `slot` after its handler panicked: back
    /// to the state the last handler that returned left it in. That is its
    /// pre-image if it changed earlier in this pass (it stays dirty, so the
    /// pass logs it before the outputs those changes held go out), else its
    /// last logged state. Returns whether it was removed (it had no state
    /// to go back to).
    fn restart_durable(&mut self, slot: Slot, svc: &mut Services) -> bool {
        let key = self.table.key_at(slot);
        let d = self.durable.as_mut().expect("durable kind");
        if d.preimage_valid {
            d.preimage_valid = false;
            match (d.codec.decode)(key, &d.preimage) {
                Ok(state) => {
                    let old = std::mem::replace(&mut self.table.get_mut(slot).state, state);
                    let _ = catch_unwind(AssertUnwindSafe(move || drop(old)));
                    return false;
                }
                // The state does not decode its own encoding: its changes of
                // this pass are lost, so nothing they emitted may go out.
                Err(_) => svc.fail_pass_outputs_of((self.kind, key), AskError::Panicked),
            }
        }
        self.rewind(slot)
    }

    /// Puts the entity at `slot` back to its last logged state, or removes it
    /// when it has none. Returns whether it was removed.
    fn rewind(&mut self, slot: Slot) -> bool {
        let key = self.table.key_at(slot);
        let d = self.durable.as_mut().expect("durable kind");
        let restored = d.meta[slot]
            .logged()
            .map(|bytes| (d.codec.decode)(key, bytes));
        let (old, removed) = match restored {
            Some(Ok(state)) => (
                std::mem::replace(&mut self.table.get_mut(slot).state, state),
                false,
            ),
            _ => {
                let version = d.meta[slot].version;
                if version > 0 {
                    d.retired.insert(key, version);
                }
                (self.remove(slot), true)
            }
        };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(old)));
        removed
    }
}

impl<E: Entity> ErasedTable for KindTable<E> {
    fn deliver(&mut self, env: Envelope, svc: &mut Services, activate: bool) -> Option<Envelope> {
        debug_assert_eq!(env.kind, self.kind);
        let (key, op, sender, token) = (env.key, env.op, env.sender, env.token);
        let found = self.table.find_or_vacancy(key);
        if found.is_err() && !activate {
            return Some(env);
        }
        // SAFETY: an envelope addressed to this kind with a message operation was
        // made by `Envelope::new::<E::Msg>`: the client (through `Kinds::message`)
        // and `Ctx` look the kind id up from `E`'s type, and kind ids are the same
        // on every shard (`Shard::deliver`'s contract).
        let msg = unsafe { env.take::<E::Msg>() };
        let slot = match found {
            Ok(slot) => slot,
            Err(vacancy) => match catch_unwind(|| E::activate(key)) {
                Ok(state) => {
                    svc.counters.activations += 1;
                    self.insert(key, state, Some(vacancy), |retired| DurableMeta {
                        version: retired.remove(&key).unwrap_or(0),
                        ..DurableMeta::default()
                    })
                }
                Err(_) => {
                    svc.counters.panics += 1;
                    svc.fail(op, sender, token, self.kind, key, AskError::Panicked);
                    return None;
                }
            },
        };
        // Heat: one compare and one increment per message; the fold into the
        // smoothed figure happens on an entity's first message of a window.
        let live = self.table.get_mut(slot);
        let cell = &mut live.heat;
        if cell.window != svc.window {
            let heat = cell.roll(svc.window);
            svc.offer_hot(heat, self.kind, key);
        }
        cell.count += 1;
        let durable = self.durable.is_some();
        if let Some(d) = &mut self.durable {
            // Changed earlier in this pass and not yet logged: keep the state
            // as the last handler left it, so a panic goes back to it and not
            // past changes whose outputs the gate already holds.
            d.preimage_valid = d.meta[slot].dirty;
            if d.preimage_valid {
                d.preimage.clear();
                (d.codec.encode)(&live.state, &mut d.preimage);
            }
        }
        // Everything a durable handler emits waits for the log (the output gate).
        svc.gate = durable;
        svc.gate_from = (self.kind, key);
        let mut ctx = Ctx::<E>::new(svc, self.kind, key);
        let state = &mut live.state;
        let outcome = catch_unwind(AssertUnwindSafe(|| state.handle(msg, &mut ctx)));
        let stop = ctx.stop_requested();
        svc.counters.handled += 1;
        match outcome {
            Ok(reply) => {
                if stop {
                    if let Some(d) = &mut self.durable {
                        let version = d.meta[slot].version + 1;
                        d.retired.insert(key, version);
                        svc.tombstones.push((self.hash, key, version));
                    }
                    svc.timers.cancel_owned_by(self.kind, key);
                    drop_state(self.remove(slot), svc);
                } else if let Some(d) = &mut self.durable {
                    let meta = &mut d.meta[slot];
                    if !meta.dirty {
                        meta.dirty = true;
                        svc.dirty.push((self.kind, key));
                    }
                }
                svc.answer(op, sender, token, self.kind, key, reply);
            }
            Err(_) => {
                svc.counters.panics += 1;
                svc.timers.cancel_owned_by(self.kind, key);
                if !durable {
                    drop_state(self.remove(slot), svc);
                } else if self.restart_durable(slot, svc) {
                    svc.counters.deactivations += 1;
                }
                svc.fail(op, sender, token, self.kind, key, AskError::Panicked);
            }
        }
        svc.gate = false;
        None
    }

    fn prefetch(&self, keys: &[u64]) {
        if !self.prefetch_pays() {
            return;
        }
        for &key in keys {
            self.table.prefetch(key);
        }
    }

    fn prefetch_pays(&self) -> bool {
        self.table.len() >= PREFETCH_ENTITIES_MIN
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn movable(&self) -> bool {
        E::MOVABLE
    }

    fn contains(&self, key: u64) -> bool {
        self.table.find(key).is_some()
    }

    fn ensure_active(&mut self, key: u64, svc: &mut Services) -> bool {
        if self.table.find(key).is_some() {
            return true;
        }
        match catch_unwind(|| E::activate(key)) {
            Ok(state) => {
                svc.counters.activations += 1;
                self.insert(key, state, None, |retired| DurableMeta {
                    version: retired.remove(&key).unwrap_or(0),
                    ..DurableMeta::default()
                });
                true
            }
            Err(_) => {
                svc.counters.panics += 1;
                false
            }
        }
    }

    fn depart(&mut self, key: u64, svc: &mut Services) -> Option<Departure> {
        let slot = self.table.find(key)?;
        let mut heat = self.table.get_mut(slot).heat;
        heat.roll(svc.window);
        let durable = self.durable.as_ref().map(|d| {
            let meta = &d.meta[slot];
            (self.hash, meta.version, meta.logged().map(<[u8]>::to_vec))
        });
        let state = self.remove(slot);
        Some(Departure {
            state: Box::new(state),
            heat,
            durable,
        })
    }

    fn admit(&mut self, key: u64, d: Departure, svc: &mut Services) {
        let state = match d.state.downcast::<E>() {
            Ok(state) => *state,
            Err(_) => unreachable!("a migrant of kind {} is not an {}", self.kind, E::KIND),
        };
        let (version, logged) = match d.durable {
            Some((_, version, logged)) => (version, logged),
            None => (0, None),
        };
        let durable = self.durable.is_some();
        let slot = self.insert(key, state, None, |retired| {
            retired.remove(&key);
            DurableMeta {
                version,
                durable: logged,
                dirty: true,
                relog: true,
                ..DurableMeta::default()
            }
        });
        self.table.get_mut(slot).heat = d.heat;
        if durable {
            svc.dirty.push((self.kind, key));
        }
    }

    fn version_of(&self, key: u64) -> Option<u64> {
        let slot = self.table.find(key)?;
        Some(self.durable.as_ref()?.meta[slot].version)
    }

    fn heat_of(&self, key: u64, window: u32) -> Option<f32> {
        let slot = self.table.find(key)?;
        let mut cell = self.table.get(slot).heat;
        Some(cell.roll(window))
    }

    fn overhead_bytes(&self) -> usize {
        let meta = self.durable.as_ref().map_or(0, |d| {
            d.meta.capacity() * std::mem::size_of::<DurableMeta>()
                + d.meta
                    .iter()
                    .map(|m| m.durable.as_ref().map_or(0, Vec::capacity))
                    .sum::<usize>()
        });
        let heat = self.table.len() * (std::mem::size_of::<Live<E>>() - std::mem::size_of::<E>());
        self.table.overhead_bytes() + heat + meta
    }

    fn is_durable(&self) -> bool {
        self.durable.is_some()
    }

    fn log_dirty(&mut self, key: u64, sink: &mut dyn LogSink) -> Result<Option<u64>, LogRefusal> {
        let Some(slot) = self.table.find(key) else {
            return Ok(None); // stopped or failed since it was marked
        };
        let d = self.durable.as_mut().expect("only durable kinds are dirty");
        let meta = &mut d.meta[slot];
        meta.dirty = false;
        d.scratch.clear();
        (d.codec.encode)(&self.table.get_mut(slot).state, &mut d.scratch);
        if !meta.relog && meta.logged() == Some(&d.scratch[..]) {
            return Ok(None); // handled, but unchanged
        }
        meta.relog = false;
        // A version is never reused, even after a failure: a prefix of a failed
        // flush may survive on disk.
        meta.version += 1;
        match sink.append_state(self.hash, key, meta.version, &d.scratch) {
            Ok(lsn) => {
                meta.pending.push((lsn, std::mem::take(&mut d.scratch)));
                Ok(Some(lsn))
            }
            Err(refusal) => {
                self.rewind(slot);
                Err(refusal)
            }
        }
    }

    fn resolve(&mut self, key: u64, lsn: u64, durable: bool) {
        let Some(slot) = self.table.find(key) else {
            return;
        };
        let d = self.durable.as_mut().expect("durable kind");
        if durable {
            d.meta[slot].durable(lsn);
        } else {
            d.meta[slot].failed(lsn);
            self.rewind(slot);
        }
    }

    fn restore(&mut self, key: u64, version: u64, bytes: &[u8], relog: bool) -> Result<(), String> {
        let d = self.durable.as_ref().ok_or("the kind is not durable")?;
        if self.table.find(key).is_some() {
            return Err(format!("key {key} recovered twice"));
        }
        let state = (d.codec.decode)(key, bytes)?;
        self.insert(key, state, None, |retired| {
            retired.remove(&key);
            DurableMeta {
                version,
                durable: Some(bytes.to_vec()),
                dirty: relog,
                relog,
                ..DurableMeta::default()
            }
        });
        Ok(())
    }

    fn restore_tombstone(&mut self, key: u64, version: u64) {
        if let Some(d) = &mut self.durable {
            d.retired.insert(key, version);
        }
    }

    fn run_recovered(&mut self, svc: &mut Services) {
        for slot in 0..self.table.len() {
            let key = self.table.key_at(slot);
            let mut ctx = Ctx::<E>::new(svc, self.kind, key);
            let state = &mut self.table.get_mut(slot).state;
            let outcome = catch_unwind(AssertUnwindSafe(|| state.recovered(&mut ctx)));
            // A recovered entity stays live whatever the hook asked.
            let _ = ctx.stop_requested();
            if outcome.is_err() {
                svc.counters.panics += 1;
            }
        }
    }

    fn checkpoint(&mut self, sink: &mut dyn LogSink) -> Result<usize, LogRefusal> {
        let Some(d) = &self.durable else { return Ok(0) };
        let mut n = 0;
        for (slot, meta) in d.meta.iter().enumerate() {
            if let Some(bytes) = meta.logged() {
                sink.append_state(self.hash, self.table.key_at(slot), meta.version, bytes)?;
                n += 1;
            }
        }
        for (&key, &version) in &d.retired {
            sink.append_tombstone(self.hash, key, version)?;
            n += 1;
        }
        Ok(n)
    }
}

/// Drops a deactivated entity; a panicking `Drop` must not take the shard down.
fn drop_state<E>(state: E, svc: &mut Services) {
    svc.counters.deactivations += 1;
    if catch_unwind(AssertUnwindSafe(move || drop(state))).is_err() {
        svc.counters.panics += 1;
    }
}
