//! Durable kinds, the single-core half: how states are encoded, what each
//! durable entity remembers about its log records, and the interface through
//! which a shard appends to its log (the runtime implements it with the
//! io_uring writer; tests with a vector).
//!
//! The rules (contract point 6):
//! - after a handler of a durable kind returns, the entity is marked dirty;
//!   at the end of the runtime's pass every dirty entity whose encoding
//!   changed is appended once (changes within a pass coalesce);
//! - everything a durable handler emits (replies, tells, asks — to other
//!   shards, clients, or entities of its own shard) is held back until every
//!   record appended so far is durable (the output gate);
//! - a failed record (full disk, failed fsync) restores its entity to its last
//!   durable state and fails the held replies; held tells are dropped;
//! - a panicking durable handler restores its entity to its last logged state;
//! - `Ctx::stop` on a durable entity deletes it (a tombstone is logged).

use crate::entity::Entity;

/// How a durable kind's state becomes bytes and back. Implement it for states
/// that are not plain old data; `bytemuck::Pod` states need nothing (register
/// them with the engine's `register_durable_pod`).
pub trait DurableState: Entity {
    /// Appends the encoded state to `out` (which is empty).
    fn encode(&self, out: &mut Vec<u8>);

    /// Decodes a state encoded by [`DurableState::encode`] of entity `key`.
    ///
    /// # Errors
    ///
    /// A message saying why the bytes are not a valid state; recovery stops
    /// with an error naming the entity.
    fn decode(key: u64, bytes: &[u8]) -> Result<Self, String>;
}

/// Encode and decode functions of one durable kind.
pub struct Codec<E> {
    /// Appends the state's encoding.
    pub encode: fn(&E, &mut Vec<u8>),
    /// Rebuilds a state.
    pub decode: fn(u64, &[u8]) -> Result<E, String>,
}

impl<E> Clone for Codec<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for Codec<E> {}

impl<E: DurableState> Codec<E> {
    /// The codec of a [`DurableState`].
    pub fn of_state() -> Self {
        Codec {
            encode: |state, out| state.encode(out),
            decode: |key, bytes| E::decode(key, bytes),
        }
    }
}

impl<E: Entity + bytemuck::Pod> Codec<E> {
    /// The codec of a plain-old-data state: its bytes.
    pub fn of_pod() -> Self {
        Codec {
            encode: |state, out| out.extend_from_slice(bytemuck::bytes_of(state)),
            decode: |_, bytes| {
                bytemuck::try_pod_read_unaligned(bytes).map_err(|e| {
                    format!(
                        "{} bytes are not a {}: {e}",
                        bytes.len(),
                        std::any::type_name::<E>()
                    )
                })
            },
        }
    }
}

/// What a durable entity remembers of its log.
#[derive(Default)]
pub(crate) struct DurableMeta {
    /// Version of the last record appended (0: never logged).
    pub(crate) version: u64,
    /// Encoding of the last durable record, if any.
    pub(crate) durable: Option<Vec<u8>>,
    /// Records appended but not yet resolved, oldest first: (LSN, encoding).
    /// Usually empty or one; a record stays until it is durable or failed, so
    /// the durable copy is exact whichever of them fails.
    pub(crate) pending: Vec<(u64, Vec<u8>)>,
    /// Marked for logging at the end of the pass.
    pub(crate) dirty: bool,
    /// Log it even if unchanged: it was recovered from another shard's log,
    /// and its new home must hold its record (with a higher version).
    pub(crate) relog: bool,
}

impl DurableMeta {
    /// The encoding of the last logged state, durable or not.
    pub(crate) fn logged(&self) -> Option<&[u8]> {
        match self.pending.last() {
            Some((_, bytes)) => Some(bytes),
            None => self.durable.as_deref(),
        }
    }

    /// Record `lsn` is durable: it becomes the durable copy, older pending
    /// records are resolved with it.
    pub(crate) fn durable(&mut self, lsn: u64) {
        if let Some(i) = self.pending.iter().position(|(l, _)| *l == lsn) {
            let (_, bytes) = self.pending.drain(..=i).next_back().expect("i is in range");
            self.durable = Some(bytes);
        }
    }

    /// Record `lsn` failed (and, the log failing in order, every later one).
    pub(crate) fn failed(&mut self, lsn: u64) {
        self.pending.retain(|(l, _)| *l < lsn);
    }
}

/// Why the log did not take a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogRefusal {
    /// The log is poisoned (a failed fsync) or the disk is full; the change is
    /// lost and its entity goes back to its last durable state.
    Failed {
        /// Whether a later change may succeed (a full disk may drain).
        retryable: bool,
    },
}

/// Where a shard appends records: the runtime's log writer.
pub trait LogSink {
    /// Appends a state record; returns its LSN.
    ///
    /// # Errors
    ///
    /// [`LogRefusal`] when the record cannot be logged.
    fn append_state(
        &mut self,
        kind_hash: u64,
        key: u64,
        version: u64,
        payload: &[u8],
    ) -> Result<u64, LogRefusal>;

    /// Appends a tombstone; returns its LSN.
    ///
    /// # Errors
    ///
    /// As [`LogSink::append_state`].
    fn append_tombstone(
        &mut self,
        kind_hash: u64,
        key: u64,
        version: u64,
    ) -> Result<u64, LogRefusal>;

    /// The highest LSN appended that is not yet resolved (durable or failed),
    /// if any. Outputs of durable handlers wait for it.
    fn unresolved_max(&self) -> Option<u64>;
}
