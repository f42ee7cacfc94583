//! The repository (`backup_dir`): its sets, their manifests, and the lock
//! that keeps two backups (or a backup and an expire) of it apart.

use anyhow::{bail, Context, Result};

use super::lock::{self, RepoLock};
use super::manifest::Manifest;
use std::time::Duration;

use crate::config::backup::BackupDir;
use crate::fsutil::{self, LockFile};
use crate::layout::backup::{MANIFEST, READ_LOCK, REPO_LOCK};
use crate::storage::{read_small, Listed, LocalDir, S3Store, Storage};

/// A set in the repository, complete (manifest read) or not.
#[derive(Debug, Clone)]
pub struct SetInfo {
    pub id: String,
    /// `Err`: no manifest (incomplete: killed or failed) or an unreadable one.
    pub manifest: Result<Manifest, String>,
}

/// A hold on [`READ_LOCK`] (none on S3), released when dropped.
pub struct ReadGuard(#[allow(dead_code)] Option<LockFile>);

pub struct Repository {
    pub store: Box<dyn Storage>,
    pub dir: BackupDir,
}

/// Is `name` a set ID (20261130T101500Z)?
pub fn is_id(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 16 && b[8] == b'T' && b[15] == b'Z' && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// The ID for a backup starting at `unix` seconds.
pub fn id_at(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

impl Repository {
    /// The repository at `dir` (a directory is made if missing: its parent
    /// must exist), checked to be reachable.
    pub fn open(dir: &BackupDir) -> Result<Repository> {
        let store: Box<dyn Storage> = match dir {
            BackupDir::Dir(d) => {
                fsutil::ensure_dir(d, 0o700).with_context(|| {
                    format!(
                        "backup_dir {}: cannot create it; create it (owned by the PostgreSQL OS user) or fix backup_dir",
                        d.display()
                    )
                })?;
                Box::new(LocalDir::new(d))
            }
            BackupDir::S3 { loc, multipart } => Box::new(
                S3Store::open(loc)
                    .map_err(|why| anyhow::anyhow!("backup_dir {}: {why}", loc.url))?
                    .with_multipart(multipart.part_size, multipart.concurrency),
            ),
        };
        if let Err(why) = store.available() {
            bail!("backup_dir {dir}: {why}");
        }
        Ok(Repository {
            store,
            dir: dir.clone(),
        })
    }

    /// Where it is, for messages.
    pub fn location(&self) -> String {
        self.store.location()
    }

    /// The repository lock, or an error naming what holds it.
    pub fn lock(&self, what: &str) -> Result<RepoLock> {
        match &self.dir {
            BackupDir::Dir(d) => lock::take_local(d.join(REPO_LOCK), &self.location(), what),
            BackupDir::S3 { loc, .. } => {
                // Its own client: the lock outlives any borrow of this one.
                let store = S3Store::open(loc).map_err(|why| anyhow::anyhow!("backup_dir {}: {why}", loc.url))?;
                lock::take_object(Box::new(store), what)
            }
        }
    }

    /// A recover's shared lock: expire removes nothing while it is held.
    /// Waits out an expire's short exclusive hold (it only deletes). On S3
    /// there is none (no shared locks on objects): a recover there can lose
    /// its set to an expire run at the same time, and says so in the README.
    pub fn read_lock(&self) -> Result<ReadGuard> {
        let BackupDir::Dir(d) = &self.dir else {
            return Ok(ReadGuard(None));
        };
        let path = d.join(READ_LOCK);
        match fsutil::lock_shared(&path, Duration::from_secs(300))
            .with_context(|| format!("locking {}", path.display()))?
        {
            Some(l) => Ok(ReadGuard(Some(l))),
            None => bail!(
                "an expire of {} has held {} for 5 minutes; recover refused. Try again when it has finished",
                self.location(),
                path.display()
            ),
        }
    }

    /// Expire's exclusive hold on [`READ_LOCK`]; `None` while a recover reads.
    pub fn try_removal_lock(&self) -> Result<Option<ReadGuard>> {
        let BackupDir::Dir(d) = &self.dir else {
            return Ok(Some(ReadGuard(None)));
        };
        let path = d.join(READ_LOCK);
        Ok(fsutil::lock(&path, Duration::ZERO)
            .with_context(|| format!("locking {}", path.display()))?
            .map(|l| ReadGuard(Some(l))))
    }

    /// Every set, oldest first.
    pub fn sets(&self) -> Result<Vec<SetInfo>> {
        let mut ids: Vec<String> = self
            .store
            .list()
            .with_context(|| format!("listing backup_dir {}", self.location()))?
            .into_iter()
            .filter_map(|l| match l {
                Listed::Name { name, dir: true } if is_id(&name) => Some(name),
                _ => None,
            })
            .collect();
        ids.sort();
        Ok(ids
            .into_iter()
            .map(|id| SetInfo {
                manifest: self.manifest(&id),
                id,
            })
            .collect())
    }

    /// Complete sets, oldest first.
    pub fn complete(&self) -> Result<Vec<Manifest>> {
        Ok(self.sets()?.into_iter().filter_map(|s| s.manifest.ok()).collect())
    }

    pub fn manifest(&self, id: &str) -> Result<Manifest, String> {
        let name = format!("{id}/{MANIFEST}");
        match read_small(&*self.store, &name) {
            Ok(Some(bytes)) => Manifest::parse(&String::from_utf8_lossy(&bytes))
                .map_err(|e| format!("{}: {e}", self.store.locate(&name))),
            Ok(None) => Err("incomplete (no manifest: the backup failed or was killed)".into()),
            Err(e) => Err(format!("{}: {e}", self.store.locate(&name))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(id_at(1_764_497_700), "20251130T101500Z");
        assert!(is_id("20251130T101500Z"));
        for bad in ["20251130T101500", "2025113XT101500Z", ".lock", "20251130T101500Z.x"] {
            assert!(!is_id(bad), "{bad}");
        }
    }
}
