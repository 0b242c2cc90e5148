//! Helpers shared by the `durable_*` integration tests: scratch data
//! directories, a builder preset for small durable engines and a metrics
//! wait; the hang guards and key pickers are `tests/common`'s.
//!
//! Each test binary uses a different subset of these, hence `dead_code`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use percore::{
    Ctx, DurableState, Engine, EngineBuilder, EngineConfig, Entity, IdlePolicy, Metrics,
};

// The hang guards and key pickers of the `engine_*` tests, shared.
#[path = "../common/mod.rs"]
mod common;
#[allow(unused_imports)] // each test binary uses a subset
pub use common::{guarded, keys_on_shard, HANG_GUARD};

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

/// A durable counter with a hand-written 8-byte encoding: it adds what it is
/// sent and replies with its total.
pub struct Counter {
    n: u64,
}

impl Entity for Counter {
    const KIND: &'static str = "common_durable.counter";
    type Msg = u64;
    type Reply = u64;

    fn activate(_key: u64) -> Self {
        Counter { n: 0 }
    }

    fn handle(&mut self, add: u64, _ctx: &mut Ctx<'_, Self>) -> u64 {
        self.n += add;
        self.n
    }
}

impl DurableState for Counter {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.n.to_le_bytes());
    }

    fn decode(key: u64, bytes: &[u8]) -> Result<Self, percore::DecodeError> {
        let n = bytes
            .try_into()
            .map_err(|_| format!("counter {key}: {} bytes, expected 8", bytes.len()))?;
        Ok(Counter {
            n: u64::from_le_bytes(n),
        })
    }
}
