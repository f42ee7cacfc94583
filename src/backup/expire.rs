//! `backup --expire` (also after every backup): retention, the hold, and
//! the archive's WAL older than the oldest kept backup's start.
//!
//! Kept: the newest `keep_backups` complete backups, and every backup needed
//! to recover to any time in the last `recovery_window` days (those that
//! ended inside it, plus the newest that ended before it); with both keys,
//! what either asks for; with neither, every backup. A set a kept one
//! depends on (an incremental's references) is kept too, for its files.
//! An incremental whose holder is gone does not count as one of the kept:
//! the restorable sets retention asks for stay as well.
//! Then the hold ([`crate::layout::backup::HOLD_FILE`]) names the oldest
//! backup retention keeps, and the WAL before it goes, but never `.history`
//! files, never from the last `%r` cleanup recorded on, and never anything
//! while no complete backup exists.
//!
//! A set kept only for its files does not hold WAL: retention did not ask
//! to recover from it, and the WAL to its own end point is in the set
//! anyway (`recover --backup ID --immediate` still works). Holding its WAL
//! would keep the archive from a full's start for as long as incrementals
//! build on it, which `keep_backups` never asked for. `recover` chooses
//! by itself only sets at or after the hold (see `target::choose`), so a
//! target that only such a set could reach is refused up front.
//!
//! With no complete backup the hold is removed (only a killed backup could
//! have left it). No WAL goes while `cleanup_pause_file` exists, and nothing
//! at all while a recover holds the read lock or archivedir lacks its mark
//! (an unmounted share).

use anyhow::{Context, Result};

use super::manifest::Manifest;
use super::repo::Repository;
use crate::cleanup::{self, earlier, read_mark};
use crate::config::BackupConfig;
use crate::fsutil;
use crate::layout::backup::{CLEANUP_MARK_FILE, HOLD_FILE};
use crate::storage::{read_small, LocalDir, Storage};
use crate::wal::{self, WalName};

#[derive(Debug, Default)]
pub struct ExpireReport {
    pub removed_sets: Vec<String>,
    pub kept_sets: Vec<String>,
    /// Kept only because these (kept) sets reference files stored in them.
    pub kept_for_files: Vec<(String, Vec<String>)>,
    /// The segment the hold names now.
    pub hold: Option<String>,
    /// WAL files removed from archivedir, and their bytes.
    pub removed_wal: Vec<String>,
    pub removed_bytes: u64,
    /// Why no WAL was removed (a recover reads the repository, the pause file).
    pub wal_kept_because: Option<String>,
}

impl ExpireReport {
    pub fn summary(&self) -> String {
        let files: Vec<String> = self
            .kept_for_files
            .iter()
            .map(|(id, by)| format!("{id} only for the files {} references in it", by.join(", ")))
            .collect();
        format!(
            "expire: removed {} backup(s){}, kept {}{}; removed {} WAL file(s) ({} MiB) from archivedir{}; the hold is at {}",
            self.removed_sets.len(),
            if self.removed_sets.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.removed_sets.join(", "))
            },
            self.kept_sets.len(),
            if files.is_empty() {
                String::new()
            } else {
                format!(" ({})", files.join("; "))
            },
            self.removed_wal.len(),
            self.removed_bytes >> 20,
            self.wal_kept_because
                .as_deref()
                .map_or(String::new(), |why| format!(" (none removed: {why})")),
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

/// [`kept`], united with `kept` over the restorable sets only: an
/// incremental whose holder is gone (removed by hand, its manifest lost)
/// cannot be recovered from, so it never stands in for a restorable backup
/// that retention would otherwise remove; it still ages out like any set.
fn retained(sets: &[Manifest], keep: Option<u64>, window_days: Option<u64>, now: i64) -> Vec<bool> {
    let mut restorable = Vec::new();
    for (i, m) in sets.iter().enumerate() {
        let missing: Vec<String> = m
            .depends_on()
            .into_iter()
            .filter(|d| !sets.iter().any(|s| &s.id == d))
            .collect();
        if missing.is_empty() {
            restorable.push(i);
        } else {
            log::warn!(
                "backup {} references files stored in backup(s) {}, which are missing or incomplete: it cannot be \
                 restored, and retention does not count it",
                m.id,
                missing.join(", ")
            );
        }
    }
    let usable: Vec<Manifest> = restorable.iter().map(|&i| sets[i].clone()).collect();
    let mut out = kept(sets, keep, window_days, now);
    for (&i, k) in restorable.iter().zip(kept(&usable, keep, window_days, now)) {
        out[i] |= k;
    }
    out
}

/// Why a set stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    /// Retention asks for it: recoverable, and its WAL is held.
    Retention,
    /// Only for its files: these kept sets reference files stored in it.
    FilesOf(Vec<String>),
}

/// Retention's choice (`kept`), plus every set a kept one depends on,
/// transitively (so a kept incremental's base stays verifiable whole).
/// `None`: the set goes.
pub fn with_dependencies(sets: &[Manifest], kept: &[bool]) -> Vec<Option<Keep>> {
    let mut out: Vec<Option<Keep>> = kept.iter().map(|k| k.then_some(Keep::Retention)).collect();
    let mut todo: Vec<usize> = (0..sets.len()).filter(|i| kept[*i]).collect();
    while let Some(i) = todo.pop() {
        for dep in sets[i].depends_on() {
            let Some(j) = sets.iter().position(|m| m.id == dep) else {
                continue;
            };
            match &mut out[j] {
                Some(Keep::Retention) => {}
                Some(Keep::FilesOf(by)) => by.push(sets[i].id.clone()),
                none => {
                    *none = Some(Keep::FilesOf(vec![sets[i].id.clone()]));
                    todo.push(j);
                }
            }
        }
    }
    for k in out.iter_mut().flatten() {
        if let Keep::FilesOf(by) = k {
            by.sort();
        }
    }
    out
}

/// Applies retention, writes the hold, removes the WAL no kept backup needs.
pub fn run(cfg: &BackupConfig) -> Result<ExpireReport> {
    let repo = Repository::open(&cfg.backup_dir)?;
    let _lock = repo.lock("this expire")?;
    let archive = LocalDir::new(&cfg.archivedir);
    // Before anything is removed: a hold written into an unmounted share is lost.
    cleanup::check_marked(&archive)?;
    check_hold_owner(&archive, &repo.store.location())?;
    super::take::abort_orphaned_uploads(&repo)?;
    let sets = repo.complete()?;
    let mut keep = with_dependencies(
        &sets,
        &retained(
            &sets,
            cfg.keep_backups,
            cfg.recovery_window_days,
            chrono::Utc::now().timestamp_micros(),
        ),
    );
    let mut report = ExpireReport::default();
    let removal = repo.try_removal_lock()?;
    if removal.is_none() {
        keep.iter_mut()
            .filter(|k| k.is_none())
            .for_each(|k| *k = Some(Keep::Retention));
        report.wal_kept_because = Some(format!(
            "a pitrkit recover is reading {}: no backup and no WAL removed; the next expire does it",
            repo.location()
        ));
    }
    for (m, k) in sets.iter().zip(&keep) {
        if let Some(k) = k {
            report.kept_sets.push(m.id.clone());
            if let Keep::FilesOf(by) = k {
                report.kept_for_files.push((m.id.clone(), by.clone()));
            }
        } else {
            repo.store
                .delete_tree(&m.id)
                .with_context(|| format!("removing expired backup {}", repo.store.locate(&m.id)))?;
            log::info!("removed backup {} (retention)", m.id);
            report.removed_sets.push(m.id.clone());
        }
    }
    // Sets kept only for their files hold no WAL (see the module's comment).
    let Some(oldest) = sets
        .iter()
        .zip(&keep)
        .find(|(_, k)| **k == Some(Keep::Retention))
        .map(|(m, _)| m)
    else {
        // No backup runs (we hold the lock): a killed one's hold would block cleanup forever.
        fsutil::remove_durable(&archive.path(HOLD_FILE))
            .with_context(|| format!("removing the backup hold {}", archive.locate(HOLD_FILE)))?;
        return Ok(report);
    };
    let start = wal::segment_name(
        oldest.timeline,
        oldest.start_lsn / oldest.segment_size,
        oldest.segment_size,
    );
    write_hold(&archive, &start, &repo.store.location())?;
    report.hold = Some(start.clone());
    if let Some(pause) = cleanup::paused(cfg.cleanup_pause_file.as_deref())? {
        report.wal_kept_because = Some(format!("{} exists (cleanup_pause_file)", pause.display()));
    }
    if report.wal_kept_because.is_none() {
        remove_wal(&archive, &start, &mut report)?;
    }
    Ok(report)
}

/// Removes the archive's WAL before `start` (and before cleanup's last %r).
fn remove_wal(archive: &LocalDir, start: &str, report: &mut ExpireReport) -> Result<()> {
    let bound = earlier(WalName::parse(start)?, read_mark(archive, CLEANUP_MARK_FILE));
    let removed = cleanup::remove_older(archive, &bound, start, false)?;
    for p in &removed.problems {
        log::warn!("{p}");
    }
    report.removed_bytes = removed.removed_bytes;
    report.removed_wal = removed.removed.into_iter().map(|(n, _)| n).collect();
    Ok(())
}

/// While a backup runs: the hold covers its start too, if nothing older does.
pub fn hold_for_running(archive: &LocalDir, start: &str, repo: &str) -> Result<()> {
    let ours = WalName::parse(start)?;
    if let Some(h) = read_mark(archive, HOLD_FILE) {
        if (h.log, h.seg) <= (ours.log, ours.seg) {
            return Ok(());
        }
    }
    write_hold(archive, start, repo)
}

/// The hold: the segment on its first line (all cleanup reads), then the
/// repository it holds for.
fn write_hold(archive: &LocalDir, start: &str, repo: &str) -> Result<()> {
    let text = format!("{start}\n{HOLD_OWNER}{repo}\n");
    fsutil::write_durable(&archive.path(HOLD_FILE), text.as_bytes(), 0o644)
        .with_context(|| format!("writing the backup hold {}", archive.locate(HOLD_FILE)))
}

const HOLD_OWNER: &str = "repository: ";

/// One archive holds WAL for one repository. A second repository's expire
/// would move the one hold to its own oldest backup (or drop it) and remove
/// WAL the first one's backups, even a running one, need; so a hold
/// written for another repository is refused before anything changes. A
/// hold without an owner (written before owners were recorded) is adopted.
pub fn check_hold_owner(archive: &dyn Storage, repo: &str) -> Result<()> {
    let Some(text) =
        read_small(archive, HOLD_FILE).with_context(|| format!("reading {}", archive.locate(HOLD_FILE)))?
    else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&text);
    match text.lines().find_map(|l| l.strip_prefix(HOLD_OWNER)) {
        // A trailing slash is no other repository.
        Some(owner) if owner.trim_end_matches('/') != repo.trim_end_matches('/') => anyhow::bail!(
            "the WAL archive {} holds WAL for another backup repository ({owner}), not for {repo}: \
             two repositories expiring one archive would remove WAL each other's backups need\n  \
             what to do: give each repository its own archivedir, or back up into {owner}; \
             if that repository no longer exists, remove {} and run this again",
            archive.location(),
            archive.locate(HOLD_FILE)
        ),
        _ => Ok(()),
    }
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

    #[test]
    fn a_kept_incremental_keeps_the_sets_it_references() {
        // F1 full; F2 full; I3 on F2; I4 on I3, referencing F2 and I3.
        let set = |id: &str, holders: &[&str]| Manifest {
            id: id.into(),
            files: holders
                .iter()
                .map(|h| crate::backup::manifest::FileEntry {
                    holder: Some((*h).into()),
                    ..sample().files[0].clone()
                })
                .collect(),
            ..sample()
        };
        let sets = vec![
            set("F1", &[]),
            set("F2", &[]),
            set("I3", &["F2"]),
            set("I4", &["F2", "I3"]),
        ];
        let files_of = |by: &[&str]| Some(Keep::FilesOf(by.iter().map(|s| s.to_string()).collect()));
        assert_eq!(
            with_dependencies(&sets, &[false, false, false, true]),
            [None, files_of(&["I3", "I4"]), files_of(&["I4"]), Some(Keep::Retention)]
        );
        assert_eq!(
            with_dependencies(&sets, &[false, true, false, false]),
            [None, Some(Keep::Retention), None, None]
        );
        let r = ExpireReport {
            kept_sets: vec!["F2".into(), "I4".into()],
            kept_for_files: vec![("F2".into(), vec!["I4".into()])],
            ..Default::default()
        };
        assert!(
            r.summary()
                .contains("kept 2 (F2 only for the files I4 references in it)"),
            "{}",
            r.summary()
        );
    }

    #[test]
    fn an_incremental_that_lost_its_base_does_not_count_as_a_kept_backup() {
        // F1 full; I3 references F2, removed by hand. keep_backups 1 kept
        // only I3, which cannot be restored, and removed F1 and its WAL:
        // no recoverable backup left.
        use crate::backup::manifest::FileEntry;
        use crate::config::ConfigFile;
        let d = tempfile::tempdir().unwrap();
        let (arch, repo) = (d.path().join("arch"), d.path().join("repo"));
        std::fs::create_dir_all(&arch).unwrap();
        crate::archive::sysid::write(&arch, Some(sample().system_id)).unwrap();
        for seg in 2..=9 {
            std::fs::write(arch.join(format!("0000000100000000{seg:08X}")), b"x").unwrap();
        }
        let f1 = Manifest {
            id: "20261128T000000Z".into(),
            start_lsn: 2 << 24,
            ..sample()
        };
        let i3 = Manifest {
            id: "20261130T000000Z".into(),
            kind: crate::config::BackupType::Incremental,
            start_lsn: 8 << 24,
            stop_time: f1.stop_time + 1_000_000,
            files: vec![FileEntry {
                holder: Some("20261129T000000Z".into()),
                ..sample().files[0].clone()
            }],
            ..sample()
        };
        for m in [&f1, &i3] {
            std::fs::create_dir_all(repo.join(&m.id)).unwrap();
            std::fs::write(repo.join(&m.id).join(crate::layout::backup::MANIFEST), m.render()).unwrap();
        }
        let ini = format!(
            "pgdata: /pg\narchivedir: {}\nbackup_dir: {}\nkeep_backups: 1\n",
            arch.display(),
            repo.display()
        );
        let cfg = BackupConfig::from_ini(&crate::config::IniFile::parse(std::path::Path::new("b.ini"), &ini).unwrap())
            .unwrap();
        let r = run(&cfg).unwrap();
        assert_eq!(
            (r.removed_sets.len(), r.hold.as_deref()),
            (0, Some("000000010000000000000002")),
            "{}",
            r.summary()
        );
        assert!(arch.join("000000010000000000000002").exists(), "{}", r.summary());
        // A restorable one later: both go, as retention says.
        let f4 = Manifest {
            id: "20261201T000000Z".into(),
            start_lsn: 9 << 24,
            stop_time: i3.stop_time + 1_000_000,
            ..sample()
        };
        std::fs::create_dir_all(repo.join(&f4.id)).unwrap();
        std::fs::write(repo.join(&f4.id).join(crate::layout::backup::MANIFEST), f4.render()).unwrap();
        let r = run(&cfg).unwrap();
        assert_eq!(r.removed_sets, [f1.id.clone(), i3.id.clone()], "{}", r.summary());
    }

    #[test]
    fn a_second_repository_on_one_archive_is_refused_before_it_removes_anything() {
        use crate::config::ConfigFile;
        let d = tempfile::tempdir().unwrap();
        let arch = d.path().join("arch");
        std::fs::create_dir_all(&arch).unwrap();
        crate::archive::sysid::write(&arch, Some(sample().system_id)).unwrap();
        for seg in 3..=10 {
            std::fs::write(arch.join(format!("0000000100000000{seg:08X}")), b"x").unwrap();
        }
        let archive = LocalDir::new(&arch);
        // Repository 1's backup runs and holds its start segment 3.
        let r1 = d.path().join("r1").display().to_string();
        hold_for_running(&archive, "000000010000000000000003", &r1).unwrap();
        // Repository 2, on the same archive, has one backup from segment 8.
        let r2 = d.path().join("r2");
        let m = Manifest {
            start_lsn: 8 << 24,
            ..sample()
        };
        std::fs::create_dir_all(r2.join(&m.id)).unwrap();
        std::fs::write(r2.join(&m.id).join(crate::layout::backup::MANIFEST), m.render()).unwrap();
        let ini = format!(
            "pgdata: /pg\narchivedir: {}\nbackup_dir: {}\nkeep_backups: 1\n",
            arch.display(),
            r2.display()
        );
        let cfg = BackupConfig::from_ini(&crate::config::IniFile::parse(std::path::Path::new("b.ini"), &ini).unwrap())
            .unwrap();
        let e = format!("{:#}", run(&cfg).unwrap_err());
        assert!(
            e.contains(&format!("holds WAL for another backup repository ({r1})")),
            "{e}"
        );
        assert!(arch.join("000000010000000000000003").exists(), "{e}");
        assert_eq!(
            read_mark(&archive, HOLD_FILE).unwrap().to_string(),
            "000000010000000000000003"
        );
        // The same repository spelt with a trailing slash is no other one.
        check_hold_owner(&archive, &format!("{r1}/")).unwrap();
        // Its own repository moves the hold as usual, and cleanup reads it.
        hold_for_running(&archive, "000000010000000000000002", &r1).unwrap();
        assert_eq!(
            read_mark(&archive, HOLD_FILE).unwrap().to_string(),
            "000000010000000000000002"
        );
        // A hold from before owners were recorded is adopted.
        std::fs::write(arch.join(HOLD_FILE), "000000010000000000000003\n").unwrap();
        assert_eq!(run(&cfg).unwrap().hold.as_deref(), Some("000000010000000000000008"));
    }
}
