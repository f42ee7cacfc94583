//! Stored forms of a WAL file that pitrkit cannot read (other archivers'
//! compressions): answering "not found" beside one would end recovery
//! short of WAL the archive holds.

use std::path::PathBuf;

use crate::storage::Storage;
use crate::wal::WalName;

/// Suffixes other archivers used (OmniPITR: bzip2, xz, ...), looked for
/// on every "not found".
const FOREIGN_SUFFIXES: &[&str] = &[
    ".bz2", ".bzip2", ".xz", ".lzma", ".lz", ".lzo", ".lzfse", ".sz", ".Z", ".zstd", ".gzip", ".br", ".7z", ".zip",
];

/// `X.<ext>` in a compression pitrkit cannot read, if the archive holds
/// one: only the named suffixes. Any other `X.<ext>` (`X.bad`, `X.damaged`)
/// may be a file a DBA moved aside on purpose to end recovery there, and
/// neither `X.partial` (pg_receivewal's unfinished segment, really not
/// there yet) nor `X.sum` is a form of `X`.
pub(super) fn foreign_form(archive: &dyn Storage, name: &WalName) -> Option<PathBuf> {
    FOREIGN_SUFFIXES
        .iter()
        .map(|s| format!("{name}{s}"))
        .find(|n| matches!(archive.stat(n), Ok(Some(_))))
        .map(|n| PathBuf::from(archive.locate(&n)))
}
