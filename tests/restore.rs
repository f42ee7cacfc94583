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

const SEG: u64 = pitrkit::testsupport::wal::SEG as u64;

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

    /// Restores `wal`, which must succeed (`why`, if any, names the case),
    /// and clears %p for the next one, as PostgreSQL does.
    fn restore_ok(&self, wal: &str, why: &str) {
        let o = self.restore(wal);
        assert_eq!(status(&o), 0, "{wal} {why}: {}", stderr(&o));
        fs::remove_file(self.dest()).unwrap();
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
            ".pitrkit-cleanup-r",
            ".pitrkit-system-id",
            "000000010000000000000002.00000028.backup",
            "00000002.history",
            "00000002.history.zst",
            "000000020000000000000004",
            "000000020000000000000005.gz",
        ]
    );

    // A backup's hold keeps its segment and the later ones, whatever %r says;
    // the %r given is recorded for backup expiry.
    fs::write(sb.archive.join(".pitrkit-backup-hold"), "000000020000000000000005\n").unwrap();
    let o = sb.pitrkit(&["cleanup", "-C", ini, "000000020000000000000007"]);
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("removed 1 file(s)"), "{}", stderr(&o));
    assert!(sb.archive.join("000000020000000000000005.gz").exists());
    assert!(!sb.archive.join("000000020000000000000004").exists());
    assert_eq!(
        fs::read_to_string(sb.archive.join(".pitrkit-cleanup-r")).unwrap(),
        "000000020000000000000007\n"
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
    sb.restore_ok(name, "");
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

/// The segments in `pg`'s pg_wal up to and including `last`, oldest first.
fn segments_up_to(pg: &PgCluster, last: &str) -> Vec<String> {
    let mut segs: Vec<String> = fs::read_dir(pg.datadir.join("pg_wal"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24 && n.as_str() <= last)
        .collect();
    segs.sort();
    segs
}

/// A cluster with 1 MiB segments that has written a few MiB of WAL and
/// switched: returns it and its complete segments, oldest first.
fn cluster_with_wal(env: &TestEnv, name: &str) -> (PgCluster, Vec<String>) {
    let pg = PgCluster::init_with_args(env, name, "listen_addresses = '127.0.0.1'\n", &["--wal-segsize=1"]);
    pg.start();
    pg.psql("CREATE TABLE t AS SELECT g, repeat(md5(g::text), 4) AS x FROM generate_series(1, 30000) g");
    let last = pg.switch_wal();
    let segs = segments_up_to(&pg, &last);
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

/// Two consecutive full segments of `segs` (the first ends inside a record
/// that the second finishes, no switch record between).
fn full_pair(pg: &PgCluster, segs: &[String]) -> (String, String) {
    for w in segs.windows(2) {
        let s = pitrkit::walcheck::check_bytes(&WalName::parse(&w[0]).unwrap(), &wal_file(pg, &w[0]), None).unwrap();
        if s.end.is_none() && s.records > 100 && s.open_tail.is_some() {
            return (w[0].clone(), w[1].clone());
        }
    }
    panic!("no two full segments in {segs:?}");
}

/// Review of issue 7: a segment without a stored checksum (pitrtools-filled,
/// or a zstd frame without content checksum) had the record crossing into
/// the next segment unchecked: a flipped bit in it was served, PostgreSQL
/// failed that record's CRC, took it for the end of WAL and promoted early.
/// Now the part in the neighbour is read from the archive and the whole
/// record's CRC checked, from either side.
#[test]
fn legacy_damage_in_a_record_crossing_the_segment_boundary_is_caught() {
    let sb = Standby::new(false);
    let (pg, segs) = cluster_with_wal(&sb.env, "pga");
    copy_pg_control(&sb, &pg);
    let (n, n1) = full_pair(&pg, &segs);
    let (a, b) = (wal_file(&pg, &n), wal_file(&pg, &n1));
    let info = u16::from_le_bytes([b[2], b[3]]);
    let rem = u32::from_le_bytes(b[16..20].try_into().unwrap()) as usize;
    assert!(info & 1 == 1 && rem > 8, "{n1} does not start with a continued record");
    let clear = |sb: &Standby| {
        for f in Standby::files(&sb.archive) {
            if f.starts_with("0000") {
                fs::remove_file(sb.archive.join(f)).unwrap();
            }
        }
    };
    let zst = |data: &[u8]| zstd::bulk::compress(data, 1).unwrap(); // no content checksum

    // Intact, as pitrtools stored them: both served.
    fs::write(sb.archive.join(&n), &a).unwrap();
    fs::write(sb.archive.join(&n1), &b).unwrap();
    for w in [&n, &n1] {
        sb.restore_ok(w, "");
    }
    // The last byte of N (in the record that N+1 finishes), then a byte of
    // the continuation at the start of N+1: restoring either exits 200 and
    // names both files.
    for (in_n, at) in [(true, a.len() - 1), (false, 40 + rem.min(8000) / 2)] {
        for compressed in [false, true] {
            clear(&sb);
            let (mut a2, mut b2) = (a.clone(), b.clone());
            if in_n {
                a2[at] ^= 0x01;
            } else {
                b2[at] ^= 0x01;
            }
            if compressed {
                fs::write(sb.archive.join(format!("{n}.zst")), zst(&a2)).unwrap();
                fs::write(sb.archive.join(format!("{n1}.zst")), zst(&b2)).unwrap();
            } else {
                fs::write(sb.archive.join(&n), &a2).unwrap();
                fs::write(sb.archive.join(&n1), &b2).unwrap();
            }
            for w in [&n, &n1] {
                let o = sb.restore(w);
                let what = format!(
                    "flip in {}, zstd {compressed}, restoring {w}",
                    if in_n { &n } else { &n1 }
                );
                assert_eq!(status(&o), 200, "{what}: {}", stderr(&o));
                let e = stderr(&o);
                assert!(
                    e.contains(&n) && e.contains(&n1) && e.contains("CRC-32C"),
                    "{what}: {e}"
                );
                assert!(Standby::files(&sb.pgdata.join("pg_wal")).is_empty(), "{what}");
            }
        }
    }
    // The neighbour not in the archive yet: the segment is served; the
    // record is checked when PostgreSQL asks for the neighbour.
    clear(&sb);
    let mut a2 = a.clone();
    let last = a2.len() - 1;
    a2[last] ^= 0x01;
    fs::write(sb.archive.join(&n), &a2).unwrap();
    sb.restore_ok(&n, "");
    fs::write(sb.archive.join(&n1), &b).unwrap();
    let o = sb.restore(&n1);
    assert_eq!(status(&o), 200, "{}", stderr(&o));
}

/// Review of issue 7: a checksummed segment was never walked, so timeline
/// 2's WAL stored under a timeline 1 name (with a sidecar, or in a zstd
/// frame with its checksum) was served; PostgreSQL logged "unexpected
/// timeline ID 2" and ended recovery there.
#[test]
fn a_segment_whose_header_timeline_is_above_its_name_exits_200() {
    let sb = Standby::new(false);
    let (pg, segs) = cluster_with_wal(&sb.env, "pga");
    copy_pg_control(&sb, &pg);
    let (n, _) = full_pair(&pg, &segs);
    let mut a = wal_file(&pg, &n);
    // Every page header says timeline 2 (as the new timeline's own segments do).
    for page in (0..a.len()).step_by(8192) {
        a[page + 4..page + 8].copy_from_slice(&2u32.to_le_bytes());
    }
    sb.archive_plain(&n, &a);
    let o = sb.restore(&n);
    assert_eq!(status(&o), 200, "timeline-2 WAL under {n} was served: {}", stderr(&o));
    assert!(stderr(&o).contains("timeline 2 is above"), "{}", stderr(&o));
    fs::remove_file(sb.archive.join(&n)).unwrap();
    fs::remove_file(sb.archive.join(sum_name(&n))).unwrap();
    // Compressed with a content checksum; and only the pages after the
    // first saying timeline 2.
    for first_too in [true, false] {
        let mut b = a.clone();
        if !first_too {
            b[4..8].copy_from_slice(&1u32.to_le_bytes());
        }
        let mut packed = Vec::new();
        Codec::Zstd.compress(&b[..], &mut packed, None).unwrap();
        fs::write(sb.archive.join(format!("{n}.zst")), packed).unwrap();
        let o = sb.restore(&n);
        assert_eq!(status(&o), 200, "first page too {first_too}: {}", stderr(&o));
        assert!(stderr(&o).contains("timeline"), "{}", stderr(&o));
        assert!(Standby::files(&sb.pgdata.join("pg_wal")).is_empty());
    }
    fs::remove_file(sb.archive.join(format!("{n}.zst"))).unwrap();

    // The reverse: timeline 1's WAL under a timeline 2 name. Fine before
    // the switch point that 00000002.history names (a timeline's first
    // segment begins with its parent's pages), refused past it.
    let seg_start = WalName::parse(&n).unwrap().segno(SEG) * SEG;
    let t2 = format!("00000002{}", &n[8..]);
    sb.archive_plain(&t2, &wal_file(&pg, &n));
    for (switch, want) in [(seg_start + SEG, 0), (seg_start + SEG / 2, 200)] {
        let history = format!(
            "1\t{:X}/{:X}\tno recovery target specified\n",
            switch >> 32,
            switch & 0xFFFF_FFFF
        );
        sb.archive_plain("00000002.history", history.as_bytes());
        let o = sb.restore(&t2);
        assert_eq!(status(&o), want, "switch at {switch:X}: {}", stderr(&o));
        if want == 200 {
            assert!(stderr(&o).contains("where timeline 1 ended"), "{}", stderr(&o));
        } else {
            fs::remove_file(sb.dest()).unwrap();
        }
    }
}

/// The timeline rules and the crossing-record check on real WAL of a
/// timeline switch: archive recovery that ends at the end of pg_wal starts
/// timeline 2 mid-segment, so timeline 2's first segment begins with
/// timeline 1's pages. Every segment of both timelines, stored without a
/// checksum (full walk, neighbours read) with 00000002.history beside
/// them, is served.
#[test]
fn real_segments_around_a_timeline_switch_pass_every_check() {
    let sb = Standby::new(false);
    let (pg, _) = cluster_with_wal(&sb.env, "pga");
    // Keep timeline 1's segments in pg_wal past the restart's checkpoints.
    let conf = pg.datadir.join("postgresql.conf");
    let mut text = fs::read_to_string(&conf).unwrap();
    text += &format!("{}\nrestore_command = 'false'\n", common::wal_keep_setting(64));
    fs::write(&conf, text).unwrap();
    pg.psql("SELECT pg_reload_conf()");
    // More than a segment of WAL: timeline 1's last segment starts inside a record.
    pg.psql("INSERT INTO t SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 12000) g");
    pg.stop();
    let signal = pg.datadir.join("recovery.signal");
    fs::write(&signal, "").unwrap();
    sb.env.chown(&signal);
    pg.start();
    assert!(common::wait_until(std::time::Duration::from_secs(60), || pg
        .psql("SELECT pg_is_in_recovery()")
        == "f"));
    pg.psql("INSERT INTO t SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 20000) g");
    let last = pg.switch_wal();
    assert!(last.starts_with("00000002"), "{last}");
    let history = fs::read(pg.datadir.join("pg_wal/00000002.history")).unwrap();
    let switch_seg = &last[8..];
    let segs = segments_up_to(&pg, &last);
    let tl2: Vec<&String> = segs.iter().filter(|n| n.starts_with("00000002")).collect();
    let first2 = tl2[0];
    // Timeline 1's complete segments: those before timeline 2's first.
    let tl1: Vec<&String> = segs
        .iter()
        .filter(|n| n.starts_with("00000001") && n[8..] < first2[8..])
        .collect();
    assert!(!tl1.is_empty() && tl2.len() >= 2, "{segs:?} (switch {switch_seg})");
    let first = wal_file(&pg, first2);
    let tlis: std::collections::BTreeSet<u32> = (0..first.len())
        .step_by(8192)
        .map(|p| u32::from_le_bytes(first[p + 4..p + 8].try_into().unwrap()))
        .collect();
    assert!(
        tlis.contains(&1) && tlis.contains(&2),
        "{first2}: page timelines {tlis:?}"
    );
    // It starts with the rest of a record begun in timeline 1's segment before it.
    assert!(first[2] & 1 == 1, "{first2} does not start inside a record");

    copy_pg_control(&sb, &pg);
    sb.archive_plain("00000002.history", &history);
    for n in tl1.iter().chain(tl2.iter()) {
        fs::write(sb.archive.join(n), wal_file(&pg, n)).unwrap();
    }
    let o = sb.restore("00000002.history");
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    for n in tl1.iter().chain(tl2.iter()) {
        let o = sb.restore(n);
        assert_eq!(status(&o), 0, "{n}: {}", stderr(&o));
        assert!(fs::read(sb.dest()).unwrap() == wal_file(&pg, n), "{n}");
        fs::remove_file(sb.dest()).unwrap();
    }
    // Timeline 1's segment before it, damaged in that record: found from
    // timeline 2's side, by the history.
    let before = tl1.last().unwrap();
    let mut bad = wal_file(&pg, before);
    let end = bad.len() - 1;
    bad[end] ^= 0x01;
    fs::write(sb.archive.join(before), &bad).unwrap();
    let o = sb.restore(first2);
    assert_eq!(status(&o), 200, "{}", stderr(&o));
    assert!(stderr(&o).contains(before.as_str()), "{}", stderr(&o));
    fs::write(sb.archive.join(before), wal_file(&pg, before)).unwrap();

    // And with checksums (page headers only, against the history).
    for n in &tl2 {
        fs::remove_file(sb.archive.join(n)).unwrap();
        sb.archive_plain(n, &wal_file(&pg, n));
        sb.restore_ok(n, "");
    }
}

/// The archive holds an intact X from pitrtools (no sidecar). An archive
/// call for X with other bytes is refused (conflict); it must not leave an
/// X.sum of its bytes beside the intact X, or restore would stop recovery
/// on the intact copy with advice to put the refused bytes in its place.
#[test]
fn a_refused_archive_call_leaves_no_sidecar_beside_an_intact_legacy_file() {
    let sb = Standby::new(false);
    let (a, segs) = cluster_with_wal(&sb.env, "pga");
    copy_pg_control(&sb, &a);
    let n = &segs[1];
    let intact = wal_file(&a, n);
    fs::write(sb.archive.join(n), &intact).unwrap();
    sb.env.chown(&sb.archive.join(n));
    let ini = sb.env.write(
        "archiver_pga.ini",
        &format!(
            "pgdata: {}\nlocal_archivedirs: {}\n",
            a.datadir.display(),
            sb.archive.display()
        ),
    );
    let mut other = intact.clone();
    other[500_000] ^= 0x01;
    let src = sb.env.mkdir("other").join(n);
    fs::write(&src, &other).unwrap();
    sb.env.chown(&src);
    let o = run_output(sb.env.pitrkit().args(["archiver", "-C"]).arg(&ini).arg("-F").arg(&src));
    assert_eq!(
        status(&o),
        1,
        "the conflict is refused: {}",
        common::describe_output(&o)
    );
    assert!(fs::read(sb.archive.join(n)).unwrap() == intact);
    assert!(!sb.archive.join(sum_name(n)).exists(), "a sidecar of the refused bytes");
    let o = sb.restore(n);
    assert_eq!(status(&o), 0, "the intact {n} still restores: {}", stderr(&o));
}

/// OmniPITR stored X.bz2 (or X.xz, ...): answering "not found" for X would
/// end recovery short of WAL the archive holds. Exit 200, naming the file
/// and the fix; pg_receivewal's X.partial and backup labels are not forms of X.
#[test]
fn a_segment_archived_in_a_compression_pitrkit_cannot_read_exits_200() {
    let sb = Standby::new(false);
    let name = "000000010000000000000007";
    for ext in ["bz2", "xz", "lzfse"] {
        let p = sb.archive.join(format!("{name}.{ext}"));
        fs::write(&p, b"compressed by someone else").unwrap();
        let o = sb.restore(name);
        assert_eq!(status(&o), 200, "{ext}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&p.display().to_string()) && stderr(&o).contains("cannot read"),
            "{}",
            stderr(&o)
        );
        assert!(Standby::files(&sb.pgdata.join("pg_wal")).is_empty());
        fs::remove_file(&p).unwrap();
    }
    // Nor is a file a DBA moved aside to end recovery there (review 2).
    for other in [
        format!("{name}.partial"),
        format!("{name}.00000028.backup"),
        format!("{name}.bad"),
        format!("{name}.damaged"),
    ] {
        fs::write(sb.archive.join(&other), b"x").unwrap();
        let o = sb.restore(name);
        assert_eq!(status(&o), 1, "{other} is not {name}: {}", stderr(&o));
    }
}

/// Review 2: records of many pages crossing segment boundaries (a gin
/// index build logs 32-page records; large rows in 1 MiB segments) were
/// refused from the side of the segment that finishes them when their
/// part before the boundary crossed a page: restore exited 200 on valid
/// WAL and stopped recovery. Every segment restores without stored
/// checksums, each checked with both neighbours in the archive; and a
/// neighbour still being copied (short or empty) does not fail an intact one.
#[test]
fn real_records_of_many_pages_across_segment_boundaries_restore_without_checksums() {
    let sb = Standby::new(false);
    let pg = PgCluster::init_with_args(&sb.env, "pga", "listen_addresses = '127.0.0.1'\n", &["--wal-segsize=1"]);
    pg.start();
    pg.psql("CREATE TABLE g(a int[])");
    pg.psql("INSERT INTO g SELECT array[g % 1000, g % 777, g % 13, g] FROM generate_series(1, 60000) g");
    pg.psql("CREATE INDEX ON g USING gin(a)");
    pg.psql("CREATE TABLE big(x text)");
    pg.psql("ALTER TABLE big ALTER x SET STORAGE EXTERNAL");
    pg.psql("INSERT INTO big SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 40) g, generate_series(1, 300) i GROUP BY i");
    let last = pg.switch_wal();
    let segs = segments_up_to(&pg, &last);
    copy_pg_control(&sb, &pg);
    // At least one segment finishes a record whose part before the
    // boundary spans several pages: the case that was refused.
    let mut far = None;
    for n in &segs {
        let s = pitrkit::walcheck::check_bytes(&WalName::parse(n).unwrap(), &wal_file(&pg, n), None).unwrap();
        if let Some(start) = s.open_head.as_ref().and_then(|h| h.start()) {
            if SEG - start % SEG > 3 * 8192 {
                far = Some(n.clone());
            }
        }
    }
    let far = far.unwrap_or_else(|| panic!("no record spanning pages before a boundary in {segs:?}"));
    for n in &segs {
        fs::write(sb.archive.join(n), wal_file(&pg, n)).unwrap();
    }
    for n in &segs {
        sb.restore_ok(n, "");
    }
    // The segment before `far`, with `far` still being copied.
    let i = segs.iter().position(|n| *n == far).unwrap();
    let before = &segs[i - 1];
    for short in [0, 8192] {
        fs::write(sb.archive.join(&far), &wal_file(&pg, &far)[..short]).unwrap();
        sb.restore_ok(before, &format!("{far} of {short} bytes"));
    }
}

/// Review 2 (s1.sh): a point-in-time recovery of a timeline 1 backup to a
/// point before timeline 2's switch, recovery_target_timeline 'latest'
/// (PostgreSQL's default, and -F999 -R's), makes PostgreSQL write
/// `00000003.history` with a switch point going back. Restore refused that
/// file (exit 200), and looked up the segment before a record of timeline
/// 3 past the end of recovery on timeline 1, whose own segment there holds
/// other WAL. Every file of the new timeline restores.
#[test]
fn a_pitr_before_a_later_timelines_switch_restores_its_history_and_segments() {
    let sb = Standby::new(false);
    let arch = sb.archive.display().to_string();
    let archiving = format!("archive_mode = on\narchive_command = 'cp %p {arch}/%f'\n");
    let pg = PgCluster::init_with_args(&sb.env, "pga", &archiving, &["--wal-segsize=1"]);
    pg.start();
    pg.psql("CREATE TABLE t(i int, pad text)");
    common::run_ok(
        sb.env
            .command(&common::client_program("pg_basebackup"))
            .arg("-D")
            .arg(sb.env.path("b1"))
            .args(["-h", pg.socket_dir.to_str().unwrap(), "-p", &pg.port.to_string()])
            .args(["-X", "none", "--no-sync", "--checkpoint=fast"]),
    );
    pg.psql("INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g");
    let target = pg.psql("SELECT pg_current_wal_insert_lsn()");
    // Timeline 1 runs on for a few segments past the target.
    pg.psql("INSERT INTO t SELECT g, repeat('y', 200) FROM generate_series(1, 20000) g");
    let last1 = pg.switch_wal();
    assert!(pg.wait_archived(&last1, std::time::Duration::from_secs(30)));
    pg.stop();
    // Timeline 2: the master recovers from the archive and promotes.
    let conf = pg.datadir.join("postgresql.conf");
    let mut text = fs::read_to_string(&conf).unwrap();
    text += &format!("restore_command = 'cp {arch}/%f %p'\n");
    fs::write(&conf, text).unwrap();
    let signal = pg.datadir.join("recovery.signal");
    fs::write(&signal, "").unwrap();
    sb.env.chown(&signal);
    pg.start();
    assert!(common::wait_until(std::time::Duration::from_secs(60), || pg
        .psql("SELECT pg_is_in_recovery()")
        == "f"));
    let last2 = pg.switch_wal();
    assert!(last2.starts_with("00000002"), "{last2}");
    assert!(pg.wait_archived(&last2, std::time::Duration::from_secs(30)));
    pg.stop();

    // The PITR of the backup to `target`, through pitrkit restore.
    let ini = sb.ini.display();
    let bin = sb.env.bin.display();
    let pitr = PgCluster::adopt(
        &sb.env,
        "b1",
        &format!(
            "{archiving}restore_command = '{bin} restore -C {ini} %f %p'\nrecovery_target_lsn = '{target}'\nrecovery_target_action = 'promote'\n"
        ),
    );
    let signal = pitr.datadir.join("recovery.signal");
    fs::write(&signal, "").unwrap();
    sb.env.chown(&signal);
    pitr.start();
    assert!(
        common::wait_until(std::time::Duration::from_secs(60), || pitr
            .try_psql("SELECT pg_is_in_recovery()")
            .as_deref()
            == Ok("f")),
        "{}",
        common::tail(&pitr.log, 20)
    );
    assert_eq!(pitr.psql("SELECT count(*) FROM t"), "5000");
    // Timeline 3 writes over segments where timeline 1 holds other WAL.
    pitr.psql("INSERT INTO t SELECT g, repeat('z', 200) FROM generate_series(1, 20000) g");
    let last3 = pitr.switch_wal();
    assert!(last3.starts_with("00000003"), "{last3}");
    assert!(pitr.wait_archived(&last3, std::time::Duration::from_secs(30)));
    pitr.stop();
    let history = fs::read_to_string(sb.archive.join("00000003.history")).unwrap();
    let switches: Vec<&str> = history
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').nth(1).unwrap())
        .collect();
    let lsn = |s: &str| {
        let (hi, lo) = s.split_once('/').unwrap();
        (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
    };
    assert!(
        switches.len() == 2 && lsn(switches[1]) < lsn(switches[0]),
        "PostgreSQL wrote no switch point going back: {history}"
    );

    copy_pg_control(&sb, &pitr);
    sb.restore_ok("00000003.history", "");
    for n in Standby::files(&sb.archive) {
        if n.len() == 24 && n.starts_with("00000003") {
            sb.restore_ok(&n, "");
        }
    }
}
