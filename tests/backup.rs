//! `pitrkit backup` and `pitrkit recover` against a real master archiving
//! through pitrkit: the PITR round trip (issue 10) and the ways it must fail.
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{describe_output, fixtures, run_output, PgCluster, TestEnv};

struct Setup {
    env: TestEnv,
    master: PgCluster,
    ini: PathBuf,
    repo: PathBuf,
    hooks: PathBuf,
}

/// A master archiving with `pitrkit archiver` into a local archive, and a
/// backup.ini for it (zstd).
fn setup(name: &str) -> Setup {
    let env = TestEnv::new(name, Path::new(env!("CARGO_BIN_EXE_pitrkit")));
    let (master, archive) = fixtures::master_with_local_archive(&env);
    let repo = env.mkdir("repo");
    let (hook, hooks) = fixtures::recording_hook(&env, "hooks");
    let ini = env.write(
        "backup.ini",
        &format!(
            "[DEFAULT]\npgdata: {}\nport: {}\nsocket_dir: {}\narchivedir: {}\nbackup_dir: {}\ncompression: zstd\n\
             notify_ok: {hook} ok\nnotify_critical: {hook} critical\nincludepath: {}\n",
            master.datadir.display(),
            master.port,
            master.socket_dir.display(),
            archive.display(),
            repo.display(),
            common::pg_bindir().display(),
            hook = hook.display()
        ),
    );
    Setup {
        env,
        master,
        ini,
        repo,
        hooks,
    }
}

impl Setup {
    fn pitrkit(&self, args: &[&str]) -> Output {
        run_output(
            self.env
                .pitrkit()
                .arg(args[0])
                .arg("-C")
                .arg(&self.ini)
                .args(&args[1..]),
        )
    }

    /// Takes a backup; its ID.
    fn backup(&self) -> String {
        let o = self.pitrkit(&["backup"]);
        assert!(o.status.success(), "backup failed: {}", describe_output(&o));
        let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert_eq!(id.len(), 16, "{}", describe_output(&o));
        id
    }

    /// `recover --to <dir> args`: the output. The tablespace in `ts`, if
    /// there is one, goes to `<dir>.ts`.
    fn recover(&self, dir: &str, args: &[&str]) -> Output {
        let to = self.env.path(dir);
        let map = format!("{}={}.ts", self.env.path("ts").display(), to.display());
        let mut all = vec!["recover", "--to", to.to_str().unwrap()];
        if self.env.path("ts").exists() {
            all.extend_from_slice(&["--tablespace-map", &map]);
        }
        all.extend_from_slice(args);
        self.pitrkit(&all)
    }

    /// Closes the current segment and waits until it is archived.
    fn archive_now(&self) {
        let seg = self.master.switch_wal();
        self.master.assert_archived(&seg, Duration::from_secs(30), "");
    }
}

fn chosen(o: &Output) -> String {
    assert!(o.status.success(), "recover failed: {}", describe_output(o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// pg_verifybackup -n accepts the restored directory before it is started.
fn verifybackup(env: &TestEnv, dir: &Path) {
    let o = run_output(
        env.command(&common::client_program("pg_verifybackup"))
            .arg("-n")
            .arg(dir),
    );
    assert!(
        o.status.success(),
        "pg_verifybackup -n {}: {}",
        dir.display(),
        describe_output(&o)
    );
}

/// Starts the recovered copy in `name` and returns the batches in t.
fn rows_after_recovery(env: &TestEnv, name: &str) -> String {
    let pg = PgCluster::adopt(env, name, "");
    pg.start();
    let done = common::wait_until(Duration::from_secs(60), || {
        pg.try_psql("SELECT NOT pg_is_in_recovery()").is_ok_and(|v| v == "t")
    });
    assert!(done, "{name} did not finish recovery:\n{}", common::tail(&pg.log, 30));
    let rows = pg.psql("SELECT string_agg(batch, ',' ORDER BY batch) FROM t");
    pg.stop();
    rows
}

/// The PITR round trip: backup 1, batch A, T1, batch B, backup 2, batch C,
/// restore point and T2, drop the table; recover to T1 gives exactly A from
/// backup 1, to the LSN and the restore point A+B+C; pg_verifybackup accepts
/// each restored directory.
#[test]
fn pitr_round_trip() {
    let s = setup("bk_pitr");
    let m = &s.master;
    // The table lives in a tablespace, which each recovery moves (--tablespace-map).
    let ts = s.env.mkdir("ts");
    m.psql(&format!("CREATE TABLESPACE ts LOCATION '{}'", ts.display()));
    m.psql("CREATE TABLE t (batch text) TABLESPACE ts");
    let id1 = s.backup();
    m.psql("INSERT INTO t VALUES ('A')");
    let t1 = m.psql("SELECT now()");
    m.psql("INSERT INTO t VALUES ('B')");
    let id2 = s.backup();
    assert!(id2 > id1, "{id1} {id2}");
    m.psql("INSERT INTO t VALUES ('C')");
    m.psql("SELECT pg_create_restore_point('before_drop')");
    let lsn = m.psql("SELECT pg_current_wal_insert_lsn()");
    m.psql("DROP TABLE t");
    s.archive_now();
    assert!(
        fixtures::lines(&s.hooks)
            .iter()
            .filter(|l| l.starts_with("ok backup"))
            .count()
            == 2,
        "{:?}",
        fixtures::lines(&s.hooks)
    );
    // The set: manifest last, WAL with the archive's mark.
    let set = s.repo.join(&id1);
    assert!(set.join("manifest").is_file() && set.join("wal/.pitrkit-system-id").is_file());
    assert!(set.join("data/global/pg_control.zst").is_file());
    assert!(!set.join("data/postmaster.pid.zst").exists());

    assert_eq!(chosen(&s.recover("r1", &["--target-time", &t1])), id1);
    verifybackup(&s.env, &s.env.path("r1"));
    let auto = fs::read_to_string(s.env.path("r1/postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains("recovery_target_action = 'promote'") && auto.contains("archive_mode = 'off'"),
        "{auto}"
    );
    assert!(!auto.contains("archive_cleanup_command"), "{auto}");
    assert_eq!(rows_after_recovery(&s.env, "r1"), "A");

    assert_eq!(chosen(&s.recover("r2", &["--target-lsn", &lsn])), id2);
    verifybackup(&s.env, &s.env.path("r2"));
    assert_eq!(rows_after_recovery(&s.env, "r2"), "A,B,C");

    let o = s.recover("r3", &["--target-name", "before_drop"]);
    assert_eq!(chosen(&o), id1);
    common::assert_says(&o, "oldest backup");
    assert_eq!(rows_after_recovery(&s.env, "r3"), "A,B,C");

    // A target before every backup, or past the archive, is refused up front.
    let o = s.recover("r4", &["--target-time", "2000-01-01 00:00:00+00"]);
    assert!(!o.status.success());
    common::assert_says(&o, "before the end of every backup");
    let o = s.recover("r4", &["--target-lsn", "FF/0"]);
    assert!(!o.status.success());
    common::assert_says(&o, "past the end of the archive");
    assert!(!s.env.path("r4").exists() && !s.env.path("r4.ts").exists());

    // --list, as JSON for monitoring.
    let o = s.pitrkit(&["backup", "--list", "--json"]);
    let json = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", describe_output(&o));
    for id in [&id1, &id2] {
        assert!(
            json.contains(&format!("{{\"id\":\"{id}\",\"type\":\"full\",\"complete\":true,")),
            "{json}"
        );
    }
    assert!(json.contains("\"newest_complete_age_seconds\":"), "{json}");

    // --verify: clean, then each kind of damage is named.
    let o = s.pitrkit(&["backup", "--verify"]);
    assert!(o.status.success(), "{}", describe_output(&o));
    let flipped = s.repo.join(&id2).join("data/PG_VERSION.zst");
    let mut bytes = fs::read(&flipped).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 1;
    fs::write(&flipped, bytes).unwrap();
    fs::remove_file(s.repo.join(&id1).join("data/global/pg_control.zst")).unwrap();
    let archive = s.env.path("archive");
    let mut segs: Vec<String> = fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24)
        .collect();
    segs.sort();
    let gone = segs[segs.len() / 2].clone();
    fs::remove_file(archive.join(&gone)).unwrap();
    let newest = pitrkit::wal::WalName::parse(segs.last().unwrap()).unwrap();
    let seg_size = 16 << 20;
    let foreign = pitrkit::wal::segment_name(1, newest.segno(seg_size) + 1, seg_size);
    fs::write(archive.join(&foreign), pitrkit::testsupport::wal::segment(&foreign, 42)).unwrap();
    let o = s.pitrkit(&["backup", "--verify"]);
    assert!(!o.status.success());
    for says in [
        format!("{id2}/data/PG_VERSION.zst: corrupt"),
        format!("{id1}/data/global/pg_control.zst: cannot be read"),
        format!("segment {gone} is missing"),
        format!("{foreign}: a segment of database system 42"),
    ] {
        common::assert_says(&o, &says);
    }
    assert!(fixtures::lines(&s.hooks)
        .iter()
        .any(|l| l.starts_with("critical backup --verify")));
}

/// A second backup while one holds the repository is refused; a damaged
/// set is refused by recover (nothing left, nothing started); a killed
/// backup's leftovers never look complete and the next backup removes them.
#[test]
fn concurrent_damaged_and_killed_backups() {
    let s = setup("bk_fail");
    s.master.psql("CREATE TABLE t (batch text); INSERT INTO t VALUES ('A')");
    let id = s.backup();
    s.archive_now();
    let between = s.master.psql("SELECT now()");

    let lock = fs::OpenOptions::new().write(true).open(s.repo.join(".lock")).unwrap();
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let o = s.pitrkit(&["backup"]);
    assert!(!o.status.success());
    common::assert_says(&o, "another pitrkit backup or expire");
    assert!(fixtures::lines(&s.hooks)
        .iter()
        .any(|l| l.starts_with("critical backup")));
    drop(held);

    // A leftover set without a manifest (a killed backup): incomplete, then removed.
    let leftover = s.repo.join("20000101T000000Z");
    fs::create_dir_all(leftover.join("data/base")).unwrap();
    fs::write(leftover.join("data/PG_VERSION"), "17\n").unwrap();
    s.env.chown(&leftover);
    let o = s.recover("r0", &["--immediate", "--backup", "20000101T000000Z"]);
    assert!(!o.status.success());
    common::assert_says(&o, "no complete backup 20000101T000000Z");
    let id2 = s.backup();
    assert!(!leftover.exists(), "the killed backup's leftovers are removed");

    // One flipped byte in a stored file: refused, nothing left behind.
    let stored = s.repo.join(&id).join("data/PG_VERSION.zst");
    let mut bytes = fs::read(&stored).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&stored, bytes).unwrap();
    let o = s.recover("r1", &["--immediate", "--backup", &id]);
    assert!(!o.status.success());
    common::assert_says(&o, "damaged backup set");
    assert!(!s.env.path("r1").exists(), "nothing was left");
    // The intact one recovers, and --start brings it up at its target.
    let port = common::free_port().to_string();
    assert_eq!(
        chosen(&s.recover("r2", &["--immediate", "--start", "--port", &port])),
        id2
    );
    let pg = PgCluster::adopt(&s.env, "r2", "");
    let rows = run_output(
        s.env
            .command(&common::client_program("psql"))
            .args(["-XAtq", "-h"])
            .arg(&s.master.socket_dir)
            .args(["-p", &port, "-d", "postgres", "-c", "SELECT batch FROM t"]),
    );
    assert_eq!(
        String::from_utf8_lossy(&rows.stdout).trim(),
        "A",
        "{}",
        describe_output(&rows)
    );
    drop(pg);

    // A target the WAL never reaches: PostgreSQL 13+'s FATAL is caught and
    // explained (12 ends recovery at the end of the WAL and promotes).
    let port = common::free_port().to_string();
    let args = [
        "--target-xid",
        "4000000000",
        "--backup",
        &id2,
        "--start",
        "--port",
        &port,
    ];
    let o = s.recover("r3", &args);
    if common::server_major() >= 13 {
        assert!(!o.status.success(), "{}", describe_output(&o));
        common::assert_says(&o, "ends before the target");
    }
    drop(PgCluster::adopt(&s.env, "r3", ""));

    // --standby from a standby.ini with the backup keys: a standby that follows the archive.
    let sb_ini = s.env.write(
        "standby.ini",
        &format!(
            "[DEFAULT]\nmaster_public_ip: 127.0.0.1\npgdata: {}\narchivedir: {}\nbackup_dir: {}\npg_ctl: {}\n",
            s.master.datadir.display(),
            s.env.path("archive").display(),
            s.repo.display(),
            common::pg_bindir().join("pg_ctl").display()
        ),
    );
    let to = s.env.path("sb");
    let o = run_output(
        s.env
            .pitrkit()
            .args(["recover", "-C"])
            .arg(&sb_ini)
            .arg("--to")
            .arg(&to)
            .arg("--standby"),
    );
    assert_eq!(chosen(&o), id2);
    assert!(to.join("standby.signal").is_file() && !to.join("recovery.signal").exists());
    let auto = fs::read_to_string(to.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains(" restore -C ") && !auto.contains("recovery_target = "),
        "{auto}"
    );
    let sb = PgCluster::adopt(&s.env, "sb", "");
    sb.start();
    assert_eq!(sb.psql("SELECT pg_is_in_recovery()"), "t");
    assert_eq!(sb.psql("SELECT batch FROM t"), "A");

    // A full disk: a clear error, and nothing left that looks like a backup.
    let small = s.env.mkdir("small");
    let mounted = fixtures::Tmpfs::mount(&small, "1m");
    s.env.chown(&small);
    let text = fs::read_to_string(&s.ini).unwrap();
    let full_ini = s.env.write(
        "full.ini",
        &text.replace(s.repo.to_str().unwrap(), small.to_str().unwrap()),
    );
    let o = run_output(s.env.pitrkit().args(["backup", "-C"]).arg(&full_ini));
    assert!(!o.status.success());
    common::assert_says(&o, "No space left on device");
    common::assert_says(&o, "nothing of it was kept");
    let left: Vec<_> = fs::read_dir(&small).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, [".lock"], "only the lock file is left");
    drop(mounted);

    // Retention: keep_backups 1 removes the older (damaged) backup and the
    // WAL only it needed; the hold names what the kept one needs, and
    // cleanup keeps that whatever %r it is given; history files stay.
    let archive = s.env.path("archive");
    fs::write(
        archive.join("00000009.history"),
        "9\t0/9000000\tno recovery target specified\n",
    )
    .unwrap();
    fs::write(&s.ini, fs::read_to_string(&s.ini).unwrap() + "keep_backups: 1\n").unwrap();
    let o = s.pitrkit(&["backup", "--expire"]);
    assert!(o.status.success(), "{}", describe_output(&o));
    common::assert_says(&o, &format!("removed 1 backup(s) ({id})"));
    assert!(!s.repo.join(&id).exists() && s.repo.join(&id2).join("manifest").is_file());
    let hold = fs::read_to_string(archive.join(".pitrkit-backup-hold")).unwrap();
    let first_of_2 = fs::read_dir(s.repo.join(&id2).join("wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24)
        .min()
        .unwrap();
    assert_eq!(hold, format!("{first_of_2}\n"));
    let left = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 24)
            .collect();
        v.sort();
        v
    };
    assert_eq!(left(&archive).first(), Some(&first_of_2), "{:?}", left(&archive));
    assert!(archive.join("00000009.history").is_file());
    let o = s.recover("r5", &["--target-time", &between]);
    assert!(!o.status.success());
    common::assert_says(&o, "before the end of every backup");
    let o = run_output(
        s.env
            .pitrkit()
            .args(["cleanup", "-C"])
            .arg(&sb_ini)
            .arg("0000000100000000000000FF"),
    );
    assert!(o.status.success(), "{}", describe_output(&o));
    assert_eq!(left(&archive).first(), Some(&first_of_2), "cleanup honours the hold");
}

/// A backup taken on a streaming standby (pg_backup_stop there neither
/// switches WAL nor waits: the backup waits for its last segment to reach
/// the archive, which the master's writes and switches fill) recovers to
/// the master's data.
#[test]
fn backup_taken_on_a_standby() {
    let s = setup("bk_sb");
    s.master.psql("CREATE TABLE t (batch text); INSERT INTO t VALUES ('A')");
    let o = run_output(
        s.env
            .command(&common::client_program("pg_basebackup"))
            .arg("-D")
            .arg(s.env.path("standby"))
            .args(["-R", "-X", "stream", "-h"])
            .arg(&s.master.socket_dir)
            .args(["-p", &s.master.port.to_string()]),
    );
    assert!(o.status.success(), "{}", describe_output(&o));
    let sb = PgCluster::adopt(&s.env, "standby", "hot_standby = on");
    sb.start();
    let ini = s.env.write(
        "standby-backup.ini",
        &format!(
            "pgdata: {}\narchivedir: {}\nbackup_dir: {}\nbackup_wal_timeout: 60\n",
            sb.datadir.display(),
            s.env.path("archive").display(),
            s.env.mkdir("repo2").display()
        ),
    );
    let done = std::sync::atomic::AtomicBool::new(false);
    let o = std::thread::scope(|scope| {
        // The master keeps writing and switching, as a busy master would.
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                s.master.switch_wal();
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        let o = run_output(s.env.pitrkit().args(["backup", "-C"]).arg(&ini));
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        o
    });
    assert!(o.status.success(), "{}", describe_output(&o));
    s.archive_now();
    let to = s.env.path("r");
    let o = run_output(
        s.env
            .pitrkit()
            .args(["recover", "-C"])
            .arg(&ini)
            .arg("--to")
            .arg(&to)
            .arg("--immediate"),
    );
    assert!(o.status.success(), "{}", describe_output(&o));
    verifybackup(&s.env, &to);
    assert_eq!(rows_after_recovery(&s.env, "r"), "A");
}
