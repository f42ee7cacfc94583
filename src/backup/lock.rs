//! The repository lock, which keeps two backups (or a backup and an
//! expire) of one repository apart.
//!
//! In a directory it is an flock on [`REPO_LOCK`]. Object storage has no
//! locks, so there it is the object [`REPO_LOCK`] created only if absent
//! (`If-None-Match: *`, which `-I`-style servers honour: S3, MinIO, moto),
//! naming the holder's host, pid, start time and purpose, and deleted when
//! the holder ends. Why not a required local lock directory: the hosts that
//! share a bucket (a master and its standbys, each backing up) share no
//! filesystem, and only the bucket is common to them.
//!
//! A holder killed by SIGKILL cannot delete its lock. The stale rule: a lock
//! naming this host and a pid that no longer runs is taken over; one naming
//! another host is never guessed at (its process may well be running) and
//! the message says how to check and remove it. The takeover runs under a
//! local flock, so two processes on one host cannot both take it over;
//! only this host ever takes over this host's locks.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::fsutil::{self, LockFile, PlaceError, Placed};
use crate::layout::backup::REPO_LOCK;
use crate::storage::{read_small, Storage};

/// A held repository lock; released when dropped.
pub enum RepoLock {
    Local(LockFile),
    Object {
        store: Box<dyn Storage>,
        content: String,
        _local: LockFile,
    },
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        if let RepoLock::Object { store, content, .. } = self {
            // Only our own lock: never one another process took over.
            if read_small(&**store, REPO_LOCK).ok().flatten().as_deref() == Some(content.as_bytes()) {
                if let Err(e) = store.delete(REPO_LOCK) {
                    log::warn!("cannot remove the repository lock {}: {e}", store.locate(REPO_LOCK));
                }
            }
        }
    }
}

fn host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// The flock that keeps this host's processes apart while they take the
/// object lock (and a stale one over): one file per repository and OS user.
fn local_lock(location: &str) -> Result<LockFile> {
    let mut sum = crate::integrity::Summer::default();
    sum.update(location.as_bytes());
    let name = format!("pitrkit-repo-{}-{:08x}.lock", nix::unistd::geteuid(), sum.finish().crc);
    let path = std::env::temp_dir().join(name);
    match fsutil::lock(&path, std::time::Duration::ZERO).with_context(|| format!("locking {}", path.display()))? {
        Some(l) => Ok(l),
        None => bail!(
            "another pitrkit backup or expire of {location} is running on this host (it holds {}); wait for it to finish, then try again",
            path.display()
        ),
    }
}

/// Takes the lock object of `store` (see the module comment); `what` is the
/// refused action for the message.
pub fn take_object(store: Box<dyn Storage>, what: &str) -> Result<RepoLock> {
    let local = local_lock(&store.location())?;
    let me = host();
    let content = format!(
        "host: {me}\npid: {}\nstarted: {}\nwhat: {what}\n",
        std::process::id(),
        chrono::Utc::now().to_rfc3339()
    );
    for _ in 0..2 {
        match store.put_bytes_if_absent(REPO_LOCK, content.as_bytes()) {
            Ok(Placed::Created) | Ok(Placed::AlreadyPresent) => {
                return Ok(RepoLock::Object {
                    store,
                    content,
                    _local: local,
                })
            }
            Err(PlaceError::Conflict { .. }) => {}
            Err(e) => return Err(anyhow::Error::new(e).context("taking the repository lock")),
        }
        let held = read_small(&*store, REPO_LOCK)?.map(|b| String::from_utf8_lossy(&b).into_owned());
        let held = held.unwrap_or_default();
        if !stale(&held, &me) {
            bail!(
                "another pitrkit backup or expire of {} is running: the lock {} says {}; {what} refused. \
                 Wait for it to finish; if that process is gone (a crash on another host), remove {} and try again",
                store.location(),
                store.locate(REPO_LOCK),
                held.trim().replace('\n', ", "),
                store.locate(REPO_LOCK)
            );
        }
        log::warn!(
            "taking over the stale repository lock {} ({}): its process no longer runs",
            store.locate(REPO_LOCK),
            held.trim().replace('\n', ", ")
        );
        store
            .delete(REPO_LOCK)
            .with_context(|| format!("removing the stale lock {}", store.locate(REPO_LOCK)))?;
    }
    bail!(
        "cannot take the repository lock {}: it came back after removal",
        store.locate(REPO_LOCK)
    )
}

/// A lock of this host whose process no longer runs.
fn stale(held: &str, me: &str) -> bool {
    let field = |k: &str| held.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
    let Some(pid) = field("pid: ").and_then(|p| p.parse::<i32>().ok()) else {
        return false;
    };
    field("host: ") == Some(me) && !alive(pid)
}

fn alive(pid: i32) -> bool {
    use nix::errno::Errno;
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(Errno::ESRCH)
    )
}

/// The lock of a repository directory.
pub fn take_local(path: PathBuf, location: &str, what: &str) -> Result<RepoLock> {
    match fsutil::lock(&path, std::time::Duration::ZERO).with_context(|| format!("locking {}", path.display()))? {
        Some(l) => Ok(RepoLock::Local(l)),
        None => bail!(
            "another pitrkit backup or expire of {location} is running (it holds {}); {what} refused. Wait for it to finish, then try again",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_hosts_dead_processes_leave_stale_locks() {
        let dead = "host: h1\npid: 2147483000\nstarted: x\nwhat: backup\n";
        assert!(stale(dead, "h1"));
        assert!(!stale(dead, "h2"), "another host's lock is never guessed at");
        let running = format!("host: h1\npid: {}\n", std::process::id());
        assert!(!stale(&running, "h1"));
        assert!(!stale("garbage", "h1"));
    }
}
