//! Criterion benches of durable entities, each beside its physical limit on the
//! same filesystem: the synced durable ask against one raw write + `fdatasync`,
//! records per second under group commit (synced and buffered), and engine
//! start-up recovery of a ~65 MB log, from the page cache and after evicting it.
//!
//! Run with `cargo bench -p percore-bench --bench durable`. Files go under
//! `percore_bench::scratch::base_dir()`: the system temporary directory unless
//! the environment variable `VERSUS_DATA_DIR` names another. The engines use the
//! default configuration (synced durability, shards spin 200 µs then park); the
//! bench thread is pinned to core 0, the shard to core 1. The `versus` workloads
//! `durable_ask`, `durable_records` and `recovery` measure the same things at a
//! larger scale, in fresh processes.

// criterion_group! generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use percore::{DurabilityLevel, Engine, EngineBuilder, EngineConfig};
use percore_bench::scratch::{self, ScratchDir};
use percore_bench::systems::percore::{Account, Profile};

/// Accounts told per iteration of `durable_records`.
const RECORDS_KEYS: u64 = 10_000;

/// Profiles and rounds of changes that fill the log `recovery` reads: 6 000 ×
/// 10 records of 1 088 bytes, about 65 MB.
const RECOVERY_KEYS: u64 = 6_000;
const RECOVERY_ROUNDS: u64 = 10;

fn pin(core: usize) {
    core_affinity::set_for_current(core_affinity::CoreId { id: core });
}

fn builder(dir: &Path, config: EngineConfig) -> EngineBuilder {
    Engine::builder()
        .config(config)
        .cores([1])
        .data_dir(dir)
        .register_durable_pod::<Account>()
        .register_durable_pod::<Profile>()
}

/// A file of `len` bytes preallocated like a log segment, written front to
/// back; a fresh one replaces it when full.
struct RawLog {
    dir: PathBuf,
    file: File,
    files: u64,
    offset: u64,
    len: u64,
}

impl RawLog {
    fn new(dir: &Path) -> Self {
        let len = EngineConfig::default().segment_len_bytes;
        Self {
            dir: dir.to_path_buf(),
            file: Self::create(dir, 0, len),
            files: 1,
            offset: 0,
            len,
        }
    }

    fn create(dir: &Path, n: u64, len: u64) -> File {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(format!("{n}.log")))
            .expect("create");
        scratch::preallocate(&file, len).expect("fallocate");
        File::open(dir)
            .and_then(|d| d.sync_all())
            .expect("sync dir");
        file
    }

    /// Writes `record` at the next offset and syncs; returns how long that took
    /// (making a fresh file when full is not counted).
    fn append_synced(&mut self, record: &[u8]) -> Duration {
        if self.offset + record.len() as u64 > self.len {
            let old = self.dir.join(format!("{}.log", self.files - 1));
            self.file = Self::create(&self.dir, self.files, self.len);
            let _ = std::fs::remove_file(old);
            self.files += 1;
            self.offset = 0;
        }
        let start = Instant::now();
        self.file.write_all_at(record, self.offset).expect("pwrite");
        self.file.sync_data().expect("fdatasync");
        let elapsed = start.elapsed();
        self.offset += record.len() as u64;
        elapsed
    }
}

fn durable_ask(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_ask");
    pin(0);
    {
        // The physical limit: one record-sized write and its fdatasync.
        let dir = ScratchDir::new("bench-fdatasync");
        let mut log = RawLog::new(dir.create());
        let mut record = [0u8; percore::log::record_len(16)];
        g.bench_function("raw_fdatasync", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|i| {
                        record[..8].copy_from_slice(&i.to_le_bytes());
                        log.append_synced(&record)
                    })
                    .sum()
            })
        });
    }
    {
        let dir = ScratchDir::new("bench-durable-ask");
        let engine = builder(dir.path(), EngineConfig::default())
            .build()
            .expect("engine starts");
        let client = engine.client().unwrap();
        g.bench_function("percore", |b| {
            b.iter(|| black_box(client.ask::<Account>(0, 1).unwrap()))
        });
        drop(client);
        engine.shutdown().unwrap();
    }
    g.finish();
}

fn durable_records(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_records");
    g.throughput(Throughput::Elements(RECORDS_KEYS));
    pin(0);
    for (name, level) in [
        ("synced", DurabilityLevel::Synced),
        ("buffered", DurabilityLevel::Buffered),
    ] {
        let dir = ScratchDir::new("bench-durable-records");
        let engine = builder(dir.path(), EngineConfig::default())
            .durability(level)
            .build()
            .expect("engine starts");
        let client = engine.client().unwrap();
        client
            .tell_batch::<Account, _>((0..RECORDS_KEYS).map(|k| (k, 1)))
            .unwrap();
        client.ask::<Account>(0, 0).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                // One record per account; the ask's reply waits for all of them.
                client
                    .tell_batch::<Account, _>((0..RECORDS_KEYS).map(|k| (k, 1)))
                    .unwrap();
                black_box(client.ask::<Account>(0, 0).unwrap())
            })
        });
        drop(client);
        engine.shutdown().unwrap();
    }
    g.finish();
}

/// Checkpoints out of reach, so no start rewrites the log the next one reads.
fn no_checkpoints() -> EngineConfig {
    EngineConfig {
        checkpoint_len_bytes: u64::MAX,
        ..EngineConfig::default()
    }
}

fn recovery(c: &mut Criterion) {
    pin(0);
    let dir = ScratchDir::new("bench-recovery");
    {
        let config = EngineConfig {
            durability: DurabilityLevel::Buffered,
            ..no_checkpoints()
        };
        let engine = builder(dir.path(), config).build().expect("engine starts");
        let client = engine.client().unwrap();
        for round in 1..=RECOVERY_ROUNDS {
            client
                .tell_batch::<Profile, _>((0..RECOVERY_KEYS).map(|k| (k, round)))
                .unwrap();
        }
        client.ask::<Profile>(0, 0).unwrap();
        drop(client);
        engine.shutdown().unwrap();
    }
    // Starts the engine on the log and returns how long `build` took and the
    // log bytes it read. No start checkpoints, so each reads the same log.
    let timed_start = || {
        let start = Instant::now();
        let engine = builder(dir.path(), no_checkpoints())
            .build()
            .expect("engine starts");
        let elapsed = start.elapsed();
        let log_bytes = engine.recovery().log_bytes;
        engine.shutdown().unwrap();
        (elapsed, log_bytes)
    };
    let (_, log_bytes) = timed_start();
    let mut g = c.benchmark_group("recovery");
    g.throughput(Throughput::Bytes(log_bytes));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("cached", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| timed_start().0).sum())
    });
    g.bench_function("evicted", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    for file in scratch::files_under(dir.path()).expect("list the log") {
                        scratch::evict(&file).expect("evict");
                    }
                    timed_start().0
                })
                .sum()
        })
    });
    g.finish();
}

criterion_group!(benches, durable_ask, durable_records, recovery);

criterion_main!(benches);
