//! Layer 1, data: the interface through which a shard appends to its log (the
//! runtime implements it with the io_uring writer; tests with a vector), and
//! the log's refusal.

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
