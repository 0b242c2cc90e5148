//! Where a shard's log lives: `DATA_DIR/shard-NNN/SEQUENCE.log`.
//!
//! Shard numbers are zero-padded to three digits and segment sequences to twenty
//! (every `u64` fits), so a directory listing sorts in log order. Files that do
//! not match are left alone.

use std::path::{Path, PathBuf};

use super::LogError;

/// Digits of a segment sequence in its file name.
pub const SEGMENT_SEQ_DIGITS: usize = 20;

/// The directory of shard `shard`'s log under `data_dir`.
pub fn shard_dir(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join(format!("shard-{shard:03}"))
}

/// The path of segment `seq` in a shard directory.
pub fn segment_path(shard_dir: &Path, seq: u64) -> PathBuf {
    shard_dir.join(format!("{seq:0width$}.log", width = SEGMENT_SEQ_DIGITS))
}

/// The sequence named by a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != SEGMENT_SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn parse_shard_name(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("shard-")?;
    if digits.len() < 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The shard log directories under `data_dir`, by shard number, ascending. All of
/// them, whatever the current shard count: entities are recovered from every log.
///
/// # Errors
///
/// [`LogError::Io`] if `data_dir` cannot be read. A missing `data_dir` is an
/// empty list.
pub fn list_shard_dirs(data_dir: &Path) -> Result<Vec<(usize, PathBuf)>, LogError> {
    let entries = match std::fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LogError::io(data_dir, "read_dir", &e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(data_dir, "read_dir", &e))?;
        let name = entry.file_name();
        let Some(shard) = name.to_str().and_then(parse_shard_name) else {
            continue;
        };
        if entry.path().is_dir() {
            out.push((shard, entry.path()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The segments in a shard directory, by sequence, ascending.
///
/// # Errors
///
/// [`LogError::Io`] if the directory cannot be read. A missing directory is an
/// empty list.
pub fn list_segments(shard_dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let entries = match std::fs::read_dir(shard_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LogError::io(shard_dir, "read_dir", &e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(shard_dir, "read_dir", &e))?;
        let name = entry.file_name();
        match name.to_str().and_then(parse_segment_name) {
            Some(seq) => out.push((seq, entry.path())),
            None => tracing::debug!(path = %entry.path().display(), "not a log segment; ignored"),
        }
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_in_log_order() {
        let dir = shard_dir(Path::new("/data"), 7);
        assert_eq!(dir, Path::new("/data/shard-007"));
        let a = segment_path(&dir, 9);
        let b = segment_path(&dir, 10);
        assert!(a < b);
        assert_eq!(
            a.file_name().and_then(|n| n.to_str()),
            Some("00000000000000000009.log")
        );
        assert_eq!(parse_segment_name("00000000000000000009.log"), Some(9));
        assert_eq!(
            parse_segment_name(&format!("{}.log", u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_name("9.log"), None);
        assert_eq!(parse_segment_name("0000000000000000000x.log"), None);
        assert_eq!(parse_shard_name("shard-012"), Some(12));
        assert_eq!(parse_shard_name("shard-1"), None);
    }
}
