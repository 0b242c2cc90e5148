//! Layer 1, data: what one durable entity remembers of its log records — the
//! one durability notion of the crate. A state is *logged* once appended,
//! *durable* once the log says so; the entity's *durable copy* is the
//! encoding of its last durable record, which a failure or a panic goes
//! back to.

/// One appended record of an entity not yet resolved.
pub(crate) struct PendingRecord {
    /// Its log sequence number.
    pub(crate) lsn: u64,
    /// The encoding it carries.
    pub(crate) bytes: Vec<u8>,
}

/// What a durable entity remembers of its log.
#[derive(Default)]
pub(crate) struct LogState {
    /// Version of the last record appended (0: never logged).
    pub(crate) version: u64,
    /// Encoding of the last durable record, if any.
    pub(crate) durable_copy: Option<Vec<u8>>,
    /// Records appended but not yet resolved, oldest first. Usually empty or
    /// one; a record stays until it is durable or failed, so the durable
    /// copy is exact whichever of them fails.
    pub(crate) pending: Vec<PendingRecord>,
    /// Marked for logging at the end of the pass.
    pub(crate) dirty: bool,
    /// Log it even if unchanged: it was recovered from another shard's log
    /// (or moved here), and this shard must hold its record (with a higher
    /// version).
    pub(crate) relog: bool,
}

impl LogState {
    /// The encoding of the last logged state, durable or not.
    pub(crate) fn logged(&self) -> Option<&[u8]> {
        match self.pending.last() {
            Some(r) => Some(&r.bytes),
            None => self.durable_copy.as_deref(),
        }
    }

    /// Record `lsn` is durable: it becomes the durable copy, older pending
    /// records are resolved with it.
    pub(crate) fn durable(&mut self, lsn: u64) {
        if let Some(i) = self.pending.iter().position(|r| r.lsn == lsn) {
            let r = self.pending.drain(..=i).next_back().expect("i is in range");
            self.durable_copy = Some(r.bytes);
        }
    }

    /// Record `lsn` failed (and, the log failing in order, every later one).
    pub(crate) fn failed(&mut self, lsn: u64) {
        self.pending.retain(|r| r.lsn < lsn);
    }
}
