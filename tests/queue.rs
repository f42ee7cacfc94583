//! The queue runner (`cmd_queue`, `pitrkit queue`): an idle master's queue
//! drains without cron and without new WAL, one runner per l_archivedir,
//! and a daemon that holds nobody's pipe. Real PostgreSQL, sshd and rsync.
mod common;

use common::fixtures;
use common::*;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
const SLAVE: &str = "127.0.0.1";
/// queue_wait of these tests: long enough that a drain within it plus a
/// few seconds is the runner's doing, short enough for the suite.
const QUEUE_WAIT: u64 = 5;

struct Setup {
    env: TestEnv,
    sshd: Sshd,
    ini: PathBuf,
    remote: PathBuf,
    queue: PathBuf,
    hooks: PathBuf,
}

impl Setup {
    fn new(name: &str, extra: &str) -> Setup {
        let env = TestEnv::new(name, Path::new(env!("CARGO_BIN_EXE_pitrkit")));
        let sshd = Sshd::start(&env);
        let remote = env.mkdir("slave_archive");
        let (hook, hooks) = fixtures::recording_hook(&env, "hooks");
        let ini = fixtures::archiver_ini(&env, &sshd, &remote, &hook, extra);
        let queue = env.path("queue").join(SLAVE);
        let s = Setup {
            env,
            sshd,
            ini,
            remote,
            queue,
            hooks,
        };
        let out = s.run("cmd_archiver", &["-I"]);
        assert!(out.status.success(), "-I failed:\n{}", describe_output(&out));
        s
    }

    fn link(&self, name: &str) -> PathBuf {
        fixtures::cmd_link(&self.env, name)
    }

    fn run(&self, program: &str, args: &[&str]) -> std::process::Output {
        let mut c = self.env.command(&self.link(program));
        c.arg("-C").arg(&self.ini).args(args);
        run_output(&mut c)
    }

    fn pid_file(&self) -> PathBuf {
        self.env.path("queue/.queue-runner.pid")
    }

    /// The pid the runner wrote, if any.
    fn runner_pid(&self) -> Option<u32> {
        fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()
    }

    fn queued(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.queue)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.') && !n.ends_with(".sum"))
            .collect();
        v.sort();
        v
    }

    fn status(&self) -> String {
        let out = self.run("cmd_archiver", &["--status"]);
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
    let pg = fixtures::archiving_master(&s.env, &s.ini, "");
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
    let hooks = fixtures::lines(&s.hooks);
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
    let mut c = s.env.command(&s.link("cmd_queue"));
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
        let out = s.run("cmd_queue", args);
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
    let mut fg = s.env.command(&s.link("cmd_queue"));
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
    let out = s.run("cmd_queue", &["--until-empty"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_says(&out, "every queue is empty; the queue runner exits");
}
