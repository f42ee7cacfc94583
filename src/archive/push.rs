//! The archive_command path: check the file, stage it (local archives,
//! one compressed copy per codec, the spool into every slave's queue), take
//! other ready files along, then ship (async: best effort; sync: every slave
//! must confirm this very file).

use std::path::{Path, PathBuf};

use super::ledger::Ledger;
use super::ship::Shipper;
use super::stage::stage;
use super::{lookahead, sysid, ArchiveError, ArchiveReport};
use crate::config::archiver::ShipMode;
use crate::config::ArchiverConfig;
use crate::fsutil;
use crate::transport::rsync::Rsync;
use crate::transport::Connect;
use crate::wal::WalName;

/// Archives the file PostgreSQL passed as %p. Sends the notification a
/// failure deserves before returning it; starts the queue runner when
/// files are left queued.
pub fn archive_file(cfg: &ArchiverConfig, wal_arg: &Path) -> Result<ArchiveReport, ArchiveError> {
    let net = cfg.shipping.as_ref().map(|sh| Rsync {
        dir: &sh.remote_dir,
        ssh: &cfg.ssh,
        rsync: &cfg.rsync,
    });
    let result = archive_via(cfg, net.as_ref().map(|n| n as &dyn Connect), wal_arg);
    match &result {
        // Files left queued on an idle master would wait for the next WAL.
        Ok(r) => super::runner::start_if_needed(cfg, &r.slaves),
        Err(e) => {
            cfg.notify
                .send(e.level(), &format!("archiving {}: {e}", wal_arg.display()));
        }
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

/// Archiving is on, the name is WAL's, the file exists.
fn precheck(cfg: &ArchiverConfig, wal_arg: &Path) -> Result<(WalName, PathBuf), ArchiveError> {
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
    Ok((name, src))
}

/// Read once per call: every segment archived must be this cluster's.
fn cluster_id(cfg: &ArchiverConfig) -> Result<Option<u64>, ArchiveError> {
    Ok(match &cfg.pgdata {
        Some(pg) => Some(
            sysid::pg_control_system_id(pg).map_err(|source| ArchiveError::ClusterId {
                config: cfg.source.display().to_string(),
                source: std::io::Error::new(source.kind(), format!("{}/global/pg_control: {source}", pg.display())),
            })?,
        ),
        // PostgreSQL runs archive_command in the data directory; run by hand
        // elsewhere, only the archive's recorded system can be checked.
        None => sysid::pg_control_system_id(Path::new(".")).ok(),
    })
}

/// Once per call per directory we wrote to: temporary files of writers
/// that were killed (their flock is gone) would pile up forever.
fn reclaim(cfg: &ArchiverConfig) {
    let ldir = cfg.shipping.as_ref().map(|s| s.queue_root.as_path());
    for dir in cfg.local_archivedirs.iter().map(PathBuf::as_path).chain(ldir) {
        if let Err(e) = fsutil::reclaim_temp_files(dir) {
            log::warn!("cannot reclaim temporary files in {}: {e}", dir.display());
        }
    }
}

/// Archives one file, shipping through `net` (None: no slaves).
pub(super) fn archive_via(
    cfg: &ArchiverConfig,
    net: Option<&dyn Connect>,
    wal_arg: &Path,
) -> Result<ArchiveReport, ArchiveError> {
    let (name, src) = precheck(cfg, wal_arg)?;
    let file_name = name.as_str().to_string();
    let mut report = ArchiveReport {
        wal: file_name.clone(),
        ..Default::default()
    };
    let shipper = match (&cfg.shipping, net) {
        (Some(sh), Some(net)) => Some(Shipper { cfg, sh, net }),
        _ => None,
    };
    if let Some(s) = &shipper {
        if lookahead::take_marker(&s.sh.queue_root, &src, &file_name) {
            log::debug!("{file_name}: already archived by an earlier call's look-ahead");
            report.by_lookahead = true;
            return Ok(report);
        }
    }
    // In sync mode a retry after a partial failure only targets the slaves still missing it.
    let ledger = shipper.as_ref().map(|s| Ledger::new(&s.sh.queue_root, &file_name));
    let already = match (&shipper, &ledger, cfg.ship_mode) {
        (Some(s), Some(l), ShipMode::Sync) => s.still_delivered(&file_name, l.delivered()),
        _ => Vec::new(),
    };
    let targets: Vec<&String> = cfg.slaves().iter().filter(|s| !already.contains(s)).collect();
    let cluster = cluster_id(cfg)?;
    let (queued_name, queued_size) = stage(cfg, cluster, &src, &name, &targets, &mut report)?;
    reclaim(cfg);
    let (Some(s), Some(ledger)) = (shipper, ledger) else {
        return Ok(report);
    };
    // Take other ready files along (all slaves each), so one rsync ships them all.
    let extras = if targets.len() == cfg.slaves().len() {
        take_along(cfg, cluster, &src, &file_name)
    } else {
        Vec::new()
    };
    match cfg.ship_mode {
        ShipMode::Async => {
            report.slaves = s.round_all(false, false);
            for x in &extras {
                mark_done(&s, x);
            }
            report.lookahead = extras.len();
            Ok(report)
        }
        ShipMode::Sync => {
            let sync = SyncCall {
                ledger,
                have: already,
                queued_name,
                queued_size,
            };
            sync.ship(&s, &targets, &extras, report)
        }
    }
}

/// A ready file staged along with the requested one.
struct Extra {
    path: PathBuf,
    name: String,
    queued: String,
}

/// Stages up to `lookahead` other ready files for every slave; stops at the
/// first that fails (PostgreSQL's own call for it will meet and report it).
fn take_along(cfg: &ArchiverConfig, cluster: Option<u64>, src: &Path, requested: &str) -> Vec<Extra> {
    let all: Vec<&String> = cfg.slaves().iter().collect();
    let mut extras = Vec::new();
    for (path, n) in lookahead::candidates(src, requested, cfg.lookahead) {
        let Ok(extra_name) = WalName::parse(&n) else { continue };
        let mut ignored = ArchiveReport::default();
        match stage(cfg, cluster, &path, &extra_name, &all, &mut ignored) {
            Ok((queued, _)) => extras.push(Extra { path, name: n, queued }),
            Err(e) => {
                log::debug!("look-ahead stops at {n}: {e}");
                break;
            }
        }
    }
    extras
}

fn mark_done(s: &Shipper, x: &Extra) {
    if let Err(e) = lookahead::mark_done(&s.sh.queue_root, &x.path, &x.name) {
        log::debug!("cannot mark {} as archived: {e}", x.name);
    }
}

/// Sync mode's bookkeeping for one call.
struct SyncCall {
    ledger: Ledger,
    /// Slaves that have the file (from the ledger, re-checked).
    have: Vec<String>,
    queued_name: String,
    queued_size: u64,
}

impl SyncCall {
    /// Ships the targets' queues now and succeeds only if every slave has
    /// the file; a partial success is recorded so a retry skips those slaves.
    fn ship(
        mut self,
        s: &Shipper,
        targets: &[&String],
        extras: &[Extra],
        mut report: ArchiveReport,
    ) -> Result<ArchiveReport, ArchiveError> {
        let only: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        let runs = s.round(&only, true, true);
        let mut failures = Vec::new();
        for (slave, run) in &runs {
            match s.verdict(slave, run, &self.queued_name) {
                Ok(()) => self.have.push(slave.clone()),
                Err(why) => failures.push(format!("{slave}: {why}")),
            }
        }
        // An extra counts as archived only once every slave has it.
        for x in extras {
            if runs.iter().all(|(slave, run)| s.verdict(slave, run, &x.queued).is_ok()) {
                report.lookahead += 1;
                mark_done(s, x);
            }
        }
        report.slaves = runs.into_iter().map(|(sl, r)| (sl, r.event)).collect();
        if failures.is_empty() {
            self.ledger.remove();
            return Ok(report);
        }
        if let Err(e) = self.ledger.record(&self.have, self.queued_size) {
            log::warn!("cannot record partial delivery of {}: {e}", report.wal);
        }
        Err(ArchiveError::NotDelivered {
            wal: report.wal,
            failures,
        })
    }
}
