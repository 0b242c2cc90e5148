//! The seam between the log writer and the kernel.
//!
//! The writer never makes a system call on the data path itself: it submits
//! *chains* of [`Op`]s and later reaps [`Completion`]s, which is the shape of
//! io_uring. [`UringStorage`](super::UringStorage) passes chains to a real ring;
//! [`SimStorage`](super::SimStorage) executes them in memory and can tear, shorten
//! or fail them. Both follow io_uring's link rules (see [`Link`]), so the writer's
//! handling of a short write or a failed fsync is tested against the semantics it
//! meets in production.
//!
//! Buffers are passed by value: a write owns its `Vec<u8>` while in flight and the
//! completion hands it back, so no borrow has to outlive a call and the writer
//! recycles its buffers without allocating.

use std::io;
use std::os::fd::RawFd;
use std::path::Path;

/// A file or directory opened through a [`Storage`]. Only meaningful to the
/// storage that returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId(u32);

impl FileId {
    /// A handle with this index (for [`Storage`] implementations).
    pub const fn new(index: u32) -> Self {
        Self(index)
    }

    /// The index given to [`FileId::new`].
    pub const fn index(self) -> u32 {
        self.0
    }
}

/// One asynchronous operation.
#[derive(Debug)]
pub enum Op {
    /// `pwrite(file, &buf[start..], offset)`. Completes with the number of bytes
    /// written, which may be fewer than asked (a short write).
    Write {
        /// Target file.
        file: FileId,
        /// File offset of `buf[start]`.
        offset: u64,
        /// The bytes; handed back in the completion.
        buf: Vec<u8>,
        /// First byte of `buf` to write.
        start: usize,
    },
    /// `fdatasync(file)`.
    Fdatasync {
        /// File to sync.
        file: FileId,
    },
    /// `fallocate(file, 0, 0, len_bytes)`: reserve blocks and extend the file.
    Fallocate {
        /// File to extend.
        file: FileId,
        /// New length.
        len_bytes: u64,
    },
    /// `fsync(dir)`: make created and removed names in a directory durable.
    FsyncDir {
        /// Directory opened with [`Storage::open_dir`].
        dir: FileId,
    },
    /// `write(fd, &1u64.to_ne_bytes(), 8)`: a doorbell ring to wake a parked
    /// thread.
    Wake {
        /// An eventfd (or the write end of a socket or pipe), owned by the
        /// caller and open for as long as the storage is.
        fd: RawFd,
    },
}

impl Op {
    /// Bytes a write asks for; 0 for other operations.
    pub fn write_len(&self) -> usize {
        match self {
            Op::Write { buf, start, .. } => buf.len().saturating_sub(*start),
            _ => 0,
        }
    }
}

/// How an operation is linked to the next one in its chain (the last one's link is
/// ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Not linked: the next operation may run before or concurrently.
    None,
    /// `IOSQE_IO_LINK`: the next runs after this one completes; if this one fails
    /// (an error, or a short write), every later operation of the chain completes
    /// with `-ECANCELED`.
    Soft,
    /// `IOSQE_IO_HARDLINK`: the next runs after this one completes, whatever its
    /// result.
    Hard,
}

/// An operation with the tag its completion will carry.
#[derive(Debug)]
pub struct Submission {
    /// The operation.
    pub op: Op,
    /// Returned in the [`Completion`]; chosen by the submitter.
    pub tag: u64,
    /// Link to the next submission of the chain.
    pub link: Link,
}

/// A finished operation.
#[derive(Debug)]
pub struct Completion {
    /// The submission's tag.
    pub tag: u64,
    /// The operation, with its buffer.
    pub op: Op,
    /// Bytes written for writes, 0 for the rest on success; `-errno` on failure
    /// (`-ECANCELED` when a soft-linked predecessor failed).
    pub result: i32,
}

/// Where the log's bytes go: a real io_uring or a simulation.
///
/// Used from one thread. Synchronous methods are for rare metadata work (opening a
/// segment, removing superseded ones); everything on the data path is an
/// [`Op`].
pub trait Storage {
    /// Creates `path` and its missing parents and makes the new names durable.
    ///
    /// # Errors
    ///
    /// The OS error.
    fn create_dir_all(&mut self, path: &Path) -> io::Result<()>;

    /// Creates a new, empty file for writing (`O_CREAT|O_EXCL`).
    ///
    /// # Errors
    ///
    /// The OS error; `EEXIST` if the file exists.
    fn create_file(&mut self, path: &Path) -> io::Result<FileId>;

    /// Opens an existing file for writing, without creating or truncating it: a
    /// segment the writer continues (see
    /// [`LogResume::reuse_from`](super::LogResume::reuse_from)).
    ///
    /// # Errors
    ///
    /// The OS error; `ENOENT` if the file does not exist.
    fn open_file(&mut self, path: &Path) -> io::Result<FileId>;

    /// Opens a directory so that [`Op::FsyncDir`] can sync it.
    ///
    /// # Errors
    ///
    /// The OS error.
    fn open_dir(&mut self, path: &Path) -> io::Result<FileId>;

    /// Closes a file. No operation on it may be in flight.
    fn close(&mut self, file: FileId);

    /// Removes a name (`unlink`); durable once its directory is synced.
    ///
    /// # Errors
    ///
    /// The OS error.
    fn remove_file(&mut self, path: &Path) -> io::Result<()>;

    /// Submits a chain and empties `chain`. Never blocks on the operations.
    ///
    /// # Errors
    ///
    /// When the chain cannot be queued; then `chain` is left untouched.
    fn submit(&mut self, chain: &mut Vec<Submission>) -> io::Result<()>;

    /// Moves finished operations into `out` without blocking; returns how many.
    fn reap(&mut self, out: &mut Vec<Completion>) -> usize;

    /// Blocks until at least one operation has finished, or returns at once if none
    /// is in flight.
    ///
    /// # Errors
    ///
    /// The OS error of the wait.
    fn wait(&mut self) -> io::Result<()>;

    /// Operations submitted and not yet reaped.
    fn in_flight(&self) -> usize;
}
