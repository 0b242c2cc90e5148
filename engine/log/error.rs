//! Errors of the durable log: one enum for everything that can go wrong with the
//! files, and a small one for [`LogWriter::append`](super::LogWriter::append).

use std::fmt;
use std::path::PathBuf;

/// What went wrong with a shard's log, with what to change.
///
/// Errors name the file, the byte offset when there is one, and the `errno` the
/// kernel returned. [`LogError::is_retryable`] tells whether the same change can
/// simply be tried again later.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogError {
    /// A system call on a log file failed.
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// Byte offset, for reads and writes.
        offset: Option<u64>,
        /// The operation (`"write"`, `"fallocate"`, `"open"`, …).
        op: &'static str,
        /// The `errno` returned.
        errno: i32,
    },
    /// The disk is full (`ENOSPC`) or a quota is exhausted (`EDQUOT`). Retryable:
    /// the changes concerned were not made durable, later appends try again.
    NoSpace {
        /// File being written or preallocated.
        path: PathBuf,
        /// The `errno` returned.
        errno: i32,
    },
    /// `fdatasync`/`fsync` failed. The log is poisoned: the kernel may already have
    /// dropped the unwritten pages and marked them clean, so a retry could succeed
    /// without the data being on disk (PostgreSQL's "fsyncgate"). Nothing is
    /// acknowledged after this.
    FsyncFailed {
        /// File or directory being synced.
        path: PathBuf,
        /// The `errno` returned.
        errno: i32,
    },
    /// Writes to a segment kept completing with zero bytes.
    WriteStalled {
        /// Segment being written.
        path: PathBuf,
        /// Offset the write was resumed at.
        offset: u64,
    },
    /// A bad record before the tail of a shard's log: acknowledged data is damaged.
    Corrupt {
        /// Segment file.
        path: PathBuf,
        /// Byte offset of the bad record in the file.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// io_uring could not be set up.
    UringUnavailable {
        /// The `errno` from `io_uring_setup`.
        errno: i32,
    },
    /// A configuration value is out of range.
    Config {
        /// Field name.
        field: &'static str,
        /// Value given.
        value: u64,
        /// The valid range.
        valid: &'static str,
    },
}

impl LogError {
    /// Whether the failed changes may be retried on the same log: true for a full
    /// disk, false for everything that poisons the log or needs a person.
    pub fn is_retryable(&self) -> bool {
        matches!(self, LogError::NoSpace { .. })
    }

    /// Whether this error poisons the log it happened on.
    pub fn is_poisoning(&self) -> bool {
        matches!(
            self,
            LogError::FsyncFailed { .. } | LogError::WriteStalled { .. } | LogError::Io { .. }
        )
    }

    /// The `errno` behind the error, if any.
    pub fn errno(&self) -> Option<i32> {
        match *self {
            LogError::Io { errno, .. }
            | LogError::NoSpace { errno, .. }
            | LogError::FsyncFailed { errno, .. }
            | LogError::UringUnavailable { errno } => Some(errno),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, err: &std::io::Error) -> Self {
        Self::from_errno(path, None, op, err.raw_os_error().unwrap_or(libc::EIO))
    }

    /// Classifies an errno from a write or preallocation: a full disk is retryable,
    /// the rest is an I/O error.
    pub(crate) fn from_errno(
        path: impl Into<PathBuf>,
        offset: Option<u64>,
        op: &'static str,
        errno: i32,
    ) -> Self {
        let path = path.into();
        if errno == libc::ENOSPC || errno == libc::EDQUOT {
            LogError::NoSpace { path, errno }
        } else {
            LogError::Io {
                path,
                offset,
                op,
                errno,
            }
        }
    }
}

fn strerror(errno: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(errno)
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Io {
                path,
                offset,
                op,
                errno,
            } => {
                write!(f, "{op} on {}", path.display())?;
                if let Some(offset) = offset {
                    write!(f, " at byte {offset}")?;
                }
                write!(
                    f,
                    " failed: {}; check that the data directory is on a local, \
                     writable filesystem and the device is healthy (dmesg)",
                    strerror(*errno)
                )
            }
            LogError::NoSpace { path, errno } => write!(
                f,
                "no space left writing {}: {}; free disk space (or raise the quota) on \
                 that filesystem, or checkpoint more often; the change was not made \
                 durable and can be retried",
                path.display(),
                strerror(*errno)
            ),
            LogError::FsyncFailed { path, errno } => write!(
                f,
                "fsync of {} failed: {}; the shard's log is poisoned and acknowledges \
                 nothing more; check the device (dmesg), then restart the engine to \
                 recover from what is durable",
                path.display(),
                strerror(*errno)
            ),
            LogError::WriteStalled { path, offset } => write!(
                f,
                "writes to {} at byte {offset} keep completing with 0 bytes; the log is \
                 poisoned; check the filesystem and device",
                path.display()
            ),
            LogError::Corrupt {
                path,
                offset,
                reason,
            } => write!(
                f,
                "corrupt record in {} at byte {offset} ({reason}); valid records follow, \
                 so this is damage to acknowledged data, not a torn tail; restore the \
                 file from a backup, or truncate it at that offset to accept losing \
                 everything after it",
                path.display()
            ),
            LogError::UringUnavailable { errno } => write!(
                f,
                "io_uring is unavailable: {}; set the sysctl kernel.io_uring_disabled=0, \
                 allow io_uring_setup/io_uring_enter in the container's seccomp profile, \
                 and raise the locked-memory limit (ulimit -l) if it is tiny",
                strerror(*errno)
            ),
            LogError::Config {
                field,
                value,
                valid,
            } => write!(
                f,
                "log configuration: {field} = {value} is invalid; valid: {valid}"
            ),
        }
    }
}

impl std::error::Error for LogError {}

/// Why [`LogWriter::append`](super::LogWriter::append) (or a checkpoint call) did
/// not stage a record. Nothing was staged; the caller still holds its data.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppendError {
    /// Staged bytes reached `LogConfig::staged_len_bytes_max`: call
    /// [`poll`](super::LogWriter::poll) and retry once a flush completes.
    Full {
        /// Bytes staged now.
        staged_len_bytes: usize,
    },
    /// The record is larger than a segment (or than the format allows).
    TooLarge {
        /// Bytes the record would occupy.
        len_bytes: usize,
        /// The largest record that fits.
        len_bytes_max: usize,
    },
    /// The log is poisoned by this earlier error; restart to recover.
    Poisoned(LogError),
    /// `begin_checkpoint` while a checkpoint is already open.
    CheckpointInProgress,
    /// `finish_checkpoint` without an open checkpoint (never begun, or aborted by a
    /// failed write).
    NoCheckpoint,
    /// Checkpoints need a log; durability is `Off`.
    DurabilityOff,
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::Full { staged_len_bytes } => write!(
                f,
                "log staging is full ({staged_len_bytes} bytes staged); poll the writer and \
                 retry, or raise staged_len_bytes_max"
            ),
            AppendError::TooLarge {
                len_bytes,
                len_bytes_max,
            } => write!(
                f,
                "a record of {len_bytes} bytes does not fit (max {len_bytes_max}); raise \
                 segment_len_bytes or make the state smaller"
            ),
            AppendError::Poisoned(cause) => write!(f, "the log is poisoned: {cause}"),
            AppendError::CheckpointInProgress => write!(f, "a checkpoint is already open"),
            AppendError::NoCheckpoint => write!(f, "no checkpoint is open"),
            AppendError::DurabilityOff => write!(f, "durability is off: there is no log"),
        }
    }
}

impl std::error::Error for AppendError {}
