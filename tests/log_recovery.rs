//! Recovery of shard logs: torn tails are discarded, damage before the tail is an
//! error naming file and offset, checkpoints interrupted by a crash still
//! recover, logs of any number of shards fold to one state per entity, and no
//! acknowledged record is lost whatever faults and crashes happen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use percore::log::{
    list_segments, record_len, recover_data_dir, recover_shard, segment_path, shard_dir, CrashMode,
    FaultRates, Fold, LogConfig, LogError, LogEvent, LogRecord, LogResume, LogWriter, RecordType,
    SimImage, SimOpKind, SimStorage, UringStorage, RECORD_HEADER_LEN,
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

fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 1 << bit;
    std::fs::write(path, bytes).unwrap();
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
