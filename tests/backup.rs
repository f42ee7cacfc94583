//! `pitrkit backup` and `pitrkit recover` against a real master archiving
//! through pitrkit: the PITR round trip (issue 10) and the ways it must fail.
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{describe_output, fixtures, run_output, PgCluster, TestEnv};
use pitrkit::backup::manifest::Manifest;
use pitrkit::config::BackupType;

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
        self.backup_with(&[])
    }

    /// Takes a backup with `args` (e.g. `--incremental`); its ID.
    fn backup_with(&self, args: &[&str]) -> String {
        let o = self.pitrkit(&[&["backup"], args].concat());
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

    /// A standby.ini with the backup keys, for the cluster in `pgdata`, whose
    /// master is this one (over TCP, once [`listen_on_tcp`] ran); `extra` lines.
    fn standby_ini(&self, pgdata: &Path, extra: &str) -> PathBuf {
        self.env.write(
            "standby.ini",
            &format!(
                "[DEFAULT]\nmaster_public_ip: 127.0.0.1\nport: {}\npgdata: {}\narchivedir: {}\nbackup_dir: {}\npg_ctl: {}\n{extra}",
                self.master.port,
                pgdata.display(),
                self.env.path("archive").display(),
                self.repo.display(),
                common::pg_bindir().join("pg_ctl").display()
            ),
        )
    }

    /// `recover -C <standby.ini> --to <dir> --standby`: the output.
    fn recover_standby(&self, ini: &Path, dir: &str) -> Output {
        run_output(
            self.env
                .pitrkit()
                .args(["recover", "-C"])
                .arg(ini)
                .arg("--to")
                .arg(self.env.path(dir))
                .arg("--standby"),
        )
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

/// initdb's files are seconds old: an incremental would copy them all again
/// (modified near its base's start). Lets them age past that, as any real
/// cluster's files have.
fn aged_past_the_slack(pg: &PgCluster) {
    let newest = walkdir(&pg.datadir.join("base")).into_iter().max().unwrap();
    let aged = newest + Duration::from_secs(pitrkit::backup::incremental::MTIME_SLACK_SECS as u64 + 1);
    if let Ok(wait) = aged.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(wait);
    }
}

/// The mtimes of every file under `dir`.
fn walkdir(dir: &Path) -> Vec<std::time::SystemTime> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        if md.is_dir() {
            out.extend(walkdir(&e.path()));
        } else {
            out.push(md.modified().unwrap());
        }
    }
    out
}

/// A set's manifest.
fn manifest(repo: &Path, id: &str) -> Manifest {
    Manifest::parse(&fs::read_to_string(repo.join(id).join("manifest")).unwrap()).unwrap()
}

/// The PITR round trip: backup 1, batch A, T1, batch B, backup 2
/// (incremental), batch C, restore point and T2, backup 3 (incremental on
/// the incremental), drop the table; recover to T1 gives exactly A from
/// backup 1, to T2, the LSN and the restore point A+B+C, backup 3 to its
/// end A+B+C; pg_verifybackup accepts each restored directory.
#[test]
fn pitr_round_trip() {
    let s = setup("bk_pitr");
    let m = &s.master;
    // The table lives in a tablespace, which each recovery moves (--tablespace-map).
    let ts = s.env.mkdir("ts");
    m.psql(&format!("CREATE TABLESPACE ts LOCATION '{}'", ts.display()));
    m.psql("CREATE TABLE t (batch text) TABLESPACE ts");
    aged_past_the_slack(m);
    let id1 = s.backup();
    m.psql("INSERT INTO t VALUES ('A')");
    let t1 = m.psql("SELECT now()");
    m.psql("INSERT INTO t VALUES ('B')");
    let id2 = s.backup_with(&["--incremental"]);
    assert!(id2 > id1, "{id1} {id2}");
    m.psql("INSERT INTO t VALUES ('C')");
    m.psql("SELECT pg_create_restore_point('before_drop')");
    let lsn = m.psql("SELECT pg_current_wal_insert_lsn()");
    let t2 = m.psql("SELECT now()");
    // backup_type in the INI, not the flag, asks for this one.
    fs::write(
        &s.ini,
        fs::read_to_string(&s.ini).unwrap() + "backup_type: incremental\n",
    )
    .unwrap();
    let id3 = s.backup();
    m.psql("DROP TABLE t");
    s.archive_now();
    assert!(
        fixtures::lines(&s.hooks)
            .iter()
            .filter(|l| l.starts_with("ok backup"))
            .count()
            == 3,
        "{:?}",
        fixtures::lines(&s.hooks)
    );
    // The set: manifest last, WAL with the archive's mark.
    let set = s.repo.join(&id1);
    assert!(set.join("manifest").is_file() && set.join("wal/.pitrkit-system-id").is_file());
    assert!(set.join("data/global/pg_control.zst").is_file());
    assert!(!set.join("data/postmaster.pid.zst").exists());

    // The incrementals store far less than the full: unchanged relation
    // files are referenced in the set that stores them, never in a set
    // that references them itself.
    let (m1, m2, m3) = (
        manifest(&s.repo, &id1),
        manifest(&s.repo, &id2),
        manifest(&s.repo, &id3),
    );
    assert_eq!(
        (m1.kind, m2.kind, m3.kind),
        (BackupType::Full, BackupType::Incremental, BackupType::Incremental)
    );
    assert_eq!(m2.depends_on(), std::slice::from_ref(&id1));
    let referenced = |m: &Manifest| {
        m.files
            .iter()
            .filter(|f| f.holder.is_some() && f.path.starts_with("base/"))
            .count()
    };
    let relations = m1.files.iter().filter(|f| f.path.starts_with("base/")).count();
    assert!(
        referenced(&m2) * 4 > relations * 3,
        "{} of {relations} relation files referenced",
        referenced(&m2)
    );
    assert!(
        m2.stored_size() * 10 < m1.stored_size(),
        "the incremental stores {} bytes, the full {}",
        m2.stored_size(),
        m1.stored_size()
    );
    for f in m2.files.iter().filter(|f| f.holder.is_some()) {
        assert!(
            !s.repo.join(&id2).join(format!("data/{}.zst", f.path)).exists(),
            "{}",
            f.path
        );
    }
    for f in m3.files.iter().filter(|f| f.holder.is_some()) {
        let in2 = m2.files.iter().find(|e| e.path == f.path).unwrap();
        assert_eq!(
            f.holder.as_ref(),
            Some(in2.holder.as_ref().unwrap_or(&id2)),
            "{}: the reference names the set that stores it",
            f.path
        );
        assert!(f.holder.as_ref() != Some(&id2) || in2.holder.is_none());
    }
    assert!(m3.depends_on().contains(&id1), "{:?}", m3.depends_on());
    // A touched file is copied again: pg_control always, t's file after the inserts.
    assert!(m3
        .files
        .iter()
        .any(|f| f.path == "global/pg_control" && f.holder.is_none()));

    assert_eq!(chosen(&s.recover("r1", &["--target-time", &t1])), id1);
    verifybackup(&s.env, &s.env.path("r1"));
    let auto = fs::read_to_string(s.env.path("r1/postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains("recovery_target_action = 'promote'") && auto.contains("archive_mode = 'off'"),
        "{auto}"
    );
    assert!(!auto.contains("archive_cleanup_command"), "{auto}");
    assert_eq!(rows_after_recovery(&s.env, "r1"), "A");

    assert_eq!(chosen(&s.recover("r2", &["--target-time", &t2])), id2);
    verifybackup(&s.env, &s.env.path("r2"));
    assert_eq!(rows_after_recovery(&s.env, "r2"), "A,B,C");
    assert_eq!(chosen(&s.recover("r2l", &["--target-lsn", &lsn])), id2);
    assert_eq!(rows_after_recovery(&s.env, "r2l"), "A,B,C");
    assert_eq!(chosen(&s.recover("r6", &["--immediate", "--backup", &id3])), id3);
    verifybackup(&s.env, &s.env.path("r6"));
    assert_eq!(rows_after_recovery(&s.env, "r6"), "A,B,C");

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
    assert!(
        json.contains(&format!("{{\"id\":\"{id1}\",\"type\":\"full\",\"complete\":true,")),
        "{json}"
    );
    for (id, m) in [(&id2, &m2), (&id3, &m3)] {
        assert!(
            json.contains(&format!(
                "{{\"id\":\"{id}\",\"type\":\"incremental\",\"complete\":true,"
            )),
            "{json}"
        );
        let deps: Vec<String> = m.depends_on().iter().map(|d| format!("\"{d}\"")).collect();
        assert!(
            json.contains(&format!("\"depends_on\":[{}]}}", deps.join(","))),
            "{json}"
        );
    }
    // Size on disk counts what each set stores itself (its WAL too, about
    // the same in each): the bytes it references are not counted.
    let stored = |id: &str| -> u64 {
        let at = json.find(&format!("\"id\":\"{id}\"")).unwrap();
        let rest = &json[at..];
        let v = &rest[rest.find("\"size_stored\":").unwrap() + 14..];
        v[..v.find(',').unwrap()].parse().unwrap()
    };
    assert!(
        stored(&id1) - stored(&id2) > (m1.stored_size() - m2.stored_size()) / 2,
        "{json}"
    );
    let o = s.pitrkit(&["backup", "--list"]);
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text.lines().find(|l| l.starts_with(&id3)).unwrap_or_default();
    assert!(
        line.contains(" incremental ") && line.ends_with(&m3.depends_on().join(",")),
        "{text}"
    );
    assert!(json.contains("\"newest_complete_age_seconds\":"), "{json}");

    // --verify: clean, then each kind of damage is named.
    let o = s.pitrkit(&["backup", "--verify"]);
    assert!(o.status.success(), "{}", describe_output(&o));
    let flip = |f: &Path| {
        let mut bytes = fs::read(f).unwrap();
        let last = bytes.len() - 5;
        bytes[last] ^= 1;
        fs::write(f, bytes).unwrap();
    };
    flip(&s.repo.join(&id2).join("data/backup_label.zst"));
    // A file stored only in the full, which the incremental references.
    let shared = &m2
        .files
        .iter()
        .find(|f| f.holder.as_ref() == Some(&id1) && f.path.starts_with("base/") && f.size > 0)
        .unwrap()
        .path;
    flip(&s.repo.join(&id1).join(format!("data/{shared}.zst")));
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
        format!("{id2}/data/backup_label.zst: corrupt"),
        format!("backup {id2} (file {shared} stored in backup {id1}): "),
        format!("{id1}/data/{shared}.zst: corrupt"),
        format!("{id1}/data/global/pg_control.zst: cannot be read"),
        format!("segment {gone} is missing"),
        format!("{foreign}: a segment of database system 42"),
    ] {
        common::assert_says(&o, &says);
    }
    assert!(fixtures::lines(&s.hooks)
        .iter()
        .any(|l| l.starts_with("critical backup --verify")));

    // The full gone (here: its manifest): the incremental fails for it, naming both.
    fs::remove_file(s.repo.join(&id1).join("manifest")).unwrap();
    let gone = format!("backup {id2} references files stored in backup {id1}, which is missing or incomplete");
    let o = s.pitrkit(&["backup", "--verify", &id2]);
    assert!(!o.status.success());
    common::assert_says(&o, &gone);
    let o = s.recover("r7", &["--immediate", "--backup", &id2]);
    assert!(!o.status.success());
    common::assert_says(&o, &gone);
    assert!(!s.env.path("r7").exists());
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
    aged_past_the_slack(&s.master);
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
    let sb_ini = s.standby_ini(&s.master.datadir, "");
    let to = s.env.path("sb");
    assert_eq!(chosen(&s.recover_standby(&sb_ini, "sb")), id2);
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
    // (The archive holds WAL for s.repo: another repository is refused.)
    let o = run_output(s.env.pitrkit().args(["backup", "-C"]).arg(&full_ini));
    assert!(!o.status.success());
    common::assert_says(&o, "holds WAL for another backup repository");
    let hold = s.env.path("archive/.pitrkit-backup-hold");
    let held = fs::read(&hold).unwrap();
    fs::remove_file(&hold).unwrap();
    let o = run_output(s.env.pitrkit().args(["backup", "-C"]).arg(&full_ini));
    fs::write(&hold, held).unwrap();
    assert!(!o.status.success());
    common::assert_says(&o, "No space left on device");
    common::assert_says(&o, "nothing of it was kept");
    let left: Vec<_> = fs::read_dir(&small).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, [".lock"], "only the lock file is left");
    drop(mounted);

    // An incremental on id2 (its files referenced there), and a time between them.
    let before_3 = s.master.psql("SELECT now()");
    let id3 = s.backup_with(&["--incremental"]);
    assert_eq!(manifest(&s.repo, &id3).depends_on(), std::slice::from_ref(&id2));

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
    // The newest is incremental: its base stays, for its files, and says why.
    common::assert_says(&o, &format!("kept 2 ({id2} only for the files {id3} references in it)"));
    assert!(!s.repo.join(&id).exists() && s.repo.join(&id2).join("manifest").is_file());
    let hold = fs::read_to_string(archive.join(".pitrkit-backup-hold")).unwrap();
    // A set kept only for its files holds no WAL: the hold is the kept incremental's start.
    let first_of_3 = fs::read_dir(s.repo.join(&id3).join("wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24)
        .min()
        .unwrap();
    // The hold names the repository it holds for (one archive, one repository).
    assert_eq!(hold, format!("{first_of_3}\nrepository: {}\n", s.repo.display()));
    let left = archived_segments;
    assert_eq!(left(&archive).first(), Some(&first_of_3), "{:?}", left(&archive));
    assert!(archive.join("00000009.history").is_file());
    // Both kept sets are whole: --verify does not count the WAL expire
    // rightly removed before the hold as missing for the set kept for its files.
    let o = s.pitrkit(&["backup", "--verify"]);
    assert!(o.status.success(), "{}", describe_output(&o));
    let o = s.recover("r5", &["--target-time", &between]);
    assert!(!o.status.success());
    common::assert_says(&o, "before the end of every backup");
    // Only id2 could reach this, and the archive no longer continues from it.
    let o = s.recover("r5", &["--target-time", &before_3]);
    assert!(!o.status.success());
    common::assert_says(&o, &format!("only backup(s) {id2} could reach this target"));
    let o = run_output(
        s.env
            .pitrkit()
            .args(["cleanup", "-C"])
            .arg(&sb_ini)
            .arg("0000000100000000000000FF"),
    );
    assert!(o.status.success(), "{}", describe_output(&o));
    assert_eq!(left(&archive).first(), Some(&first_of_3), "cleanup honours the hold");
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
    // pgbench writes on the master throughout the backup: one client, one
    // row per transaction, so ids are in commit order and the recovered
    // table must be exactly the master's rows up to its highest id.
    s.master.psql("CREATE TABLE w (id bigserial PRIMARY KEY, v text)");
    let script = s
        .env
        .write("w.sql", "INSERT INTO w (v) VALUES (md5(random()::text));\n");
    s.env.chown(&script);
    let mut load = s
        .env
        .command(&common::client_program("pgbench"))
        .arg("-h")
        .arg(&s.master.socket_dir)
        .args(["-p", &s.master.port.to_string(), "-n", "-c", "1", "-T", "600", "-f"])
        .arg(&script)
        .arg("postgres")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(common::wait_until(Duration::from_secs(30), || s
        .master
        .psql("SELECT count(*) > 100 FROM w")
        == "t"));
    let done = std::sync::atomic::AtomicBool::new(false);
    let o = std::thread::scope(|scope| {
        // The master also switches WAL, as a busy master would.
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                s.master.switch_wal();
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        let o = run_output(s.env.pitrkit().args(["backup", "--incremental", "-C"]).arg(&ini));
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        o
    });
    assert!(o.status.success(), "{}", describe_output(&o));
    // Nothing to build on in a new repository: a full backup, and it says so.
    common::assert_says(&o, "taking a full backup instead");
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(manifest(&s.env.path("repo2"), &id).kind, BackupType::Full);
    common::kill_descendants(load.id());
    let _ = load.kill();
    let _ = load.wait();
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
    let pg = PgCluster::adopt(&s.env, "r", "");
    pg.start();
    assert!(common::wait_until(Duration::from_secs(60), || {
        pg.try_psql("SELECT NOT pg_is_in_recovery()").is_ok_and(|v| v == "t")
    }));
    assert_eq!(pg.psql("SELECT string_agg(batch, ',') FROM t"), "A");
    let sum = "SELECT count(*) || ' ' || md5(string_agg(id || v, ',' ORDER BY id)) FROM w";
    let n: u64 = pg.psql("SELECT max(id) FROM w").parse().unwrap();
    let recovered = pg.psql(sum);
    pg.stop();
    let on_master = s.master.psql(&format!("{sum} WHERE id <= {n}"));
    assert_eq!(
        recovered, on_master,
        "the recovered table is the master's at the recovery point"
    );
    let written: u64 = s.master.psql("SELECT max(id) FROM w").parse().unwrap();
    assert!(
        n > 100 && n < written,
        "recovered {n} of {written} rows: the point lies inside the load"
    );
}

/// The sets (IDs) in the repository, oldest first.
fn set_ids(repo: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(repo)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 16 && n.ends_with('Z'))
        .collect();
    v.sort();
    v
}

/// A real `kill -9` of `pitrkit backup` mid-copy: the set never looks
/// complete, the server's backup session dies with it, the lock does not
/// outlive it, its hold is dropped by the next expire, and the next backup
/// works. Then a recover reading the older of two sets while `--expire`
/// (keep_backups 1) runs: expire removes nothing, recover completes.
#[test]
fn killed_backup_and_recover_against_expire() {
    let s = setup("bk_kill");
    // Large enough (about 50 MB) that copying it takes a moment.
    s.master.psql(
        "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 7)::text) AS v FROM generate_series(1, 500000) g",
    );
    let mut child = s
        .env
        .pitrkit()
        .args(["backup", "-C"])
        .arg(&s.ini)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once data/ has files, before the manifest.
    let copying = common::wait_until(Duration::from_secs(60), || {
        set_ids(&s.repo)
            .first()
            .is_some_and(|id| fs::read_dir(s.repo.join(id).join("data")).is_ok_and(|mut d| d.next().is_some()))
    });
    common::kill_descendants(child.id());
    let _ = child.wait();
    assert!(copying, "the backup never started copying");
    let killed = set_ids(&s.repo).pop().unwrap();
    assert!(!s.repo.join(&killed).join("manifest").exists(), "killed too late");

    let o = s.pitrkit(&["backup", "--list", "--json"]);
    let json = String::from_utf8_lossy(&o.stdout);
    assert!(
        json.contains(&format!("{{\"id\":\"{killed}\",\"type\":null,\"complete\":false,")),
        "{json}"
    );
    assert!(json.contains("\"newest_complete_age_seconds\":null"), "{json}");
    let o = s.pitrkit(&["backup", "--verify", &killed]);
    assert!(!o.status.success());
    common::assert_says(&o, &format!("no complete backup {killed}"));
    let o = s.recover("r0", &["--immediate", "--backup", &killed]);
    assert!(!o.status.success());
    common::assert_says(&o, &format!("no complete backup {killed}"));
    let sessions = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pitrkit backup'";
    assert!(
        common::wait_until(Duration::from_secs(30), || s.master.psql(sessions) == "0"),
        "the killed backup's session is still on the server"
    );
    // The killed backup's hold names its start; with no complete backup
    // the next expire drops it, so cleanup is not held back forever.
    let hold = s.env.path("archive/.pitrkit-backup-hold");
    assert!(hold.is_file());
    let o = s.pitrkit(&["backup", "--expire"]);
    assert!(o.status.success(), "{}", describe_output(&o));
    assert!(!hold.exists(), "{}", fs::read_to_string(&hold).unwrap_or_default());

    // The lock died with the process; the next backup removes the leftover.
    let id1 = s.backup();
    // (It may reuse the killed one's ID, if started in the same second.)
    assert_eq!(
        set_ids(&s.repo),
        [id1.as_str()],
        "the killed backup's leftovers are removed"
    );
    assert_eq!(fs::read_to_string(&hold).unwrap().lines().next().unwrap().len(), 24);
    s.master.psql("INSERT INTO big VALUES (0, 'after 1')");
    let id2 = s.backup();

    // Recover the older set while expire would remove it.
    fs::write(&s.ini, fs::read_to_string(&s.ini).unwrap() + "keep_backups: 1\n").unwrap();
    let to = s.env.path("r1");
    let recovering = s
        .env
        .pitrkit()
        .args(["recover", "-C"])
        .arg(&s.ini)
        .arg("--to")
        .arg(&to)
        .args(["--immediate", "--backup", &id1])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(common::wait_until(Duration::from_secs(30), || to.exists()));
    let o = s.pitrkit(&["backup", "--expire"]);
    assert!(o.status.success(), "{}", describe_output(&o));
    common::assert_says(&o, "a pitrkit recover is reading");
    let o = recovering.wait_with_output().unwrap();
    assert_eq!(chosen(&o), id1);
    verifybackup(&s.env, &to);
    assert_eq!(set_ids(&s.repo), [id1.clone(), id2.clone()]);
    // Once it is done, the next expire removes it.
    let o = s.pitrkit(&["backup", "--expire"]);
    assert!(o.status.success(), "{}", describe_output(&o));
    assert_eq!(set_ids(&s.repo), [id2]);
}

/// Restarts `m` listening on 127.0.0.1 too: a standby.ini names its master
/// by host name or address, never by socket directory.
fn listen_on_tcp(m: &PgCluster) {
    let conf = m.datadir.join("postgresql.conf");
    fs::write(
        &conf,
        fs::read_to_string(&conf).unwrap() + "listen_addresses = '127.0.0.1'\n",
    )
    .unwrap();
    m.stop();
    m.start();
}

/// Starts the standby recovered into `dir`; waits until it streams from
/// the master as `user`.
fn streaming_standby(s: &Setup, dir: &str, user: &str) -> PgCluster {
    let sb = PgCluster::adopt(&s.env, dir, "hot_standby = on");
    sb.start();
    let streaming =
        format!("SELECT count(*) FROM pg_stat_replication WHERE usename = '{user}' AND state = 'streaming'");
    assert!(
        common::wait_until(Duration::from_secs(60), || s.master.psql(&streaming) == "1"),
        "the standby does not stream:\n{}",
        common::tail(&sb.log, 20)
    );
    sb
}

/// Waits until `sb` has replayed everything `m` has written.
fn wait_caught_up(m: &PgCluster, sb: &PgCluster) {
    let lsn = m.psql("SELECT pg_current_wal_lsn()");
    let caught_up = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'");
    assert!(common::wait_until(Duration::from_secs(60), || sb.psql(&caught_up) == "t"));
}

/// The archive's WAL segment names.
fn archived_segments(archive: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(archive)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24)
        .collect();
    v.sort();
    v
}

/// `--expire` and the archive's guards: an unmarked archivedir (an
/// unmounted share) is refused before anything is removed; while
/// cleanup_pause_file exists sets still expire but no WAL is removed. Then
/// `recover --standby` with repl_db_password: pg_verifybackup accepts the
/// directory, and the standby streams from a master that demands the password.
#[test]
fn expire_guards_and_standby_with_password() {
    let s = setup("bk_guard");
    let m = &s.master;
    // The master demands a password of the replication role, over TCP (the
    // only way a standby.ini names its master).
    m.psql("CREATE ROLE rep LOGIN REPLICATION PASSWORD 's3cr:et'");
    let hba = m.datadir.join("pg_hba.conf");
    let rules = fs::read_to_string(&hba).unwrap();
    fs::write(&hba, format!("host replication rep 127.0.0.1/32 md5\n{rules}")).unwrap();
    listen_on_tcp(m);
    m.psql("CREATE TABLE t (batch text); INSERT INTO t VALUES ('A')");
    let id1 = s.backup();
    m.psql("INSERT INTO t VALUES ('B')");
    let id2 = s.backup();
    let archive = s.env.path("archive");
    let pause = s.env.path("pause");
    fs::write(
        &s.ini,
        fs::read_to_string(&s.ini).unwrap() + &format!("keep_backups: 1\ncleanup_pause_file: {}\n", pause.display()),
    )
    .unwrap();
    let hold = archive.join(".pitrkit-backup-hold");
    let held = fs::read_to_string(&hold).unwrap();
    let before = archived_segments(&archive);

    // Unmarked: refused before anything is removed or written.
    let mark = archive.join(".pitrkit-system-id");
    fs::rename(&mark, archive.join("mark.away")).unwrap();
    let o = s.pitrkit(&["backup", "--expire"]);
    fs::rename(archive.join("mark.away"), &mark).unwrap();
    assert!(!o.status.success());
    common::assert_says(&o, "has no .pitrkit-system-id mark: it is not mounted");
    assert_eq!(set_ids(&s.repo), [id1.clone(), id2.clone()]);
    assert_eq!(fs::read_to_string(&hold).unwrap(), held);

    // Paused: the set expires, no WAL goes.
    fs::write(&pause, "").unwrap();
    let o = s.pitrkit(&["backup", "--expire"]);
    assert!(o.status.success(), "{}", describe_output(&o));
    common::assert_says(&o, "(none removed: ");
    common::assert_says(&o, "pause exists (cleanup_pause_file)");
    assert_eq!(set_ids(&s.repo), [id2.as_str()]);
    assert_eq!(archived_segments(&archive)[..before.len()], before[..]);
    fs::remove_file(&pause).unwrap();
    let o = s.pitrkit(&["backup", "--expire"]);
    assert!(o.status.success(), "{}", describe_output(&o));
    assert!(archived_segments(&archive)[0] > before[0], "unpaused, the old WAL goes");

    let sb_ini = s.standby_ini(
        &m.datadir,
        "use_streaming_replication: on\nrepl_db_user: rep\nrepl_db_password: s3cr:et\nsslmode: disable\n",
    );
    let to = s.env.path("sb");
    assert_eq!(chosen(&s.recover_standby(&sb_ini, "sb")), id2);
    verifybackup(&s.env, &to);
    let sb = streaming_standby(&s, "sb", "rep");
    m.psql("INSERT INTO t VALUES ('C')");
    wait_caught_up(m, &sb);
    assert_eq!(sb.psql("SELECT string_agg(batch, ',' ORDER BY batch) FROM t"), "A,B,C");
}

/// A backup taken on a streaming standby of an idle master (nothing else
/// fills its segment). Without a master connection it fails cleanly at
/// backup_wal_timeout, naming the segment it waited for; with the
/// standby.ini's master keys it asks the master for pg_switch_wal() and
/// finishes well within the timeout. The standby is built by `recover
/// --standby`, so this runs on every major (no pg_basebackup of the system's).
#[test]
fn standby_backup_asks_the_master_to_switch() {
    let s = setup("bk_sbsw");
    let m = &s.master;
    listen_on_tcp(m);
    m.psql("CREATE TABLE t (batch text); INSERT INTO t VALUES ('A')");
    s.backup();
    let archive = s.env.path("archive");
    let sb_ini = s.standby_ini(
        &s.env.path("sb"),
        &format!(
            "master_user: {user}\nuse_streaming_replication: on\nrepl_db_user: {user}\nsslmode: disable\n\
             backup_wal_timeout: 120\n",
            user = s.env.user_name()
        ),
    );
    chosen(&s.recover_standby(&sb_ini, "sb"));
    let sb = streaming_standby(&s, "sb", &s.env.user_name());
    // From here on the master is idle: its current segment stays open.
    s.archive_now();
    m.psql("CHECKPOINT");
    wait_caught_up(m, &sb);
    let sets = set_ids(&s.repo);

    // No master connection: a clean failure naming the segment.
    let bare = s.env.write(
        "sb-backup.ini",
        &format!(
            "pgdata: {}\narchivedir: {}\nbackup_dir: {}\nbackup_wal_timeout: 3\n",
            sb.datadir.display(),
            archive.display(),
            s.repo.display()
        ),
    );
    let o = run_output(s.env.pitrkit().args(["backup", "-C"]).arg(&bare));
    assert!(!o.status.success(), "{}", describe_output(&o));
    common::assert_says(&o, "within backup_wal_timeout (3 s)");
    common::assert_says(&o, "nothing of it was kept");
    let text = String::from_utf8_lossy(&o.stderr);
    let segment = text
        .split("the backup's last WAL segment ")
        .nth(1)
        .map(|t| &t[..24])
        .unwrap_or_else(|| panic!("no segment named: {text}"));
    assert!(pitrkit::wal::WalName::parse(segment).is_ok(), "{text}");
    assert!(
        !archive.join(segment).exists(),
        "{segment} was archived: the master was not idle"
    );
    assert_eq!(set_ids(&s.repo), sets, "nothing was kept");

    // The standby.ini's master: the switch closes the segment at once.
    let started = std::time::Instant::now();
    let o = run_output(s.env.pitrkit().args(["backup", "-C"]).arg(&sb_ini));
    assert!(o.status.success(), "{}", describe_output(&o));
    common::assert_says(&o, "asked the master to switch WAL");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(set_ids(&s.repo).len(), sets.len() + 1);
}
