//! restore_command against real files in a temporary archive and pg_wal.

use super::*;
use crate::config::ConfigFile;
use crate::config::IniFile;
use crate::integrity::{self, Sum};
use crate::storage::LocalDir;
use crate::testsupport::fixtures::{listing, StandbyDirs};
use crate::testsupport::wal as testsupport;
use std::fs::File;

mod across;

const SEG: u64 = testsupport::SEG as u64;

/// A segment of system 7 (the archive's mark) with a header for `header_for`.
fn segment(header_for: &str) -> Vec<u8> {
    testsupport::segment(header_for, 7)
}

struct Env {
    _dirs: StandbyDirs,
    cfg: StandbyConfig,
    archive: PathBuf,
    pg_wal: PathBuf,
}

impl Env {
    fn new(extra: &str) -> Env {
        let dirs = StandbyDirs::new(|_| extra.to_string());
        // Marked for system 7, the one `segment` writes.
        sysid::write(&dirs.archive, Some(7)).unwrap();
        Env {
            cfg: dirs.cfg.clone(),
            archive: dirs.archive.clone(),
            pg_wal: dirs.pg_wal.clone(),
            _dirs: dirs,
        }
    }

    /// A plain file with its checksum sidecar, as the archiver stores it.
    fn archive(&self, file: &str, data: &[u8]) -> PathBuf {
        let p = self.archive_legacy(file, data);
        if Codec::detect(file).0 == Codec::None {
            let sum = Sum::of_reader(data).unwrap();
            fs::write(integrity::sum_name(&p.display().to_string()), sum.render()).unwrap();
        }
        p
    }

    /// A plain file without sidecar, as pitrtools stored it.
    fn archive_legacy(&self, file: &str, data: &[u8]) -> PathBuf {
        let p = self.archive.join(file);
        fs::write(&p, data).unwrap();
        p
    }

    fn archive_compressed(&self, name: &str, codec: Codec, data: &[u8]) -> PathBuf {
        let mut packed = Vec::new();
        codec.compress(data, &mut packed, None).unwrap();
        self.archive_legacy(&format!("{name}{}", codec.suffix()), &packed)
    }

    fn dest(&self) -> PathBuf {
        self.pg_wal.join("RECOVERYXLOG")
    }

    fn restore(&self, wanted: &str) -> Result<RestoreOutcome, RestoreError> {
        restore(&self.cfg, wanted, &self.dest())
    }

    /// Everything in pg_wal: proves no temporary file was left behind.
    fn pg_wal_files(&self) -> Vec<String> {
        listing(&self.pg_wal)
    }
}

const S3: &str = "000000010000000000000003";

#[test]
fn restores_a_plain_segment() {
    let env = Env::new("");
    let data = segment(S3);
    let archived = env.archive(S3, &data);
    let out = env.restore(S3).unwrap();
    assert_eq!(
        out,
        RestoreOutcome::Restored {
            archived,
            codec: Codec::None,
            bytes: SEG
        }
    );
    assert_eq!(out.exit_code(), EXIT_RESTORED);
    assert!(fs::read(env.dest()).unwrap() == data);
    assert_eq!(env.pg_wal_files(), ["RECOVERYXLOG"]);
}

#[test]
fn temporary_files_of_killed_restores_are_reclaimed() {
    let env = Env::new("");
    env.archive(S3, &segment(S3));
    // A restore killed two minutes ago, and one that is still writing.
    let dead = env.pg_wal.join(format!(".RECOVERYXLOG.pitrkit-{}.tmp", u32::MAX));
    let live = env.pg_wal.join(format!(".RECOVERYXLOG.pitrkit-{}.tmp", u32::MAX - 1));
    for p in [&dead, &live] {
        let f = File::create(p).unwrap();
        f.set_modified(SystemTime::now() - fsutil::RECLAIM_AGE - Duration::from_secs(5))
            .unwrap();
    }
    let writer = File::open(&live).unwrap();
    let _held = fsutil::hold_temp_lock(&writer).unwrap();
    env.restore(S3).unwrap();
    assert!(!dead.exists(), "a dead restore's temporary file stays");
    assert!(live.exists(), "a live writer's temporary file was taken");
}

#[test]
fn restores_each_compressed_form() {
    for codec in [Codec::Zstd, Codec::Lz4, Codec::Gzip] {
        let env = Env::new("");
        let data = segment(S3);
        env.archive_compressed(S3, codec, &data);
        match env.restore(S3).unwrap() {
            RestoreOutcome::Restored { codec: c, bytes, .. } => assert_eq!((c, bytes), (codec, SEG)),
            other => panic!("{codec}: {other:?}"),
        }
        assert!(fs::read(env.dest()).unwrap() == data, "{codec}");
        assert_eq!(env.pg_wal_files(), ["RECOVERYXLOG"], "{codec}");
    }
    // History files too, and the plain file wins over a compressed one.
    let env = Env::new("");
    env.archive_compressed("00000002.history", Codec::Gzip, b"1\t0/3000000\tno recovery target\n");
    env.archive_compressed("00000002.history", Codec::Zstd, b"1\t0/3000000\tzstd copy\n");
    let RestoreOutcome::Restored { codec, .. } = env.restore("00000002.history").unwrap() else {
        panic!()
    };
    assert_eq!(codec, Codec::Zstd);
    assert_eq!(fs::read(env.dest()).unwrap(), b"1\t0/3000000\tzstd copy\n");
    env.archive("00000002.history", b"1\t0/3000000\tplain copy\n");
    env.restore("00000002.history").unwrap();
    assert_eq!(fs::read(env.dest()).unwrap(), b"1\t0/3000000\tplain copy\n");
}

#[test]
fn missing_file_is_not_found_and_writes_nothing() {
    let env = Env::new("");
    for wanted in [S3, "00000002.history", "000000010000000000000003.partial"] {
        let out = env.restore(wanted).unwrap();
        assert_eq!(out, RestoreOutcome::NotFound);
        assert_eq!(out.exit_code(), EXIT_NOT_FOUND);
    }
    assert!(env.pg_wal_files().is_empty());
}

#[test]
fn delay_holds_back_segments_but_not_history() {
    let env = Env::new("restore_delay: 3600\n");
    let seg = env.archive_compressed(S3, Codec::Zstd, &segment(S3));
    env.archive("00000002.history", b"1\t0/3000000\tno recovery target\n");

    // Archive recovery (PITR, failover): never delayed, it would end recovery early.
    assert!(matches!(env.restore(S3).unwrap(), RestoreOutcome::Restored { .. }));
    fs::remove_file(env.dest()).unwrap();
    let pgdata = env.pg_wal.parent().unwrap();
    fs::write(pgdata.join("standby.signal"), b"").unwrap();

    let out = env.restore(S3).unwrap();
    assert!(matches!(out, RestoreOutcome::Delayed { .. }), "{out:?}");
    assert_eq!(out.exit_code(), EXIT_NOT_FOUND);
    assert!(env.pg_wal_files().is_empty());

    // History files are never delayed: a standby must see a new timeline.
    assert!(matches!(
        env.restore("00000002.history").unwrap(),
        RestoreOutcome::Restored { .. }
    ));

    // Once old enough, the segment is served.
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    File::options()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    assert!(matches!(env.restore(S3).unwrap(), RestoreOutcome::Restored { .. }));
    assert!(fs::read(env.dest()).unwrap() == segment(S3));
}

#[test]
fn a_failover_by_pitrkit_is_never_delayed() {
    let env = Env::new("restore_delay: 3600\n");
    env.archive_compressed(S3, Codec::Zstd, &segment(S3));
    let pgdata = env.pg_wal.parent().unwrap();
    fs::write(pgdata.join("standby.signal"), b"").unwrap();
    assert!(matches!(env.restore(S3).unwrap(), RestoreOutcome::Delayed { .. }));
    // -F999 marks pgdata before asking PostgreSQL to promote, naming
    // the running postmaster.
    fs::write(pgdata.join("postmaster.pid"), "4242\n/pgdata\n1700000000\n5432\n").unwrap();
    let marker = pgdata.join(crate::layout::PROMOTING_FILE);
    fs::write(&marker, b"").unwrap();
    assert!(
        matches!(env.restore(S3).unwrap(), RestoreOutcome::Delayed { .. }),
        "a marker naming no postmaster is stale"
    );
    let pm = crate::standby::promoting::Postmaster::of(pgdata).unwrap();
    crate::standby::promoting::write(pgdata, &pm).unwrap();
    assert!(matches!(env.restore(S3).unwrap(), RestoreOutcome::Restored { .. }));
    fs::remove_file(env.dest()).unwrap();
    fs::remove_file(&marker).unwrap();
    assert!(matches!(env.restore(S3).unwrap(), RestoreOutcome::Delayed { .. }));
}

#[test]
fn corrupt_compressed_file_is_fatal_and_leaves_nothing() {
    for codec in [Codec::Zstd, Codec::Lz4, Codec::Gzip] {
        let env = Env::new("");
        let p = env.archive_compressed(S3, codec, &segment(S3));
        // Truncated, as by a full disk or an interrupted copy.
        let packed = fs::read(&p).unwrap();
        fs::write(&p, &packed[..packed.len() / 2]).unwrap();
        let e = env.restore(S3).unwrap_err();
        assert!(matches!(e, RestoreError::Corrupt { .. }), "{codec}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&p.display().to_string()) && msg.contains("damaged"),
            "{msg}"
        );
        assert!(env.pg_wal_files().is_empty(), "{codec}: {:?}", env.pg_wal_files());

        // A flipped bit.
        let mut bad = packed.clone();
        let at = bad.len() - 2;
        bad[at] ^= 0x40;
        fs::write(&p, &bad).unwrap();
        assert!(matches!(env.restore(S3), Err(RestoreError::Corrupt { .. })), "{codec}");
        assert!(env.pg_wal_files().is_empty());
    }
}

#[test]
fn renamed_or_truncated_segment_is_fatal() {
    let env = Env::new("");
    // Segment 4's bytes under segment 3's name.
    env.archive(S3, &segment("000000010000000000000004"));
    let e = env.restore(S3).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RestoreError::WrongSegment { .. }), "{msg}");
    assert!(msg.contains("does not belong") && msg.contains(S3), "{msg}");
    assert!(env.pg_wal_files().is_empty());

    // Compressed, and cut short before compression.
    fs::remove_file(env.archive.join(S3)).unwrap();
    env.archive_compressed(S3, Codec::Lz4, &segment(S3)[..SEG as usize / 2]);
    let msg = env.restore(S3).unwrap_err().to_string();
    assert!(msg.contains("restored data is 524288 bytes"), "{msg}");
    assert!(env.pg_wal_files().is_empty());
}

#[test]
fn dest_is_replaced_atomically_or_not_at_all() {
    let env = Env::new("");
    fs::write(env.dest(), b"previous RECOVERYXLOG").unwrap();
    env.archive(S3, &segment("000000010000000000000009"));
    assert!(env.restore(S3).is_err());
    // Failure: the old file is untouched and no temporary file remains.
    assert_eq!(fs::read(env.dest()).unwrap(), b"previous RECOVERYXLOG");
    assert_eq!(env.pg_wal_files(), ["RECOVERYXLOG"]);

    env.archive(S3, &segment(S3));
    env.restore(S3).unwrap();
    assert!(fs::read(env.dest()).unwrap() == segment(S3));
    assert_eq!(env.pg_wal_files(), ["RECOVERYXLOG"]);

    // %p in a directory that does not exist: a write error, fatal.
    let e = restore(&env.cfg, S3, &env.pg_wal.join("nope/RECOVERYXLOG")).unwrap_err();
    assert!(matches!(e, RestoreError::Write { .. }), "{e}");
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn bad_requests_and_config_are_fatal() {
    let env = Env::new("");
    for bad in ["RECOVERYXLOG", "pg_wal/000000010000000000000003", ""] {
        let e = env.restore(bad).unwrap_err();
        assert!(matches!(e, RestoreError::BadName(_)), "{bad}: {e}");
        assert!(e.to_string().contains("%f %p"), "{e}");
    }

    let no_key = StandbyConfig::from_ini(&IniFile::parse(Path::new("standby.ini"), "debug: on\n").unwrap()).unwrap();
    let e = restore(&no_key, S3, &env.dest()).unwrap_err().to_string();
    assert!(e.contains("'archivedir' is not set"), "{e}");

    let mut gone = env.cfg.clone();
    gone.archivedir = Some(env.archive.join("missing"));
    let e = restore(&gone, S3, &env.dest()).unwrap_err().to_string();
    assert!(e.contains("missing") && e.contains("does not exist"), "{e}");

    // A directory where the file should be is not "not found".
    fs::create_dir(env.archive.join(S3)).unwrap();
    assert!(matches!(env.restore(S3), Err(RestoreError::Unreadable { .. })));
}

#[test]
fn unreadable_archive_file_is_fatal() {
    use std::os::unix::fs::PermissionsExt;
    // root reads anything, so this part needs an ordinary user.
    if !nix::unistd::geteuid().is_root() {
        let env = Env::new("");
        let p = env.archive(S3, &segment(S3));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
        let e = env.restore(S3).unwrap_err();
        assert!(matches!(e, RestoreError::Unreadable { .. }), "{e}");
        assert!(env.pg_wal_files().is_empty());
    }
    // Reading fails half way (a directory opens, then EISDIR on read):
    // reported as unreadable, not as corrupt data.
    let env = Env::new("");
    let parent = LocalDir::new(env.archive.parent().unwrap());
    let e = copy_into_place(
        &parent,
        "archive",
        Codec::Zstd,
        &WalName::parse(S3).unwrap(),
        &env.dest(),
        None,
    )
    .unwrap_err();
    assert!(matches!(e, RestoreError::Unreadable { .. }), "{e}");
    assert!(env.pg_wal_files().is_empty());
}

#[test]
fn prefetched_segments_are_identical_served_once_and_never_across_timelines() {
    let env = Env::new("restore_prefetch: 3\n");
    let names: Vec<String> = (3..=7).map(|i| format!("0000000100000000000000{i:02X}")).collect();
    for n in &names {
        env.archive_compressed(n, Codec::Zstd, &segment(n));
    }
    // Serving 03 (from the archive), then the worker spools 04, 05, 06.
    assert!(matches!(
        env.restore(&names[0]).unwrap(),
        RestoreOutcome::Restored { codec: Codec::Zstd, .. }
    ));
    let n03 = WalName::parse(&names[0]).unwrap();
    assert_eq!(prefetch::run_worker(&env.cfg, &n03, SEG, &env.dest()).unwrap(), 3);
    let spool = prefetch::spool_dir(&env.dest());
    assert!(spool.join(&names[3]).exists() && !spool.join(&names[4]).exists());

    // 04 comes from the spool (moved, so at most once) and is byte-identical.
    match env.restore(&names[1]).unwrap() {
        RestoreOutcome::Restored { archived, .. } => assert!(archived.starts_with(&spool), "{archived:?}"),
        other => panic!("{other:?}"),
    }
    assert!(fs::read(env.dest()).unwrap() == segment(&names[1]));
    assert!(!spool.join(&names[1]).exists());

    // A history file request (timeline switch ahead) empties the spool.
    env.archive("00000002.history", b"1\t0/5000000\tno recovery target\n");
    env.restore("00000002.history").unwrap();
    assert!(!spool.join(&names[2]).exists() && !spool.join(&names[3]).exists());

    // A segment of another timeline also drops what was spooled for the old one.
    let n05 = WalName::parse(&names[2]).unwrap();
    prefetch::run_worker(&env.cfg, &n05, SEG, &env.dest()).unwrap();
    assert!(spool.join(&names[3]).exists());
    env.archive("000000020000000000000006", &segment("000000020000000000000006"));
    assert!(matches!(
        env.restore("000000020000000000000006").unwrap(),
        RestoreOutcome::Restored { codec: Codec::None, .. }
    ));
    assert!(fs::read(env.dest()).unwrap() == segment("000000020000000000000006"));
    assert!(
        !spool.join(&names[3]).exists(),
        "timeline 1 segments must not survive a switch to timeline 2"
    );
}

#[test]
fn prefetch_stops_at_the_first_bad_or_missing_segment() {
    let env = Env::new("restore_prefetch: 4\n");
    env.archive("000000010000000000000003", &segment("000000010000000000000003"));
    // 04 carries 09's header (renamed by hand): never spooled.
    env.archive("000000010000000000000004", &segment("000000010000000000000009"));
    let n = WalName::parse("000000010000000000000003").unwrap();
    assert_eq!(prefetch::run_worker(&env.cfg, &n, SEG, &env.dest()).unwrap(), 0);
    let spool = prefetch::spool_dir(&env.dest());
    assert_eq!(
        fs::read_dir(&spool)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != ".lock")
            .count(),
        0
    );
    // And the direct restore still reports it as fatal.
    assert!(matches!(
        env.restore("000000010000000000000004"),
        Err(RestoreError::WrongSegment { .. })
    ));
    // A delayed standby never prefetches.
    let delayed = Env::new("restore_prefetch: 4\nrestore_delay: 60\n");
    assert!(!prefetch::enabled(&delayed.cfg));
}

fn wal(name: &str, sysid: u64) -> Vec<u8> {
    let mut b = testsupport::Builder::new(name, sysid);
    b.fill(600_000).switch();
    b.data.clone()
}

#[test]
fn stored_checksums_and_the_full_check_catch_a_flipped_bit() {
    // Plain with sidecar: any byte.
    let env = Env::new("");
    let mut data = segment(S3);
    env.archive(S3, &data);
    data[500_000] ^= 1; // in the zero tail: only the sidecar can tell
    fs::write(env.archive.join(S3), &data).unwrap();
    let e = env.restore(S3).unwrap_err();
    assert!(matches!(e, RestoreError::Damaged { .. }), "{e}");
    assert!(e.to_string().contains("differ from its checksum file"), "{e}");
    assert!(env.pg_wal_files().is_empty());

    // Legacy plain (no sidecar): intact real-structured WAL is served ...
    let env = Env::new("");
    let good = wal(S3, 7);
    env.archive_legacy(S3, &good);
    assert!(matches!(env.restore(S3).unwrap(), RestoreOutcome::Restored { .. }));
    assert!(fs::read(env.dest()).unwrap() == good);
    fs::remove_file(env.dest()).unwrap();
    // ... a flipped bit inside a record is not ...
    let mut bad = good.clone();
    bad[100_000] ^= 0x20;
    env.archive_legacy(S3, &bad);
    let e = env.restore(S3).unwrap_err();
    assert!(matches!(e, RestoreError::Damaged { .. }), "{e}");
    assert!(e.to_string().contains("no checksum file"), "{e}");
    assert!(env.pg_wal_files().is_empty());
    // ... and one after the switch record is never read by recovery.
    let mut tail = good.clone();
    tail[900_000] ^= 0x20;
    env.archive_legacy(S3, &tail);
    assert!(matches!(env.restore(S3).unwrap(), RestoreOutcome::Restored { .. }));

    // A zstd frame without a content checksum falls back to the full check.
    let env = Env::new("");
    let packed = zstd::bulk::compress(&bad, 1).unwrap();
    env.archive_legacy(&format!("{S3}.zst"), &packed);
    let e = env.restore(S3).unwrap_err();
    assert!(e.to_string().contains("no content checksum"), "{e}");
    fs::write(
        env.archive.join(format!("{S3}.zst")),
        zstd::bulk::compress(&good, 1).unwrap(),
    )
    .unwrap();
    assert!(matches!(env.restore(S3).unwrap(), RestoreOutcome::Restored { .. }));
}

#[test]
fn a_segment_of_another_system_is_fatal() {
    let env = Env::new("");
    // Marked 7; the segment says 8 (with a matching sidecar).
    let mut other = segment(S3);
    other[24..32].copy_from_slice(&8u64.to_le_bytes());
    env.archive(S3, &other);
    let e = env.restore(S3).unwrap_err();
    assert!(matches!(e, RestoreError::ForeignSegment { .. }), "{e}");
    assert!(e.to_string().contains("database system 8"), "{e}");
    assert!(env.pg_wal_files().is_empty());
    // pg_control wins over the mark, and both differing is fatal for any request.
    let pgdata = env.pg_wal.parent().unwrap();
    fs::create_dir_all(pgdata.join("global")).unwrap();
    fs::write(pgdata.join("global/pg_control"), 8u64.to_le_bytes()).unwrap();
    let e = env.restore("000000010000000000000009").unwrap_err();
    assert!(matches!(e, RestoreError::ForeignArchive { .. }), "{e}");
}

#[test]
fn an_archive_that_is_not_there_never_answers_not_found() {
    let hook_log = tempfile::NamedTempFile::new().unwrap();
    let env = Env::new(&format!("notify_critical: echo >> {}\n", hook_log.path().display()));
    fs::remove_file(env.archive.join(layout::SYSTEM_ID_FILE)).unwrap();
    let pgdata = env.pg_wal.parent().unwrap().to_path_buf();
    // Archive recovery (no signal file, recovery.signal) and promotion: fatal.
    for signal in [None, Some("recovery.signal"), Some(layout::PROMOTING_FILE)] {
        if let Some(f) = signal {
            fs::write(pgdata.join(f), b"").unwrap();
        }
        let e = env.restore(S3).unwrap_err();
        assert!(matches!(e, RestoreError::ArchiveUnavailable { .. }), "{e}");
        assert!(e.to_string().contains("-I"), "{e}");
    }
    fs::remove_file(pgdata.join(layout::PROMOTING_FILE)).unwrap();
    // Standby: exit 1, one alert per interval.
    fs::write(pgdata.join("standby.signal"), b"").unwrap();
    for _ in 0..3 {
        let out = env.restore(S3).unwrap();
        assert!(matches!(out, RestoreOutcome::ArchiveUnavailable { .. }), "{out:?}");
        assert_eq!(out.exit_code(), EXIT_NOT_FOUND);
    }
    assert_eq!(fs::read_to_string(hook_log.path()).unwrap().lines().count(), 1);
    assert!(pgdata.join(layout::ARCHIVE_ALERT_FILE).exists());
    // A file that is there is still served from an unmarked directory.
    env.archive(S3, &segment(S3));
    assert!(matches!(env.restore(S3).unwrap(), RestoreOutcome::Restored { .. }));

    // Marked again, but the file is a dangling symlink; then archivedir is one.
    sysid::write(&env.archive, Some(7)).unwrap();
    fs::remove_file(pgdata.join("standby.signal")).unwrap();
    let s4 = "000000010000000000000004";
    std::os::unix::fs::symlink("/nonexistent/x", env.archive.join(s4)).unwrap();
    let e = env.restore(s4).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    let mut linked = env.cfg.clone();
    let link = env.archive.with_file_name("gone");
    std::os::unix::fs::symlink("/nonexistent/share", &link).unwrap();
    linked.archivedir = Some(link);
    let e = restore(&linked, S3, &env.dest()).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
}

#[test]
fn history_files_are_validated() {
    let env = Env::new("");
    for bad in [
        &b""[..],
        b"1\t0/30",
        b"\x89PNG\r\n\x1a\n\x00\x00",
        b"2\t0/3000000\tfrom the future\n",
    ] {
        env.archive("00000002.history", bad);
        let e = env.restore("00000002.history").unwrap_err();
        assert!(matches!(e, RestoreError::Damaged { .. }), "{bad:?}: {e}");
        assert!(env.pg_wal_files().is_empty());
    }
}

#[test]
fn a_prefetched_segment_whose_archive_copy_changed_is_not_served() {
    let env = Env::new("restore_prefetch: 2\n");
    let names: Vec<String> = (3..=5).map(|i| format!("0000000100000000000000{i:02X}")).collect();
    for n in &names {
        env.archive(n, &segment(n));
    }
    env.restore(&names[0]).unwrap();
    let n03 = WalName::parse(&names[0]).unwrap();
    assert_eq!(prefetch::run_worker(&env.cfg, &n03, SEG, &env.dest()).unwrap(), 2);
    let spool = prefetch::spool_dir(&env.dest());
    // 05 is replaced in the archive (new inode, other bytes) after it was spooled.
    let mut other = segment(&names[2]);
    other[5000] ^= 0xFF;
    fs::remove_file(env.archive.join(&names[2])).unwrap();
    env.archive(&names[2], &other);
    // 04 unchanged: served from the spool.
    match env.restore(&names[1]).unwrap() {
        RestoreOutcome::Restored { archived, .. } => assert!(archived.starts_with(&spool)),
        o => panic!("{o:?}"),
    }
    // 05: the spooled copy is dropped and the archive's current file served.
    match env.restore(&names[2]).unwrap() {
        RestoreOutcome::Restored { archived, .. } => assert_eq!(archived, env.archive.join(&names[2])),
        o => panic!("{o:?}"),
    }
    assert!(fs::read(env.dest()).unwrap() == other);
    assert!(!spool.join(&names[2]).exists());
}
