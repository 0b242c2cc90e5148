//! The per-shard durable log.
//!
//! Each shard owns one append-only log in `DATA_DIR/shard-NNN/`, a sequence of
//! fixed-size, preallocated segments `SEQUENCE.log`. The record format and the
//! recovery fold are sans-I/O and live in `percore-shards`
//! ([`percore_shards::driver::record`], [`percore_shards::driver::fold`]); this module does the
//! I/O:
//!
//! - [`LogWriter`]: group commit from the shard thread, non-blocking, through a
//!   [`Storage`] — [`UringStorage`] (one io_uring per writer) in production,
//!   [`SimStorage`] (in memory, with torn and short writes, fsync errors and
//!   `ENOSPC`) in tests. It reports durable LSNs as [`LogEvent`]s; a failed fsync
//!   poisons the log; a full disk is a retryable error. It can wake a parked shard
//!   thread by writing a count to its doorbell (an eventfd) after each flush.
//! - [`recover_shard`]: maps a shard's segments with memmap2 (up to the end of
//!   their data: the preallocated remainder is neither mapped nor scanned),
//!   checks every record, discards a torn tail and reports corruption before the
//!   tail as an error naming the file and byte offset. Records are handed out in
//!   log order, borrowing from the mappings.
//! - Checkpoints ([`LogWriter::begin_checkpoint`]) rewrite the live entities to a
//!   fresh segment and delete what it supersedes, in a crash-safe order.
//!
//! Recovery of a data directory: recover every shard directory (whatever the
//! current shard count), [`Fold::offer`] every record, then hand each live entity
//! to the shard that owns its key now ([`Fold::into_owned_by`]); then drop the
//! recovered logs and open one writer per shard with [`LogWriter::open`] and the
//! shard's [`RecoveredShard::resume`] (a shard without an old log starts from
//! [`LogResume::default`]). A writer continues the last segment when its records
//! end cleanly, so restarts do not leave segments behind.
//!
//! ```
//! use percore::log::{LogConfig, LogEvent, LogRecord, LogResume, LogWriter, SimStorage};
//!
//! let dir = std::env::temp_dir().join("percore-doc-log/shard-000");
//! let config = LogConfig { segment_len_bytes: 64 << 10, ..LogConfig::default() };
//! let mut log = LogWriter::open(SimStorage::new(), &dir, config, &LogResume::default())?;
//! let lsn = log.append(&LogRecord::State { kind: 1, key: 7, version: 1, payload: b"hi" })?;
//! let mut events = Vec::new();
//! log.sync_all(&mut events)?;
//! assert!(events.iter().any(|e| matches!(e, LogEvent::Durable { lsns } if lsns.contains(&lsn))));
//! assert!(log.durable_watermark() > lsn);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod reader;
mod segment;
mod sim;
mod storage;
mod uring;
mod writer;

pub use error::{AppendError, LogError};
pub use reader::{recover_data_dir, recover_shard, RecoveredShard, TornTail};
pub use segment::{
    list_segments, list_shard_dirs, parse_segment_name, segment_path, shard_dir, SEGMENT_SEQ_DIGITS,
};
pub use sim::{CrashMode, FaultRates, SimFault, SimImage, SimOpKind, SimStorage};
pub use storage::{Completion, FileId, Link, Op, Storage, Submission};
pub use uring::{UringStorage, URING_ENTRIES};
pub use writer::{
    Durability, LogConfig, LogEvent, LogPosition, LogRecord, LogResume, LogWriter,
    BATCH_LEN_BYTES_DEFAULT, BATCH_LEN_BYTES_MAX, SEGMENT_LEN_BYTES_DEFAULT, SEGMENT_LEN_BYTES_MAX,
    SEGMENT_LEN_BYTES_MIN, STAGED_LEN_BYTES_DEFAULT, WRITE_STALLS_MAX,
};

pub use percore_shards::driver::fold::{Fold, Latest, Offered, Recovered, StoredId};
pub use percore_shards::driver::record::{
    kind_hash, record_len, RecordHeader, RecordType, RecordView, RECORD_ALIGN, RECORD_HEADER_LEN,
    RECORD_PAYLOAD_LEN_MAX,
};
