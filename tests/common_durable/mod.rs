//! Helpers shared by the `durable_*` integration tests: scratch data
//! directories, a builder preset for small durable engines, a hang guard and
//! a metrics wait.
//!
//! Each test binary uses a different subset of these, hence `dead_code`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use percore::{Engine, EngineBuilder, EngineConfig, Entity, IdlePolicy, Metrics};

/// How long a test waits for something that must happen before it declares
/// the engine hung. Not a performance bound: it only turns a hang into a
/// failure with a message (the machine is small and shared, so it is large).
pub const HANG_GUARD: Duration = Duration::from_secs(120);

/// Log segment size of the test engines: the smallest allowed, so segments
/// rotate after a megabyte of records.
pub const SEGMENT_LEN_BYTES: u64 = 1 << 20;

/// A fresh directory under the system temporary directory, unique to this
/// process and `name`; removed when dropped, unless the test is failing (it
/// is then left for inspection and its path printed).
pub struct DataDir(PathBuf);

impl DataDir {
    /// Creates nothing yet: the engine creates the directory at start.
    pub fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "percore-test-{name}-{}-{nanos}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        DataDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("data directory kept for inspection: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A builder for a small durable test engine on `dir`: `shards` shards (more
/// than the machine's cores allowed), shards that park when idle, client
/// sends that wait long enough for a descheduled shard, 1 MiB log segments
/// and checkpoints every `checkpoint_len_bytes` of records. Durability is the
/// default (synced).
pub fn durable_engine(dir: &Path, shards: usize, checkpoint_len_bytes: u64) -> EngineBuilder {
    let config = EngineConfig {
        segment_len_bytes: SEGMENT_LEN_BYTES,
        checkpoint_len_bytes,
        ..EngineConfig::default()
    };
    Engine::builder()
        .config(config)
        .shards(shards)
        .oversubscribe(true)
        .idle(IdlePolicy::Park)
        .send_wait(HANG_GUARD)
        .data_dir(dir)
}

/// The first `count` keys (counting up from `start`) of kind `E` whose home is
/// `shard`.
pub fn keys_on_shard<E: Entity>(
    engine: &Engine,
    shard: usize,
    start: u64,
    count: usize,
) -> Vec<u64> {
    (start..)
        .filter(|&key| engine.shard_of::<E>(key) == Some(shard))
        .take(count)
        .collect()
}

/// Runs `f` on its own thread and returns its result, failing the test
/// (instead of hanging it) if `f` does not finish within [`HANG_GUARD`]. On
/// failure the stuck thread is left behind; the test binary exits anyway.
pub fn guarded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(HANG_GUARD) {
        Ok(v) => {
            worker.join().expect("guarded thread");
            v
        }
        Err(RecvTimeoutError::Timeout) => {
            panic!("engine hung: {what} did not finish within {HANG_GUARD:?}")
        }
        // The closure panicked: re-raise its panic here.
        Err(RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker sends before it returns"),
        },
    }
}

/// Polls the engine's metrics until `done` holds (shards publish them at
/// least every millisecond while busy and whenever they go idle), failing the
/// test after [`HANG_GUARD`].
pub fn wait_for_metrics(engine: &Engine, what: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = std::time::Instant::now() + HANG_GUARD;
    loop {
        let m = engine.metrics();
        if done(&m) {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "engine hung: {what} not reached within {HANG_GUARD:?}; metrics {:?}",
            m.total()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
