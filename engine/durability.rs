//! Durable kinds in the runtime: the data directory's lock, recovery of the
//! data directory at start, and the bridge from a shard to its io_uring log
//! writer.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use percore_shards::driver::fold::Fold;
use percore_shards::driver::Shard;
use percore_shards::driver::{LogRefusal, LogSink};
use percore_shards::{AskError, Kinds};

use crate::config::DurabilityLevel;
use crate::error::Error;
use crate::log::{
    recover_data_dir, AppendError, Durability, LogConfig, LogEvent, LogRecord, LogResume,
    LogWriter, Storage, UringStorage,
};

/// Name of the lock file in a data directory.
pub(crate) const LOCK_FILE_NAME: &str = "LOCK";

/// An exclusive advisory lock (`flock`) on `DATA_DIR/LOCK`: one engine at a
/// time, in this process or another, recovers and writes a data directory.
///
/// Taken before recovery reads anything and held for the engine's life (the
/// engine keeps it; see [`DataDirLock::of`]). `flock` locks belong to the open
/// file, so a second engine in the same process is refused like one in
/// another process, and the kernel releases the lock when the holder closes
/// the file or dies: a crash leaves no stale lock. The file holds the
/// holder's pid while it is locked, for the error a second engine gets. The
/// file itself is never deleted: unlinking a lock file lets two processes lock
/// two different files of the same name.
#[derive(Debug)]
pub(crate) struct DataDirLock {
    file: File,
}

impl DataDirLock {
    /// Locks `data_dir`, which must exist.
    ///
    /// # Errors
    ///
    /// [`Error::DataDirLocked`] if another engine holds it; [`Error::Io`] if
    /// the lock file cannot be opened or the filesystem does not lock.
    pub(crate) fn acquire(data_dir: &Path) -> Result<Self, Error> {
        let path = data_dir.join(LOCK_FILE_NAME);
        // std opens with O_CLOEXEC: a child process does not inherit the lock.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| Error::Io {
                context: "opening the data directory's lock file",
                source,
            })?;
        // SAFETY: `file` is an open descriptor owned here; flock only changes
        // the lock state of its open file description.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let source = std::io::Error::last_os_error();
            if source.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::DataDirLocked {
                    dir: data_dir.to_path_buf(),
                    pid: read_pid(&path),
                });
            }
            return Err(Error::Io {
                context: "locking the data directory (flock)",
                source,
            });
        }
        // Best effort: the pid only makes a second engine's error clearer.
        let pid = format!("{}\n", std::process::id());
        if let Err(e) = file
            .set_len(0)
            .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
        {
            tracing::warn!(path = %path.display(), %e, "cannot write the pid into the lock file");
        }
        Ok(DataDirLock { file })
    }

    /// The lock recovery took, for the engine to hold while it runs (every
    /// shard's plan shares it).
    pub(crate) fn of(plans: &[Option<ShardRecovery>]) -> Option<Arc<DataDirLock>> {
        plans.iter().flatten().find_map(|p| p.lock.clone())
    }
}

impl Drop for DataDirLock {
    /// Clears the pid; closing the file then releases the lock.
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
}

/// The pid a lock holder wrote into `path`, if it is there and readable.
fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// What one shard starts with: the entities it now owns and where its own log
/// continues.
#[derive(Default)]
pub(crate) struct ShardRecovery {
    /// Live entities: (kind hash, key, version, state bytes, from another
    /// shard's log).
    pub(crate) live: Vec<(u64, u64, u64, Vec<u8>, bool)>,
    /// Deleted entities: (kind hash, key, version, from another shard's log).
    pub(crate) deleted: Vec<(u64, u64, u64, bool)>,
    pub(crate) resume: LogResume,
    /// The data directory's lock, shared by every shard's plan until the
    /// engine takes it over ([`DataDirLock::of`]).
    pub(crate) lock: Option<Arc<DataDirLock>>,
}

/// Figures of a recovery, for metrics and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Log bytes read and checked.
    pub log_bytes: u64,
    /// Records read.
    pub records: u64,
    /// Live entities recovered.
    pub entities: u64,
    /// Torn tails discarded.
    pub torn_tails: u64,
}

/// Creates `data_dir` if missing, with errors that name it.
fn create_data_dir(data_dir: &Path) -> Result<(), Error> {
    match std::fs::metadata(data_dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(Error::DataDirNotADirectory {
                dir: data_dir.to_path_buf(),
            })
        }
        Err(_) => {}
    }
    std::fs::create_dir_all(data_dir).map_err(|source| {
        // Lost a race with someone who made a file there since.
        if data_dir.exists() && !data_dir.is_dir() {
            Error::DataDirNotADirectory {
                dir: data_dir.to_path_buf(),
            }
        } else {
            Error::DataDir {
                dir: data_dir.to_path_buf(),
                source,
            }
        }
    })
}

/// Locks `data_dir` (see [`DataDirLock`]), reads every shard log under it
/// (whatever the shard count that wrote them), folds them (highest version
/// wins, wherever it is), and hands each entity to the shard that owns it now.
/// The plans hold the lock.
pub(crate) fn recover(
    data_dir: &Path,
    kinds: &Kinds,
    shard_count: usize,
) -> Result<(Vec<ShardRecovery>, RecoveryReport), Error> {
    create_data_dir(data_dir)?;
    let lock = Arc::new(DataDirLock::acquire(data_dir)?);
    let logs = recover_data_dir(data_dir).map_err(Error::Log)?;
    let mut report = RecoveryReport::default();
    // The payload remembers which shard's log it came from. The fold keeps no
    // payload for tombstones, so their newest log is noted in the same pass.
    let mut fold = Fold::<(usize, &[u8])>::new();
    let mut tombstone_logs = std::collections::HashMap::new();
    for (index, log) in &logs {
        report.log_bytes += log.log_len_bytes();
        report.torn_tails += log.torn_tails().len() as u64;
        for record in log.records() {
            report.records += 1;
            let h = &record.header;
            if record.record_type() == crate::log::RecordType::Tombstone {
                let at = tombstone_logs
                    .entry((h.kind, h.key))
                    .or_insert((h.version, *index));
                if h.version >= at.0 {
                    *at = (h.version, *index);
                }
            }
            fold.offer(h, (*index, record.payload));
        }
    }
    let mut plan: Vec<ShardRecovery> = (0..shard_count)
        .map(|_| ShardRecovery {
            lock: Some(lock.clone()),
            ..ShardRecovery::default()
        })
        .collect();
    for (index, log) in &logs {
        if *index < shard_count {
            plan[*index].resume = log.resume();
        }
    }
    for (id, latest) in fold.into_entries() {
        let Some(kind) = kinds.id_of_hash(id.kind_hash) else {
            tracing::warn!(
                kind_hash = id.kind_hash,
                key = id.key,
                "the log holds an entity of a kind that is not registered; it is ignored"
            );
            continue;
        };
        let shard = kinds.home_shard(kind, id.key, shard_count);
        match latest.state {
            Some((origin, bytes)) => {
                report.entities += 1;
                plan[shard].live.push((
                    id.kind_hash,
                    id.key,
                    latest.version,
                    bytes.to_vec(),
                    origin != shard,
                ))
            }
            None => {
                let origin = tombstone_logs
                    .get(&(id.kind_hash, id.key))
                    .map_or(shard, |&(_, origin)| origin);
                plan[shard]
                    .deleted
                    .push((id.kind_hash, id.key, latest.version, origin != shard))
            }
        }
    }
    for p in &mut plan {
        // Activation order must not depend on hashing.
        p.live.sort_unstable_by_key(|e| (e.0, e.1));
    }
    Ok((plan, report))
}

/// Puts a shard's recovered entities in its tables.
pub(crate) fn restore(shard: &mut Shard, recovery: &ShardRecovery) -> Result<(), String> {
    for &(kind, key, version, foreign) in &recovery.deleted {
        shard.restore_tombstone(kind, key, version, foreign);
    }
    for (kind, key, version, bytes, foreign) in &recovery.live {
        // The error names the entity and the kind.
        shard
            .restore(*kind, *key, *version, bytes, *foreign)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A shard's log: the writer and what the shard loop tracks about it.
pub(crate) struct ShardLog {
    writer: LogWriter<UringStorage>,
    events: Vec<LogEvent>,
    bytes_since_checkpoint: u64,
    checkpoint_len_bytes: u64,
    /// Set once the log failed to sync; reported in metrics.
    pub(crate) poisoned: bool,
    pub(crate) checkpoints: u64,
}

impl ShardLog {
    pub(crate) fn open(
        dir: &Path,
        level: DurabilityLevel,
        segment_len_bytes: u64,
        checkpoint_len_bytes: u64,
        wake_fd: std::os::fd::RawFd,
        resume: &LogResume,
    ) -> Result<Self, Error> {
        let durability = match level {
            DurabilityLevel::Off => Durability::Off,
            DurabilityLevel::Buffered => Durability::Buffered,
            DurabilityLevel::Synced => Durability::Synced,
        };
        let config = LogConfig {
            segment_len_bytes,
            durability,
            wake_fd: Some(wake_fd),
            ..LogConfig::default()
        };
        let storage = UringStorage::new().map_err(Error::Log)?;
        let writer = LogWriter::open(storage, dir, config, resume).map_err(Error::Log)?;
        // What the log took up before this start counts too: otherwise restarts
        // with a little traffic each would never checkpoint, and the log (and
        // segments left behind by crashes) would grow without bound.
        let bytes_since_checkpoint = match level {
            DurabilityLevel::Off => 0,
            _ => resume.len_bytes_since_checkpoint,
        };
        Ok(ShardLog {
            writer,
            events: Vec::new(),
            bytes_since_checkpoint,
            checkpoint_len_bytes,
            poisoned: false,
            checkpoints: 0,
        })
    }

    /// End of a pass: log what changed, submit, apply what the log reports.
    ///
    /// While the log has operations in flight the shard thread yields its
    /// core once per pass. The kernel runs a flush's write and `fdatasync` on
    /// io_uring worker threads (io-wq), and those inherit the shard thread's
    /// affinity: pinned to its one core (observed on Linux 6.18, where
    /// `IORING_REGISTER_IOWQ_AFF` does not widen it). A shard spinning through
    /// its idle spell kept them off that core until it parked, and for
    /// milliseconds when other work shared the core: `versus durable_ask`
    /// measured p99 270 µs instead of 84 µs (a raw `fdatasync`: 80 µs). With
    /// nothing else runnable on the core the yield returns at once.
    pub(crate) fn commit_and_poll(&mut self, shard: &mut Shard) {
        shard.commit(&mut Sink { log: self });
        self.poll(shard);
        if self.writer.storage().in_flight() > 0 {
            std::thread::yield_now();
        }
        if self.bytes_since_checkpoint >= self.checkpoint_len_bytes
            && !self.writer.checkpoint_in_progress()
            && self.writer.poisoned().is_none()
        {
            self.checkpoint(shard);
        }
    }

    fn poll(&mut self, shard: &mut Shard) {
        self.writer.poll(&mut self.events);
        for event in self.events.drain(..) {
            match event {
                LogEvent::Durable { lsns } => shard.durable_through(lsns.end),
                LogEvent::Failed { lsns, error } => {
                    let err = if error.is_retryable() {
                        AskError::StorageFull
                    } else {
                        self.poisoned = true;
                        tracing::error!("shard log failed and is poisoned: {error}");
                        AskError::StorageFailed
                    };
                    shard.failed(lsns, err);
                }
                LogEvent::Checkpointed { .. } => self.checkpoints += 1,
            }
        }
    }

    fn checkpoint(&mut self, shard: &mut Shard) {
        if self.writer.begin_checkpoint().is_err() {
            return;
        }
        let written = shard.checkpoint(&mut Sink { log: self });
        // A checkpoint with a refused record is aborted by the writer when
        // it fails; finishing it anyway keeps the writer's state simple.
        let _ = self.writer.finish_checkpoint();
        if written.is_ok() {
            self.bytes_since_checkpoint = 0;
        }
    }

    /// Whether nothing waits in or for the log.
    pub(crate) fn is_idle(&self) -> bool {
        self.writer.is_idle() || self.writer.poisoned().is_some()
    }

    /// At shutdown: wait until everything appended is resolved.
    pub(crate) fn finish(&mut self, shard: &mut Shard) {
        let _ = self.writer.sync_all(&mut self.events);
        self.poll(shard);
    }
}

/// The shard's view of its log while it commits a pass or a checkpoint.
struct Sink<'a> {
    log: &'a mut ShardLog,
}

impl Sink<'_> {
    fn append(&mut self, record: LogRecord<'_>, len_bytes: usize) -> Result<u64, LogRefusal> {
        loop {
            match self.log.writer.append(&record) {
                Ok(lsn) => {
                    self.log.bytes_since_checkpoint += len_bytes as u64;
                    return Ok(lsn);
                }
                Err(AppendError::Full { .. }) => {
                    // Rare: more than the staging limit changed while a flush
                    // was in flight. Wait for the storage, then retry.
                    let _ = self.log.writer.storage_mut().wait();
                    self.log.writer.poll(&mut self.log.events);
                }
                Err(AppendError::Poisoned(_)) => {
                    self.log.poisoned = true;
                    return Err(LogRefusal::Failed { retryable: false });
                }
                Err(e) => {
                    tracing::error!("a record could not be appended: {e}");
                    return Err(LogRefusal::Failed { retryable: false });
                }
            }
        }
    }
}

impl LogSink for Sink<'_> {
    fn append_state(
        &mut self,
        kind: u64,
        key: u64,
        version: u64,
        payload: &[u8],
    ) -> Result<u64, LogRefusal> {
        let record = LogRecord::State {
            kind,
            key,
            version,
            payload,
        };
        self.append(record, crate::log::record_len(payload.len()))
    }

    fn append_tombstone(&mut self, kind: u64, key: u64, version: u64) -> Result<u64, LogRefusal> {
        self.append(
            LogRecord::Tombstone { kind, key, version },
            crate::log::record_len(0),
        )
    }

    fn unresolved_max(&self) -> Option<u64> {
        let w = &self.log.writer;
        (w.next_lsn() > w.durable_watermark()).then(|| w.next_lsn() - 1)
    }
}
