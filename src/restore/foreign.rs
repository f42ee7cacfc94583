//! Stored forms of a WAL file that pitrkit cannot read (other archivers'
//! compressions): answering "not found" beside one would end recovery
//! short of WAL the archive holds.

use std::path::PathBuf;

use crate::compress::Codec;
use crate::storage::{Listed, Storage};
use crate::wal::WalName;

/// Suffixes other archivers used (OmniPITR: bzip2, xz, ...), looked for
/// on every "not found".
const FOREIGN_SUFFIXES: &[&str] = &[
    ".bz2", ".xz", ".lzma", ".lz", ".lzo", ".Z", ".zstd", ".gzip", ".br", ".7z", ".zip",
];

/// `X.<ext>` that pitrkit cannot read, if the archive holds one: the named
/// suffixes, and with `scan` any `X.<ext>` (a listing of the whole
/// directory: only where "not found" would end recovery). Neither
/// `X.partial` (pg_receivewal's unfinished segment, really not there yet)
/// nor `X.sum` nor `X.<offset>.backup` is a form of `X`.
pub(super) fn foreign_form(archive: &dyn Storage, name: &WalName, scan: bool) -> Option<PathBuf> {
    let named = FOREIGN_SUFFIXES
        .iter()
        .map(|s| format!("{name}{s}"))
        .find(|n| matches!(archive.stat(n), Ok(Some(_))));
    if named.is_some() || !scan {
        return named.map(|n| PathBuf::from(archive.locate(&n)));
    }
    let prefix = format!("{name}.");
    archive.list().ok()?.into_iter().find_map(|l| {
        let Listed::Name { name: file, .. } = l else {
            return None;
        };
        let ext = file.strip_prefix(&prefix)?;
        let foreign = !ext.is_empty()
            && !ext.contains('.')
            && !["partial", "sum"].contains(&ext)
            && Codec::from_suffix(&format!(".{ext}")).is_none();
        foreign.then(|| PathBuf::from(archive.locate(&file)))
    })
}
