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

/// A 1 MiB WAL segment whose long page header matches `name` (system 0: unknown).
fn segment(name: &str) -> Vec<u8> {
    pitrkit::testsupport::wal::segment(name, 0)
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
        let arch_ini = sb.env.write(
            "archiver.ini",
            &format!("local_archivedirs: {}\n", sb.archive.display()),
        );
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
        fs::write(
            self.archive.join(sum_name(name)),
            Sum::of_reader(data).unwrap().render(),
        )
        .unwrap();
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

/// Flips one bit of `file` at `at`.
fn flip(file: &Path, at: usize) {
    let mut d = fs::read(file).unwrap();
    d[at] ^= 0x08;
    fs::write(file, d).unwrap();
}

#[test]
fn a_flipped_bit_in_any_stored_form_exits_200_and_restores_nothing() {
    let sb = Standby::new(false);
    let name = "000000010000000000000005";
    let data = segment(name);
    // Plain with its sidecar: a bit anywhere, even in the zero tail that no
    // header check reads.
    let p = sb.archive_plain(name, &data);
    let o = sb.restore(name);
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    fs::remove_file(sb.dest()).unwrap();
    flip(&p, 700_000);
    let o = sb.restore(name);
    assert_eq!(status(&o), 200, "{}", stderr(&o));
    assert!(stderr(&o).contains("checksum file"), "{}", stderr(&o));
    assert!(Standby::files(&sb.pgdata.join("pg_wal")).is_empty());
    fs::remove_file(&p).unwrap();
    fs::remove_file(sb.archive.join(sum_name(name))).unwrap();

    // Each compressed form: a bit in the middle of the frame.
    for codec in [Codec::Zstd, Codec::Lz4, Codec::Gzip] {
        let mut packed = Vec::new();
        codec.compress(&data[..], &mut packed, None).unwrap();
        let p = sb.archive.join(format!("{name}{}", codec.suffix()));
        fs::write(&p, &packed).unwrap();
        flip(&p, packed.len() / 2);
        let o = sb.restore(name);
        assert_eq!(status(&o), 200, "{codec}: {}", stderr(&o));
        assert!(Standby::files(&sb.pgdata.join("pg_wal")).is_empty(), "{codec}");
        fs::remove_file(&p).unwrap();
    }
}

#[test]
fn an_archive_that_is_not_there_never_answers_not_found() {
    let name = "000000010000000000000005";
    let sb = Standby::unmarked(false, "");
    let signal = |f: Option<&str>| {
        for s in ["standby.signal", "recovery.signal"] {
            let _ = fs::remove_file(sb.pgdata.join(s));
        }
        if let Some(f) = f {
            fs::write(sb.pgdata.join(f), "").unwrap();
        }
    };
    // An empty, unmarked archivedir (an unmounted share): archive recovery
    // (PITR, failover) stops with the fix instead of promoting early.
    signal(Some("recovery.signal"));
    let o = sb.restore(name);
    assert_eq!(status(&o), 200, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cmd_standby -C") && stderr(&o).contains("-I"),
        "{}",
        stderr(&o)
    );
    // Standby mode: "not found" (keep waiting) plus one critical alert,
    // however often PostgreSQL asks.
    signal(Some("standby.signal"));
    for _ in 0..4 {
        let o = sb.restore(name);
        assert_eq!(status(&o), 1, "{}", stderr(&o));
    }
    let alerts = fixtures::lines(&sb.hooks);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(
        alerts[0].starts_with("critical") && alerts[0].contains("promotes nothing"),
        "{alerts:?}"
    );

    // archivedir a dangling symlink: the same rules.
    fs::remove_dir(&sb.archive).unwrap();
    std::os::unix::fs::symlink("/nonexistent/nfs/share", &sb.archive).unwrap();
    let o = sb.restore(name);
    assert_eq!(status(&o), 1, "{}", stderr(&o));
    signal(Some("recovery.signal"));
    let o = sb.restore(name);
    assert_eq!(status(&o), 200, "{}", stderr(&o));
    assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));

    // A marked archive whose file is a dangling symlink.
    let sb = Standby::new(false);
    std::os::unix::fs::symlink("/nonexistent/nfs/share/x", sb.archive.join(name)).unwrap();
    let o = sb.restore(name);
    assert_eq!(status(&o), 200, "{}", stderr(&o));
    assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));
    fs::write(sb.pgdata.join("standby.signal"), "").unwrap();
    let o = sb.restore(name);
    assert_eq!(status(&o), 1, "{}", stderr(&o));
    assert_eq!(fixtures::lines(&sb.hooks).len(), 1);
    // And marked, the same request for a missing file is a quiet "not found".
    fs::remove_file(sb.archive.join(name)).unwrap();
    fs::remove_file(sb.pgdata.join("standby.signal")).unwrap();
    let o = sb.restore(name);
    assert_eq!((status(&o), stderr(&o)), (1, String::new()));
}

#[test]
fn history_files_that_are_not_history_exit_200() {
    let sb = Standby::new(false);
    let h = "00000003.history";
    for bad in [
        &b""[..],
        b"1\t0/3000000\tno recovery target\n2\t0/50",
        b"\x1f\x8b\x08\x00garbage\xff\xfe",
    ] {
        sb.archive_plain(h, bad);
        let o = sb.restore(h);
        assert_eq!(status(&o), 200, "{bad:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("history"), "{}", stderr(&o));
        assert!(Standby::files(&sb.pgdata.join("pg_wal")).is_empty());
    }
    sb.archive_plain(
        h,
        b"1\t0/3000000\tno recovery target specified\n\n2\t0/5000000\tno recovery target specified\n",
    );
    let o = sb.restore(h);
    assert_eq!(status(&o), 0, "{}", stderr(&o));
}

#[test]
fn a_prefetched_segment_replaced_in_the_archive_is_not_served() {
    let sb = Standby::new(false);
    fs::write(&sb.ini, fs::read_to_string(&sb.ini).unwrap() + "restore_prefetch: 2\n").unwrap();
    let names: Vec<String> = (3..=5).map(|i| format!("0000000100000000000000{i:02X}")).collect();
    for n in &names {
        sb.archive_plain(n, &segment(n));
    }
    let o = sb.restore(&names[0]);
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    // The background worker spools 04 and 05.
    let spool = sb.pgdata.join("pg_wal/.pitrkit-prefetch");
    assert!(
        common::wait_until(std::time::Duration::from_secs(20), || spool.join(&names[2]).exists()),
        "nothing prefetched"
    );
    std::thread::sleep(std::time::Duration::from_millis(500)); // the worker finishes its record
                                                               // 05 is replaced in the archive by a different, intact copy.
    let mut other = segment(&names[2]);
    other[900_000] = 0x5A;
    fs::remove_file(sb.archive.join(&names[2])).unwrap();
    sb.archive_plain(&names[2], &other);
    let o = sb.restore(&names[1]);
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert!(fs::read(sb.dest()).unwrap() == segment(&names[1]));
    let o = sb.restore(&names[2]);
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert!(
        fs::read(sb.dest()).unwrap() == other,
        "the stale prefetched copy was served"
    );
}

/// A cluster with 1 MiB segments that has written a few MiB of WAL and
/// switched: returns it and its complete segments, oldest first.
fn cluster_with_wal(env: &TestEnv, name: &str) -> (PgCluster, Vec<String>) {
    let pg = PgCluster::init_with_args(env, name, "listen_addresses = '127.0.0.1'\n", &["--wal-segsize=1"]);
    pg.start();
    pg.psql("CREATE TABLE t AS SELECT g, repeat(md5(g::text), 4) AS x FROM generate_series(1, 30000) g");
    let last = pg.switch_wal();
    let mut segs: Vec<String> = fs::read_dir(pg.datadir.join("pg_wal"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24 && n.as_str() <= last.as_str())
        .collect();
    segs.sort();
    (pg, segs)
}

/// Gives the standby's data directory `pg`'s pg_control, as a base backup does.
fn copy_pg_control(sb: &Standby, pg: &PgCluster) {
    sb.env.mkdir("pgdata/global");
    let control = sb.pgdata.join("global/pg_control");
    fs::copy(pg.datadir.join("global/pg_control"), &control).unwrap();
    sb.env.chown(&control);
}

fn system_id(pg: &PgCluster) -> u64 {
    pg.psql("SELECT system_identifier FROM pg_control_system()")
        .parse()
        .unwrap()
}

fn wal_file(pg: &PgCluster, n: &str) -> Vec<u8> {
    fs::read(pg.datadir.join("pg_wal").join(n)).unwrap()
}

#[test]
fn a_segment_of_another_cluster_exits_200() {
    let sb = Standby::new(false);
    let (a, _) = cluster_with_wal(&sb.env, "pga");
    let (b, b_segs) = cluster_with_wal(&sb.env, "pgb");
    let b_id = system_id(&b);
    assert_ne!(system_id(&a), b_id);
    copy_pg_control(&sb, &a);

    // b's segment under a name a's archive uses, plain with a sidecar and
    // compressed: another database system, exit 200, nothing at %p.
    let foreign = &b_segs[b_segs.len() - 1];
    sb.archive_plain(foreign, &wal_file(&b, foreign));
    let o = sb.restore(foreign);
    assert_eq!(status(&o), 200, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("database system {b_id}")),
        "{}",
        stderr(&o)
    );
    assert!(Standby::files(&sb.pgdata.join("pg_wal")).is_empty());
    fs::remove_file(sb.archive.join(foreign)).unwrap();
    fs::remove_file(sb.archive.join(sum_name(foreign))).unwrap();
    let mut packed = Vec::new();
    Codec::Zstd
        .compress(&wal_file(&b, foreign)[..], &mut packed, None)
        .unwrap();
    fs::write(sb.archive.join(format!("{foreign}.zst")), packed).unwrap();
    let o = sb.restore(foreign);
    assert_eq!(status(&o), 200, "{}", stderr(&o));
    assert!(Standby::files(&sb.pgdata.join("pg_wal")).is_empty());
}

#[test]
fn legacy_plain_segments_get_the_full_wal_check_and_standby_init_marks_the_archive() {
    let sb = Standby::unmarked(false, "");
    let (a, a_segs) = cluster_with_wal(&sb.env, "pga");
    let a_id = system_id(&a);
    copy_pg_control(&sb, &a);

    // The record walker on real WAL: every complete segment passes, full
    // ones and the one ending in a switch record.
    let mut full = None;
    let mut switched = None;
    for n in &a_segs {
        let s = pitrkit::walcheck::check_bytes(&WalName::parse(n).unwrap(), &wal_file(&a, n), Some(a_id))
            .unwrap_or_else(|e| panic!("real segment {n}: {e}"));
        match s.end {
            None if s.records > 100 => full = Some(n.clone()),
            Some(end) if end < 900_000 => switched = Some((n.clone(), end)),
            _ => {}
        }
    }
    let full = full.expect("a segment full of records");
    let (switched, end) = switched.expect("a segment ending in a switch record");

    // a's segments as pitrtools stored them (no sidecar): intact is served.
    for n in [&full, &switched] {
        fs::write(sb.archive.join(n), wal_file(&a, n)).unwrap();
        let o = sb.restore(n);
        assert_eq!(status(&o), 0, "{n}: {}", stderr(&o));
        assert!(fs::read(sb.dest()).unwrap() == wal_file(&a, n));
        fs::remove_file(sb.dest()).unwrap();
    }
    // A flipped bit inside a record (a non-zero byte mid-page: never padding) is caught.
    let data = wal_file(&a, &full);
    let at = (300_000..).find(|&i| i % 8192 > 100 && data[i] != 0).unwrap();
    flip(&sb.archive.join(&full), at);
    let o = sb.restore(&full);
    assert_eq!(status(&o), 200, "{}", stderr(&o));
    assert!(stderr(&o).contains("full WAL check"), "{}", stderr(&o));
    assert!(Standby::files(&sb.pgdata.join("pg_wal")).is_empty());
    // One in the tail after the switch record, which recovery never reads, is not.
    flip(&sb.archive.join(&switched), (end as usize + 20_000).min((1 << 20) - 1));
    let o = sb.restore(&switched);
    assert_eq!(status(&o), 0, "{}", stderr(&o));

    // cmd_standby -I marks archivedir with the master's system id.
    let text = fs::read_to_string(&sb.ini).unwrap()
        + &format!(
            "master_public_ip: 127.0.0.1\nport: {}\nmaster_user: {}\npgdata: {}\n",
            a.port,
            sb.env.user_name(),
            sb.pgdata.display()
        );
    fs::write(&sb.ini, text).unwrap();
    let standby_init = || {
        run_output(
            sb.env
                .command(&fixtures::cmd_link(&sb.env, "cmd_standby"))
                .arg("-C")
                .arg(&sb.ini)
                .arg("-I"),
        )
    };
    let o = standby_init();
    assert_eq!(status(&o), 0, "{}", common::describe_output(&o));
    let mark = sb.archive.join(".pitrkit-system-id");
    assert_eq!(fs::read_to_string(&mark).unwrap().trim(), a_id.to_string());
    // Again: fine. Another system's mark: refused, left alone.
    assert_eq!(status(&standby_init()), 0);
    fs::write(&mark, "42\n").unwrap();
    let o = standby_init();
    assert_ne!(status(&o), 0);
    assert!(stderr(&o).contains("database system 42"), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(&mark).unwrap(), "42\n");
}
