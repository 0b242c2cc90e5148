//! The record decoder and the segment reader must not panic on any input, and
//! what they accept must be consistent with the input's bounds.
//!
//! The first 8 bytes choose the segment sequence the reader expects; the rest is
//! the segment. The segment is also decoded at every 8-byte offset, the way a
//! reader resynchronises after a bad record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use percore_shards::driver::record::{decode, Decoded, SegmentEnd, SegmentReader, RECORD_ALIGN};

fuzz_target!(|data: &[u8]| {
    let (seq, segment) = match data.split_first_chunk::<8>() {
        Some((seq, rest)) => (u64::from_le_bytes(*seq), rest),
        None => (0, data),
    };
    for at in (0..segment.len()).step_by(RECORD_ALIGN) {
        if let Decoded::Record(view) = decode(&segment[at..]) {
            assert!(view.len_bytes() <= segment.len() - at);
            assert!(view.payload.len() + 64 <= view.len_bytes());
        }
    }
    let mut reader = SegmentReader::new(segment, seq);
    let mut end_of_records = 0;
    for (offset, view) in reader.by_ref() {
        assert_eq!(offset, end_of_records, "records are contiguous");
        assert_eq!(view.header.segment_seq, seq);
        end_of_records = offset + view.len_bytes();
    }
    let end = reader.end().expect("the reader ended");
    assert_eq!(end.offset(), end_of_records);
    if let SegmentEnd::Corrupt {
        next_valid_offset,
        offset,
        ..
    } = end
    {
        assert!(next_valid_offset > offset && next_valid_offset < segment.len());
    }
});
