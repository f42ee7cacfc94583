//! Proves the harness in tests/common works for real: PostgreSQL archiving,
//! base backup + standby, and sshd/ssh/rsync as the test user.
mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::time::Duration;

const SEG: u64 = 16 * 1024 * 1024;

#[test]
fn postgres_archiving_and_standby() {
    let env = TestEnv::new("pg_selftest", Path::new("/bin/true"));
    assert!(env.root.starts_with("/tmp"));
    assert_eq!(env.run_as.is_some(), is_root());
    // The copied "binary under test" runs as the test user.
    assert!(env.pitrkit().status().unwrap().success());
    let whoami = run_ok(env.command(&require_program("id")).arg("-un"));
    assert_eq!(whoami, env.user_name());
    // HOME must point into the test dir (runuser would otherwise reset it).
    let home = run_ok(
        env.command(Path::new("/bin/sh"))
            .args(["-c", "echo $HOME:$LANG:$(pwd)"]),
    );
    assert_eq!(home, format!("{}:C:{}", env.path("home").display(), env.root.display()));

    let arch = env.mkdir("arch");
    let pg = PgCluster::init(
        &env,
        "primary",
        &format!("archive_mode = on\narchive_command = 'cp %p {}/%f'\n", arch.display()),
    );
    pg.start();
    let pid = read_postmaster_pid(&pg.datadir).expect("postmaster.pid");
    assert_eq!(pid.port, pg.port);
    assert_eq!(pid.socket_dir, pg.socket_dir);

    let mut segments = Vec::new();
    for _ in 0..3 {
        segments.push(pg.switch_wal());
    }
    // Each switch must close a new segment (the harness writes data first).
    assert!(
        segments.windows(2).all(|w| w[0] < w[1]),
        "switch_wal segments not increasing: {segments:?}"
    );
    let last = segments.last().unwrap();
    assert!(pg.wait_archived(last, Duration::from_secs(30)), "{last} not archived");
    for seg in &segments {
        let len = fs::metadata(arch.join(seg))
            .unwrap_or_else(|e| panic!("{seg} not in archive: {e}"))
            .len();
        assert_eq!(len, SEG, "{seg} has wrong size");
    }
    let (archived, failed) = pg.archiver_counts();
    assert!(archived >= 3, "archived_count={archived}");
    assert_eq!(failed, 0);

    // A standby from a base backup, via PgCluster::adopt.
    run_ok(
        env.command(&pg_program("pg_basebackup"))
            .arg("-D")
            .arg(env.path("standby"))
            .args(["-h", pg.socket_dir.to_str().unwrap(), "-p", &pg.port.to_string()])
            .args(["-X", "stream", "-R", "--no-sync", "--checkpoint=fast"]),
    );
    let standby = PgCluster::adopt(&env, "standby", "");
    assert_ne!(standby.port, pg.port);
    standby.start();
    assert_eq!(standby.psql("SELECT pg_is_in_recovery()"), "t");
    pg.psql("CREATE TABLE replicated AS SELECT 42 AS answer");
    assert!(
        wait_until(Duration::from_secs(30), || standby
            .try_psql("SELECT answer FROM replicated")
            .as_deref()
            == Ok("42")),
        "standby did not replay"
    );
    standby.stop();
    assert!(!standby.is_running());
    standby.stop(); // stopping a stopped cluster is a no-op
                    // pg is stopped by Drop (immediate), then the directory is removed.
}

#[test]
fn sshd_ssh_and_rsync() {
    let env = TestEnv::new("ssh_selftest", Path::new("/bin/true"));
    let mut sshd = Sshd::start(&env);
    assert_eq!(sshd.user, env.user_name());

    let out = run_output(&mut sshd.ssh("echo hello-from-$USER"));
    assert!(
        out.status.success(),
        "ssh failed\n{}\n--- sshd log ---\n{}",
        describe_output(&out),
        tail(&sshd.log, 30)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("hello-from-{}", env.user_name())
    );
    run_ok(
        env.command(&require_program("ssh"))
            .args(sshd.client_args())
            .arg(sshd.destination())
            .arg("true"),
    );

    // rsync over that ssh, 1 MiB of non-trivial bytes.
    let data: String = (0..1024 * 1024)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    let src = env.write("src/payload.bin", &data);
    let dest = env.mkdir("dest");
    run_ok(
        env.command(&require_program("rsync"))
            .arg("-e")
            .arg(sshd.ssh_command_line())
            .arg(&src)
            .arg(format!("{}:{}/", sshd.destination(), dest.display())),
    );
    assert_eq!(fs::read(dest.join("payload.bin")).unwrap(), data.as_bytes());

    // An established session must die with sshd, or a "stopped" slave keeps receiving.
    let mut session = sshd
        .ssh("sleep 60")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        fs::read_to_string(&sshd.log)
            .unwrap_or_default()
            .contains("Accepted publickey")
    }));
    std::thread::sleep(Duration::from_millis(300));
    sshd.stop();
    assert!(
        wait_until(Duration::from_secs(5), || session.try_wait().unwrap().is_some()),
        "an ssh session survived sshd.stop()"
    );
    let out = run_output(&mut sshd.ssh("true"));
    assert!(!out.status.success(), "ssh still works after stop");

    sshd.restart();
    run_ok(&mut sshd.ssh("true"));
}

#[test]
#[should_panic(expected = "required program `pitrkit-no-such-program` not found in PATH")]
fn missing_program_panics_with_hint() {
    let _ = require_program("pitrkit-no-such-program");
}

#[test]
fn panicking_test_leaves_nothing_behind() {
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let env = TestEnv::new("panic_selftest", Path::new("/bin/true"));
        let pg = PgCluster::init(&env, "pg", "");
        pg.start();
        let sshd = Sshd::start(&env);
        let postmaster = read_postmaster_pid(&pg.datadir).unwrap().pid;
        seen = Some((env.root.clone(), postmaster, sshd.pid().unwrap()));
        // Drop order here (env first) must not matter: the dir outlives the servers.
        drop(env);
        panic!("deliberate panic with a running cluster and sshd");
    }));
    assert!(result.is_err());
    let (root, postmaster, sshd) = seen.expect("setup finished");
    assert!(!process_alive(postmaster), "postmaster {postmaster} survived the panic");
    assert!(!process_alive(sshd), "sshd {sshd} survived the panic");
    assert!(!root.exists(), "{} survived the panic", root.display());
}
