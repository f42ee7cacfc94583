//! `pitrkit restore` and `pitrkit cleanup` run as PostgreSQL runs them: as a
//! subprocess in the data directory, judged by exit status. No PostgreSQL
//! needed: the archived segments are made here.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pitrkit::compress::Codec;
use pitrkit::wal::WalName;

const SEG: u64 = 1 << 20;

/// A 1 MiB WAL segment whose long page header matches `name`.
fn segment(name: &str) -> Vec<u8> {
    let n = WalName::parse(name).unwrap();
    let mut b = vec![0u8; SEG as usize];
    b[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
    b[4..8].copy_from_slice(&n.timeline.to_le_bytes());
    b[8..16].copy_from_slice(&(n.segno(SEG) * SEG).to_le_bytes());
    b[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
    b[36..40].copy_from_slice(&8192u32.to_le_bytes());
    for (i, x) in b[40..6000].iter_mut().enumerate() {
        *x = (i * 7 % 253) as u8;
    }
    b
}

struct Standby {
    _dir: tempfile::TempDir,
    ini: PathBuf,
    archive: PathBuf,
    pgdata: PathBuf,
    pause: PathBuf,
}

impl Standby {
    /// A standby.ini with only `archivedir` (and, if asked, `cleanup_pause_file`).
    fn new(with_pause_file: bool) -> Standby {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        let pgdata = dir.path().join("pgdata");
        let pause = dir.path().join("pause_cleanup");
        fs::create_dir(&archive).unwrap();
        fs::create_dir_all(pgdata.join("pg_wal")).unwrap();
        let ini = dir.path().join("standby.ini");
        let mut text = format!("[DEFAULT]\narchivedir: {}\n", archive.display());
        if with_pause_file {
            text += &format!("cleanup_pause_file: {}\n", pause.display());
        }
        fs::write(&ini, text).unwrap();
        Standby {
            _dir: dir,
            ini,
            archive,
            pgdata,
            pause,
        }
    }

    /// Runs `pitrkit <args>` in the data directory, as PostgreSQL does.
    fn pitrkit(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_pitrkit"))
            .args(args)
            .current_dir(&self.pgdata)
            .output()
            .unwrap()
    }

    fn restore(&self, wal: &str) -> Output {
        self.pitrkit(&["restore", "-C", self.ini.to_str().unwrap(), wal, "pg_wal/RECOVERYXLOG"])
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

fn status(o: &Output) -> i32 {
    o.status.code().unwrap_or_else(|| panic!("killed by a signal: {o:?}"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn restore_zstd_segment_missing_segment_and_corrupt_archive() {
    let sb = Standby::new(false);
    let name = "000000010000000000000005";
    let data = segment(name);
    let mut packed = Vec::new();
    Codec::Zstd.compress(&data[..], &mut packed, None).unwrap();
    let archived = sb.archive.join(format!("{name}.zst"));
    fs::write(&archived, &packed).unwrap();
    let dest = sb.pgdata.join("pg_wal/RECOVERYXLOG");

    // Found: %p (relative to the data directory) is byte-identical.
    let o = sb.restore(name);
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert!(fs::read(&dest).unwrap() == data, "restored segment differs");
    assert_eq!(Standby::files(&sb.pgdata.join("pg_wal")), ["RECOVERYXLOG"]);
    fs::remove_file(&dest).unwrap();

    // Missing: status 1, and quiet (PostgreSQL asks for missing files all the time).
    let o = sb.restore("000000010000000000000006");
    assert_eq!(status(&o), 1, "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "a missing file must be logged at debug level only");
    let o = sb.restore("00000002.history");
    assert_eq!(status(&o), 1, "{}", stderr(&o));

    // Corrupt: status 200 so PostgreSQL stops instead of ending recovery;
    // the message names the archive file; nothing is left in pg_wal.
    fs::write(&archived, &packed[..packed.len() - 100]).unwrap();
    let o = sb.restore(name);
    assert_eq!(status(&o), 200, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&archived.display().to_string()) && err.contains("[ERROR]"),
        "{err}"
    );
    assert!(Standby::files(&sb.pgdata.join("pg_wal")).is_empty());
}

#[test]
fn restore_exits_200_when_it_cannot_even_start() {
    let sb = Standby::new(false);
    let name = "000000010000000000000005";
    // restore_command without %p.
    let o = sb.pitrkit(&["restore", "-C", sb.ini.to_str().unwrap(), name]);
    assert_eq!(status(&o), 200, "{}", stderr(&o));
    // A configuration file that is not there.
    let o = sb.pitrkit(&["restore", "-C", "/nonexistent/standby.ini", name, "pg_wal/RECOVERYXLOG"]);
    assert_eq!(status(&o), 200, "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent/standby.ini"), "{}", stderr(&o));
    // %f and %p swapped.
    let o = sb.pitrkit(&["restore", "-C", sb.ini.to_str().unwrap(), "pg_wal/RECOVERYXLOG", name]);
    assert_eq!(status(&o), 200, "{}", stderr(&o));
}

#[test]
fn cleanup_removes_older_wal_and_keeps_history() {
    let sb = Standby::new(true);
    let files = [
        "000000010000000000000001",
        "000000010000000000000002.zst",
        "000000010000000000000003.partial",
        "000000020000000000000003.lz4",
        "000000020000000000000004",
        "000000020000000000000005.gz",
        "00000002.history",
        "00000002.history.zst",
        "000000010000000000000002.00000028.backup",
        ".000000020000000000000005.XyZ123",
    ];
    for f in files {
        fs::write(sb.archive.join(f), b"wal").unwrap();
    }
    let ini = sb.ini.to_str().unwrap();

    // %r must be a segment name.
    let o = sb.pitrkit(&["cleanup", "-C", ini, "00000002.history"]);
    assert_eq!(status(&o), 2, "{}", stderr(&o));

    // Dry run: says what would go, removes nothing.
    let o = sb.pitrkit(&["cleanup", "-C", ini, "000000020000000000000004", "--dry-run"]);
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("would remove 4 file(s)"), "{out}");
    assert_eq!(Standby::files(&sb.archive).len(), files.len());

    // Paused: nothing removed, exit 0.
    fs::write(&sb.pause, "").unwrap();
    let o = sb.pitrkit(&["cleanup", "-C", ini, "000000020000000000000004"]);
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("paused"), "{}", stderr(&o));
    assert_eq!(Standby::files(&sb.archive).len(), files.len());
    fs::remove_file(&sb.pause).unwrap();

    let o = sb.pitrkit(&["cleanup", "-C", ini, "000000020000000000000004"]);
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("removed 4 file(s)"), "{}", stderr(&o));
    assert_eq!(
        Standby::files(&sb.archive),
        [
            ".000000020000000000000005.XyZ123",
            "000000010000000000000002.00000028.backup",
            "00000002.history",
            "00000002.history.zst",
            "000000020000000000000004",
            "000000020000000000000005.gz",
        ]
    );
}
