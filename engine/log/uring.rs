//! [`Storage`] on a real io_uring, through the `io-uring` crate.
//!
//! One ring per writer, owned by the thread that drives the writer. The ring is
//! set up with default flags on purpose: without `IORING_SETUP_COOP_TASKRUN` the
//! kernel interrupts the owning thread to run the task work that issues the next
//! operation of a chain, so a linked wake-up write reaches the doorbell even while
//! that thread is parked in another wait (glommio's), which is the point of it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use io_uring::{opcode, squeue, types, IoUring};

use super::storage::{Completion, FileId, Link, Op, Storage, Submission};
use super::LogError;

/// Submission-queue entries of a writer's ring. A writer has at most a flush chain
/// (3 operations), the wake-up of the previous flush, a segment preparation (3)
/// and a directory sync (2) in flight: 16 leaves room to spare.
pub const URING_ENTRIES: u32 = 16;

/// Operations that may be in flight at once (the completion queue is twice the
/// submission queue).
const SLOTS: usize = 2 * URING_ENTRIES as usize;

/// The count written by [`Op::Wake`] (a doorbell is an eventfd, which takes
/// 8-byte counts); static so its address outlives any operation.
static WAKE_BYTE: [u8; 8] = 1u64.to_ne_bytes();

/// [`Storage`] backed by an io_uring instance and real files.
///
/// Not `Sync`; use it from the one thread that drives its writer.
pub struct UringStorage {
    ring: IoUring,
    /// Open files by [`FileId`] index; `None` once closed.
    files: Vec<Option<File>>,
    /// Operations in flight by slot (the SQE's `user_data`): the caller's tag and
    /// the operation, which keeps the buffer alive until the kernel is done.
    slots: Vec<Option<(u64, Op)>>,
    free_slots: Vec<usize>,
    /// Entries pushed to the submission queue that `io_uring_enter` has not taken
    /// yet (it returned `EBUSY`/`EAGAIN`/`EINTR`); retried on the next call.
    unsubmitted: bool,
}

impl std::fmt::Debug for UringStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringStorage")
            .field("in_flight", &self.in_flight())
            .field("files", &self.files.iter().filter(|f| f.is_some()).count())
            .finish()
    }
}

impl UringStorage {
    /// Sets up a ring of [`URING_ENTRIES`] entries.
    ///
    /// # Errors
    ///
    /// [`LogError::UringUnavailable`] when the kernel refuses (disabled by sysctl,
    /// blocked by seccomp, not enough locked memory); its message says what to
    /// change.
    pub fn new() -> Result<Self, LogError> {
        let ring = IoUring::new(URING_ENTRIES).map_err(|e| LogError::UringUnavailable {
            errno: e.raw_os_error().unwrap_or(libc::ENOSYS),
        })?;
        Ok(Self {
            ring,
            files: Vec::new(),
            slots: (0..SLOTS).map(|_| None).collect(),
            free_slots: (0..SLOTS).rev().collect(),
            unsubmitted: false,
        })
    }

    fn add_file(&mut self, file: File) -> FileId {
        let index = match self.files.iter().position(Option::is_none) {
            Some(index) => index,
            None => {
                self.files.push(None);
                self.files.len() - 1
            }
        };
        self.files[index] = Some(file);
        FileId::new(index as u32)
    }

    fn enter(&mut self, want: usize) -> io::Result<()> {
        let result = if want == 0 {
            self.ring.submit()
        } else {
            self.ring.submit_and_wait(want)
        };
        match result {
            Ok(_) => {
                self.unsubmitted = false;
                Ok(())
            }
            // The entries stay in the submission queue; the next enter takes them.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)
                ) =>
            {
                self.unsubmitted = true;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for UringStorage {
    /// Waits for every operation in flight before the buffers they point at are
    /// freed: closing the ring does not stop the kernel from still reading a
    /// write's buffer. If waiting fails, the buffers are leaked rather than freed
    /// under the kernel's feet.
    fn drop(&mut self) {
        let mut done = Vec::new();
        while self.in_flight() > 0 {
            done.clear();
            if self.reap(&mut done) > 0 {
                continue;
            }
            if let Err(e) = self.enter(1) {
                tracing::error!(%e, "io_uring wait failed at drop; leaking in-flight buffers");
                for slot in self.slots.iter_mut() {
                    std::mem::forget(slot.take());
                }
                return;
            }
        }
    }
}

impl Storage for UringStorage {
    fn create_dir_all(&mut self, path: &Path) -> io::Result<()> {
        if path.is_dir() {
            return Ok(());
        }
        std::fs::create_dir_all(path)?;
        // Make the new name durable in its parent (the data directory itself is
        // the operator's to keep).
        File::open(path)?.sync_all()?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
        Ok(())
    }

    fn create_file(&mut self, path: &Path) -> io::Result<FileId> {
        // std opens with O_CLOEXEC.
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        Ok(self.add_file(file))
    }

    fn open_file(&mut self, path: &Path) -> io::Result<FileId> {
        // Neither O_CREAT nor O_TRUNC: the bytes already there are the log's.
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(self.add_file(file))
    }

    fn open_dir(&mut self, path: &Path) -> io::Result<FileId> {
        let dir = File::open(path)?;
        Ok(self.add_file(dir))
    }

    fn close(&mut self, file: FileId) {
        debug_assert!(
            !self.slots.iter().flatten().any(|(_, op)| match op {
                Op::Write { file: f, .. }
                | Op::Fdatasync { file: f }
                | Op::Fallocate { file: f, .. }
                | Op::FsyncDir { dir: f } => *f == file,
                Op::Wake { .. } => false,
            }),
            "closing a file with operations in flight"
        );
        if let Some(slot) = self.files.get_mut(file.index() as usize) {
            *slot = None;
        }
    }

    fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn submit(&mut self, chain: &mut Vec<Submission>) -> io::Result<()> {
        let n = chain.len();
        if n > self.free_slots.len() {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        let first_slot = self.free_slots.len() - n;
        {
            let files = &self.files;
            let mut sq = self.ring.submission();
            if sq.capacity() - sq.len() < n {
                return Err(io::Error::from_raw_os_error(libc::EBUSY));
            }
            for (i, sub) in chain.iter().enumerate() {
                let flags = match sub.link {
                    _ if i + 1 == n => squeue::Flags::empty(),
                    Link::None => squeue::Flags::empty(),
                    Link::Soft => squeue::Flags::IO_LINK,
                    Link::Hard => squeue::Flags::IO_HARDLINK,
                };
                let slot = self.free_slots[first_slot + i];
                let entry = entry(files, &sub.op).flags(flags).user_data(slot as u64);
                // SAFETY: the entry points at memory that stays valid until its
                // completion is reaped: the write buffer is moved into `self.slots`
                // below (moving a Vec does not move its heap block), the wake byte
                // is static, and files are only closed with nothing in flight.
                unsafe { sq.push(&entry) }
                    .map_err(|_| io::Error::from_raw_os_error(libc::EBUSY))?;
            }
        }
        for (i, sub) in chain.drain(..).enumerate() {
            let slot = self.free_slots[first_slot + i];
            self.slots[slot] = Some((sub.tag, sub.op));
        }
        self.free_slots.truncate(first_slot);
        self.enter(0)
    }

    fn reap(&mut self, out: &mut Vec<Completion>) -> usize {
        if self.unsubmitted {
            // Errors here resurface at the next submit or wait.
            let _ = self.enter(0);
        }
        let mut n = 0;
        for cqe in self.ring.completion() {
            let slot = cqe.user_data() as usize;
            let Some((tag, op)) = self.slots.get_mut(slot).and_then(Option::take) else {
                debug_assert!(false, "completion for unknown slot {slot}");
                continue;
            };
            self.free_slots.push(slot);
            out.push(Completion {
                tag,
                op,
                result: cqe.result(),
            });
            n += 1;
        }
        n
    }

    fn wait(&mut self) -> io::Result<()> {
        if self.in_flight() == 0 {
            return Ok(());
        }
        if !self.ring.completion().is_empty() {
            return Ok(());
        }
        self.enter(1)
    }

    fn in_flight(&self) -> usize {
        SLOTS - self.free_slots.len()
    }
}

/// The raw descriptor of an open file; -1 (which the kernel rejects with `EBADF`)
/// for a closed one.
fn fd(files: &[Option<File>], file: FileId) -> types::Fd {
    let raw = files
        .get(file.index() as usize)
        .and_then(Option::as_ref)
        .map_or(-1, AsRawFd::as_raw_fd);
    debug_assert!(raw >= 0, "operation on a closed file {file:?}");
    types::Fd(raw)
}

/// The submission entry for an operation (flags and user data are added by the
/// caller).
fn entry(files: &[Option<File>], op: &Op) -> squeue::Entry {
    match op {
        Op::Write {
            file,
            offset,
            buf,
            start,
        } => {
            let bytes = buf.get(*start..).unwrap_or(&[]);
            // Linux writes at most 0x7fff_f000 bytes per call; the writer's
            // batches are far below (checked by LogConfig::validate).
            let len = bytes.len().min(i32::MAX as usize) as u32;
            opcode::Write::new(fd(files, *file), bytes.as_ptr(), len)
                .offset(*offset)
                .build()
        }
        Op::Fdatasync { file } => opcode::Fsync::new(fd(files, *file))
            .flags(types::FsyncFlags::DATASYNC)
            .build(),
        Op::Fallocate { file, len_bytes } => {
            opcode::Fallocate::new(fd(files, *file), *len_bytes).build()
        }
        Op::FsyncDir { dir } => opcode::Fsync::new(fd(files, *dir)).build(),
        Op::Wake { fd } => opcode::Write::new(types::Fd(*fd), WAKE_BYTE.as_ptr(), 8).build(),
    }
}
