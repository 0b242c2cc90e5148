//! [`Storage`] simulated in memory, with injected faults and simulated crashes.
//!
//! Each file has two images: the *cache* (what a read would return: the page
//! cache) and the *durable* image (what survives a power loss). Writes change the
//! cache; `fdatasync` copies the file's unsynced writes into the durable image;
//! a name becomes durable when its directory is synced. [`SimStorage::crash`]
//! returns what a restart would find, and [`SimImage::write_to_disk`] puts it on a
//! real filesystem for the real recovery reader.
//!
//! Faults come from an explicit schedule ([`SimStorage::fail_next`]) or at random
//! from a seed ([`SimStorage::seeded`]); both are deterministic. A failed
//! `fdatasync` behaves like Linux's: the unsynced pages are dropped from the
//! durable image and never written (the cache still shows them), which is why a
//! retried fsync must not be trusted.
//!
//! Operations complete during [`Storage::submit`], in order, following io_uring's
//! link rules, unless [`SimStorage::stop_before`] holds them; [`Storage::reap`]
//! hands the completions out.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};

use super::storage::{Completion, FileId, Link, Op, Storage, Submission};

/// Operation kinds faults can be scheduled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimOpKind {
    /// [`Op::Write`].
    Write,
    /// [`Op::Fdatasync`].
    Fdatasync,
    /// [`Op::Fallocate`].
    Fallocate,
    /// [`Op::FsyncDir`].
    FsyncDir,
    /// [`Op::Wake`].
    Wake,
}

impl SimOpKind {
    const ALL: usize = 5;

    fn of(op: &Op) -> Self {
        match op {
            Op::Write { .. } => Self::Write,
            Op::Fdatasync { .. } => Self::Fdatasync,
            Op::Fallocate { .. } => Self::Fallocate,
            Op::FsyncDir { .. } => Self::FsyncDir,
            Op::Wake { .. } => Self::Wake,
        }
    }
}

/// A fault to inject into one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimFault {
    /// The write stores only the first `len_bytes` bytes (at most what was asked)
    /// and reports that many. Only meaningful for writes.
    ShortWrite {
        /// Bytes actually written.
        len_bytes: usize,
    },
    /// The operation fails with this `errno` (`libc::EIO`, `libc::ENOSPC`, …) and
    /// changes nothing (a failed `fdatasync` also loses the unsynced writes).
    Errno(i32),
}

/// Per-mille probabilities of random faults for [`SimStorage::seeded`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultRates {
    /// Writes that are short (a random length below the one asked, at least 1).
    pub short_write_per_mille: u32,
    /// Writes that fail with `ENOSPC`.
    pub write_enospc_per_mille: u32,
    /// `fdatasync`s that fail with `EIO`.
    pub fdatasync_eio_per_mille: u32,
    /// Preallocations that fail with `ENOSPC`.
    pub fallocate_enospc_per_mille: u32,
}

/// What survives a simulated crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// The process died, the kernel did not: every write and name survives.
    KeepUnsynced,
    /// Power loss after which only synced data and names survive.
    LoseUnsynced,
    /// Power loss in the middle of the last write: synced data, every earlier
    /// unsynced write, and the first `keep_len_bytes` bytes of the last one.
    TornLastWrite {
        /// Bytes of the last write that reached the disk.
        keep_len_bytes: usize,
    },
}

/// The files a restart would find after a simulated crash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimImage {
    files: BTreeMap<PathBuf, Vec<u8>>,
}

impl SimImage {
    /// The files, by path.
    pub fn files(&self) -> &BTreeMap<PathBuf, Vec<u8>> {
        &self.files
    }

    /// Mutable access to the files (to damage them in tests).
    pub fn files_mut(&mut self) -> &mut BTreeMap<PathBuf, Vec<u8>> {
        &mut self.files
    }

    /// Writes every file to its path on the real filesystem, creating parent
    /// directories. Existing files with those paths are replaced.
    ///
    /// # Errors
    ///
    /// The first filesystem error.
    pub fn write_to_disk(&self) -> io::Result<()> {
        for (path, bytes) in &self.files {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, bytes)?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
struct Unsynced {
    /// Global write order, to find the last write at a crash.
    order: u64,
    offset: u64,
    len: usize,
}

#[derive(Debug)]
struct SimFile {
    path: PathBuf,
    is_dir: bool,
    cache: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Unsynced>,
    name_durable: bool,
    unlinked: bool,
    unlink_durable: bool,
}

/// Simulated [`Storage`]; see the module docs.
#[derive(Debug)]
pub struct SimStorage {
    /// Every file ever created or opened, by [`FileId`] index (never reused).
    files: Vec<SimFile>,
    scheduled: [VecDeque<SimFault>; SimOpKind::ALL],
    counts: [u64; SimOpKind::ALL],
    rates: FaultRates,
    rng: u64,
    write_order: u64,
    completions: VecDeque<Completion>,
    /// Operations are held, unexecuted, from the next one of this kind on.
    stop_before: Option<SimOpKind>,
    /// Held submissions, in order, each with whether it ends its chain.
    held: VecDeque<(Submission, bool)>,
    /// The chain being executed had a soft-linked failure: cancel the rest.
    cancel: bool,
}

impl Default for SimStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl SimStorage {
    /// A simulated disk without random faults.
    pub fn new() -> Self {
        Self::seeded(0, FaultRates::default())
    }

    /// A simulated disk injecting random faults at `rates`, reproducibly from `seed`.
    pub fn seeded(seed: u64, rates: FaultRates) -> Self {
        Self {
            files: Vec::new(),
            scheduled: Default::default(),
            counts: [0; SimOpKind::ALL],
            rates,
            // xorshift must not start at 0.
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
            write_order: 0,
            completions: VecDeque::new(),
            stop_before: None,
            held: VecDeque::new(),
            cancel: false,
        }
    }

    /// A simulated disk holding `image`'s files, all durable (a restart).
    pub fn from_image(image: &SimImage) -> Self {
        let mut sim = Self::new();
        for (path, bytes) in &image.files {
            sim.files.push(SimFile {
                path: path.clone(),
                is_dir: false,
                cache: bytes.clone(),
                durable: bytes.clone(),
                unsynced: Vec::new(),
                name_durable: true,
                unlinked: false,
                unlink_durable: false,
            });
        }
        sim
    }

    /// Injects random faults at `rates` from now on, reproducibly from `seed` (for a
    /// disk made by [`from_image`](Self::from_image)).
    pub fn set_fault_rates(&mut self, seed: u64, rates: FaultRates) {
        self.rates = rates;
        self.rng = seed ^ 0x9e37_79b9_7f4a_7c15;
    }

    /// Makes the next operations of `kind` fail with `fault`, in the order scheduled
    /// (before any random fault).
    pub fn fail_next(&mut self, kind: SimOpKind, fault: SimFault) {
        self.scheduled[kind as usize].push_back(fault);
    }

    /// Stops executing operations at the next one of `kind`: it and everything
    /// submitted after it are held (in flight, never completing) until
    /// [`resume`](Self::resume). A crash taken meanwhile sees the disk as it was
    /// before them: the way to crash between a write and its `fdatasync`.
    pub fn stop_before(&mut self, kind: SimOpKind) {
        self.stop_before = Some(kind);
    }

    /// Clears [`stop_before`](Self::stop_before) and executes the held operations.
    pub fn resume(&mut self) {
        self.stop_before = None;
        while let Some((sub, last)) = self.held.pop_front() {
            self.run(sub, last);
        }
    }

    /// Operations held by [`stop_before`](Self::stop_before).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Operations of `kind` executed so far.
    pub fn op_count(&self, kind: SimOpKind) -> u64 {
        self.counts[kind as usize]
    }

    /// The current (cached) contents of the live file at `path`.
    pub fn file(&self, path: &Path) -> Option<&[u8]> {
        self.live(path).map(|i| &self.files[i].cache[..])
    }

    /// Paths of the live (not removed) files, in creation order.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .filter(|f| !f.is_dir && !f.unlinked)
            .map(|f| f.path.clone())
            .collect()
    }

    /// What a restart after a crash now would find.
    pub fn crash(&self, mode: CrashMode) -> SimImage {
        let last_write = self
            .files
            .iter()
            .flat_map(|f| f.unsynced.iter().map(|u| u.order))
            .max();
        let mut image = SimImage::default();
        for f in self.files.iter().filter(|f| !f.is_dir) {
            let bytes = match mode {
                CrashMode::KeepUnsynced if !f.unlinked => f.cache.clone(),
                CrashMode::KeepUnsynced => continue,
                _ if !f.name_durable || f.unlink_durable => continue,
                CrashMode::LoseUnsynced => f.durable.clone(),
                CrashMode::TornLastWrite { keep_len_bytes } => {
                    let mut bytes = f.durable.clone();
                    for u in &f.unsynced {
                        let len = if Some(u.order) == last_write {
                            u.len.min(keep_len_bytes)
                        } else {
                            u.len
                        };
                        let at = u.offset as usize;
                        if bytes.len() < at + len {
                            bytes.resize(at + len, 0);
                        }
                        bytes[at..at + len].copy_from_slice(&f.cache[at..at + len]);
                    }
                    bytes
                }
            };
            image.files.insert(f.path.clone(), bytes);
        }
        image
    }

    /// Executes one submission following io_uring's link rules: a failed (or
    /// short) soft-linked operation cancels the rest of its chain.
    fn run(&mut self, sub: Submission, last: bool) {
        let result = if self.cancel {
            -libc::ECANCELED
        } else {
            self.execute(&sub.op)
        };
        let failed = result < 0 || (result as usize) < sub.op.write_len();
        match if last { Link::None } else { sub.link } {
            Link::None => self.cancel = false,
            Link::Soft => self.cancel |= failed,
            Link::Hard => {}
        }
        self.completions.push_back(Completion {
            tag: sub.tag,
            op: sub.op,
            result,
        });
    }

    fn live(&self, path: &Path) -> Option<usize> {
        self.files
            .iter()
            .rposition(|f| !f.unlinked && f.path == path)
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn roll(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && self.next_random() % 1000 < u64::from(per_mille)
    }

    fn fault_for(&mut self, op: &Op) -> Option<SimFault> {
        let kind = SimOpKind::of(op);
        if let Some(fault) = self.scheduled[kind as usize].pop_front() {
            return Some(fault);
        }
        let rates = self.rates;
        match kind {
            SimOpKind::Write => {
                let len = op.write_len();
                if self.roll(rates.write_enospc_per_mille) {
                    Some(SimFault::Errno(libc::ENOSPC))
                } else if len > 1 && self.roll(rates.short_write_per_mille) {
                    let len_bytes = 1 + (self.next_random() % (len as u64 - 1)) as usize;
                    Some(SimFault::ShortWrite { len_bytes })
                } else {
                    None
                }
            }
            SimOpKind::Fdatasync if self.roll(rates.fdatasync_eio_per_mille) => {
                Some(SimFault::Errno(libc::EIO))
            }
            SimOpKind::Fallocate if self.roll(rates.fallocate_enospc_per_mille) => {
                Some(SimFault::Errno(libc::ENOSPC))
            }
            _ => None,
        }
    }

    fn file_mut(&mut self, file: FileId) -> Option<&mut SimFile> {
        self.files.get_mut(file.index() as usize)
    }

    /// Runs one operation; returns its completion result.
    fn execute(&mut self, op: &Op) -> i32 {
        self.counts[SimOpKind::of(op) as usize] += 1;
        let fault = self.fault_for(op);
        if let Some(SimFault::Errno(errno)) = fault {
            if let Op::Fdatasync { file } = op {
                // Linux marks the pages clean after a failed writeback: they are
                // never written, though reads still see them.
                if let Some(f) = self.file_mut(*file) {
                    f.unsynced.clear();
                }
            }
            return -errno;
        }
        match op {
            Op::Write {
                file,
                offset,
                buf,
                start,
            } => {
                let bytes = buf.get(*start..).unwrap_or(&[]);
                let len = match fault {
                    Some(SimFault::ShortWrite { len_bytes }) => len_bytes.min(bytes.len()),
                    _ => bytes.len(),
                };
                self.write_order += 1;
                let order = self.write_order;
                let Some(f) = self.file_mut(*file) else {
                    return -libc::EBADF;
                };
                let at = *offset as usize;
                if f.cache.len() < at + len {
                    f.cache.resize(at + len, 0);
                }
                f.cache[at..at + len].copy_from_slice(&bytes[..len]);
                if len > 0 {
                    f.unsynced.push(Unsynced {
                        order,
                        offset: *offset,
                        len,
                    });
                }
                len as i32
            }
            Op::Fdatasync { file } => {
                let Some(f) = self.file_mut(*file) else {
                    return -libc::EBADF;
                };
                for u in std::mem::take(&mut f.unsynced) {
                    let at = u.offset as usize;
                    if f.durable.len() < at + u.len {
                        f.durable.resize(at + u.len, 0);
                    }
                    f.durable[at..at + u.len].copy_from_slice(&f.cache[at..at + u.len]);
                }
                0
            }
            Op::Fallocate { file, len_bytes } => {
                let Some(f) = self.file_mut(*file) else {
                    return -libc::EBADF;
                };
                let len = *len_bytes as usize;
                if f.cache.len() < len {
                    f.cache.resize(len, 0);
                }
                if f.durable.len() < len {
                    f.durable.resize(len, 0);
                }
                0
            }
            Op::FsyncDir { dir } => {
                let Some(dir_path) = self.files.get(dir.index() as usize).map(|d| d.path.clone())
                else {
                    return -libc::EBADF;
                };
                for f in &mut self.files {
                    if f.path.parent() == Some(dir_path.as_path()) {
                        if f.unlinked {
                            f.unlink_durable = true;
                        } else {
                            f.name_durable = true;
                        }
                    }
                }
                0
            }
            Op::Wake { fd } => {
                // An eventfd takes an 8-byte count.
                let count = 1u64.to_ne_bytes();
                // SAFETY: `count` is a live 8-byte buffer; `fd` is the caller's
                // descriptor, and a bad one only makes write return EBADF.
                let n = unsafe { libc::write(*fd, count.as_ptr().cast(), count.len()) };
                if n < 0 {
                    -io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EIO)
                } else {
                    n as i32
                }
            }
        }
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&mut self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    fn create_file(&mut self, path: &Path) -> io::Result<FileId> {
        if self.live(path).is_some() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        self.files.push(SimFile {
            path: path.to_path_buf(),
            is_dir: false,
            cache: Vec::new(),
            durable: Vec::new(),
            unsynced: Vec::new(),
            name_durable: false,
            unlinked: false,
            unlink_durable: false,
        });
        Ok(FileId::new(self.files.len() as u32 - 1))
    }

    fn open_file(&mut self, path: &Path) -> io::Result<FileId> {
        // A file keeps its index: handles are never reused, and closing is a no-op.
        let i = self
            .live(path)
            .filter(|&i| !self.files[i].is_dir)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        Ok(FileId::new(i as u32))
    }

    fn open_dir(&mut self, path: &Path) -> io::Result<FileId> {
        self.files.push(SimFile {
            path: path.to_path_buf(),
            is_dir: true,
            cache: Vec::new(),
            durable: Vec::new(),
            unsynced: Vec::new(),
            name_durable: true,
            unlinked: false,
            unlink_durable: false,
        });
        Ok(FileId::new(self.files.len() as u32 - 1))
    }

    fn close(&mut self, _file: FileId) {}

    fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        let i = self
            .live(path)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        self.files[i].unlinked = true;
        Ok(())
    }

    fn submit(&mut self, chain: &mut Vec<Submission>) -> io::Result<()> {
        let n = chain.len();
        for (i, sub) in chain.drain(..).enumerate() {
            let last = i + 1 == n;
            let stop = self.stop_before == Some(SimOpKind::of(&sub.op));
            if stop || !self.held.is_empty() {
                self.held.push_back((sub, last));
            } else {
                self.run(sub, last);
            }
        }
        Ok(())
    }

    fn reap(&mut self, out: &mut Vec<Completion>) -> usize {
        let n = self.completions.len();
        out.extend(self.completions.drain(..));
        n
    }

    fn wait(&mut self) -> io::Result<()> {
        if self.completions.is_empty() && !self.held.is_empty() {
            // Nothing will ever complete until `resume`: waiting would hang.
            return Err(io::Error::other(
                "simulated storage is stopped (stop_before) with operations held",
            ));
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.completions.len() + self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(file: FileId, offset: u64, bytes: &[u8], link: Link) -> Submission {
        Submission {
            op: Op::Write {
                file,
                offset,
                buf: bytes.to_vec(),
                start: 0,
            },
            tag: 1,
            link,
        }
    }

    fn sync(file: FileId) -> Submission {
        Submission {
            op: Op::Fdatasync { file },
            tag: 2,
            link: Link::None,
        }
    }

    fn results(sim: &mut SimStorage) -> Vec<i32> {
        let mut out = Vec::new();
        sim.reap(&mut out);
        out.iter().map(|c| c.result).collect()
    }

    #[test]
    fn short_write_cancels_a_soft_link_but_not_a_hard_one() {
        let mut sim = SimStorage::new();
        let f = sim.create_file(Path::new("/x/a")).unwrap();
        sim.fail_next(SimOpKind::Write, SimFault::ShortWrite { len_bytes: 2 });
        sim.submit(&mut vec![write(f, 0, b"abcd", Link::Soft), sync(f)])
            .unwrap();
        assert_eq!(results(&mut sim), [2, -libc::ECANCELED]);
        sim.fail_next(SimOpKind::Write, SimFault::ShortWrite { len_bytes: 2 });
        sim.submit(&mut vec![write(f, 0, b"abcd", Link::Hard), sync(f)])
            .unwrap();
        assert_eq!(results(&mut sim), [2, 0]);
    }

    #[test]
    fn failed_fdatasync_loses_the_unsynced_write() {
        let mut sim = SimStorage::new();
        let dir = sim.open_dir(Path::new("/x")).unwrap();
        let f = sim.create_file(Path::new("/x/a")).unwrap();
        sim.submit(&mut vec![Submission {
            op: Op::FsyncDir { dir },
            tag: 0,
            link: Link::None,
        }])
        .unwrap();
        sim.fail_next(SimOpKind::Fdatasync, SimFault::Errno(libc::EIO));
        sim.submit(&mut vec![write(f, 0, b"abcd", Link::Soft), sync(f)])
            .unwrap();
        assert_eq!(results(&mut sim), [0, 4, -libc::EIO]);
        // A retried fsync "succeeds" but the data never reached the disk.
        sim.submit(&mut vec![sync(f)]).unwrap();
        assert_eq!(results(&mut sim), [0]);
        assert_eq!(sim.file(Path::new("/x/a")), Some(&b"abcd"[..]));
        let image = sim.crash(CrashMode::LoseUnsynced);
        assert_eq!(image.files()[Path::new("/x/a")], b"");
    }

    #[test]
    fn names_survive_power_loss_only_after_a_directory_sync() {
        let mut sim = SimStorage::new();
        let dir = sim.open_dir(Path::new("/x")).unwrap();
        sim.create_file(Path::new("/x/a")).unwrap();
        assert!(sim.crash(CrashMode::LoseUnsynced).files().is_empty());
        assert_eq!(sim.crash(CrashMode::KeepUnsynced).files().len(), 1);
        sim.submit(&mut vec![Submission {
            op: Op::FsyncDir { dir },
            tag: 0,
            link: Link::None,
        }])
        .unwrap();
        assert_eq!(sim.crash(CrashMode::LoseUnsynced).files().len(), 1);
    }

    #[test]
    fn torn_crash_keeps_a_prefix_of_the_last_write() {
        let mut sim = SimStorage::new();
        let dir = sim.open_dir(Path::new("/x")).unwrap();
        let f = sim.create_file(Path::new("/x/a")).unwrap();
        sim.submit(&mut vec![
            Submission {
                op: Op::FsyncDir { dir },
                tag: 0,
                link: Link::None,
            },
            write(f, 0, b"abcd", Link::None),
            write(f, 4, b"efgh", Link::None),
        ])
        .unwrap();
        let image = sim.crash(CrashMode::TornLastWrite { keep_len_bytes: 1 });
        assert_eq!(image.files()[Path::new("/x/a")], b"abcde");
    }

    #[test]
    fn stop_before_holds_the_sync_so_a_crash_loses_the_write() {
        let mut sim = SimStorage::new();
        let dir = sim.open_dir(Path::new("/x")).unwrap();
        let f = sim.create_file(Path::new("/x/a")).unwrap();
        sim.submit(&mut vec![Submission {
            op: Op::FsyncDir { dir },
            tag: 0,
            link: Link::None,
        }])
        .unwrap();
        sim.stop_before(SimOpKind::Fdatasync);
        sim.submit(&mut vec![write(f, 0, b"abcd", Link::Soft), sync(f)])
            .unwrap();
        assert_eq!(sim.held(), 1);
        assert_eq!(results(&mut sim), [0, 4]);
        assert!(sim.wait().is_err());
        let image = sim.crash(CrashMode::LoseUnsynced);
        assert_eq!(image.files()[Path::new("/x/a")], b"");
        sim.resume();
        assert_eq!(results(&mut sim), [0]);
        let image = sim.crash(CrashMode::LoseUnsynced);
        assert_eq!(image.files()[Path::new("/x/a")], b"abcd");
    }

    #[test]
    fn seeded_faults_are_reproducible() {
        let rates = FaultRates {
            short_write_per_mille: 300,
            fdatasync_eio_per_mille: 300,
            ..FaultRates::default()
        };
        let run = |seed| {
            let mut sim = SimStorage::seeded(seed, rates);
            let f = sim.create_file(Path::new("/x/a")).unwrap();
            for i in 0..50 {
                sim.submit(&mut vec![write(f, i * 8, b"abcdefgh", Link::Soft), sync(f)])
                    .unwrap();
            }
            results(&mut sim)
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
