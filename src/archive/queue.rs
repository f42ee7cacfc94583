//! One slave's queue under `l_archivedir` (see [`super::layout`]) and
//! shipping it through a [`Transport`]: what counts as delivered, what is a
//! conflict, and what stays queued.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::forms::{self, OtherForms};
use super::layout::{CONFLICTS_DIR, SYSTEM_ID_FILE};
use super::slavemark::{Expected, MarkError};
use super::sysid;
use crate::compress::Codec;
use crate::fsutil;
use crate::logging::StepTimer;
use crate::transport::{Transport, TransportError, Verdict};
use crate::wal::WalName;

/// WAL files waiting in a queue directory, oldest name first.
pub fn queued_files(qdir: &Path) -> io::Result<Vec<String>> {
    let mut out: Vec<String> = fs::read_dir(qdir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| WalName::parse(Codec::detect(n).1).is_ok())
        .collect();
    out.sort();
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The slave's archive directory is not the one `-I` marked (a share
    /// not mounted there, another system's archive): nothing was pushed.
    #[error(transparent)]
    Unmarked(#[from] Box<MarkError>),
    #[error("queue {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub(super) fn qio(path: &Path) -> impl FnOnce(io::Error) -> ShipError + '_ {
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
    /// Conflicts with another stored form on the slave: (queued, remote forms).
    pub conflict_with: Vec<(String, String)>,
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

    fn problem(&mut self, slave: &str, p: String) {
        log::error!("slave {slave}: {p}; it stays queued");
        self.problems.push(p);
    }
}

/// One queue being shipped to one slave.
pub struct QueueShip<'a> {
    pub remote: &'a dyn Transport,
    pub slave: &'a str,
    pub qdir: &'a Path,
    /// remote_fsync: make what was delivered durable on the slave first.
    pub fsync: bool,
    /// What the slave's mark must agree with.
    pub mark: Expected<'a>,
}

impl QueueShip<'_> {
    /// Ships everything in the queue. The caller holds the queue lock. A file
    /// leaves the queue only when the transport reported it sent or found it
    /// identical on the slave, (remote_fsync) the slave fsync'd it, and the
    /// slave's mark was the same before the push and after it.
    pub fn run(&self) -> Result<Shipped, ShipError> {
        let names = queued_files(self.qdir).map_err(qio(self.qdir))?;
        if names.is_empty() {
            return Ok(Shipped::default());
        }
        let _t = StepTimer::step(
            "shipping",
            format!("shipping {} file(s) to {}", names.len(), self.slave),
        );
        let mut shipped = Shipped::default();
        // One remote listing reads the slave's mark too: nothing is pushed
        // into a directory -I did not mark (see slavemark).
        let (mark, present) = self.remote.stat_marked(&forms::all_forms(&names), SYSTEM_ID_FILE)?;
        let ours = sysid::read(self.mark.queue_root).map_err(qio(self.mark.queue_root))?;
        self.mark.check(&mark, ours)?;
        let judged = forms::judge_other_forms(self.remote, self.qdir, &names, &present)?;
        let (to_push, also_sync) = self.apply_judged(&mut shipped, &judged, &names);
        // The files first; a plain file's `.sum` sidecar follows in a second
        // pass only once the file is known delivered, so that it never lands
        // beside the slave's different X (a conflict).
        let first = self.push_and_verify(&mut shipped, &to_push)?;
        let sums = self.sidecars_to_push(&mut shipped, first);
        self.push_and_verify(&mut shipped, &sums)?;
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
        let mut on_slave = Vec::new();
        if self.fsync && !delivered.is_empty() {
            on_slave = delivered
                .iter()
                .filter(|n| !judged.iter().any(|j| &j.queued == *n))
                .cloned()
                .collect();
            on_slave = with_sidecar(on_slave);
            on_slave.extend(also_sync);
        }
        // Before anything leaves the queue: on failure everything stays. The
        // same remote call re-reads the mark: a share unmounted while
        // shipping took the files into the bare directory; they stay queued.
        let after = self.remote.sync_files_marked(&on_slave, SYSTEM_ID_FILE)?;
        self.mark.unchanged(&mark, after)?;
        let conflicts = shipped.conflicts();
        self.settle(&with_sidecar(conflicts.clone()), &with_sidecar(delivered.clone()))?;
        shipped.remaining = shipped.outcomes.len() - delivered.len() - conflicts.len();
        Ok(shipped)
    }

    /// The sidecars of the files the first pass delivered; the sidecar of
    /// any other file shares its file's outcome without being pushed.
    fn sidecars_to_push(&self, shipped: &mut Shipped, first: Vec<(String, Outcome)>) -> Vec<String> {
        let mut sums = Vec::new();
        for (n, o) in first {
            let sum = crate::integrity::sum_name(&n);
            if !self.qdir.join(&sum).is_file() {
                continue;
            }
            match o {
                Outcome::Delivered => sums.push(sum),
                other => shipped.outcomes.push((sum, other)),
            }
        }
        sums
    }

    /// Records the fate of every queued file judged against another form on
    /// the slave. Returns the files still to push (without their sidecars) and
    /// the remote names a remote sync must cover for those judged delivered.
    fn apply_judged(
        &self,
        shipped: &mut Shipped,
        judged: &[OtherForms],
        names: &[String],
    ) -> (Vec<String>, Vec<String>) {
        let target = self.remote.target();
        let mut also_sync = Vec::new();
        let mut to_push = Vec::new();
        for n in names {
            let Some(j) = judged.iter().find(|j| &j.queued == n) else {
                to_push.push(n.clone());
                continue;
            };
            if let Some(p) = &j.problem {
                shipped.problem(self.slave, p.clone());
            }
            if j.outcome == Outcome::Delivered {
                also_sync.extend(j.remote_forms.iter().cloned());
            }
            if j.outcome == Outcome::Conflict {
                log::error!(
                    "slave {}: {target} holds {} with other content than the queued {n}",
                    self.slave,
                    j.remote_forms.join(", ")
                );
                shipped.conflict_with.push((n.clone(), j.remote_forms.join(", ")));
            }
            // Its sidecar goes (or stays) with it; the slave's other form
            // carries its own checksum.
            let sum = crate::integrity::sum_name(n);
            if self.qdir.join(&sum).is_file() {
                shipped.outcomes.push((sum, j.outcome));
            }
            shipped.outcomes.push((n.clone(), j.outcome));
        }
        (to_push, also_sync)
    }

    /// Pushes, then checks what the push did not send. Records every
    /// outcome and returns this pass's.
    fn push_and_verify(&self, shipped: &mut Shipped, to_push: &[String]) -> Result<Vec<(String, Outcome)>, ShipError> {
        let mut out = Vec::new();
        if to_push.is_empty() {
            return Ok(out);
        }
        let target = self.remote.target();
        let report = self.remote.push(self.qdir, to_push)?;
        let verdicts = self.remote.verify(self.qdir, &report.not_sent)?;
        for n in &report.sent {
            out.push((n.clone(), Outcome::Delivered));
        }
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
                shipped.problem(self.slave, p);
            }
            out.push((n, outcome));
        }
        shipped.outcomes.extend(out.iter().cloned());
        Ok(out)
    }

    /// Conflicts move to `.conflicts/`, delivered files leave the queue.
    fn settle(&self, conflicts: &[String], delivered: &[String]) -> Result<(), ShipError> {
        let qdir = self.qdir;
        if !conflicts.is_empty() {
            let cdir = qdir.join(CONFLICTS_DIR);
            fsutil::ensure_dir(&cdir, 0o700).map_err(qio(&cdir))?;
            for c in conflicts {
                move_aside(qdir, &cdir, c)?;
            }
            fsutil::fsync_dir(&cdir).map_err(qio(&cdir))?;
        }
        for n in delivered {
            match fs::remove_file(qdir.join(n)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(qio(qdir)(e)),
                _ => {}
            }
        }
        fsutil::fsync_dir(qdir).map_err(qio(qdir))
    }
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
