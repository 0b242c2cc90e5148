//! Recovery of shard logs: torn tails are discarded, damage before the tail is an
//! error naming file and offset, checkpoints interrupted by a crash still
//! recover, logs of any number of shards fold to one state per entity, and no
//! acknowledged record is lost whatever faults and crashes happen. Recovery
//! reads records, not the preallocated zeroes after them, and restarts continue
//! the last segment rather than leave segments behind.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use percore::log::{
    list_segments, record_len, recover_data_dir, recover_shard, segment_path, shard_dir, CrashMode,
    FaultRates, Fold, LogConfig, LogError, LogEvent, LogPosition, LogRecord, LogResume, LogWriter,
    RecordType, SimImage, SimOpKind, SimStorage, UringStorage, RECORD_HEADER_LEN,
};

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("log_recovery")
            .join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }

    fn shard(&self) -> PathBuf {
        shard_dir(&self.0, 0)
    }

    /// Replaces the shard directory's contents with a crash image.
    fn restore(&self, image: &SimImage) {
        let _ = std::fs::remove_dir_all(self.shard());
        std::fs::create_dir_all(self.shard()).unwrap();
        image.write_to_disk().unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn config(segment_len_bytes: u64) -> LogConfig {
    LogConfig {
        segment_len_bytes,
        batch_len_bytes_max: 4096,
        staged_len_bytes_max: 1 << 20,
        ..LogConfig::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    let len = 8 + (i * 13 % 40) as usize;
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

fn state(key: u64, version: u64, payload: &[u8]) -> LogRecord<'_> {
    LogRecord::State {
        kind: 1,
        key,
        version,
        payload,
    }
}

/// Versions of the state records in a shard's log, in order.
fn versions(shard: &Path) -> Vec<u64> {
    recover_shard(shard)
        .unwrap()
        .records()
        .filter(|r| r.record_type() == RecordType::State)
        .map(|r| r.header.version)
        .collect()
}

/// Writes `n` records to segment 0, each in its own flush, through real io_uring;
/// returns the byte offset of each record.
fn write_separate_flushes(shard: &Path, n: u64) -> Vec<u64> {
    let mut log = LogWriter::open(
        UringStorage::new().unwrap(),
        shard,
        config(64 << 10),
        &LogResume::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    let mut offsets = Vec::new();
    let mut offset = RECORD_HEADER_LEN as u64; // after the resume marker
    for i in 0..n {
        let p = payload(i);
        log.append(&state(i, i + 1, &p)).unwrap();
        log.sync_all(&mut events).unwrap();
        offsets.push(offset);
        offset += record_len(p.len()) as u64;
    }
    offsets
}

/// Flips one bit in place: the rest of the file is left as it is, so its
/// preallocated remainder stays unwritten.
fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= 1 << bit;
    file.write_all_at(&byte, offset).unwrap();
}

/// Whether `path` holds data at or after `offset`, as `SEEK_DATA` reports it:
/// a preallocated range never written, and never read, is not data; once read
/// it is (its zeroes are in the page cache).
fn data_after(path: &Path, offset: u64) -> bool {
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: lseek on a descriptor open for the duration of the call.
    let at = unsafe { libc::lseek(file.as_raw_fd(), offset as libc::off_t, libc::SEEK_DATA) };
    if at < 0 {
        let err = std::io::Error::last_os_error();
        assert_eq!(err.raw_os_error(), Some(libc::ENXIO), "SEEK_DATA: {err}");
    }
    at >= 0
}

/// Whether the filesystem under `dir` reports preallocated, unwritten space and
/// punched holes as holes; the tests that rely on it say so and pass otherwise.
fn reports_holes(dir: &Path) -> bool {
    let path = dir.join("hole-probe");
    let file = std::fs::File::create(&path).unwrap();
    // SAFETY: fallocate on a descriptor open for the duration of the call.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, 1 << 20) };
    file.write_all_at(b"data", 0).unwrap();
    file.sync_all().unwrap();
    let holes = rc == 0 && !data_after(&path, 4096);
    std::fs::remove_file(&path).unwrap();
    if !holes {
        eprintln!(
            "{}: the filesystem does not report holes; skipped",
            dir.display()
        );
    }
    holes
}

/// Makes `len` bytes at `offset` a hole, as a filesystem that stores blocks of
/// zeroes as holes (ZFS with compression) would.
fn punch_hole(path: &Path, offset: u64, len: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on a descriptor open for the duration of the call.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

fn next_page(offset: u64) -> u64 {
    offset.next_multiple_of(4096)
}

#[test]
fn flipped_bit_before_the_tail_is_an_error_naming_file_and_offset() {
    let scratch = Scratch::new("flip_before_tail");
    let offsets = write_separate_flushes(&scratch.shard(), 10);
    let segment = segment_path(&scratch.shard(), 0);
    // One bit in the payload of record 4, then one in the header of record 6.
    flip_bit(&segment, offsets[4] + RECORD_HEADER_LEN as u64 + 3, 5);
    let err = recover_shard(&scratch.shard()).unwrap_err();
    match &err {
        LogError::Corrupt { path, offset, .. } => {
            assert_eq!(path, &segment);
            assert_eq!(*offset, offsets[4]);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&segment.display().to_string()),
        "{message}"
    );
    assert!(message.contains(&offsets[4].to_string()), "{message}");

    flip_bit(&segment, offsets[4] + RECORD_HEADER_LEN as u64 + 3, 5);
    flip_bit(&segment, offsets[6] + 40, 0);
    let err = recover_shard(&scratch.shard()).unwrap_err();
    assert!(
        matches!(err, LogError::Corrupt { offset, .. } if offset == offsets[6]),
        "{err:?}"
    );
}

#[test]
fn flipped_bit_in_the_last_record_is_a_discarded_torn_tail() {
    let scratch = Scratch::new("flip_at_tail");
    let offsets = write_separate_flushes(&scratch.shard(), 10);
    let segment = segment_path(&scratch.shard(), 0);
    flip_bit(&segment, offsets[9] + 20, 2);
    let log = recover_shard(&scratch.shard()).unwrap();
    assert_eq!(log.torn_tails().len(), 1);
    assert_eq!(log.torn_tails()[0].path, segment);
    assert_eq!(log.torn_tails()[0].offset, offsets[9]);
    assert_eq!(versions(&scratch.shard()), (1..=9).collect::<Vec<_>>());
}

#[test]
fn damage_at_the_end_of_an_older_segment_is_corruption() {
    let scratch = Scratch::new("older_segment");
    let mut log = LogWriter::open(
        UringStorage::new().unwrap(),
        &scratch.shard(),
        config(4096),
        &LogResume::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    for i in 0..100 {
        log.append(&state(i, i + 1, &payload(i))).unwrap();
        log.sync_all(&mut events).unwrap();
    }
    drop(log);
    // Damage the CRC of the last record of segment 0. Within segment 0 it looks
    // like a torn tail, but segment 1 was written after it (acknowledged) without
    // a resume marker: that record was acknowledged, so this is corruption.
    let recovered = recover_shard(&scratch.shard()).unwrap();
    let (_, path0, valid0) = recovered.segments().next().unwrap();
    let path0 = path0.to_path_buf();
    let last_offset = {
        let bytes = std::fs::read(&path0).unwrap();
        let mut offset = 0;
        let mut last = 0;
        while offset < valid0 {
            last = offset;
            let len = u32::from_le_bytes(bytes[offset + 8..offset + 12].try_into().unwrap());
            offset += record_len(len as usize);
        }
        last
    };
    drop(recovered);
    flip_bit(&path0, last_offset as u64 + 4, 0);
    let err = recover_shard(&scratch.shard()).unwrap_err();
    assert!(
        matches!(&err, LogError::Corrupt { path, offset, .. } if *path == path0 && *offset == last_offset as u64),
        "{err:?}"
    );
}

#[test]
fn torn_write_at_the_tail_is_discarded_and_the_log_continues() {
    let scratch = Scratch::new("torn_tail");
    let mut log = LogWriter::open(
        SimStorage::new(),
        &scratch.shard(),
        config(64 << 10),
        &LogResume::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    for i in 0..5 {
        log.append(&state(i, i + 1, &payload(i))).unwrap();
    }
    log.sync_all(&mut events).unwrap();
    // The next flush is written but the power fails before its fdatasync, with
    // only part of the write on disk.
    log.storage_mut().stop_before(SimOpKind::Fdatasync);
    for i in 5..10 {
        log.append(&state(i, i + 1, &payload(i))).unwrap();
    }
    events.clear();
    log.poll(&mut events);
    assert!(!events.iter().any(|e| matches!(e, LogEvent::Durable { .. })));
    // 80 bytes: the first record of the flush (104 bytes) loses part of its
    // payload, not just padding zeroes that the preallocated file already has.
    let image = log
        .storage()
        .crash(CrashMode::TornLastWrite { keep_len_bytes: 80 });
    scratch.restore(&image);

    let recovered = recover_shard(&scratch.shard()).unwrap();
    assert_eq!(recovered.torn_tails().len(), 1);
    assert_eq!(versions(&scratch.shard()), (1..=5).collect::<Vec<_>>());

    // A new writer continues in a fresh segment; the old torn tail stays
    // acceptable because that segment starts with a resume marker.
    let resume = recovered.resume();
    drop(recovered);
    let mut log = LogWriter::open(
        UringStorage::new().unwrap(),
        &scratch.shard(),
        config(64 << 10),
        &resume,
    )
    .unwrap();
    for i in 5..10 {
        log.append(&state(i, i + 1, &payload(i))).unwrap();
    }
    log.sync_all(&mut events).unwrap();
    drop(log);
    assert_eq!(versions(&scratch.shard()), (1..=10).collect::<Vec<_>>());
    assert_eq!(
        recover_shard(&scratch.shard()).unwrap().torn_tails().len(),
        1
    );
}

#[test]
fn crash_during_checkpoint_deletion_skips_superseded_segments() {
    let scratch = Scratch::new("checkpoint_crash");
    let mut log = LogWriter::open(
        SimStorage::new(),
        &scratch.shard(),
        config(4096),
        &LogResume::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    for i in 0..200 {
        log.append(&state(i % 5, i + 1, &payload(i))).unwrap();
        log.poll(&mut events);
    }
    log.sync_all(&mut events).unwrap();
    let first_seq = log.begin_checkpoint().unwrap();
    for key in 0..5 {
        let version = 200 - (4 - key);
        log.append(&state(key, version, &payload(version - 1)))
            .unwrap();
    }
    log.sync_all(&mut events).unwrap();
    log.finish_checkpoint().unwrap();
    // The end marker becomes durable and the old segments are unlinked, but the
    // power fails before the directory sync makes the unlinks durable.
    log.storage_mut().stop_before(SimOpKind::FsyncDir);
    for _ in 0..3 {
        log.poll(&mut events);
    }
    assert!(log.checkpoint_in_progress());
    let image = log.storage().crash(CrashMode::LoseUnsynced);
    scratch.restore(&image);
    let old_segments = list_segments(&scratch.shard())
        .unwrap()
        .iter()
        .filter(|(seq, _)| *seq < first_seq)
        .count();
    assert!(old_segments > 0, "the unlinks were not durable");

    let recovered = recover_shard(&scratch.shard()).unwrap();
    let resume = recovered.resume();
    assert_eq!(resume.superseded.len(), old_segments);
    assert!(recovered.segments().all(|(seq, _, _)| seq >= first_seq));
    let mut fold = Fold::new();
    for r in recovered.records() {
        fold.offer(&r.header, r.payload);
    }
    let live: BTreeMap<u64, u64> = fold.live().map(|r| (r.id.key, r.version)).collect();
    assert_eq!(live, (0..5).map(|k| (k, 196 + k)).collect());
    drop(recovered);

    // The next writer finishes the deletion.
    let mut log = LogWriter::open(
        UringStorage::new().unwrap(),
        &scratch.shard(),
        config(4096),
        &resume,
    )
    .unwrap();
    events.clear();
    log.sync_all(&mut events).unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(e, LogEvent::Checkpointed { segments_deleted, .. } if *segments_deleted == old_segments)));
    assert!(list_segments(&scratch.shard())
        .unwrap()
        .iter()
        .all(|(seq, _)| *seq >= first_seq));
}

#[test]
fn logs_of_three_shards_fold_into_two_with_each_entity_once() {
    let scratch = Scratch::new("reshard");
    // Entities 0..30 start on shard key % 3; every third one migrates to the next
    // shard with a higher version; every fifth is deleted where it lives last.
    let mut writers: Vec<_> = (0..3)
        .map(|s| {
            LogWriter::open(
                UringStorage::new().unwrap(),
                &shard_dir(&scratch.0, s),
                config(8192),
                &LogResume::default(),
            )
            .unwrap()
        })
        .collect();
    let mut expected = BTreeMap::new();
    for key in 0..30u64 {
        let home = (key % 3) as usize;
        let p1 = payload(key);
        writers[home].append(&state(key, 1, &p1)).unwrap();
        let mut last = (home, 1, p1);
        if key % 3 == 0 {
            let next = (home + 1) % 3;
            let p2 = payload(key + 100);
            writers[next].append(&state(key, 2, &p2)).unwrap();
            last = (next, 2, p2);
        }
        if key % 5 == 0 {
            writers[last.0]
                .append(&LogRecord::Tombstone {
                    kind: 1,
                    key,
                    version: last.1 + 1,
                })
                .unwrap();
        } else {
            expected.insert(key, (last.1, last.2));
        }
    }
    let mut events = Vec::new();
    for w in &mut writers {
        w.sync_all(&mut events).unwrap();
    }
    drop(writers);

    let shards = recover_data_dir(&scratch.0).unwrap();
    assert_eq!(shards.len(), 3);
    let mut fold = Fold::new();
    for (_, shard) in &shards {
        for r in shard.records() {
            fold.offer(&r.header, r.payload);
        }
    }
    let split = fold.into_owned_by(2, |id| (id.key % 2) as usize);
    let mut seen = BTreeMap::new();
    for (owner, entities) in split.iter().enumerate() {
        for e in entities {
            assert_eq!(e.id.key % 2, owner as u64);
            let before = seen.insert(e.id.key, (e.version, e.payload.to_vec()));
            assert!(before.is_none(), "entity {} recovered twice", e.id.key);
        }
    }
    assert_eq!(seen, expected);
}

/// What a test expects to find after recovery: every acknowledged record.
#[derive(Default)]
struct Ledger {
    /// LSN → (key, version, payload) of appended records not yet resolved.
    pending: BTreeMap<u64, (u64, u64, Vec<u8>)>,
    /// Acknowledged (durable) records by LSN.
    acked: BTreeMap<u64, (u64, u64, Vec<u8>)>,
    retryable_failures: usize,
}

impl Ledger {
    fn absorb(&mut self, events: &mut Vec<LogEvent>) {
        for event in events.drain(..) {
            if let LogEvent::Failed { error, .. } = &event {
                if error.is_retryable() {
                    self.retryable_failures += 1;
                }
            }
            match event {
                LogEvent::Durable { lsns } => {
                    for lsn in lsns {
                        if let Some(r) = self.pending.remove(&lsn) {
                            self.acked.insert(lsn, r);
                        }
                    }
                }
                LogEvent::Failed { lsns, .. } => {
                    for lsn in lsns {
                        self.pending.remove(&lsn);
                    }
                }
                LogEvent::Checkpointed { .. } => {}
            }
        }
    }
}

#[test]
fn random_faults_and_crashes_never_lose_an_acknowledged_record() {
    let rates = FaultRates {
        short_write_per_mille: 100,
        write_enospc_per_mille: 20,
        fdatasync_eio_per_mille: 5,
        fallocate_enospc_per_mille: 50,
    };
    let (mut retryable_failures, mut poisonings, mut torn_tails, mut acked) = (0, 0, 0, 0);
    for seed in 0..40u64 {
        let scratch = Scratch::new(&format!("soak-{seed}"));
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut ledger = Ledger::default();
        let mut image = SimImage::default();
        let mut version = 0u64;
        for round in 0..4 {
            let resume = if round == 0 {
                LogResume::default()
            } else {
                recover_shard(&scratch.shard()).unwrap().resume()
            };
            let mut sim = SimStorage::from_image(&image);
            sim.set_fault_rates(next(), rates);
            let mut log = LogWriter::open(sim, &scratch.shard(), config(4096), &resume).unwrap();
            let mut events = Vec::new();
            let steps = 50 + next() % 200;
            for _ in 0..steps {
                version += 1;
                let key = next() % 8;
                let p = payload(version);
                if let Ok(lsn) = log.append(&state(key, version, &p)) {
                    ledger.pending.insert(lsn, (key, version, p));
                }
                if next() % 3 == 0 {
                    log.poll(&mut events);
                    ledger.absorb(&mut events);
                }
                if log.poisoned().is_some() {
                    poisonings += 1;
                    break;
                }
            }
            let mode = match next() % 3 {
                0 => CrashMode::KeepUnsynced,
                1 => CrashMode::LoseUnsynced,
                _ => CrashMode::TornLastWrite {
                    keep_len_bytes: (next() % 300) as usize,
                },
            };
            image = log.storage().crash(mode);
            drop(log);
            scratch.restore(&image);
            ledger.pending.clear();

            let recovered = recover_shard(&scratch.shard())
                .unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"));
            let found: BTreeMap<u64, (u64, u64, Vec<u8>)> = recovered
                .records()
                .filter(|r| r.record_type() == RecordType::State)
                .map(|r| {
                    (
                        r.header.lsn,
                        (r.header.key, r.header.version, r.payload.to_vec()),
                    )
                })
                .collect();
            torn_tails += recovered.torn_tails().len();
            for (lsn, record) in &ledger.acked {
                assert_eq!(
                    found.get(lsn),
                    Some(record),
                    "seed {seed} round {round}: acknowledged lsn {lsn} lost"
                );
            }
        }
        retryable_failures += ledger.retryable_failures;
        acked += ledger.acked.len();
    }
    // The faults were exercised, not just configured.
    assert!(retryable_failures > 0, "no ENOSPC happened");
    assert!(poisonings > 0, "no fsync failure happened");
    assert!(torn_tails > 0, "no torn tail happened");
    assert!(acked > 1000, "only {acked} records acknowledged");
}

#[test]
fn recovery_skips_the_preallocated_remainder_of_segments() {
    let scratch = Scratch::new("zero_remainder");
    if !reports_holes(&scratch.0) {
        return;
    }
    let shard = scratch.shard();
    let segment_len_bytes = 4 << 20;
    // Four writers that each start a new segment (as every writer did before
    // writers continued the last one) leave eight mostly empty segments.
    let mut events = Vec::new();
    let mut version = 0;
    for _ in 0..4 {
        let mut resume = recover_shard(&shard).unwrap().resume();
        resume.reuse_from = None;
        let mut log = LogWriter::open(
            UringStorage::new().unwrap(),
            &shard,
            config(segment_len_bytes),
            &resume,
        )
        .unwrap();
        for _ in 0..50 {
            version += 1;
            log.append(&state(version % 7, version, &payload(version)))
                .unwrap();
        }
        log.sync_all(&mut events).unwrap();
    }
    assert_eq!(list_segments(&shard).unwrap().len(), 8);

    let started = Instant::now();
    let recovered = recover_shard(&shard).unwrap();
    eprintln!(
        "recovered {} records from 8 segments of {segment_len_bytes} bytes in {:?}",
        recovered.record_count(),
        started.elapsed()
    );
    assert_eq!(versions(&shard), (1..=200).collect::<Vec<_>>());
    assert!(recovered.torn_tails().is_empty());
    // The log's length is its records', not its segments'.
    let records_len: usize = recovered.records().map(|r| r.len_bytes()).sum();
    assert_eq!(recovered.log_len_bytes(), records_len as u64);
    assert_eq!(recovered.record_count(), 200 + 4);
    // Had recovery read the zeroes after the records, the page cache would
    // now hold them and SEEK_DATA would report them as data.
    for (seq, path, valid_len) in recovered.segments() {
        assert!(
            !data_after(path, next_page(valid_len as u64)),
            "segment {seq} was read past its records"
        );
    }
}

#[test]
fn zeroes_after_the_records_end_the_log_and_damage_before_them_is_still_an_error() {
    let scratch = Scratch::new("zero_end");
    let offsets = write_separate_flushes(&scratch.shard(), 10);
    let segment = segment_path(&scratch.shard(), 0);
    let end = offsets[9] + record_len(payload(9).len()) as u64;
    let recovered = recover_shard(&scratch.shard()).unwrap();
    assert!(recovered.torn_tails().is_empty());
    assert_eq!(recovered.log_len_bytes(), end);
    assert_eq!(
        recovered.resume().reuse_from,
        Some(LogPosition {
            segment_seq: 0,
            offset: end
        })
    );
    drop(recovered);
    // A bit flipped before the tail is reported, the zeroes after it are not
    // taken for part of the log.
    flip_bit(&segment, offsets[3] + 20, 1);
    let err = recover_shard(&scratch.shard()).unwrap_err();
    assert!(
        matches!(&err, LogError::Corrupt { path, offset, .. } if *path == segment && *offset == offsets[3]),
        "{err:?}"
    );
    flip_bit(&segment, offsets[3] + 20, 1);
    // Garbage after the last record, where zeroes were: a torn tail, and a
    // writer does not append after it.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .write_all_at(&[0xab; 40], end)
        .unwrap();
    let recovered = recover_shard(&scratch.shard()).unwrap();
    assert_eq!(recovered.torn_tails().len(), 1);
    assert_eq!(recovered.torn_tails()[0].offset, end);
    assert_eq!(recovered.log_len_bytes(), end);
    let resume = recovered.resume();
    assert_ne!(resume.reuse_from.map(|at| at.segment_seq), Some(0));
}

#[test]
fn a_record_running_into_a_hole_is_read_whole_and_still_exposes_damage_before_it() {
    let scratch = Scratch::new("record_into_hole");
    if !reports_holes(&scratch.0) {
        return;
    }
    let shard = scratch.shard();
    let mut log = LogWriter::open(
        UringStorage::new().unwrap(),
        &shard,
        config(1 << 20),
        &LogResume::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    let small = payload(1);
    let mut big = vec![0u8; 32 << 10];
    big[0] = 0x5a;
    log.append(&state(1, 1, &small)).unwrap();
    log.sync_all(&mut events).unwrap();
    log.append(&state(2, 2, &big)).unwrap();
    log.sync_all(&mut events).unwrap();
    drop(log);
    let small_at = RECORD_HEADER_LEN as u64;
    let big_at = small_at + record_len(small.len()) as u64;
    let big_end = big_at + record_len(big.len()) as u64;
    // The big record ends in zeroes that the filesystem now keeps as a hole:
    // its data seems to end before the record does.
    let segment = segment_path(&shard, 0);
    let hole_at = next_page(big_at + RECORD_HEADER_LEN as u64 + 1);
    punch_hole(&segment, hole_at, next_page(big_end) - hole_at);
    assert!(!data_after(&segment, hole_at));

    let recovered = recover_shard(&shard).unwrap();
    assert!(
        recovered.torn_tails().is_empty(),
        "{:?}",
        recovered.torn_tails()
    );
    let payloads: Vec<Vec<u8>> = recovered
        .records()
        .filter(|r| r.record_type() == RecordType::State)
        .map(|r| r.payload.to_vec())
        .collect();
    assert_eq!(payloads, [small.clone(), big.clone()]);
    assert_eq!(recovered.log_len_bytes(), big_end);
    drop(recovered);

    // Damage to the first record: the big one, a later flush, proves it was
    // acknowledged, though most of it lies in the hole.
    flip_bit(&segment, small_at + RECORD_HEADER_LEN as u64, 3);
    let err = recover_shard(&shard).unwrap_err();
    assert!(
        matches!(&err, LogError::Corrupt { offset, .. } if *offset == small_at),
        "{err:?}"
    );
}

#[test]
fn twenty_restarts_append_to_the_last_segment_instead_of_leaving_segments_behind() {
    let scratch = Scratch::new("restarts");
    let shard = scratch.shard();
    let segment_len_bytes = 64 << 10;
    let mut events = Vec::new();
    let mut version = 0;
    for round in 0..20 {
        let recovered = recover_shard(&shard).unwrap();
        let resume = recovered.resume();
        drop(recovered);
        if round > 0 {
            let at = resume.reuse_from.expect("the last segment ended cleanly");
            assert!(at.offset > 0, "round {round}: {at:?}");
        }
        let mut log = LogWriter::open(
            UringStorage::new().unwrap(),
            &shard,
            config(segment_len_bytes),
            &resume,
        )
        .unwrap();
        for _ in 0..3 {
            version += 1;
            log.append(&state(version % 5, version, &payload(version)))
                .unwrap();
        }
        log.sync_all(&mut events).unwrap();
        drop(log);
        // The segment written and the one prepared ahead of it, every time.
        let segments = list_segments(&shard).unwrap();
        let bytes: u64 = segments
            .iter()
            .map(|(_, path)| std::fs::metadata(path).unwrap().len())
            .sum();
        assert_eq!(segments.len(), 2, "round {round}");
        assert_eq!(bytes, 2 * segment_len_bytes, "round {round}");
    }
    let recovered = recover_shard(&shard).unwrap();
    assert!(recovered.torn_tails().is_empty());
    let markers = recovered
        .records()
        .filter(|r| r.record_type() == RecordType::Resume)
        .count();
    assert_eq!(markers, 1, "only the first writer started a segment");
    drop(recovered);
    assert_eq!(versions(&shard), (1..=60).collect::<Vec<_>>());
}

#[test]
fn after_a_torn_tail_the_writer_reuses_the_empty_segment_and_the_waste_counts_towards_a_checkpoint()
{
    let scratch = Scratch::new("torn_restart");
    let shard = scratch.shard();
    let segment_len_bytes = 64 << 10;
    let open = |resume: &LogResume| {
        LogWriter::open(
            UringStorage::new().unwrap(),
            &shard,
            config(segment_len_bytes),
            resume,
        )
        .unwrap()
    };
    let recover = || {
        let recovered = recover_shard(&shard).unwrap();
        (recovered.resume(), recovered.log_len_bytes())
    };
    let mut events = Vec::new();
    let mut log = open(&LogResume::default());
    for version in 1..=10 {
        log.append(&state(version % 3, version, &payload(version)))
            .unwrap();
    }
    log.sync_all(&mut events).unwrap();
    drop(log);
    let (resume, len) = recover();
    assert_eq!(
        resume.reuse_from,
        Some(LogPosition {
            segment_seq: 0,
            offset: len
        })
    );
    assert_eq!(resume.len_bytes_since_checkpoint, len);

    // A torn write after the records: segment 0 cannot be appended to. The
    // writer starts in segment 1, which the last one prepared and left empty,
    // and segment 0's unwritten rest counts as used.
    std::fs::OpenOptions::new()
        .write(true)
        .open(segment_path(&shard, 0))
        .unwrap()
        .write_all_at(&[0xcd; 24], len)
        .unwrap();
    let (resume, _) = recover();
    assert_eq!(
        resume.reuse_from,
        Some(LogPosition {
            segment_seq: 1,
            offset: 0
        })
    );
    assert_eq!(resume.next_segment_seq, 2);
    assert_eq!(resume.len_bytes_since_checkpoint, segment_len_bytes);
    let mut log = open(&resume);
    for version in 11..=12 {
        log.append(&state(version % 3, version, &payload(version)))
            .unwrap();
    }
    log.sync_all(&mut events).unwrap();
    drop(log);
    let (resume, _) = recover();
    assert_eq!(list_segments(&shard).unwrap().len(), 3);
    let at = resume.reuse_from.expect("segment 1 ended cleanly");
    assert_eq!(at.segment_seq, 1);
    assert_eq!(
        resume.len_bytes_since_checkpoint,
        segment_len_bytes + at.offset
    );

    // A checkpoint reclaims segment 0 and 1 and restarts the count.
    let mut log = open(&resume);
    let first_seq = log.begin_checkpoint().unwrap();
    for key in 0..3 {
        let version = 10 + key;
        log.append(&state(key, version, &payload(version))).unwrap();
    }
    log.finish_checkpoint().unwrap();
    events.clear();
    log.sync_all(&mut events).unwrap();
    assert!(events.iter().any(|e| matches!(
        e,
        LogEvent::Checkpointed {
            segments_deleted: 2,
            ..
        }
    )));
    drop(log);
    let (resume, _) = recover();
    assert_eq!(resume.len_bytes_since_checkpoint, 0);
    assert_eq!(resume.reuse_from.map(|at| at.segment_seq), Some(first_seq));
    assert!(list_segments(&shard)
        .unwrap()
        .iter()
        .all(|(seq, _)| *seq >= first_seq));
}
