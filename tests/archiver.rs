//! The archiver against a real PostgreSQL (archive_command = cmd_archiver),
//! a real sshd on a loopback port and real rsync.
mod common;

use common::fixtures;
use common::*;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// A master cluster archiving through the `cmd_archiver` link to one slave
/// (the private sshd) and, optionally, a local archive directory.
struct Setup {
    env: TestEnv,
    sshd: Sshd,
    ini: PathBuf,
    /// The slave's r_archivedir.
    remote: PathBuf,
    /// l_archivedir/<slave>.
    queue: PathBuf,
    local: PathBuf,
    hooks: PathBuf,
}

const SLAVE: &str = "127.0.0.1";

impl Setup {
    /// `extra` is appended to a config that uses only pitrtools 1.3 keys.
    fn new(name: &str, extra: &str) -> Setup {
        let env = TestEnv::new(name, Path::new(env!("CARGO_BIN_EXE_pitrkit")));
        let sshd = Sshd::start(&env);
        let remote = env.mkdir("slave_archive");
        let (hook, hooks) = fixtures::recording_hook(&env, "hooks");
        let ini = fixtures::archiver_ini(&env, &sshd, &remote, &hook, extra);
        let queue = env.path("queue").join(SLAVE);
        let local = env.path("local_archive");
        Setup {
            env,
            sshd,
            ini,
            remote,
            queue,
            local,
            hooks,
        }
    }

    fn archiver(&self, args: &[&str]) -> std::process::Output {
        let mut c = self.env.command(&fixtures::cmd_link(&self.env, "cmd_archiver"));
        c.arg("-C").arg(&self.ini).args(args);
        run_output(&mut c)
    }

    fn init(&self) {
        let out = self.archiver(&["-I"]);
        assert!(out.status.success(), "-I failed:\n{}", describe_output(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("Archiver is ready"));
    }

    /// Rewrites the configuration file: `f` gets the current text.
    fn edit_ini(&self, f: impl FnOnce(String) -> String) {
        let text = fs::read_to_string(&self.ini).unwrap();
        self.env.write("cmd_archiver.ini", &f(text));
    }

    /// An executable script in the test directory.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.env.write(name, &format!("#!/bin/sh\n{body}"));
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        p
    }

    fn master(&self, extra_conf: &str) -> PgCluster {
        fixtures::archiving_master(&self.env, &self.ini, extra_conf)
    }

    fn hook_lines(&self) -> Vec<String> {
        fixtures::lines(&self.hooks)
    }
    fn queued(&self) -> Vec<String> {
        queued_wal(&self.queue)
    }
}

/// The WAL files waiting in a queue directory, sorted. A plain file's `.sum`
/// sidecar travels with it (checked where it matters) and is not listed.
fn queued_wal(qdir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(qdir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && !n.ends_with(".sum"))
        .collect();
    v.sort();
    v
}

fn assert_same_bytes(a: &Path, b: &Path) {
    let (x, y) = (
        fs::read(a).unwrap_or_else(|e| panic!("{}: {e}", a.display())),
        fs::read(b).unwrap_or_else(|e| panic!("{}: {e}", b.display())),
    );
    assert!(
        x == y,
        "{} and {} differ ({} vs {} bytes)",
        a.display(),
        b.display(),
        x.len(),
        y.len()
    );
}

#[test]
fn every_segment_arrives_byte_identical_at_the_slave() {
    let s = Setup::new(
        "arch_e2e",
        &format!("local_archivedirs: {}", "/nonexistent-replaced-below"),
    );
    // Rewrite with a real local archive too: both destinations must get every file.
    let text = fs::read_to_string(&s.ini)
        .unwrap()
        .replace("/nonexistent-replaced-below", &s.local.display().to_string());
    s.env.write("cmd_archiver.ini", &text);
    s.init();
    assert!(s.local.is_dir(), "-I creates local_archivedirs");
    let pg = s.master("");
    let mut segs = Vec::new();
    for _ in 0..5 {
        segs.push(pg.switch_wal());
    }
    let last = segs.last().unwrap();
    pg.assert_archived(last, WAIT, "");
    for seg in &segs {
        let src = pg.datadir.join("pg_wal").join(seg);
        assert_same_bytes(&src, &s.remote.join(seg));
        assert_same_bytes(&src, &s.local.join(seg));
        // Every plain copy has its checksum sidecar, the slave's included.
        let sum = pitrkit::integrity::Sum::of_file(&src).unwrap().render();
        for dir in [&s.remote, &s.local] {
            let sidecar = dir.join(pitrkit::integrity::sum_name(seg));
            assert_eq!(
                fs::read_to_string(&sidecar).unwrap_or_else(|e| panic!("{}: {e}", sidecar.display())),
                sum
            );
        }
    }
    assert!(s.queued().is_empty(), "queue not drained: {:?}", s.queued());
    let spool = s.env.path("queue/.spool");
    assert_eq!(
        fs::read_dir(&spool)
            .map(|d| d.flatten().filter(|e| e.file_name() != ".lock").count())
            .unwrap_or(0),
        0,
        "staging copies left"
    );
    assert_eq!(pg.archiver_counts().1, 0, "no archive call may fail");
    // Durable copies keep the archive private.
    let mode = fs::metadata(s.remote.join(&segs[0])).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077, 0);
    // No temporary files left on either side: pitrkit's are `.NAME.pitrkit-PID.tmp`,
    // rsync's `.NAME.XXXXXX`; the only dot-file allowed is the system id.
    for dir in [&s.remote, &s.local] {
        let stray: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') && n != ".pitrkit-system-id")
            .collect();
        assert!(stray.is_empty(), "temporary files left in {}: {stray:?}", dir.display());
    }
    // Connection reuse: one login serves -I and every shipment (without it:
    // an rsync and a remote sync per segment, 10+ logins here).
    let logins = fs::read_to_string(&s.sshd.log)
        .unwrap()
        .matches("Accepted publickey")
        .count();
    assert!(
        logins <= 2,
        "{logins} ssh logins for 5 segments: connections are not reused"
    );
    // A healthy run raises no alarm.
    assert!(
        s.hook_lines().is_empty(),
        "unexpected notifications: {:?}",
        s.hook_lines()
    );
}

#[test]
fn unreachable_slave_queues_warns_and_drains_on_flush() {
    let mut s = Setup::new("arch_queue", "queue_critical_depth: 2");
    s.init();
    let pg = s.master("");
    let first = pg.switch_wal();
    pg.assert_archived(&first, WAIT, "");
    s.sshd.stop();

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(pg.switch_wal());
    }
    let last = held.last().unwrap();
    // Spooled durably: PostgreSQL hears success although the slave is down.
    pg.assert_archived(last, WAIT, "archive calls must succeed once spooled");
    assert_eq!(pg.archiver_counts().1, 0);
    assert_eq!(s.queued(), held, "unshipped segments must stay queued");
    for h in &held {
        assert!(!s.remote.join(h).exists());
    }
    let hooks = s.hook_lines();
    assert_eq!(
        hooks.iter().filter(|l| l.starts_with("warning")).count(),
        1,
        "one warning per outage: {hooks:?}"
    );
    assert!(
        hooks.iter().any(|l| l.starts_with("warning") && l.contains(SLAVE)),
        "{hooks:?}"
    );
    assert_eq!(
        hooks.iter().filter(|l| l.starts_with("critical")).count(),
        1,
        "queue over depth 2 is critical: {hooks:?}"
    );
    let status = s.archiver(&["--status"]);
    assert_says(&status, "3 queued, 0 conflict(s), FAILING");

    // While down, --flush reports failure and keeps everything.
    let out = s.archiver(&["--flush"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert_eq!(s.queued(), held);

    s.sshd.restart();
    let out = s.archiver(&["--flush"]);
    assert!(out.status.success(), "flush after recovery:\n{}", describe_output(&out));
    assert!(s.queued().is_empty());
    for h in &held {
        assert_same_bytes(&pg.datadir.join("pg_wal").join(h), &s.remote.join(h));
    }
    let hooks = s.hook_lines();
    assert!(
        hooks.iter().any(|l| l.starts_with("ok") && l.contains("recovered")),
        "recovery must be announced: {hooks:?}"
    );
}

#[test]
fn queued_files_ship_on_the_next_archive_call() {
    let mut s = Setup::new("arch_retry", "");
    s.init();
    let pg = s.master("");
    s.sshd.stop();
    let held = pg.switch_wal();
    pg.assert_archived(&held, WAIT, "");
    assert_eq!(s.queued(), vec![held.clone()]);
    s.sshd.restart();
    let next = pg.switch_wal();
    pg.assert_archived(&next, WAIT, "");
    assert!(wait_until(WAIT, || s.remote.join(&next).exists()));
    assert!(s.remote.join(&held).exists(), "the backlog ships with the next call");
    assert!(s.queued().is_empty());
}

#[test]
fn offline_state_fails_the_call_and_keeps_the_wal() {
    let s = Setup::new("arch_offline", "");
    s.init();
    let online = fs::read_to_string(&s.ini).unwrap();
    s.env
        .write("cmd_archiver.ini", &online.replace("state: online", "state: offline"));
    let pg = s.master("");
    let seg = pg.switch_wal();
    assert!(
        wait_until(WAIT, || pg.archiver_counts().1 > 0),
        "archive calls must fail while offline"
    );
    assert!(
        pg.datadir
            .join("pg_wal/archive_status")
            .join(format!("{seg}.ready"))
            .exists(),
        "PostgreSQL must keep {seg} for a retry"
    );
    assert!(!s.remote.join(&seg).exists());
    assert!(
        s.hook_lines()
            .iter()
            .any(|l| l.starts_with("warning") && l.contains("state: offline")),
        "{:?}",
        s.hook_lines()
    );
    assert!(
        fs::read_to_string(&pg.log)
            .unwrap()
            .contains("archiving is switched off"),
        "the reason must be in the server log"
    );

    s.env.write("cmd_archiver.ini", &online);
    pg.assert_archived(&seg, Duration::from_secs(120), "it must be archived once back online");
    assert_same_bytes(&pg.datadir.join("pg_wal").join(&seg), &s.remote.join(&seg));
}

#[test]
fn sync_mode_succeeds_only_when_the_slave_has_the_file() {
    let mut s = Setup::new("arch_sync", "ship_mode: sync");
    s.init();
    let pg = s.master("");
    let ok = pg.switch_wal();
    pg.assert_archived(&ok, WAIT, "");
    assert!(s.remote.join(&ok).exists(), "sync mode: archived means on the slave");
    s.sshd.stop();
    let seg = pg.switch_wal();
    assert!(
        wait_until(WAIT, || pg.archiver_counts().1 > 0),
        "sync mode must fail while the slave is down"
    );
    assert!(pg
        .datadir
        .join("pg_wal/archive_status")
        .join(format!("{seg}.ready"))
        .exists());
    s.sshd.restart();
    pg.assert_archived(&seg, Duration::from_secs(120), "PostgreSQL's retry must succeed");
    assert_same_bytes(&pg.datadir.join("pg_wal").join(&seg), &s.remote.join(&seg));
    assert!(
        !s.env.path("queue/.delivered").join(&seg).exists(),
        "ledger entry removed once delivered everywhere"
    );
}

/// A real segment to archive by hand, outside PostgreSQL's control.
fn real_segment(s: &Setup) -> (PgCluster, String, PathBuf) {
    let pg = s.master("archive_mode = off\n");
    let seg = pg.switch_wal();
    let path = pg.datadir.join("pg_wal").join(&seg);
    (pg, seg, path)
}

#[test]
fn same_name_different_bytes_is_never_overwritten() {
    let s = Setup::new("arch_conflict", "local_archivedirs: LOCAL");
    s.env.write(
        "cmd_archiver.ini",
        &fs::read_to_string(&s.ini)
            .unwrap()
            .replace("LOCAL", &s.local.display().to_string()),
    );
    s.init();
    let (_pg, seg, path) = real_segment(&s);
    let wal = path.display().to_string();

    // Identical re-archive (PostgreSQL does this after a crash): success.
    assert!(s.archiver(&["-F", &wal]).status.success());
    let out = s.archiver(&["-F", &wal]);
    assert!(
        out.status.success(),
        "identical re-archive must succeed:\n{}",
        describe_output(&out)
    );
    assert_same_bytes(&path, &s.remote.join(&seg));

    // Local archive holds a different file of that name: fail, keep it, alert.
    let impostor = vec![7u8; 16 << 20];
    fs::write(s.local.join(&seg), &impostor).unwrap();
    let out = s.archiver(&["-F", &wal]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert_says(&out, "refusing to overwrite");
    assert_eq!(fs::read(s.local.join(&seg)).unwrap(), impostor);
    assert!(
        s.hook_lines()
            .iter()
            .any(|l| l.starts_with("critical") && l.contains(&seg)),
        "{:?}",
        s.hook_lines()
    );

    // The slave holds a different file: never overwritten, queued copy moved aside, alert.
    fs::write(s.local.join(&seg), fs::read(&path).unwrap()).unwrap();
    fs::write(s.remote.join(&seg), &impostor).unwrap();
    let out = s.archiver(&["-F", &wal]);
    assert!(
        out.status.success(),
        "async mode: spooled is success\n{}",
        describe_output(&out)
    );
    assert_eq!(
        fs::read(s.remote.join(&seg)).unwrap(),
        impostor,
        "remote file overwritten!"
    );
    assert!(s.queue.join(".conflicts").join(&seg).exists());
    let critical: Vec<_> = s
        .hook_lines()
        .into_iter()
        .filter(|l| l.starts_with("critical"))
        .collect();
    assert_eq!(critical.len(), 2, "{critical:?}");
    assert!(critical[1].contains("did not overwrite"), "{critical:?}");
}

#[test]
fn refuses_files_that_are_not_wal_or_not_what_their_name_says() {
    let s = Setup::new("arch_names", "");
    s.init();
    let (_pg, seg, path) = real_segment(&s);

    let junk = s.env.write("postmaster.opts", "x");
    let out = s.archiver(&["-F", &junk.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert_says(&out, "not a WAL file name");

    // A segment copied under another segment's name (wrong page address).
    let next = format!("{}{:08X}", &seg[..16], u32::from_str_radix(&seg[16..], 16).unwrap() + 1);
    let renamed = s.env.path(&next);
    fs::copy(&path, &renamed).unwrap();
    s.env.chown(&renamed);
    let out = s.archiver(&["-F", &renamed.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert_says(&out, "does not belong");

    // Truncated segment.
    let short = s.env.path(&format!("x/{seg}"));
    fs::create_dir_all(short.parent().unwrap()).unwrap();
    fs::write(&short, &fs::read(&path).unwrap()[..8192]).unwrap();
    s.env.chown(&s.env.path("x"));
    let out = s.archiver(&["-F", &short.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert_says(&out, "8192 bytes");

    // History files are archived as they are.
    let hist = s
        .env
        .write("00000002.history", "1\t0/3000000\tno recovery target specified\n");
    let out = s.archiver(&["-F", &hist.display().to_string()]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(s.remote.join("00000002.history").exists());
    assert!(s.queued().is_empty());
}

#[test]
fn init_reports_an_unusable_slave_and_refuses_a_non_empty_queue() {
    let mut s = Setup::new("arch_init", "");
    fs::remove_dir(&s.remote).unwrap();
    let out = s.archiver(&["-I"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("the directory does not exist"), "{stdout}");
    assert!(stdout.contains("mkdir -p"), "{stdout}");

    s.env.mkdir("slave_archive");
    s.init();
    s.env.write(&format!("queue/{SLAVE}/000000010000000000000001"), "x");
    let out = s.archiver(&["-I"]);
    assert_eq!(out.status.code(), Some(1));
    assert_says(&out, "already holds 1 queued file");

    s.sshd.stop();
    fs::remove_file(s.env.path(&format!("queue/{SLAVE}/000000010000000000000001"))).unwrap();
    let out = s.archiver(&["-I"]);
    assert_eq!(out.status.code(), Some(1));
    assert_says(&out, "check that sshd runs on 127.0.0.1");
}

#[test]
fn bad_configurations_give_actionable_errors() {
    let env = TestEnv::new("arch_badcfg", Path::new(env!("CARGO_BIN_EXE_pitrkit")));
    let cases: &[(&str, &str)] = &[
        (
            "[DEFAULT]\nstate: online\nlocal_archivedirs: /a\n\n\n\n\n\n\n\n\nslave: x\n",
            "line 12: unknown key 'slave' — did you mean 'slaves'?",
        ),
        (
            "ssh_timeout: 10s\nlocal_archivedirs: /a\n",
            "line 1: ssh_timeout must be a whole number of seconds, got '10s'",
        ),
        (
            "slaves: good, bad;host\nl_archivedir: /q\nr_archivedir: /r\n",
            "shell would interpret",
        ),
        (
            "slaves: -oProxyCommand=touch\nl_archivedir: /q\nr_archivedir: /r\n",
            "read it as an option",
        ),
        ("slaves: a\nl_archivedir: /q\n", "'r_archivedir' is not"),
        ("state: online\n", "no destination configured"),
        ("local_archivedirs: archive\n", "is not an absolute path"),
        ("[archiver]\nstate: online\n", "under [DEFAULT]"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let ini = env.write(&format!("bad{i}.ini"), text);
        let out = run_output(env.pitrkit().args(["archiver", "-C"]).arg(&ini));
        assert_eq!(out.status.code(), Some(2), "case {i}: {}", describe_output(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(expected),
            "case {i}: expected {expected:?} in:\n{stderr}"
        );
        assert!(
            stderr.contains(&ini.display().to_string()),
            "case {i}: the file must be named:\n{stderr}"
        );
    }
    let ok = env.write("ok.ini", "local_archivedirs: /tmp\n");
    let out = run_output(env.pitrkit().args(["archiver", "-C"]).arg(&ok));
    assert_says(&out, "Config OK");
    let missing = run_output(env.pitrkit().args(["archiver", "-C", "/nonexistent.ini"]));
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read configuration file"));
}

#[test]
fn refuses_to_run_as_root() {
    if !is_root() {
        // Covered where the suite runs as root (CI); a non-root user cannot become root here.
        return;
    }
    let env = TestEnv::new("arch_root", Path::new(env!("CARGO_BIN_EXE_pitrkit")));
    let ini = env.write("ok.ini", "local_archivedirs: /tmp\n");
    let out = run_output(std::process::Command::new(&env.bin).args(["archiver", "-C"]).arg(&ini));
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert_says(&out, "must not run as root");
}

#[test]
fn sync_mode_never_acknowledges_a_file_the_slave_has_differently() {
    let s = Setup::new("arch_sync_conflict", "ship_mode: sync");
    s.init();
    let (_pg, seg, path) = real_segment(&s);
    let wal = path.display().to_string();
    let impostor = vec![9u8; 16 << 20];
    fs::write(s.remote.join(&seg), &impostor).unwrap();
    for attempt in 1..=2 {
        // PostgreSQL retries a failed call: it must keep failing.
        let out = s.archiver(&["-F", &wal]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "attempt {attempt}: {}",
            describe_output(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("is not on every slave yet") && stderr.contains(&format!("already has a different {seg}")),
            "attempt {attempt}: {stderr}"
        );
        assert_eq!(
            fs::read(s.remote.join(&seg)).unwrap(),
            impostor,
            "remote file overwritten!"
        );
        assert!(s.queue.join(".conflicts").join(&seg).exists());
    }
    assert!(
        !s.env.path("queue/.delivered").join(&seg).exists()
            || !fs::read_to_string(s.env.path("queue/.delivered").join(&seg))
                .unwrap()
                .contains(SLAVE),
        "the slave must not be recorded as having {seg}"
    );
}

#[test]
fn rsync_saying_nothing_never_empties_the_queue() {
    let s = Setup::new("arch_silent", "");
    s.init();
    let (_pg, seg, path) = real_segment(&s);
    let rsync = require_program("rsync");
    // An rsync that skips every file without a word (what --existing, -n or a
    // filter in rsync_flags used to do).
    let silent = s.script("silent-rsync", &format!("exec {} --existing \"$@\"\n", rsync.display()));
    s.edit_ini(|t| {
        t.replace(
            &format!("rsync_bin: {}", rsync.display()),
            &format!("rsync_bin: {}", silent.display()),
        )
    });
    let out = s.archiver(&["-F", &path.display().to_string()]);
    assert!(
        out.status.success(),
        "async: queued is archived\n{}",
        describe_output(&out)
    );
    assert_eq!(s.queued(), vec![seg.clone()], "{}", describe_output(&out));
    assert!(!s.remote.join(&seg).exists());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("rsync reported nothing about {seg}")),
        "{stderr}"
    );
    assert!(
        s.hook_lines()
            .iter()
            .any(|l| l.starts_with("warning") && l.contains("not confirmed on the slave")),
        "{:?}",
        s.hook_lines()
    );

    // With a working rsync the file ships.
    s.edit_ini(|t| {
        t.replace(
            &format!("rsync_bin: {}", silent.display()),
            &format!("rsync_bin: {}", rsync.display()),
        )
    });
    let out = s.archiver(&["--flush"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(s.queued().is_empty());
    assert_same_bytes(&path, &s.remote.join(&seg));
}

#[test]
fn remote_sync_covers_every_delivered_file_and_the_directory() {
    let s = Setup::new("arch_rsync_sync", "");
    s.init();
    let (pg, seg, path) = real_segment(&s);
    // The slave already has an identical copy (say, from before a master
    // crash): delivered, but only after it was made durable there too.
    fs::copy(&path, s.remote.join(&seg)).unwrap();
    s.env.chown(&s.remote.join(&seg));
    let out = s.archiver(&["-F", &path.display().to_string()]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(s.queued().is_empty(), "identical on the slave is delivered");
    let r = s.remote.display().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("sync -- {r}/{seg} {r}/{seg}.sum {r} && ")),
        "{stderr}"
    );
    assert!(!stderr.contains("--fsync"), "needs rsync 3.2.4+ on both ends: {stderr}");

    // A newly sent file is synced the same way.
    let next = pg.switch_wal();
    let out = s.archiver(&["-F", &pg.datadir.join("pg_wal").join(&next).display().to_string()]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("sync -- {r}/{next} {r}/{next}.sum {r} && ")));
    assert!(s.queued().is_empty());
}

#[test]
fn a_hung_slave_command_is_killed_after_the_time_limit() {
    let s = Setup::new("arch_hung", "rsync_timeout: 2\nssh_timeout: 3");
    s.init();
    let (_pg, seg, path) = real_segment(&s);
    let pidfile = s.env.path("hung.pid");
    // ssh that hangs on the remote sync, like a standby with a stuck disk.
    let ssh = require_program("ssh");
    let hung = s.script(
        "hung-ssh",
        &format!(
            "for a; do case \"$a\" in \"sync -- \"*) echo $$ > {}; exec sleep 600;; esac; done\nexec {} \"$@\"\n",
            pidfile.display(),
            ssh.display()
        ),
    );
    s.edit_ini(|t| {
        t.replacen(
            &format!("ssh: {}", ssh.display()),
            &format!("ssh: {}", hung.display()),
            1,
        )
    });
    let started = std::time::Instant::now();
    let out = s.archiver(&["-F", &path.display().to_string()]);
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "async: queued is archived\n{}",
        describe_output(&out)
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did not finish within 5s"), "{stderr}");
    assert_eq!(s.queued(), vec![seg], "unsynced files stay queued");
    let pid = fs::read_to_string(&pidfile).unwrap().trim().to_string();
    assert!(
        wait_until(Duration::from_secs(5), || !process_alive(pid.parse().unwrap())),
        "the hung remote command (pid {pid}) was not killed"
    );
}

#[test]
fn a_directory_init_never_prepared_is_refused() {
    let s = Setup::new("arch_noinit", "local_archivedirs: LOCAL");
    s.edit_ini(|t| t.replace("LOCAL", &s.local.display().to_string()));
    // What an unmounted NFS share looks like: an empty directory.
    s.env.mkdir("local_archive");
    s.env.mkdir(&format!("queue/{SLAVE}"));
    let (_pg, _seg, path) = real_segment(&s);
    let out = s.archiver(&["-F", &path.display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let expected = format!(
        "{} is not initialized for pitrkit (no .pitrkit-system-id): run `pitrkit archiver -C {} -I`, and check that the share is mounted",
        s.local.display(),
        s.ini.display()
    );
    assert_says(&out, &expected);
    assert_eq!(fs::read_dir(&s.local).unwrap().count(), 0, "nothing written");
    assert!(s.queued().is_empty());
}

#[test]
fn init_records_the_clusters_system_id() {
    let s = Setup::new("arch_sysid", "local_archivedirs: LOCAL");
    s.edit_ini(|t| t.replace("LOCAL", &s.local.display().to_string()));
    let (pg, _seg, path) = real_segment(&s);
    s.init();
    let controldata = run_ok(s.env.command(&pg_program("pg_controldata")).arg(&pg.datadir));
    let id = controldata
        .lines()
        .find_map(|l| l.strip_prefix("Database system identifier:"))
        .expect("pg_controldata prints the system identifier")
        .trim()
        .to_string();
    for dir in [s.local.clone(), s.env.path("queue")] {
        let recorded = fs::read_to_string(dir.join(".pitrkit-system-id")).unwrap();
        assert_eq!(recorded.trim(), id, "{}", dir.display());
    }
    let out = s.archiver(&["-F", &path.display().to_string()]);
    assert!(out.status.success(), "{}", describe_output(&out));
}

#[test]
fn compressed_once_per_codec_restorable_and_judged_by_content() {
    let s = Setup::new(
        "arch_compress",
        "local_archivedirs: LOCAL\ncompression: zstd\nslave_compression: lz4",
    );
    s.env.write(
        "cmd_archiver.ini",
        &fs::read_to_string(&s.ini)
            .unwrap()
            .replace("LOCAL", &s.local.display().to_string()),
    );
    s.init();
    let pg = s.master("");
    let mut segs = Vec::new();
    for _ in 0..3 {
        segs.push(pg.switch_wal());
    }
    pg.assert_archived(segs.last().unwrap(), WAIT, "");
    for seg in &segs {
        assert!(s.local.join(format!("{seg}.zst")).exists() && !s.local.join(seg).exists());
        assert!(s.remote.join(format!("{seg}.lz4")).exists() && !s.remote.join(seg).exists());
        assert!(fs::metadata(s.local.join(format!("{seg}.zst"))).unwrap().len() < 16 << 20);
    }
    // pitrkit restore brings both back byte for byte.
    for (dir, codec) in [(&s.local, "zst"), (&s.remote, "lz4")] {
        let ini = s.env.write(
            &format!("restore-{codec}.ini"),
            &format!("archivedir: {}\n", dir.display()),
        );
        for seg in &segs {
            let dest = s.env.path(&format!("restored-{codec}-{seg}"));
            let out = run_output(s.env.pitrkit().args(["restore", "-C"]).arg(&ini).arg(seg).arg(&dest));
            assert!(out.status.success(), "{}", describe_output(&out));
            assert_same_bytes(&pg.datadir.join("pg_wal").join(seg), &dest);
        }
    }
    // Re-archiving under another codec: recognised by content, no second copy.
    let text = fs::read_to_string(&s.ini)
        .unwrap()
        .replace("compression: zstd", "compression: gzip");
    s.env.write("cmd_archiver.ini", &text);
    let wal = pg.datadir.join("pg_wal").join(&segs[0]).display().to_string();
    let out = s.archiver(&["-F", &wal]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(
        !s.local.join(format!("{}.gz", segs[0])).exists(),
        "a second copy under another codec"
    );
    // Different content under the compressed name is a conflict, never replaced.
    let other = pg.datadir.join("pg_wal").join(&segs[1]);
    let mut packed = Vec::new();
    pitrkit::compress::Codec::Zstd
        .compress(fs::File::open(&other).unwrap(), &mut packed, None)
        .unwrap();
    fs::write(s.local.join(format!("{}.zst", segs[0])), &packed).unwrap();
    let out = s.archiver(&["-F", &wal]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to overwrite"), "{}", describe_output(&out));
    // An intact compressed copy of another segment: sizes compared like with
    // like (16 MiB decompressed each), never called a truncated leftover.
    assert!(
        stderr.contains("(16777216 bytes once decompressed; the file being archived has 16777216 bytes)")
            && stderr.contains("Two clusters may share this archive")
            && !stderr.contains("truncated"),
        "{}",
        describe_output(&out)
    );
    assert_eq!(fs::read(s.local.join(format!("{}.zst", segs[0]))).unwrap(), packed);
}

#[test]
fn a_backlog_ships_in_one_batch_and_later_calls_return_at_once() {
    let s = Setup::new("arch_lookahead", "lookahead: 8");
    s.init();
    let online = fs::read_to_string(&s.ini).unwrap();
    // Build a backlog: archiving is off while four segments fill up.
    s.env
        .write("cmd_archiver.ini", &online.replace("state: online", "state: offline"));
    let pg = s.master("");
    let mut segs = Vec::new();
    for _ in 0..4 {
        segs.push(pg.switch_wal());
    }
    assert!(wait_until(WAIT, || pg.archiver_counts().1 > 0));
    let sessions_before = fs::read_to_string(&s.sshd.log)
        .unwrap()
        .matches("Starting session")
        .count();
    s.env.write("cmd_archiver.ini", &online);
    let last = segs.last().unwrap();
    pg.assert_archived(last, Duration::from_secs(120), "");
    for seg in &segs {
        assert_same_bytes(&pg.datadir.join("pg_wal").join(seg), &s.remote.join(seg));
    }
    let log = fs::read_to_string(&pg.log).unwrap();
    assert!(
        log.contains("more ready file(s) by look-ahead"),
        "no look-ahead in:\n{}",
        tail(&pg.log, 40)
    );
    let quick = log.matches("already done by an earlier call's look-ahead").count();
    assert!(
        quick >= 2,
        "later calls should find their files archived ({quick}):\n{}",
        tail(&pg.log, 40)
    );
    // One rsync and one remote sync for the batch, not two per segment.
    let sessions = fs::read_to_string(&s.sshd.log)
        .unwrap()
        .matches("Starting session")
        .count()
        - sessions_before;
    assert!(
        sessions < 2 * segs.len(),
        "{sessions} ssh sessions for {} segments",
        segs.len()
    );
    assert!(
        !s.env.path("queue/.done").read_dir().unwrap().any(|e| e.is_ok()),
        "markers are consumed"
    );
}

/// Two slaves through one ssh config file: `good` reaches the test sshd,
/// `dead` a closed port until `revive` points it at the sshd too.
struct TwoSlaves {
    s: Setup,
    ssh_config: PathBuf,
}

impl TwoSlaves {
    fn new(name: &str, extra: &str) -> TwoSlaves {
        let s = Setup::new(name, extra);
        let ssh_config = s.env.path("ssh_config");
        let t = TwoSlaves { s, ssh_config };
        t.write_ssh_config(free_port());
        let ini = fs::read_to_string(&t.s.ini).unwrap();
        let ini: String = ini
            .lines()
            .map(|l| {
                if l.starts_with("ssh:") {
                    format!(
                        "ssh: {} -F {}",
                        require_program("ssh").display(),
                        t.ssh_config.display()
                    )
                } else if l.starts_with("slaves:") {
                    "slaves: good, dead".to_string()
                } else {
                    l.to_string()
                }
            })
            .map(|l| l + "\n")
            .collect();
        t.s.env.write("cmd_archiver.ini", &ini);
        t
    }

    fn write_ssh_config(&self, dead_port: u16) {
        let sshd = &self.s.sshd;
        let common = format!(
            "  HostName 127.0.0.1\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking no\n",
            sshd.identity.display(),
            sshd.known_hosts.display()
        );
        self.s.env.write(
            "ssh_config",
            &format!(
                "Host good\n  Port {}\n{common}Host dead\n  Port {dead_port}\n{common}",
                sshd.port
            ),
        );
    }

    fn queue(&self, slave: &str) -> Vec<String> {
        queued_wal(&self.s.env.path("queue").join(slave))
    }
}

#[test]
fn one_dead_slave_never_blocks_the_others() {
    let t = TwoSlaves::new("arch_two", "ssh_control_persist: 0\nmax_queue_workers: 2");
    let out = t.s.archiver(&["-I"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "-I must report the dead slave: {}",
        describe_output(&out)
    );
    let pg = t.s.master("");
    let mut segs = Vec::new();
    for _ in 0..3 {
        segs.push(pg.switch_wal());
    }
    pg.assert_archived(segs.last().unwrap(), WAIT, "");
    assert_eq!(pg.archiver_counts().1, 0);
    for seg in &segs {
        assert_same_bytes(&pg.datadir.join("pg_wal").join(seg), &t.s.remote.join(seg));
    }
    assert!(t.queue("good").is_empty());
    assert_eq!(t.queue("dead"), segs, "the dead slave's files wait in its own queue");
    for seg in &segs {
        let sum = t.s.env.path("queue/dead").join(format!("{seg}.sum"));
        assert!(sum.is_file(), "each with its checksum sidecar: {}", sum.display());
    }
    let hooks = t.s.hook_lines();
    assert!(
        hooks
            .iter()
            .any(|l| l.starts_with("warning") && l.contains("slave dead")),
        "{hooks:?}"
    );
    assert!(!hooks.iter().any(|l| l.contains("slave good")), "{hooks:?}");
}

#[test]
fn sync_mode_retries_only_the_slaves_still_missing_a_file() {
    let t = TwoSlaves::new("arch_ledger", "ssh_control_persist: 0\nship_mode: sync\nlookahead: 0");
    let _ = t.s.archiver(&["-I"]);
    let pg = t.s.master("");
    let seg = pg.switch_wal();
    assert!(
        wait_until(WAIT, || pg.archiver_counts().1 > 0),
        "sync mode must fail while 'dead' is down"
    );
    assert!(
        t.s.remote.join(&seg).exists(),
        "'good' received it in the first attempt"
    );
    let ledger = fs::read_to_string(t.s.env.path("queue/.delivered").join(&seg)).unwrap();
    assert_eq!(ledger.trim(), "good 16777216", "the slave and the size it got");
    let log_before = fs::read_to_string(&pg.log).unwrap().len();
    t.write_ssh_config(t.s.sshd.port);
    pg.assert_archived(&seg, Duration::from_secs(120), "");
    let retry_log = fs::read_to_string(&pg.log).unwrap()[log_before..].to_string();
    assert!(
        retry_log.contains(&format!("spooling {seg} for 1 slave(s)")),
        "the retry must only queue for 'dead':\n{retry_log}"
    );
    assert!(!t.s.env.path("queue/.delivered").join(&seg).exists());
    assert!(t.queue("good").is_empty() && t.queue("dead").is_empty());
}

#[test]
fn segment_size_is_read_from_the_wal_not_assumed() {
    let s = Setup::new("arch_segsize", "");
    s.init();
    let pg = PgCluster::init_with_args(
        &s.env,
        "master",
        &format!(
            "archive_mode = on\narchive_command = '{} -C {} -F %p'\nwal_keep_size = '64MB'\n",
            fixtures::cmd_link(&s.env, "cmd_archiver").display(),
            s.ini.display()
        ),
        &["--wal-segsize=1"],
    );
    pg.start();
    let seg = pg.switch_wal();
    pg.assert_archived(&seg, WAIT, "");
    assert_eq!(fs::metadata(s.remote.join(&seg)).unwrap().len(), 1 << 20);
    assert_same_bytes(&pg.datadir.join("pg_wal").join(&seg), &s.remote.join(&seg));
}

fn critical_lines(s: &Setup) -> Vec<String> {
    s.hook_lines()
        .into_iter()
        .filter(|l| l.starts_with("critical"))
        .collect()
}

/// A directory that must be the local archive in `s`'s config.
fn with_local_archive(s: &Setup, extra: &str) {
    s.edit_ini(|t| t.replace("LOCAL", &s.local.display().to_string()) + extra);
}

#[test]
fn a_symlink_is_never_taken_for_an_archived_copy() {
    let s = Setup::new("arch_symlink", "local_archivedirs: LOCAL");
    with_local_archive(&s, "");
    let (_pg, seg, path) = real_segment(&s);
    s.init();
    let wal = path.display().to_string();
    // A symlink to the very segment: "identical" if followed, and lost as
    // soon as PostgreSQL recycles the segment.
    std::os::unix::fs::symlink(&path, s.local.join(&seg)).unwrap();
    let out = s.archiver(&["-F", &wal]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let expected = format!(
        "{} is a symbolic link, not an archived copy",
        s.local.join(&seg).display()
    );
    assert_says(&out, &expected);
    assert!(fs::symlink_metadata(s.local.join(&seg))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(
        critical_lines(&s).iter().any(|l| l.contains("symbolic link")),
        "{:?}",
        s.hook_lines()
    );
    assert!(
        s.queued().is_empty() && !s.remote.join(&seg).exists(),
        "nothing shipped"
    );

    // The same in a slave's queue.
    fs::remove_file(s.local.join(&seg)).unwrap();
    std::os::unix::fs::symlink(&path, s.queue.join(&seg)).unwrap();
    let out = s.archiver(&["-F", &wal]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert_says(&out, "is a symbolic link, not an archived copy");
    assert_eq!(critical_lines(&s).len(), 2, "{:?}", s.hook_lines());
}

#[test]
fn a_segment_of_another_cluster_is_refused_at_archive_time() {
    let s = Setup::new("arch_foreign", "");
    // -I before the cluster exists: the archive is unclaimed, so only
    // pg_control can tell whose segment it is.
    s.init();
    let (pg, seg, _path) = real_segment(&s);
    let other = PgCluster::init(&s.env, "other", "archive_mode = off\n");
    other.start();
    let mut foreign_seg = other.switch_wal();
    while foreign_seg < seg {
        foreign_seg = other.switch_wal();
    }
    // The other cluster's segment under a name our archive uses.
    let renamed = s.env.path(&format!("foreign/{foreign_seg}"));
    s.env.mkdir("foreign");
    fs::copy(other.datadir.join("pg_wal").join(&foreign_seg), &renamed).unwrap();
    s.env.chown(&renamed);
    let out = s.archiver(&["-F", &renamed.display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let ours = pitrkit::archive::sysid::pg_control_system_id(&pg.datadir).unwrap();
    let theirs = pitrkit::archive::sysid::pg_control_system_id(&other.datadir).unwrap();
    let expected = format!(
        "{foreign_seg} comes from database system {theirs}, but this cluster ({}) is system {ours}",
        pg.datadir.display()
    );
    assert_says(&out, &expected);
    assert!(
        critical_lines(&s).iter().any(|l| l.contains(&expected)),
        "{:?}",
        s.hook_lines()
    );
    // Nothing written, and the archive not claimed by the wrong system.
    assert!(s.queued().is_empty() && !s.remote.join(&foreign_seg).exists());
    assert_eq!(fs::read_to_string(s.env.path("queue/.pitrkit-system-id")).unwrap(), "");
}

#[test]
fn another_stored_form_on_the_slave_is_judged_by_content() {
    let s = Setup::new("arch_forms", "slave_compression: zstd");
    let (pg, seg, path) = real_segment(&s);
    s.init();
    // A plain X from another cluster beside where our X.zst would go.
    let impostor = vec![9u8; 16 << 20];
    fs::write(s.remote.join(&seg), &impostor).unwrap();
    let out = s.archiver(&["-F", &path.display().to_string()]);
    assert!(
        out.status.success(),
        "async: spooled is success\n{}",
        describe_output(&out)
    );
    assert!(!s.remote.join(format!("{seg}.zst")).exists(), "a second form beside X");
    assert_eq!(fs::read(s.remote.join(&seg)).unwrap(), impostor, "X was touched");
    assert!(s.queue.join(".conflicts").join(format!("{seg}.zst")).exists());
    assert!(s.queued().is_empty());
    let critical = critical_lines(&s);
    assert!(
        critical.len() == 1 && critical[0].contains(&format!("already has a different {seg} in")),
        "{critical:?}"
    );

    // The same content as a plain file: delivered, no second form.
    let next = pg.switch_wal();
    let next_path = pg.datadir.join("pg_wal").join(&next);
    fs::copy(&next_path, s.remote.join(&next)).unwrap();
    s.env.chown(&s.remote.join(&next));
    let out = s.archiver(&["-F", &next_path.display().to_string()]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(!s.remote.join(format!("{next}.zst")).exists(), "a second form beside X");
    assert!(
        s.queued().is_empty(),
        "identical content is delivered: {:?}\n{}",
        s.queued(),
        describe_output(&out)
    );
    assert_eq!(critical_lines(&s).len(), 1, "{:?}", s.hook_lines());
}

/// The reverse of the test above: a plain file travels with its `.sum`
/// sidecar, and the slave already holds the WAL compressed. The pair is
/// judged as one: delivered together or set aside together, never a
/// sidecar left behind in the queue or sent beside the other form.
#[test]
fn a_plain_file_and_its_sidecar_are_judged_against_another_form_on_the_slave() {
    use pitrkit::compress::Codec;
    let s = Setup::new("arch_forms2", "");
    let (pg, seg, path) = real_segment(&s);
    s.init();
    let zst = |dest: &Path, data: &[u8]| {
        let mut out = Vec::new();
        Codec::Zstd.compress(data, &mut out, None).unwrap();
        fs::write(dest, out).unwrap();
        s.env.chown(dest);
    };
    let queue_entries = || -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&s.queue)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    };
    // The same WAL, compressed, already on the slave: delivered.
    zst(&s.remote.join(format!("{seg}.zst")), &fs::read(&path).unwrap());
    let out = s.archiver(&["-F", &path.display().to_string()]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(queue_entries().is_empty(), "left in the queue: {:?}", queue_entries());
    for n in [seg.clone(), format!("{seg}.sum")] {
        assert!(!s.remote.join(&n).exists(), "{n} sent beside {seg}.zst");
    }
    assert!(critical_lines(&s).is_empty(), "{:?}", s.hook_lines());

    // Other content, compressed, on the slave: both set aside.
    let next = pg.switch_wal();
    let next_path = pg.datadir.join("pg_wal").join(&next);
    zst(&s.remote.join(format!("{next}.zst")), &vec![7u8; 16 << 20]);
    let out = s.archiver(&["-F", &next_path.display().to_string()]);
    assert!(
        out.status.success(),
        "async: spooled is success\n{}",
        describe_output(&out)
    );
    assert!(queue_entries().is_empty(), "left in the queue: {:?}", queue_entries());
    for n in [next.clone(), format!("{next}.sum")] {
        assert!(s.queue.join(".conflicts").join(&n).exists(), "{n} not set aside");
        assert!(!s.remote.join(&n).exists(), "{n} sent beside {next}.zst");
    }
    assert_eq!(critical_lines(&s).len(), 1, "{:?}", s.hook_lines());
}

#[test]
fn init_marks_every_slaves_archive_with_the_system_id() {
    let t = TwoSlaves::new("arch_rmark", "ssh_control_persist: 0");
    let s = &t.s;
    let (pg, _seg, _path) = real_segment(s);
    let id = pitrkit::archive::sysid::pg_control_system_id(&pg.datadir).unwrap();
    let mark = s.remote.join(".pitrkit-system-id");
    // Unclaimed (an earlier -I without pgdata): claimed.
    fs::write(&mark, "").unwrap();
    t.write_ssh_config(s.sshd.port);
    let out = s.archiver(&["-I"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(fs::read_to_string(&mark).unwrap(), format!("{id}\n"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for slave in ["good", "dead"] {
        assert!(
            stdout.contains(&format!("ok      slave {slave}: {}: ", s.remote.display())),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains(&format!("claimed for database system {id}")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("belongs to database system {id}")), "{stdout}");
    let leftovers: Vec<_> = fs::read_dir(&s.remote)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != ".pitrkit-system-id")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Missing: written.
    fs::remove_file(&mark).unwrap();
    assert!(s.archiver(&["-I"]).status.success());
    assert_eq!(fs::read_to_string(&mark).unwrap(), format!("{id}\n"));
    // Another system's archive: refused, never overwritten.
    fs::write(&mark, "12345\n").unwrap();
    let out = s.archiver(&["-I"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert_says(&out, "this slave's archive belongs to system 12345");
    assert_eq!(fs::read_to_string(&mark).unwrap(), "12345\n");
}

#[test]
fn a_stale_ledger_entry_is_checked_on_the_slave_and_shipped_again() {
    let t = TwoSlaves::new("arch_stale", "ssh_control_persist: 0\nship_mode: sync\nlookahead: 0");
    let s = &t.s;
    let _ = s.archiver(&["-I"]);
    let (_pg, seg, path) = real_segment(s);
    let wal = path.display().to_string();
    let out = s.archiver(&["-F", &wal]);
    assert_eq!(out.status.code(), Some(1), "'dead' is down: {}", describe_output(&out));
    assert!(s.remote.join(&seg).exists(), "'good' got it");
    let ledger = s.env.path("queue/.delivered").join(&seg);
    assert!(fs::read_to_string(&ledger).unwrap().starts_with("good"));
    // The copy the ledger vouches for is gone (deleted, a slave rebuilt...).
    fs::remove_file(s.remote.join(&seg)).unwrap();
    let out = s.archiver(&["-F", &wal]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "'dead' is still down: {}",
        describe_output(&out)
    );
    assert_same_bytes(&path, &s.remote.join(&seg));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the delivery ledger lists slave good, but it is gone from there"),
        "{}",
        describe_output(&out)
    );
    assert!(t.queue("good").is_empty());
    assert_eq!(t.queue("dead"), vec![seg.clone()]);
    // Its checksum sidecar is part of the delivery: gone, shipped again.
    let sum = s.remote.join(format!("{seg}.sum"));
    fs::remove_file(&sum).unwrap();
    let out = s.archiver(&["-F", &wal]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "the delivery ledger lists slave good, but its checksum file {seg}.sum is missing there"
        )),
        "{}",
        describe_output(&out)
    );
    assert!(sum.is_file(), "the sidecar is shipped again");
    // A copy of another size is not trusted either.
    fs::write(s.remote.join(&seg), b"short").unwrap();
    let out = s.archiver(&["-F", &wal]);
    assert_says(&out, "it has 5 bytes there, not 16777216");
    assert!(
        t.s.queue.parent().unwrap().join("good/.conflicts").join(&seg).exists(),
        "shipped again, found different: a conflict"
    );
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn init_refuses_an_unmounted_directory_with_require_mount() {
    let s = Setup::new("arch_mount", "local_archivedirs: LOCAL");
    with_local_archive(&s, "require_mount: on\n");
    s.env.mkdir("local_archive");
    let out = s.archiver(&["-I"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "require_mount is on, but neither {} nor a directory above it is a mounted filesystem",
            s.local.display()
        )) && stdout.contains("Mount it, then run -I again"),
        "{stdout}"
    );
    assert_eq!(fs::read_dir(&s.local).unwrap().count(), 0, "never marked");
    // Mounted (we are root): accepted and marked.
    assert!(is_root(), "the tests run as root (CI does)");
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs"])
        .arg(&s.local)
        .status()
        .unwrap();
    assert!(status.success());
    let _mounted = Mounted(s.local.clone());
    s.env.chown(&s.local);
    s.init();
    assert!(s.local.join(".pitrkit-system-id").exists());
}

#[test]
fn concurrent_calls_for_the_same_segment_all_succeed() {
    let s = Setup::new("arch_concurrent", "lookahead: 0");
    s.init();
    let (pg, _seg, _path) = real_segment(&s);
    for _ in 0..3 {
        let seg = pg.switch_wal();
        let wal = pg.datadir.join("pg_wal").join(&seg).display().to_string();
        let mut children = Vec::new();
        for i in 0..5 {
            let mut c = s.env.command(&fixtures::cmd_link(&s.env, "cmd_archiver"));
            c.arg("-C").arg(&s.ini);
            if i == 2 {
                c.arg("--flush");
            } else {
                c.args(["-F", &wal]);
            }
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            children.push(c.spawn().unwrap());
        }
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{seg}: {}", describe_output(&out));
        }
        let out = s.archiver(&["--flush"]);
        assert!(out.status.success(), "{}", describe_output(&out));
        assert_same_bytes(&pg.datadir.join("pg_wal").join(&seg), &s.remote.join(&seg));
    }
    assert!(s.queued().is_empty());
}

#[test]
fn temp_files_of_killed_writers_are_reclaimed_by_the_next_call() {
    let s = Setup::new("arch_reclaim", "local_archivedirs: LOCAL");
    with_local_archive(&s, "");
    s.init();
    let (_pg, seg, path) = real_segment(&s);
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    let leftover = |dir: &Path, name: &str| {
        let p = dir.join(name);
        fs::write(&p, vec![0u8; 1 << 20]).unwrap();
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        s.env.chown(&p);
        p
    };
    let spool = s.env.mkdir("queue/.spool");
    let dead = [
        leftover(&s.local, &format!(".{seg}.pitrkit-4000001.tmp")),
        leftover(&s.local, ".pitrkit-compress-Ab12Cd"),
        leftover(&s.env.path("queue"), ".pitrkit-compress-Xy34Zw"),
        leftover(&spool, &format!(".{seg}.pitrkit-4000002.tmp")),
        // rsync's own, on the slave, from a transfer killed with sshd.
        leftover(&s.remote, ".000000010000000000000088.fBCeSC"),
        leftover(&s.remote, ".000000010000000000000088.sum.Qw3rTy"),
    ];
    // A transfer still writing (recent) and files that are not rsync's stay.
    let keep = [
        s.env.write("slave_archive/.000000010000000000000089.aB3dE5", "live"),
        leftover(&s.remote, ".notes.aB3dE5"),
    ];
    // A writer that is still alive (it holds the lock) keeps its file.
    let alive = leftover(&s.local, ".000000010000000000000099.pitrkit-4000003.tmp");
    let mut holder = std::process::Command::new(require_program("flock"))
        .arg("-x")
        .arg(&alive)
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        let f = fs::File::open(&alive).unwrap();
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
    }));
    let out = s.archiver(&["-F", &path.display().to_string()]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(out.status.success(), "{}", describe_output(&out));
    for p in &dead {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    assert!(alive.exists(), "a live writer's file was removed");
    for p in &keep {
        assert!(p.exists(), "{} was removed", p.display());
    }
    assert_same_bytes(&path, &s.local.join(&seg));
}

fn bind_mount(src: &Path, dst: &Path) -> Mounted {
    assert!(is_root(), "the tests run as root (CI does)");
    let status = std::process::Command::new("mount")
        .arg("--bind")
        .arg(src)
        .arg(dst)
        .status()
        .unwrap();
    assert!(status.success(), "mount --bind {} {}", src.display(), dst.display());
    Mounted(dst.to_path_buf())
}

/// The slave's r_archivedir is a share (here a bind mount) that -I marked.
/// The share goes away on the slave: the mount point is a bare directory on
/// the root filesystem. Shipping must not deliver WAL into it and drop it
/// from the queue: once the share is back, the archive would lack it.
#[test]
fn shipping_never_delivers_into_an_unmarked_slave_directory() {
    let s = Setup::new(
        "arch_unmounted",
        "ship_mode: sync\nlookahead: 0\nssh_control_persist: 0",
    );
    let share = s.env.mkdir("share");
    let m = bind_mount(&share, &s.remote);
    s.init();
    assert!(share.join(".pitrkit-system-id").exists());
    let pg = fixtures::archiving_master(&s.env, &s.ini, "");
    let first = pg.switch_wal();
    assert!(pg.wait_archived(&first, WAIT));
    assert!(share.join(&first).exists());
    // The share goes away.
    drop(m);
    assert!(!s.remote.join(".pitrkit-system-id").exists());
    let lost = pg.switch_wal();
    let path = pg.datadir.join("pg_wal").join(&lost).display().to_string();
    let out = s.archiver(&["-F", &path]);
    assert_ne!(out.status.code(), Some(0), "{}", describe_output(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not mounted") && stderr.contains("-I"),
        "the error names the fix: {stderr}"
    );
    assert!(!s.remote.join(&lost).exists(), "written onto the bare mount point");
    assert!(s.queued().contains(&lost), "{lost} stays queued: {:?}", s.queued());
    assert!(
        wait_until(WAIT, || fixtures::lines(&s.hooks)
            .iter()
            .any(|l| l.starts_with("warning"))),
        "the slave is failing: {:?}",
        fixtures::lines(&s.hooks)
    );
    // The share comes back: the next round ships it there. PostgreSQL's own
    // archiver may be shipping the queue at the same moment, and a sync call
    // then asks for a retry: retry as PostgreSQL does.
    let _m = bind_mount(&share, &s.remote);
    let mut out = s.archiver(&["-F", &path]);
    for _ in 0..10 {
        if out.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        out = s.archiver(&["-F", &path]);
    }
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(share.join(&lost).exists());
    assert!(s.queued().is_empty(), "{:?}", s.queued());
}

/// The same planted sidecar through shipping: the slave holds an intact X
/// without a sidecar (pitrtools shipped it). Archiving X with other bytes
/// is refused (conflict), and our X.sum must not reach the slave beside its
/// intact X (restore there would reject it).
#[test]
fn a_refused_shipment_leaves_no_sidecar_beside_the_slaves_intact_file() {
    let s = Setup::new("arch_shipsum", "ship_mode: sync\nlookahead: 0\nssh_control_persist: 0");
    let pg = fixtures::archiving_master(&s.env, &s.ini, "archive_mode = off\n");
    s.init();
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g");
    let seg = pg.switch_wal();
    let intact = fs::read(pg.datadir.join("pg_wal").join(&seg)).unwrap();
    // The slave's copy, as pitrtools left it.
    fs::write(s.remote.join(&seg), &intact).unwrap();
    s.env.chown(&s.remote.join(&seg));
    let mut other = intact.clone();
    other[intact.len() / 2] ^= 0x01;
    let src = s.env.mkdir("other").join(&seg);
    fs::write(&src, &other).unwrap();
    s.env.chown(&src);
    let out = s.archiver(&["-F", &src.display().to_string()]);
    assert_ne!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert!(fs::read(s.remote.join(&seg)).unwrap() == intact);
    assert!(
        !s.remote.join(format!("{seg}.sum")).exists(),
        "a checksum of the refused bytes now sits beside the slave's intact {seg}"
    );
    // Ours went aside with its sidecar.
    let conflicts = s.queue.join(".conflicts");
    assert!(conflicts.join(&seg).exists() && conflicts.join(format!("{seg}.sum")).exists());
}

/// `-I` never marks a slave's r_archivedir that the slave's /etc/fstab
/// lists as a mount point while nothing is mounted there (a share that is
/// not mounted is a bare directory: shipping would fill it).
#[test]
fn init_refuses_an_unmounted_slave_share() {
    let s = Setup::new("arch_remote_mount", "");
    let _entry = fixtures::FstabEntry::add(&s.remote);
    let out = s.archiver(&["-I"]);
    assert_ne!(out.status.code(), Some(0), "{}", describe_output(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{SLAVE}:{} should be on the filesystem mounted at {}",
            s.remote.display(),
            s.remote.display()
        )) && stdout.contains("Mount it, then run -I again"),
        "{stdout}"
    );
    assert!(!s.remote.join(".pitrkit-system-id").exists(), "never marked");
    // Mounted there (a bind mount keeps the device: mountinfo tells): marked.
    let share = s.env.mkdir("share");
    let _m = bind_mount(&share, &s.remote);
    s.init();
    assert!(share.join(".pitrkit-system-id").exists());
}

/// The share can go away in the middle of a round, after the push: the
/// remote sync's ssh session reads the mark again, and without it nothing
/// leaves the queue. A mark of another database system stops shipping
/// before anything is pushed.
#[test]
fn shipping_rechecks_the_slave_mark_with_the_remote_sync() {
    let s = Setup::new("arch_mark_recheck", "ship_mode: sync\nlookahead: 0");
    s.init();
    let (pg, seg, path) = real_segment(&s);
    let wal = path.display().to_string();
    let mark = s.remote.join(".pitrkit-system-id");
    let aside = s.env.path("mark_aside");
    // ssh that takes the mark away just before the remote sync, as an
    // unmount between rsync and sync would.
    let ssh = require_program("ssh");
    let unmounting = s.script(
        "unmounting-ssh",
        &format!(
            "for a; do case \"$a\" in \"sync -- \"*) mv {} {};; esac; done\nexec {} \"$@\"\n",
            mark.display(),
            aside.display(),
            ssh.display()
        ),
    );
    let swap = |from: &Path, to: &Path| {
        s.edit_ini(|t| {
            t.replacen(
                &format!("ssh: {}", from.display()),
                &format!("ssh: {}", to.display()),
                1,
            )
        })
    };
    swap(&ssh, &unmounting);
    let out = s.archiver(&["-F", &wal]);
    assert_ne!(out.status.code(), Some(0), "{}", describe_output(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("changed while shipping"), "{stderr}");
    assert_eq!(s.queued(), vec![seg.clone()], "nothing leaves the queue");
    // The share is back: the retry delivers it.
    swap(&unmounting, &ssh);
    fs::rename(&aside, &mark).unwrap();
    let out = s.archiver(&["-F", &wal]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(s.queued().is_empty());
    assert!(s.remote.join(&seg).exists());

    // Another system's archive: nothing pushed, the error says whose.
    fs::write(&mark, "42\n").unwrap();
    let next = pg.switch_wal();
    let out = s.archiver(&["-F", &pg.datadir.join("pg_wal").join(&next).display().to_string()]);
    assert_ne!(out.status.code(), Some(0), "{}", describe_output(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("belongs to database system 42"), "{stderr}");
    assert!(!s.remote.join(&next).exists());
    assert_eq!(s.queued(), vec![next]);
}

// ---------------------------------------------------------------------------
// The queue runner (cmd_queue)
// ---------------------------------------------------------------------------

/// queue_wait of the runner tests: long enough that a drain within it plus
/// a few seconds is the runner's doing, short enough for the suite.
const QUEUE_WAIT: u64 = 5;

impl Setup {
    fn queue_runner(&self, args: &[&str]) -> std::process::Output {
        let mut c = self.env.command(&fixtures::cmd_link(&self.env, "cmd_queue"));
        c.arg("-C").arg(&self.ini).args(args);
        run_output(&mut c)
    }

    /// The pid the runner wrote in its lock file, if any.
    fn runner_pid(&self) -> Option<u32> {
        fs::read_to_string(self.env.path("queue/.queue-runner.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn status(&self) -> String {
        let out = self.archiver(&["--status"]);
        assert!(out.status.success(), "{}", describe_output(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Kills a runner a failed test leaves behind (a passing test has none).
struct Reap(Option<u32>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(pid) = self.0.filter(|p| process_alive(*p)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Field `n` (1-based) of /proc/<pid>/stat.
fn stat_field(pid: u32, n: usize) -> String {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    rest.split_whitespace().nth(n - 3).unwrap().to_string()
}

/// issue 9's proof: an idle master whose slave is down queues the segment
/// and returns at once; no further WAL, no cron, no --flush: once the
/// slave is back, the queue drains within queue_wait plus a few seconds,
/// and the runner the archive call started exits.
#[test]
fn an_idle_masters_queue_drains_without_cron_or_new_wal() {
    let mut s = Setup::new("queue_idle", &format!("queue_wait: {QUEUE_WAIT}\nqueue_runner: off"));
    s.init();
    let pg = s.master("");
    s.sshd.stop();
    // queue_runner: off: the file stays queued and no runner starts.
    let first = pg.switch_wal();
    pg.assert_archived(&first, WAIT, "async: queued while the slave is down");
    assert_eq!(s.queued(), vec![first.clone()]);
    assert!(s.status().contains("queue runner: not running"), "{}", s.status());
    assert!(s.runner_pid().is_none(), "queue_runner: off started a runner");

    let text = fs::read_to_string(&s.ini)
        .unwrap()
        .replace("queue_runner: off", "queue_runner: auto");
    s.env.write("cmd_archiver.ini", &text);
    let last = pg.switch_wal();
    // PostgreSQL's archiver is not held up by the runner the call starts.
    pg.assert_archived(&last, WAIT, "the archive call must return while its runner runs on");
    assert_eq!(s.queued(), vec![first.clone(), last.clone()]);
    let mut pid = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            pid = s.runner_pid();
            pid.is_some_and(process_alive)
        }),
        "the archive call left files queued but started no runner:\n{}",
        tail(&pg.log, 20)
    );
    let pid = pid.unwrap();
    let _reap = Reap(Some(pid));
    assert!(
        s.status().contains(&format!("queue runner: running, pid {pid}")),
        "{}",
        s.status()
    );
    // Detached: its own session, cwd /, streams on /dev/null.
    assert_ne!(stat_field(pid, 6), stat_field(std::process::id(), 6), "same session");
    assert_eq!(fs::read_link(format!("/proc/{pid}/cwd")).unwrap(), Path::new("/"));
    for fd in 0..3 {
        assert_eq!(
            fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap(),
            Path::new("/dev/null"),
            "fd {fd}"
        );
    }
    // Nothing PostgreSQL's archiver left open (its pipes): a runner living
    // for days must hold nothing of the server's.
    let lock = s.env.path("queue/.queue-runner.pid");
    for e in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let fd: u32 = e.file_name().to_string_lossy().parse().unwrap();
        let to = fs::read_link(e.path()).unwrap_or_default();
        assert!(fd < 3 || to == lock, "the runner holds fd {fd} -> {}", to.display());
    }
    let archived = pg.archiver_counts().0;
    // Two rounds fail while the slave is down; the runner keeps trying.
    std::thread::sleep(Duration::from_secs(2 * QUEUE_WAIT));
    assert!(process_alive(pid), "the runner gave up while the slave was down");
    assert_eq!(s.queued().len(), 2);

    s.sshd.restart();
    let back = Instant::now();
    let bound = Duration::from_secs(QUEUE_WAIT + 10);
    assert!(
        wait_until(bound, || s.queued().is_empty()),
        "the queue did not drain within queue_wait + 10 s of the slave's return: {:?}",
        s.queued()
    );
    let took = back.elapsed();
    for seg in [&first, &last] {
        let src = fs::read(pg.datadir.join("pg_wal").join(seg)).unwrap();
        assert!(
            fs::read(s.remote.join(seg)).unwrap() == src,
            "{seg} differs on the slave"
        );
        assert!(s.remote.join(format!("{seg}.sum")).is_file(), "{seg}'s sidecar");
    }
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(pid)),
        "the runner did not exit once its queues were empty"
    );
    assert_eq!(pg.archiver_counts().0, archived, "no further archive call did it");
    assert!(s.status().contains("queue runner: not running"), "{}", s.status());
    let hooks = s.hook_lines();
    assert!(
        hooks.iter().any(|l| l.starts_with("ok") && l.contains("recovered")),
        "the runner's delivery announces the recovery: {hooks:?}"
    );
    eprintln!("drained {took:?} after the slave returned");
}

/// `cmd_queue --daemon` returns at once, and the daemon holds neither of
/// the caller's pipes; a second runner for the same l_archivedir exits 0
/// saying which pid runs; SIGTERM stops it; a runner killed with -9 leaves
/// a pid file that does not block the next.
#[test]
fn one_daemon_per_queue_root_detached_from_its_caller() {
    let s = Setup::new("queue_daemon", "");
    s.init();
    let mut c = s.env.command(&fixtures::cmd_link(&s.env, "cmd_queue"));
    c.arg("-C")
        .arg(&s.ini)
        .arg("--daemon")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    // Both pipes reach EOF while the daemon runs: nobody else holds them.
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        out.read_to_string(&mut text).unwrap();
        err.read_to_string(&mut text).unwrap();
        text
    });
    assert!(
        wait_until(Duration::from_secs(20), || reader.is_finished()),
        "cmd_queue --daemon's caller never saw EOF on its pipes"
    );
    let said = reader.join().unwrap();
    assert!(child.wait().unwrap().success(), "{said}");
    let mut pid = None;
    assert!(wait_until(Duration::from_secs(10), || {
        pid = s.runner_pid();
        pid.is_some_and(process_alive)
    }));
    let pid = pid.unwrap();
    let _reap = Reap(Some(pid));
    assert!(s.status().contains(&format!("running, pid {pid}")), "{}", s.status());

    // A second one, in the foreground or as a daemon: exit 0, nothing started.
    for args in [&[][..], &["-d"]] {
        let out = s.queue_runner(args);
        assert!(out.status.success(), "{}", describe_output(&out));
        assert_says(&out, &format!("already running for {}, pid {pid}", s.ini.display()));
    }
    assert_eq!(s.runner_pid(), Some(pid), "one pid lock");

    // SIGTERM between rounds: it stops, and says so in nobody's pipe.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(10), || !process_alive(pid)), "SIGTERM");
    assert!(s.status().contains("queue runner: not running"), "{}", s.status());

    // kill -9 leaves the pid file with a dead pid: the lock, not the pid, counts.
    let mut fg = s.env.command(&fixtures::cmd_link(&s.env, "cmd_queue"));
    fg.arg("-C").arg(&s.ini).stdout(Stdio::null()).stderr(Stdio::null());
    let mut fg = fg.spawn().unwrap();
    let mut pid = None;
    assert!(wait_until(Duration::from_secs(10), || {
        pid = s.runner_pid();
        pid.is_some_and(process_alive)
    }));
    let dead = pid.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dead as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = fg.wait();
    assert!(wait_until(Duration::from_secs(5), || !process_alive(dead)));
    assert_eq!(s.runner_pid(), Some(dead), "the stale pid file stays");
    let out = s.queue_runner(&["--until-empty"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_says(&out, "every queue is empty; the queue runner exits");
}
