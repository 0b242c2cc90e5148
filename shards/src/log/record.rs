//! Layer 1, data: the on-disk log record format, sans-I/O.
//!
//! A shard's log is a sequence of segments; a segment is a sequence of records; a
//! record is a fixed 64-byte [`RecordHeader`] followed by a payload padded with
//! zeroes to a multiple of [`RECORD_ALIGN`] bytes. Records start at offsets that are
//! multiples of 8 in a segment, so a reader can look at a header in place in a
//! memory mapping (page aligned) without copying or parsing field by field.
//!
//! ```text
//!  offset  0        4        8            12       14    15     16
//!          | magic  | crc32c | payload_len| format | type | rsvd |
//!  16      | lsn                      (u64)                       |
//!  24      | segment_seq              (u64)                       |
//!  32      | batch_offset             (u64)                       |
//!  40      | kind                     (u64)                       |
//!  48      | key                      (u64)                       |
//!  56      | version                  (u64)                       |
//!  64      | payload (payload_len bytes) | zero padding to 8      |
//! ```
//!
//! The CRC32C covers every byte of the record after the `crc32c` field: the rest of
//! the header, the payload and its padding. The magic is checked exactly, so every
//! byte of a record is protected and any single flipped bit is detected.
//!
//! All integers are little-endian (the crate refuses to build on a big-endian
//! target rather than write a log no other machine could read).
//!
//! # Torn tails and corruption
//!
//! [`decode`] looks at one position and says [`Decoded::Record`], [`Decoded::End`]
//! (zeroes: preallocated space never written) or [`Decoded::Torn`]. One bad record
//! alone cannot say whether it is a torn tail (a write that never completed, which
//! was therefore never acknowledged) or corruption of acknowledged data. The
//! [`SegmentReader`] decides with what follows it in the segment:
//!
//! - The writer has at most one flush in flight, and a flush is only submitted
//!   once the previous one is durable. Every record carries `batch_offset`, the
//!   segment offset at which the flush that wrote it began.
//! - If a valid record follows the bad position `x` and its flush began after `x`,
//!   the bytes at `x` belonged to an earlier, completed (acknowledged) flush: that
//!   is corruption, and the reader reports the offset.
//! - If every valid record after `x` began its flush at or before `x`, they all
//!   belong to the one unfinished flush (the kernel may persist its pages in any
//!   order): `x` is a torn tail and everything from `x` on is discarded.
//!
//! Whether a torn tail is allowed in a segment that is not the last one is decided
//! one level up (see [`RecordType::Resume`]).

use bytemuck::{Pod, Zeroable};

pub use crate::hash::kind_hash;

#[cfg(not(target_endian = "little"))]
compile_error!("the percore log format is little-endian; big-endian targets are not supported");

/// `"PCLR"` read as a little-endian `u32`: the first four bytes of every record.
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"PCLR");

/// The format version this code writes and the only one it reads.
pub const RECORD_FORMAT_VERSION: u16 = 1;

/// Records start at, and payloads are padded to, multiples of this many bytes.
pub const RECORD_ALIGN: usize = 8;

/// Size of [`RecordHeader`] in bytes.
pub const RECORD_HEADER_LEN: usize = std::mem::size_of::<RecordHeader>();

/// The largest payload a record may carry: 16 MiB. A record is also limited by the
/// segment size it is written into.
pub const RECORD_PAYLOAD_LEN_MAX: usize = 16 << 20;

/// Offset of the first byte covered by the CRC (the byte after the `crc32c` field).
const CRC_START: usize = 8;

const _: () = assert!(RECORD_HEADER_LEN == 64);
const _: () = assert!(RECORD_HEADER_LEN & (RECORD_ALIGN - 1) == 0);
const _: () = assert!(std::mem::align_of::<RecordHeader>() == RECORD_ALIGN);
const _: () = assert!(RECORD_PAYLOAD_LEN_MAX & (RECORD_ALIGN - 1) == 0);
const _: () = assert!(RECORD_PAYLOAD_LEN_MAX <= u32::MAX as usize);

/// The fixed header in front of every record, readable in place from a mapping.
///
/// Invariants of a valid header (checked by [`encode`] before writing with
/// `debug_assert!` and by [`decode`] after reading, always):
/// `magic == RECORD_MAGIC`, `format_version == RECORD_FORMAT_VERSION`,
/// `record_type` is a known [`RecordType`], `reserved == 0`,
/// `payload_len <= RECORD_PAYLOAD_LEN_MAX`, `batch_offset` is a multiple of
/// [`RECORD_ALIGN`], and `crc32c` matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct RecordHeader {
    /// Always [`RECORD_MAGIC`]; zero means "never written".
    pub magic: u32,
    /// CRC32C (Castagnoli) of the record from byte 8 to the end of the padding.
    pub crc32c: u32,
    /// Payload length in bytes, before padding.
    pub payload_len: u32,
    /// Always [`RECORD_FORMAT_VERSION`].
    pub format_version: u16,
    /// A [`RecordType`] as `u8`.
    pub record_type: u8,
    /// Zero; room for flags in a later format version.
    pub reserved: u8,
    /// Log sequence number: per shard, strictly increasing in log order.
    pub lsn: u64,
    /// Sequence number of the segment the record was written to (its file name).
    pub segment_seq: u64,
    /// Offset in the segment where the flush that wrote this record began.
    pub batch_offset: u64,
    /// Stable 64-bit hash of the entity kind's name (see [`kind_hash`]).
    pub kind: u64,
    /// Entity key within its kind.
    pub key: u64,
    /// Entity version: a newer state of an entity has a higher version.
    pub version: u64,
}

/// What a record means to recovery.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordType {
    /// The full state of entity (`kind`, `key`) at `version`; the payload is the state.
    State = 1,
    /// Entity (`kind`, `key`) was deleted at `version`; no payload.
    Tombstone = 2,
    /// A checkpoint begins; `key` holds the first segment sequence of the checkpoint.
    /// Everything live is rewritten from here on.
    CheckpointBegin = 3,
    /// The checkpoint that began at segment `key` is complete: once this record is
    /// durable, every segment with a lower sequence is superseded.
    CheckpointEnd = 4,
    /// Written first in a segment when the previous segment may end in a torn or
    /// failed write: after a restart, or after a failed write made the writer
    /// abandon its segment. A torn tail in a segment is accepted only if no later
    /// segment holds records or the next one that does starts with this marker.
    Resume = 5,
}

impl RecordType {
    /// The type for a raw header byte, if it is one.
    pub const fn from_u8(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::State),
            2 => Some(Self::Tombstone),
            3 => Some(Self::CheckpointBegin),
            4 => Some(Self::CheckpointEnd),
            5 => Some(Self::Resume),
            _ => None,
        }
    }

    /// Whether this record is about an entity (a state or a tombstone) rather than
    /// a marker of the log itself.
    pub const fn is_entity(self) -> bool {
        matches!(self, Self::State | Self::Tombstone)
    }
}

/// Everything in a header that the writer chooses; the rest (magic, CRC, lengths,
/// format) is derived by [`encode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordFields {
    /// What the record means.
    pub record_type: RecordType,
    /// Log sequence number.
    pub lsn: u64,
    /// Segment the record is written to.
    pub segment_seq: u64,
    /// Segment offset where the flush carrying this record begins (multiple of 8).
    pub batch_offset: u64,
    /// Entity kind hash.
    pub kind: u64,
    /// Entity key.
    pub key: u64,
    /// Entity version.
    pub version: u64,
}

/// A valid record, borrowing its payload from the bytes it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The header (a 64-byte copy; validation read it in place).
    pub header: RecordHeader,
    /// The payload, without padding.
    pub payload: &'a [u8],
}

impl RecordView<'_> {
    /// The record's type (always valid: [`decode`] checked it).
    pub fn record_type(&self) -> RecordType {
        // A view is only built from a checked header; State is never reached.
        RecordType::from_u8(self.header.record_type).unwrap_or(RecordType::State)
    }

    /// Bytes the record occupies in the segment: header, payload and padding.
    pub fn len_bytes(&self) -> usize {
        record_len(self.payload.len())
    }
}

/// Why the bytes at a position are not a valid record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Torn {
    /// Fewer than [`RECORD_HEADER_LEN`] bytes remain and they are not all zero.
    ShortHeader {
        /// Bytes available.
        available: usize,
    },
    /// The magic is wrong.
    BadMagic {
        /// The value found.
        found: u32,
    },
    /// A format version this code does not read.
    BadFormatVersion {
        /// The value found.
        found: u16,
    },
    /// An unknown record type.
    BadRecordType {
        /// The value found.
        found: u8,
    },
    /// The reserved byte is not zero.
    BadReserved,
    /// `payload_len` is above [`RECORD_PAYLOAD_LEN_MAX`].
    BadLength {
        /// The value found.
        payload_len: u32,
    },
    /// `batch_offset` is not a multiple of [`RECORD_ALIGN`].
    BadBatchOffset,
    /// The record runs past the end of the bytes available.
    ShortPayload {
        /// Bytes the record needs.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The CRC does not match.
    BadCrc {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// A valid record that names another segment than the one being read.
    WrongSegment {
        /// Segment sequence in the header.
        found: u64,
        /// Segment sequence of the file.
        expected: u64,
    },
}

impl std::fmt::Display for Torn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Torn::ShortHeader { available } => {
                write!(
                    f,
                    "{available} non-zero bytes, too short for a record header"
                )
            }
            Torn::BadMagic { found } => write!(f, "bad magic {found:#010x}"),
            Torn::BadFormatVersion { found } => write!(
                f,
                "format version {found}, this build reads {RECORD_FORMAT_VERSION}"
            ),
            Torn::BadRecordType { found } => write!(f, "unknown record type {found}"),
            Torn::BadReserved => write!(f, "reserved header byte is not zero"),
            Torn::BadLength { payload_len } => write!(
                f,
                "payload length {payload_len} above the maximum {RECORD_PAYLOAD_LEN_MAX}"
            ),
            Torn::BadBatchOffset => write!(f, "batch offset is not 8-byte aligned"),
            Torn::ShortPayload { needed, available } => {
                write!(f, "record needs {needed} bytes, only {available} remain")
            }
            Torn::BadCrc { stored, computed } => write!(
                f,
                "crc32c mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            Torn::WrongSegment { found, expected } => write!(
                f,
                "record belongs to segment {found}, found in segment {expected}"
            ),
        }
    }
}

/// What [`decode`] found at a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record; it occupies `record.len_bytes()` bytes.
    Record(RecordView<'a>),
    /// Zeroes (or nothing): space that was never written.
    End,
    /// Not a valid record: a torn tail or corruption, see [`SegmentReader`].
    Torn(Torn),
}

/// Total bytes a record with a `payload_len`-byte payload occupies.
pub const fn record_len(payload_len: usize) -> usize {
    RECORD_HEADER_LEN + padded_len(payload_len)
}

/// `len` rounded up to a multiple of [`RECORD_ALIGN`].
pub const fn padded_len(len: usize) -> usize {
    (len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// Appends one record to `out` and returns the number of bytes appended
/// (`record_len(payload.len())`).
///
/// `out.len()` must be a multiple of [`RECORD_ALIGN`] so the record starts
/// aligned relative to the buffer's start. Does not allocate when
/// `out.capacity() - out.len()` is at least the record length.
///
/// # Panics
///
/// If `payload.len() > RECORD_PAYLOAD_LEN_MAX` (always), and in debug builds if
/// `out.len()` or `fields.batch_offset` is not 8-byte aligned.
pub fn encode(out: &mut Vec<u8>, fields: &RecordFields, payload: &[u8]) -> usize {
    assert!(
        payload.len() <= RECORD_PAYLOAD_LEN_MAX,
        "record payload of {} bytes is above RECORD_PAYLOAD_LEN_MAX ({RECORD_PAYLOAD_LEN_MAX})",
        payload.len()
    );
    debug_assert_eq!(out.len() % RECORD_ALIGN, 0, "record must start aligned");
    debug_assert_eq!(fields.batch_offset % RECORD_ALIGN as u64, 0);
    debug_assert!(
        fields.record_type.is_entity() || payload.is_empty(),
        "markers carry no payload"
    );
    debug_assert!(
        fields.record_type != RecordType::Tombstone || payload.is_empty(),
        "tombstones carry no payload"
    );

    let start = out.len();
    let total = record_len(payload.len());
    let header = RecordHeader {
        magic: RECORD_MAGIC,
        crc32c: 0,
        payload_len: payload.len() as u32,
        format_version: RECORD_FORMAT_VERSION,
        record_type: fields.record_type as u8,
        reserved: 0,
        lsn: fields.lsn,
        segment_seq: fields.segment_seq,
        batch_offset: fields.batch_offset,
        kind: fields.kind,
        key: fields.key,
        version: fields.version,
    };
    out.reserve(total);
    out.extend_from_slice(bytemuck::bytes_of(&header));
    out.extend_from_slice(payload);
    out.resize(start + total, 0);
    let crc = crc32c::crc32c(&out[start + CRC_START..start + total]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());

    debug_assert!(
        matches!(decode(&out[start..]), Decoded::Record(v) if v.payload == payload && v.len_bytes() == total),
        "an encoded record must decode to itself"
    );
    total
}

/// Reads the record at the start of `bytes`. Never panics, whatever the input.
///
/// A header is read in place when `bytes` is 8-byte aligned (as in a segment
/// mapping) and copied out otherwise.
pub fn decode(bytes: &[u8]) -> Decoded<'_> {
    if bytes.len() < RECORD_HEADER_LEN {
        return if bytes.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Torn(Torn::ShortHeader {
                available: bytes.len(),
            })
        };
    }
    let header_bytes = &bytes[..RECORD_HEADER_LEN];
    let header: RecordHeader = match bytemuck::try_from_bytes::<RecordHeader>(header_bytes) {
        Ok(in_place) => *in_place,
        Err(_) => bytemuck::pod_read_unaligned(header_bytes),
    };
    if header.magic != RECORD_MAGIC {
        return if header.magic == 0 && header_bytes.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Torn(Torn::BadMagic {
                found: header.magic,
            })
        };
    }
    if header.format_version != RECORD_FORMAT_VERSION {
        return Decoded::Torn(Torn::BadFormatVersion {
            found: header.format_version,
        });
    }
    if RecordType::from_u8(header.record_type).is_none() {
        return Decoded::Torn(Torn::BadRecordType {
            found: header.record_type,
        });
    }
    if header.reserved != 0 {
        return Decoded::Torn(Torn::BadReserved);
    }
    let payload_len = header.payload_len as usize;
    if payload_len > RECORD_PAYLOAD_LEN_MAX {
        return Decoded::Torn(Torn::BadLength {
            payload_len: header.payload_len,
        });
    }
    if header.batch_offset & (RECORD_ALIGN as u64 - 1) != 0 {
        return Decoded::Torn(Torn::BadBatchOffset);
    }
    let total = record_len(payload_len);
    if bytes.len() < total {
        return Decoded::Torn(Torn::ShortPayload {
            needed: total,
            available: bytes.len(),
        });
    }
    let computed = crc32c::crc32c(&bytes[CRC_START..total]);
    if computed != header.crc32c {
        return Decoded::Torn(Torn::BadCrc {
            stored: header.crc32c,
            computed,
        });
    }
    let view = RecordView {
        header,
        payload: &bytes[RECORD_HEADER_LEN..RECORD_HEADER_LEN + payload_len],
    };
    // Re-check after reading what was asserted before writing; the CRC makes these
    // hold unless the writer itself was wrong.
    debug_assert!(bytes[RECORD_HEADER_LEN + payload_len..total]
        .iter()
        .all(|&b| b == 0));
    debug_assert!(view.record_type().is_entity() || view.payload.is_empty());
    Decoded::Record(view)
}

/// Reads again a record that [`decode`] accepted in these same bytes, without
/// recomputing the CRC: for a second pass over an already validated region (a
/// recovery reader handing out records it checked when it opened the log).
///
/// Checks only what keeps it in bounds, so it never panics, but it trusts that
/// the bytes did not change since they were validated.
pub fn decode_prevalidated(bytes: &[u8]) -> Option<RecordView<'_>> {
    let header_bytes = bytes.get(..RECORD_HEADER_LEN)?;
    let header: RecordHeader = match bytemuck::try_from_bytes::<RecordHeader>(header_bytes) {
        Ok(in_place) => *in_place,
        Err(_) => bytemuck::pod_read_unaligned(header_bytes),
    };
    let payload_len = header.payload_len as usize;
    if header.magic != RECORD_MAGIC || payload_len > RECORD_PAYLOAD_LEN_MAX {
        return None;
    }
    let payload = bytes.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + payload_len)?;
    debug_assert!(matches!(decode(bytes), Decoded::Record(_)));
    Some(RecordView { header, payload })
}

/// How a segment's records end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Records end at `offset`; nothing valid follows.
    Clean {
        /// Offset of the first byte after the last record.
        offset: usize,
    },
    /// Records end at `offset` with the remains of a flush that never completed;
    /// they are discarded.
    Torn {
        /// Offset of the first byte that is not a valid record.
        offset: usize,
        /// What was found there.
        reason: Option<Torn>,
    },
    /// The bytes at `offset` are bad but a later flush wrote valid records after
    /// them (first at `next_valid_offset`): acknowledged data was damaged.
    Corrupt {
        /// Offset of the bad bytes.
        offset: usize,
        /// What was found there (`None`: zeroes where a record should be).
        reason: Option<Torn>,
        /// Offset of the first valid record of a later flush.
        next_valid_offset: usize,
    },
}

impl SegmentEnd {
    /// Offset where valid records end.
    pub fn offset(&self) -> usize {
        match *self {
            SegmentEnd::Clean { offset }
            | SegmentEnd::Torn { offset, .. }
            | SegmentEnd::Corrupt { offset, .. } => offset,
        }
    }
}

/// Iterates over the valid records of one segment in order, then tells how the
/// segment ends ([`SegmentReader::end`]).
///
/// Work is bounded by the segment length: each record is checked once, and the
/// scan after the last record steps 8 bytes at a time over what remains.
#[derive(Clone, Debug)]
pub struct SegmentReader<'a> {
    bytes: &'a [u8],
    segment_seq: u64,
    /// Offset of the next record; always a multiple of [`RECORD_ALIGN`].
    pos: usize,
    end: Option<SegmentEnd>,
}

impl<'a> SegmentReader<'a> {
    /// Reads `bytes`, the whole contents of segment `segment_seq`. Records that name
    /// another segment are treated as invalid.
    pub fn new(bytes: &'a [u8], segment_seq: u64) -> Self {
        Self {
            bytes,
            segment_seq,
            pos: 0,
            end: None,
        }
    }

    /// How the segment ends, once the iterator has returned `None`; `None` before.
    pub fn end(&self) -> Option<SegmentEnd> {
        self.end
    }

    /// Reads the rest of the records (discarding them) and returns how the
    /// segment ends.
    pub fn finish(mut self) -> SegmentEnd {
        for _ in self.by_ref() {}
        self.end.unwrap_or(SegmentEnd::Clean { offset: self.pos })
    }

    fn check(&self, at: usize) -> Result<RecordView<'a>, Option<Torn>> {
        match decode(&self.bytes[at..]) {
            Decoded::Record(view) if view.header.segment_seq != self.segment_seq => {
                Err(Some(Torn::WrongSegment {
                    found: view.header.segment_seq,
                    expected: self.segment_seq,
                }))
            }
            Decoded::Record(view) => Ok(view),
            Decoded::End => Err(None),
            Decoded::Torn(torn) => Err(Some(torn)),
        }
    }

    /// Classifies the bad (or zero) position `at`: looks for valid records after
    /// it and compares where their flushes began.
    fn classify(&self, at: usize, reason: Option<Torn>) -> SegmentEnd {
        let mut pos = at + RECORD_ALIGN;
        let mut first_later_flush = None;
        while pos + RECORD_HEADER_LEN <= self.bytes.len() {
            // Fast path over zeroes, the usual case after the last record.
            if self.bytes[pos..pos + 4] != RECORD_MAGIC.to_le_bytes() {
                pos += RECORD_ALIGN;
                continue;
            }
            match self.check(pos) {
                Ok(view) => {
                    if view.header.batch_offset > at as u64 {
                        first_later_flush = Some(pos);
                        break;
                    }
                    pos += view.len_bytes();
                }
                Err(_) => pos += RECORD_ALIGN,
            }
        }
        match (first_later_flush, reason) {
            (Some(next_valid_offset), reason) => SegmentEnd::Corrupt {
                offset: at,
                reason,
                next_valid_offset,
            },
            (None, None) => SegmentEnd::Clean { offset: at },
            (None, Some(reason)) => SegmentEnd::Torn {
                offset: at,
                reason: Some(reason),
            },
        }
    }
}

impl<'a> Iterator for SegmentReader<'a> {
    /// A record and its offset in the segment.
    type Item = (usize, RecordView<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.end.is_some() {
            return None;
        }
        let at = self.pos;
        match self.check(at) {
            Ok(view) => {
                self.pos += view.len_bytes();
                debug_assert_eq!(self.pos % RECORD_ALIGN, 0);
                Some((at, view))
            }
            Err(reason) => {
                self.end = Some(self.classify(at, reason));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fields(lsn: u64, batch_offset: u64) -> RecordFields {
        RecordFields {
            record_type: RecordType::State,
            lsn,
            segment_seq: 7,
            batch_offset,
            kind: kind_hash("account"),
            key: 42,
            version: lsn + 1,
        }
    }

    /// Encodes records as one flush per record unless `one_flush`.
    fn segment(payloads: &[&str], one_flush: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            let batch_offset = if one_flush { 0 } else { out.len() as u64 };
            encode(&mut out, &fields(i as u64, batch_offset), p.as_bytes());
        }
        out
    }

    #[test]
    fn header_layout_is_64_bytes_with_magic_first() {
        assert_eq!(RECORD_HEADER_LEN, 64);
        let mut out = Vec::new();
        encode(&mut out, &fields(1, 0), b"abc");
        assert_eq!(&out[..4], b"PCLR");
        assert_eq!(out.len(), 72);
    }

    #[test]
    fn encode_does_not_allocate_when_capacity_suffices() {
        let mut out = Vec::with_capacity(1024);
        let ptr = out.as_ptr();
        encode(&mut out, &fields(1, 0), &[9; 100]);
        encode(&mut out, &fields(2, 0), &[9; 100]);
        assert_eq!(out.as_ptr(), ptr);
        assert_eq!(out.capacity(), 1024);
    }

    #[test]
    fn zeroes_and_empty_input_are_end() {
        assert_eq!(decode(&[]), Decoded::End);
        assert_eq!(decode(&[0; 10]), Decoded::End);
        assert_eq!(decode(&[0; 4096]), Decoded::End);
    }

    #[test]
    fn truncated_record_is_torn() {
        let mut out = Vec::new();
        encode(&mut out, &fields(1, 0), &[5; 30]);
        for cut in 1..out.len() {
            assert!(
                matches!(decode(&out[..cut]), Decoded::Torn(_)),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn misaligned_input_decodes_by_copy() {
        let mut out = vec![0u8];
        let mut rec = Vec::new();
        encode(&mut rec, &fields(3, 0), b"hello");
        out.extend_from_slice(&rec);
        let Decoded::Record(view) = decode(&out[1..]) else {
            panic!("misaligned record must decode");
        };
        assert_eq!(view.payload, b"hello");
    }

    #[test]
    fn prevalidated_decode_matches_decode() {
        let seg = segment(&["one", "two"], false);
        let Decoded::Record(full) = decode(&seg[72..]) else {
            panic!("valid record");
        };
        assert_eq!(decode_prevalidated(&seg[72..]), Some(full));
        assert_eq!(decode_prevalidated(&seg[72..100]), None);
        assert_eq!(decode_prevalidated(&[0; 64]), None);
    }

    #[test]
    fn kind_hash_is_stable() {
        // FNV-1a test vectors; a change here breaks every existing log.
        assert_eq!(kind_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(kind_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(kind_hash("account"), kind_hash("transfer"));
    }

    #[test]
    fn reader_returns_all_records_and_a_clean_end() {
        let mut seg = segment(&["one", "two!", ""], false);
        seg.resize(seg.len() + 4096, 0);
        let mut reader = SegmentReader::new(&seg, 7);
        let payloads: Vec<&[u8]> = reader.by_ref().map(|(_, v)| v.payload).collect();
        assert_eq!(payloads, [&b"one"[..], b"two!", b""]);
        assert_eq!(
            reader.end(),
            Some(SegmentEnd::Clean {
                offset: 72 * 2 + 64
            })
        );
    }

    #[test]
    fn bad_last_flush_is_a_torn_tail() {
        let mut seg = segment(&["one", "two", "three"], false);
        let last = 72 * 2;
        seg[last + 70] ^= 1;
        seg.resize(seg.len() + 512, 0);
        let end = SegmentReader::new(&seg, 7).finish();
        assert!(matches!(end, SegmentEnd::Torn { offset, .. } if offset == last));
    }

    #[test]
    fn bad_record_followed_by_a_later_flush_is_corruption() {
        let mut seg = segment(&["one", "two", "three"], false);
        seg[72 + 66] ^= 0x10;
        let end = SegmentReader::new(&seg, 7).finish();
        assert!(matches!(
            end,
            SegmentEnd::Corrupt {
                offset: 72,
                reason: Some(Torn::BadCrc { .. }),
                next_valid_offset: 144
            }
        ));
    }

    #[test]
    fn zeroed_hole_before_a_later_flush_is_corruption() {
        let mut seg = segment(&["one", "two", "three"], false);
        seg[72..144].fill(0);
        let end = SegmentReader::new(&seg, 7).finish();
        assert!(matches!(
            end,
            SegmentEnd::Corrupt {
                offset: 72,
                reason: None,
                next_valid_offset: 144
            }
        ));
    }

    #[test]
    fn hole_inside_the_last_flush_is_a_torn_tail() {
        // One flush of three records whose middle page never reached the disk.
        let mut seg = segment(&["one", "two", "three"], true);
        seg[72..144].fill(0);
        let end = SegmentReader::new(&seg, 7).finish();
        assert_eq!(end, SegmentEnd::Clean { offset: 72 });
        seg[72] = 1;
        let end = SegmentReader::new(&seg, 7).finish();
        assert!(matches!(end, SegmentEnd::Torn { offset: 72, .. }));
    }

    #[test]
    fn record_of_another_segment_is_rejected() {
        let seg = segment(&["one"], false);
        let end = SegmentReader::new(&seg, 8).finish();
        assert!(matches!(
            end,
            SegmentEnd::Torn {
                offset: 0,
                reason: Some(Torn::WrongSegment {
                    found: 7,
                    expected: 8
                })
            }
        ));
    }

    fn arb_fields() -> impl Strategy<Value = RecordFields> {
        (
            1u8..=5,
            any::<u64>(),
            any::<u64>(),
            any::<u64>().prop_map(|o| o & !7),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(t, lsn, segment_seq, batch_offset, kind, key, version)| {
                RecordFields {
                    record_type: RecordType::from_u8(t).unwrap_or(RecordType::State),
                    lsn,
                    segment_seq,
                    batch_offset,
                    kind,
                    key,
                    version,
                }
            })
    }

    fn payload_for(f: &RecordFields, payload: Vec<u8>) -> Vec<u8> {
        if f.record_type == RecordType::State {
            payload
        } else {
            Vec::new()
        }
    }

    proptest! {
        #[test]
        fn round_trip(f in arb_fields(), payload in proptest::collection::vec(any::<u8>(), 0..600)) {
            let payload = payload_for(&f, payload);
            let mut out = Vec::new();
            let n = encode(&mut out, &f, &payload);
            prop_assert_eq!(n, out.len());
            prop_assert_eq!(n % RECORD_ALIGN, 0);
            let Decoded::Record(view) = decode(&out) else {
                return Err(TestCaseError::fail("no record"));
            };
            prop_assert_eq!(view.payload, &payload[..]);
            prop_assert_eq!(view.len_bytes(), n);
            prop_assert_eq!(view.record_type(), f.record_type);
            prop_assert_eq!(
                (view.header.lsn, view.header.segment_seq, view.header.batch_offset),
                (f.lsn, f.segment_seq, f.batch_offset)
            );
            prop_assert_eq!(
                (view.header.kind, view.header.key, view.header.version),
                (f.kind, f.key, f.version)
            );
        }

        #[test]
        fn every_single_bit_flip_is_detected(
            f in arb_fields(),
            payload in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let payload = payload_for(&f, payload);
            let mut out = Vec::new();
            encode(&mut out, &f, &payload);
            for bit in 0..out.len() * 8 {
                let mut flipped = out.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(
                    !matches!(decode(&flipped), Decoded::Record(_)),
                    "flip of bit {} not detected", bit
                );
            }
        }

        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
            let _ = SegmentReader::new(&bytes, 0).finish();
        }

        #[test]
        fn decode_never_panics_on_mutated_records(
            f in arb_fields(),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let payload = payload_for(&f, payload);
            let mut out = Vec::new();
            encode(&mut out, &f, &payload);
            encode(&mut out, &f, &payload);
            for (at, byte) in edits {
                let len = out.len();
                out[at % len] = byte;
            }
            let cut = cut % (out.len() + 1);
            let _ = decode(&out[..cut]);
            let reader = SegmentReader::new(&out[..cut], f.segment_seq);
            let end = reader.finish();
            prop_assert!(end.offset() <= cut);
        }
    }
}
