//! pitrtools habits that must keep working with pitrkit: files and command
//! lines as pitrtools users have them.
mod common;

use common::fixtures;
use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// pitrtools' own cmd_standby.ini.sample leaves `logfile:` commented out.
/// pg_ctl then hands its stdout/stderr to the postmaster; read through a
/// pipe (cron, ssh, a wrapper script) pitrkit used to wait for EOF forever.
#[test]
fn start_without_logfile_returns_when_output_is_a_pipe() {
    let env = TestEnv::new("compat_nolog", std::path::Path::new(env!("CARGO_BIN_EXE_pitrkit")));
    let cluster = PgCluster::init(&env, "data", "");
    let major = std::fs::read_to_string(cluster.datadir.join("PG_VERSION")).unwrap();
    let ini = env.write(
        "cmd_standby.ini",
        &format!(
            "[DEFAULT]
pgversion: {major}
master_public_ip: 127.0.0.1
user: postgres
archivedir: {archive}
pgdata: {pgdata}
;logfile: /var/log/postgresql/postgresql.log
",
            major = major.trim(),
            archive = env.mkdir("archive").display(),
            pgdata = cluster.datadir.display(),
        ),
    );
    let mut child = env
        .command(&fixtures::cmd_link(&env, "cmd_standby"))
        .arg("-C")
        .arg(&ini)
        .args(["-A", "start"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes to EOF the way a caller does: EOF comes only when no
    // process holds them any more.
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let (mut o, mut e) = (String::new(), String::new());
        use std::io::Read;
        let _ = out.read_to_string(&mut o);
        let _ = err.read_to_string(&mut e);
        (o, e)
    });
    let start = Instant::now();
    let finished = wait_until(Duration::from_secs(60), || reader.is_finished());
    if !finished {
        let _ = child.kill();
        cluster.stop();
        panic!("cmd_standby -A start without logfile still holds its output open after 60 s");
    }
    let status = child.wait().unwrap();
    let (o, e) = reader.join().unwrap();
    assert!(status.success(), "{status}\nstdout:\n{o}\nstderr:\n{e}");
    assert!(cluster.is_running(), "server not running after -A start");
    assert!(
        cluster.datadir.join("pitrkit-server.log").is_file(),
        "the server's output must go somewhere a DBA finds it"
    );
    assert!(cluster.psql("SELECT 1").contains('1'));
    eprintln!("-A start returned in {:?}", start.elapsed());
    cluster.stop();
}

/// The configuration warnings in a command's stderr.
fn config_warnings(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("configuration warning")).collect()
}

/// `text` with each `from` line (ignoring trailing blanks) replaced by `to`.
fn adapt(text: &str, swaps: &[(&str, String)]) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let swap = swaps.iter().find(|(from, _)| line.trim_end() == *from);
        out += &swap.map_or(line.to_string(), |(_, to)| to.clone());
        out.push('\n');
    }
    for (from, _) in swaps {
        assert!(text.lines().any(|l| l.trim_end() == *from), "no line {from:?}");
    }
    out
}

/// Issue 9: the pitrtools how-to's two files (tests/pitrtools/, as printed,
/// without the page's indentation), with only hosts, ports and paths adapted
/// to this machine, work through the `cmd_*` links: `-I` succeeds on both
/// and names every key pitrkit ignores; an archive call with the same file
/// prints no warning (its stderr is PostgreSQL's log). The standby file has
/// `logfile:` commented out, as in pitrtools 1.3's sample. A third file in
/// ConfigParser style (helper keys, continuation lines, `rem`, legacy
/// names, another section) loads with its warnings.
#[test]
fn pitrtools_howto_files_work_with_warnings() {
    let env = TestEnv::new("compat_howto", std::path::Path::new(env!("CARGO_BIN_EXE_pitrkit")));
    let sshd = Sshd::start(&env);
    let master = PgCluster::init(&env, "master", "listen_addresses = '127.0.0.1'\n");
    master.start();
    let remote = env.mkdir("standby_archive");
    let ssh = format!("ssh: {}", sshd.ssh_command_line());
    let user = format!("user: {}", sshd.user);
    let archiver = env.write(
        "cmd_archiver.ini",
        &adapt(
            include_str!("pitrtools/howto_cmd_archiver.ini"),
            &[
                (
                    "pgdata: /var/lib/postgresql/8.4/main",
                    format!("pgdata: {}", master.datadir.display()),
                ),
                (
                    "r_archivedir: /var/lib/postgresql/archive",
                    format!("r_archivedir: {}", remote.display()),
                ),
                (
                    "l_archivedir: /var/lib/postgresql/archive",
                    format!("l_archivedir: {}", env.path("queue").display()),
                ),
                ("ssh: /usr/bin/ssh", ssh.clone()),
                (
                    "rsync_bin: /usr/bin/rsync",
                    format!("rsync_bin: {}", require_program("rsync").display()),
                ),
                ("slaves: bitarena-clone", "slaves: 127.0.0.1".into()),
                ("user: postgres", user.clone()),
            ],
        ),
    );
    let cmd_archiver = fixtures::cmd_link(&env, "cmd_archiver");
    let init = run_output(env.command(&cmd_archiver).arg("-C").arg(&archiver).arg("-I"));
    let stderr = String::from_utf8_lossy(&init.stderr);
    assert!(init.status.success(), "{}", describe_output(&init));
    let warned = config_warnings(&stderr);
    assert_eq!(warned.len(), 1, "{}", describe_output(&init));
    assert!(
        warned[0].contains("line 27: 'rsync_version' is a pitrtools key pitrkit has no use for"),
        "{}",
        warned[0]
    );

    // archive_command with the same file: archived and shipped, not a word about the configuration.
    let segment = "pg_wal/000000010000000000000001";
    let out = run_output(
        env.command(&cmd_archiver)
            .arg("-C")
            .arg(&archiver)
            .arg("-F")
            .arg(segment),
    );
    assert!(out.status.success(), "{}", describe_output(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("configuration") && !stderr.contains("rsync_version"),
        "{stderr}"
    );
    assert!(
        remote.join("000000010000000000000001").is_file(),
        "{}",
        describe_output(&out)
    );

    let major = std::fs::read_to_string(master.datadir.join("PG_VERSION")).unwrap();
    let standby = env.write(
        "cmd_standby.ini",
        &adapt(
            include_str!("pitrtools/howto_cmd_standby.ini"),
            &[
                ("pgversion: 8.4", format!("pgversion: {}", major.trim())),
                ("ssh: /usr/bin/ssh", ssh),
                (
                    "rsync: /usr/bin/rsync",
                    format!("rsync: {}", require_program("rsync").display()),
                ),
                (
                    "pg_ctl: /usr/lib/postgresql/8.4/bin/pg_ctl",
                    format!("pg_ctl: {}", pg_program("pg_ctl").display()),
                ),
                ("port: 5432", format!("port: {}", master.port)),
                ("master_public_ip: bitarena", "master_public_ip: 127.0.0.1".into()),
                ("user: postgres", user),
                (
                    "archivedir: /var/lib/postgresql/archive",
                    format!("archivedir: {}", remote.display()),
                ),
                (
                    "pgdata: /var/lib/postgresql/8.4/main",
                    format!("pgdata: {}", env.path("standby_data").display()),
                ),
                // pitrtools 1.3's sample ships with it commented out.
                (
                    "logfile: /var/log/postgresql/postgresql-8.4-main.log",
                    ";logfile: /var/log/postgresql/postgresql.log".into(),
                ),
            ],
        ),
    );
    let cmd_standby = fixtures::cmd_link(&env, "cmd_standby");
    let init = run_output(env.command(&cmd_standby).arg("-C").arg(&standby).arg("-I"));
    assert!(init.status.success(), "{}", describe_output(&init));
    let stderr = String::from_utf8_lossy(&init.stderr);
    let warned = config_warnings(&stderr);
    for (line, key) in [
        (6, "numarchives"),
        (41, "pg_standby"),
        (45, "pg_archivecleanup"),
        (48, "r_psql"),
    ] {
        assert!(
            warned
                .iter()
                .any(|w| w.contains(&format!("line {line}: '{key}' is a pitrtools key"))),
            "{key}: {}",
            describe_output(&init)
        );
    }
    assert_eq!(warned.len(), 4, "{}", describe_output(&init));
    assert!(env.path("standby_data").is_dir() && remote.join(".pitrkit-system-id").is_file());

    // ConfigParser's habits beyond the how-to.
    let bindir = pg_program("pg_ctl").parent().unwrap().display().to_string();
    let parser_style = env.write(
        "configparser.ini",
        &format!(
            "[DEFAULT]
rem a pitrtools file of a site that used ConfigParser's features
base = {root}
bindir: {bindir}
pgversion: {major}
pg_ctl: %(bindir)s/pg_ctl
pgdata: %(base)s/standby_data
archivedir: %(base)s/standby_archive
postgresql_conf: %(base)s/etc/postgresql.conf
includepath: %(bindir)s,
    /usr/local/bin
master_public_ip: 127.0.0.1
numarchives: 10
rsync_flags: -avz --timeout=300

[cmd_queue]
debug: on
",
            root = env.root.display(),
            major = major.trim(),
        ),
    );
    let out = run_output(env.command(&cmd_standby).arg("-C").arg(&parser_style));
    assert!(out.status.success(), "{}", describe_output(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warned = config_warnings(&stderr);
    let expect = [
        "line 9: 'postgresql_conf' is read as 'pg_conf'",
        "line 13: 'numarchives' is a pitrtools key",
        "line 14: rsync_flags: '-a (in -avz)' has no effect",
        "line 14: rsync_flags: '-v (in -avz)' has no effect",
        "line 14: rsync_flags: '--timeout=300' is taken as rsync_timeout: 300",
        "line 17: 'debug' in section [cmd_queue] is not read",
    ];
    assert_eq!(warned.len(), expect.len(), "{}", describe_output(&out));
    for (w, e) in warned.iter().zip(expect) {
        assert!(w.contains(e), "{w}\nwanted: {e}");
    }
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Config OK"),
        "{}",
        describe_output(&out)
    );
}
