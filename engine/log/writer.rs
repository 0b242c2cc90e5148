//! The group-commit writer of one shard's log.
//!
//! Used from one thread, the shard's, and never blocks it (except
//! [`LogWriter::sync_all`], meant for shutdown and tests):
//!
//! - [`append`](LogWriter::append) encodes a record into the batch being staged
//!   and returns its log sequence number (LSN). The record's place in the log
//!   (segment, offset) is fixed here.
//! - [`poll`](LogWriter::poll) reaps finished operations and, when no flush is in
//!   flight, submits the staged batch as the next flush. So while one flush is in
//!   flight the next batch fills: group commit, at most one flush in flight.
//! - A flush is one chain on the ring: `write` linked to `fdatasync`
//!   (`Durability::Synced`), then, if a wake fd is configured, a hard-linked
//!   one-byte write to it so a parked shard thread wakes when the flush is done.
//! - `poll` reports, as [`LogEvent`]s, which LSNs became durable and which failed;
//!   the engine releases or fails the replies it holds for them.
//!
//! # Why write + `fdatasync` and not `O_DIRECT|O_DSYNC`
//!
//! Records are small and variable-sized; `O_DIRECT` would need every write padded
//! to the logical block size (4 KiB), either wasting most of each block at low
//! load or rewriting the partial last block of every flush, which re-exposes
//! acknowledged records in that block to a torn write. A buffered write plus one
//! `fdatasync` per flush costs the same single device flush, keeps records packed
//! and never rewrites acknowledged bytes. Preallocated segments make
//! `fdatasync` cheap: there is no size or extent change to journal in the steady
//! state beyond converting unwritten extents.
//!
//! # Links
//!
//! Without a wake fd the write is soft-linked (`IOSQE_IO_LINK`) to the
//! `fdatasync`: a short write cancels the sync and the writer resubmits the rest.
//! With a wake fd every link is hard (`IOSQE_IO_HARDLINK`): a short or failed
//! write would otherwise cancel the rest of the chain, wake-up included, and a
//! parked shard would never learn that its flush needs resuming. The extra
//! `fdatasync` after a short write is harmless; its result is still checked.
//!
//! # Failures
//!
//! - A failed `fdatasync` (or directory sync, or a failed write that is not
//!   `ENOSPC`) *poisons* the log: every LSN not yet durable is reported failed,
//!   later appends return [`AppendError::Poisoned`], nothing is ever retried and
//!   then acknowledged (fsyncgate).
//! - `ENOSPC` is retryable: the LSNs not yet durable are reported failed with
//!   [`LogError::NoSpace`]; after a failed write the segment is abandoned (its
//!   tail may hold part of the failed flush) and writing continues in a fresh
//!   segment that starts with a [`RecordType::Resume`] marker. A failed change may
//!   or may not survive a crash (as with any failed write); an acknowledged one
//!   always does. Versions must not be reused after a failure.
//!
//! # Segments
//!
//! Segments are `SHARD_DIR/SEQUENCE.log`, created with `O_EXCL`, preallocated
//! with `fallocate` and made durable by syncing the directory, all through the
//! ring; the writer prepares the next segment ahead of time so rotation does not
//! wait for it.
//!
//! A new writer continues where recovery says it may
//! ([`LogResume::reuse_from`]): when the last segment's records end cleanly, with
//! nothing but zeroes after them, it appends right there — a buffered write
//! rewrites no acknowledged byte, and what follows a clean end is never read as
//! part of the log, so this is the same as one writer that never stopped. Otherwise
//! (a torn tail, or no log yet) it starts a segment with a `Resume` marker, so the
//! torn tail is recognised as such later; that segment is the first of those the
//! last writer left empty (prepared ahead) when there is one, a new one otherwise.
//! So restarts do not leave a mostly empty segment behind each time.
//!
//! # Checkpoints
//!
//! [`begin_checkpoint`](LogWriter::begin_checkpoint) rotates to a fresh segment
//! `S` and stages a `CheckpointBegin` marker; the engine then appends every live
//! durable entity (normal traffic may interleave); and
//! [`finish_checkpoint`](LogWriter::finish_checkpoint) stages a `CheckpointEnd`
//! marker naming `S`. Crash safety comes from the order:
//!
//! 1. the checkpoint records go to segments `>= S`, whose names were made durable
//!    when they were prepared;
//! 2. they become durable through ordinary flushes, `CheckpointEnd` last;
//! 3. only once `CheckpointEnd` is durable are the segments below `S` unlinked;
//! 4. then the directory is synced, and [`LogEvent::Checkpointed`] reported.
//!
//! A crash before 3 leaves the old segments and a complete or partial checkpoint:
//! the fold (highest version wins) gives the same result either way. A crash
//! during 3–4 leaves some old segments; recovery sees the complete checkpoint,
//! skips them, and the next writer deletes them. Entities deleted since their
//! state was logged must be checkpointed as tombstones as long as another shard's
//! log may hold an older state of them.

use std::collections::{BTreeSet, VecDeque};
use std::ops::Range;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use percore_shards::driver::record::{
    encode, record_len, RecordFields, RecordType, RECORD_ALIGN, RECORD_HEADER_LEN,
    RECORD_PAYLOAD_LEN_MAX,
};

use super::segment::segment_path;
use super::storage::{Completion, FileId, Link, Op, Storage, Submission};
use super::{AppendError, LogError};

/// Default segment size: 64 MiB.
pub const SEGMENT_LEN_BYTES_DEFAULT: u64 = 64 << 20;
/// Smallest segment size accepted: 4 KiB.
pub const SEGMENT_LEN_BYTES_MIN: u64 = 4 << 10;
/// Largest segment size accepted: 1 TiB.
pub const SEGMENT_LEN_BYTES_MAX: u64 = 1 << 40;
/// Default bytes per flush: 1 MiB.
pub const BATCH_LEN_BYTES_DEFAULT: usize = 1 << 20;
/// Largest bytes per flush accepted: 256 MiB (one write call must take it).
pub const BATCH_LEN_BYTES_MAX: usize = 256 << 20;
/// Default bytes staged before appends push back: 16 MiB.
pub const STAGED_LEN_BYTES_DEFAULT: usize = 16 << 20;
/// Consecutive zero-byte write completions before the log gives up.
pub const WRITE_STALLS_MAX: u32 = 8;
/// Spare batch buffers kept for reuse.
const FREE_BUFFERS_MAX: usize = 4;

const _: () = assert!(SEGMENT_LEN_BYTES_MIN as usize >= 2 * RECORD_HEADER_LEN);
const _: () = assert!(BATCH_LEN_BYTES_MAX <= 0x7fff_f000);

/// Tag kinds, in the top byte of a [`Submission::tag`].
const TAG_WRITE: u64 = 1 << 56;
const TAG_SYNC: u64 = 2 << 56;
const TAG_WAKE: u64 = 3 << 56;
const TAG_PREP_ALLOC: u64 = 4 << 56;
const TAG_PREP_SYNC: u64 = 5 << 56;
const TAG_DIR_SYNC: u64 = 6 << 56;
const TAG_KIND: u64 = 0xff << 56;

/// How far a durable change must get before it counts as durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// No log: nothing is written; every append is reported durable at the next
    /// poll. Nothing survives a restart.
    Off,
    /// Written to the kernel (page cache) without `fdatasync`: survives a crash
    /// of the process, not of the machine. After a power loss recovery may find
    /// damage anywhere in the unsynced part and report it as corruption.
    Buffered,
    /// Written and `fdatasync`ed before it counts: survives power loss.
    #[default]
    Synced,
}

/// Configuration of one shard's log writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Size of each segment file, preallocated. Default
    /// [`SEGMENT_LEN_BYTES_DEFAULT`]; valid
    /// [`SEGMENT_LEN_BYTES_MIN`]..=[`SEGMENT_LEN_BYTES_MAX`], a multiple of 4096.
    pub segment_len_bytes: u64,
    /// Bytes after which a staged batch is closed and the next one started (a
    /// larger record gets a batch of its own). Default
    /// [`BATCH_LEN_BYTES_DEFAULT`]; valid 4096..=[`BATCH_LEN_BYTES_MAX`].
    pub batch_len_bytes_max: usize,
    /// Bytes staged (not yet submitted) at which appends return
    /// [`AppendError::Full`]. Default [`STAGED_LEN_BYTES_DEFAULT`]; valid
    /// `batch_len_bytes_max..`.
    pub staged_len_bytes_max: usize,
    /// Default [`Durability::Synced`].
    pub durability: Durability,
    /// An eventfd (the shard's doorbell) the writer adds 1 to (an 8-byte
    /// write) after each flush, so a parked shard thread wakes up. The caller owns it and
    /// keeps it open while the writer lives; it should be non-blocking. Default
    /// `None`.
    pub wake_fd: Option<RawFd>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_len_bytes: SEGMENT_LEN_BYTES_DEFAULT,
            batch_len_bytes_max: BATCH_LEN_BYTES_DEFAULT,
            staged_len_bytes_max: STAGED_LEN_BYTES_DEFAULT,
            durability: Durability::Synced,
            wake_fd: None,
        }
    }
}

impl LogConfig {
    /// Checks every field against its valid range.
    ///
    /// # Errors
    ///
    /// [`LogError::Config`] naming the first bad field.
    pub fn validate(&self) -> Result<(), LogError> {
        let bad = |field, value: u64, valid| {
            Err(LogError::Config {
                field,
                value,
                valid,
            })
        };
        if !(SEGMENT_LEN_BYTES_MIN..=SEGMENT_LEN_BYTES_MAX).contains(&self.segment_len_bytes)
            || self.segment_len_bytes & 4095 != 0
        {
            return bad(
                "segment_len_bytes",
                self.segment_len_bytes,
                "4 KiB ..= 1 TiB, a multiple of 4096",
            );
        }
        if !(4096..=BATCH_LEN_BYTES_MAX).contains(&self.batch_len_bytes_max) {
            return bad(
                "batch_len_bytes_max",
                self.batch_len_bytes_max as u64,
                "4096 ..= 256 MiB",
            );
        }
        if self.staged_len_bytes_max < self.batch_len_bytes_max {
            return bad(
                "staged_len_bytes_max",
                self.staged_len_bytes_max as u64,
                "at least batch_len_bytes_max",
            );
        }
        Ok(())
    }
}

/// Where a writer continues an existing log; from
/// [`RecoveredShard::resume`](super::RecoveredShard::resume), or
/// [`LogResume::default`] for a new one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogResume {
    /// First LSN the writer assigns (above every LSN in the log).
    pub next_lsn: u64,
    /// Sequence of the first segment the writer creates (above every existing one).
    pub next_segment_seq: u64,
    /// Sequences of the segments that exist (a later checkpoint deletes them).
    pub segments: Vec<u64>,
    /// Sequences of segments a completed checkpoint superseded but a crash left
    /// behind; the writer deletes them when it opens.
    pub superseded: Vec<u64>,
    /// Where the writer continues in existing segments rather than in a new
    /// segment `next_segment_seq`: the end of the last segment's records when
    /// only zeroes follow them (the writer appends there), or else the start of
    /// the first of the trailing segments that hold nothing at all (it starts
    /// there with a `Resume` marker). Every existing segment from there on holds
    /// only zeroes past this position and is written again rather than left
    /// behind. `None`: start a new segment.
    pub reuse_from: Option<LogPosition>,
    /// Segment bytes the log has taken up since its last completed checkpoint
    /// (since its first segment without one) up to where the writer continues:
    /// records, and the unwritten rest of every segment that will not be written
    /// again. The engine counts it towards its next checkpoint, so restarts with
    /// a little traffic each still checkpoint and the segments left behind by
    /// crashes are reclaimed.
    pub len_bytes_since_checkpoint: u64,
}

/// A position in a shard's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPosition {
    /// Segment sequence.
    pub segment_seq: u64,
    /// Byte offset in the segment, a multiple of
    /// [`RECORD_ALIGN`](percore_shards::driver::record::RECORD_ALIGN).
    pub offset: u64,
}

/// A change to log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogRecord<'a> {
    /// The full new state of an entity.
    State {
        /// Kind hash ([`kind_hash`](percore_shards::driver::record::kind_hash)).
        kind: u64,
        /// Key.
        key: u64,
        /// Version, higher than any earlier one of this entity.
        version: u64,
        /// The encoded state.
        payload: &'a [u8],
    },
    /// The entity was deleted.
    Tombstone {
        /// Kind hash.
        kind: u64,
        /// Key.
        key: u64,
        /// Version, higher than any earlier one of this entity.
        version: u64,
    },
}

/// Progress reported by [`LogWriter::poll`], in LSN order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogEvent {
    /// These LSNs are durable (per the configured [`Durability`]).
    Durable {
        /// The LSNs.
        lsns: Range<u64>,
    },
    /// These LSNs failed and will never be durable. If `error.is_retryable()` the
    /// changes may be retried (as new appends); otherwise the log is poisoned.
    Failed {
        /// The LSNs.
        lsns: Range<u64>,
        /// Why.
        error: LogError,
    },
    /// A checkpoint is complete: segments below `first_segment_seq` were deleted
    /// and the deletion is durable.
    Checkpointed {
        /// First segment of the checkpoint.
        first_segment_seq: u64,
        /// Segment files deleted.
        segments_deleted: usize,
    },
}

/// Where the next record goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    seq: u64,
    offset: u64,
}

/// A batch of encoded records, written by one flush at `offset` of segment `seq`.
#[derive(Debug)]
struct Batch {
    buf: Vec<u8>,
    seq: u64,
    offset: u64,
    lsns: Range<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SegState {
    /// Not created yet.
    Unprepared,
    /// Created; `fallocate` and the directory sync in flight.
    Preparing {
        alloc: Option<i32>,
        sync: Option<i32>,
    },
    /// Preallocated and its name durable.
    Ready,
    /// Preparation failed with this errno; the file was removed.
    Failed { errno: i32 },
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    file: Option<FileId>,
    state: SegState,
}

/// The flush in flight.
#[derive(Debug)]
struct Flush {
    seq: u64,
    file: FileId,
    offset: u64,
    lsns: Range<u64>,
    /// The buffer, when no write holds it.
    buf: Option<Vec<u8>>,
    len: usize,
    /// Bytes of `buf` known written.
    written: usize,
    write_result: Option<i32>,
    sync_result: Option<i32>,
    need_sync: bool,
    stalls: u32,
    /// Its LSNs were already reported failed (the log was poisoned meanwhile).
    abandoned: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Checkpoint {
    Idle,
    Open { first_seq: u64 },
    Ending { first_seq: u64, end_lsn: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Deletion {
    first_seq: u64,
    deleted: usize,
}

/// The group-commit writer of one shard's log; see the module docs.
///
/// Owned and used by one thread (the shard's); it is `Send` if its storage is,
/// so it can be built elsewhere and moved there.
pub struct LogWriter<S: Storage> {
    storage: S,
    dir: PathBuf,
    config: LogConfig,
    dir_file: Option<FileId>,
    /// Next LSN to assign.
    next_lsn: u64,
    /// Every LSN below is resolved: reported durable or failed.
    watermark: u64,
    cursor: Cursor,
    /// Batches not yet submitted, oldest first; contiguous in the log, and the
    /// last one ends at `cursor` if it is in the cursor's segment.
    staged: VecDeque<Batch>,
    staged_len_bytes: usize,
    free_buffers: Vec<Vec<u8>>,
    /// Segments the writer has open or will open, ascending and contiguous.
    segments: VecDeque<Segment>,
    /// Every segment sequence that may exist on disk.
    known_segments: BTreeSet<u64>,
    /// Existing segments that hold only zeroes and are opened, not created, when
    /// the writer gets to them (from [`LogResume::reuse_from`]).
    reusable: BTreeSet<u64>,
    flush: Option<Flush>,
    checkpoint: Checkpoint,
    deletion: Option<Deletion>,
    /// A `Resume` marker must be durable at the head of the writer's segment
    /// before the log can be trusted to have no unexplained torn tail.
    resume_lsn: Option<u64>,
    poisoned: Option<LogError>,
    warned_no_fallocate: bool,
    chain: Vec<Submission>,
    completions: Vec<Completion>,
    /// Events not yet handed to the caller of `poll`.
    events: Vec<LogEvent>,
}

impl<S: Storage> std::fmt::Debug for LogWriter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("dir", &self.dir)
            .field("next_lsn", &self.next_lsn)
            .field("watermark", &self.watermark)
            .field("staged_len_bytes", &self.staged_len_bytes)
            .field("flush_in_flight", &self.flush.is_some())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> LogWriter<S> {
    /// Opens the writer of the log in `shard_dir` (created if missing), continuing
    /// after `resume`: appends to the last segment, or stages a `Resume` marker at
    /// the head of an empty segment (see [`LogResume::reuse_from`]); deletes the
    /// segments `resume` says are superseded.
    ///
    /// When `resume` comes from recovery, drop the
    /// [`RecoveredShard`](super::RecoveredShard) first: the writer may append to a
    /// segment it maps.
    ///
    /// # Errors
    ///
    /// [`LogError::Config`] for a bad configuration; [`LogError::Io`] if the
    /// directory cannot be created or opened.
    pub fn open(
        mut storage: S,
        shard_dir: &Path,
        config: LogConfig,
        resume: &LogResume,
    ) -> Result<Self, LogError> {
        config.validate()?;
        let logging = config.durability != Durability::Off;
        let dir_file = if logging {
            storage
                .create_dir_all(shard_dir)
                .map_err(|e| LogError::io(shard_dir, "create_dir_all", &e))?;
            Some(
                storage
                    .open_dir(shard_dir)
                    .map_err(|e| LogError::io(shard_dir, "open", &e))?,
            )
        } else {
            None
        };
        let reuse_from = resume
            .reuse_from
            .filter(|at| at.offset % RECORD_ALIGN as u64 == 0);
        let start = reuse_from.unwrap_or(LogPosition {
            segment_seq: resume.next_segment_seq,
            offset: 0,
        });
        let mut writer = Self {
            storage,
            dir: shard_dir.to_path_buf(),
            config,
            dir_file,
            next_lsn: resume.next_lsn,
            watermark: resume.next_lsn,
            cursor: Cursor {
                seq: start.segment_seq,
                offset: start.offset,
            },
            staged: VecDeque::new(),
            staged_len_bytes: 0,
            free_buffers: Vec::new(),
            segments: VecDeque::new(),
            known_segments: resume.segments.iter().copied().collect(),
            reusable: BTreeSet::new(),
            flush: None,
            checkpoint: Checkpoint::Idle,
            deletion: None,
            resume_lsn: None,
            poisoned: None,
            warned_no_fallocate: false,
            chain: Vec::with_capacity(4),
            completions: Vec::with_capacity(16),
            events: Vec::with_capacity(8),
        };
        if logging {
            if let Some(at) = reuse_from {
                writer.reusable = (resume.segments.iter().copied())
                    .filter(|&seq| seq >= at.segment_seq)
                    .collect();
                if at.offset > 0 {
                    writer.continue_segment(at);
                }
            }
            writer.ensure_segment(writer.cursor.seq);
            if writer.cursor.offset == 0 {
                writer.stage_resume();
            }
            if !resume.superseded.is_empty() {
                let first_seq = resume.next_segment_seq.min(
                    resume
                        .segments
                        .iter()
                        .copied()
                        .filter(|s| !resume.superseded.contains(s))
                        .min()
                        .unwrap_or(u64::MAX),
                );
                writer.start_deletion(&resume.superseded, first_seq);
            }
            writer.start_prep();
        }
        Ok(writer)
    }

    /// Stages a record for the next flush and returns its LSN. Never blocks and
    /// makes no system call.
    ///
    /// # Errors
    ///
    /// [`AppendError::Full`] when `staged_len_bytes_max` is reached (poll, then
    /// retry); [`AppendError::TooLarge`] for a record that cannot fit a segment;
    /// [`AppendError::Poisoned`] once the log is poisoned.
    pub fn append(&mut self, record: &LogRecord<'_>) -> Result<u64, AppendError> {
        if let Some(error) = &self.poisoned {
            return Err(AppendError::Poisoned(error.clone()));
        }
        let (record_type, kind, key, version, payload) = match *record {
            LogRecord::State {
                kind,
                key,
                version,
                payload,
            } => (RecordType::State, kind, key, version, payload),
            LogRecord::Tombstone { kind, key, version } => {
                (RecordType::Tombstone, kind, key, version, &[][..])
            }
        };
        let len_bytes_max = self.record_len_bytes_max();
        if payload.len() > RECORD_PAYLOAD_LEN_MAX || record_len(payload.len()) > len_bytes_max {
            return Err(AppendError::TooLarge {
                len_bytes: RECORD_HEADER_LEN.saturating_add(payload.len()),
                len_bytes_max,
            });
        }
        if self.config.durability == Durability::Off {
            let lsn = self.next_lsn;
            self.next_lsn += 1;
            return Ok(lsn);
        }
        let len = record_len(payload.len());
        if !self.staged.is_empty() && self.staged_len_bytes + len > self.config.staged_len_bytes_max
        {
            return Err(AppendError::Full {
                staged_len_bytes: self.staged_len_bytes,
            });
        }
        Ok(self.stage(record_type, kind, key, version, payload))
    }

    /// Reaps finished operations, reports progress into `events`, submits the next
    /// flush if none is in flight, and prepares segments ahead. Never blocks.
    pub fn poll(&mut self, events: &mut Vec<LogEvent>) {
        self.reap();
        if self.poisoned.is_none() {
            if self.config.durability == Durability::Off {
                if self.watermark < self.next_lsn {
                    self.events.push(LogEvent::Durable {
                        lsns: self.watermark..self.next_lsn,
                    });
                    self.watermark = self.next_lsn;
                }
            } else {
                self.start_flush();
                self.start_prep();
                self.maybe_finish_checkpoint();
                self.close_idle_segments();
            }
        }
        events.append(&mut self.events);
    }

    /// Polls, waiting for the storage in between, until everything appended so far
    /// is resolved (durable or failed) and no operation is in flight. Blocks: for
    /// shutdown, checkpoints at start, and tests — not for the shard loop.
    ///
    /// # Errors
    ///
    /// The poisoning error if the log is or becomes poisoned; [`LogError::Io`] if
    /// waiting on the storage fails.
    pub fn sync_all(&mut self, events: &mut Vec<LogEvent>) -> Result<(), LogError> {
        // Each round either finds work done or waits for a completion; a round
        // with nothing in flight and nothing done would spin, so it is bounded.
        let mut idle_rounds = 0;
        loop {
            self.poll(events);
            if let Some(error) = &self.poisoned {
                return Err(error.clone());
            }
            if self.is_idle() {
                return Ok(());
            }
            if self.storage.in_flight() == 0 {
                idle_rounds += 1;
                debug_assert!(idle_rounds < 4, "sync_all made no progress: {self:?}");
                if idle_rounds >= 4 {
                    return Err(LogError::Io {
                        path: self.dir.clone(),
                        offset: None,
                        op: "sync_all (no progress)",
                        errno: libc::EIO,
                    });
                }
            } else {
                idle_rounds = 0;
            }
            self.storage
                .wait()
                .map_err(|e| LogError::io(&self.dir, "io_uring wait", &e))?;
        }
    }

    /// Starts a checkpoint: rotates to a fresh segment and stages its
    /// `CheckpointBegin` marker. Append every live durable entity next, then call
    /// [`finish_checkpoint`](Self::finish_checkpoint). Returns the first segment
    /// of the checkpoint.
    ///
    /// # Errors
    ///
    /// [`AppendError::CheckpointInProgress`], [`AppendError::DurabilityOff`],
    /// [`AppendError::Poisoned`].
    pub fn begin_checkpoint(&mut self) -> Result<u64, AppendError> {
        if let Some(error) = &self.poisoned {
            return Err(AppendError::Poisoned(error.clone()));
        }
        if self.config.durability == Durability::Off {
            return Err(AppendError::DurabilityOff);
        }
        if self.checkpoint != Checkpoint::Idle || self.deletion.is_some() {
            return Err(AppendError::CheckpointInProgress);
        }
        if self.cursor.offset > 0 {
            self.rotate();
        }
        let first_seq = self.cursor.seq;
        self.stage(RecordType::CheckpointBegin, 0, first_seq, 0, &[]);
        self.checkpoint = Checkpoint::Open { first_seq };
        Ok(first_seq)
    }

    /// Ends the open checkpoint: stages its `CheckpointEnd` marker and returns its
    /// LSN. Once it is durable, the superseded segments are deleted and
    /// [`LogEvent::Checkpointed`] reported. A failure of any record of the
    /// checkpoint before that aborts it (the engine may begin again).
    ///
    /// # Errors
    ///
    /// [`AppendError::NoCheckpoint`] without an open checkpoint;
    /// [`AppendError::Poisoned`].
    pub fn finish_checkpoint(&mut self) -> Result<u64, AppendError> {
        if let Some(error) = &self.poisoned {
            return Err(AppendError::Poisoned(error.clone()));
        }
        let Checkpoint::Open { first_seq } = self.checkpoint else {
            return Err(AppendError::NoCheckpoint);
        };
        let end_lsn = self.stage(RecordType::CheckpointEnd, 0, first_seq, 0, &[]);
        self.checkpoint = Checkpoint::Ending { first_seq, end_lsn };
        Ok(end_lsn)
    }

    /// Every LSN below this is resolved: durable unless reported in a
    /// [`LogEvent::Failed`].
    pub fn durable_watermark(&self) -> u64 {
        self.watermark
    }

    /// The LSN the next append gets.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// The error that poisoned the log, if any.
    pub fn poisoned(&self) -> Option<&LogError> {
        self.poisoned.as_ref()
    }

    /// Bytes staged and not yet submitted.
    pub fn staged_len_bytes(&self) -> usize {
        self.staged_len_bytes
    }

    /// Whether nothing is staged, in flight or being prepared or deleted.
    pub fn is_idle(&self) -> bool {
        self.staged.is_empty()
            && self.flush.is_none()
            && self.deletion.is_none()
            && !matches!(self.checkpoint, Checkpoint::Ending { .. })
            && !self
                .segments
                .iter()
                .any(|s| matches!(s.state, SegState::Preparing { .. }))
    }

    /// Whether a checkpoint has begun and not completed or aborted.
    pub fn checkpoint_in_progress(&self) -> bool {
        self.checkpoint != Checkpoint::Idle || self.deletion.is_some()
    }

    /// The largest record (header, payload, padding) an append accepts.
    pub fn record_len_bytes_max(&self) -> usize {
        // A segment may start with a marker, and the record must fit after it.
        let by_segment = (self.config.segment_len_bytes as usize).saturating_sub(RECORD_HEADER_LEN);
        by_segment.min(record_len(RECORD_PAYLOAD_LEN_MAX))
    }

    /// The shard directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The storage (to inspect a simulation in tests).
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The storage, mutably (to schedule simulated faults in tests).
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    // ---- staging ----

    fn stage(
        &mut self,
        record_type: RecordType,
        kind: u64,
        key: u64,
        version: u64,
        payload: &[u8],
    ) -> u64 {
        let len = record_len(payload.len());
        debug_assert!(len <= self.record_len_bytes_max() + RECORD_HEADER_LEN);
        if self.cursor.offset + len as u64 > self.config.segment_len_bytes {
            self.rotate();
        }
        let cursor = self.cursor;
        let batch_len_max = self.config.batch_len_bytes_max;
        let new_batch = match self.staged.back() {
            None => true,
            Some(b) => b.seq != cursor.seq || b.buf.len() + len > batch_len_max,
        };
        if new_batch {
            let mut buf = self
                .free_buffers
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(batch_len_max));
            buf.clear();
            self.staged.push_back(Batch {
                buf,
                seq: cursor.seq,
                offset: cursor.offset,
                lsns: self.next_lsn..self.next_lsn,
            });
        }
        let lsn = self.next_lsn;
        let Some(batch) = self.staged.back_mut() else {
            unreachable!("a batch was just ensured");
        };
        debug_assert_eq!(batch.offset + batch.buf.len() as u64, cursor.offset);
        debug_assert_eq!(batch.lsns.end, lsn);
        let fields = RecordFields {
            record_type,
            lsn,
            segment_seq: cursor.seq,
            batch_offset: batch.offset,
            kind,
            key,
            version,
        };
        let written = encode(&mut batch.buf, &fields, payload);
        debug_assert_eq!(written, len);
        batch.lsns.end = lsn + 1;
        self.next_lsn = lsn + 1;
        self.cursor.offset += len as u64;
        self.staged_len_bytes += len;
        debug_assert!(self.cursor.offset <= self.config.segment_len_bytes);
        lsn
    }

    /// Opens segment `at.segment_seq`, whose records end at `at.offset` with only
    /// zeroes after them, to append there. It needs no preparation: it was
    /// preallocated and its name made durable before its first record was
    /// written. If it cannot be opened, the writer starts in the next segment.
    fn continue_segment(&mut self, at: LogPosition) {
        let seq = at.segment_seq;
        self.reusable.remove(&seq);
        let path = segment_path(&self.dir, seq);
        match self.storage.open_file(&path) {
            Ok(file) => {
                self.segments.push_back(Segment {
                    seq,
                    path,
                    file: Some(file),
                    state: SegState::Ready,
                });
                debug_assert_eq!(
                    self.cursor,
                    Cursor {
                        seq,
                        offset: at.offset
                    }
                );
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), %e, "cannot reopen the last log segment; starting the next one");
                self.cursor = Cursor {
                    seq: seq + 1,
                    offset: 0,
                };
            }
        }
    }

    fn stage_resume(&mut self) {
        let lsn = self.stage(RecordType::Resume, 0, 0, 0, &[]);
        self.resume_lsn = Some(lsn);
    }

    fn rotate(&mut self) {
        self.cursor = Cursor {
            seq: self.cursor.seq + 1,
            offset: 0,
        };
        self.ensure_segment(self.cursor.seq);
        if let Some(seg) = self.segment_mut(self.cursor.seq) {
            if let SegState::Failed { .. } = seg.state {
                // The disk may have room now; try again when a flush needs it.
                seg.state = SegState::Unprepared;
            }
        }
    }

    fn ensure_segment(&mut self, seq: u64) {
        let from = match self.segments.back() {
            Some(last) if last.seq >= seq => return,
            Some(last) => last.seq + 1,
            None => seq,
        };
        for seq in from..=seq {
            self.segments.push_back(Segment {
                seq,
                path: segment_path(&self.dir, seq),
                file: None,
                state: SegState::Unprepared,
            });
        }
    }

    fn segment_mut(&mut self, seq: u64) -> Option<&mut Segment> {
        self.segments.iter_mut().find(|s| s.seq == seq)
    }

    fn segment(&self, seq: u64) -> Option<&Segment> {
        self.segments.iter().find(|s| s.seq == seq)
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        // Oversized buffers (a huge record) are dropped rather than kept.
        if self.free_buffers.len() < FREE_BUFFERS_MAX
            && buf.capacity() <= 2 * self.config.batch_len_bytes_max
        {
            buf.clear();
            self.free_buffers.push(buf);
        }
    }

    // ---- chains ----

    /// Links for a chain: hard when a wake-up ends it (see the module docs).
    fn link(&self) -> Link {
        if self.config.wake_fd.is_some() {
            Link::Hard
        } else {
            Link::Soft
        }
    }

    fn push_wake(&mut self, tag_low: u64) {
        if let Some(fd) = self.config.wake_fd {
            self.chain.push(Submission {
                op: Op::Wake { fd },
                tag: TAG_WAKE | tag_low,
                link: Link::None,
            });
        }
    }

    /// Submits `self.chain`; on failure returns the chain's first write buffer.
    fn submit_chain(&mut self) -> Result<(), (std::io::Error, Option<Vec<u8>>)> {
        match self.storage.submit(&mut self.chain) {
            Ok(()) => Ok(()),
            Err(e) => {
                let buf = self.chain.drain(..).find_map(|s| match s.op {
                    Op::Write { buf, .. } => Some(buf),
                    _ => None,
                });
                Err((e, buf))
            }
        }
    }

    // ---- flushes ----

    fn start_flush(&mut self) {
        if self.flush.is_some() {
            return;
        }
        let Some(front) = self.staged.front() else {
            return;
        };
        let seq = front.seq;
        let Some(segment) = self.segment(seq) else {
            debug_assert!(false, "staged batch for unknown segment {seq}");
            return;
        };
        match (segment.state, segment.file) {
            (SegState::Ready, Some(file)) => {
                let Some(batch) = self.staged.pop_front() else {
                    return;
                };
                self.staged_len_bytes -= batch.buf.len();
                let flush = Flush {
                    seq,
                    file,
                    offset: batch.offset,
                    lsns: batch.lsns,
                    buf: Some(batch.buf),
                    len: 0,
                    written: 0,
                    write_result: None,
                    sync_result: None,
                    need_sync: self.config.durability == Durability::Synced,
                    stalls: 0,
                    abandoned: false,
                };
                self.flush = Some(flush);
                self.submit_flush();
            }
            (SegState::Failed { errno }, _) => {
                let error = LogError::from_errno(&segment.path, None, "fallocate", errno);
                if let Some(segment) = self.segment_mut(seq) {
                    segment.state = SegState::Unprepared;
                }
                tracing::warn!(%error, "log segment could not be prepared; failing staged changes");
                self.fail_pending(error, Cursor { seq, offset: 0 }, false);
            }
            _ => {}
        }
    }

    /// Submits (or resubmits, after a short write) the flush in flight.
    fn submit_flush(&mut self) {
        let link = self.link();
        let Some(flush) = self.flush.as_mut() else {
            return;
        };
        let Some(buf) = flush.buf.take() else {
            debug_assert!(false, "flush resubmitted while its write is in flight");
            return;
        };
        flush.len = buf.len();
        flush.write_result = None;
        flush.sync_result = None;
        let (file, offset, written, need_sync, tag_low) = (
            flush.file,
            flush.offset + flush.written as u64,
            flush.written,
            flush.need_sync,
            flush.lsns.start & !TAG_KIND,
        );
        self.chain.clear();
        self.chain.push(Submission {
            op: Op::Write {
                file,
                offset,
                buf,
                start: written,
            },
            tag: TAG_WRITE | tag_low,
            link,
        });
        if need_sync {
            self.chain.push(Submission {
                op: Op::Fdatasync { file },
                tag: TAG_SYNC | tag_low,
                link,
            });
        }
        self.push_wake(tag_low);
        if let Err((e, buf)) = self.submit_chain() {
            if let Some(flush) = self.flush.as_mut() {
                flush.buf = buf;
            }
            let error = LogError::io(self.dir.clone(), "io_uring submit", &e);
            let flush = self.flush.take();
            self.poison(error);
            if let Some(buf) = flush.and_then(|f| f.buf) {
                self.recycle(buf);
            }
        }
    }

    fn finish_flush(&mut self) {
        let Some(flush) = self.flush.as_ref() else {
            return;
        };
        let done = flush.buf.is_some()
            && flush.write_result.is_some()
            && (!flush.need_sync || flush.sync_result.is_some());
        if !done {
            return;
        }
        let Some(mut flush) = self.flush.take() else {
            return;
        };
        if flush.abandoned {
            if let Some(buf) = flush.buf.take() {
                self.recycle(buf);
            }
            return;
        }
        let path = self
            .segment(flush.seq)
            .map_or_else(|| segment_path(&self.dir, flush.seq), |s| s.path.clone());
        let write = flush.write_result.unwrap_or(-libc::EIO);
        let sync = flush.sync_result;
        let at = flush.offset + flush.written as u64;
        let buf = flush.buf.take().unwrap_or_default();
        if let Some(sync) = sync.filter(|&r| r < 0 && r != -libc::ECANCELED) {
            self.recycle(buf);
            self.poison(LogError::FsyncFailed { path, errno: -sync });
            return;
        }
        if write < 0 {
            self.recycle(buf);
            let error = LogError::from_errno(path, Some(at), "write", -write);
            if error.is_retryable() {
                tracing::warn!(%error, "log write failed; abandoning the segment");
                let resume_at = Cursor {
                    seq: flush.seq + 1,
                    offset: 0,
                };
                self.fail_pending(error, resume_at, true);
            } else {
                self.poison(error);
            }
            return;
        }
        flush.written += write as usize;
        if flush.written < flush.len {
            flush.stalls = if write == 0 { flush.stalls + 1 } else { 0 };
            if flush.stalls > WRITE_STALLS_MAX {
                self.recycle(buf);
                self.poison(LogError::WriteStalled { path, offset: at });
                return;
            }
            flush.buf = Some(buf);
            self.flush = Some(flush);
            self.submit_flush();
            return;
        }
        debug_assert_eq!(flush.written, flush.len);
        if flush.need_sync && sync != Some(0) {
            // A complete write whose sync was cancelled: not durable. Cannot
            // happen with io_uring's link rules; never acknowledge it anyway.
            self.recycle(buf);
            self.poison(LogError::FsyncFailed {
                path,
                errno: libc::ECANCELED,
            });
            return;
        }
        self.recycle(buf);
        debug_assert_eq!(flush.lsns.start, self.watermark);
        self.watermark = flush.lsns.end;
        if self.resume_lsn.is_some_and(|lsn| lsn < flush.lsns.end) {
            self.resume_lsn = None;
        }
        self.events.push(LogEvent::Durable { lsns: flush.lsns });
    }

    // ---- failures ----

    /// Fails every LSN not yet durable with a retryable error and continues at
    /// `cursor`. Only called with no flush in flight.
    fn fail_pending(&mut self, error: LogError, cursor: Cursor, abandoned: bool) {
        debug_assert!(self.flush.is_none());
        // A segment left with a failed write, or a resume marker that never became
        // durable, must be explained by a resume marker at the head of the next.
        let resume_needed = abandoned || self.resume_lsn.is_some();
        self.fail_unresolved(error);
        self.cursor = cursor;
        self.ensure_segment(cursor.seq);
        if resume_needed {
            self.stage_resume();
        }
    }

    fn fail_unresolved(&mut self, error: LogError) {
        if self.watermark < self.next_lsn {
            self.events.push(LogEvent::Failed {
                lsns: self.watermark..self.next_lsn,
                error,
            });
            self.watermark = self.next_lsn;
        }
        while let Some(batch) = self.staged.pop_front() {
            self.recycle(batch.buf);
        }
        self.staged_len_bytes = 0;
        if self.checkpoint != Checkpoint::Idle {
            tracing::warn!("log checkpoint aborted by a failed write");
            self.checkpoint = Checkpoint::Idle;
        }
    }

    fn poison(&mut self, error: LogError) {
        if self.poisoned.is_some() {
            return;
        }
        tracing::error!(%error, "shard log poisoned");
        if let Some(flush) = self.flush.as_mut() {
            flush.abandoned = true;
        }
        self.fail_unresolved(error.clone());
        self.poisoned = Some(error);
    }

    // ---- segments ----

    /// Starts preparing the first unprepared segment the writer needs now or
    /// next (one at a time).
    fn start_prep(&mut self) {
        if self.poisoned.is_some()
            || self
                .segments
                .iter()
                .any(|s| matches!(s.state, SegState::Preparing { .. }))
        {
            return;
        }
        self.ensure_segment(self.cursor.seq + 1);
        let limit = self.cursor.seq + 1;
        let Some(index) = self
            .segments
            .iter()
            .position(|s| s.seq <= limit && s.state == SegState::Unprepared)
        else {
            return;
        };
        let Some(dir) = self.dir_file else {
            return;
        };
        let (seq, path) = (self.segments[index].seq, self.segments[index].path.clone());
        let file = if self.reusable.remove(&seq) {
            // Preallocating and syncing the directory again is cheap and covers a
            // segment whose own preparation a crash interrupted.
            match self.storage.open_file(&path) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.storage.create_file(&path),
                opened => opened,
            }
        } else {
            self.storage.create_file(&path)
        };
        let file = match file {
            Ok(file) => file,
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                tracing::warn!(path = %path.display(), errno, "cannot create log segment");
                self.segments[index].state = SegState::Failed { errno };
                return;
            }
        };
        self.known_segments.insert(seq);
        self.segments[index].file = Some(file);
        self.segments[index].state = SegState::Preparing {
            alloc: None,
            sync: None,
        };
        self.chain.clear();
        self.chain.push(Submission {
            op: Op::Fallocate {
                file,
                len_bytes: self.config.segment_len_bytes,
            },
            tag: TAG_PREP_ALLOC | seq,
            // Hard: the directory sync (and wake-up) must run even when
            // fallocate is unsupported.
            link: Link::Hard,
        });
        self.chain.push(Submission {
            op: Op::FsyncDir { dir },
            tag: TAG_PREP_SYNC | seq,
            link: Link::Hard,
        });
        self.push_wake(seq);
        if let Err((e, _)) = self.submit_chain() {
            let error = LogError::io(self.dir.clone(), "io_uring submit", &e);
            self.poison(error);
        }
    }

    fn finish_prep(&mut self, seq: u64) {
        let dir = self.dir.clone();
        let Some(segment) = self.segment_mut(seq) else {
            return;
        };
        let SegState::Preparing {
            alloc: Some(alloc),
            sync: Some(sync),
        } = segment.state
        else {
            return;
        };
        if sync < 0 && sync != -libc::ECANCELED {
            segment.state = SegState::Failed { errno: -sync };
            self.poison(LogError::FsyncFailed {
                path: dir,
                errno: -sync,
            });
            return;
        }
        if alloc == -libc::EOPNOTSUPP {
            segment.state = SegState::Ready;
            if !self.warned_no_fallocate {
                self.warned_no_fallocate = true;
                tracing::warn!(
                    dir = %dir.display(),
                    "filesystem cannot preallocate log segments; they grow as written"
                );
            }
        } else if alloc < 0 {
            let (file, path) = (segment.file.take(), segment.path.clone());
            segment.state = SegState::Failed { errno: -alloc };
            if let Some(file) = file {
                self.storage.close(file);
            }
            if let Err(e) = self.storage.remove_file(&path) {
                tracing::warn!(path = %path.display(), %e, "cannot remove unprepared segment");
            } else {
                self.known_segments.remove(&seq);
            }
        } else {
            segment.state = SegState::Ready;
        }
    }

    /// Closes segments no flush will write to again.
    fn close_idle_segments(&mut self) {
        let mut needed = self.cursor.seq;
        if let Some(flush) = &self.flush {
            needed = needed.min(flush.seq);
        }
        if let Some(front) = self.staged.front() {
            needed = needed.min(front.seq);
        }
        while let Some(front) = self.segments.front() {
            if front.seq >= needed || matches!(front.state, SegState::Preparing { .. }) {
                break;
            }
            if let Some(segment) = self.segments.pop_front() {
                if let Some(file) = segment.file {
                    self.storage.close(file);
                }
            }
        }
    }

    // ---- checkpoints ----

    fn maybe_finish_checkpoint(&mut self) {
        if let Checkpoint::Ending { first_seq, end_lsn } = self.checkpoint {
            if end_lsn < self.watermark && self.deletion.is_none() {
                self.checkpoint = Checkpoint::Idle;
                self.close_idle_segments();
                let superseded: Vec<u64> =
                    self.known_segments.range(..first_seq).copied().collect();
                self.start_deletion(&superseded, first_seq);
            }
        }
    }

    /// Unlinks segments `seqs` (all below `first_seq`) and syncs the directory.
    fn start_deletion(&mut self, seqs: &[u64], first_seq: u64) {
        let mut deleted = 0;
        for &seq in seqs {
            debug_assert!(seq < first_seq);
            debug_assert!(!matches!(self.segment(seq), Some(s) if s.file.is_some()));
            let path = segment_path(&self.dir, seq);
            match self.storage.remove_file(&path) {
                Ok(()) => deleted += 1,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), %e, "cannot delete superseded segment");
                    continue;
                }
            }
            self.known_segments.remove(&seq);
        }
        let Some(dir) = self.dir_file else {
            return;
        };
        self.chain.clear();
        self.chain.push(Submission {
            op: Op::FsyncDir { dir },
            tag: TAG_DIR_SYNC | first_seq,
            link: Link::Hard,
        });
        self.push_wake(first_seq);
        self.deletion = Some(Deletion { first_seq, deleted });
        if let Err((e, _)) = self.submit_chain() {
            self.deletion = None;
            let error = LogError::io(self.dir.clone(), "io_uring submit", &e);
            self.poison(error);
        }
    }

    // ---- completions ----

    fn reap(&mut self) {
        let mut completions = std::mem::take(&mut self.completions);
        self.storage.reap(&mut completions);
        for completion in completions.drain(..) {
            self.on_completion(completion);
        }
        self.completions = completions;
    }

    fn on_completion(&mut self, c: Completion) {
        let low = c.tag & !TAG_KIND;
        match c.tag & TAG_KIND {
            TAG_WRITE => {
                if let Some(flush) = self.flush.as_mut() {
                    flush.write_result = Some(c.result);
                    if let Op::Write { buf, .. } = c.op {
                        flush.buf = Some(buf);
                    }
                }
                self.finish_flush();
            }
            TAG_SYNC => {
                if let Some(flush) = self.flush.as_mut() {
                    flush.sync_result = Some(c.result);
                }
                self.finish_flush();
            }
            TAG_WAKE => {
                // EAGAIN: the doorbell is full, so a wake-up is pending anyway.
                if c.result < 0 && c.result != -libc::EAGAIN && c.result != -libc::ECANCELED {
                    tracing::warn!(errno = -c.result, "log wake-up write failed");
                }
            }
            TAG_PREP_ALLOC | TAG_PREP_SYNC => {
                if let Some(segment) = self.segment_mut(low) {
                    if let SegState::Preparing { alloc, sync } = &mut segment.state {
                        if c.tag & TAG_KIND == TAG_PREP_ALLOC {
                            *alloc = Some(c.result);
                        } else {
                            *sync = Some(c.result);
                        }
                    }
                }
                self.finish_prep(low);
            }
            TAG_DIR_SYNC => {
                let Some(deletion) = self.deletion.take() else {
                    return;
                };
                if c.result < 0 {
                    let path = self.dir.clone();
                    self.poison(LogError::FsyncFailed {
                        path,
                        errno: -c.result,
                    });
                } else {
                    self.events.push(LogEvent::Checkpointed {
                        first_segment_seq: deletion.first_seq,
                        segments_deleted: deletion.deleted,
                    });
                }
            }
            _ => debug_assert!(false, "unknown completion tag {:#x}", c.tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{SimFault, SimOpKind, SimStorage};
    use percore_shards::driver::record::{decode, Decoded};

    fn small() -> LogConfig {
        LogConfig {
            segment_len_bytes: 4096,
            batch_len_bytes_max: 4096,
            staged_len_bytes_max: 1 << 20,
            ..LogConfig::default()
        }
    }

    fn open(sim: SimStorage) -> LogWriter<SimStorage> {
        LogWriter::open(
            sim,
            Path::new("/sim/shard-000"),
            small(),
            &LogResume::default(),
        )
        .expect("open")
    }

    fn first_record_type(log: &LogWriter<SimStorage>, seq: u64) -> Option<RecordType> {
        let bytes = log.storage().file(&segment_path(log.dir(), seq))?;
        match decode(bytes) {
            Decoded::Record(view) => Some(view.record_type()),
            _ => None,
        }
    }

    #[test]
    fn config_values_out_of_range_are_named() {
        let bad = LogConfig {
            segment_len_bytes: 5000,
            ..LogConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(LogError::Config {
                field: "segment_len_bytes",
                ..
            })
        ));
        let bad = LogConfig {
            staged_len_bytes_max: 1,
            ..LogConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(LogError::Config {
                field: "staged_len_bytes_max",
                ..
            })
        ));
        assert_eq!(LogConfig::default().validate(), Ok(()));
    }

    #[test]
    fn next_segment_is_prepared_ahead() {
        let mut log = open(SimStorage::new());
        let mut events = Vec::new();
        log.sync_all(&mut events).expect("sync");
        // Segment 0 holds the resume marker; segment 1 is ready before it is needed.
        assert_eq!(log.storage().op_count(SimOpKind::Fallocate), 2);
        assert_eq!(log.segment(1).map(|s| s.state), Some(SegState::Ready));
    }

    #[test]
    fn resume_marker_is_restaged_when_its_segment_cannot_be_prepared() {
        let mut sim = SimStorage::new();
        sim.fail_next(SimOpKind::Fallocate, SimFault::Errno(libc::ENOSPC));
        let mut log = open(sim);
        let mut events = Vec::new();
        log.sync_all(&mut events).expect("sync");
        // The marker failed with the preallocation, was staged again, and the
        // retried preallocation let it through.
        assert!(matches!(
            events.as_slice(),
            [
                LogEvent::Failed {
                    error: LogError::NoSpace { .. },
                    ..
                },
                LogEvent::Durable { .. }
            ]
        ));
        log.append(&LogRecord::Tombstone {
            kind: 1,
            key: 2,
            version: 3,
        })
        .expect("append");
        log.sync_all(&mut events).expect("sync");
        assert_eq!(first_record_type(&log, 0), Some(RecordType::Resume));
    }

    #[test]
    fn abandoned_segment_is_followed_by_a_resume_marker() {
        let mut log = open(SimStorage::new());
        let mut events = Vec::new();
        log.sync_all(&mut events).expect("sync");
        log.storage_mut()
            .fail_next(SimOpKind::Write, SimFault::Errno(libc::ENOSPC));
        let payload = [1u8; 8];
        let record = LogRecord::State {
            kind: 1,
            key: 1,
            version: 1,
            payload: &payload,
        };
        log.append(&record).expect("append");
        log.sync_all(&mut events).expect("sync");
        log.append(&record).expect("append");
        log.sync_all(&mut events).expect("sync");
        assert_eq!(first_record_type(&log, 1), Some(RecordType::Resume));
        assert!(log.poisoned().is_none());
    }

    #[test]
    fn records_never_straddle_segments() {
        let mut log = open(SimStorage::new());
        let mut events = Vec::new();
        let payload = [9u8; 1000];
        for version in 0..20 {
            log.append(&LogRecord::State {
                kind: 1,
                key: 1,
                version,
                payload: &payload,
            })
            .expect("append");
            log.poll(&mut events);
        }
        log.sync_all(&mut events).expect("sync");
        for path in log.storage().paths() {
            let bytes = log.storage().file(&path).expect("file");
            assert_eq!(
                bytes.len(),
                4096,
                "{} was written past its end",
                path.display()
            );
        }
    }
}
