//! The log writer: group commit through real io_uring and through the simulated
//! storage, rotation, wake-ups, and what each fault does to acknowledgements.

use std::io::Read;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use percore::log::{
    list_segments, recover_shard, segment_path, AppendError, CrashMode, Durability, Fold,
    LogConfig, LogError, LogEvent, LogPosition, LogRecord, LogResume, LogWriter, RecordHeader,
    RecordType, SimFault, SimOpKind, SimStorage, Storage, UringStorage, RECORD_HEADER_LEN,
};

/// A fresh directory under cargo's per-target scratch space, removed when the
/// test passes (kept for inspection when it fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("log_writer")
            .join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }

    fn shard(&self) -> PathBuf {
        self.0.join("shard-000")
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
    let len = (i * 7 % 50) as usize;
    (0..len).map(|j| (i as usize + j) as u8).collect()
}

fn state(i: u64, payload: &[u8]) -> LogRecord<'_> {
    LogRecord::State {
        kind: 1,
        key: i % 10,
        version: i + 1,
        payload,
    }
}

/// LSNs reported durable, in order, checking the events are contiguous.
fn durable(events: &[LogEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            LogEvent::Durable { lsns } => Some(lsns.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn failed(events: &[LogEvent]) -> Vec<(Range<u64>, LogError)> {
    events
        .iter()
        .filter_map(|e| match e {
            LogEvent::Failed { lsns, error } => Some((lsns.clone(), error.clone())),
            _ => None,
        })
        .collect()
}

/// (key, version, payload) of every state record in the shard's log, in order.
fn recovered_states(shard: &Path) -> Vec<(u64, u64, Vec<u8>)> {
    let log = recover_shard(shard).expect("recover");
    log.records()
        .filter(|r| r.record_type() == RecordType::State)
        .map(|r| (r.header.key, r.header.version, r.payload.to_vec()))
        .collect()
}

fn expected_states(range: Range<u64>) -> Vec<(u64, u64, Vec<u8>)> {
    range.map(|i| (i % 10, i + 1, payload(i))).collect()
}

#[test]
fn uring_round_trip_is_durable_and_recovered() {
    let scratch = Scratch::new("round_trip");
    let storage = UringStorage::new().expect("io_uring");
    let mut log = LogWriter::open(
        storage,
        &scratch.shard(),
        config(64 << 10),
        &LogResume::default(),
    )
    .expect("open");
    let mut lsns = Vec::new();
    let mut events = Vec::new();
    for i in 0..300 {
        lsns.push(log.append(&state(i, &payload(i))).expect("append"));
        if i % 17 == 0 {
            log.poll(&mut events);
        }
    }
    log.sync_all(&mut events).expect("sync");
    assert!(failed(&events).is_empty());
    let durable = durable(&events);
    for lsn in &lsns {
        assert!(durable.contains(lsn), "lsn {lsn} never reported durable");
    }
    assert!(log.durable_watermark() > *lsns.last().unwrap());
    drop(log);

    assert_eq!(recovered_states(&scratch.shard()), expected_states(0..300));
    for (_, path) in list_segments(&scratch.shard()).unwrap() {
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(len, 64 << 10, "segment {} is preallocated", path.display());
    }
}

#[test]
fn uring_rotates_segments_when_full() {
    let scratch = Scratch::new("rotation");
    let storage = UringStorage::new().expect("io_uring");
    let mut log = LogWriter::open(
        storage,
        &scratch.shard(),
        config(4096),
        &LogResume::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    for i in 0..400 {
        log.append(&state(i, &payload(i))).unwrap();
        log.poll(&mut events);
    }
    log.sync_all(&mut events).unwrap();
    drop(log);

    let segments = list_segments(&scratch.shard()).unwrap();
    assert!(segments.len() >= 8, "only {} segments", segments.len());
    let seqs: Vec<u64> = segments.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(recovered_states(&scratch.shard()), expected_states(0..400));
}

#[test]
fn uring_log_continues_after_reopening() {
    let scratch = Scratch::new("reopen");
    let mut events = Vec::new();
    for round in 0..3u64 {
        let resume = recover_shard(&scratch.shard()).unwrap().resume();
        let storage = UringStorage::new().unwrap();
        let mut log = LogWriter::open(storage, &scratch.shard(), config(8192), &resume).unwrap();
        for i in round * 50..(round + 1) * 50 {
            log.append(&state(i, &payload(i))).unwrap();
        }
        log.sync_all(&mut events).unwrap();
    }
    assert_eq!(recovered_states(&scratch.shard()), expected_states(0..150));
}

#[test]
fn wake_fd_byte_arrives_after_a_flush() {
    let scratch = Scratch::new("wake");
    let (doorbell, mut bell) = UnixStream::pair().unwrap();
    doorbell.set_nonblocking(true).unwrap();
    // A guard against hanging forever if the byte never comes; not a timing claim.
    bell.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let config = LogConfig {
        wake_fd: Some(doorbell.as_raw_fd()),
        ..config(64 << 10)
    };
    let mut log = LogWriter::open(
        UringStorage::new().unwrap(),
        &scratch.shard(),
        config,
        &LogResume::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    // Let the first segment be prepared (its chain rings the bell too).
    log.sync_all(&mut events).unwrap();
    let mut drained = [0u8; 64];
    bell.set_nonblocking(true).unwrap();
    while bell.read(&mut drained).is_ok() {}
    bell.set_nonblocking(false).unwrap();

    let lsn = log.append(&state(1, b"ring")).unwrap();
    log.poll(&mut events);
    // Block this thread the way a parked shard would, in another syscall: the
    // flush's chain must complete and write the byte without further polling.
    let mut byte = [0u8; 1];
    bell.read_exact(&mut byte).expect("wake-up byte");
    assert_eq!(byte, [1]);
    log.sync_all(&mut events).unwrap();
    assert!(durable(&events).contains(&lsn));
}

#[test]
fn group_commit_stages_the_next_batch_while_one_is_in_flight() {
    let scratch = Scratch::new("group_commit");
    let mut log = LogWriter::open(
        SimStorage::new(),
        &scratch.shard(),
        config(64 << 10),
        &LogResume::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    log.sync_all(&mut events).unwrap(); // the resume marker and the first segment
    let syncs_before = log.storage().op_count(SimOpKind::Fdatasync);

    let first: Vec<u64> = (0..3)
        .map(|i| log.append(&state(i, &payload(i))).unwrap())
        .collect();
    log.poll(&mut events); // submits the first batch
    let second: Vec<u64> = (3..6)
        .map(|i| log.append(&state(i, &payload(i))).unwrap())
        .collect();
    events.clear();
    log.poll(&mut events); // reaps the first, submits the second
    assert_eq!(durable(&events), first);
    events.clear();
    log.poll(&mut events);
    assert_eq!(durable(&events), second);
    assert_eq!(
        log.storage().op_count(SimOpKind::Fdatasync) - syncs_before,
        2,
        "one fdatasync per batch"
    );
}

#[test]
fn staging_pushes_back_when_full() {
    let scratch = Scratch::new("full");
    let config = LogConfig {
        staged_len_bytes_max: 4096,
        ..config(64 << 10)
    };
    let mut log = LogWriter::open(
        SimStorage::new(),
        &scratch.shard(),
        config,
        &LogResume::default(),
    )
    .unwrap();
    let big = vec![7u8; 1000];
    let mut accepted = 0;
    let err = loop {
        match log.append(&state(accepted, &big)) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 100, "staging never filled");
    };
    assert!(matches!(err, AppendError::Full { .. }), "{err:?}");
    let mut events = Vec::new();
    log.sync_all(&mut events).unwrap();
    log.append(&state(accepted, &big))
        .expect("room again after a flush");
    let too_big = vec![0u8; 64 << 10];
    assert!(matches!(
        log.append(&state(0, &too_big)),
        Err(AppendError::TooLarge { .. })
    ));
}

#[test]
fn short_write_is_resumed() {
    let scratch = Scratch::new("short_write");
    let mut sim = SimStorage::new();
    sim.fail_next(SimOpKind::Write, SimFault::ShortWrite { len_bytes: 100 });
    sim.fail_next(SimOpKind::Write, SimFault::ShortWrite { len_bytes: 1 });
    let mut log = LogWriter::open(
        sim,
        &scratch.shard(),
        config(64 << 10),
        &LogResume::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    let lsns: Vec<u64> = (0..20)
        .map(|i| log.append(&state(i, &payload(i))).unwrap())
        .collect();
    log.sync_all(&mut events).unwrap();
    assert!(failed(&events).is_empty());
    let durable = durable(&events);
    assert!(lsns.iter().all(|l| durable.contains(l)));
    assert!(
        log.storage().op_count(SimOpKind::Write) >= 3,
        "resumed twice"
    );

    log.storage()
        .crash(CrashMode::LoseUnsynced)
        .write_to_disk()
        .unwrap();
    assert_eq!(recovered_states(&scratch.shard()), expected_states(0..20));
}

#[test]
fn fsync_error_poisons_the_log() {
    let scratch = Scratch::new("fsync_error");
    let mut log = LogWriter::open(
        SimStorage::new(),
        &scratch.shard(),
        config(64 << 10),
        &LogResume::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    let acked = log.append(&state(0, &payload(0))).unwrap();
    log.sync_all(&mut events).unwrap();
    assert!(durable(&events).contains(&acked));

    log.storage_mut()
        .fail_next(SimOpKind::Fdatasync, SimFault::Errno(libc::EIO));
    let lost: Vec<u64> = (1..4)
        .map(|i| log.append(&state(i, &payload(i))).unwrap())
        .collect();
    events.clear();
    let err = log.sync_all(&mut events).unwrap_err();
    assert!(matches!(err, LogError::FsyncFailed { errno, .. } if errno == libc::EIO));
    assert!(!err.is_retryable());
    assert!(
        durable(&events).is_empty(),
        "nothing acknowledged after the failure"
    );
    let failed = failed(&events);
    assert_eq!(failed.len(), 1);
    assert!(lost.iter().all(|l| failed[0].0.contains(l)));
    assert_eq!(log.poisoned(), Some(&err));

    let syncs = log.storage().op_count(SimOpKind::Fdatasync);
    assert!(matches!(
        log.append(&state(9, b"")),
        Err(AppendError::Poisoned(LogError::FsyncFailed { .. }))
    ));
    log.poll(&mut events);
    assert_eq!(
        log.storage().op_count(SimOpKind::Fdatasync),
        syncs,
        "a failed fsync is never retried"
    );

    // What reached the disk: the acknowledged record, not the lost ones.
    log.storage()
        .crash(CrashMode::LoseUnsynced)
        .write_to_disk()
        .unwrap();
    assert_eq!(recovered_states(&scratch.shard()), expected_states(0..1));
}

#[test]
fn enospc_on_write_is_retryable_and_the_log_continues() {
    let scratch = Scratch::new("enospc_write");
    let mut log = LogWriter::open(
        SimStorage::new(),
        &scratch.shard(),
        config(64 << 10),
        &LogResume::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    log.append(&state(0, &payload(0))).unwrap();
    log.sync_all(&mut events).unwrap();

    // Part of the flush lands, then the disk is full.
    let sim = log.storage_mut();
    sim.fail_next(SimOpKind::Write, SimFault::ShortWrite { len_bytes: 100 });
    sim.fail_next(SimOpKind::Write, SimFault::Errno(libc::ENOSPC));
    let refused: Vec<u64> = (1..4)
        .map(|i| log.append(&state(i, &payload(i))).unwrap())
        .collect();
    events.clear();
    log.sync_all(&mut events).unwrap();
    let failed = failed(&events);
    assert_eq!(failed.len(), 1);
    assert!(failed[0].1.is_retryable(), "{:?}", failed[0].1);
    assert!(matches!(failed[0].1, LogError::NoSpace { .. }));
    assert!(refused.iter().all(|l| failed[0].0.contains(l)));
    assert!(log.poisoned().is_none());

    // The retry (a new append) succeeds, in a fresh segment.
    let retried = log.append(&state(1, &payload(1))).unwrap();
    events.clear();
    log.sync_all(&mut events).unwrap();
    assert!(durable(&events).contains(&retried));

    // A process crash keeps the partial flush in the abandoned segment: a valid
    // record that was reported failed (a failed change may survive, as with any
    // failed write), then a torn one. The next segment starts with a resume
    // marker, so recovery accepts that torn tail.
    log.storage()
        .crash(CrashMode::KeepUnsynced)
        .write_to_disk()
        .unwrap();
    let states = recovered_states(&scratch.shard());
    assert_eq!(states.first(), Some(&expected_states(0..1)[0]));
    assert_eq!(states.last(), Some(&expected_states(1..2)[0]));
    let log_now = recover_shard(&scratch.shard()).unwrap();
    assert_eq!(
        log_now.torn_tails().len(),
        1,
        "the abandoned segment's tail"
    );
}

#[test]
fn enospc_on_preallocation_is_retryable() {
    let scratch = Scratch::new("enospc_fallocate");
    let mut sim = SimStorage::new();
    sim.fail_next(SimOpKind::Fallocate, SimFault::Errno(libc::ENOSPC));
    let mut log = LogWriter::open(
        sim,
        &scratch.shard(),
        config(64 << 10),
        &LogResume::default(),
    )
    .unwrap();
    let refused = log.append(&state(0, &payload(0))).unwrap();
    let mut events = Vec::new();
    log.sync_all(&mut events).unwrap();
    let failed = failed(&events);
    assert_eq!(failed.len(), 1);
    assert!(failed[0].0.contains(&refused));
    assert!(failed[0].1.is_retryable());

    let retried = log.append(&state(0, &payload(0))).unwrap();
    events.clear();
    log.sync_all(&mut events).unwrap();
    assert!(durable(&events).contains(&retried));
    log.storage()
        .crash(CrashMode::LoseUnsynced)
        .write_to_disk()
        .unwrap();
    assert_eq!(recovered_states(&scratch.shard()), expected_states(0..1));
}

#[test]
fn buffered_durability_writes_without_fdatasync() {
    let scratch = Scratch::new("buffered");
    let config = LogConfig {
        durability: Durability::Buffered,
        ..config(64 << 10)
    };
    let mut log = LogWriter::open(
        SimStorage::new(),
        &scratch.shard(),
        config,
        &LogResume::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    for i in 0..10 {
        log.append(&state(i, &payload(i))).unwrap();
    }
    log.sync_all(&mut events).unwrap();
    assert_eq!(durable(&events).len(), 11); // with the resume marker
    assert_eq!(log.storage().op_count(SimOpKind::Fdatasync), 0);
    // It survives a process crash (the kernel keeps the page cache).
    log.storage()
        .crash(CrashMode::KeepUnsynced)
        .write_to_disk()
        .unwrap();
    assert_eq!(recovered_states(&scratch.shard()), expected_states(0..10));
}

#[test]
fn durability_off_writes_nothing() {
    let scratch = Scratch::new("off");
    let config = LogConfig {
        durability: Durability::Off,
        ..config(64 << 10)
    };
    let mut log = LogWriter::open(
        SimStorage::new(),
        &scratch.shard(),
        config,
        &LogResume::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    let lsn = log.append(&state(0, b"x")).unwrap();
    log.poll(&mut events);
    assert_eq!(durable(&events), [lsn]);
    assert!(log.storage().paths().is_empty());
    assert_eq!(log.begin_checkpoint(), Err(AppendError::DurabilityOff));
}

#[test]
fn checkpoint_supersedes_and_deletes_old_segments() {
    let scratch = Scratch::new("checkpoint");
    let mut log = LogWriter::open(
        UringStorage::new().unwrap(),
        &scratch.shard(),
        config(4096),
        &LogResume::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    // 10 keys, each rewritten 30 times, plus a deleted key.
    let mut latest = std::collections::BTreeMap::new();
    for i in 0..300 {
        let p = payload(i);
        log.append(&state(i, &p)).unwrap();
        latest.insert(i % 10, (i + 1, p));
        log.poll(&mut events);
    }
    log.append(&LogRecord::Tombstone {
        kind: 1,
        key: 3,
        version: 1000,
    })
    .unwrap();
    latest.remove(&3);
    log.sync_all(&mut events).unwrap();
    let before = list_segments(&scratch.shard()).unwrap().len();
    assert!(before > 5);

    let first_seq = log.begin_checkpoint().unwrap();
    for (key, (version, p)) in &latest {
        log.append(&LogRecord::State {
            kind: 1,
            key: *key,
            version: *version,
            payload: p,
        })
        .unwrap();
    }
    log.finish_checkpoint().unwrap();
    events.clear();
    log.sync_all(&mut events).unwrap();
    let deleted = events.iter().find_map(|e| match e {
        LogEvent::Checkpointed {
            first_segment_seq,
            segments_deleted,
        } => Some((*first_segment_seq, *segments_deleted)),
        _ => None,
    });
    assert_eq!(deleted.map(|d| d.0), Some(first_seq));
    assert!(deleted.unwrap().1 >= before - 1);
    assert!(list_segments(&scratch.shard())
        .unwrap()
        .iter()
        .all(|(seq, _)| *seq >= first_seq));
    drop(log);

    let recovered = recover_shard(&scratch.shard()).unwrap();
    let mut fold = Fold::new();
    for r in recovered.records() {
        fold.offer(&r.header, r.payload);
    }
    let live: std::collections::BTreeMap<u64, (u64, Vec<u8>)> = fold
        .live()
        .map(|r| (r.id.key, (r.version, r.payload.to_vec())))
        .collect();
    assert_eq!(live, latest);
}

#[test]
fn storage_trait_is_object_safe_enough_for_generic_use() {
    // The writer is generic over Storage; both implementations satisfy it.
    fn assert_storage<S: Storage>() {}
    assert_storage::<UringStorage>();
    assert_storage::<SimStorage>();
}

#[test]
fn dropping_a_writer_waits_for_its_flush_in_flight() {
    let scratch = Scratch::new("drop_in_flight");
    let mut log = LogWriter::open(
        UringStorage::new().unwrap(),
        &scratch.shard(),
        config(64 << 10),
        &LogResume::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    log.sync_all(&mut events).unwrap();
    for i in 0..20 {
        log.append(&state(i, &payload(i))).unwrap();
    }
    log.poll(&mut events); // submits one flush with all 20 records
    drop(log);
    assert_eq!(recovered_states(&scratch.shard()), expected_states(0..20));
}

/// The header of the first record of `bytes`, a segment (read in place; its
/// CRC is not checked).
fn first_header(bytes: &[u8]) -> RecordHeader {
    let header: RecordHeader = percore::bytemuck::pod_read_unaligned(&bytes[..RECORD_HEADER_LEN]);
    assert_eq!(&header.magic.to_le_bytes(), b"PCLR", "a record starts here");
    header
}

#[test]
fn a_writer_appends_to_the_segment_it_is_told_to_continue() {
    let dir = Path::new("/sim/continue/shard-000");
    let mut log =
        LogWriter::open(SimStorage::new(), dir, config(8192), &LogResume::default()).unwrap();
    let mut events = Vec::new();
    log.append(&state(0, &payload(0))).unwrap();
    log.sync_all(&mut events).unwrap();
    let image = log.storage().crash(CrashMode::LoseUnsynced);
    let end = 64 + percore::log::record_len(payload(0).len()) as u64;

    let resume = LogResume {
        next_lsn: 2,
        next_segment_seq: 2,
        segments: vec![0, 1],
        reuse_from: Some(LogPosition {
            segment_seq: 0,
            offset: end,
        }),
        ..LogResume::default()
    };
    let mut log =
        LogWriter::open(SimStorage::from_image(&image), dir, config(8192), &resume).unwrap();
    log.append(&state(1, &payload(1))).unwrap();
    log.sync_all(&mut events).unwrap();
    // No new segment, no marker: the record follows the first writer's.
    let segment0 = segment_path(dir, 0);
    assert_eq!(log.storage().paths().len(), 2);
    let bytes = log.storage().file(&segment0).unwrap();
    assert_eq!(
        &bytes[..end as usize],
        &image.files()[&segment0][..end as usize]
    );
    let appended = first_header(&bytes[end as usize..]);
    assert_eq!(appended.record_type, RecordType::State as u8);
    assert_eq!((appended.lsn, appended.batch_offset), (2, end));
    assert_eq!(first_header(bytes).record_type, RecordType::Resume as u8);
}

#[test]
fn a_segment_to_continue_that_cannot_be_opened_is_skipped_behind_a_resume_marker() {
    let dir = Path::new("/sim/missing/shard-000");
    let resume = LogResume {
        next_lsn: 10,
        next_segment_seq: 4,
        segments: vec![3],
        reuse_from: Some(LogPosition {
            segment_seq: 3,
            offset: 512,
        }),
        ..LogResume::default()
    };
    // Segment 3 is not on the (simulated) disk.
    let mut log = LogWriter::open(SimStorage::new(), dir, config(8192), &resume).unwrap();
    let mut events = Vec::new();
    let lsn = log.append(&state(0, &payload(0))).unwrap();
    log.sync_all(&mut events).unwrap();
    assert_eq!(durable(&events), [10, lsn]);
    let bytes = log.storage().file(&segment_path(dir, 4)).unwrap();
    assert_eq!(first_header(bytes).record_type, RecordType::Resume as u8);
    assert!(log.storage().file(&segment_path(dir, 3)).is_none());
}
