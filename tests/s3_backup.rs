//! Backups to an S3 repository (`backup_dir: s3://bucket/prefix`), against
//! a real S3 server (moto_server, tests/common/moto.rs) and real
//! PostgreSQL: backup and `recover --target-time`, `--list --json`,
//! `--verify` of a damaged object, the lock object, and a multipart backup
//! killed mid-upload (no complete-looking set; `--expire` aborts its upload).
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::moto::Moto;
use common::{describe_output, fixtures, run_output, PgCluster, TestEnv};

struct Setup {
    env: TestEnv,
    master: PgCluster,
    moto: Moto,
    ini: PathBuf,
}

/// A master archiving into a local archive, and a backup.ini whose
/// backup_dir is `repo/` in moto's bucket, with 5 MiB parts, one at a time
/// (so that a relation of a few tens of MiB is uploaded in many parts).
fn setup(name: &str) -> Setup {
    let env = TestEnv::new(name, Path::new(env!("CARGO_BIN_EXE_pitrkit")));
    let moto = Moto::start(&env, "pitrkit-backups");
    let creds = moto.credentials_file(&env, "creds", &moto.secret);
    let (master, archive) = fixtures::master_with_local_archive(&env);
    let ini = env.write(
        "backup.ini",
        &format!(
            "[DEFAULT]\npgdata: {}\nport: {}\nsocket_dir: {}\narchivedir: {}\nbackup_dir: {}\ncompression: none\n\
             s3_part_size: 5\ns3_upload_concurrency: 1\nincludepath: {}\n{}",
            master.datadir.display(),
            master.port,
            master.socket_dir.display(),
            archive.display(),
            moto.url("repo"),
            common::pg_bindir().display(),
            moto.ini_lines(&creds),
        ),
    );
    Setup { env, master, moto, ini }
}

impl Setup {
    fn pitrkit(&self, args: &[&str]) -> Output {
        run_output(&mut self.cmd(args))
    }

    fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = self.env.pitrkit();
        c.arg(args[0]).arg("-C").arg(&self.ini).args(&args[1..]);
        c
    }

    fn backup(&self) -> String {
        let o = self.pitrkit(&["backup"]);
        assert!(o.status.success(), "backup failed: {}", describe_output(&o));
        let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert_eq!(id.len(), 16, "{}", describe_output(&o));
        id
    }

    fn archive_now(&self) {
        let seg = self.master.switch_wal();
        self.master.assert_archived(&seg, Duration::from_secs(30), "");
    }

    /// The repository's keys under `rel` (relative to repo/).
    fn keys(&self, rel: &str) -> Vec<String> {
        self.moto.list(&format!("repo/{rel}"))
    }
}

/// The pitrkit process runuser started (runuser forks: a SIGKILL to it
/// would leave pitrkit running).
fn pitrkit_under(runuser: &Child) -> i32 {
    let pid = runuser.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kids = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(k) = kids.split_whitespace().next() {
            return k.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "runuser started no pitrkit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Backup to S3 and recover to a time between two batches; `--list
/// --json`, `--verify` catching a damaged object; another host's lock
/// object refuses a backup; a multipart backup SIGKILLed mid-upload leaves
/// no complete-looking set, and the next `--expire` takes over its stale
/// lock, aborts its upload by the recorded id and removes the record.
#[test]
fn backup_to_s3_recovers_and_a_killed_multipart_upload_is_aborted() {
    let s = setup("s3bk");
    let m = &s.master;
    m.psql("CREATE TABLE t (batch text)");
    let id = s.backup();
    m.psql("INSERT INTO t VALUES ('A')");
    let t = m.psql("SELECT now()");
    m.psql("INSERT INTO t VALUES ('B')");
    s.archive_now();
    let keys = s.keys(&id);
    for k in [
        "manifest",
        "data/PG_VERSION",
        "data/global/pg_control",
        "wal/.pitrkit-system-id",
    ] {
        assert!(keys.contains(&format!("repo/{id}/{k}")), "{k} not in {keys:?}");
    }
    assert!(
        s.keys(".lock").is_empty() && s.keys(".uploads").is_empty(),
        "lock and records are gone"
    );
    // 16 MiB WAL segments went up in 5 MiB parts; none is left in progress.
    assert!(s.moto.uploads().is_empty(), "{:?}", s.moto.uploads());

    let to = s.env.path("r1");
    let o = s.pitrkit(&["recover", "--to", to.to_str().unwrap(), "--target-time", &t]);
    assert!(o.status.success(), "{}", describe_output(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), id);
    let pg = PgCluster::adopt(&s.env, "r1", "");
    pg.start();
    let done = common::wait_until(Duration::from_secs(60), || {
        pg.try_psql("SELECT NOT pg_is_in_recovery()").is_ok_and(|v| v == "t")
    });
    assert!(done, "r1 did not finish recovery:\n{}", common::tail(&pg.log, 30));
    assert_eq!(pg.psql("SELECT string_agg(batch, ',' ORDER BY batch) FROM t"), "A");
    pg.stop();

    let o = s.pitrkit(&["backup", "--list", "--json"]);
    assert!(o.status.success(), "{}", describe_output(&o));
    let json = String::from_utf8_lossy(&o.stdout);
    assert!(
        json.contains(&format!("{{\"id\":\"{id}\",\"type\":\"full\",\"complete\":true,")),
        "{json}"
    );
    let key = format!("repo/{id}/data/PG_VERSION");
    let mut bytes = s.moto.get_object(&key);
    bytes[0] ^= 1;
    s.moto.put_object(&key, &bytes);
    let o = s.pitrkit(&["backup", "--verify"]);
    assert!(!o.status.success(), "{}", describe_output(&o));
    common::assert_says(&o, &format!("{id}/data/PG_VERSION holds crc32c"));
    common::assert_says(&o, "found 1 problem(s)");

    // Another host's backup holds the repository: refused, its lock kept.
    let theirs = "host: other-host\npid: 4242\nstarted: 2026-11-30T10:00:00Z\nwhat: this backup\n";
    s.moto.put_object("repo/.lock", theirs.as_bytes());
    let o = s.pitrkit(&["backup"]);
    assert!(!o.status.success(), "{}", describe_output(&o));
    common::assert_says(&o, "another pitrkit backup or expire");
    common::assert_says(&o, "other-host");
    assert_eq!(s.moto.get_object("repo/.lock"), theirs.as_bytes());
    s.moto.delete_object("repo/.lock");

    // A relation of ~25 MiB: many 5 MiB parts, one at a time. A second
    // backup while it runs is refused; then it is killed once its upload
    // is recorded.
    m.psql("CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 7)::text) AS v FROM generate_series(1, 300000) g");
    m.psql("CHECKPOINT");
    let mut child = s
        .cmd(&["backup"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = pitrkit_under(&child);
    let deadline = Instant::now() + Duration::from_secs(120);
    while s.keys(".uploads").is_empty() {
        assert!(Instant::now() < deadline, "the backup never started a multipart upload");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before its first multipart upload"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = s.pitrkit(&["backup"]);
    assert!(!o.status.success(), "{}", describe_output(&o));
    common::assert_says(&o, "another pitrkit backup or expire");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    assert!(
        !s.moto.uploads().is_empty(),
        "the killed upload is in progress on the server"
    );
    let o = s.pitrkit(&["backup", "--list", "--json"]);
    let json = String::from_utf8_lossy(&o.stdout);
    assert_eq!(json.matches("\"complete\":true").count(), 1, "{json}");
    assert!(
        json.contains("\"complete\":false"),
        "the killed set is listed incomplete: {json}"
    );

    // --expire takes over the dead process's lock, aborts the upload by id.
    let o = s.pitrkit(&["backup", "--expire"]);
    assert!(o.status.success(), "{}", describe_output(&o));
    common::assert_says(&o, "stale repository lock");
    assert_eq!(s.moto.uploads(), Vec::<String>::new(), "no orphaned parts");
    assert_eq!(s.keys(".uploads"), Vec::<String>::new(), "no upload records");
    assert!(s.keys(".lock").is_empty());
}
