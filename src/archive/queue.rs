//! The per-slave queues under `l_archivedir` and shipping one of them.
//!
//! Layout (pitrtools-compatible, plus dot-files pitrtools never had):
//! ```text
//! l_archivedir/
//!   .pitrkit-system-id        database system the queued WAL belongs to (-I)
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
use crate::transport::rsync::{Remote, TransportError, Verdict};
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
        .filter(|n| WalName::parse(crate::compress::Codec::detect(n).1).is_ok())
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

/// What became of one queued file in a shipping run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Durably on the slave (sent now, or already there with the same bytes)
    /// and removed from the queue.
    Delivered,
    /// The slave has a different file of that name; the queued copy was moved
    /// to `.conflicts/`.
    Conflict,
    /// Still queued: not confirmed on the slave.
    StillQueued,
}

#[derive(Debug, Default)]
pub struct Shipped {
    /// Every file that was in the queue when shipping started, with its fate.
    pub outcomes: Vec<(String, Outcome)>,
    /// Files still queued.
    pub remaining: usize,
    /// Files kept queued because rsync's report did not add up (logged).
    pub problems: Vec<String>,
}

impl Shipped {
    pub fn outcome(&self, name: &str) -> Option<Outcome> {
        self.outcomes.iter().find(|(n, _)| n == name).map(|(_, o)| *o)
    }

    fn with(&self, o: Outcome) -> Vec<String> {
        self.outcomes
            .iter()
            .filter(|(_, x)| *x == o)
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub fn delivered(&self) -> Vec<String> {
        self.with(Outcome::Delivered)
    }

    pub fn conflicts(&self) -> Vec<String> {
        self.with(Outcome::Conflict)
    }
}

/// Ships everything in `slave`'s queue to `r_archivedir` on the slave. The
/// caller holds the queue lock. A file leaves the queue only when rsync
/// itemized it as sent or a checksum comparison found it identical on the
/// slave, and (remote_fsync) the slave fsync'd it.
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
    // Each plain file's `.sum` sidecar travels with it (see sidecar).
    let names = super::sidecar::with_sidecars(&qdir, &names);
    let report = remote.push(&qdir, &names)?;
    let verdicts = remote.verify(&qdir, &report.not_sent)?;
    let mut shipped = Shipped::default();
    for n in &report.sent {
        shipped.outcomes.push((n.clone(), Outcome::Delivered));
    }
    let target = format!("{slave}:{}", rdir.display());
    for (n, verdict) in verdicts {
        let (outcome, problem) = match verdict {
            Verdict::Identical => (Outcome::Delivered, None),
            Verdict::Different => (Outcome::Conflict, None),
            Verdict::Missing => (
                Outcome::StillQueued,
                Some(format!("rsync did not send {n} and {target} does not have it")),
            ),
            Verdict::Odd(item) => (
                Outcome::StillQueued,
                Some(format!(
                    "{target}/{n} is not a regular file like ours (rsync itemizes it '{item}'); check what is there"
                )),
            ),
            Verdict::Unreported => (
                Outcome::StillQueued,
                Some(format!(
                    "rsync reported nothing about {n}, neither sent nor present on {target}"
                )),
            ),
        };
        if let Some(p) = problem {
            log::error!("slave {slave}: {p}; it stays queued");
            shipped.problems.push(p);
        }
        shipped.outcomes.push((n, outcome));
    }
    let (outcomes, sidecars) = super::sidecar::fold(std::mem::take(&mut shipped.outcomes));
    shipped.outcomes = outcomes;
    shipped.outcomes.sort_by(|a, b| a.0.cmp(&b.0));
    let with_sidecar = |files: Vec<String>| -> Vec<String> {
        let mut all = files.clone();
        all.extend(
            sidecars
                .iter()
                .filter(|(f, _)| files.contains(f))
                .map(|(_, s)| s.clone()),
        );
        all
    };
    let delivered = shipped.delivered();
    if cfg.rsync.fsync && !delivered.is_empty() {
        // Before anything leaves the queue: on failure everything stays.
        remote.sync_files(&with_sidecar(delivered.clone()))?;
    }
    let conflicts = shipped.conflicts();
    if !conflicts.is_empty() {
        let cdir = qdir.join(CONFLICTS_DIR);
        fsutil::ensure_dir(&cdir, 0o700).map_err(qio(&cdir))?;
        for c in &with_sidecar(conflicts.clone()) {
            move_aside(&qdir, &cdir, c)?;
        }
        fsutil::fsync_dir(&cdir).map_err(qio(&cdir))?;
    }
    for n in &with_sidecar(delivered.clone()) {
        match fs::remove_file(qdir.join(n)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(qio(&qdir)(e)),
            _ => {}
        }
    }
    fsutil::fsync_dir(&qdir).map_err(qio(&qdir))?;
    shipped.remaining = shipped.outcomes.len() - delivered.len() - conflicts.len();
    Ok(shipped)
}

/// Moves a conflicting queued file into `.conflicts/` without replacing an
/// earlier, different conflict of the same name (that one gets a suffix).
fn move_aside(qdir: &Path, cdir: &Path, name: &str) -> Result<(), ShipError> {
    let from = qdir.join(name);
    let mut to = cdir.join(name);
    let mut n = 0;
    loop {
        match fs::hard_link(&from, &to) {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if fsutil::identical(&from, &to).map_err(qio(&to))? {
                    break;
                }
                n += 1;
                to = cdir.join(format!("{name}.{n}"));
            }
            Err(e) => return Err(qio(cdir)(e)),
        }
    }
    fs::remove_file(&from).map_err(qio(qdir))
}

/// Files in a queue's `.conflicts/` directory.
pub fn conflict_count(qdir: &Path) -> usize {
    fs::read_dir(qdir.join(CONFLICTS_DIR))
        .map(|rd| {
            rd.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
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

    #[test]
    fn conflicts_are_moved_aside_without_replacing_earlier_ones() {
        let d = tempfile::tempdir().unwrap();
        let (q, c) = (d.path().join("q"), d.path().join("q/.conflicts"));
        fs::create_dir_all(&c).unwrap();
        let name = "000000010000000000000001";
        fs::write(q.join(name), b"first").unwrap();
        move_aside(&q, &c, name).unwrap();
        // The same file again (sync mode retries): nothing new.
        fs::write(q.join(name), b"first").unwrap();
        move_aside(&q, &c, name).unwrap();
        // A different one keeps both.
        fs::write(q.join(name), b"second").unwrap();
        move_aside(&q, &c, name).unwrap();
        assert!(!q.join(name).exists());
        assert_eq!(fs::read(c.join(name)).unwrap(), b"first");
        assert_eq!(fs::read(c.join(format!("{name}.1"))).unwrap(), b"second");
        assert_eq!(conflict_count(&q), 2);
    }
}
