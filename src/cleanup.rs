//! PostgreSQL's archive_cleanup_command:
//! `pitrkit cleanup -C standby.ini %r [--dry-run]` (replaces pg_archivecleanup).
//!
//! `%r` names the oldest segment the standby still needs. Every segment and
//! `.partial` file in `archivedir` whose position (log, seg) is older is
//! removed, plain or compressed, on any timeline: like pg_archivecleanup,
//! which compares names without their timeline, because a standby that
//! followed a timeline switch never reads the old timeline's older segments
//! again. Positions are compared as numbers, so no segment size is assumed.
//!
//! Always kept: `.history` files (a later timeline switch reads them all),
//! `.backup` files (small, and a DBA's record of base backups), dot-files
//! (files still being written by rsync or pitrkit) and anything that is not
//! a WAL file name. While `cleanup_pause_file` exists nothing is removed
//! (OmniPITR -p), e.g. while a second standby is being built from the archive.
//!
//! Only one standby may run cleanup on an archive directory: it removes what
//! it no longer needs, whoever else reads the directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::compress::Codec;
use crate::config::{ConfigError, StandbyConfig};
use crate::storage::{Listed, LocalDir, Storage};
use crate::wal::{WalKind, WalName};

#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
    #[error("%r '{0}' is not a WAL segment name (24 hex digits); archive_cleanup_command must be 'pitrkit cleanup -C <standby.ini> %r'")]
    BadOldest(String),
    #[error("archivedir {dir}: {why}")]
    ArchiveDir { dir: PathBuf, why: String },
    #[error("cleanup_pause_file {path}: cannot tell whether it exists: {source}; removing nothing")]
    PauseFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl CleanupError {
    /// A mistake in the configuration or command line (rather than in the
    /// archive); the command turns it into its exit status.
    pub fn is_usage(&self) -> bool {
        matches!(self, CleanupError::Config(_) | CleanupError::BadOldest(_))
    }
}

#[derive(Debug)]
pub enum CleanupOutcome {
    /// `cleanup_pause_file` exists: nothing was looked at or removed.
    Paused {
        pause_file: PathBuf,
    },
    Done(CleanupReport),
}

#[derive(Debug, Default)]
pub struct CleanupReport {
    pub dir: PathBuf,
    pub oldest_kept: String,
    pub dry_run: bool,
    /// Files removed (with `dry_run`: that would be), oldest first, with sizes.
    pub removed: Vec<(String, u64)>,
    pub removed_bytes: u64,
    /// Segments and .partial files at or after `%r`.
    pub kept_wal: usize,
    pub kept_history: usize,
    pub kept_backup: usize,
    /// Dot-files, directories, names that are not WAL.
    pub ignored: usize,
    /// What went wrong (files that could not be removed, the directory fsync).
    pub problems: Vec<String>,
}

impl CleanupReport {
    /// The one-line summary for the log.
    pub fn summary(&self) -> String {
        format!(
            "{} {} file(s), {} bytes ({:.1} MiB), older than {} from {}; kept {} WAL, {} history, {} backup, {} other file(s){}",
            if self.dry_run { "would remove" } else { "removed" },
            self.removed.len(),
            self.removed_bytes,
            self.removed_bytes as f64 / (1 << 20) as f64,
            self.oldest_kept,
            self.dir.display(),
            self.kept_wal,
            self.kept_history,
            self.kept_backup,
            self.ignored,
            if self.problems.is_empty() {
                String::new()
            } else {
                format!("; {} problem(s)", self.problems.len())
            }
        )
    }
}

/// What cleanup does with one directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Remove(WalName),
    KeepWal,
    KeepHistory,
    KeepBackup,
    Ignore(&'static str),
}

/// Decides the fate of `file_name` given `%r`; compressed names are judged
/// by the name inside the codec suffix.
pub fn classify(file_name: &str, oldest: &WalName) -> Verdict {
    if file_name.starts_with('.') {
        return Verdict::Ignore("a dot-file (a copy in progress?)");
    }
    // A plain file's checksum sidecar goes (or stays) with its file.
    let unsummed = file_name.strip_suffix(crate::layout::SUM_SUFFIX).unwrap_or(file_name);
    let (_, base) = Codec::detect(unsummed);
    let Ok(name) = WalName::parse(base) else {
        return Verdict::Ignore("not a WAL file name");
    };
    match name.kind {
        WalKind::History => Verdict::KeepHistory,
        WalKind::Backup => Verdict::KeepBackup,
        WalKind::Segment | WalKind::Partial => {
            // The timeline is deliberately not compared (pg_archivecleanup does the same).
            if (name.log, name.seg) < (oldest.log, oldest.seg) {
                Verdict::Remove(name)
            } else {
                Verdict::KeepWal
            }
        }
    }
}

/// A segment name recorded on the first line of `file` of `archive` (the
/// backup hold, the last %r); `None` if there is none or it does not name a
/// segment.
pub fn read_mark(archive: &dyn Storage, file: &str) -> Option<WalName> {
    let text = crate::storage::read_small(archive, file).ok()??;
    WalName::parse(String::from_utf8_lossy(&text).lines().next()?.trim())
        .ok()
        .filter(|n| n.kind == WalKind::Segment)
}

/// The earlier of two segments by position (timelines not compared, as in [`classify`]).
pub fn earlier(a: WalName, b: Option<WalName>) -> WalName {
    match b {
        Some(b) if (b.log, b.seg) < (a.log, a.seg) => b,
        _ => a,
    }
}

/// Removes (or with `dry_run` lists) archived WAL older than `oldest_kept`
/// (`%r`), but never what a backup holds ([`crate::layout::backup::HOLD_FILE`]);
/// records `%r` ([`crate::layout::backup::CLEANUP_MARK_FILE`]) for backup expiry.
pub fn cleanup(cfg: &StandbyConfig, oldest_kept: &str, dry_run: bool) -> Result<CleanupOutcome, CleanupError> {
    use crate::layout::backup::{CLEANUP_MARK_FILE, HOLD_FILE};
    let oldest = match WalName::parse(oldest_kept) {
        Ok(n) if n.kind == WalKind::Segment => n,
        _ => return Err(CleanupError::BadOldest(oldest_kept.to_string())),
    };
    let archive = crate::storage::standby_archive(
        cfg,
        "the directory the archiver ships WAL to; cleanup removes old WAL from it",
    )?;
    if let Some(pause) = paused(cfg.cleanup_pause_file.as_deref())? {
        return Ok(CleanupOutcome::Paused { pause_file: pause });
    }
    let archive = archive.as_ref();
    let hold = read_mark(archive, HOLD_FILE);
    if let Some(h) = hold.as_ref().filter(|h| (h.log, h.seg) < (oldest.log, oldest.seg)) {
        log::info!(
            "keeping {h} and later: a backup needs them ({})",
            archive.locate(HOLD_FILE)
        );
    }
    let report = remove_older(archive, &earlier(oldest.clone(), hold), oldest_kept, dry_run)?;
    if !dry_run {
        if let Err(e) = archive.replace(CLEANUP_MARK_FILE, format!("{oldest}\n").as_bytes()) {
            log::warn!("cannot record %r in {}: {e}", archive.locate(CLEANUP_MARK_FILE));
        }
    }
    Ok(CleanupOutcome::Done(report))
}

/// Removes (or lists) the WAL in `archive` older than `oldest` (see [`classify`]).
pub fn remove_older(
    archive: &dyn Storage,
    oldest: &WalName,
    shown: &str,
    dry_run: bool,
) -> Result<CleanupReport, CleanupError> {
    let dir = PathBuf::from(archive.location());
    let listing = archive.list().map_err(|e| CleanupError::ArchiveDir {
        dir: dir.clone(),
        why: format!("cannot list it: {e}; fix the archive directory's permissions"),
    })?;
    let mut report = CleanupReport {
        dir,
        oldest_kept: shown.to_string(),
        dry_run,
        ..Default::default()
    };
    let doomed = sort_out(archive, listing, oldest, &mut report);
    remove(archive, doomed, &mut report);
    Ok(report)
}

/// The pause file (`cleanup_pause_file`), if it exists: then no WAL is
/// removed (cleanup, and expire too). symlink_metadata: a dangling symlink
/// still means "paused"; and an error other than "not there" must not be
/// read as "not paused".
pub fn paused(pause: Option<&Path>) -> Result<Option<PathBuf>, CleanupError> {
    let Some(pause) = pause else {
        return Ok(None);
    };
    match fs::symlink_metadata(pause) {
        Ok(_) => Ok(Some(pause.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CleanupError::PauseFile {
            path: pause.to_path_buf(),
            source,
        }),
    }
}

/// Before a backup's hold is written into `archive` or WAL removed from it
/// by age: it is there and carries the `.pitrkit-system-id` mark of `-I`.
/// An unmarked directory is typically the empty mount point of a share that
/// is not mounted, where a hold would be hidden once the share is mounted.
pub fn check_marked(archive: &LocalDir) -> Result<(), CleanupError> {
    let refuse = |why: String| CleanupError::ArchiveDir {
        dir: archive.root().to_path_buf(),
        why,
    };
    archive.available().map_err(&refuse)?;
    match crate::archive::sysid::read_from(archive) {
        Ok(crate::archive::sysid::Recorded::Missing) => Err(refuse(format!(
            "has no {} mark: it is not mounted, or was never set up with `pitrkit archiver -I`; \
             no hold written and no WAL removed. Mount it (or run -I), then run `pitrkit backup --expire` again",
            crate::archive::sysid::SYSTEM_ID_FILE
        ))),
        Ok(_) => Ok(()),
        Err(e) => Err(refuse(format!("cannot read its mark: {e}"))),
    }
}

/// A file to remove: its position (for the order), name and size.
type Doomed = ((u32, u32, u32), String, u64);

/// Counts what is kept and returns what goes, oldest first.
fn sort_out(archive: &dyn Storage, listing: Vec<Listed>, oldest: &WalName, report: &mut CleanupReport) -> Vec<Doomed> {
    let mut doomed = Vec::new();
    for listed in listing {
        let file_name = match listed {
            Listed::Problem(p) => {
                report.problems.push(p);
                continue;
            }
            Listed::NotUtf8(n) => {
                log::debug!("ignoring {n}: not a UTF-8 name");
                report.ignored += 1;
                continue;
            }
            Listed::Name { name, dir: true } => {
                log::debug!("ignoring {name}: a directory");
                report.ignored += 1;
                continue;
            }
            Listed::Name { name, dir: false } => name,
        };
        match classify(&file_name, oldest) {
            Verdict::Remove(name) => {
                let size = archive.stat(&file_name).ok().flatten().map_or(0, |e| e.size);
                doomed.push(((name.log, name.seg, name.timeline), file_name, size));
            }
            Verdict::KeepWal => report.kept_wal += 1,
            Verdict::KeepHistory => report.kept_history += 1,
            Verdict::KeepBackup => report.kept_backup += 1,
            Verdict::Ignore(why) => {
                log::debug!("ignoring {file_name}: {why}");
                report.ignored += 1;
            }
        }
    }
    doomed.sort();
    doomed
}

fn remove(archive: &dyn Storage, doomed: Vec<Doomed>, report: &mut CleanupReport) {
    // In batches: an object store removes up to 1000 names per request.
    let names: Vec<String> = doomed.iter().map(|(_, n, _)| n.clone()).collect();
    let results = match report.dry_run {
        true => Vec::new(),
        false => archive.delete_many(&names),
    };
    let mut results = results.into_iter();
    for (_, file_name, size) in doomed {
        let path = archive.locate(&file_name);
        if report.dry_run {
            println!("would remove {path} ({size} bytes)");
        } else {
            match results.next().unwrap_or(Ok(false)) {
                Ok(true) => log::debug!("removed {path}"),
                // Another cleanup got there first: the goal is reached all the same.
                Ok(false) => continue,
                Err(e) => {
                    report.problems.push(format!("{path}: cannot remove: {e}"));
                    continue;
                }
            }
        }
        report.removed_bytes += size;
        report.removed.push((file_name, size));
    }
    // Once, not per file: a crash may bring some names back, and the next
    // cleanup removes them again.
    if !report.dry_run && !report.removed.is_empty() {
        if let Err(e) = archive.sync() {
            report
                .problems
                .push(format!("{}: fsync directory: {e}", archive.location()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testsupport::fixtures::{listing, StandbyDirs};

    struct Env {
        _dirs: StandbyDirs,
        cfg: StandbyConfig,
        archive: PathBuf,
        pause: PathBuf,
    }

    impl Env {
        fn new(files: &[&str]) -> Env {
            let dirs =
                StandbyDirs::new(|root| format!("cleanup_pause_file: {}\n", root.join("pause_cleanup").display()));
            for f in files {
                fs::write(dirs.archive.join(f), f.as_bytes()).unwrap();
            }
            Env {
                cfg: dirs.cfg.clone(),
                archive: dirs.archive.clone(),
                pause: dirs.dir.path().join("pause_cleanup"),
                _dirs: dirs,
            }
        }

        fn run(&self, oldest: &str, dry_run: bool) -> CleanupReport {
            match cleanup(&self.cfg, oldest, dry_run).unwrap() {
                CleanupOutcome::Done(r) => {
                    assert!(r.problems.is_empty(), "{:?}", r.problems);
                    r
                }
                other => panic!("{other:?}"),
            }
        }

        /// What is left, without the %r record.
        fn left(&self) -> Vec<String> {
            let mut l = listing(&self.archive);
            l.retain(|n| n != crate::layout::backup::CLEANUP_MARK_FILE);
            l
        }
    }

    fn names(r: &CleanupReport) -> Vec<&str> {
        r.removed.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn removes_older_segments_on_every_timeline() {
        let env = Env::new(&[
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000003.partial",
            "000000010000000000000004",
            "000000020000000000000003",
            "000000020000000000000004",
            "000000020000000000000005",
            "000000030000000000000002",
        ]);
        let r = env.run("000000020000000000000004", false);
        assert_eq!(
            names(&r),
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000030000000000000002",
                "000000010000000000000003.partial",
                "000000020000000000000003",
            ]
        );
        assert_eq!(r.removed_bytes, 24 * 4 + 32);
        assert_eq!(
            env.left(),
            [
                "000000010000000000000004",
                "000000020000000000000004",
                "000000020000000000000005"
            ]
        );
        assert_eq!(r.kept_wal, 3);
        assert!(
            r.summary().starts_with("removed 5 file(s), 128 bytes"),
            "{}",
            r.summary()
        );
    }

    #[test]
    fn positions_compare_as_numbers_across_log_ids() {
        // Log 1 segment FF (16 MiB segments) and log 1 segment 3F (64 MiB):
        // both before log 2 segment 0, whatever the segment size.
        let env = Env::new(&[
            "0000000100000001000000FF",
            "00000001000000010000003F",
            "000000010000000200000000",
            "00000001000000020000000a",
            "000000010000000A00000000",
        ]);
        let r = env.run("000000010000000200000000", false);
        assert_eq!(names(&r), ["00000001000000010000003F", "0000000100000001000000FF"]);
        assert_eq!(env.left().len(), 3);
    }

    #[test]
    fn compressed_files_go_history_and_backup_stay() {
        let env = Env::new(&[
            "000000010000000000000001.zst",
            "000000010000000000000001.sum",
            "000000010000000000000004.sum",
            "00000002.history.sum",
            "000000010000000000000002.lz4",
            "000000010000000000000003.gz",
            "000000010000000000000003.partial.zst",
            "000000010000000000000004.zst",
            "00000002.history",
            "00000003.history.gz",
            "000000010000000000000002.00000028.backup",
        ]);
        let r = env.run("000000010000000000000004", false);
        assert_eq!(
            names(&r),
            [
                "000000010000000000000001.sum",
                "000000010000000000000001.zst",
                "000000010000000000000002.lz4",
                "000000010000000000000003.gz",
                "000000010000000000000003.partial.zst",
            ]
        );
        assert_eq!(
            env.left(),
            [
                "000000010000000000000002.00000028.backup",
                "000000010000000000000004.sum",
                "000000010000000000000004.zst",
                "00000002.history",
                "00000002.history.sum",
                "00000003.history.gz",
            ]
        );
        assert_eq!((r.kept_wal, r.kept_history, r.kept_backup), (2, 3, 1));
    }

    #[test]
    fn dot_files_unknown_files_and_directories_are_left_alone() {
        let env = Env::new(&[
            ".000000010000000000000001.pitrkit-42.tmp",
            ".000000010000000000000001.Xy12Ab",
            "000000010000000000000001.bz2",
            "000000010000000000000001.tmp",
            "README",
        ]);
        fs::create_dir(env.archive.join("000000010000000000000001")).unwrap();
        let before = env.left();
        let r = env.run("000000010000000000000009", false);
        assert!(r.removed.is_empty());
        assert_eq!(r.ignored, 6);
        assert_eq!(env.left(), before);
    }

    #[test]
    fn pause_file_stops_everything() {
        let env = Env::new(&["000000010000000000000001"]);
        fs::write(&env.pause, "").unwrap();
        match cleanup(&env.cfg, "000000010000000000000005", false).unwrap() {
            CleanupOutcome::Paused { pause_file } => assert_eq!(pause_file, env.pause),
            other => panic!("{other:?}"),
        }
        assert_eq!(env.left(), ["000000010000000000000001"]);
        fs::remove_file(&env.pause).unwrap();
        assert_eq!(
            names(&env.run("000000010000000000000005", false)),
            ["000000010000000000000001"]
        );
    }

    #[test]
    fn dry_run_removes_nothing() {
        let env = Env::new(&["000000010000000000000001", "000000010000000000000002.gz"]);
        let r = env.run("000000010000000000000003", true);
        assert_eq!(names(&r), ["000000010000000000000001", "000000010000000000000002.gz"]);
        assert!(r.summary().starts_with("would remove 2 file(s)"), "{}", r.summary());
        assert_eq!(env.left().len(), 2);
    }

    #[test]
    fn bad_oldest_kept_is_a_usage_error() {
        let env = Env::new(&["000000010000000000000001"]);
        for bad in [
            "",
            "00000002.history",
            "000000010000000000000003.partial",
            "000000010000000000000002.00000028.backup",
            "RECOVERYXLOG",
            "000000010000000000000003.zst",
        ] {
            let e = cleanup(&env.cfg, bad, false).unwrap_err();
            assert!(matches!(e, CleanupError::BadOldest(_)), "{bad}: {e}");
            assert!(e.is_usage());
            assert!(e.to_string().contains("%r"), "{e}");
        }
        assert_eq!(env.left(), ["000000010000000000000001"]);

        let mut gone = env.cfg.clone();
        gone.archivedir = Some(env.archive.join("missing"));
        let e = cleanup(&gone, "000000010000000000000003", false).unwrap_err();
        assert!(!e.is_usage());
        assert!(e.to_string().contains("missing"), "{e}");
        gone.archivedir = None;
        let e = cleanup(&gone, "000000010000000000000003", false).unwrap_err();
        assert!(e.is_usage());
        assert!(e.to_string().contains("'archivedir' is not set"), "{e}");
    }
}
