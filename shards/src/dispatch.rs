//! Layer 4, dispatch: delivering one envelope to one entity — find or
//! activate it, run its handler under `catch_unwind`, route the reply,
//! restart it after a panic (a durable one rewinds to the state the last
//! handler that returned left) — and the per-entity log bookkeeping of
//! durable kinds. [`Tables`] holds one type-erased [`KindTable`] per kind.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::ctx::Ctx;
use crate::durable::Codec;
use crate::entity::Entity;
use crate::envelope::{Disarmed, Envelope, Op};
use crate::error::{AskError, RestoreError};
use crate::hash::KeyMap;
use crate::id::{EntityId, KindId};
use crate::limits::{PREFETCH_ENTITIES_MIN, PREFETCH_RUN_MAX};
use crate::log::state::{LogState, PendingRecord};
use crate::log::{LogRefusal, LogSink};
use crate::services::gate::Tombstone;
use crate::services::heat::HeatCell;
use crate::services::moves::PendingMove;
use crate::services::Services;
use crate::table::{Slot, Table, Vacancy};

/// What a durable entity's log state becomes when it leaves its shard.
pub(crate) struct DepartedLog {
    /// Its kind's stable hash.
    pub(crate) kind_hash: u64,
    /// Version of its last record.
    pub(crate) version: u64,
    /// Its last logged encoding, if it was ever logged.
    pub(crate) logged: Option<Vec<u8>>,
}

/// An entity's value and bookkeeping on its way out of its table.
pub(crate) struct Departure {
    pub(crate) state: Box<dyn Any + Send>,
    pub(crate) heat: HeatCell,
    /// Durable kinds only.
    pub(crate) log: Option<DepartedLog>,
}

/// A kind's table with its type erased, so a shard can hold one per kind.
pub(crate) trait ErasedTable {
    /// Handles `env` (a `Tell`, `AskClient` or `AskEntity` for this kind).
    /// When the entity is not live here and `activate` is false, hands the
    /// envelope back untouched instead of activating it (it may live on
    /// another shard).
    fn deliver(&mut self, env: Disarmed, svc: &mut Services, activate: bool);
    /// Starts loading the index lines `deliver` will read first for entities
    /// `keys` (see [`Shard::prefetch`](crate::driver::Shard::prefetch)).
    fn prefetch(&self, keys: &[u64]);
    /// Whether the table is too big for the cache, so [`Self::prefetch`]
    /// does something.
    fn prefetch_pays(&self) -> bool;
    /// Live entities.
    fn len(&self) -> usize;
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
    /// Puts a recovered entity in the table. With `relog`, the entity is
    /// logged again at the end of the next pass (it came from another
    /// shard's log).
    ///
    /// # Errors
    ///
    /// When the kind is not durable, the key is already here, or `bytes` do
    /// not decode.
    fn restore(
        &mut self,
        key: u64,
        version: u64,
        bytes: &[u8],
        relog: bool,
    ) -> Result<(), RestoreError>;
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
    meta: Vec<LogState>,
    /// Versions of deleted entities, so a new life starts above them.
    retired: KeyMap<u64>,
    scratch: Vec<u8>,
    /// Encoding of the state before the running handler, when the entity
    /// had changed earlier in the pass (`preimage_valid`).
    preimage: Vec<u8>,
    preimage_valid: bool,
}

impl<E> DurableSide<E> {
    /// Before a handler of the entity at `slot` runs: if it changed earlier
    /// in this pass and is not yet logged, keeps its state as the last
    /// handler left it, so a panic goes back to it and not past changes whose
    /// outputs the gate already holds.
    #[inline]
    fn keep_preimage(&mut self, slot: Slot, state: &E) {
        self.preimage_valid = self.meta[slot].dirty;
        if self.preimage_valid {
            self.preimage.clear();
            (self.codec.encode)(state, &mut self.preimage);
        }
    }
}

/// A live entity in its table: its heat beside its state, so a delivery
/// reads one slab entry (key, heat and state together) after the index
/// line. `versus --child percore activate`: one slab push per activation
/// instead of two.
struct Live<E> {
    heat: HeatCell,
    state: E,
}

/// The table of kind `E` on one shard, with its log bookkeeping if durable.
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
        meta: impl FnOnce(&mut KeyMap<u64>) -> LogState,
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

    /// Activates entity `key` at `vacancy` (its first message). `None`
    /// when `activate` panicked.
    #[inline]
    fn activate_at(&mut self, key: u64, vacancy: Vacancy, svc: &mut Services) -> Option<Slot> {
        match catch_unwind(|| E::activate(key)) {
            Ok(state) => {
                svc.counters_mut().activations += 1;
                Some(self.insert(key, state, Some(vacancy), |retired| LogState {
                    version: retired.remove(&key).unwrap_or(0),
                    ..LogState::default()
                }))
            }
            Err(_) => {
                svc.counters_mut().panics += 1;
                None
            }
        }
    }

    /// The entity at `slot` stopped itself: a durable one is deleted (a
    /// tombstone), its timers are cancelled, its state dropped.
    #[inline]
    fn stopped(&mut self, slot: Slot, id: EntityId, svc: &mut Services) {
        if let Some(d) = &mut self.durable {
            let version = d.meta[slot].version + 1;
            d.retired.insert(id.key, version);
            svc.gate_mut().push_tombstone(Tombstone {
                kind_hash: self.hash,
                key: id.key,
                version,
            });
        }
        svc.timers_mut().cancel_owned_by(id);
        drop_state(self.remove(slot), svc);
    }

    /// The handler of the entity at `slot` panicked: its timers are
    /// cancelled and it restarts (afresh, or a durable one from the state
    /// the last handler that returned left).
    #[inline]
    fn panicked(&mut self, slot: Slot, id: EntityId, svc: &mut Services) {
        svc.counters_mut().panics += 1;
        svc.timers_mut().cancel_owned_by(id);
        if self.durable.is_none() {
            drop_state(self.remove(slot), svc);
        } else if self.restart_durable(slot, svc) {
            svc.counters_mut().deactivations += 1;
        }
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
                Err(_) => {
                    svc.fail_pass_outputs_of(EntityId::new(self.kind, key), AskError::Panicked)
                }
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
    fn deliver(&mut self, env: Disarmed, svc: &mut Services, activate: bool) {
        debug_assert_eq!(env.kind, self.kind);
        let (key, op, sender, token, status) = (env.key, env.op, env.sender, env.token, env.status);
        let id = EntityId::new(self.kind, key);
        // SAFETY: an envelope addressed to this kind with a message operation was
        // made by `Envelope::new::<E::Msg>`: the client (through `Kinds::message`)
        // and `Ctx` look the kind id up from `E`'s type, and kind ids are the same
        // on every shard (`Shard::deliver`'s contract). Taken before the lookup
        // so the envelope is not kept alive across it (`msgcost deliver`).
        let msg = unsafe { env.take::<E::Msg>() };
        let slot = match self.table.find_or_vacancy(key) {
            Ok(slot) => slot,
            // Not here, and it may live elsewhere: the same envelope again,
            // for the shard to route (rare: only on shards entities moved
            // to or from).
            Err(_) if !activate => {
                let mut env = Envelope::new(self.kind, key, op, msg).with_route(sender, token);
                env.status = status;
                return svc.set_missed(env);
            }
            Err(vacancy) => match self.activate_at(key, vacancy, svc) {
                Some(slot) => slot,
                None => return svc.fail(op, sender, token, id, AskError::Panicked),
            },
        };
        // Heat: one compare and one increment per message; the fold into the
        // smoothed figure happens on an entity's first message of a window.
        let live = self.table.get_mut(slot);
        let cell = &mut live.heat;
        let window = svc.heat().window();
        if cell.window != window {
            let heat = cell.roll(window);
            svc.offer_hot(heat, self.kind, key);
        }
        cell.count += 1;
        let durable = self.durable.is_some();
        if let Some(d) = &mut self.durable {
            d.keep_preimage(slot, &live.state);
        }
        // Everything a durable handler emits waits for the log (the output gate;
        // open for every other handler, so plain kinds never touch it).
        if durable {
            svc.gate_mut().set(true, id);
        }
        let mut ctx = Ctx::<E>::new(svc, id);
        let state = &mut live.state;
        let outcome = catch_unwind(AssertUnwindSafe(|| state.handle(msg, &mut ctx)));
        let stop = ctx.stop_requested();
        svc.counters_mut().handled += 1;
        match outcome {
            Ok(reply) => {
                if stop {
                    self.stopped(slot, id, svc);
                } else if let Some(d) = &mut self.durable {
                    let meta = &mut d.meta[slot];
                    if !meta.dirty {
                        meta.dirty = true;
                        svc.gate_mut().mark_dirty(id);
                    }
                }
                svc.answer(op, sender, token, id, reply);
            }
            Err(_) => {
                self.panicked(slot, id, svc);
                svc.fail(op, sender, token, id, AskError::Panicked);
            }
        }
        if durable {
            svc.gate_mut().open();
        }
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
                svc.counters_mut().activations += 1;
                self.insert(key, state, None, |retired| LogState {
                    version: retired.remove(&key).unwrap_or(0),
                    ..LogState::default()
                });
                true
            }
            Err(_) => {
                svc.counters_mut().panics += 1;
                false
            }
        }
    }

    fn depart(&mut self, key: u64, svc: &mut Services) -> Option<Departure> {
        let slot = self.table.find(key)?;
        let mut heat = self.table.get_mut(slot).heat;
        heat.roll(svc.heat().window());
        let log = self.durable.as_ref().map(|d| {
            let meta = &d.meta[slot];
            DepartedLog {
                kind_hash: self.hash,
                version: meta.version,
                logged: meta.logged().map(<[u8]>::to_vec),
            }
        });
        let state = self.remove(slot);
        Some(Departure {
            state: Box::new(state),
            heat,
            log,
        })
    }

    fn admit(&mut self, key: u64, d: Departure, svc: &mut Services) {
        let state = match d.state.downcast::<E>() {
            Ok(state) => *state,
            Err(_) => unreachable!("a migrant of kind {} is not an {}", self.kind, E::KIND),
        };
        let (version, logged) = match d.log {
            Some(log) => (log.version, log.logged),
            None => (0, None),
        };
        let durable = self.durable.is_some();
        let slot = self.insert(key, state, None, |retired| {
            retired.remove(&key);
            LogState {
                version,
                durable_copy: logged,
                dirty: true,
                relog: true,
                ..LogState::default()
            }
        });
        self.table.get_mut(slot).heat = d.heat;
        if durable {
            svc.gate_mut().mark_dirty(EntityId::new(self.kind, key));
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
            d.meta.capacity() * std::mem::size_of::<LogState>()
                + d.meta
                    .iter()
                    .map(|m| m.durable_copy.as_ref().map_or(0, Vec::capacity))
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
                meta.pending.push(PendingRecord {
                    lsn,
                    bytes: std::mem::take(&mut d.scratch),
                });
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

    fn restore(
        &mut self,
        key: u64,
        version: u64,
        bytes: &[u8],
        relog: bool,
    ) -> Result<(), RestoreError> {
        let kind = E::KIND;
        let d = self
            .durable
            .as_ref()
            .ok_or(RestoreError::NotDurable { kind })?;
        if self.table.find(key).is_some() {
            return Err(RestoreError::Duplicate { kind, key });
        }
        let state = (d.codec.decode)(key, bytes).map_err(|source| RestoreError::Decode {
            kind,
            key,
            source,
        })?;
        self.insert(key, state, None, |retired| {
            retired.remove(&key);
            LogState {
                version,
                durable_copy: Some(bytes.to_vec()),
                dirty: relog,
                relog,
                ..LogState::default()
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
            let mut ctx = Ctx::<E>::new(svc, EntityId::new(self.kind, key));
            let state = &mut self.table.get_mut(slot).state;
            let outcome = catch_unwind(AssertUnwindSafe(|| state.recovered(&mut ctx)));
            // A recovered entity stays live whatever the hook asked.
            let _ = ctx.stop_requested();
            if outcome.is_err() {
                svc.counters_mut().panics += 1;
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
    svc.counters_mut().deactivations += 1;
    if catch_unwind(AssertUnwindSafe(move || drop(state))).is_err() {
        svc.counters_mut().panics += 1;
    }
}

/// The entity tables of one shard, one per registered kind, indexed by
/// [`KindId`].
pub(crate) struct Tables {
    list: Vec<Box<dyn ErasedTable>>,
}

impl Tables {
    pub(crate) fn new(list: Vec<Box<dyn ErasedTable>>) -> Self {
        Tables { list }
    }

    /// Hands an addressed envelope to its entity on this shard (a move
    /// request to the shard's moves); when the entity is not live here and
    /// `activate` is false, hands it back.
    #[inline]
    pub(crate) fn deliver_here_if(&mut self, env: Disarmed, svc: &mut Services, activate: bool) {
        debug_assert!(env.status == 0 && !matches!(env.op, Op::Switch | Op::Rejoin));
        if env.op == Op::Migrate {
            let env = env.rearm();
            svc.moves_mut().request(PendingMove::of_request(&env));
            return;
        }
        let kind = env.kind as usize;
        debug_assert!(kind < self.list.len(), "envelope of unknown kind");
        self.list[kind].deliver(env, svc, activate)
    }

    /// Hands an addressed envelope to its entity on this shard, activating it
    /// if needed.
    #[inline]
    pub(crate) fn deliver_here(&mut self, env: Envelope, svc: &mut Services) {
        self.deliver_here_if(Disarmed::new(env), svc, true);
        debug_assert!(svc.take_missed().is_none(), "an activating delivery missed");
    }

    /// The table of `kind`.
    ///
    /// # Panics
    ///
    /// If `kind` is not registered.
    #[inline]
    pub(crate) fn get(&self, kind: KindId) -> &dyn ErasedTable {
        self.list[kind as usize].as_ref()
    }

    /// The table of `kind`.
    ///
    /// # Panics
    ///
    /// If `kind` is not registered.
    #[inline]
    pub(crate) fn get_mut(&mut self, kind: KindId) -> &mut dyn ErasedTable {
        self.list[kind as usize].as_mut()
    }

    /// The table of `kind`, if registered.
    #[inline]
    pub(crate) fn try_get(&self, kind: KindId) -> Option<&dyn ErasedTable> {
        self.list.get(kind as usize).map(|t| t.as_ref())
    }

    /// Every table, in kind order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &dyn ErasedTable> {
        self.list.iter().map(|t| t.as_ref())
    }

    /// Starts loading the index lines deliveries to `targets` will read
    /// first; runs of one kind go to their table in one call.
    #[inline]
    pub(crate) fn prefetch(&self, targets: impl IntoIterator<Item = EntityId>) {
        if !self.list.iter().any(|t| t.prefetch_pays()) {
            return;
        }
        let mut run = [0u64; PREFETCH_RUN_MAX];
        let (mut kind, mut len) = (0, 0);
        for id in targets {
            if len == PREFETCH_RUN_MAX || (len > 0 && id.kind != kind) {
                self.prefetch_run(kind, &run[..len]);
                len = 0;
            }
            kind = id.kind;
            run[len] = id.key;
            len += 1;
        }
        if len > 0 {
            self.prefetch_run(kind, &run[..len]);
        }
    }

    #[inline]
    fn prefetch_run(&self, kind: KindId, keys: &[u64]) {
        if let Some(table) = self.list.get(kind as usize) {
            table.prefetch(keys);
        }
    }

    /// Appends every dirty durable entity whose encoding changed, once.
    /// Returns the last refusal, if any (its entity is back at its last
    /// logged state).
    pub(crate) fn log_dirty(
        &mut self,
        svc: &mut Services,
        sink: &mut dyn LogSink,
    ) -> Option<LogRefusal> {
        let dirty = svc.gate_mut().take_dirty();
        let mut failed = None;
        for &id in &dirty {
            match self.list[id.kind as usize].log_dirty(id.key, sink) {
                Ok(Some(lsn)) => {
                    svc.counters_mut().records_logged += 1;
                    svc.gate_mut().note_appended(lsn, id);
                }
                Ok(None) => {}
                Err(refusal) => {
                    svc.counters_mut().records_failed += 1;
                    failed = Some(refusal);
                }
            }
        }
        svc.gate_mut().return_dirty(dirty);
        failed
    }

    /// Records below `lsn_end` are durable: their entities' durable copies
    /// advance.
    pub(crate) fn durable_through(&mut self, svc: &mut Services, lsn_end: u64) {
        while let Some(r) = svc.gate_mut().pop_inflight_below(lsn_end) {
            self.list[r.id.kind as usize].resolve(r.id.key, r.lsn, true);
        }
    }

    /// Records in `lsns` failed (those below are durable): their entities go
    /// back to their last durable state.
    pub(crate) fn failed(&mut self, svc: &mut Services, lsns: std::ops::Range<u64>) {
        while let Some(r) = svc.gate_mut().pop_inflight_below(lsns.end) {
            let ok = r.lsn < lsns.start;
            self.list[r.id.kind as usize].resolve(r.id.key, r.lsn, ok);
            if !ok {
                svc.counters_mut().records_failed += 1;
            }
        }
    }

    /// Puts a recovered entity in its table; a `foreign` one is logged again
    /// at the end of the first pass.
    pub(crate) fn restore(
        &mut self,
        svc: &mut Services,
        kind_hash: u64,
        key: u64,
        version: u64,
        bytes: &[u8],
        foreign: bool,
    ) -> Result<(), RestoreError> {
        let kind = svc
            .kinds()
            .id_of_hash(kind_hash)
            .ok_or(RestoreError::UnknownKind { kind_hash })?;
        self.list[kind as usize].restore(key, version, bytes, foreign)?;
        if foreign {
            svc.gate_mut().mark_dirty(EntityId::new(kind, key));
        }
        Ok(())
    }

    /// Remembers a recovered deletion; a `foreign` one is logged again here.
    pub(crate) fn restore_tombstone(
        &mut self,
        svc: &mut Services,
        kind_hash: u64,
        key: u64,
        version: u64,
        foreign: bool,
    ) {
        if let Some(kind) = svc.kinds().id_of_hash(kind_hash) {
            self.list[kind as usize].restore_tombstone(key, version);
            if foreign {
                svc.gate_mut().push_tombstone(Tombstone {
                    kind_hash,
                    key,
                    version,
                });
            }
        }
    }

    /// Runs every recovered entity's [`Entity::recovered`] hook.
    pub(crate) fn run_recovered(&mut self, svc: &mut Services) {
        for table in &mut self.list {
            table.run_recovered(svc);
        }
    }

    /// Appends every table's checkpoint records. Returns how many.
    pub(crate) fn checkpoint(&mut self, sink: &mut dyn LogSink) -> Result<usize, LogRefusal> {
        let mut n = 0;
        for table in &mut self.list {
            n += table.checkpoint(sink)?;
        }
        Ok(n)
    }
}

/// Runs the continuation waiting for `reply` and sends its message to the
/// asker, through its home (it may have moved since it asked). A panicking
/// continuation is counted and its message lost, as a handler's would be.
pub(crate) fn resume(svc: &mut Services, reply: Envelope) {
    let Some(c) = svc.take_continuation(reply.token) else {
        debug_assert!(false, "reply for a continuation that does not exist");
        return;
    };
    let result = match reply.error_status() {
        Some(err) => Err(err),
        None => Ok(reply),
    };
    let (asker, call) = (c.asker, c.call);
    match catch_unwind(AssertUnwindSafe(move || call(result, asker))) {
        Ok(msg) => svc.send_home(msg),
        Err(_) => svc.counters_mut().panics += 1,
    }
}
