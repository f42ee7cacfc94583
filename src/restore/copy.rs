//! The checked copy: an archived file, decompressed, checked on the way,
//! and renamed into place only when every check passed.

use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};

use super::crossing;
use super::verify::{self, Tee, Verdict};
use super::RestoreError;
use crate::compress::{Codec, CodecError};
use crate::fsutil;
use crate::integrity::{self, Sum};
use crate::storage::Storage;
use crate::wal::{self, SegmentCheckError, WalName};

/// What a checked copy produced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Copied {
    pub written: u64,
    /// CRC-32C and size of the bytes placed at `dest`.
    pub sum: Sum,
}

/// What the copy pass saw.
struct Written {
    written: u64,
    /// A checksum stored with the data (sidecar or frame) covered it all.
    checksummed: bool,
    sum: Sum,
    /// The page headers' verdict (segments).
    pages: Verdict,
    walked: Verdict,
}

/// One archived file being restored: names for the errors.
struct Restoring<'a> {
    archive: &'a dyn Storage,
    stored: &'a str,
    archived: PathBuf,
    name: &'a WalName,
    codec: Codec,
    /// The name's timeline history (segments of timelines above 1).
    history: Vec<(u32, u64)>,
}

impl Restoring<'_> {
    fn write_err(&self, path: &Path) -> impl FnOnce(io::Error) -> RestoreError {
        let (path, archived) = (path.to_path_buf(), self.archived.clone());
        move |source| RestoreError::Write { path, archived, source }
    }

    fn unreadable(&self, source: io::Error) -> RestoreError {
        RestoreError::Unreadable {
            archived: self.archived.clone(),
            source,
        }
    }

    fn damaged(&self, why: String) -> RestoreError {
        RestoreError::Damaged {
            archived: self.archived.clone(),
            name: self.name.to_string(),
            why,
        }
    }

    /// Copies (decompressing) `input` to `tmp`, taking the checksum of what
    /// is written and, for a segment without a stored checksum, walking it.
    fn write(
        &self,
        input: Box<dyn Read + Send>,
        tmp: &Path,
        no_sidecar: bool,
        expected_sysid: Option<u64>,
    ) -> Result<Written, RestoreError> {
        // Default mode under PostgreSQL's umask: 0600, or 0640 with group access.
        let out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
            .map_err(self.write_err(tmp))?;
        let _writing = fsutil::hold_temp_lock(&out).map_err(self.write_err(tmp))?;
        // Every segment gets its page headers checked (the timelines, which no
        // checksum taken at archive time vouches for). One without a stored
        // checksum gets the full check; a compressed one is walked too, and the
        // walk counts only if a frame had no checksum.
        let walk = self.name.is_segment_data() && (self.codec != Codec::None || no_sidecar);
        let mut tee = Tee::new(
            BufWriter::with_capacity(1 << 20, out),
            self.name,
            walk,
            expected_sysid,
            &self.history,
        );
        let (written, checksummed) = if self.codec == Codec::None {
            let w = verify::copy(input, &mut tee).map_err(|e| match e {
                verify::CopyError::Read(source) => self.unreadable(source),
                verify::CopyError::Write(source) => self.write_err(tmp)(source),
            })?;
            (w, !no_sidecar)
        } else {
            self.codec
                .decompress(input, &mut tee)
                .map(|c| (c.written, c.checksummed))
                .map_err(|e| match e {
                    CodecError::Read(source) => self.unreadable(source),
                    CodecError::Write(source) => self.write_err(tmp)(source),
                    other => RestoreError::Corrupt {
                        archived: self.archived.clone(),
                        name: self.name.to_string(),
                        source: other,
                    },
                })?
        };
        let (out, sum, pages, walked) = tee.finish().map_err(self.write_err(tmp))?;
        drop(out);
        Ok(Written {
            written,
            checksummed,
            sum,
            pages,
            walked,
        })
    }

    /// PostgreSQL would stop at a wrong page address too, but as "end of
    /// WAL": archive recovery would end early. Refuse it here, loudly.
    fn check_segment(&self, tmp: &Path, w: &Written, expected_sysid: Option<u64>) -> Result<(), RestoreError> {
        let name = self.name;
        let header = wal::check_segment_file(tmp, name).map_err(|e| match e {
            SegmentCheckError::Io { source, .. } => self.write_err(tmp)(source),
            SegmentCheckError::Invalid { problem, .. } => RestoreError::WrongSegment {
                archived: self.archived.clone(),
                name: name.to_string(),
                problem,
            },
        })?;
        if let Some(ours) = expected_sysid.filter(|o| *o != header.system_id) {
            return Err(RestoreError::ForeignSegment {
                archived: self.archived.clone(),
                name: name.to_string(),
                why: format!("its page header says database system {}", header.system_id),
                ours,
            });
        }
        if let Some(Err(e)) = &w.pages {
            return Err(RestoreError::WrongSegment {
                archived: self.archived.clone(),
                name: name.to_string(),
                problem: wal::SegmentProblem::Page {
                    offset: e.offset,
                    why: e.why.clone(),
                },
            });
        }
        if w.checksummed {
            return Ok(());
        }
        match &w.walked {
            Some(Ok(s)) => {
                log::debug!(
                    "{name}: no stored checksum; full WAL check passed ({} records)",
                    s.records
                );
                crossing::check_crossing(self.archive, self.stored, name, s, &self.history)
            }
            Some(Err(e)) => Err(self.damaged(format!(
                "{}it fails the full WAL check {e}",
                if self.codec == Codec::None {
                    "it has no checksum file, so every record was checked, and "
                } else {
                    "its frames carry no content checksum, so every record was checked, and "
                }
            ))),
            None => unreachable!("walked whenever no checksum is stored"),
        }
    }
}

/// The temporary name in `dest`'s directory, and that directory.
fn temp_for(dest: &Path) -> Option<(PathBuf, PathBuf)> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_name = dest.file_name()?;
    Some((dir.to_path_buf(), fsutil::temp_name(dir, &file_name.to_string_lossy())))
}

/// Copies (decompressing) `stored` from `archive` to `dest` through a
/// temporary file, checking on the way: a plain file against its `.sum`
/// sidecar, a compressed one against its frame checksums, a segment against
/// its name and `expected_sysid`, and a segment without a stored checksum
/// with the full WAL check ([`crate::walcheck`]); a history file's contents.
pub(crate) fn copy_into_place(
    archive: &dyn Storage,
    stored: &str,
    codec: Codec,
    name: &WalName,
    dest: &Path,
    expected_sysid: Option<u64>,
) -> Result<Copied, RestoreError> {
    let r = Restoring {
        archive,
        stored,
        archived: PathBuf::from(archive.locate(stored)),
        name,
        codec,
        history: if name.is_segment_data() && name.timeline > 1 {
            crossing::load_history(archive, name.timeline)
        } else {
            Vec::new()
        },
    };
    let Some((dir, tmp_path)) = temp_for(dest) else {
        return Err(r.write_err(dest)(io::Error::other("%p does not end in a file name")));
    };
    // Removed on every error path; persisted by the rename into place.
    let tmp = tempfile::TempPath::try_from_path(&tmp_path).map_err(r.write_err(&tmp_path))?;
    let input = archive.get(stored).map_err(|e| r.unreadable(e))?;
    let stored_sum = if codec == Codec::None {
        verify::read_sidecar(archive, stored).map_err(|w| r.damaged(w))?
    } else {
        None
    };
    // Killed restores leave their temporary files in pg_wal: take back
    // those of dead writers (unlocked and old) while we are here.
    if let Err(e) = fsutil::reclaim_temp_files(&dir) {
        log::debug!("cannot reclaim temporary files in {}: {e}", dir.display());
    }
    let w = r.write(input, &tmp, stored_sum.is_none(), expected_sysid)?;
    if let Some(want) = stored_sum {
        if w.sum != want {
            return Err(r.damaged(format!(
                "its bytes ({}) differ from its checksum file {} ({want})",
                w.sum,
                integrity::sum_name(&r.archived.display().to_string())
            )));
        }
    }
    if name.is_segment_data() {
        r.check_segment(&tmp, &w, expected_sysid)?;
    } else if name.kind == wal::WalKind::History {
        let text = fs::read(&tmp).map_err(r.write_err(&tmp))?;
        verify::check_history(name, &text)
            .map_err(|why| r.damaged(format!("not a valid timeline history file: {why}")))?;
    }
    // No fsync: the archive still has the data, and PostgreSQL fsyncs the
    // files it keeps (durable_rename into pg_wal).
    tmp.persist(dest).map_err(|e| r.write_err(dest)(e.error))?;
    Ok(Copied {
        written: w.written,
        sum: w.sum,
    })
}
