//! The archiver: PostgreSQL's archive_command, plus queue flushing and set-up.
//!
//! One call archives one file. It returns success only when the file is
//! durable everywhere the configured mode promises:
//! - every `local_archivedirs` entry: always;
//! - the local queue under `l_archivedir`: always (async mode stops here, as
//!   pitrtools did, and ships the queues best-effort);
//! - every slave: in `ship_mode: sync`.

pub mod lookahead;
pub mod mount;
pub mod queue;
pub mod sidecar;
pub mod state;
pub mod sysid;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::compress::{self, Codec};
use crate::config::archiver::ShipMode;
use crate::config::ArchiverConfig;
use crate::fsutil::{self, PlaceError, Placed};
use crate::logging::StepTimer;
use crate::notify::Level;
use crate::transport::rsync::Remote;
use crate::wal::{self, WalName};
use queue::{Ledger, Outcome, Shipped};
use state::{Event, SlaveState};
pub use sysid::SYSTEM_ID_FILE;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archiving is switched off (state: offline in {config}); {wal} stays in pg_wal and PostgreSQL will retry. Set 'state: online' to resume")]
    Offline { config: String, wal: String },
    #[error(transparent)]
    BadName(#[from] wal::BadWalName),
    #[error("{path}: no such file (PostgreSQL passes %p relative to its data directory; check the -F argument and 'pgdata')")]
    Missing { path: PathBuf },
    #[error(transparent)]
    Segment(#[from] wal::SegmentCheckError),
    #[error("{dir} holds WAL of database system {archive}, but {wal} comes from system {ours}: two clusters must never share an archive (a cloned server keeps its old archive_command). Point this cluster at its own directory")]
    SystemIdMismatch {
        dir: PathBuf,
        archive: u64,
        ours: u64,
        wal: String,
    },
    #[error("{wal} comes from database system {segment}, but this cluster ({pgdata}) is system {cluster}: refusing to archive WAL of another cluster. A file was copied or renamed into pg_wal, or 'pgdata' in {config} names the wrong cluster: check both; nothing was written")]
    ForeignSegment {
        wal: String,
        segment: u64,
        cluster: u64,
        pgdata: PathBuf,
        config: String,
    },
    #[error("cannot read the database system identifier of this cluster: {source}; check 'pgdata' in {config} (the cluster's data directory, readable by the archiver's OS user)")]
    ClusterId {
        config: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir} does not exist ({why}); create it, or run `pitrkit archiver -C <config> -I`")]
    NoDirectory { dir: PathBuf, why: &'static str },
    #[error("{dir} is not initialized for pitrkit (no {SYSTEM_ID_FILE}): run `pitrkit archiver -C {config} -I`, and check that the share is mounted")]
    NotInitialized { dir: PathBuf, config: String },
    #[error("{dir}: {source}; fix or remove the file, then run `pitrkit archiver -C {config} -I`")]
    SystemIdFile {
        dir: PathBuf,
        config: String,
        #[source]
        source: std::io::Error,
    },
    #[error("archiving {wal} to {dest}: {source}")]
    Place {
        wal: String,
        dest: String,
        #[source]
        source: PlaceError,
    },
    #[error("{wal} is not on every slave yet (ship_mode: sync): {}", .failures.join("; "))]
    NotDelivered { wal: String, failures: Vec<String> },
}

impl ArchiveError {
    /// Level of the notification this failure deserves.
    fn level(&self) -> Level {
        match self {
            ArchiveError::Offline { .. } | ArchiveError::NotDelivered { .. } => Level::Warning,
            _ => Level::Critical,
        }
    }
}

/// What one archive call did.
#[derive(Debug, Default)]
pub struct ArchiveReport {
    pub wal: String,
    pub local: Vec<(PathBuf, Placed)>,
    pub spooled: Vec<String>,
    pub slaves: Vec<(String, Event)>,
    /// This call found the file already archived by an earlier look-ahead.
    pub by_lookahead: bool,
    /// Other ready files this call archived along.
    pub lookahead: usize,
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Archives the file PostgreSQL passed as %p. Sends the notification a
/// failure deserves before returning it.
pub fn archive_file(cfg: &ArchiverConfig, wal_arg: &Path) -> Result<ArchiveReport, ArchiveError> {
    let result = archive_inner(cfg, wal_arg);
    if let Err(e) = &result {
        cfg.notify
            .send(e.level(), &format!("archiving {}: {e}", wal_arg.display()));
    }
    result
}

fn resolve(cfg: &ArchiverConfig, wal_arg: &Path) -> PathBuf {
    if wal_arg.is_absolute() || wal_arg.exists() {
        return wal_arg.to_path_buf();
    }
    match &cfg.pgdata {
        Some(pg) => pg.join(wal_arg),
        None => wal_arg.to_path_buf(),
    }
}

fn archive_inner(cfg: &ArchiverConfig, wal_arg: &Path) -> Result<ArchiveReport, ArchiveError> {
    let file_name = wal_arg
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !cfg.online {
        return Err(ArchiveError::Offline {
            config: cfg.source.display().to_string(),
            wal: file_name,
        });
    }
    let name = WalName::parse(&file_name)?;
    let src = resolve(cfg, wal_arg);
    if !src.is_file() {
        return Err(ArchiveError::Missing { path: src });
    }
    let mut report = ArchiveReport {
        wal: file_name.clone(),
        ..Default::default()
    };
    let ldir = cfg.l_archivedir.as_deref().filter(|_| !cfg.slaves.is_empty());
    if let Some(ldir) = ldir {
        if lookahead::take_marker(ldir, &src, &file_name) {
            log::debug!("{file_name}: already archived by an earlier call's look-ahead");
            report.by_lookahead = true;
            return Ok(report);
        }
    }

    // In sync mode a retry after a partial failure only targets the slaves still missing it.
    let ledger = ldir.map(|l| Ledger::new(l, &file_name));
    let already = match (&ledger, cfg.ship_mode) {
        (Some(l), ShipMode::Sync) => still_delivered(cfg, &file_name, l.delivered()),
        _ => Vec::new(),
    };
    let targets: Vec<&String> = cfg.slaves.iter().filter(|s| !already.contains(s)).collect();
    // Read once per call: every segment archived must be this cluster's.
    let cluster = match &cfg.pgdata {
        Some(pg) => Some(
            sysid::pg_control_system_id(pg).map_err(|source| ArchiveError::ClusterId {
                config: cfg.source.display().to_string(),
                source: std::io::Error::new(source.kind(), format!("{}/global/pg_control: {source}", pg.display())),
            })?,
        ),
        // PostgreSQL runs archive_command in the data directory; run by hand
        // elsewhere, only the archive's recorded system can be checked.
        None => sysid::pg_control_system_id(Path::new(".")).ok(),
    };
    let (queued_name, queued_size) = stage(cfg, cluster, &src, &name, &targets, &mut report)?;
    // Once per call per directory we wrote to: temporary files of writers
    // that were killed (their flock is gone) would pile up forever.
    for dir in cfg.local_archivedirs.iter().map(PathBuf::as_path).chain(ldir) {
        if let Err(e) = fsutil::reclaim_temp_files(dir) {
            log::warn!("cannot reclaim temporary files in {}: {e}", dir.display());
        }
    }
    let (Some(ldir), Some(ledger)) = (ldir, ledger) else {
        return Ok(report);
    };

    // Take other ready files along (all slaves each), so one rsync ships them all.
    let mut extras: Vec<(PathBuf, String, String)> = Vec::new();
    if targets.len() == cfg.slaves.len() {
        let all: Vec<&String> = cfg.slaves.iter().collect();
        for (path, n) in lookahead::candidates(&src, &file_name, cfg.lookahead) {
            let Ok(extra_name) = WalName::parse(&n) else { continue };
            let mut ignored = ArchiveReport::default();
            match stage(cfg, cluster, &path, &extra_name, &all, &mut ignored) {
                Ok((q, _)) => extras.push((path, n, q)),
                Err(e) => {
                    // PostgreSQL's own call for it will meet and report the problem.
                    log::debug!("look-ahead stops at {n}: {e}");
                    break;
                }
            }
        }
    }

    match cfg.ship_mode {
        ShipMode::Async => {
            report.slaves = ship_round(cfg, false, false);
            for (path, n, _) in &extras {
                if let Err(e) = lookahead::mark_done(ldir, path, n) {
                    log::debug!("cannot mark {n} as archived: {e}");
                }
            }
            report.lookahead = extras.len();
            Ok(report)
        }
        ShipMode::Sync => {
            let only: Vec<String> = targets.iter().map(|s| s.to_string()).collect();
            let runs = ship_round_for(cfg, &only, true, true);
            let mut have = already;
            let mut failures = Vec::new();
            for (slave, run) in &runs {
                match sync_verdict(cfg, slave, run, &queued_name) {
                    Ok(()) => have.push(slave.clone()),
                    Err(why) => failures.push(format!("{slave}: {why}")),
                }
            }
            // An extra counts as archived only once every slave has it.
            for (path, n, q) in &extras {
                if runs.iter().all(|(slave, run)| sync_verdict(cfg, slave, run, q).is_ok()) {
                    report.lookahead += 1;
                    if let Err(e) = lookahead::mark_done(ldir, path, n) {
                        log::debug!("cannot mark {n} as archived: {e}");
                    }
                }
            }
            report.slaves = runs.into_iter().map(|(s, r)| (s, r.event)).collect();
            if failures.is_empty() {
                ledger.remove();
                Ok(report)
            } else {
                if let Err(e) = ledger.record(&have, queued_size) {
                    log::warn!("cannot record partial delivery of {file_name}: {e}");
                }
                Err(ArchiveError::NotDelivered {
                    wal: file_name,
                    failures,
                })
            }
        }
    }
}

/// Sync mode: the slaves the ledger lists that still hold the file, the
/// same size, checked with one remote `stat` each: a copy that vanished
/// since (deleted, restored from a backup, a slave rebuilt) is shipped again.
fn still_delivered(cfg: &ArchiverConfig, wal: &str, listed: Vec<(String, Option<u64>)>) -> Vec<String> {
    let Some(rdir) = cfg.r_archivedir.as_deref() else {
        return Vec::new();
    };
    let name = format!("{wal}{}", cfg.slave_codec.suffix());
    // A plain file was queued with its `.sum` sidecar: delivered means both.
    let sum = (cfg.slave_codec == Codec::None).then(|| crate::integrity::sum_name(wal));
    let names: Vec<String> = std::iter::once(name.clone()).chain(sum.clone()).collect();
    let mut kept = Vec::new();
    for (slave, size) in listed {
        if !cfg.slaves.contains(&slave) {
            continue;
        }
        let remote = Remote {
            host: &slave,
            dir: rdir,
            ssh: &cfg.ssh,
            rsync: &cfg.rsync,
        };
        let why = match remote.stat(&names) {
            Ok(found) => match found.get(&name) {
                Some(f) if f.regular && sum.as_ref().is_some_and(|s| !found.get(s).is_some_and(|f| f.regular)) => Some(
                    format!("its checksum file {} is missing there", sum.as_deref().unwrap_or("")),
                ),
                Some(f) if f.regular && size.map_or(true, |s| s == f.size) => None,
                Some(f) if f.regular => Some(format!("it has {} bytes there, not {}", f.size, size.unwrap_or(0))),
                Some(_) => Some("it is not a regular file there".to_string()),
                None => Some("it is gone from there".to_string()),
            },
            Err(e) => Some(format!("cannot check: {e}")),
        };
        match why {
            None => kept.push(slave),
            Some(why) => log::warn!(
                "{wal}: the delivery ledger lists slave {slave}, but {why} ({slave}:{}/{name}); shipping it again",
                rdir.display()
            ),
        }
    }
    kept
}

/// Checks one file and makes it durable at every local destination and in
/// the queues of `targets`. Returns the name it has in the queues and its size.
fn stage(
    cfg: &ArchiverConfig,
    cluster: Option<u64>,
    src: &Path,
    name: &WalName,
    targets: &[&String],
    report: &mut ArchiveReport,
) -> Result<(String, u64), ArchiveError> {
    let file_name = name.as_str().to_string();
    let system_id = if name.is_segment_data() {
        let _t = StepTimer::new(format!("checking the header of {file_name}"));
        Some(wal::check_segment_file(src, name)?.system_id)
    } else {
        None
    };
    if let (Some(segment), Some(cluster)) = (system_id, cluster) {
        if segment != cluster {
            return Err(ArchiveError::ForeignSegment {
                wal: file_name,
                segment,
                cluster,
                pgdata: cfg.pgdata.clone().unwrap_or_default(),
                config: cfg.source.display().to_string(),
            });
        }
    }
    let mut payloads = Payloads {
        raw: src,
        wal: &file_name,
        level: cfg.compression_level,
        made: Vec::new(),
    };
    // The checksum every plain copy's `.sum` sidecar records, taken once.
    let mut sum = None;
    let mut plain_sum = |dest: &Path| -> Result<crate::integrity::Sum, ArchiveError> {
        if let Some(s) = sum {
            return Ok(s);
        }
        let s = crate::integrity::Sum::of_file(src).map_err(|source| ArchiveError::Place {
            wal: file_name.clone(),
            dest: dest.display().to_string(),
            source: PlaceError::Io {
                path: src.to_path_buf(),
                op: "checksum",
                source,
            },
        })?;
        sum = Some(s);
        Ok(s)
    };
    for dir in &cfg.local_archivedirs {
        let _t = StepTimer::new(format!("durable copy of {file_name} to {}", dir.display()));
        if !dir.is_dir() {
            return Err(ArchiveError::NoDirectory {
                dir: dir.clone(),
                why: "a local_archivedirs entry; is the NFS share mounted?",
            });
        }
        check_system_id(cfg, dir, system_id, &file_name)?;
        let (payload, payload_name) = payloads.get(cfg.local_codec, dir)?;
        if cfg.local_codec == Codec::None {
            let s = plain_sum(dir)?;
            sidecar::place(dir, &file_name, &s).map_err(|source| ArchiveError::Place {
                wal: file_name.clone(),
                dest: dir.display().to_string(),
                source,
            })?;
        }
        let placed =
            place_payload(dir, src, &file_name, &payload, &payload_name).map_err(|source| ArchiveError::Place {
                wal: file_name.clone(),
                dest: dir.display().to_string(),
                source,
            })?;
        log::debug!("{payload_name}: {placed:?} in {}", dir.display());
        report.local.push((dir.clone(), placed));
    }
    if cfg.slaves.is_empty() {
        return Ok((file_name, 0));
    }
    let ldir = cfg.l_archivedir.as_deref().expect("checked at config load");
    if !ldir.is_dir() {
        return Err(ArchiveError::NoDirectory {
            dir: ldir.to_path_buf(),
            why: "l_archivedir, the local queue root",
        });
    }
    check_system_id(cfg, ldir, system_id, &file_name)?;
    let (payload, queued_name) = payloads.get(cfg.slave_codec, ldir)?;
    let sum = match cfg.slave_codec {
        Codec::None => Some(plain_sum(ldir)?),
        _ => None,
    };
    report.spooled = spool(cfg, ldir, &payload, &queued_name, sum.as_ref(), targets)?;
    let size = fs::metadata(&payload).map(|m| m.len()).unwrap_or(0);
    Ok((queued_name, size))
}

/// Sync mode: does `slave` now have `name`? Only this run's outcome for this
/// very file counts, never the absence of the file from the queue.
fn sync_verdict(cfg: &ArchiverConfig, slave: &str, run: &SlaveRun, name: &str) -> Result<(), String> {
    let qdir = cfg.queue_dir(slave).expect("slaves require l_archivedir");
    let conflict = qdir.join(queue::CONFLICTS_DIR).join(name);
    let rdir = cfg
        .r_archivedir
        .as_deref()
        .unwrap_or(Path::new("?"))
        .display()
        .to_string();
    let in_conflict = || {
        format!(
            "it already has a different {name} in {rdir}; pitrkit did not overwrite it and keeps ours in {}. Compare the two, then remove the wrong one (and {} once resolved)",
            conflict.display(),
            conflict.display()
        )
    };
    match (&run.shipped, &run.event) {
        (Some(shipped), _) => match shipped.outcome(name) {
            Some(Outcome::Delivered) if conflict.exists() => Err(format!(
                "{name} was delivered, but {} remains from an earlier conflict; check {rdir}/{name} on the slave, then remove it",
                conflict.display()
            )),
            Some(Outcome::Delivered) => Ok(()),
            Some(Outcome::Conflict) => Err(in_conflict()),
            Some(Outcome::StillQueued) => Err(format!(
                "{name} could not be confirmed on the slave ({}); it stays queued",
                if shipped.problems.is_empty() {
                    "see the log".to_string()
                } else {
                    shipped.problems.join("; ")
                }
            )),
            None if conflict.exists() => Err(in_conflict()),
            None => Err(format!(
                "{name} left the queue while another pitrkit process was shipping it; PostgreSQL's retry will confirm it"
            )),
        },
        (None, Event::Failed { error, .. }) => Err(error.clone()),
        (None, Event::Skipped { .. }) => Err("busy: another pitrkit process is shipping this queue (lock_timeout)".into()),
        (None, Event::Delivered { .. }) => Err(format!("{name} was not shipped")),
    }
}

/// What destinations receive: the WAL itself, or a compressed copy made once
/// per codec and shared by every destination that wants that codec.
struct Payloads<'a> {
    raw: &'a Path,
    wal: &'a str,
    level: Option<i32>,
    made: Vec<(Codec, tempfile::TempPath, nix::fcntl::Flock<fs::File>)>,
}

impl Payloads<'_> {
    /// The file to place and the name it gets (the codec's suffix added).
    /// `scratch` is a directory on the destination's filesystem.
    fn get(&mut self, codec: Codec, scratch: &Path) -> Result<(PathBuf, String), ArchiveError> {
        let name = format!("{}{}", self.wal, codec.suffix());
        if codec == Codec::None {
            return Ok((self.raw.to_path_buf(), name));
        }
        if let Some((_, p, _)) = self.made.iter().find(|(c, _, _)| *c == codec) {
            return Ok((p.to_path_buf(), name));
        }
        let _t = StepTimer::new(format!("{codec} compression of {}", self.wal));
        let io = |e: std::io::Error| ArchiveError::Place {
            wal: self.wal.to_string(),
            dest: scratch.display().to_string(),
            source: PlaceError::Io {
                path: scratch.to_path_buf(),
                op: "compress",
                source: e,
            },
        };
        let tmp = tempfile::Builder::new()
            .prefix(fsutil::COMPRESS_TEMP_PREFIX)
            .tempfile_in(scratch)
            .map_err(io)?;
        // Held until the copy is dropped: a reclaimer must not take it for a dead writer's.
        let lock = tmp.as_file().try_clone().map_err(io).and_then(|f| {
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| io(e.into()))
        })?;
        let input = fs::File::open(self.raw).map_err(io)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
        codec
            .compress(input, &mut out, self.level)
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        std::io::Write::flush(&mut out).map_err(io)?;
        drop(out);
        let path = tmp.into_temp_path();
        let p = path.to_path_buf();
        self.made.push((codec, path, lock));
        Ok((p, name))
    }
}

/// Places a payload in `dir` unless the WAL is already there in any form,
/// judged by content (decompressed): a change of codec or of compressor
/// build never turns a re-archive into a conflict, nor into a second copy
/// under another suffix.
fn place_payload(dir: &Path, raw: &Path, wal: &str, payload: &Path, payload_name: &str) -> Result<Placed, PlaceError> {
    for codec in Codec::ALL {
        let existing = dir.join(format!("{wal}{}", codec.suffix()));
        // A symlink (even to this very segment) or other non-regular file is
        // a conflict, never followed nor taken for a copy.
        if fsutil::existing_regular(&existing)?.is_none() {
            continue;
        }
        let io = |source| PlaceError::Io {
            path: existing.clone(),
            op: "compare with existing file",
            source,
        };
        let same = if codec == Codec::None {
            fsutil::identical(raw, &existing)
        } else {
            compress::same_content(&existing, codec, raw)
        }
        .map_err(io)?;
        let ours = fs::metadata(raw).map(|m| m.len()).unwrap_or(0);
        // Sizes of like with like: the existing copy's content, decompressed.
        let theirs = if same {
            None
        } else if codec == Codec::None {
            fs::symlink_metadata(&existing).ok().map(|m| m.len())
        } else {
            let file = fsutil::open_regular(&existing)?;
            codec.decompress(file, std::io::sink()).ok().map(|c| c.written)
        };
        return fsutil::accept_existing(&existing, same, ours, theirs, codec != Codec::None);
    }
    fsutil::place_copy(payload, dir, payload_name, 0o600)
}

/// One durable copy of the file, staged in `l_archivedir/.spool/`, then
/// hard-linked into each target slave's queue. Linking from a queue entry
/// instead would race with a concurrent `--flush` that ships and removes it.
fn spool(
    cfg: &ArchiverConfig,
    ldir: &Path,
    src: &Path,
    name: &str,
    sum: Option<&crate::integrity::Sum>,
    targets: &[&String],
) -> Result<Vec<String>, ArchiveError> {
    let _t = StepTimer::new(format!("spooling {name} for {} slave(s)", targets.len()));
    let mut qdirs = Vec::new();
    for slave in targets {
        let qdir = cfg.queue_dir(slave).expect("slaves require l_archivedir");
        if !qdir.is_dir() {
            return Err(ArchiveError::NoDirectory {
                dir: qdir,
                why: "the queue of a slave listed in 'slaves'",
            });
        }
        qdirs.push(qdir);
    }
    spool_into(ldir, src, name, sum, &qdirs, cfg.lock_timeout)?;
    Ok(targets.iter().map(|s| s.to_string()).collect())
}

/// `sum`: a plain file's checksum; its `.sum` sidecar is staged and linked
/// into each queue before the file.
fn spool_into(
    ldir: &Path,
    src: &Path,
    name: &str,
    sum: Option<&crate::integrity::Sum>,
    qdirs: &[PathBuf],
    wait: std::time::Duration,
) -> Result<(), ArchiveError> {
    if qdirs.is_empty() {
        return Ok(());
    }
    let place_err = |dest: &Path| {
        let dest = dest.display().to_string();
        move |source| ArchiveError::Place {
            wal: name.to_string(),
            dest,
            source,
        }
    };
    let sdir = ldir.join(queue::SPOOL_DIR);
    fsutil::ensure_dir(&sdir, 0o700).map_err(|e| ArchiveError::Place {
        wal: name.to_string(),
        dest: sdir.display().to_string(),
        source: PlaceError::Io {
            path: sdir.clone(),
            op: "create spool directory",
            source: e,
        },
    })?;
    // Two calls for the same file (PostgreSQL's and a look-ahead, or a
    // retry) must not share the staging copy: one would remove it while the
    // other still links from it.
    let lock_path = sdir.join(queue::LOCK_FILE);
    let _spool_lock = match fsutil::lock(&lock_path, wait) {
        Ok(Some(l)) => l,
        Ok(None) => {
            return Err(place_err(&sdir)(PlaceError::Io {
                path: lock_path,
                op: "lock the spool",
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "another pitrkit process held it for lock_timeout; PostgreSQL will retry",
                ),
            }))
        }
        Err(e) => {
            return Err(place_err(&sdir)(PlaceError::Io {
                path: lock_path,
                op: "lock the spool",
                source: e,
            }))
        }
    };
    if let Err(e) = fsutil::reclaim_temp_files(&sdir) {
        log::warn!("cannot reclaim temporary files in {}: {e}", sdir.display());
    }
    let staged_sum = match sum {
        Some(s) => Some(sidecar::stage(&sdir, name, s).map_err(place_err(&sdir))?),
        None => None,
    };
    let staged = sdir.join(name);
    match fsutil::place_copy(src, &sdir, name, 0o600) {
        Ok(_) => {}
        // A different copy left by an interrupted earlier call: only ours to use.
        Err(PlaceError::Conflict { .. }) => {
            fs::remove_file(&staged).map_err(|e| ArchiveError::Place {
                wal: name.to_string(),
                dest: sdir.display().to_string(),
                source: PlaceError::Io {
                    path: staged.clone(),
                    op: "remove stale spool copy",
                    source: e,
                },
            })?;
            fsutil::place_copy(src, &sdir, name, 0o600).map_err(place_err(&sdir))?;
        }
        Err(e) => return Err(place_err(&sdir)(e)),
    }
    for qdir in qdirs {
        if let Some(ss) = &staged_sum {
            sidecar::link(ss, qdir, name).map_err(place_err(qdir))?;
        }
        fsutil::place_link(&staged, qdir, name).map_err(place_err(qdir))?;
    }
    // Every queue holds its own durable link now; the staging name can go.
    for p in std::iter::once(&staged).chain(staged_sum.as_ref()) {
        if let Err(e) = fs::remove_file(p) {
            log::warn!("cannot remove {}: {e}", p.display());
        }
    }
    Ok(())
}

/// Refuses a directory `-I` never prepared (an unmounted share looks just
/// like an empty directory), and mixing two database systems' WAL in one
/// directory; claims an unclaimed directory for our system, durably.
fn check_system_id(cfg: &ArchiverConfig, dir: &Path, ours: Option<u64>, wal: &str) -> Result<(), ArchiveError> {
    let config = cfg.source.display().to_string();
    let file_err = |source| ArchiveError::SystemIdFile {
        dir: dir.to_path_buf(),
        config: config.clone(),
        source,
    };
    let mismatch = |archive| ArchiveError::SystemIdMismatch {
        dir: dir.to_path_buf(),
        archive,
        ours: ours.unwrap_or(0),
        wal: wal.to_string(),
    };
    match sysid::read(dir).map_err(file_err)? {
        sysid::Recorded::Missing => Err(ArchiveError::NotInitialized {
            dir: dir.to_path_buf(),
            config: config.clone(),
        }),
        sysid::Recorded::System(archive) if ours.is_some_and(|o| o != archive) => Err(mismatch(archive)),
        sysid::Recorded::System(_) => Ok(()),
        sysid::Recorded::Unclaimed => {
            let Some(o) = ours else { return Ok(()) };
            sysid::write(dir, Some(o)).map_err(file_err)?;
            log::info!("{} claimed for database system {o}", dir.display());
            // Another process may have claimed it at the same moment.
            match sysid::read(dir).map_err(file_err)? {
                sysid::Recorded::System(a) if a != o => Err(mismatch(a)),
                _ => Ok(()),
            }
        }
    }
}

/// Ships every slave's queue (up to `max_queue_workers` at once).
/// `force` ignores the retry back-off; `wait` waits for a busy queue's lock.
pub fn ship_round(cfg: &ArchiverConfig, force: bool, wait: bool) -> Vec<(String, Event)> {
    ship_round_for(cfg, &cfg.slaves, force, wait)
        .into_iter()
        .map(|(s, r)| (s, r.event))
        .collect()
}

/// What shipping one slave's queue did.
#[derive(Debug)]
struct SlaveRun {
    event: Event,
    /// Per-file outcomes, when the queue was shipped at all.
    shipped: Option<Shipped>,
}

fn ship_round_for(cfg: &ArchiverConfig, slaves: &[String], force: bool, wait: bool) -> Vec<(String, SlaveRun)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(String, SlaveRun)>> = Mutex::new(Vec::new());
    let workers = cfg.max_queue_workers.min(slaves.len()).max(1);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(slave) = slaves.get(i) else { break };
                let run = ship_slave(cfg, slave, force, wait);
                results.lock().unwrap().push((slave.clone(), run));
            });
        }
    });
    let mut r = results.into_inner().unwrap();
    r.sort_by(|a, b| a.0.cmp(&b.0));
    r
}

fn depth(qdir: &Path) -> usize {
    queue::queued_files(qdir).map(|v| v.len()).unwrap_or(0)
}

/// One slave: take its queue lock (a busy queue is another process's job:
/// skipped, state untouched), then under the lock load the delivery state,
/// respect the back-off, ship, record the new state; notify after unlocking.
fn ship_slave(cfg: &ArchiverConfig, slave: &str, force: bool, wait: bool) -> SlaveRun {
    let qdir = cfg.queue_dir(slave).expect("slaves require l_archivedir");
    let wait_for = if wait {
        cfg.lock_timeout
    } else {
        std::time::Duration::ZERO
    };
    let (lock, lock_error) = match fsutil::lock(&qdir.join(queue::LOCK_FILE), wait_for) {
        Ok(Some(l)) => (Some(l), None),
        Ok(None) => {
            log::debug!("slave {slave}: another pitrkit process is shipping this queue");
            return SlaveRun {
                event: Event::Skipped { depth: depth(&qdir) },
                shipped: None,
            };
        }
        // Nobody can hold a lock that cannot be opened: record the failure
        // (one warning per outage) like any other.
        Err(e) => (
            None,
            Some(format!(
                "cannot lock queue {}: {e}; check that the directory exists and belongs to the archiver's OS user (`pitrkit archiver -I` creates it)",
                qdir.display()
            )),
        ),
    };
    let state_path = qdir.join(queue::STATE_FILE);
    let prev = SlaveState::load(&state_path);
    let now = now_unix();
    let mut shipped = None;
    let event = if let Some(error) = lock_error {
        Event::Failed {
            error,
            depth: depth(&qdir),
        }
    } else if !state::should_attempt(&prev, now, cfg.queue_wait.as_secs(), force) {
        log::debug!(
            "slave {slave}: last delivery failed {}s ago; next try after queue_wait",
            now - prev.last_attempt
        );
        Event::Skipped { depth: depth(&qdir) }
    } else {
        match queue::ship_queue(cfg, slave) {
            Ok(s) => {
                let delivered = s.delivered().len();
                if delivered > 0 {
                    log::info!("slave {slave}: delivered {delivered} file(s), {} queued", s.remaining);
                }
                let event = if s.problems.is_empty() {
                    Event::Delivered {
                        delivered,
                        depth: s.remaining,
                    }
                } else {
                    Event::Failed {
                        error: format!(
                            "{} file(s) not confirmed on the slave and kept queued: {}",
                            s.problems.len(),
                            s.problems.join("; ")
                        ),
                        depth: s.remaining,
                    }
                };
                shipped = Some(s);
                event
            }
            Err(e) => Event::Failed {
                error: e.to_string(),
                depth: depth(&qdir),
            },
        }
    };
    let (next, notices) = state::transition(slave, &prev, &event, now, cfg.queue_critical_depth);
    if next != prev {
        if let Err(e) = next.save(&state_path) {
            log::warn!("cannot save delivery state {}: {e}", state_path.display());
        }
    }
    drop(lock);

    // Hooks may be slow: never while holding the queue.
    for s in shipped.iter() {
        for c in s.conflicts() {
            // Another stored form of the same WAL (X beside our X.zst) counts too.
            let theirs = s
                .conflict_with
                .iter()
                .find(|(q, _)| *q == c)
                .map_or(c.clone(), |(_, forms)| forms.clone());
            cfg.notify.send(Level::Critical, &format!(
                "slave {slave} already has a different {theirs} in {}; pitrkit did not overwrite it and moved the queued copy to {}. Two clusters archiving to one standby directory?",
                cfg.r_archivedir.as_deref().unwrap_or(Path::new("?")).display(),
                qdir.join(queue::CONFLICTS_DIR).join(&c).display()
            ));
        }
    }
    for n in notices {
        cfg.notify.send(n.level, &n.message);
    }
    if let Event::Failed { error, .. } = &event {
        log::warn!("slave {slave}: delivery failed, files stay queued: {error}");
    }
    SlaveRun { event, shipped }
}

/// `--flush`: ship every queue now, waiting for locks and ignoring back-off.
/// True when every queue is empty afterwards.
pub fn flush(cfg: &ArchiverConfig) -> (bool, Vec<(String, Event)>) {
    let results = ship_round(cfg, true, true);
    let all_empty = results
        .iter()
        .all(|(_, e)| matches!(e, Event::Delivered { depth: 0, .. }));
    (all_empty, results)
}

/// Result of `-I` for one item.
#[derive(Debug)]
pub struct InitCheck {
    pub what: String,
    pub problem: Option<String>,
}

/// `-I`: create the queue root, per-slave queues and local archives (0700),
/// refuse non-empty queues (as pitrtools did), then check every slave.
pub fn init(cfg: &ArchiverConfig) -> Vec<InitCheck> {
    init_with(cfg, Path::new(mount::FSTAB))
}

fn init_with(cfg: &ArchiverConfig, fstab: &Path) -> Vec<InitCheck> {
    let mut checks = Vec::new();
    // Before anything is created: a directory under a share that is not
    // mounted would be created (and marked) on the root filesystem.
    let mut unmounted = Vec::new();
    let guarded = cfg
        .local_archivedirs
        .iter()
        .map(|d| (d, cfg.require_mount))
        .chain(cfg.l_archivedir.iter().map(|d| (d, false)));
    for (dir, required) in guarded {
        if let Err(p) = mount::check(dir, fstab, required) {
            checks.push(InitCheck {
                what: format!("{}: mounted", dir.display()),
                problem: Some(p),
            });
            unmounted.push(dir.clone());
        }
    }
    let mut mk = |what: String, dir: &Path, must_be_empty: bool| {
        if unmounted.iter().any(|u| dir.starts_with(u)) {
            return; // reported above
        }
        let problem = match fsutil::ensure_dir(dir, 0o700) {
            Err(e) => Some(format!("cannot create {}: {e}", dir.display())),
            Ok(()) if must_be_empty => match queue::queued_files(dir) {
                Ok(files) if !files.is_empty() => Some(format!(
                    "{} already holds {} queued file(s); ship them with `pitrkit archiver -C {} --flush`, or remove them if you are sure they are obsolete",
                    dir.display(), files.len(), cfg.source.display()
                )),
                Err(e) => Some(format!("cannot read {}: {e}", dir.display())),
                _ => None,
            },
            Ok(()) => None,
        };
        checks.push(InitCheck { what, problem });
    };
    for d in &cfg.local_archivedirs {
        mk(format!("local archive {}", d.display()), d, false);
    }
    if let Some(l) = &cfg.l_archivedir {
        mk(format!("queue root {}", l.display()), l, false);
        for s in &cfg.slaves {
            mk(format!("queue for {s}"), &l.join(s), true);
        }
    }
    // Only -I marks a directory as an archive; see sysid.
    let roots = cfg.local_archivedirs.iter().chain(cfg.l_archivedir.iter());
    for d in roots {
        if !d.is_dir() || unmounted.contains(d) {
            continue; // reported above
        }
        let (what, problem) = match sysid::init_dir(d, cfg.pgdata.as_deref()) {
            Ok(note) => (format!("{}: {note}", d.display()), None),
            Err(p) => (format!("{}: database system", d.display()), Some(p)),
        };
        checks.push(InitCheck { what, problem });
    }
    if let Some(rdir) = &cfg.r_archivedir {
        for s in &cfg.slaves {
            let remote = Remote {
                host: s,
                dir: rdir,
                ssh: &cfg.ssh,
                rsync: &cfg.rsync,
            };
            let reachable = remote.check();
            let ok = reachable.is_ok();
            checks.push(InitCheck {
                what: format!(
                    "slave {s}: {}:{} reachable and writable, rsync present",
                    s,
                    rdir.display()
                ),
                problem: reachable.err().map(|e| e.to_string()),
            });
            // A share not mounted on the slave is a bare directory there:
            // never mark it (shipping would then fill it).
            let guard = match ok.then(|| remote.mount_facts(fstab)) {
                Some(Ok(f)) => {
                    let shown = if f.real == *rdir {
                        format!("{s}:{}", rdir.display())
                    } else {
                        format!("{s}:{} (really {})", rdir.display(), f.real.display())
                    };
                    mount::check_remote(&shown, &f.real, &f.fstab, fstab, &f.mountinfo, &f.devices)
                }
                Some(Err(e)) => Err(e.to_string()),
                None => Ok(()),
            };
            if let Err(p) = guard {
                checks.push(InitCheck {
                    what: format!("slave {s}: {}: mounted", rdir.display()),
                    problem: Some(format!("{p} (on {s})")),
                });
            } else if ok {
                let (what, problem) = match mark_remote(cfg, &remote) {
                    Ok(note) => (format!("slave {s}: {}: {note}", rdir.display()), None),
                    Err(p) => (format!("slave {s}: {}: database system", rdir.display()), Some(p)),
                };
                checks.push(InitCheck { what, problem });
            }
        }
    }
    checks
}

/// `-I` for a slave's `r_archivedir`: the same mark as a local archive
/// directory, so that restore there can tell an archive from an empty
/// (unmounted) directory. Claims an unmarked or unclaimed directory,
/// refuses one that belongs to another system.
fn mark_remote(cfg: &ArchiverConfig, remote: &Remote) -> Result<String, String> {
    let where_ = format!("{}:{}", remote.host, remote.dir.join(SYSTEM_ID_FILE).display());
    let ours = cfg.pgdata.as_deref().map(|p| (p, sysid::pg_control_system_id(p)));
    let here = match remote.read_file(SYSTEM_ID_FILE).map_err(|e| e.to_string())? {
        None => sysid::Recorded::Missing,
        Some(bytes) => sysid::parse(&String::from_utf8_lossy(&bytes), &where_).map_err(|e| e.to_string())?,
    };
    let write = |id: Option<u64>| {
        remote
            .write_file_durable(SYSTEM_ID_FILE, sysid::content(id).as_bytes())
            .map_err(|e| e.to_string())
    };
    match (here, ours) {
        (sysid::Recorded::System(a), Some((p, Ok(o)))) if a != o => Err(format!(
            "this slave's archive belongs to system {a} ({where_}), but {} is system {o}: two clusters must never share an archive. Point r_archivedir at a directory of its own, or remove {where_} if the old system is gone for good",
            p.display()
        )),
        (sysid::Recorded::System(a), _) => Ok(format!("belongs to database system {a}")),
        (_, Some((_, Ok(o)))) => {
            write(Some(o))?;
            Ok(format!("claimed for database system {o}"))
        }
        (here, ours) => {
            if here == sysid::Recorded::Missing {
                write(None)?;
            }
            Ok(match ours {
                Some((p, Err(e))) => format!(
                    "unclaimed (cannot read {}/global/pg_control: {e}); run -I again once it can be read",
                    p.display()
                ),
                _ => "unclaimed (pgdata is not set); set pgdata and run -I again".into(),
            })
        }
    }
}

/// `--status`: one line per slave for humans and monitoring.
pub fn status(cfg: &ArchiverConfig) -> Vec<String> {
    let now = now_unix();
    let mut out = Vec::new();
    for s in &cfg.slaves {
        let qdir = cfg.queue_dir(s).expect("slaves require l_archivedir");
        let st = SlaveState::load(&qdir.join(queue::STATE_FILE));
        let conflicts = queue::conflict_count(&qdir);
        let health = if st.failing {
            format!(
                "FAILING for {}s ({} attempts): {}",
                now - st.since,
                st.failures,
                st.last_error
            )
        } else {
            "ok".into()
        };
        out.push(format!(
            "{s}: {} queued, {conflicts} conflict(s), {health}",
            depth(&qdir)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IniFile;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn spooling_survives_a_flush_emptying_the_first_queue() {
        let d = tempfile::tempdir().unwrap();
        let ldir = d.path().to_path_buf();
        let qdirs: Vec<PathBuf> = ["a", "b", "c"].iter().map(|q| ldir.join(q)).collect();
        for q in &qdirs {
            fs::create_dir(q).unwrap();
        }
        let src = d.path().join("src");
        fs::write(&src, vec![5u8; 64 << 10]).unwrap();
        let names: Vec<String> = (1..=20).map(|i| format!("0000000100000000000000{i:02X}")).collect();
        // A concurrent --flush: ships and removes whatever appears in queue a.
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    for n in &names {
                        let _ = fs::remove_file(qdirs[0].join(n));
                    }
                }
            });
            for n in &names {
                let r = spool_into(&ldir, &src, n, None, &qdirs, Duration::from_secs(5));
                if r.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                r.unwrap();
            }
            stop.store(true, Ordering::Relaxed);
        });
        for n in &names {
            for q in &qdirs[1..] {
                assert_eq!(fs::read(q.join(n)).unwrap().len(), 64 << 10, "{n} in {}", q.display());
            }
        }
        let left: Vec<_> = fs::read_dir(ldir.join(queue::SPOOL_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != queue::LOCK_FILE)
            .collect();
        assert!(left.is_empty(), "staging copies are removed once linked: {left:?}");
    }

    #[test]
    fn concurrent_calls_for_the_same_file_all_succeed() {
        let d = tempfile::tempdir().unwrap();
        let ldir = d.path().to_path_buf();
        let qdirs: Vec<PathBuf> = ["a", "b"].iter().map(|q| ldir.join(q)).collect();
        for q in &qdirs {
            fs::create_dir(q).unwrap();
        }
        let src = d.path().join("src");
        fs::write(&src, vec![7u8; 256 << 10]).unwrap();
        let name = "000000010000000000000001";
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            // A concurrent --flush shipping queue a.
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let _ = fs::remove_file(qdirs[0].join(name));
                }
            });
            let calls: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        for _ in 0..40 {
                            spool_into(&ldir, &src, name, None, &qdirs, Duration::from_secs(30))?;
                        }
                        Ok::<_, ArchiveError>(())
                    })
                })
                .collect();
            let results: Vec<_> = calls.into_iter().map(|c| c.join().unwrap()).collect();
            stop.store(true, Ordering::Relaxed);
            for r in results {
                r.unwrap();
            }
        });
        assert_eq!(fs::read(qdirs[1].join(name)).unwrap().len(), 256 << 10);
    }

    fn config(dir: &Path, extra: &str) -> ArchiverConfig {
        let text = format!(
            "slaves: sb\nl_archivedir: {}\nr_archivedir: /r\nqueue_wait: 0\n{extra}",
            dir.display()
        );
        ArchiverConfig::from_ini(&IniFile::parse(&dir.join("a.ini"), &text).unwrap()).unwrap()
    }

    #[test]
    fn a_busy_queue_is_left_alone_state_and_alerts_included() {
        let d = tempfile::tempdir().unwrap();
        let hooked = d.path().join("hooked");
        let cfg = config(
            d.path(),
            &format!("queue_critical_depth: 1\nnotify_critical: touch {}\n", hooked.display()),
        );
        let q = cfg.queue_dir("sb").unwrap();
        fs::create_dir(&q).unwrap();
        for i in 1..=3 {
            fs::write(q.join(format!("00000001000000000000000{i}")), b"x").unwrap();
        }
        let _held = fsutil::lock(&q.join(queue::LOCK_FILE), Duration::ZERO)
            .unwrap()
            .unwrap();
        let run = ship_slave(&cfg, "sb", false, false);
        assert_eq!(run.event, Event::Skipped { depth: 3 });
        assert!(run.shipped.is_none());
        // The process holding the lock owns the state; this one must not
        // write it (or raise the depth alarm) from a stale read.
        assert!(!q.join(queue::STATE_FILE).exists(), "state written without the lock");
        assert!(!hooked.exists(), "alert sent for a queue another process is shipping");
    }
}
