//! The recovery reader: maps a shard's segments, checks every record, and hands
//! the valid ones out in log order, borrowing from the mappings (no copy).
//!
//! Per segment, [`SegmentReader`] separates a torn tail from corruption before it
//! (see [`percore_shards::record`]). Across segments:
//!
//! - A torn tail is accepted in the newest segment holding records, or in a
//!   segment whose next segment holding records begins with a
//!   [`RecordType::Resume`] marker (written by every new writer, and after a
//!   failed write made the writer abandon a segment). Anywhere else it is
//!   corruption: a later flush was acknowledged after it.
//! - LSNs must increase strictly through the log.
//! - A durable `CheckpointEnd` naming segment `S` supersedes the segments below
//!   `S`: they are left unread (a crash interrupted their deletion), listed in
//!   [`LogResume::superseded`] for the next writer to delete.
//!
//! Segments are read newest first, so superseded ones are never even mapped.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapOptions};
use percore_shards::record::{
    decode_prevalidated, RecordType, RecordView, SegmentEnd, SegmentReader,
};

use super::segment::{list_segments, list_shard_dirs};
use super::{LogError, LogResume};

/// A torn tail that recovery discarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// Segment file.
    pub path: PathBuf,
    /// Offset of the first discarded byte.
    pub offset: u64,
    /// What was found there.
    pub reason: String,
}

/// One segment's mapping and the length of its valid prefix.
#[derive(Debug)]
struct MappedSegment {
    seq: u64,
    path: PathBuf,
    /// `None` for an empty file.
    map: Option<Mmap>,
    /// Bytes of valid records from the start.
    valid_len: usize,
    records: usize,
    last_lsn: Option<u64>,
}

impl MappedSegment {
    fn valid_bytes(&self) -> &[u8] {
        self.map
            .as_deref()
            .and_then(|m| m.get(..self.valid_len))
            .unwrap_or(&[])
    }
}

/// A shard's log, checked and mapped; see the module docs.
///
/// Records borrow from the mappings, which live as long as this value: drop it
/// once recovery is done to unmap the files. The files must not be modified while
/// it lives (the writer only ever writes to new segments).
#[derive(Debug)]
pub struct RecoveredShard {
    dir: PathBuf,
    /// Segments read, ascending.
    segments: Vec<MappedSegment>,
    superseded: Vec<u64>,
    all_seqs: Vec<u64>,
    torn_tails: Vec<TornTail>,
    next_lsn: u64,
}

impl RecoveredShard {
    /// Every valid record, in log order, markers included (the fold ignores them).
    /// Headers are read in place from the mappings; the CRCs were checked when the
    /// log was opened and are not recomputed.
    pub fn records(&self) -> impl Iterator<Item = RecordView<'_>> + '_ {
        self.segments.iter().flat_map(|s| ValidRecords {
            bytes: s.valid_bytes(),
            pos: 0,
        })
    }

    /// Number of valid records.
    pub fn record_count(&self) -> usize {
        self.segments.iter().map(|s| s.records).sum()
    }

    /// Bytes of valid records read (the size of the live log).
    pub fn log_len_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.valid_len as u64).sum()
    }

    /// Torn tails discarded, newest first (more than one after repeated crashes).
    pub fn torn_tails(&self) -> &[TornTail] {
        &self.torn_tails
    }

    /// The segments read, ascending: (sequence, path, valid bytes).
    pub fn segments(&self) -> impl Iterator<Item = (u64, &Path, usize)> + '_ {
        self.segments
            .iter()
            .map(|s| (s.seq, s.path.as_path(), s.valid_len))
    }

    /// The shard directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a [`LogWriter`](super::LogWriter) continues this log.
    pub fn resume(&self) -> LogResume {
        LogResume {
            next_lsn: self.next_lsn,
            next_segment_seq: self.all_seqs.last().map_or(0, |s| s + 1),
            segments: self.all_seqs.clone(),
            superseded: self.superseded.clone(),
        }
    }
}

/// Iterates over a validated region.
struct ValidRecords<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for ValidRecords<'a> {
    type Item = RecordView<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let view = decode_prevalidated(self.bytes.get(self.pos..)?)?;
        self.pos += view.len_bytes();
        Some(view)
    }
}

fn corrupt(path: &Path, offset: usize, reason: impl Into<String>) -> LogError {
    LogError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason: reason.into(),
    }
}

fn map(path: &Path) -> Result<Option<Mmap>, LogError> {
    let file = File::open(path).map_err(|e| LogError::io(path, "open", &e))?;
    let len = file
        .metadata()
        .map_err(|e| LogError::io(path, "stat", &e))?
        .len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: the mapping is read-only and the file is not modified while it is
    // mapped: segments are only written by a writer, which creates new segments
    // and never reopens existing ones, and recovery runs before a writer opens
    // this directory. (Truncation by another process would raise SIGBUS; that
    // is outside the contract.)
    let map = unsafe { MmapOptions::new().populate().map(&file) }
        .map_err(|e| LogError::io(path, "mmap", &e))?;
    Ok(Some(map))
}

/// Reads and checks the log in `shard_dir`. A missing directory is an empty log.
///
/// # Errors
///
/// [`LogError::Corrupt`] naming the file and byte offset of a bad record before
/// the tail; [`LogError::Io`] if a file cannot be listed, opened or mapped.
pub fn recover_shard(shard_dir: &Path) -> Result<RecoveredShard, LogError> {
    let listed = list_segments(shard_dir)?;
    let mut read: Vec<MappedSegment> = Vec::new();
    let mut superseded = Vec::new();
    let mut torn_tails = Vec::new();
    let mut superseded_below: Option<u64> = None;
    // The nearest newer segment holding records: its first record's type and LSN.
    let mut newer: Option<(RecordType, u64, PathBuf)> = None;
    for (seq, path) in listed.iter().rev() {
        let seq = *seq;
        if superseded_below.is_some_and(|below| seq < below) {
            superseded.push(seq);
            continue;
        }
        let map = map(path)?;
        let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
        let mut reader = SegmentReader::new(bytes, seq);
        let mut first: Option<(RecordType, u64)> = None;
        let mut last_lsn: Option<u64> = None;
        let mut records = 0;
        let mut checkpoint_end: Option<u64> = None;
        for (offset, view) in reader.by_ref() {
            let lsn = view.header.lsn;
            if let Some(prev) = last_lsn.filter(|&prev| lsn <= prev) {
                return Err(corrupt(
                    path,
                    offset,
                    format!("log sequence number {lsn} does not follow {prev}"),
                ));
            }
            let record_type = view.record_type();
            if first.is_none() {
                first = Some((record_type, lsn));
            }
            if record_type == RecordType::CheckpointEnd && view.header.key <= seq {
                checkpoint_end = checkpoint_end.max(Some(view.header.key));
            }
            last_lsn = Some(lsn);
            records += 1;
        }
        let end = reader.end().unwrap_or(SegmentEnd::Clean { offset: 0 });
        match end {
            SegmentEnd::Clean { .. } => {}
            SegmentEnd::Corrupt {
                offset,
                reason,
                next_valid_offset,
            } => {
                let what = reason.map_or_else(|| "zeroes".to_string(), |r| r.to_string());
                return Err(corrupt(
                    path,
                    offset,
                    format!(
                        "{what}; a later flush wrote a valid record at byte {next_valid_offset}"
                    ),
                ));
            }
            SegmentEnd::Torn { offset, reason } => {
                let what = reason.map_or_else(|| "zeroes".to_string(), |r| r.to_string());
                if let Some((first_type, _, newer_path)) = &newer {
                    if *first_type != RecordType::Resume {
                        return Err(corrupt(
                            path,
                            offset,
                            format!(
                                "{what}; {} was written after it without a resume marker",
                                newer_path.display()
                            ),
                        ));
                    }
                }
                tracing::info!(path = %path.display(), offset, %what, "discarding torn log tail");
                torn_tails.push(TornTail {
                    path: path.clone(),
                    offset: offset as u64,
                    reason: what,
                });
            }
        }
        if let (Some(last), Some((_, newer_first, newer_path))) = (last_lsn, &newer) {
            if last >= *newer_first {
                return Err(corrupt(
                    path,
                    end.offset(),
                    format!(
                        "last log sequence number {last} is not below {newer_first}, the first of {}",
                        newer_path.display()
                    ),
                ));
            }
        }
        if let Some((first_type, first_lsn)) = first {
            newer = Some((first_type, first_lsn, path.clone()));
        }
        if let Some(below) = checkpoint_end {
            superseded_below = superseded_below.max(Some(below));
        }
        read.push(MappedSegment {
            seq,
            path: path.clone(),
            map,
            valid_len: end.offset(),
            records,
            last_lsn,
        });
    }
    read.reverse();
    superseded.reverse();
    let next_lsn = read
        .iter()
        .filter_map(|s| s.last_lsn)
        .max()
        .map_or(0, |lsn| lsn + 1);
    Ok(RecoveredShard {
        dir: shard_dir.to_path_buf(),
        segments: read,
        superseded,
        all_seqs: listed.iter().map(|(seq, _)| *seq).collect(),
        torn_tails,
        next_lsn,
    })
}

/// Recovers every shard log under `data_dir` (all of them, whatever the current
/// shard count), by shard number.
///
/// # Errors
///
/// The first error of [`recover_shard`], or [`LogError::Io`] listing `data_dir`.
pub fn recover_data_dir(data_dir: &Path) -> Result<Vec<(usize, RecoveredShard)>, LogError> {
    list_shard_dirs(data_dir)?
        .into_iter()
        .map(|(shard, dir)| Ok((shard, recover_shard(&dir)?)))
        .collect()
}
