//! Reading the files the sidecar is given (its config, the token, a CA
//! bundle): regular files only, and never more than a bound. A FIFO would
//! block the start for good and `/dev/zero` would grow the process until
//! it is killed; both get a clear error instead.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

/// The largest config file read: 10,000 checks take about 1.5 MiB.
pub(crate) const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The largest token file read.
pub(crate) const MAX_TOKEN_BYTES: u64 = 64 << 10;

/// The largest CA bundle read (Mozilla's whole bundle is about 220 KiB).
pub(crate) const MAX_CA_BYTES: u64 = 4 << 20;

/// Why a file could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Opening or reading failed.
    Io(std::io::Error),
    /// The path names something other than a regular file (after
    /// following symbolic links, as a mounted Secret's are).
    NotAFile(&'static str),
    /// The file holds more than the bound.
    TooLarge(u64),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{}", crate::text::describe_io(e)),
            ReadError::NotAFile(what) => write!(f, "is {what}, not a regular file"),
            ReadError::TooLarge(limit) => write!(f, "is larger than {limit} bytes"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Reads the regular file at `path`, up to `limit` bytes. Opening does not
/// block (a FIFO is refused, not waited on).
pub(crate) fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(ReadError::Io)?;
    let kind = file.metadata().map_err(ReadError::Io)?.file_type();
    if !kind.is_file() {
        return Err(ReadError::NotAFile(describe(kind)));
    }
    let mut bytes = Vec::new();
    File::take(file, limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge(limit));
    }
    Ok(bytes)
}

fn describe(kind: std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let e = read_bounded(&fifo, 10).unwrap_err();
        assert_eq!(e.to_string(), "is a FIFO, not a regular file");
    }

    #[test]
    fn devices_and_directories_are_refused() {
        assert_eq!(
            read_bounded(Path::new("/dev/zero"), 10).unwrap_err().to_string(),
            "is a character device, not a regular file"
        );
        assert_eq!(
            read_bounded(Path::new("/"), 10).unwrap_err().to_string(),
            "is a directory, not a regular file"
        );
    }

    #[test]
    fn a_file_is_read_up_to_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read_bounded(&path, 10).unwrap(), b"0123456789");
        assert_eq!(
            read_bounded(&path, 9).unwrap_err().to_string(),
            "is larger than 9 bytes"
        );
        let missing = read_bounded(&dir.path().join("missing"), 9).unwrap_err();
        assert_eq!(missing.to_string(), "no such file or directory");
    }
}
