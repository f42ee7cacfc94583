//! The per-slave queues under `l_archivedir` and shipping one of them.
//!
//! Layout (pitrtools-compatible, plus dot-files pitrtools never had):
//! ```text
//! l_archivedir/
//!   .pitrkit-system-id        database system the queued WAL belongs to (-I)
//!   .delivered/<wal>          sync mode: "<slave> <size>" lines, slaves that have <wal>
//!   .spool/<wal>              the durable copy being linked into the queues
//!   .spool/.lock              held while spooling (one staging copy per name)
//!   <slave>/<wal>             hard links of one durable copy, 0600
//!   <slave>/.lock             held while shipping this queue
//!   <slave>/.state            delivery state (drives notifications)
//!   <slave>/.conflicts/<wal>  queued files the slave already had, differently
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::sysid::{self, Recorded, SYSTEM_ID_FILE};
use crate::config::ArchiverConfig;
use crate::fsutil;
use crate::transport::rsync::{Remote, RemoteMark, TransportError, Verdict};
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
    /// The slave's archive directory is not the one `-I` marked (a share
    /// not mounted there, another system's archive): nothing was pushed.
    #[error("{0}")]
    Unmarked(String),
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
    let mut shipped = Shipped::default();
    let target = format!("{slave}:{}", rdir.display());
    // Names the remote sync must cover: what was delivered under another form.
    let mut also_sync = Vec::new();
    // One remote listing reads the slave's mark too: an unmounted share is
    // a bare directory there, and WAL pushed into it is lost once it is
    // mounted again.
    let (mark, present) = remote.stat_marked(&all_forms(&names), SYSTEM_ID_FILE)?;
    check_slave_mark(cfg, &remote, &mark)?;
    // A slave holding the same WAL under another stored form (X beside our
    // X.zst) must never get a second form: judged here, not pushed.
    let judged = judge_other_forms(&remote, &qdir, &names, &present)?;
    let mut to_push = Vec::new();
    for n in &names {
        match judged.iter().find(|j| &j.queued == n) {
            None => to_push.push(n.clone()),
            Some(j) => {
                if let Some(p) = &j.problem {
                    log::error!("slave {slave}: {p}; it stays queued");
                    shipped.problems.push(p.clone());
                }
                if j.outcome == Outcome::Delivered {
                    also_sync.extend(j.remote_forms.iter().cloned());
                }
                if j.outcome == Outcome::Conflict {
                    log::error!(
                        "slave {slave}: {target} holds {} with other content than the queued {n}",
                        j.remote_forms.join(", ")
                    );
                    shipped.conflict_with.push((n.clone(), j.remote_forms.join(", ")));
                }
                // Its sidecar goes (or stays) with it; the slave's other
                // form carries its own checksum.
                let sum = crate::integrity::sum_name(n);
                if qdir.join(&sum).is_file() {
                    shipped.outcomes.push((sum, j.outcome));
                }
                shipped.outcomes.push((n.clone(), j.outcome));
            }
        }
    }
    // The files first; a plain file's `.sum` sidecar follows in a second
    // pass only once the file is known delivered, so that it never lands
    // beside the slave's different X (a conflict).
    let first = push_and_judge(&remote, &qdir, &to_push, &target, &mut shipped)?;
    let mut sums = Vec::new();
    for (n, o) in first {
        let sum = crate::integrity::sum_name(&n);
        if !qdir.join(&sum).is_file() {
            continue;
        }
        match o {
            Outcome::Delivered => sums.push(sum),
            other => shipped.outcomes.push((sum, other)),
        }
    }
    push_and_judge(&remote, &qdir, &sums, &target, &mut shipped)?;
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
    // Before anything leaves the queue: on failure everything stays. The
    // same ssh session re-reads the mark: a share unmounted while shipping
    // took the files into the bare directory, and they stay queued.
    let mut on_slave = Vec::new();
    if cfg.rsync.fsync && !delivered.is_empty() {
        on_slave = delivered
            .iter()
            .filter(|n| !judged.iter().any(|j| &j.queued == *n))
            .cloned()
            .collect();
        on_slave = with_sidecar(on_slave);
        on_slave.extend(also_sync);
    }
    let after = remote.sync_files_marked(&on_slave, SYSTEM_ID_FILE)?;
    if after != mark {
        return Err(ShipError::Unmarked(format!(
            "{target}/{SYSTEM_ID_FILE} changed while shipping ({} before, {} after): was the share unmounted or replaced on {slave}? The files stay queued; mount the share (check with `cmd_archiver -C {} -I`), and the next round ships them again",
            show_mark(&mark),
            show_mark(&after),
            cfg.source.display()
        )));
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

fn show_mark(m: &RemoteMark) -> String {
    match m {
        RemoteMark::Missing => "missing".into(),
        RemoteMark::Unreadable => "unreadable".into(),
        RemoteMark::Content(c) if c.trim().is_empty() => "unclaimed".into(),
        RemoteMark::Content(c) => format!("'{}'", c.trim()),
    }
}

/// Shipping goes only into the directory `-I` marked: the slave's mark must
/// be there and must not name another system than the queue's.
fn check_slave_mark(cfg: &ArchiverConfig, remote: &Remote, mark: &RemoteMark) -> Result<(), ShipError> {
    let where_ = format!("{}:{}", remote.host, remote.dir.join(SYSTEM_ID_FILE).display());
    let config = cfg.source.display();
    let nothing = "nothing was shipped to it and the files stay queued";
    let theirs = match mark {
        RemoteMark::Missing => {
            return Err(ShipError::Unmarked(format!(
                "{where_} does not exist: the slave's archive share is not mounted on {} (the bare mount point would swallow the WAL), or the directory was never prepared; {nothing}. Mount the share on {}, or run `cmd_archiver -C {config} -I` to mark a new archive directory",
                remote.host, remote.host
            )))
        }
        RemoteMark::Unreadable => {
            return Err(ShipError::Unmarked(format!(
                "cannot read {where_}; {nothing}. Check its permissions for the ssh user on {}",
                remote.host
            )))
        }
        RemoteMark::Content(c) => sysid::parse(c, &where_)
            .map_err(|e| ShipError::Unmarked(format!("{e}; {nothing}. Fix or remove it, then run `cmd_archiver -C {config} -I`")))?,
    };
    let ldir = cfg.l_archivedir.as_deref().expect("slaves require l_archivedir");
    let ours = sysid::read(ldir).map_err(qio(ldir))?;
    if let (Recorded::System(a), Recorded::System(o)) = (theirs, ours) {
        if a != o {
            return Err(ShipError::Unmarked(format!(
                "{where_} says the slave's archive belongs to database system {a}, but the queued WAL ({}) is system {o}: two clusters must never share an archive; {nothing}. Point r_archivedir at this cluster's own directory (and run `cmd_archiver -C {config} -I`), or remove {where_} if the old system is gone for good",
                ldir.display()
            )));
        }
    }
    Ok(())
}

/// Pushes `names` and judges each one rsync did not send; records every
/// outcome (problems logged) and returns this pass's outcomes.
fn push_and_judge(
    remote: &Remote,
    qdir: &Path,
    names: &[String],
    target: &str,
    shipped: &mut Shipped,
) -> Result<Vec<(String, Outcome)>, ShipError> {
    let slave = remote.host;
    let mut out = Vec::new();
    let report = remote.push(qdir, names)?;
    let verdicts = remote.verify(qdir, &report.not_sent)?;
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
            log::error!("slave {slave}: {p}; it stays queued");
            shipped.problems.push(p);
        }
        out.push((n, outcome));
    }
    shipped.outcomes.extend(out.iter().cloned());
    Ok(out)
}

/// Every stored form of a WAL file's name (X, X.zst, ...).
fn forms(n: &str) -> Vec<String> {
    use crate::compress::Codec;
    let base = Codec::detect(n).1.to_string();
    Codec::ALL.iter().map(|c| format!("{base}{}", c.suffix())).collect()
}

fn all_forms(names: &[String]) -> Vec<String> {
    names.iter().flat_map(|n| forms(n)).collect()
}

/// How a queued file compares with other stored forms of its WAL on the slave.
struct OtherForms {
    queued: String,
    /// Every form of the WAL the slave holds (the queued name included).
    remote_forms: Vec<String>,
    outcome: Outcome,
    problem: Option<String>,
}

/// One remote `stat` for every stored form of every queued WAL; for a WAL
/// the slave holds under another form than the queued one, the forms it
/// holds are fetched and compared by content (decompressed) with ours:
/// all the same is delivered, any different is a conflict. Rare, so the
/// fetch costs nothing in the common case.
fn judge_other_forms(
    remote: &Remote,
    qdir: &Path,
    names: &[String],
    present: &std::collections::HashMap<String, crate::transport::rsync::RemoteFile>,
) -> Result<Vec<OtherForms>, ShipError> {
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
                "{}:{}/{odd} is not a regular file; check what is there",
                remote.host,
                remote.dir.display()
            ));
            out.push(judged);
            continue;
        }
        let same = compare_forms(remote, qdir, n, &here).map_err(qio(qdir))?;
        if !same {
            judged.outcome = Outcome::Conflict;
        }
        out.push(judged);
    }
    Ok(out)
}

/// Fetches `theirs` from the slave and compares each, decompressed, with
/// the queued `ours`, decompressed.
fn compare_forms(remote: &Remote, qdir: &Path, ours: &str, theirs: &[String]) -> io::Result<bool> {
    use crate::compress::Codec;
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

/// Sync mode's record of which slaves already have a file, so a retry after
/// a partial failure does not queue (and send) it to them again. One line
/// per slave: its name and the size of the copy it received (older ledgers
/// hold the name alone).
pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    pub fn new(l_archivedir: &Path, wal: &str) -> Ledger {
        Ledger {
            path: l_archivedir.join(LEDGER_DIR).join(wal),
        }
    }

    /// The slaves recorded as having the file, with the size they got.
    pub fn delivered(&self) -> Vec<(String, Option<u64>)> {
        fs::read_to_string(&self.path)
            .map(|t| {
                t.lines()
                    .filter_map(|l| {
                        let mut w = l.split_whitespace();
                        let slave = w.next()?.to_string();
                        Some((slave, w.next().and_then(|n| n.parse().ok())))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Durably records `slaves` as having the file, `size` bytes of it.
    pub fn record(&self, slaves: &[String], size: u64) -> io::Result<()> {
        let dir = self.path.parent().expect("ledger path has a parent");
        fsutil::ensure_dir(dir, 0o700)?;
        let text: String = slaves.iter().map(|s| format!("{s} {size}\n")).collect();
        fsutil::write_durable(&self.path, text.as_bytes(), 0o600)
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
        l.record(&["a".into(), "b".into()], 77).unwrap();
        assert_eq!(
            Ledger::new(d.path(), "000000010000000000000001").delivered(),
            vec![("a".to_string(), Some(77)), ("b".to_string(), Some(77))]
        );
        // A ledger written before sizes were recorded.
        fs::write(d.path().join(LEDGER_DIR).join("000000010000000000000001"), "a\n").unwrap();
        assert_eq!(l.delivered(), vec![("a".to_string(), None)]);
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
