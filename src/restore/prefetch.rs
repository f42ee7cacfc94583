//! Restore prefetch: while PostgreSQL replays one segment, a detached worker
//! fetches (and decompresses) the next `restore_prefetch` segments into a
//! spool beside `%p` (`pg_wal/.pitrkit-prefetch/`), so the next
//! restore_command is a rename instead of a decompression.
//!
//! Safety rules:
//! - a spooled segment went through the same checks as a direct restore
//!   (complete file, header matching its name) before its final rename;
//! - it is served at most once: serving *moves* it out of the spool;
//! - spooled names carry their timeline, and the spool is emptied whenever
//!   PostgreSQL asks for a history file or for a segment of another
//!   timeline, so nothing prefetched is ever served across a timeline switch;
//! - a delayed standby (`restore_delay`) never prefetches: the delay is
//!   checked on the archived file's age at serve time;
//! - it is served only while the archive still holds the very file it was
//!   made from: `<wal>.origin` records that file's identity (device, inode,
//!   size, mtime, ctime) and the CRC-32C of the spooled bytes; at serve time
//!   the archived file must be unchanged, a `.sum` sidecar must still match,
//!   and the spooled bytes must still have that checksum. Otherwise the
//!   spooled copy is discarded and the segment restored from the archive.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::config::StandbyConfig;
use crate::fsutil;
use crate::integrity::Sum;
use crate::layout::ORIGIN_SUFFIX;
use crate::storage::{Entry, Storage};
use crate::wal::{self, WalName};

pub const SPOOL_DIR: &str = ".pitrkit-prefetch";

/// The spool that belongs to `%p` (same directory, so serving is a rename).
pub fn spool_dir(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join(SPOOL_DIR),
        _ => PathBuf::from(SPOOL_DIR),
    }
}

pub fn enabled(cfg: &StandbyConfig) -> bool {
    cfg.restore_prefetch > 0 && cfg.restore_delay.is_zero()
}

fn origin_path(spooled: &Path) -> PathBuf {
    let mut p = spooled.as_os_str().to_owned();
    p.push(ORIGIN_SUFFIX);
    PathBuf::from(p)
}

/// The identity of an archived file: changes whenever it is replaced or rewritten.
fn identity(archive: &dyn Storage, stored: &str, e: &Entry) -> String {
    format!("{}\n{}\n", archive.locate(stored), e.version)
}

/// Serves `name` from the spool if it is there and still what `archivedir`
/// holds: moved into `dest`. Returns its size when served. A spooled copy
/// that fails the re-check is removed (with a note in the log).
pub fn take(archive: &dyn Storage, dest: &Path, name: &WalName) -> Option<u64> {
    let spooled = spool_dir(dest).join(name.as_str());
    let len = fs::metadata(&spooled).ok()?.len();
    let origin = origin_path(&spooled);
    match still_valid(archive, &spooled, &origin, name) {
        Ok(()) => {}
        Err(why) => {
            log::info!("{name}: prefetched copy not served ({why}); restoring from the archive");
            let _ = fs::remove_file(&spooled);
            let _ = fs::remove_file(&origin);
            return None;
        }
    }
    fs::rename(&spooled, dest).ok()?;
    let _ = fs::remove_file(&origin);
    Some(len)
}

fn still_valid(archive: &dyn Storage, spooled: &Path, origin: &Path, name: &WalName) -> Result<(), String> {
    let text = fs::read_to_string(origin).map_err(|e| format!("no origin record: {e}"))?;
    let (recorded_identity, sum_line) = text
        .rsplit_once("crc32c ")
        .ok_or_else(|| "unreadable origin record".to_string())?;
    let recorded_sum = Sum::parse(&format!("crc32c {sum_line}")).map_err(|e| e.to_string())?;
    let (stored, codec, entry) = match super::find(archive, name) {
        Ok(Some(f)) => f,
        _ => return Err("the archive no longer holds it".into()),
    };
    if identity(archive, &stored, &entry) != recorded_identity {
        return Err(format!(
            "{} was replaced or changed since it was prefetched",
            archive.locate(&stored)
        ));
    }
    if codec == crate::compress::Codec::None {
        match super::verify::read_sidecar(archive, &stored)? {
            Some(s) if s != recorded_sum => return Err("its checksum file changed".into()),
            _ => {}
        }
    }
    let now = Sum::of_file(spooled).map_err(|e| format!("cannot read it: {e}"))?;
    if now != recorded_sum {
        return Err(format!("the spooled bytes changed ({now}, expected {recorded_sum})"));
    }
    Ok(())
}

/// Empties the spool of everything not on `keep_timeline` (all of it for
/// `None`) and of segments older than `older_than` on that timeline.
pub fn prune(dest: &Path, keep_timeline: Option<u32>, older_than: Option<&WalName>) {
    let Ok(rd) = fs::read_dir(spool_dir(dest)) else { return };
    for e in rd.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let wal = file.strip_suffix(ORIGIN_SUFFIX).unwrap_or(&file);
        let stale = match WalName::parse(wal) {
            Ok(n) => Some(n.timeline) != keep_timeline || older_than.is_some_and(|o| (n.log, n.seg) < (o.log, o.seg)),
            // Leftover temp files of a killed worker; never the lock.
            Err(_) => file != ".lock",
        };
        if stale {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Starts the worker in the background and returns at once: PostgreSQL's
/// startup process waits for restore_command, not for us.
/// Only the pitrkit binary calls it (see `restore::start_prefetch`): under
/// `cargo test` current_exe() is the test runner; unit tests call run_worker.
pub fn spawn_worker(cfg: &StandbyConfig, served: &WalName, seg_size: u64, dest: &Path) {
    let Ok(exe) = std::env::current_exe() else { return };
    let spawned = Command::new(exe)
        .arg("restore")
        .arg("-C")
        .arg(&cfg.source)
        .arg("--prefetch-after")
        .arg(seg_size.to_string())
        .arg(served.as_str())
        .arg(dest)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        log::debug!("prefetch worker not started: {e}");
    }
}

/// The worker: spools up to `restore_prefetch` segments after `served`.
/// One worker per spool (a lock); errors only end prefetching, since
/// restore_command meets and reports the same problem when it gets there.
pub fn run_worker(cfg: &StandbyConfig, served: &WalName, seg_size: u64, dest: &Path) -> std::io::Result<usize> {
    let spool = spool_dir(dest);
    fsutil::ensure_dir(&spool, 0o700)?;
    let Some(_lock) = fsutil::lock(&spool.join(".lock"), std::time::Duration::ZERO)? else {
        return Ok(0);
    };
    // A directory or an object store (one client for every segment fetched).
    let Ok(archive) = crate::storage::standby_archive(cfg, "restore_prefetch") else {
        return Ok(0);
    };
    let archive = archive.as_ref();
    let Ok((expected, _)) = super::expected_system(cfg, archive) else {
        return Ok(0);
    };
    let first = served.segno(seg_size);
    let mut fetched = 0;
    for i in 1..=cfg.restore_prefetch as u64 {
        let next =
            WalName::parse(&wal::segment_name(served.timeline, first + i, seg_size)).expect("generated name parses");
        let target = spool.join(next.as_str());
        if target.exists() {
            continue;
        }
        let Ok(Some((stored, codec, entry))) = super::find(archive, &next) else {
            break;
        };
        match super::copy_into_place(archive, &stored, codec, &next, &target, expected) {
            Ok(c) => {
                let record = format!("{}{}", identity(archive, &stored, &entry), c.sum.render());
                if let Err(e) = fs::write(origin_path(&target), record) {
                    log::debug!("prefetch of {next} stopped: cannot record its origin: {e}");
                    let _ = fs::remove_file(&target);
                    break;
                }
                fetched += 1
            }
            Err(e) => {
                log::debug!("prefetch of {next} stopped: {e}");
                break;
            }
        }
    }
    Ok(fetched)
}
