//! Spooling: one durable copy of a file in `l_archivedir/.spool/`,
//! hard-linked into the queue of every target slave.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::layout::{LOCK_FILE, SPOOL_DIR};
use super::{sidecar, ArchiveError};
use crate::config::archiver::Shipping;
use crate::fsutil::{self, Bytes, PlaceError};
use crate::integrity::Sum;
use crate::logging::StepTimer;

/// One durable copy of the file, staged in `l_archivedir/.spool/`, then
/// hard-linked into each target slave's queue. Linking from a queue entry
/// instead would race with a concurrent `--flush` that ships and removes it.
pub(super) fn spool(
    sh: &Shipping,
    lock_timeout: Duration,
    src: Bytes,
    name: &str,
    sum: Option<&Sum>,
    targets: &[&String],
) -> Result<Vec<String>, ArchiveError> {
    let _t = StepTimer::step("spooling", format!("spooling {name} for {} slave(s)", targets.len()));
    let mut qdirs = Vec::new();
    for slave in targets {
        let qdir = sh.queue_dir(slave);
        if !qdir.is_dir() {
            return Err(ArchiveError::NoDirectory {
                dir: qdir,
                why: "the queue of a slave listed in 'slaves'",
            });
        }
        qdirs.push(qdir);
    }
    spool_into(&sh.queue_root, src, name, sum, &qdirs, lock_timeout)?;
    Ok(targets.iter().map(|s| s.to_string()).collect())
}

/// `sum`: a plain file's checksum; its `.sum` sidecar is staged and linked
/// into each queue before the file.
fn spool_into(
    ldir: &Path,
    mut src: Bytes,
    name: &str,
    sum: Option<&Sum>,
    qdirs: &[PathBuf],
    wait: Duration,
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
    let sdir = ldir.join(SPOOL_DIR);
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
    let _spool_lock = lock_spool(&sdir, name, wait)?;
    if let Err(e) = fsutil::reclaim_temp_files(&sdir) {
        log::warn!("cannot reclaim temporary files in {}: {e}", sdir.display());
    }
    let staged_sum = match sum {
        Some(s) => Some(sidecar::stage(&sdir, name, s).map_err(place_err(&sdir))?),
        None => None,
    };
    let staged = stage_copy(&sdir, &mut src, name)?;
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

/// The durable staging copy in the spool (the caller holds its lock).
fn stage_copy(sdir: &Path, src: &mut Bytes, name: &str) -> Result<PathBuf, ArchiveError> {
    let staged = sdir.join(name);
    let err = |source| ArchiveError::Place {
        wal: name.to_string(),
        dest: sdir.display().to_string(),
        source,
    };
    let remove_stale = || {
        fs::remove_file(&staged).map_err(|source| {
            err(PlaceError::Io {
                path: staged.clone(),
                op: "remove stale spool copy",
                source,
            })
        })
    };
    // Bytes still to be made would be made twice to find that out: an
    // earlier call's leftover is only ours to replace, so replace it.
    if matches!(src, Bytes::Made(_)) && fs::symlink_metadata(&staged).is_ok() {
        remove_stale()?;
    }
    match fsutil::place_bytes(src, sdir, name, 0o600) {
        Ok(_) => {}
        // A different copy left by an interrupted earlier call: only ours to use.
        Err(PlaceError::Conflict { .. }) => {
            remove_stale()?;
            fsutil::place_bytes(src, sdir, name, 0o600).map_err(err)?;
        }
        Err(e) => return Err(err(e)),
    }
    Ok(staged)
}

/// Takes the spool's lock, waiting up to `wait`.
fn lock_spool(sdir: &Path, name: &str, wait: Duration) -> Result<fsutil::LockFile, ArchiveError> {
    let lock_path = sdir.join(LOCK_FILE);
    let source = match fsutil::lock(&lock_path, wait) {
        Ok(Some(l)) => return Ok(l),
        Ok(None) => std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "another pitrkit process held it for lock_timeout; PostgreSQL will retry",
        ),
        Err(e) => e,
    };
    Err(ArchiveError::Place {
        wal: name.to_string(),
        dest: sdir.display().to_string(),
        source: PlaceError::Io {
            path: lock_path,
            op: "lock the spool",
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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
                let r = spool_into(&ldir, Bytes::File(&src), n, None, &qdirs, Duration::from_secs(5));
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
        let left: Vec<_> = fs::read_dir(ldir.join(SPOOL_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != LOCK_FILE)
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
                            spool_into(&ldir, Bytes::File(&src), name, None, &qdirs, Duration::from_secs(30))?;
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
}
