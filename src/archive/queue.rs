//! The per-slave queues under `l_archivedir` and shipping one of them.
//!
//! Layout (pitrtools-compatible, plus dot-files pitrtools never had):
//! ```text
//! l_archivedir/
//!   .pitrkit-system-id        database system the queued WAL belongs to
//!   .delivered/<wal>          sync mode: slaves that already have <wal>
//!   .spool/<wal>              the durable copy being linked into the queues
//!   <slave>/<wal>             hard links of one durable copy, 0600
//!   <slave>/.lock             held while shipping this queue
//!   <slave>/.state            delivery state (drives notifications)
//!   <slave>/.conflicts/<wal>  queued files the slave already had, differently
//! ```

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::config::ArchiverConfig;
use crate::fsutil;
use crate::transport::rsync::{Remote, TransportError};
use crate::wal::WalName;

pub const LOCK_FILE: &str = ".lock";
pub const STATE_FILE: &str = ".state";
pub const CONFLICTS_DIR: &str = ".conflicts";
pub const LEDGER_DIR: &str = ".delivered";
pub const SPOOL_DIR: &str = ".spool";

/// WAL files waiting in a queue directory, oldest name first.
pub fn queued_files(qdir: &Path) -> io::Result<Vec<String>> {
    let mut out: Vec<String> = fs::read_dir(qdir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| WalName::parse(n).is_ok())
        .collect();
    out.sort();
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("queue {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn qio(path: &Path) -> impl FnOnce(io::Error) -> ShipError + '_ {
    move |source| ShipError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Default)]
pub struct Shipped {
    /// Files now durably on the slave and removed from the queue.
    pub delivered: Vec<String>,
    /// Files the slave already had with different content (moved aside).
    pub conflicts: Vec<String>,
    /// Files still queued.
    pub remaining: usize,
}

/// Ships everything in `slave`'s queue to `r_archivedir` on the slave. Files
/// leave the queue only once rsync (and the remote directory sync) succeeded.
pub fn ship_queue(cfg: &ArchiverConfig, slave: &str) -> Result<Shipped, ShipError> {
    let qdir = cfg.queue_dir(slave).expect("slaves require l_archivedir");
    let rdir = cfg.r_archivedir.as_deref().expect("slaves require r_archivedir");
    let names = queued_files(&qdir).map_err(qio(&qdir))?;
    if names.is_empty() {
        return Ok(Shipped::default());
    }
    let remote = Remote {
        host: slave,
        dir: rdir,
        ssh: &cfg.ssh,
        rsync: &cfg.rsync,
    };
    let _t = crate::logging::StepTimer::new(format!("shipping {} file(s) to {slave}", names.len()));
    let report = remote.push(&qdir, &names)?;
    let conflicts = remote.differing(&qdir, &report.existing)?;
    if cfg.rsync.fsync {
        remote.sync_dir()?;
    }
    if !conflicts.is_empty() {
        let cdir = qdir.join(CONFLICTS_DIR);
        fsutil::ensure_dir(&cdir, 0o700).map_err(qio(&cdir))?;
        for c in &conflicts {
            fs::rename(qdir.join(c), cdir.join(c)).map_err(qio(&cdir))?;
        }
    }
    let mut delivered = report.sent;
    delivered.extend(report.existing.into_iter().filter(|n| !conflicts.contains(n)));
    for n in &delivered {
        match fs::remove_file(qdir.join(n)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(qio(&qdir)(e)),
            _ => {}
        }
    }
    fsutil::fsync_dir(&qdir).map_err(qio(&qdir))?;
    let remaining = names.len() - delivered.len() - conflicts.len();
    Ok(Shipped {
        delivered,
        conflicts,
        remaining,
    })
}

/// Sync mode's record of which slaves already have a file, so a retry after
/// a partial failure does not queue (and send) it to them again.
pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    pub fn new(l_archivedir: &Path, wal: &str) -> Ledger {
        Ledger {
            path: l_archivedir.join(LEDGER_DIR).join(wal),
        }
    }

    pub fn delivered(&self) -> Vec<String> {
        fs::read_to_string(&self.path)
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Durably records `slaves` as having the file.
    pub fn record(&self, slaves: &[String]) -> io::Result<()> {
        let dir = self.path.parent().expect("ledger path has a parent");
        fsutil::ensure_dir(dir, 0o700)?;
        let tmp = fsutil::temp_name(dir, &self.path.file_name().unwrap().to_string_lossy());
        let mut f = fs::File::create(&tmp)?;
        for s in slaves {
            writeln!(f, "{s}")?;
        }
        f.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        fsutil::fsync_dir(dir)
    }

    pub fn remove(&self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_listing_ignores_dot_files_and_temp_files() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "000000010000000000000002",
            "000000010000000000000001",
            "00000002.history",
            ".lock",
            ".state",
            ".000000010000000000000003.pitrkit-1.tmp",
        ] {
            fs::write(d.path().join(n), b"x").unwrap();
        }
        fs::create_dir(d.path().join(CONFLICTS_DIR)).unwrap();
        assert_eq!(
            queued_files(d.path()).unwrap(),
            vec![
                "000000010000000000000001",
                "000000010000000000000002",
                "00000002.history"
            ]
        );
    }

    #[test]
    fn ledger_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let l = Ledger::new(d.path(), "000000010000000000000001");
        assert!(l.delivered().is_empty());
        l.record(&["a".into(), "b".into()]).unwrap();
        assert_eq!(
            Ledger::new(d.path(), "000000010000000000000001").delivered(),
            vec!["a", "b"]
        );
        l.remove();
        assert!(l.delivered().is_empty());
    }
}
