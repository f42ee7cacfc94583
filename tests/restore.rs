//! `pitrkit restore` and `pitrkit cleanup` run as PostgreSQL runs them: as a
//! subprocess in the data directory, as the PostgreSQL OS user, judged by
//! exit status. Most archived segments are made here; the system-id and
//! full-WAL-check tests take real segments from real clusters.
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{fixtures, run_output, PgCluster, TestEnv};
use pitrkit::compress::Codec;
use pitrkit::integrity::{sum_name, Sum};
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
    env: TestEnv,
    ini: PathBuf,
    archive: PathBuf,
    pgdata: PathBuf,
    pause: PathBuf,
    hooks: PathBuf,
}

impl Standby {
    /// A standby.ini with `archivedir`, a recording critical hook, `extra`
    /// (and, if asked, `cleanup_pause_file`); the archive is marked by
    /// `pitrkit archiver -I` (the archiver's local archive, shared).
    fn new(with_pause_file: bool) -> Standby {
        let sb = Standby::unmarked(with_pause_file, "");
        let arch_ini = sb.env.write("archiver.ini", &format!("local_archivedirs: {}\n", sb.archive.display()));
        let o = run_output(sb.env.pitrkit().args(["archiver", "-C"]).arg(&arch_ini).arg("-I"));
        assert_eq!(status(&o), 0, "{}", common::describe_output(&o));
        sb
    }

    fn unmarked(with_pause_file: bool, extra: &str) -> Standby {
        let env = TestEnv::new("restore", Path::new(env!("CARGO_BIN_EXE_pitrkit")));
        let archive = env.mkdir("archive");
        let pgdata = env.mkdir("pgdata");
        env.mkdir("pgdata/pg_wal");
        let pause = env.path("pause_cleanup");
        let (hook, hooks) = fixtures::recording_hook(&env, "hooks");
        let mut text = format!(
            "[DEFAULT]\narchivedir: {}\nnotify_critical: {} critical\n{extra}\n",
            archive.display(),
            hook.display()
        );
        if with_pause_file {
            text += &format!("cleanup_pause_file: {}\n", pause.display());
        }
        let ini = env.write("standby.ini", &text);
        Standby {
            env,
            ini,
            archive,
            pgdata,
            pause,
            hooks,
        }
    }

    /// Runs `pitrkit <args>` in the data directory, as PostgreSQL does.
    fn pitrkit(&self, args: &[&str]) -> Output {
        run_output(self.env.pitrkit().args(args).current_dir(&self.pgdata))
    }

    /// A plain archived file with its checksum sidecar, as the archiver stores it.
    fn archive_plain(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.archive.join(name);
        fs::write(&p, data).unwrap();
        fs::write(self.archive.join(sum_name(name)), Sum::of_reader(data).unwrap().render()).unwrap();
        p
    }

    fn dest(&self) -> PathBuf {
        self.pgdata.join("pg_wal/RECOVERYXLOG")
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
    assert_eq!(Standby::files(&sb.archive).len(), files.len() + 1, "and the -I mark");

    // Paused: nothing removed, exit 0.
    fs::write(&sb.pause, "").unwrap();
    let o = sb.pitrkit(&["cleanup", "-C", ini, "000000020000000000000004"]);
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("paused"), "{}", stderr(&o));
    assert_eq!(Standby::files(&sb.archive).len(), files.len() + 1, "and the -I mark");
    fs::remove_file(&sb.pause).unwrap();

    let o = sb.pitrkit(&["cleanup", "-C", ini, "000000020000000000000004"]);
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("removed 4 file(s)"), "{}", stderr(&o));
    assert_eq!(
        Standby::files(&sb.archive),
        [
            ".000000020000000000000005.XyZ123",
            ".pitrkit-system-id",
            "000000010000000000000002.00000028.backup",
            "00000002.history",
            "00000002.history.zst",
            "000000020000000000000004",
            "000000020000000000000005.gz",
        ]
    );
}
