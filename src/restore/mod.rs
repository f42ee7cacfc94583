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
//! directory, else the archive's mark) and matches its name; every page of
//! a segment carries a timeline its name (and its timeline's history, when
//! the archive has it) allows; a segment without any stored checksum passes
//! the full WAL check (`crate::walcheck`), including the records it shares
//! with its neighbours in the archive ([`crossing::check_crossing`]); a
//! history file is well formed; a prefetched copy still matches the
//! archive ([`prefetch`]).
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

mod copy;
mod crossing;
mod foreign;
pub mod prefetch;
#[cfg(test)]
mod tests;
pub mod verify;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::archive::sysid::{self, Recorded};
use crate::compress::{Codec, CodecError};
use crate::config::{ConfigError, StandbyConfig};
use crate::fsutil;
use crate::layout;
use crate::notify::Level;
use crate::storage::{Entry, Kind, Storage};
use crate::wal::{self, BadWalName, WalName};
pub(crate) use copy::copy_into_place;

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
    #[error("{archived}: {name} is archived only in a compression pitrkit cannot read (it reads plain, .zst, .lz4 and .gz); answering \"not found\" would end recovery without it. Decompress it to {name} in the same directory (e.g. bunzip2 -k, xz -dk), then restart PostgreSQL")]
    UnknownCompression { archived: PathBuf, name: String },
    #[error("archivedir {dir}: {why}. PostgreSQL is {mode} and would end recovery on \"not found\", promoting without the WAL the archive holds, so restore stops it instead. Mount the share (or make the object store reachable), or if {dir} really is the archive, mark it with `cmd_standby -C {config} -I` (while PostgreSQL is stopped), then start PostgreSQL again")]
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
    #[error("{archived} and {other}: {why}. The record lies in both files, so one of them is damaged (a file with a checksum file or compressed with a content checksum can be tested alone: restore it to a scratch path): replace the damaged one with an intact copy (another archive, or the master's pg_wal if still there) and restart PostgreSQL")]
    DamagedAcross {
        archived: PathBuf,
        other: PathBuf,
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
    let archive = crate::storage::standby_archive(cfg, "the directory the archiver ships WAL to; restore reads it")?;
    let archive = archive.as_ref();
    let dir = PathBuf::from(archive.location());

    // A history file means a timeline switch is being considered: drop
    // everything prefetched. A segment drops what is stale for its timeline.
    if name.is_segment_data() {
        prefetch::prune(dest, Some(name.timeline), Some(&name));
    } else {
        prefetch::prune(dest, None, None);
    }

    if let Err(why) = archive.available() {
        return unavailable(cfg, &dir, why);
    }
    let (expected, mark) = expected_system(cfg, archive)?;

    if name.is_segment_data() && prefetch::enabled(cfg) {
        if let Some(bytes) = prefetch::take(archive, dest, &name) {
            return Ok(RestoreOutcome::Restored {
                archived: prefetch::spool_dir(dest).join(name.as_str()),
                codec: Codec::None,
                bytes,
            });
        }
    }

    let (stored, codec, entry) = match find(archive, &name) {
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
        Ok(None) => return not_found(archive, &name),
        Err(FindError::Dangling(link)) => {
            return unavailable(
                cfg,
                &dir,
                format!("{link} is a symbolic link to something that is not there (an unmounted share?)"),
            )
        }
        Err(FindError::Fatal(e)) => return Err(e),
    };
    let archived = PathBuf::from(archive.locate(&stored));
    if let Some(age) = held_back(cfg, &name, &archived, &entry)? {
        return Ok(RestoreOutcome::Delayed { archived, age });
    }
    let bytes = copy_into_place(archive, &stored, codec, &name, dest, expected)?.written;
    Ok(RestoreOutcome::Restored { archived, codec, bytes })
}

/// `name` is not in the archive: "not found", unless the archive holds it
/// in a form pitrkit cannot read ("not found" beside X.bz2 would end
/// recovery short of WAL the archive holds).
fn not_found(archive: &dyn Storage, name: &WalName) -> Result<RestoreOutcome, RestoreError> {
    if let Some(archived) = foreign::foreign_form(archive, name) {
        return Err(RestoreError::UnknownCompression {
            archived,
            name: name.to_string(),
        });
    }
    log::debug!("{name}: not in {}", archive.location());
    Ok(RestoreOutcome::NotFound)
}

/// How long ago `name` was archived, if `restore_delay` holds it back.
/// Delay only what PostgreSQL replays; a delayed history file would only
/// hold back the timeline switch, not the data.
fn held_back(
    cfg: &StandbyConfig,
    name: &WalName,
    archived: &Path,
    entry: &Entry,
) -> Result<Option<Duration>, RestoreError> {
    if !name.is_segment_data() || cfg.restore_delay.is_zero() || recovery_mode(cfg) != RecoveryMode::Standby {
        return Ok(None);
    }
    let mtime = entry.modified.ok_or_else(|| RestoreError::Unreadable {
        archived: archived.to_path_buf(),
        source: io::Error::other("no modification time"),
    })?;
    // An mtime in the future (clock skew) counts as just archived.
    let age = SystemTime::now().duration_since(mtime).unwrap_or(Duration::ZERO);
    if age >= cfg.restore_delay {
        return Ok(None);
    }
    log::debug!(
        "{name}: archived {}s ago, restore_delay is {}s: not yet",
        age.as_secs(),
        cfg.restore_delay.as_secs()
    );
    Ok(Some(age))
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
    if crate::standby::promoting::is_current(&data_dir(cfg)) {
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

/// The system every restored segment must belong to: the one in this data
/// directory's pg_control, else the one the archive records. Both known
/// and different: the archive belongs to another cluster.
fn expected_system(cfg: &StandbyConfig, archive: &dyn Storage) -> Result<(Option<u64>, Recorded), RestoreError> {
    let mark = sysid::read_from(archive).map_err(|e| RestoreError::ArchiveDir {
        dir: PathBuf::from(archive.location()),
        why: format!(
            "{e}; fix or remove {}, then run `cmd_standby -C {} -I`",
            archive.locate(layout::SYSTEM_ID_FILE),
            cfg.source.display()
        ),
    })?;
    let data = data_dir(cfg);
    let ours = sysid::pg_control_system_id(&data).ok();
    match (ours, mark) {
        (Some(o), Recorded::System(a)) if o != a => Err(RestoreError::ForeignArchive {
            what: format!("archivedir {}", archive.location()),
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
    /// `archivedir/<file>` is a symlink to nothing (where it is).
    Dangling(String),
    Fatal(RestoreError),
}

/// The archived file for `name`: plain, then each compressed form.
fn find(archive: &dyn Storage, name: &WalName) -> Result<Option<(String, Codec, Entry)>, FindError> {
    for codec in Codec::ALL {
        let stored = format!("{name}{}", codec.suffix());
        let unreadable = |source| {
            FindError::Fatal(RestoreError::Unreadable {
                archived: PathBuf::from(archive.locate(&stored)),
                source,
            })
        };
        match archive.stat(&stored) {
            Ok(Some(e)) if matches!(e.kind, Kind::File | Kind::LinkToFile) => return Ok(Some((stored, codec, e))),
            Ok(Some(Entry {
                kind: Kind::DanglingLink,
                ..
            })) => return Err(FindError::Dangling(archive.locate(&stored))),
            Ok(Some(_)) => return Err(unreadable(io::Error::other("not a regular file"))),
            Ok(None) => {}
            Err(source) => return Err(unreadable(source)),
        }
    }
    Ok(None)
}
