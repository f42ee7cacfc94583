//! One slave's queue under `l_archivedir` (see [`super::layout`]) and
//! shipping it through a [`Transport`]: what counts as delivered, what is a
//! conflict, and what stays queued.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::layout::CONFLICTS_DIR;
use crate::compress::Codec;
use crate::fsutil;
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
}

impl QueueShip<'_> {
    /// Ships everything in the queue. The caller holds the queue lock. A file
    /// leaves the queue only when the transport reported it sent or found it
    /// identical on the slave, and (remote_fsync) the slave fsync'd it.
    pub fn run(&self) -> Result<Shipped, ShipError> {
        let names = queued_files(self.qdir).map_err(qio(self.qdir))?;
        if names.is_empty() {
            return Ok(Shipped::default());
        }
        let _t = crate::logging::StepTimer::new(format!("shipping {} file(s) to {}", names.len(), self.slave));
        let mut shipped = Shipped::default();
        // A slave holding the same WAL under another stored form (X beside
        // our X.zst) must never get a second form: judged here, not pushed.
        let judged = judge_other_forms(self.remote, self.qdir, &names)?;
        let (to_push, also_sync) = self.apply_judged(&mut shipped, &judged, &names);
        self.push_and_verify(&mut shipped, &to_push)?;
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
        if self.fsync && !delivered.is_empty() {
            // Before anything leaves the queue: on failure everything stays.
            let on_slave: Vec<String> = delivered
                .iter()
                .filter(|n| !judged.iter().any(|j| &j.queued == *n))
                .cloned()
                .collect();
            let mut on_slave = with_sidecar(on_slave);
            on_slave.extend(also_sync);
            self.remote.sync_files(&on_slave)?;
        }
        let conflicts = shipped.conflicts();
        self.settle(&with_sidecar(conflicts.clone()), &with_sidecar(delivered.clone()))?;
        shipped.remaining = shipped.outcomes.len() - delivered.len() - conflicts.len();
        Ok(shipped)
    }

    /// Records the fate of every queued file judged against another form on
    /// the slave. Returns the files still to push (with their sidecars) and
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
        // Each plain file's `.sum` sidecar travels with it (see sidecar).
        (super::sidecar::with_sidecars(self.qdir, &to_push), also_sync)
    }

    /// Pushes, then checks what the push did not send.
    fn push_and_verify(&self, shipped: &mut Shipped, to_push: &[String]) -> Result<(), ShipError> {
        let target = self.remote.target();
        let report = self.remote.push(self.qdir, to_push)?;
        let verdicts = self.remote.verify(self.qdir, &report.not_sent)?;
        for n in &report.sent {
            shipped.outcomes.push((n.clone(), Outcome::Delivered));
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
            shipped.outcomes.push((n, outcome));
        }
        Ok(())
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

/// How a queued file compares with other stored forms of its WAL on the slave.
struct OtherForms {
    queued: String,
    /// Every form of the WAL the slave holds (the queued name included).
    remote_forms: Vec<String>,
    outcome: Outcome,
    problem: Option<String>,
}

/// Every stored form of the WAL `n` names.
fn forms(n: &str) -> Vec<String> {
    let base = Codec::detect(n).1.to_string();
    Codec::ALL.iter().map(|c| format!("{base}{}", c.suffix())).collect()
}

/// One remote `stat` for every stored form of every queued WAL; for a WAL
/// the slave holds under another form than the queued one, the forms it
/// holds are fetched and compared by content (decompressed) with ours:
/// all the same is delivered, any different is a conflict. Rare, so the
/// fetch costs nothing in the common case.
fn judge_other_forms(remote: &dyn Transport, qdir: &Path, names: &[String]) -> Result<Vec<OtherForms>, ShipError> {
    let all: Vec<String> = names.iter().flat_map(|n| forms(n)).collect();
    let present = remote.stat(&all)?;
    let mut out = Vec::new();
    for n in names {
        let here: Vec<String> = forms(n).into_iter().filter(|f| present.contains_key(f)).collect();
        if here.is_empty() || here == [n.clone()] {
            continue; // the usual push and checksum comparison decide
        }
        let mut judged = OtherForms {
            queued: n.clone(),
            remote_forms: here.clone(),
            outcome: Outcome::Delivered,
            problem: None,
        };
        if let Some(odd) = here.iter().find(|f| !present[*f].regular) {
            judged.outcome = Outcome::StillQueued;
            judged.problem = Some(format!(
                "{}/{odd} is not a regular file; check what is there",
                remote.target()
            ));
        } else if !compare_forms(remote, qdir, n, &here).map_err(qio(qdir))? {
            judged.outcome = Outcome::Conflict;
        }
        out.push(judged);
    }
    Ok(out)
}

/// Fetches `theirs` from the slave and compares each, decompressed, with
/// the queued `ours`, decompressed.
fn compare_forms(remote: &dyn Transport, qdir: &Path, ours: &str, theirs: &[String]) -> io::Result<bool> {
    let scratch = tempfile::Builder::new().prefix("pitrkit-compare-").tempdir()?;
    let fetched = scratch.path().join("theirs");
    fs::create_dir(&fetched)?;
    remote
        .fetch(theirs, &fetched)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let (codec, _) = Codec::detect(ours);
    let raw = scratch.path().join("ours");
    codec
        .decompress(fs::File::open(qdir.join(ours))?, fs::File::create(&raw)?)
        .map_err(|e| io::Error::other(format!("{}: {e}", qdir.join(ours).display())))?;
    for t in theirs {
        let (c, _) = Codec::detect(t);
        let path = fetched.join(t);
        let same = if c == Codec::None {
            fsutil::identical(&raw, &path)?
        } else {
            crate::compress::same_content(&path, c, &raw)?
        };
        if !same {
            return Ok(false);
        }
    }
    Ok(true)
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
