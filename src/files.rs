//! Reading the files a user names (pipelines, the users file, policies and their data, secret
//! files): regular files only, never more than a cap, UTF-8 errors at their line and column.

use std::io::Read;
use std::path::Path;

use crate::diag::Pos;

/// Pipelines, policies and data: far above any real one (a 50,000-stage pipeline is 5.6 MB).
pub const MAX_TEXT: u64 = 64 << 20;
/// Users files and files holding one secret.
pub const MAX_SMALL: u64 = 1 << 20;

/// Why a file could not be read, in words, and where in it when that is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct ReadError {
    /// What went wrong.
    pub why: String,
    /// Where (a byte that is not UTF-8).
    pub pos: Option<Pos>,
}

/// Reads `path` as UTF-8 text if it is a regular file of at most `max` bytes. A FIFO, a device or
/// a folder is refused without being opened for reading (nothing blocks).
pub fn read_text(path: &Path, max: u64) -> Result<String, ReadError> {
    let plain = |why: String| ReadError { why, pos: None };
    let meta = std::fs::metadata(path).map_err(|e| plain(e.to_string()))?;
    if !meta.is_file() {
        let what = if meta.is_dir() { "a folder" } else { "not a regular file (a pipe, a socket or a device?)" };
        return Err(plain(format!("{what}: promote reads regular files only")));
    }
    if meta.len() > max {
        return Err(plain(format!("{} bytes, more than the {} MB promote reads from such a file", meta.len(), max >> 20)));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path).and_then(|f| f.take(max + 1).read_to_end(&mut bytes)).map_err(|e| plain(e.to_string()))?;
    if bytes.len() as u64 > max {
        return Err(plain(format!("more than the {} MB promote reads from such a file", max >> 20)));
    }
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        let start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let col = String::from_utf8_lossy(&good[start..]).chars().count() + 1;
        ReadError { why: format!("not UTF-8 text: an invalid byte at line {line}, column {col}"), pos: Some(Pos::new(line, col)) }
    })
}
