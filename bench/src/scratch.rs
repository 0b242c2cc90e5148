//! Files of the durable workloads: scratch directories, preallocation, and the page
//! cache (evicting a file from it, asking how much of a file is in it).
//!
//! Every durable workload, percore's and its raw counterpart's, writes under
//! [`base_dir`], so both measure the same filesystem and device. The base is
//! `std::env::temp_dir()` unless the environment variable [`DATA_DIR_VAR`] names
//! another directory (to measure a particular disk).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Environment variable naming the directory durable workloads write under.
pub const DATA_DIR_VAR: &str = "VERSUS_DATA_DIR";

/// The directory durable workloads create their scratch directories in.
pub fn base_dir() -> PathBuf {
    std::env::var_os(DATA_DIR_VAR).map_or_else(std::env::temp_dir, PathBuf::from)
}

/// A fresh directory under [`base_dir`], unique to this process and `name`, removed
/// with everything in it when dropped. Nothing is created until something writes
/// there (the engine creates its data directory itself).
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A new, not yet existing directory path.
    pub fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = base_dir().join(format!(
            "percore-versus-{name}-{}-{nanos}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Creates the directory (and its parents) now.
    ///
    /// # Panics
    ///
    /// Panics if it cannot be created.
    pub fn create(&self) -> &Path {
        std::fs::create_dir_all(&self.0)
            .unwrap_or_else(|e| panic!("create {}: {e}", self.0.display()));
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every regular file under `dir`, recursively, in no particular order.
///
/// # Errors
///
/// The first directory that cannot be listed.
pub fn files_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    Ok(files)
}

/// Reserves `len_bytes` for `file` with `fallocate(2)` (mode 0: the file grows, the
/// new range reads as zeroes), as percore preallocates its log segments.
///
/// # Errors
///
/// The OS error.
pub fn preallocate(file: &File, len_bytes: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len_bytes).map_err(|_| io::Error::other("length"))?;
    // SAFETY: a plain system call on a descriptor `file` keeps open.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Writes `file`'s dirty pages back and drops its pages from the page cache
/// (`fdatasync`, then `posix_fadvise(POSIX_FADV_DONTNEED)`), so the next read comes
/// from the device. Needs no privilege and leaves every other file cached. Pages
/// mapped by a process are not dropped (none are, between workload steps). A
/// virtual machine's host may still cache the device's blocks; see [`resident`].
///
/// # Errors
///
/// The OS error of `open`, `fdatasync` or `posix_fadvise`.
pub fn evict(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    file.sync_data()?;
    // SAFETY: a plain system call on a descriptor `file` keeps open.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Bytes of `path` in the page cache and its length, from `mincore(2)` on a mapping
/// that reads nothing.
///
/// # Errors
///
/// The OS error of `open`, `mmap` or `mincore`.
pub fn resident(path: &Path) -> io::Result<(u64, u64)> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let Ok(len_usize) = usize::try_from(len) else {
        return Err(io::Error::other("file too large to map"));
    };
    if len_usize == 0 {
        return Ok((0, 0));
    }
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    // SAFETY: a fresh read-only shared mapping of a file we keep open; nobody else
    // gets the pointer, and it is unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len_usize,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let pages = len.div_ceil(page) as usize;
    let mut vec = vec![0u8; pages];
    // SAFETY: `map` is a mapping of `len_usize` bytes, `vec` has one byte per page
    // of it.
    let rc = unsafe { libc::mincore(map, len_usize, vec.as_mut_ptr()) };
    let error = io::Error::last_os_error();
    // SAFETY: `map` was returned by mmap with this length and is not used after.
    unsafe { libc::munmap(map, len_usize) };
    if rc != 0 {
        return Err(error);
    }
    let resident_pages = vec.iter().filter(|&&b| b & 1 != 0).count() as u64;
    Ok(((resident_pages * page).min(len), len))
}

/// The share (0 ..= 1) of the bytes of `files` that are in the page cache; 1 for no
/// bytes at all.
///
/// # Errors
///
/// The first error of [`resident`].
pub fn resident_share(files: &[PathBuf]) -> io::Result<f64> {
    let (mut cached, mut total) = (0u64, 0u64);
    for path in files {
        let (c, t) = resident(path)?;
        cached += c;
        total += t;
    }
    Ok(if total == 0 {
        1.0
    } else {
        cached as f64 / total as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_written_file_is_cached_until_evicted() {
        let dir = ScratchDir::new("scratch-test");
        let path = dir.create().join("data");
        let mut file = File::create(&path).unwrap();
        file.write_all(&vec![7u8; 1 << 20]).unwrap();
        preallocate(&file, 2 << 20).unwrap();
        drop(file);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 << 20);
        let (cached, len) = resident(&path).unwrap();
        assert_eq!(len, 2 << 20);
        assert!(cached >= 1 << 20, "the written half is cached");
        evict(&path).unwrap();
        // Eviction is advice; it is not asserted to have dropped every page.
        let _ = resident_share(&files_under(dir.path()).unwrap()).unwrap();
        assert_eq!(files_under(dir.path()).unwrap(), vec![path]);
    }
}
