//! `backup --expire` (also after every backup): retention, the hold, and
//! the archive's WAL older than the oldest kept backup's start.
//!
//! Kept: the newest `keep_backups` complete backups, and every backup needed
//! to recover to any time in the last `recovery_window` days (those that
//! ended inside it, plus the newest that ended before it); with both keys,
//! what either asks for; with neither, every backup. Then the hold
//! ([`crate::layout::backup::HOLD_FILE`]) names the oldest kept backup's
//! start segment, and the WAL before it goes, but never `.history` files,
//! never from the last `%r` cleanup recorded on, and never anything while no
//! complete backup exists.

use anyhow::{Context, Result};

use super::manifest::Manifest;
use super::repo::Repository;
use crate::cleanup::{self, earlier, read_mark};
use crate::config::BackupConfig;
use crate::fsutil;
use crate::layout::backup::{CLEANUP_MARK_FILE, HOLD_FILE};
use crate::storage::{LocalDir, Storage};
use crate::wal::{self, WalName};

#[derive(Debug, Default)]
pub struct ExpireReport {
    pub removed_sets: Vec<String>,
    pub kept_sets: Vec<String>,
    /// The segment the hold names now.
    pub hold: Option<String>,
    /// WAL files removed from archivedir, and their bytes.
    pub removed_wal: Vec<String>,
    pub removed_bytes: u64,
}

impl ExpireReport {
    pub fn summary(&self) -> String {
        format!(
            "expire: removed {} backup(s){}, kept {}; removed {} WAL file(s) ({} MiB) from archivedir; the hold is at {}",
            self.removed_sets.len(),
            if self.removed_sets.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.removed_sets.join(", "))
            },
            self.kept_sets.len(),
            self.removed_wal.len(),
            self.removed_bytes >> 20,
            self.hold.as_deref().unwrap_or("nothing (no complete backup)")
        )
    }
}

/// Which sets (oldest first) retention keeps; `now` in unix microseconds.
pub fn kept(sets: &[Manifest], keep: Option<u64>, window_days: Option<u64>, now: i64) -> Vec<bool> {
    if keep.is_none() && window_days.is_none() {
        return vec![true; sets.len()];
    }
    let n = sets.len();
    let mut out = vec![false; n];
    if let Some(k) = keep {
        for flag in out.iter_mut().skip(n.saturating_sub(k as usize)) {
            *flag = true;
        }
    }
    if let Some(days) = window_days {
        let start = now - days as i64 * 86_400_000_000;
        // The newest backup that ended before the window recovers to its start.
        let before = sets.iter().rposition(|m| m.stop_time < start);
        for (i, m) in sets.iter().enumerate() {
            if m.stop_time >= start || Some(i) == before {
                out[i] = true;
            }
        }
    }
    out
}

/// Applies retention, writes the hold, removes the WAL no kept backup needs.
pub fn run(cfg: &BackupConfig) -> Result<ExpireReport> {
    let repo = Repository::open(&cfg.backup_dir)?;
    let _lock = repo.lock("this expire")?;
    super::take::abort_orphaned_uploads(&repo)?;
    let sets = repo.complete()?;
    let keep = kept(
        &sets,
        cfg.keep_backups,
        cfg.recovery_window_days,
        chrono::Utc::now().timestamp_micros(),
    );
    let mut report = ExpireReport::default();
    for (m, k) in sets.iter().zip(&keep) {
        if *k {
            report.kept_sets.push(m.id.clone());
        } else {
            repo.store
                .delete_tree(&m.id)
                .with_context(|| format!("removing expired backup {}", repo.store.locate(&m.id)))?;
            log::info!("removed backup {} (retention)", m.id);
            report.removed_sets.push(m.id.clone());
        }
    }
    let Some(oldest) = sets.iter().zip(&keep).find(|(_, k)| **k).map(|(m, _)| m) else {
        return Ok(report);
    };
    let archive = LocalDir::new(&cfg.archivedir);
    let start = wal::segment_name(
        oldest.timeline,
        oldest.start_lsn / oldest.segment_size,
        oldest.segment_size,
    );
    fsutil::write_durable(&archive.path(HOLD_FILE), format!("{start}\n").as_bytes(), 0o644)
        .with_context(|| format!("writing the backup hold {}", archive.locate(HOLD_FILE)))?;
    report.hold = Some(start.clone());
    let bound = earlier(WalName::parse(&start)?, read_mark(&archive, CLEANUP_MARK_FILE));
    let removed = cleanup::remove_older(&archive, &bound, &start, false)?;
    for p in &removed.problems {
        log::warn!("{p}");
    }
    report.removed_bytes = removed.removed_bytes;
    report.removed_wal = removed.removed.into_iter().map(|(n, _)| n).collect();
    Ok(report)
}

/// While a backup runs: the hold covers its start too, if nothing older does.
pub fn hold_for_running(archive: &LocalDir, start: &str) -> Result<()> {
    let ours = WalName::parse(start)?;
    if let Some(h) = read_mark(archive, HOLD_FILE) {
        if (h.log, h.seg) <= (ours.log, ours.seg) {
            return Ok(());
        }
    }
    fsutil::write_durable(&archive.path(HOLD_FILE), format!("{start}\n").as_bytes(), 0o644)
        .with_context(|| format!("writing the backup hold {}", archive.locate(HOLD_FILE)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::manifest::tests::sample;

    #[test]
    fn retention_keeps_what_either_key_asks_for() {
        const DAY: i64 = 86_400_000_000;
        let now = 100 * DAY;
        let sets: Vec<Manifest> = [90, 95, 97, 99]
            .iter()
            .map(|d| Manifest {
                stop_time: d * DAY,
                ..sample()
            })
            .collect();
        assert_eq!(kept(&sets, None, None, now), [true; 4]);
        assert_eq!(kept(&sets, Some(1), None, now), [false, false, false, true]);
        // A 4-day window starts at day 96: kept from day 95 (recovers to its start) on.
        assert_eq!(kept(&sets, None, Some(4), now), [false, true, true, true]);
        assert_eq!(kept(&sets, Some(3), Some(1), now), [false, true, true, true]);
        assert_eq!(kept(&sets, Some(10), None, now), [true; 4]);
    }
}
