//! Shipping goes only into the directory `-I` marked: the slave's mark,
//! read in the same remote call as the listing before anything is pushed
//! and again with the remote sync before anything leaves the queue, must be
//! there, the same both times, and must not name another system than the
//! queue's. An unmounted share is a bare directory on the slave: WAL pushed
//! into it would be lost once the share is mounted again.

use std::path::{Path, PathBuf};

use super::sysid::{self, Recorded};
use super::SYSTEM_ID_FILE;
use crate::transport::RemoteMark;

/// Why shipping to a slave stopped at its mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkProblem {
    /// No mark: a share not mounted there, or never prepared by `-I`.
    Missing,
    Unreadable,
    /// The mark is not a system identifier (the parser's words).
    Damaged(String),
    /// The slave's archive belongs to another database system.
    OtherSystem {
        theirs: u64,
        ours: u64,
    },
    /// The mark changed between the listing and the sync.
    Changed {
        before: RemoteMark,
        after: RemoteMark,
    },
}

/// A [`MarkProblem`] on one slave, with what the message needs.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.render())]
pub struct MarkError {
    pub slave: String,
    /// `host:dir/.pitrkit-system-id`.
    pub mark: String,
    pub config: PathBuf,
    pub queue_root: PathBuf,
    pub problem: MarkProblem,
}

const NOTHING: &str = "nothing was shipped to it and the files stay queued";

fn show(m: &RemoteMark) -> String {
    match m {
        RemoteMark::Missing => "missing".into(),
        RemoteMark::Unreadable => "unreadable".into(),
        RemoteMark::Content(c) if c.trim().is_empty() => "unclaimed".into(),
        RemoteMark::Content(c) => format!("'{}'", c.trim()),
    }
}

impl MarkError {
    fn render(&self) -> String {
        let (mark, slave, config) = (&self.mark, &self.slave, self.config.display());
        match &self.problem {
            MarkProblem::Missing => format!(
                "{mark} does not exist: the slave's archive share is not mounted on {slave} (the bare mount point would swallow the WAL), or the directory was never prepared; {NOTHING}. Mount the share on {slave}, or run `cmd_archiver -C {config} -I` to mark a new archive directory"
            ),
            MarkProblem::Unreadable => {
                format!("cannot read {mark}; {NOTHING}. Check its permissions for the ssh user on {slave}")
            }
            MarkProblem::Damaged(why) => {
                format!("{why}; {NOTHING}. Fix or remove it, then run `cmd_archiver -C {config} -I`")
            }
            MarkProblem::OtherSystem { theirs, ours } => format!(
                "{mark} says the slave's archive belongs to database system {theirs}, but the queued WAL ({}) is system {ours}: two clusters must never share an archive; {NOTHING}. Point r_archivedir at this cluster's own directory (and run `cmd_archiver -C {config} -I`), or remove {mark} if the old system is gone for good",
                self.queue_root.display()
            ),
            MarkProblem::Changed { before, after } => format!(
                "{mark} changed while shipping ({} before, {} after): was the share unmounted or replaced on {slave}? The files stay queued; mount the share (check with `cmd_archiver -C {config} -I`), and the next round ships them again",
                show(before),
                show(after)
            ),
        }
    }
}

/// What the slave's mark must agree with.
pub struct Expected<'a> {
    pub slave: &'a str,
    /// The slave's `host:dir`.
    pub target: String,
    pub config: &'a Path,
    /// `l_archivedir`, whose mark names the queued WAL's system.
    pub queue_root: &'a Path,
}

impl Expected<'_> {
    pub fn error(&self, problem: MarkProblem) -> Box<MarkError> {
        Box::new(MarkError {
            slave: self.slave.to_string(),
            mark: format!("{}/{SYSTEM_ID_FILE}", self.target),
            config: self.config.to_path_buf(),
            queue_root: self.queue_root.to_path_buf(),
            problem,
        })
    }

    /// The mark read before pushing: there, readable, and not another
    /// system's than the queue root's (`ours`, read by the caller).
    pub fn check(&self, mark: &RemoteMark, ours: Recorded) -> Result<(), Box<MarkError>> {
        let theirs = match mark {
            RemoteMark::Missing => return Err(self.error(MarkProblem::Missing)),
            RemoteMark::Unreadable => return Err(self.error(MarkProblem::Unreadable)),
            RemoteMark::Content(c) => {
                let mark = format!("{}/{SYSTEM_ID_FILE}", self.target);
                sysid::parse(c, &mark).map_err(|e| self.error(MarkProblem::Damaged(e.to_string())))?
            }
        };
        match (theirs, ours) {
            (Recorded::System(theirs), Recorded::System(ours)) if theirs != ours => {
                Err(self.error(MarkProblem::OtherSystem { theirs, ours }))
            }
            _ => Ok(()),
        }
    }

    /// The mark read again with the sync must be the one read before.
    pub fn unchanged(&self, before: &RemoteMark, after: RemoteMark) -> Result<(), Box<MarkError>> {
        if *before == after {
            return Ok(());
        }
        Err(self.error(MarkProblem::Changed {
            before: before.clone(),
            after,
        }))
    }
}
