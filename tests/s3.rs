//! WAL archive on S3-compatible object storage, against a real S3 server
//! (moto_server, tests/common/moto.rs) and real PostgreSQL: archive_urls,
//! a standby restoring from an s3:// archivedir, cleanup, and the failures
//! (server frozen, a different object under the name, a damaged object,
//! wrong credentials).
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::moto::Moto;
use common::{fixtures, run_output, PgCluster, TestEnv};

fn env(name: &str) -> TestEnv {
    TestEnv::new(name, Path::new(env!("CARGO_BIN_EXE_pitrkit")))
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An archiver INI archiving to `moto`'s bucket under `wal/`.
fn archiver_ini(env: &TestEnv, moto: &Moto, creds: &Path, pgdata: Option<&Path>, extra: &str) -> PathBuf {
    let (hook, _) = fixtures::recording_hook(env, "hook");
    let pg = pgdata.map(|p| format!("pgdata: {}\n", p.display())).unwrap_or_default();
    env.write(
        "archiver.ini",
        &format!(
            "[DEFAULT]\n{pg}archive_urls: {}\n{}notify_critical: {} critical\nlogfile: {}\n{extra}",
            moto.url("wal"),
            moto.ini_lines(creds),
            hook.display(),
            env.path("archiver.log").display()
        ),
    )
}

/// A standby INI whose archivedir is `moto`'s `wal/` prefix.
fn standby_ini(env: &TestEnv, moto: &Moto, creds: &Path, pgdata: &Path, extra: &str) -> PathBuf {
    env.write(
        "standby.ini",
        &format!(
            "[DEFAULT]\narchivedir: {}\npgdata: {}\n{}{extra}",
            moto.url("wal"),
            pgdata.display(),
            moto.ini_lines(creds)
        ),
    )
}

/// A master (1 MiB segments, not started) whose archive_command is `ini`'s.
fn archiving_master(env: &TestEnv, ini: &Path, extra_conf: &str) -> PgCluster {
    let conf = format!(
        "archive_mode = on\narchive_command = '{} archiver -C {} -F %p'\n{extra_conf}\n",
        env.bin.display(),
        ini.display()
    );
    PgCluster::init_with_args(env, "master", &conf, &["--wal-segsize=1"])
}

fn archiver(env: &TestEnv, ini: &Path, args: &[&str]) -> Output {
    run_output(env.pitrkit().arg("archiver").arg("-C").arg(ini).args(args))
}

/// A synthetic 1 MiB segment of system `sysid` at env/`name`.
fn segment_file(env: &TestEnv, name: &str, sysid: u64) -> PathBuf {
    let p = env.path(name);
    fs::write(&p, pitrkit::testsupport::wal::segment(name, sysid)).unwrap();
    env.chown(&p);
    p
}

/// Real WAL through archive_urls, -I's mark and 412 proof, a standby that
/// restores every row from the s3:// archivedir (with prefetch), cleanup.
#[test]
fn wal_archived_to_s3_is_restored_by_a_standby_to_the_last_row() {
    let env = env("s3-standby");
    let moto = Moto::start(&env, "pitrkit-standby");
    let creds = moto.credentials_file(&env, "creds", &moto.secret);
    let master = env.path("master");
    let ini = archiver_ini(&env, &moto, &creds, Some(&master), "");
    // On TCP for the standby's -I (the master's system identifier).
    let pg = archiving_master(
        &env,
        &ini,
        &format!("{}\nlisten_addresses = '127.0.0.1'", common::wal_keep_setting(64)),
    );
    let init = archiver(&env, &ini, &["-I"]);
    assert!(init.status.success(), "{}", text(&init));
    assert!(text(&init).contains("refuses a second create (412)"), "{}", text(&init));
    let keys = moto.list("wal/");
    assert!(keys.contains(&"wal/.pitrkit-system-id".to_string()), "{keys:?}");
    assert!(!keys.iter().any(|k| k.contains("probe")), "{keys:?}");
    pg.start();
    pg.psql("CREATE TABLE t(i int, pad text)");
    common::run_ok(
        env.command(&common::client_program("pg_basebackup"))
            .arg("-D")
            .arg(env.path("sb"))
            .args(["-h", pg.socket_dir.to_str().unwrap(), "-p", &pg.port.to_string()])
            .args(["-X", "none", "--no-sync", "--checkpoint=fast"]),
    );
    pg.psql("INSERT INTO t SELECT g, repeat('x', 300) FROM generate_series(1, 20000) g");
    let last = pg.switch_wal();
    pg.assert_archived(&last, Duration::from_secs(60), "archive_command to S3");
    let keys = moto.list("wal/");
    assert!(keys.contains(&format!("wal/{last}")), "{keys:?}");
    assert!(keys.contains(&format!("wal/{last}.sum")), "the sidecar: {keys:?}");

    let sb_dir = env.path("sb");
    let sb_ini = standby_ini(
        &env,
        &moto,
        &creds,
        &sb_dir,
        &format!(
            "restore_prefetch: 2\nmaster_public_ip: 127.0.0.1\nport: {}\nmaster_user: {}\nsql_via_ssh: off\nsslmode: disable\nincludepath: {}\n",
            pg.port,
            env.user_name(),
            common::pg_bindir().display()
        ),
    );
    // cmd_standby -I on an s3:// archivedir: the 412 proof and the mark.
    let init = run_output(env.pitrkit().args(["standby", "-C"]).arg(&sb_ini).arg("-I"));
    assert!(init.status.success(), "{}", text(&init));
    assert!(text(&init).contains("belongs to database system"), "{}", text(&init));
    let sb = PgCluster::adopt(
        &env,
        "sb",
        &format!(
            "restore_command = '{} restore -C {} %f %p'\n",
            env.bin.display(),
            sb_ini.display()
        ),
    );
    let signal = sb.datadir.join("standby.signal");
    fs::write(&signal, "").unwrap();
    env.chown(&signal);
    sb.start();
    assert!(
        common::wait_until(Duration::from_secs(60), || sb
            .try_psql("SELECT count(*) FROM t")
            .as_deref()
            == Ok("20000")),
        "the standby did not reach the last row:\n{}",
        common::tail(&sb.log, 30)
    );
    sb.stop();
    pg.stop();

    // Cleanup removes what is older than %r, with its sidecar, in one batch.
    let first = keys
        .iter()
        .filter_map(|k| k.strip_prefix("wal/"))
        .find(|k| k.len() == 24)
        .unwrap()
        .to_string();
    let out = run_output(env.pitrkit().args(["cleanup", "-C"]).arg(&sb_ini).arg(&last));
    assert!(out.status.success(), "{}", text(&out));
    let after = moto.list("wal/");
    assert!(!after.contains(&format!("wal/{first}")), "{first} kept: {after:?}");
    assert!(!after.contains(&format!("wal/{first}.sum")), "{after:?}");
    assert!(after.contains(&format!("wal/{last}")), "{after:?}");
    assert!(after.contains(&"wal/.pitrkit-cleanup-r".to_string()), "{after:?}");
}

/// The server hangs (SIGSTOP): the archive call fails within a bounded
/// time, PostgreSQL keeps the WAL, and its retry after SIGCONT succeeds.
#[test]
fn a_frozen_server_fails_the_archive_call_and_the_retry_succeeds() {
    let env = env("s3-frozen");
    let mut moto = Moto::start(&env, "pitrkit-frozen");
    let creds = moto.credentials_file(&env, "creds", &moto.secret);
    let master = env.path("master");
    let ini = archiver_ini(&env, &moto, &creds, Some(&master), "");
    let pg = archiving_master(&env, &ini, "");
    assert!(archiver(&env, &ini, &["-I"]).status.success());
    pg.start();
    let first = pg.switch_wal();
    pg.assert_archived(&first, Duration::from_secs(60), "before the freeze");

    moto.freeze();
    pg.psql("CREATE TABLE t AS SELECT 1 AS i");
    let seg = pg.switch_wal();
    let started = Instant::now();
    let out = run_output(
        env.pitrkit()
            .args(["archiver", "-C"])
            .arg(&ini)
            .arg("-F")
            .arg(format!("pg_wal/{seg}")),
    );
    let took = started.elapsed();
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(took < Duration::from_secs(40), "took {took:?}");
    assert!(text(&out).contains(&moto.endpoint()), "{}", text(&out));
    assert!(pg.datadir.join("pg_wal").join(&seg).exists(), "PostgreSQL keeps {seg}");
    let (_, failed) = pg.archiver_counts();
    assert!(failed >= 1 || !pg.wait_archived(&seg, Duration::from_secs(1)));
    moto.thaw();
    pg.assert_archived(&seg, Duration::from_secs(90), "PostgreSQL's retry after SIGCONT");
    assert!(moto.list("wal/").contains(&format!("wal/{seg}")));
}

/// Another object under the name: refused, never overwritten, critical
/// notification; the same bytes again are success.
#[test]
fn an_object_with_other_content_is_refused_and_never_overwritten() {
    let env = env("s3-conflict");
    let moto = Moto::start(&env, "pitrkit-conflict");
    let creds = moto.credentials_file(&env, "creds", &moto.secret);
    // Every object written with a storage class and SSE-S3 (headers moto takes).
    let ini = archiver_ini(
        &env,
        &moto,
        &creds,
        None,
        "s3_storage_class: standard_ia\ns3_sse: aes256\n",
    );
    assert!(archiver(&env, &ini, &["-I"]).status.success());
    let sysid = 7_400_000_000_000_000_001;
    let a = "000000010000000000000002";
    let src = segment_file(&env, a, sysid);
    for _ in 0..2 {
        let out = archiver(&env, &ini, &["-F", src.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let b = "000000010000000000000003";
    let src = segment_file(&env, b, sysid);
    let theirs = b"another cluster's bytes".to_vec();
    moto.put_object(&format!("wal/{b}"), &theirs);
    let out = archiver(&env, &ini, &["-F", src.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("refusing to overwrite"), "{}", text(&out));
    assert_eq!(moto.get_object(&format!("wal/{b}")), theirs, "never overwritten");
    let hook = fs::read_to_string(env.path("hook.log")).unwrap();
    assert!(hook.contains("critical") && hook.contains(b), "{hook}");
}

/// A damaged object stops recovery (exit 200); a name not in the marked
/// prefix is "not found" (1); a server that answers nothing is not "not
/// found" in archive recovery (200).
#[test]
fn a_damaged_object_exits_200_and_only_a_missing_one_exits_1() {
    let env = env("s3-damaged");
    let mut moto = Moto::start(&env, "pitrkit-damaged");
    let creds = moto.credentials_file(&env, "creds", &moto.secret);
    let ini = archiver_ini(&env, &moto, &creds, None, "");
    assert!(archiver(&env, &ini, &["-I"]).status.success());
    let name = "000000010000000000000002";
    let src = segment_file(&env, name, 7_400_000_000_000_000_002);
    for n in [name, "000000010000000000000003", "000000010000000000000004"] {
        let src = segment_file(&env, n, 7_400_000_000_000_000_002);
        assert!(archiver(&env, &ini, &["-F", src.to_str().unwrap()]).status.success());
    }
    let pgdata = env.mkdir("pgdata");
    let sb_ini = standby_ini(&env, &moto, &creds, &pgdata, "restore_prefetch: 2\n");
    let restore = |n: &str| {
        run_output(
            env.pitrkit()
                .args(["restore", "-C"])
                .arg(&sb_ini)
                .arg(n)
                .arg(env.path("restored")),
        )
    };
    let ok = restore(name);
    assert_eq!(code(&ok), 0, "{}", text(&ok));
    assert_eq!(fs::read(env.path("restored")).unwrap(), fs::read(&src).unwrap());
    let missing = restore("000000010000000000000009");
    assert_eq!(code(&missing), 1, "{}", text(&missing));
    // restore_prefetch: the worker the first restore started spools the
    // next segments from S3.
    let spooled = env.path(".pitrkit-prefetch/000000010000000000000004");
    assert!(
        common::wait_until(Duration::from_secs(30), || spooled.exists()),
        "nothing prefetched from S3"
    );

    let mut bytes = moto.get_object(&format!("wal/{name}"));
    bytes[100_000] ^= 0x10;
    moto.put_object(&format!("wal/{name}"), &bytes);
    fs::remove_file(env.path("restored")).unwrap();
    let damaged = restore(name);
    assert_eq!(code(&damaged), 200, "{}", text(&damaged));
    assert!(!env.path("restored").exists(), "nothing restored");

    moto.freeze();
    let gone = restore("000000010000000000000009");
    moto.thaw();
    assert_eq!(code(&gone), 200, "{}", text(&gone));
    assert!(text(&gone).contains(&moto.endpoint()), "{}", text(&gone));
}

/// The storage itself, as the backups build on it: never a replacement,
/// reads from an offset, listings, scopes, batch deletes.
#[test]
fn s3_storage_keeps_the_storage_rules() {
    use pitrkit::config::s3::{S3Location, S3Settings, S3Url, Sse};
    use pitrkit::fsutil::{PlaceError, Placed};
    use pitrkit::storage::{Kind, S3Store, Storage};
    use std::io::Read;

    let env = env("s3-storage");
    let moto = Moto::start(&env, "pitrkit-storage");
    let creds = moto.credentials_file(&env, "creds", &moto.secret);
    // As the test user reads it.
    fs::set_permissions(&creds, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let s = S3Store::open(&S3Location {
        url: S3Url::parse(&moto.url("repo")).unwrap(),
        settings: S3Settings {
            endpoint: Some(moto.endpoint()),
            region: None,
            path_style: true,
            allow_http: true,
            storage_class: None,
            sse: Sse::Default,
            sse_kms_key_id: None,
            credentials_file: Some(creds),
            timeout: Duration::from_secs(5),
            config: env.path("x.ini"),
        },
    })
    .unwrap();
    assert_eq!(s.put_bytes_if_absent("X", b"one").unwrap(), Placed::Created);
    assert_eq!(s.put_bytes_if_absent("X", b"one").unwrap(), Placed::AlreadyPresent);
    assert!(matches!(
        s.put_bytes_if_absent("X", b"two"),
        Err(PlaceError::Conflict { .. })
    ));
    assert_eq!(moto.get_object("repo/X"), b"one", "never replaced");
    let e = s.stat("X").unwrap().unwrap();
    assert_eq!((e.kind, e.size), (Kind::File, 3));
    assert!(s.stat("nope").unwrap().is_none());
    let mut tail = String::new();
    s.get_from("X", 1).unwrap().read_to_string(&mut tail).unwrap();
    assert_eq!(tail, "ne");
    assert_eq!(s.get("nope").err().unwrap().kind(), std::io::ErrorKind::NotFound);
    s.put_stream("set/data/base/1", &mut |w| w.write_all(b"abc")).unwrap();
    s.put_stream("set/manifest", &mut |w| w.write_all(b"m")).unwrap();
    assert_eq!(s.list_tree("set").unwrap(), ["set/data/base/1", "set/manifest"]);
    let wal = s.scoped("set/wal").unwrap();
    wal.write_mark("42\n").unwrap();
    assert_eq!(wal.read_mark().unwrap().as_deref(), Some("42\n"));
    assert!(moto
        .list("repo/set/wal/")
        .contains(&"repo/set/wal/.pitrkit-system-id".to_string()));
    let names: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
    for n in &names {
        s.put_bytes_if_absent(n, b"x").unwrap();
    }
    assert!(s.delete_many(&names).into_iter().all(|r| r.unwrap()));
    assert!(s.delete("X").unwrap());
    assert!(!s.delete("X").unwrap());
    s.delete_tree("set").unwrap();
    assert_eq!(moto.list("repo/"), Vec::<String>::new());
    s.prove_conditional_create().unwrap();
}

/// moto in IAM mode: a wrong secret is refused with the endpoint and the
/// bucket named, and the secret is printed nowhere; the right one works.
#[test]
fn wrong_credentials_name_endpoint_and_bucket_and_never_the_secret() {
    let env = env("s3-creds");
    let moto = Moto::start_with_iam(&env, "pitrkit-creds");
    let wrong = "Wr0ngSecretThatMustNeverBePrinted1234567";
    let creds = moto.credentials_file(&env, "creds", wrong);
    let ini = archiver_ini(&env, &moto, &creds, None, "");
    let out = archiver(&env, &ini, &["-I"]);
    let all = format!(
        "{}{}",
        text(&out),
        fs::read_to_string(env.path("archiver.log")).unwrap_or_default()
    );
    assert!(!out.status.success(), "{all}");
    assert!(all.contains(&moto.endpoint()) && all.contains("pitrkit-creds"), "{all}");
    assert!(all.contains("refused the credentials"), "{all}");
    assert!(!all.contains(wrong), "the secret was printed: {all}");
    let src = segment_file(&env, "000000010000000000000002", 7_400_000_000_000_000_003);
    let out = archiver(&env, &ini, &["-F", src.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(!text(&out).contains(wrong));
    assert!(!fs::read_to_string(env.path("archiver.log")).unwrap().contains(wrong));

    // The right secret: moto really checks keys.
    moto.credentials_file(&env, "creds", &moto.secret.clone());
    let out = archiver(&env, &ini, &["-I"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = archiver(&env, &ini, &["-F", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
}
