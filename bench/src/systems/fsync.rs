//! Raw file I/O on the filesystem percore's durable workloads use: the physical
//! limit of each of them, with no engine, no io_uring and no log format.
//!
//! API used: `std::fs` and `std::os::unix::fs::FileExt::write_all_at` (`pwrite`),
//! `File::sync_data` (`fdatasync`), `fallocate(2)` for preallocation and
//! `posix_fadvise(POSIX_FADV_DONTNEED)` to evict a file from the page cache, all from
//! one thread pinned to [`RECEIVER_CORE`] (where percore's shard writes its log).
//!
//! - `durable_ask`: per round trip, one [`DURABLE_RECORD_LEN_BYTES`]-byte record
//!   written at the next offset of a file preallocated like a percore log segment,
//!   then `fdatasync`; the latency of the pair is recorded. This is the least a
//!   synced durable change can cost on this disk.
//! - `durable_records`: the same records written in batches of percore's default
//!   flush size ([`BATCH_LEN_BYTES_DEFAULT`]), one `fdatasync` per batch
//!   (`records_per_s`), and without any sync (`buffered_records_per_s`, the page
//!   cache's rate): the limit of group commit with one flush in flight.
//! - `recovery`: a file of [`Scale::recovery_log_bytes`] read front to back in 1 MiB
//!   `read`s, first evicted from the page cache (`cold_gb_per_s`), then cached
//!   (`gb_per_s`).
//!
//! Skipped: every other workload (there is no messaging here).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use percore::log::BATCH_LEN_BYTES_DEFAULT;
use percore::EngineConfig;

use super::System;
use crate::harness::{spawn_on, RECEIVER_CORE};
use crate::measure::{gb_per_s, rate, Figure, Latencies};
use crate::scratch::{self, ScratchDir};
use crate::workload::{Scale, Workload, DURABLE_KEYS, DURABLE_RECORD_LEN_BYTES};

/// The raw file I/O entry of the system table.
pub const SYSTEM: System = System {
    name: "fdatasync",
    workloads: &[
        (Workload::DurableAsk, durable_ask),
        (Workload::DurableRecords, durable_records),
        (Workload::Recovery, recovery),
    ],
};

/// Bytes read per `read` call in `recovery`.
const READ_LEN_BYTES: usize = 1 << 20;

/// Creates `dir/name`, preallocated to `len_bytes`, with its name made durable (as
/// percore creates a log segment).
fn create_preallocated(dir: &Path, name: &str, len_bytes: u64) -> File {
    let path = dir.join(name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    scratch::preallocate(&file, len_bytes).expect("fallocate");
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("sync the directory");
    file
}

/// A record-sized block of bytes that changes with `i`, so no layer can skip an
/// identical rewrite.
fn fill(buf: &mut [u8], i: u64) {
    for (n, b) in buf.iter_mut().enumerate() {
        *b = (i as u8).wrapping_add(n as u8);
    }
}

fn durable_ask(scale: Scale) -> Vec<Figure> {
    let warmup = scale.durable_ask_warmup();
    let total = warmup + scale.durable_ask_samples();
    let segment_len_bytes = EngineConfig::default().segment_len_bytes;
    assert!(total * DURABLE_RECORD_LEN_BYTES as u64 <= segment_len_bytes);
    let dir = ScratchDir::new("fdatasync-ask");
    let path = dir.create().to_path_buf();
    spawn_on(RECEIVER_CORE, "fdatasync", move || {
        let file = create_preallocated(&path, "log", segment_len_bytes);
        let mut record = [0u8; DURABLE_RECORD_LEN_BYTES];
        let mut latencies = Latencies::new();
        let mut offset = 0u64;
        for i in 0..total {
            fill(&mut record, i);
            let start = Instant::now();
            file.write_all_at(&record, offset).expect("pwrite");
            file.sync_data().expect("fdatasync");
            let latency = start.elapsed();
            offset += record.len() as u64;
            if i >= warmup {
                latencies.record(latency);
            }
        }
        latencies.figures()
    })
    .join()
    .expect("fdatasync thread")
}

/// Writes `records` records in batches of [`BATCH_LEN_BYTES_DEFAULT`] (whole
/// records) to a preallocated file, with an `fdatasync` per batch if `sync`, and
/// returns how long it took.
fn write_batches(dir: &Path, name: &str, records: u64, sync: bool) -> Duration {
    let per_batch = (BATCH_LEN_BYTES_DEFAULT / DURABLE_RECORD_LEN_BYTES) as u64;
    let total_bytes = records * DURABLE_RECORD_LEN_BYTES as u64;
    let file = create_preallocated(dir, name, total_bytes);
    let mut batch = vec![0u8; per_batch as usize * DURABLE_RECORD_LEN_BYTES];
    let start = Instant::now();
    let (mut written, mut offset) = (0u64, 0u64);
    while written < records {
        let n = per_batch.min(records - written);
        let bytes = &mut batch[..n as usize * DURABLE_RECORD_LEN_BYTES];
        // A cheap change per batch: its first record's bytes.
        fill(&mut bytes[..DURABLE_RECORD_LEN_BYTES], written);
        file.write_all_at(bytes, offset).expect("pwrite");
        if sync {
            file.sync_data().expect("fdatasync");
        }
        written += n;
        offset += bytes.len() as u64;
    }
    start.elapsed()
}

fn durable_records(scale: Scale) -> Vec<Figure> {
    let records = DURABLE_KEYS * scale.durable_rounds();
    let dir = ScratchDir::new("fdatasync-records");
    let path = dir.create().to_path_buf();
    spawn_on(RECEIVER_CORE, "fdatasync", move || {
        let synced = write_batches(&path, "synced", records, true);
        let buffered = write_batches(&path, "buffered", records, false);
        vec![
            rate("records_per_s", records, synced),
            rate("buffered_records_per_s", records, buffered),
        ]
    })
    .join()
    .expect("fdatasync thread")
}

/// Reads `path` front to back and returns the bytes read and how long it took.
fn read_all(path: &Path) -> (u64, Duration) {
    let mut buf = vec![0u8; READ_LEN_BYTES];
    let start = Instant::now();
    let mut file = File::open(path).expect("open");
    let mut total = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read {}: {e}", path.display()),
        }
    }
    (total, start.elapsed())
}

fn recovery(scale: Scale) -> Vec<Figure> {
    let len_bytes = scale.recovery_log_bytes();
    let dir = ScratchDir::new("fdatasync-recovery");
    let path = dir.create().join("log");
    spawn_on(RECEIVER_CORE, "fdatasync", move || {
        {
            let file = create_preallocated(path.parent().expect("a parent"), "log", len_bytes);
            let mut chunk = vec![0u8; READ_LEN_BYTES];
            let mut offset = 0u64;
            while offset < len_bytes {
                let n = (len_bytes - offset).min(READ_LEN_BYTES as u64) as usize;
                fill(&mut chunk[..64], offset);
                file.write_all_at(&chunk[..n], offset).expect("pwrite");
                offset += n as u64;
            }
            file.sync_data().expect("fdatasync");
        }
        scratch::evict(&path).expect("evict the file from the page cache");
        let cached = scratch::resident_share(std::slice::from_ref(&path)).unwrap_or(f64::NAN);
        eprintln!(
            "versus: fdatasync recovery: {:.1} MB file, {:.1} % in the page cache before the cold read",
            len_bytes as f64 / 1e6,
            100.0 * cached
        );
        let (cold_bytes, cold) = read_all(&path);
        let (warm_bytes, warm) = read_all(&path);
        assert_eq!((cold_bytes, warm_bytes), (len_bytes, len_bytes));
        vec![
            gb_per_s("gb_per_s", warm_bytes, warm),
            gb_per_s("cold_gb_per_s", cold_bytes, cold),
        ]
    })
    .join()
    .expect("fdatasync thread")
}
