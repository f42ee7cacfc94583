//! PostgreSQL's restore_command: `pitrkit restore -C standby.ini %f %p`.
//!
//! Replaces pg_standby (removed in PostgreSQL 14). PostgreSQL asks for the
//! archived file `%f` and wants it at `%p`, a path relative to its working
//! directory, the data directory. `archivedir/%f` is used, or else
//! `%f.zst`, `%f.lz4`, `%f.gz` (first found wins), decompressed in process.
//!
//! What is verified before `%p` appears (one pass over the data, while it
//! is copied to a temporary name; see `crate::layout` for the stored forms):
//! the archive directory exists and carries `-I`'s mark; a plain file
//! matches its `.sum` sidecar; a compressed one its frame checksums; a
//! segment names the expected database system (pg_control of the data
//! directory, else the archive's mark) and matches its name; a segment
//! without any stored checksum passes the full WAL check
//! (`crate::walcheck`); a history file is well formed; a prefetched copy
//! still matches the archive ([`prefetch`]).
//!
//! Exit status, which PostgreSQL reads as follows:
//!
//! - [`EXIT_RESTORED`] (0): `%p` holds the complete, verified file.
//! - [`EXIT_NOT_FOUND`] (1): not in the (marked) archive, or not yet for a
//!   delayed standby (`restore_delay`). PostgreSQL asks for missing files
//!   all the time (the next timeline's history file, the segment after the
//!   newest one), so this is logged at debug level only. PostgreSQL then
//!   tries pg_wal and streaming, or ends archive recovery. Also, in standby
//!   mode only, an archive that is not there (unmarked, missing, a dangling
//!   symlink): the standby keeps waiting, and a critical notification (at
//!   most one per 10 minutes) tells the DBA.
//! - [`EXIT_FATAL`] (200): anything else: an archive that is not there while
//!   PostgreSQL would end recovery on "not found" (archive recovery, PITR,
//!   a promotion under way), a damaged or foreign archive file, a segment
//!   whose header does not match its name, `%p` not writable, archivedir
//!   not configured, a bad `%f`. PostgreSQL treats an exit status above 125
//!   like a signal: recovery stops with a FATAL error. A status of 1 or 2
//!   instead would read as "not in the archive", and archive recovery would
//!   end at that segment and promote the server without the rest of the
//!   WAL, silently losing data. Stopping loudly lets the DBA fix the archive
//!   and restart.
//!
//! `restore_delay` applies only in standby mode (standby.signal), where "not
//! yet" means "ask again later". In archive recovery (recovery.signal: PITR,
//! failover of a stopped standby) a held-back segment would read as the end
//! of the archive and end recovery early, so there the delay is ignored; so
//! it is while `cmd_standby -F999` promotes a running standby
//! ([`crate::layout::PROMOTING_FILE`] in pgdata). A promotion started by
//! other means (`pg_promote()`, a trigger file) still stops at the delay.

pub mod prefetch;

pub mod verify;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::archive::sysid::{self, Recorded};
use crate::compress::{Codec, CodecError};
use crate::config::{ConfigError, StandbyConfig};
use crate::fsutil;
use crate::integrity::{self, Sum};
use crate::layout;
use crate::notify::Level;
use crate::wal::{self, BadWalName, SegmentCheckError, WalName};
use verify::Tee;

/// `%p` holds the file.
pub const EXIT_RESTORED: u8 = 0;
/// Not in the archive (yet): PostgreSQL looks elsewhere or ends archive recovery.
pub const EXIT_NOT_FOUND: u8 = 1;
/// A real failure: above 125, so PostgreSQL stops recovery instead of ending it early.
pub const EXIT_FATAL: u8 = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// Written to `%p`.
    Restored {
        archived: PathBuf,
        codec: Codec,
        bytes: u64,
    },
    /// No such file in the archive.
    NotFound,
    /// Archived less than `restore_delay` ago: held back for now.
    Delayed { archived: PathBuf, age: Duration },
    /// Standby mode only: the archive is not there (unmarked, missing, a
    /// dangling symlink), so "not found" cannot be known. Exit 1 keeps the
    /// standby waiting (it never promotes on it); a critical notification
    /// tells the DBA.
    ArchiveUnavailable { why: String },
}

impl RestoreOutcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            RestoreOutcome::Restored { .. } => EXIT_RESTORED,
            RestoreOutcome::NotFound | RestoreOutcome::Delayed { .. } | RestoreOutcome::ArchiveUnavailable { .. } => {
                EXIT_NOT_FOUND
            }
        }
    }
}

/// Every way a restore can really fail; all of them exit with [`EXIT_FATAL`].
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
    #[error("archivedir {dir}: {why}")]
    ArchiveDir { dir: PathBuf, why: String },
    #[error("{0}; restore_command must be 'pitrkit restore -C <standby.ini> %f %p'")]
    BadName(#[from] BadWalName),
    #[error("{archived}: cannot read the archived file: {source}; it must be readable by the PostgreSQL OS user; fix that and restart PostgreSQL")]
    Unreadable {
        archived: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{archived}: {source}; the archived copy is damaged: replace it with an intact copy of {name} (another archive, or the master's pg_wal if still there) and restart PostgreSQL")]
    Corrupt {
        archived: PathBuf,
        name: String,
        #[source]
        source: CodecError,
    },
    #[error("{archived}: {}, so it is not WAL segment {name} (renamed, truncated, or from another cluster or timeline); replace it with the real {name} and restart PostgreSQL", .problem.render("restored data"))]
    WrongSegment {
        archived: PathBuf,
        name: String,
        problem: wal::SegmentProblem,
    },
    #[error("archivedir {dir}: {why}. PostgreSQL is {mode} and would end recovery on \"not found\", promoting without the WAL the archive holds, so restore stops it instead. Mount the share, or if {dir} really is the archive, mark it with `cmd_standby -C {config} -I` (while PostgreSQL is stopped), then start PostgreSQL again")]
    ArchiveUnavailable {
        dir: PathBuf,
        why: String,
        mode: &'static str,
        config: PathBuf,
    },
    #[error("{what} belongs to database system {archive}, but this cluster ({pg_control}) is system {ours}: two clusters must never share an archive. Point 'archivedir' at this cluster's own archive, then restart PostgreSQL")]
    ForeignArchive {
        what: String,
        archive: u64,
        ours: u64,
        pg_control: PathBuf,
    },
    #[error("{archived}: {why}; this is not {name} of database system {ours} (another cluster's WAL under an archived name): replace it with the real {name} and restart PostgreSQL")]
    ForeignSegment {
        archived: PathBuf,
        name: String,
        why: String,
        ours: u64,
    },
    #[error("{archived}: {why}; the archived copy is damaged: replace it with an intact copy of {name} (another archive, or the master's pg_wal if still there) and restart PostgreSQL")]
    Damaged {
        archived: PathBuf,
        name: String,
        why: String,
    },
    #[error("cannot write {path} (restoring {archived}): {source}; check free space and permissions in the data directory, then restart PostgreSQL")]
    Write {
        path: PathBuf,
        archived: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Restores archived `wanted` (`%f`) to `dest` (`%p`).
///
/// `dest` appears only complete and checked: the data goes to a temporary
/// name in the same directory, is checked while it is copied, and is
/// renamed over `dest`. On error the temporary file is removed and `dest`
/// is left as it was.
pub fn restore(cfg: &StandbyConfig, wanted: &str, dest: &Path) -> Result<RestoreOutcome, RestoreError> {
    let name = WalName::parse(wanted)?;
    let dir = cfg.require(
        &cfg.archivedir,
        "archivedir",
        "the directory the archiver ships WAL to; restore reads it",
    )?;

    // A history file means a timeline switch is being considered: drop
    // everything prefetched. A segment drops what is stale for its timeline.
    if name.is_segment_data() {
        prefetch::prune(dest, Some(name.timeline), Some(&name));
    } else {
        prefetch::prune(dest, None, None);
    }

    if let Err(why) = archivedir_state(&dir) {
        return unavailable(cfg, &dir, why);
    }
    let (expected, mark) = expected_system(cfg, &dir)?;

    if name.is_segment_data() && prefetch::enabled(cfg) {
        if let Some(bytes) = prefetch::take(&dir, dest, &name) {
            return Ok(RestoreOutcome::Restored {
                archived: prefetch::spool_dir(dest).join(name.as_str()),
                codec: Codec::None,
                bytes,
            });
        }
    }

    let (archived, codec, meta) = match find(&dir, &name) {
        Ok(Some(found)) => found,
        Ok(None) if mark == Recorded::Missing => {
            return unavailable(
                cfg,
                &dir,
                format!(
                    "has no {} mark, so it was never set up as an archive (an unmounted share is an empty directory): {name} cannot be known to be missing",
                    layout::SYSTEM_ID_FILE
                ),
            )
        }
        Ok(None) => {
            log::debug!("{name}: not in {}", dir.display());
            return Ok(RestoreOutcome::NotFound);
        }
        Err(FindError::Dangling(link)) => {
            return unavailable(
                cfg,
                &dir,
                format!(
                    "{} is a symbolic link to something that is not there (an unmounted share?)",
                    link.display()
                ),
            )
        }
        Err(FindError::Fatal(e)) => return Err(e),
    };

    // Delay only what PostgreSQL replays; a delayed history file would only
    // hold back the timeline switch, not the data.
    if name.is_segment_data() && !cfg.restore_delay.is_zero() && recovery_mode(cfg) == RecoveryMode::Standby {
        let mtime = meta.modified().map_err(|source| RestoreError::Unreadable {
            archived: archived.clone(),
            source,
        })?;
        // An mtime in the future (clock skew) counts as just archived.
        let age = SystemTime::now().duration_since(mtime).unwrap_or(Duration::ZERO);
        if age < cfg.restore_delay {
            log::debug!(
                "{name}: archived {}s ago, restore_delay is {}s: not yet",
                age.as_secs(),
                cfg.restore_delay.as_secs()
            );
            return Ok(RestoreOutcome::Delayed { archived, age });
        }
    }

    let bytes = copy_into_place(&archived, codec, &name, dest, expected)?.written;
    Ok(RestoreOutcome::Restored { archived, codec, bytes })
}

/// After a segment was restored: starts the prefetch worker (a new pitrkit
/// process) for the segments after it, if `restore_prefetch` is set. The
/// command calls it: the library never starts pitrkit itself.
pub fn start_prefetch(cfg: &StandbyConfig, wanted: &str, outcome: &RestoreOutcome, dest: &Path) {
    if let (Ok(name), RestoreOutcome::Restored { bytes, .. }) = (WalName::parse(wanted), outcome) {
        if name.is_segment_data() && prefetch::enabled(cfg) {
            prefetch::spawn_worker(cfg, &name, *bytes, dest);
        }
    }
}

/// The data directory: `pgdata` if set, else the working directory, which
/// is the data directory when PostgreSQL runs restore_command.
fn data_dir(cfg: &StandbyConfig) -> PathBuf {
    cfg.pgdata.clone().unwrap_or_else(|| PathBuf::from("."))
}

/// Is the server following a master (rather than recovering to an end)?
/// PostgreSQL runs restore_command in the data directory; `pgdata` wins if set.
fn in_standby_mode(cfg: &StandbyConfig) -> bool {
    let data = cfg.pgdata.clone().unwrap_or_else(|| PathBuf::from("."));
    if data.join("standby.signal").exists() {
        return true;
    }
    // 11 and older: recovery.conf with standby_mode = on.
    fs::read_to_string(data.join("recovery.conf")).is_ok_and(|t| {
        t.lines().any(|l| {
            let l = l.split('#').next().unwrap_or("").replace([' ', '\t', '\''], "");
            l == "standby_mode=on" || l == "standby_mode=true"
        })
    })
}

/// What PostgreSQL does when restore_command answers "not found".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// standby.signal: asks again later, promotes nothing.
    Standby,
    /// recovery.signal, recovery.conf without standby_mode, or unknown
    /// (run by hand): ends recovery and promotes.
    ArchiveRecovery,
    /// `cmd_standby -F999` is promoting ([`layout::PROMOTING_FILE`]).
    Promoting,
}

pub fn recovery_mode(cfg: &StandbyConfig) -> RecoveryMode {
    if data_dir(cfg).join(layout::PROMOTING_FILE).exists() {
        RecoveryMode::Promoting
    } else if in_standby_mode(cfg) {
        RecoveryMode::Standby
    } else {
        RecoveryMode::ArchiveRecovery
    }
}

/// At most one "archive unavailable" notification per this interval:
/// PostgreSQL retries every 5 seconds while the share is away.
const UNAVAILABLE_ALERT_EVERY: Duration = Duration::from_secs(600);

/// The archive cannot say "not found". Standby: exit 1 (keep waiting) and
/// alert, rate-limited; otherwise fatal, with the fix.
fn unavailable(cfg: &StandbyConfig, dir: &Path, why: String) -> Result<RestoreOutcome, RestoreError> {
    let mode = match recovery_mode(cfg) {
        RecoveryMode::Standby => {
            let msg = format!(
                "archivedir {}: {why}. The standby keeps waiting and promotes nothing; mount the share, or mark the directory with `cmd_standby -C {} -I`",
                dir.display(),
                cfg.source.display()
            );
            let state = data_dir(cfg).join(layout::ARCHIVE_ALERT_FILE);
            let now = crate::archive::now_unix();
            let last: i64 = fs::read_to_string(&state)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
            if now.saturating_sub(last) >= UNAVAILABLE_ALERT_EVERY.as_secs() as i64 || last > now {
                // Recorded before sending: a slow hook must not be run twice.
                if let Err(e) = fsutil::write_durable(&state, format!("{now}\n").as_bytes(), 0o600) {
                    log::warn!("cannot record the alert time in {}: {e}", state.display());
                }
                cfg.notify.send(Level::Critical, &msg);
            } else {
                log::warn!("{msg}");
            }
            return Ok(RestoreOutcome::ArchiveUnavailable { why });
        }
        RecoveryMode::ArchiveRecovery => "in archive recovery (recovery.signal: PITR or failover)",
        RecoveryMode::Promoting => "promoting (cmd_standby -F999 is under way)",
    };
    Err(RestoreError::ArchiveUnavailable {
        dir: dir.to_path_buf(),
        why,
        mode,
        config: cfg.source.clone(),
    })
}

/// Is there an archive directory at all (not missing, not a dangling link)?
fn archivedir_state(dir: &Path) -> Result<(), String> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err("is not a directory".to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(if fs::symlink_metadata(dir).is_ok() {
            "is a symbolic link to something that is not there (an unmounted share?)".to_string()
        } else {
            "does not exist".to_string()
        }),
        Err(e) => Err(format!("cannot be read: {e}")),
    }
}

/// The system every restored segment must belong to: the one in this data
/// directory's pg_control, else the one the archive records. Both known
/// and different: the archive belongs to another cluster.
fn expected_system(cfg: &StandbyConfig, dir: &Path) -> Result<(Option<u64>, Recorded), RestoreError> {
    let mark = sysid::read(dir).map_err(|e| RestoreError::ArchiveDir {
        dir: dir.to_path_buf(),
        why: format!(
            "{e}; fix or remove {}, then run `cmd_standby -C {} -I`",
            dir.join(layout::SYSTEM_ID_FILE).display(),
            cfg.source.display()
        ),
    })?;
    let data = data_dir(cfg);
    let ours = sysid::pg_control_system_id(&data).ok();
    match (ours, mark) {
        (Some(o), Recorded::System(a)) if o != a => Err(RestoreError::ForeignArchive {
            what: format!("archivedir {}", dir.display()),
            archive: a,
            ours: o,
            pg_control: data.join("global/pg_control"),
        }),
        (Some(o), _) => Ok((Some(o), mark)),
        (None, Recorded::System(a)) => Ok((Some(a), mark)),
        (None, _) => Ok((None, mark)),
    }
}

enum FindError {
    /// `archivedir/<file>` is a symlink to nothing.
    Dangling(PathBuf),
    Fatal(RestoreError),
}

/// The archived file for `name`: plain, then each compressed form.
fn find(dir: &Path, name: &WalName) -> Result<Option<(PathBuf, Codec, fs::Metadata)>, FindError> {
    for codec in Codec::ALL {
        let path = dir.join(format!("{name}{}", codec.suffix()));
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => return Ok(Some((path, codec, m))),
            Ok(_) => {
                return Err(FindError::Fatal(RestoreError::Unreadable {
                    archived: path,
                    source: io::Error::other("not a regular file"),
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if fs::symlink_metadata(&path).is_ok() {
                    return Err(FindError::Dangling(path));
                }
            }
            Err(source) => return Err(FindError::Fatal(RestoreError::Unreadable { archived: path, source })),
        }
    }
    Ok(None)
}

/// A temporary file that is removed unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// What a checked copy produced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Copied {
    pub written: u64,
    /// CRC-32C and size of the bytes placed at `dest`.
    pub sum: Sum,
}

/// Copies (decompressing) `archived` to `dest` through a temporary file,
/// checking on the way: a plain file against its `.sum` sidecar, a
/// compressed one against its frame checksums, a segment against its name
/// and `expected_sysid`, and a segment without a stored checksum with the
/// full WAL check ([`crate::walcheck`]); a history file's contents.
pub(crate) fn copy_into_place(
    archived: &Path,
    codec: Codec,
    name: &WalName,
    dest: &Path,
    expected_sysid: Option<u64>,
) -> Result<Copied, RestoreError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RestoreError::Write {
            path,
            archived: archived.to_path_buf(),
            source,
        }
    };
    let damaged = |why: String| RestoreError::Damaged {
        archived: archived.to_path_buf(),
        name: name.to_string(),
        why,
    };
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Some(file_name) = dest.file_name() else {
        return Err(write_err(dest)(io::Error::other("%p does not end in a file name")));
    };
    let mut tmp = TempFile {
        path: fsutil::temp_name(dir, &file_name.to_string_lossy()),
        keep: false,
    };

    let input = File::open(archived).map_err(|source| RestoreError::Unreadable {
        archived: archived.to_path_buf(),
        source,
    })?;
    let stored = if codec == Codec::None {
        verify::read_sidecar(archived).map_err(&damaged)?
    } else {
        None
    };
    // Killed restores leave their temporary files in pg_wal: take back
    // those of dead writers (unlocked and old) while we are here.
    if let Err(e) = fsutil::reclaim_temp_files(dir) {
        log::debug!("cannot reclaim temporary files in {}: {e}", dir.display());
    }
    // Default mode under PostgreSQL's umask: 0600, or 0640 with group access.
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp.path)
        .map_err(write_err(&tmp.path))?;
    let _writing = fsutil::hold_temp_lock(&out).map_err(write_err(&tmp.path))?;
    // A segment without a stored checksum gets the full check; a compressed
    // one is walked too, and the walk counts only if a frame had no checksum.
    let walk = name.is_segment_data() && (codec != Codec::None || stored.is_none());
    let mut tee = Tee::new(BufWriter::with_capacity(1 << 20, out), name, walk, expected_sysid);
    let (written, checksummed) = if codec == Codec::None {
        let w = verify::copy(input, &mut tee).map_err(|e| match e {
            verify::CopyError::Read(source) => RestoreError::Unreadable {
                archived: archived.to_path_buf(),
                source,
            },
            verify::CopyError::Write(source) => write_err(&tmp.path)(source),
        })?;
        (w, stored.is_some())
    } else {
        codec
            .decompress(input, &mut tee)
            .map(|c| (c.written, c.checksummed))
            .map_err(|e| match e {
                CodecError::Read(source) => RestoreError::Unreadable {
                    archived: archived.to_path_buf(),
                    source,
                },
                CodecError::Write(source) => write_err(&tmp.path)(source),
                other => RestoreError::Corrupt {
                    archived: archived.to_path_buf(),
                    name: name.to_string(),
                    source: other,
                },
            })?
    };
    let (out, sum, walked) = tee.finish().map_err(write_err(&tmp.path))?;
    drop(out);

    if let Some(want) = stored {
        if sum != want {
            return Err(damaged(format!(
                "its bytes ({sum}) differ from its checksum file {} ({want})",
                integrity::sum_name(&archived.display().to_string())
            )));
        }
    }

    // PostgreSQL would stop at a wrong page address too, but as "end of
    // WAL": archive recovery would end early. Refuse it here, loudly.
    if name.is_segment_data() {
        let header = wal::check_segment_file(&tmp.path, name).map_err(|e| match e {
            SegmentCheckError::Io { source, .. } => write_err(&tmp.path)(source),
            SegmentCheckError::Invalid { problem, .. } => RestoreError::WrongSegment {
                archived: archived.to_path_buf(),
                name: name.to_string(),
                problem,
            },
        })?;
        if let Some(ours) = expected_sysid.filter(|o| *o != header.system_id) {
            return Err(RestoreError::ForeignSegment {
                archived: archived.to_path_buf(),
                name: name.to_string(),
                why: format!("its page header says database system {}", header.system_id),
                ours,
            });
        }
        if !checksummed {
            match walked {
                Some(Ok(s)) => log::debug!(
                    "{name}: no stored checksum; full WAL check passed ({} records)",
                    s.records
                ),
                Some(Err(e)) => {
                    return Err(damaged(format!(
                        "{}it fails the full WAL check {e}",
                        if codec == Codec::None {
                            "it has no checksum file, so every record was checked, and "
                        } else {
                            "its frames carry no content checksum, so every record was checked, and "
                        }
                    )))
                }
                None => unreachable!("walked whenever no checksum is stored"),
            }
        }
    } else if name.kind == wal::WalKind::History {
        let text = fs::read(&tmp.path).map_err(write_err(&tmp.path))?;
        verify::check_history(name, &text)
            .map_err(|why| damaged(format!("not a valid timeline history file: {why}")))?;
    }

    // No fsync: the archive still has the data, and PostgreSQL fsyncs the
    // files it keeps (durable_rename into pg_wal).
    fs::rename(&tmp.path, dest).map_err(write_err(dest))?;
    tmp.keep = true;
    Ok(Copied { written, sum })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IniFile;

    const SEG: u64 = 1 << 20;

    /// A 1 MiB segment with a valid long page header for `name`, or for the
    /// segment `header_for` when testing a renamed file.
    fn segment(header_for: &str) -> Vec<u8> {
        let n = WalName::parse(header_for).unwrap();
        let mut b = vec![0u8; SEG as usize];
        b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        b[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
        b[4..8].copy_from_slice(&n.timeline.to_le_bytes());
        b[8..16].copy_from_slice(&(n.segno(SEG) * SEG).to_le_bytes());
        b[24..32].copy_from_slice(&7u64.to_le_bytes());
        b[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
        b[36..40].copy_from_slice(&8192u32.to_le_bytes());
        for (i, x) in b[40..4000].iter_mut().enumerate() {
            *x = (i * 31 % 251) as u8;
        }
        b
    }

    struct Env {
        _dir: tempfile::TempDir,
        cfg: StandbyConfig,
        archive: PathBuf,
        pg_wal: PathBuf,
    }

    impl Env {
        fn new(extra: &str) -> Env {
            let dir = tempfile::tempdir().unwrap();
            let archive = dir.path().join("archive");
            let pg_wal = dir.path().join("pgdata/pg_wal");
            fs::create_dir(&archive).unwrap();
            fs::create_dir_all(&pg_wal).unwrap();
            let text = format!(
                "archivedir: {}\npgdata: {}\n{extra}",
                archive.display(),
                dir.path().join("pgdata").display()
            );
            let cfg = StandbyConfig::from_ini(&IniFile::parse(Path::new("standby.ini"), &text).unwrap()).unwrap();
            // Marked for system 7, the one `segment` writes.
            sysid::write(&archive, Some(7)).unwrap();
            Env {
                _dir: dir,
                cfg,
                archive,
                pg_wal,
            }
        }

        /// A plain file with its checksum sidecar, as the archiver stores it.
        fn archive(&self, file: &str, data: &[u8]) -> PathBuf {
            let p = self.archive_legacy(file, data);
            if Codec::detect(file).0 == Codec::None {
                let sum = Sum::of_reader(data).unwrap();
                fs::write(integrity::sum_name(&p.display().to_string()), sum.render()).unwrap();
            }
            p
        }

        /// A plain file without sidecar, as pitrtools stored it.
        fn archive_legacy(&self, file: &str, data: &[u8]) -> PathBuf {
            let p = self.archive.join(file);
            fs::write(&p, data).unwrap();
            p
        }

        fn archive_compressed(&self, name: &str, codec: Codec, data: &[u8]) -> PathBuf {
            let mut packed = Vec::new();
            codec.compress(data, &mut packed, None).unwrap();
            self.archive_legacy(&format!("{name}{}", codec.suffix()), &packed)
        }

        fn dest(&self) -> PathBuf {
            self.pg_wal.join("RECOVERYXLOG")
        }

        fn restore(&self, wanted: &str) -> Result<RestoreOutcome, RestoreError> {
            restore(&self.cfg, wanted, &self.dest())
        }

        /// Everything in pg_wal: proves no temporary file was left behind.
        fn pg_wal_files(&self) -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(&self.pg_wal)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }

    const S3: &str = "000000010000000000000003";

    #[test]
    fn restores_a_plain_segment() {
        let env = Env::new("");
        let data = segment(S3);
        let archived = env.archive(S3, &data);
        let out = env.restore(S3).unwrap();
        assert_eq!(
            out,
            RestoreOutcome::Restored {
                archived,
                codec: Codec::None,
                bytes: SEG
            }
        );
        assert_eq!(out.exit_code(), EXIT_RESTORED);
        assert!(fs::read(env.dest()).unwrap() == data);
        assert_eq!(env.pg_wal_files(), ["RECOVERYXLOG"]);
    }

    #[test]
    fn temporary_files_of_killed_restores_are_reclaimed() {
        let env = Env::new("");
        env.archive(S3, &segment(S3));
        // A restore killed two minutes ago, and one that is still writing.
        let dead = env.pg_wal.join(format!(".RECOVERYXLOG.pitrkit-{}.tmp", u32::MAX));
        let live = env.pg_wal.join(format!(".RECOVERYXLOG.pitrkit-{}.tmp", u32::MAX - 1));
        for p in [&dead, &live] {
            let f = File::create(p).unwrap();
            f.set_modified(SystemTime::now() - fsutil::RECLAIM_AGE - Duration::from_secs(5))
                .unwrap();
        }
        let writer = File::open(&live).unwrap();
        let _held = fsutil::hold_temp_lock(&writer).unwrap();
        env.restore(S3).unwrap();
        assert!(!dead.exists(), "a dead restore's temporary file stays");
        assert!(live.exists(), "a live writer's temporary file was taken");
    }

    #[test]
    fn restores_each_compressed_form() {
        for codec in [Codec::Zstd, Codec::Lz4, Codec::Gzip] {
            let env = Env::new("");
            let data = segment(S3);
            env.archive_compressed(S3, codec, &data);
            match env.restore(S3).unwrap() {
                RestoreOutcome::Restored { codec: c, bytes, .. } => assert_eq!((c, bytes), (codec, SEG)),
                other => panic!("{codec}: {other:?}"),
            }
            assert!(fs::read(env.dest()).unwrap() == data, "{codec}");
            assert_eq!(env.pg_wal_files(), ["RECOVERYXLOG"], "{codec}");
        }
        // History files too, and the plain file wins over a compressed one.
        let env = Env::new("");
        env.archive_compressed("00000002.history", Codec::Gzip, b"1\t0/3000000\tno recovery target\n");
        env.archive_compressed("00000002.history", Codec::Zstd, b"1\t0/3000000\tzstd copy\n");
        let RestoreOutcome::Restored { codec, .. } = env.restore("00000002.history").unwrap() else {
            panic!()
        };
        assert_eq!(codec, Codec::Zstd);
        assert_eq!(fs::read(env.dest()).unwrap(), b"1\t0/3000000\tzstd copy\n");
        env.archive("00000002.history", b"1\t0/3000000\tplain copy\n");
        env.restore("00000002.history").unwrap();
        assert_eq!(fs::read(env.dest()).unwrap(), b"1\t0/3000000\tplain copy\n");
    }

    #[test]
    fn missing_file_is_not_found_and_writes_nothing() {
        let env = Env::new("");
        for wanted in [S3, "00000002.history", "000000010000000000000003.partial"] {
            let out = env.restore(wanted).unwrap();
            assert_eq!(out, RestoreOutcome::NotFound);
            assert_eq!(out.exit_code(), EXIT_NOT_FOUND);
        }
        assert!(env.pg_wal_files().is_empty());
    }

    #[test]
    fn delay_holds_back_segments_but_not_history() {
        let env = Env::new("restore_delay: 3600\n");
        let seg = env.archive_compressed(S3, Codec::Zstd, &segment(S3));
        env.archive("00000002.history", b"1\t0/3000000\tno recovery target\n");

        // Archive recovery (PITR, failover): never delayed, it would end recovery early.
        assert!(matches!(env.restore(S3).unwrap(), RestoreOutcome::Restored { .. }));
        fs::remove_file(env.dest()).unwrap();
        let pgdata = env.pg_wal.parent().unwrap();
        fs::write(pgdata.join("standby.signal"), b"").unwrap();

        let out = env.restore(S3).unwrap();
        assert!(matches!(out, RestoreOutcome::Delayed { .. }), "{out:?}");
        assert_eq!(out.exit_code(), EXIT_NOT_FOUND);
        assert!(env.pg_wal_files().is_empty());

        // History files are never delayed: a standby must see a new timeline.
        assert!(matches!(
            env.restore("00000002.history").unwrap(),
            RestoreOutcome::Restored { .. }
        ));

        // Once old enough, the segment is served.
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        File::options()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        assert!(matches!(env.restore(S3).unwrap(), RestoreOutcome::Restored { .. }));
        assert!(fs::read(env.dest()).unwrap() == segment(S3));
    }

    #[test]
    fn a_failover_by_pitrkit_is_never_delayed() {
        let env = Env::new("restore_delay: 3600\n");
        env.archive_compressed(S3, Codec::Zstd, &segment(S3));
        let pgdata = env.pg_wal.parent().unwrap();
        fs::write(pgdata.join("standby.signal"), b"").unwrap();
        assert!(matches!(env.restore(S3).unwrap(), RestoreOutcome::Delayed { .. }));
        // -F999 marks pgdata before asking PostgreSQL to promote.
        let marker = pgdata.join(crate::layout::PROMOTING_FILE);
        fs::write(&marker, b"").unwrap();
        assert!(matches!(env.restore(S3).unwrap(), RestoreOutcome::Restored { .. }));
        fs::remove_file(env.dest()).unwrap();
        fs::remove_file(&marker).unwrap();
        assert!(matches!(env.restore(S3).unwrap(), RestoreOutcome::Delayed { .. }));
    }

    #[test]
    fn corrupt_compressed_file_is_fatal_and_leaves_nothing() {
        for codec in [Codec::Zstd, Codec::Lz4, Codec::Gzip] {
            let env = Env::new("");
            let p = env.archive_compressed(S3, codec, &segment(S3));
            // Truncated, as by a full disk or an interrupted copy.
            let packed = fs::read(&p).unwrap();
            fs::write(&p, &packed[..packed.len() / 2]).unwrap();
            let e = env.restore(S3).unwrap_err();
            assert!(matches!(e, RestoreError::Corrupt { .. }), "{codec}: {e}");
            let msg = e.to_string();
            assert!(
                msg.contains(&p.display().to_string()) && msg.contains("damaged"),
                "{msg}"
            );
            assert!(env.pg_wal_files().is_empty(), "{codec}: {:?}", env.pg_wal_files());

            // A flipped bit.
            let mut bad = packed.clone();
            let at = bad.len() - 2;
            bad[at] ^= 0x40;
            fs::write(&p, &bad).unwrap();
            assert!(matches!(env.restore(S3), Err(RestoreError::Corrupt { .. })), "{codec}");
            assert!(env.pg_wal_files().is_empty());
        }
    }

    #[test]
    fn renamed_or_truncated_segment_is_fatal() {
        let env = Env::new("");
        // Segment 4's bytes under segment 3's name.
        env.archive(S3, &segment("000000010000000000000004"));
        let e = env.restore(S3).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, RestoreError::WrongSegment { .. }), "{msg}");
        assert!(msg.contains("does not belong") && msg.contains(S3), "{msg}");
        assert!(env.pg_wal_files().is_empty());

        // Compressed, and cut short before compression.
        fs::remove_file(env.archive.join(S3)).unwrap();
        env.archive_compressed(S3, Codec::Lz4, &segment(S3)[..SEG as usize / 2]);
        let msg = env.restore(S3).unwrap_err().to_string();
        assert!(msg.contains("restored data is 524288 bytes"), "{msg}");
        assert!(env.pg_wal_files().is_empty());
    }

    #[test]
    fn dest_is_replaced_atomically_or_not_at_all() {
        let env = Env::new("");
        fs::write(env.dest(), b"previous RECOVERYXLOG").unwrap();
        env.archive(S3, &segment("000000010000000000000009"));
        assert!(env.restore(S3).is_err());
        // Failure: the old file is untouched and no temporary file remains.
        assert_eq!(fs::read(env.dest()).unwrap(), b"previous RECOVERYXLOG");
        assert_eq!(env.pg_wal_files(), ["RECOVERYXLOG"]);

        env.archive(S3, &segment(S3));
        env.restore(S3).unwrap();
        assert!(fs::read(env.dest()).unwrap() == segment(S3));
        assert_eq!(env.pg_wal_files(), ["RECOVERYXLOG"]);

        // %p in a directory that does not exist: a write error, fatal.
        let e = restore(&env.cfg, S3, &env.pg_wal.join("nope/RECOVERYXLOG")).unwrap_err();
        assert!(matches!(e, RestoreError::Write { .. }), "{e}");
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn bad_requests_and_config_are_fatal() {
        let env = Env::new("");
        for bad in ["RECOVERYXLOG", "pg_wal/000000010000000000000003", ""] {
            let e = env.restore(bad).unwrap_err();
            assert!(matches!(e, RestoreError::BadName(_)), "{bad}: {e}");
            assert!(e.to_string().contains("%f %p"), "{e}");
        }

        let no_key =
            StandbyConfig::from_ini(&IniFile::parse(Path::new("standby.ini"), "debug: on\n").unwrap()).unwrap();
        let e = restore(&no_key, S3, &env.dest()).unwrap_err().to_string();
        assert!(e.contains("'archivedir' is not set"), "{e}");

        let mut gone = env.cfg.clone();
        gone.archivedir = Some(env.archive.join("missing"));
        let e = restore(&gone, S3, &env.dest()).unwrap_err().to_string();
        assert!(e.contains("missing") && e.contains("does not exist"), "{e}");

        // A directory where the file should be is not "not found".
        fs::create_dir(env.archive.join(S3)).unwrap();
        assert!(matches!(env.restore(S3), Err(RestoreError::Unreadable { .. })));
    }

    #[test]
    fn unreadable_archive_file_is_fatal() {
        use std::os::unix::fs::PermissionsExt;
        // root reads anything, so this part needs an ordinary user.
        if !nix::unistd::geteuid().is_root() {
            let env = Env::new("");
            let p = env.archive(S3, &segment(S3));
            fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
            let e = env.restore(S3).unwrap_err();
            assert!(matches!(e, RestoreError::Unreadable { .. }), "{e}");
            assert!(env.pg_wal_files().is_empty());
        }
        // Reading fails half way (a directory opens, then EISDIR on read):
        // reported as unreadable, not as corrupt data.
        let env = Env::new("");
        let e = copy_into_place(
            &env.archive,
            Codec::Zstd,
            &WalName::parse(S3).unwrap(),
            &env.dest(),
            None,
        )
        .unwrap_err();
        assert!(matches!(e, RestoreError::Unreadable { .. }), "{e}");
        assert!(env.pg_wal_files().is_empty());
    }

    #[test]
    fn prefetched_segments_are_identical_served_once_and_never_across_timelines() {
        let env = Env::new("restore_prefetch: 3\n");
        let names: Vec<String> = (3..=7).map(|i| format!("0000000100000000000000{i:02X}")).collect();
        for n in &names {
            env.archive_compressed(n, Codec::Zstd, &segment(n));
        }
        // Serving 03 (from the archive), then the worker spools 04, 05, 06.
        assert!(matches!(
            env.restore(&names[0]).unwrap(),
            RestoreOutcome::Restored { codec: Codec::Zstd, .. }
        ));
        let n03 = WalName::parse(&names[0]).unwrap();
        assert_eq!(prefetch::run_worker(&env.cfg, &n03, SEG, &env.dest()).unwrap(), 3);
        let spool = prefetch::spool_dir(&env.dest());
        assert!(spool.join(&names[3]).exists() && !spool.join(&names[4]).exists());

        // 04 comes from the spool (moved, so at most once) and is byte-identical.
        match env.restore(&names[1]).unwrap() {
            RestoreOutcome::Restored { archived, .. } => assert!(archived.starts_with(&spool), "{archived:?}"),
            other => panic!("{other:?}"),
        }
        assert!(fs::read(env.dest()).unwrap() == segment(&names[1]));
        assert!(!spool.join(&names[1]).exists());

        // A history file request (timeline switch ahead) empties the spool.
        env.archive("00000002.history", b"1\t0/5000000\tno recovery target\n");
        env.restore("00000002.history").unwrap();
        assert!(!spool.join(&names[2]).exists() && !spool.join(&names[3]).exists());

        // A segment of another timeline also drops what was spooled for the old one.
        let n05 = WalName::parse(&names[2]).unwrap();
        prefetch::run_worker(&env.cfg, &n05, SEG, &env.dest()).unwrap();
        assert!(spool.join(&names[3]).exists());
        env.archive("000000020000000000000006", &segment("000000020000000000000006"));
        assert!(matches!(
            env.restore("000000020000000000000006").unwrap(),
            RestoreOutcome::Restored { codec: Codec::None, .. }
        ));
        assert!(fs::read(env.dest()).unwrap() == segment("000000020000000000000006"));
        assert!(
            !spool.join(&names[3]).exists(),
            "timeline 1 segments must not survive a switch to timeline 2"
        );
    }

    #[test]
    fn prefetch_stops_at_the_first_bad_or_missing_segment() {
        let env = Env::new("restore_prefetch: 4\n");
        env.archive("000000010000000000000003", &segment("000000010000000000000003"));
        // 04 carries 09's header (renamed by hand): never spooled.
        env.archive("000000010000000000000004", &segment("000000010000000000000009"));
        let n = WalName::parse("000000010000000000000003").unwrap();
        assert_eq!(prefetch::run_worker(&env.cfg, &n, SEG, &env.dest()).unwrap(), 0);
        let spool = prefetch::spool_dir(&env.dest());
        assert_eq!(
            fs::read_dir(&spool)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name() != ".lock")
                .count(),
            0
        );
        // And the direct restore still reports it as fatal.
        assert!(matches!(
            env.restore("000000010000000000000004"),
            Err(RestoreError::WrongSegment { .. })
        ));
        // A delayed standby never prefetches.
        let delayed = Env::new("restore_prefetch: 4\nrestore_delay: 60\n");
        assert!(!prefetch::enabled(&delayed.cfg));
    }

    fn wal(name: &str, sysid: u64) -> Vec<u8> {
        let mut b = crate::walcheck::tests::Builder::new(name, sysid);
        b.fill(600_000).switch();
        b.data.clone()
    }

    #[test]
    fn stored_checksums_and_the_full_check_catch_a_flipped_bit() {
        // Plain with sidecar: any byte.
        let env = Env::new("");
        let mut data = segment(S3);
        env.archive(S3, &data);
        data[500_000] ^= 1; // in the zero tail: only the sidecar can tell
        fs::write(env.archive.join(S3), &data).unwrap();
        let e = env.restore(S3).unwrap_err();
        assert!(matches!(e, RestoreError::Damaged { .. }), "{e}");
        assert!(e.to_string().contains("differ from its checksum file"), "{e}");
        assert!(env.pg_wal_files().is_empty());

        // Legacy plain (no sidecar): intact real-structured WAL is served ...
        let env = Env::new("");
        let good = wal(S3, 7);
        env.archive_legacy(S3, &good);
        assert!(matches!(env.restore(S3).unwrap(), RestoreOutcome::Restored { .. }));
        assert!(fs::read(env.dest()).unwrap() == good);
        fs::remove_file(env.dest()).unwrap();
        // ... a flipped bit inside a record is not ...
        let mut bad = good.clone();
        bad[100_000] ^= 0x20;
        env.archive_legacy(S3, &bad);
        let e = env.restore(S3).unwrap_err();
        assert!(matches!(e, RestoreError::Damaged { .. }), "{e}");
        assert!(e.to_string().contains("no checksum file"), "{e}");
        assert!(env.pg_wal_files().is_empty());
        // ... and one after the switch record is never read by recovery.
        let mut tail = good.clone();
        tail[900_000] ^= 0x20;
        env.archive_legacy(S3, &tail);
        assert!(matches!(env.restore(S3).unwrap(), RestoreOutcome::Restored { .. }));

        // A zstd frame without a content checksum falls back to the full check.
        let env = Env::new("");
        let packed = zstd::bulk::compress(&bad, 1).unwrap();
        env.archive_legacy(&format!("{S3}.zst"), &packed);
        let e = env.restore(S3).unwrap_err();
        assert!(e.to_string().contains("no content checksum"), "{e}");
        fs::write(
            env.archive.join(format!("{S3}.zst")),
            zstd::bulk::compress(&good, 1).unwrap(),
        )
        .unwrap();
        assert!(matches!(env.restore(S3).unwrap(), RestoreOutcome::Restored { .. }));
    }

    #[test]
    fn a_segment_of_another_system_is_fatal() {
        let env = Env::new("");
        // Marked 7; the segment says 8 (with a matching sidecar).
        let mut other = segment(S3);
        other[24..32].copy_from_slice(&8u64.to_le_bytes());
        env.archive(S3, &other);
        let e = env.restore(S3).unwrap_err();
        assert!(matches!(e, RestoreError::ForeignSegment { .. }), "{e}");
        assert!(e.to_string().contains("database system 8"), "{e}");
        assert!(env.pg_wal_files().is_empty());
        // pg_control wins over the mark, and both differing is fatal for any request.
        let pgdata = env.pg_wal.parent().unwrap();
        fs::create_dir_all(pgdata.join("global")).unwrap();
        fs::write(pgdata.join("global/pg_control"), 8u64.to_le_bytes()).unwrap();
        let e = env.restore("000000010000000000000009").unwrap_err();
        assert!(matches!(e, RestoreError::ForeignArchive { .. }), "{e}");
    }

    #[test]
    fn an_archive_that_is_not_there_never_answers_not_found() {
        let hook_log = tempfile::NamedTempFile::new().unwrap();
        let env = Env::new(&format!("notify_critical: echo >> {}\n", hook_log.path().display()));
        fs::remove_file(env.archive.join(layout::SYSTEM_ID_FILE)).unwrap();
        let pgdata = env.pg_wal.parent().unwrap().to_path_buf();
        // Archive recovery (no signal file, recovery.signal) and promotion: fatal.
        for signal in [None, Some("recovery.signal"), Some(layout::PROMOTING_FILE)] {
            if let Some(f) = signal {
                fs::write(pgdata.join(f), b"").unwrap();
            }
            let e = env.restore(S3).unwrap_err();
            assert!(matches!(e, RestoreError::ArchiveUnavailable { .. }), "{e}");
            assert!(e.to_string().contains("-I"), "{e}");
        }
        fs::remove_file(pgdata.join(layout::PROMOTING_FILE)).unwrap();
        // Standby: exit 1, one alert per interval.
        fs::write(pgdata.join("standby.signal"), b"").unwrap();
        for _ in 0..3 {
            let out = env.restore(S3).unwrap();
            assert!(matches!(out, RestoreOutcome::ArchiveUnavailable { .. }), "{out:?}");
            assert_eq!(out.exit_code(), EXIT_NOT_FOUND);
        }
        assert_eq!(fs::read_to_string(hook_log.path()).unwrap().lines().count(), 1);
        assert!(pgdata.join(layout::ARCHIVE_ALERT_FILE).exists());
        // A file that is there is still served from an unmarked directory.
        env.archive(S3, &segment(S3));
        assert!(matches!(env.restore(S3).unwrap(), RestoreOutcome::Restored { .. }));

        // Marked again, but the file is a dangling symlink; then archivedir is one.
        sysid::write(&env.archive, Some(7)).unwrap();
        fs::remove_file(pgdata.join("standby.signal")).unwrap();
        let s4 = "000000010000000000000004";
        std::os::unix::fs::symlink("/nonexistent/x", env.archive.join(s4)).unwrap();
        let e = env.restore(s4).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let mut linked = env.cfg.clone();
        let link = env.archive.with_file_name("gone");
        std::os::unix::fs::symlink("/nonexistent/share", &link).unwrap();
        linked.archivedir = Some(link);
        let e = restore(&linked, S3, &env.dest()).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn history_files_are_validated() {
        let env = Env::new("");
        for bad in [
            &b""[..],
            b"1\t0/30",
            b"\x89PNG\r\n\x1a\n\x00\x00",
            b"2\t0/3000000\tfrom the future\n",
        ] {
            env.archive("00000002.history", bad);
            let e = env.restore("00000002.history").unwrap_err();
            assert!(matches!(e, RestoreError::Damaged { .. }), "{bad:?}: {e}");
            assert!(env.pg_wal_files().is_empty());
        }
    }

    #[test]
    fn a_prefetched_segment_whose_archive_copy_changed_is_not_served() {
        let env = Env::new("restore_prefetch: 2\n");
        let names: Vec<String> = (3..=5).map(|i| format!("0000000100000000000000{i:02X}")).collect();
        for n in &names {
            env.archive(n, &segment(n));
        }
        env.restore(&names[0]).unwrap();
        let n03 = WalName::parse(&names[0]).unwrap();
        assert_eq!(prefetch::run_worker(&env.cfg, &n03, SEG, &env.dest()).unwrap(), 2);
        let spool = prefetch::spool_dir(&env.dest());
        // 05 is replaced in the archive (new inode, other bytes) after it was spooled.
        let mut other = segment(&names[2]);
        other[5000] ^= 0xFF;
        fs::remove_file(env.archive.join(&names[2])).unwrap();
        env.archive(&names[2], &other);
        // 04 unchanged: served from the spool.
        match env.restore(&names[1]).unwrap() {
            RestoreOutcome::Restored { archived, .. } => assert!(archived.starts_with(&spool)),
            o => panic!("{o:?}"),
        }
        // 05: the spooled copy is dropped and the archive's current file served.
        match env.restore(&names[2]).unwrap() {
            RestoreOutcome::Restored { archived, .. } => assert_eq!(archived, env.archive.join(&names[2])),
            o => panic!("{o:?}"),
        }
        assert!(fs::read(env.dest()).unwrap() == other);
        assert!(!spool.join(&names[2]).exists());
    }
}
