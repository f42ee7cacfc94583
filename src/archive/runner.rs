//! The queue runner (`pitrkit queue`, pitrtools' `cmd_queue`): ships every
//! slave's queue in rounds (the same shipping as `--flush`, with the
//! `queue_wait` back-off), sleeps while nothing is due, and repeats, so an
//! idle master's standby catches up without cron and without new WAL.
//!
//! One runner per queue root: it holds an flock on
//! [`RUNNER_LOCK_FILE`] (which holds its pid for humans). A runner killed
//! with -9 leaves the file but not the lock, so it never blocks the next.
//! Killing it mid-delivery is safe: shipping writes under temporary names
//! and a file leaves the queue only once the slave has it durably.
//!
//! An async archive call that leaves files queued starts one
//! ([`start_if_needed`]) as `cmd_queue --daemon --until-empty`: detached
//! (own session, null streams, so it never holds PostgreSQL's pipe), and
//! gone once every queue is empty. Run as a service it keeps running.

use crate::config::ConfigFile;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::layout::{RUNNER_LOCK_FILE, STATE_FILE};
use super::now_unix;
use super::ship::{depth, ship_round};
use super::state::{Event, SlaveState};
use crate::config::{ArchiverConfig, ConfigError, QueueRunner, ShipMode};
use crate::fsutil::{self, LockFile};

/// The shortest pause between rounds (`queue_wait: 0` must not spin).
const MIN_PAUSE: Duration = Duration::from_secs(1);
/// How long a starting runner waits for the lock: a probe (an archive call
/// or `--status` asking whether one runs) holds it for an instant.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// What an archive call starts: pitrtools' program name, through the multi-call link.
pub const PROGRAM: &str = "cmd_queue";

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("{config} configures no slaves: there is no queue to ship (set slaves, l_archivedir and r_archivedir)")]
    NoSlaves { config: String },
    #[error("cannot lock {path}: {source}; check that l_archivedir exists and belongs to the archiver's OS user (`pitrkit archiver -C <config> -I` creates it)")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the configuration changed and no longer loads, so the queue runner stops: {0}. Fix it; the next archive call (or the service's restart) starts a runner again")]
    Reload(ConfigError),
    #[error("l_archivedir changed in {config} ({old} -> {new}); the queue runner stops (it locks one queue root); start it again")]
    RootChanged { config: String, old: String, new: String },
}

/// Is a runner shipping this queue root?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Idle,
    /// Running, with the pid it wrote (if readable).
    Running(Option<u32>),
}

/// Whether a runner holds the lock of `queue_root`. Holds a shared lock
/// itself for an instant (a runner starting meanwhile waits [`LOCK_WAIT`]);
/// shared, because an archive call whose probe met another probe (`--status`)
/// would otherwise start no runner and leave its file queued.
pub fn probe(queue_root: &Path) -> io::Result<Probe> {
    let path = queue_root.join(RUNNER_LOCK_FILE);
    Ok(match fsutil::is_locked(&path)? {
        false => Probe::Idle,
        true => Probe::Running(read_pid(&path)),
    })
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The runner's lock on its queue root. The file holds the pid; emptied
/// again when the runner ends normally.
pub struct RunnerLock {
    lock: LockFile,
}

impl RunnerLock {
    /// Records this process's pid (again after detaching, which changes it).
    pub fn record_pid(&self) -> io::Result<()> {
        let f: &File = self.lock.file();
        f.set_len(0)?;
        f.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)
    }
}

impl Drop for RunnerLock {
    fn drop(&mut self) {
        let _ = self.lock.file().set_len(0);
    }
}

/// Takes the runner lock of `cfg`'s queue root; `Err(pid)`: another runner
/// holds it (with the pid it wrote, if readable). The caller records its
/// pid ([`RunnerLock::record_pid`]) once it is the process that will run
/// (after detaching), so that the file never names a process on its way out.
pub fn acquire(cfg: &ArchiverConfig) -> Result<Result<RunnerLock, Option<u32>>, RunnerError> {
    let root = queue_root(cfg)?;
    take(&root, false)
}

fn take(root: &Path, record: bool) -> Result<Result<RunnerLock, Option<u32>>, RunnerError> {
    let path = root.join(RUNNER_LOCK_FILE);
    match fsutil::lock(&path, LOCK_WAIT) {
        Ok(Some(lock)) => {
            let held = RunnerLock { lock };
            if record {
                held.record_pid().map_err(|source| RunnerError::Lock {
                    path: path.clone(),
                    source,
                })?;
            }
            Ok(Ok(held))
        }
        Ok(None) => Ok(Err(read_pid(&path))),
        Err(source) => Err(RunnerError::Lock { path, source }),
    }
}

fn queue_root(cfg: &ArchiverConfig) -> Result<PathBuf, RunnerError> {
    cfg.shipping
        .as_ref()
        .map(|s| s.queue_root.clone())
        .ok_or_else(|| RunnerError::NoSlaves {
            config: cfg.source.display().to_string(),
        })
}

/// How a runner ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Every queue empty (`until_empty`), or another runner took over.
    Empty,
    /// Asked to stop (SIGTERM, SIGINT, SIGHUP) between rounds.
    Stopped,
}

/// One queue runner: `until_empty` for the one an archive call starts,
/// not for a service. `stop` is checked between rounds and while sleeping.
pub struct Runner<'a> {
    pub until_empty: bool,
    pub stop: &'a AtomicBool,
}

impl Runner<'_> {
    /// Ships rounds under `lock` until the queues are empty (`until_empty`)
    /// or `stop` is set. Reloads `cfg` when its file changes.
    pub fn run(&self, mut cfg: ArchiverConfig, lock: RunnerLock) -> Result<End, RunnerError> {
        let root = queue_root(&cfg)?;
        let mut lock = lock;
        loop {
            if self.rounds(&mut cfg, &root)? == End::Stopped {
                return Ok(End::Stopped);
            }
            // Let go, then look again: an archive call that queued a file
            // while we still held the lock started no runner of its own.
            drop(lock);
            if pending(&cfg) == 0 {
                return Ok(End::Empty);
            }
            lock = match take(&root, true)? {
                Ok(l) => l,
                Err(_) => return Ok(End::Empty), // another runner has it now
            };
        }
    }

    /// Rounds until the queues are empty (`until_empty`) or `stop`.
    fn rounds(&self, cfg: &mut ArchiverConfig, root: &Path) -> Result<End, RunnerError> {
        let mut seen = modified(&cfg.source);
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(End::Stopped);
            }
            let events = ship_round(cfg, false, false);
            let left: usize = events.iter().map(|(_, e)| e.depth()).sum();
            if left == 0 && self.until_empty {
                return Ok(End::Empty);
            }
            if !self.sleep(pause(cfg, &events)) {
                return Ok(End::Stopped);
            }
            reload(cfg, root, &mut seen)?;
        }
    }

    /// Sleeps `d`; false when asked to stop meanwhile.
    fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.stop.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
        }
        !self.stop.load(Ordering::SeqCst)
    }
}

/// Files queued for any slave of `cfg`.
fn pending(cfg: &ArchiverConfig) -> usize {
    cfg.shipping
        .as_ref()
        .map_or(0, |sh| sh.slaves.iter().map(|s| depth(&sh.queue_dir(s))).sum())
}

/// Until the next round: a failing slave is due `queue_wait` after its last
/// attempt, a busy queue (another process ships it) or one that grew while
/// shipping at once; with nothing due, `queue_wait` (a service's polling).
fn pause(cfg: &ArchiverConfig, events: &[(String, Event)]) -> Duration {
    let wait = cfg.queue_wait.max(MIN_PAUSE);
    let Some(sh) = &cfg.shipping else { return wait };
    let now = now_unix();
    let mut pause = wait;
    for (slave, e) in events.iter().filter(|(_, e)| e.depth() > 0) {
        let due = match e {
            Event::Delivered { .. } => Duration::ZERO,
            _ => {
                let st = SlaveState::load(&sh.queue_dir(slave).join(STATE_FILE));
                if st.failing {
                    let at = st.last_attempt + cfg.queue_wait.as_secs() as i64;
                    Duration::from_secs((at - now).max(0) as u64)
                } else {
                    Duration::ZERO
                }
            }
        };
        pause = pause.min(due);
    }
    pause.max(MIN_PAUSE)
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Loads the configuration again when its file changed (slaves added or
/// removed, queue_wait): a runner may live for days while a slave is down.
fn reload(cfg: &mut ArchiverConfig, root: &Path, seen: &mut Option<SystemTime>) -> Result<(), RunnerError> {
    let now = modified(&cfg.source);
    if now == *seen && now.is_some() {
        return Ok(());
    }
    let fresh = ArchiverConfig::load(&cfg.source).map_err(RunnerError::Reload)?;
    let new_root = queue_root(&fresh)?;
    if new_root != root {
        return Err(RunnerError::RootChanged {
            config: cfg.source.display().to_string(),
            old: root.display().to_string(),
            new: new_root.display().to_string(),
        });
    }
    log::info!("{} changed: the queue runner uses it from now on", cfg.source.display());
    *cfg = fresh;
    *seen = now;
    Ok(())
}

/// After an archive call's shipping round: when files are left queued
/// (async mode, `queue_runner: auto`) and no runner holds the queue root,
/// starts a detached one. Never fails the call and never waits for the
/// runner; a runner that cannot start is a warning (the next archive call
/// or `--flush` ships the queue).
pub fn start_if_needed(cfg: &ArchiverConfig, events: &[(String, Event)]) {
    let left: usize = events.iter().map(|(_, e)| e.depth()).sum();
    let Some(sh) = &cfg.shipping else { return };
    // Sync mode: PostgreSQL retries the call itself until every slave has the file.
    if left == 0 || cfg.queue_runner == QueueRunner::Off || cfg.ship_mode == ShipMode::Sync {
        return;
    }
    match probe(&sh.queue_root) {
        Ok(Probe::Running(pid)) => {
            log::debug!("{left} file(s) queued; the queue runner (pid {pid:?}) ships them");
            return;
        }
        Ok(Probe::Idle) => {}
        Err(e) => {
            log::warn!(
                "cannot check for a queue runner in {}: {e}; {left} file(s) stay queued until the next archive call or --flush",
                sh.queue_root.display()
            );
            return;
        }
    }
    match spawn(&cfg.source) {
        Ok(()) => log::info!(
            "{left} file(s) left queued: started the queue runner ({PROGRAM} --daemon --until-empty), which retries every queue_wait ({}s) until every queue is empty",
            cfg.queue_wait.as_secs()
        ),
        Err(e) => log::warn!(
            "cannot start the queue runner: {e}; {left} file(s) stay queued until the next archive call or `pitrkit archiver -C {} --flush`",
            cfg.source.display()
        ),
    }
}

/// `cmd_queue -C <config> --daemon --until-empty`, by argument vector:
/// null streams (a caller may read archive_command's output until EOF),
/// its own process group at once (PostgreSQL signals its archiver's group),
/// and none of the descriptors PostgreSQL's archiver left open (a runner
/// that lives for days must not pin a deleted WAL file's space). It then
/// detaches fully itself. Not waited for.
fn spawn(config: &Path) -> io::Result<()> {
    let exe = std::env::current_exe()?;
    let config = std::path::absolute(config)?;
    let mut c = Command::new(exe);
    c.arg0(PROGRAM)
        .arg("-C")
        .arg(config)
        .args(["--daemon", "--until-empty"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/")
        .process_group(0);
    // SAFETY: only async-signal-safe system calls (close_range, fcntl) run
    // between fork and exec.
    unsafe {
        c.pre_exec(|| {
            close_inherited_on_exec();
            Ok(())
        });
    }
    c.spawn().map(drop)
}

/// Marks every descriptor above stderr close-on-exec: one close_range
/// (Linux 5.11+), else one by one.
fn close_inherited_on_exec() {
    use nix::libc;
    // SAFETY: plain system calls on descriptor numbers; a closed one is EBADF.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) != 0 {
            for fd in 3..4096 {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
}

/// A line for `--status`.
pub fn status_line(queue_root: &Path) -> String {
    match probe(queue_root) {
        Ok(Probe::Idle) => "queue runner: not running".into(),
        Ok(Probe::Running(Some(pid))) => format!("queue runner: running, pid {pid}"),
        Ok(Probe::Running(None)) => "queue runner: running".into(),
        Err(e) => format!(
            "queue runner: cannot tell ({}: {e})",
            queue_root.join(RUNNER_LOCK_FILE).display()
        ),
    }
}

// ---------------------------------------------------------------------------
// The process: detaching, and stopping between rounds on a signal
// ---------------------------------------------------------------------------

/// Where the process goes on after [`detach`].
#[derive(Debug, PartialEq, Eq)]
pub enum Detached {
    /// The caller: the daemon is on its way; exit now.
    Caller,
    /// The daemon: own session, cwd `/`, standard streams on /dev/null.
    Daemon,
}

/// Detaches fully: fork, new session (setsid), fork again (never to
/// acquire a terminal), cwd `/`, stdin/stdout/stderr on /dev/null, so it
/// holds nobody's pipe or terminal. Must run before any thread starts.
/// The caller waits only for the middle process, which exits at once.
pub fn detach() -> io::Result<Detached> {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, setsid, ForkResult};
    // SAFETY: single-threaded here (called before logging and shipping start).
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Parent { child } => {
            return match waitpid(child, None).map_err(io::Error::from)? {
                WaitStatus::Exited(_, 0) => Ok(Detached::Caller),
                other => Err(io::Error::other(format!("the detaching process ended with {other:?}"))),
            };
        }
        ForkResult::Child => {}
    }
    let middle = setsid().and_then(|_| {
        // SAFETY: still single-threaded.
        unsafe { fork() }
    });
    match middle {
        Ok(ForkResult::Child) => {}
        Ok(ForkResult::Parent { .. }) => std::process::exit(0),
        Err(_) => std::process::exit(1),
    }
    nix::unistd::chdir("/").map_err(io::Error::from)?;
    let null = fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    nix::unistd::dup2_stdin(&null).map_err(io::Error::from)?;
    nix::unistd::dup2_stdout(&null).map_err(io::Error::from)?;
    nix::unistd::dup2_stderr(&null).map_err(io::Error::from)?;
    io::stdout().flush()?;
    Ok(Detached::Daemon)
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGTERM, SIGINT and SIGHUP set the returned flag: the runner finishes
/// the delivery under way and stops before the next (systemd's stop).
pub fn stop_on_signals() -> io::Result<&'static AtomicBool> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(s, &action) }.map_err(io::Error::from)?;
    }
    Ok(&STOP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IniFile;

    fn config(dir: &Path, extra: &str) -> ArchiverConfig {
        let text = format!(
            "slaves: sb, sc\nl_archivedir: {}/q\nr_archivedir: /r\n{extra}",
            dir.display()
        );
        let cfg = ArchiverConfig::from_ini(&IniFile::parse(&dir.join("a.ini"), &text).unwrap()).unwrap();
        for s in cfg.slaves() {
            fs::create_dir_all(cfg.shipping.as_ref().unwrap().queue_dir(s)).unwrap();
        }
        cfg
    }

    fn failing_since(cfg: &ArchiverConfig, slave: &str, last_attempt: i64) {
        let st = SlaveState {
            failing: true,
            last_attempt,
            since: last_attempt,
            failures: 1,
            ..Default::default()
        };
        st.save(&cfg.shipping.as_ref().unwrap().queue_dir(slave).join(STATE_FILE))
            .unwrap();
    }

    #[test]
    fn pause_until_the_next_due_slave_never_spinning() {
        let d = tempfile::tempdir().unwrap();
        let cfg = config(d.path(), "queue_wait: 20");
        let wait = Duration::from_secs(20);
        // Nothing queued: a service looks again after queue_wait.
        assert_eq!(pause(&cfg, &[]), wait);
        let empty = Event::Delivered { delivered: 1, depth: 0 };
        assert_eq!(pause(&cfg, &[("sb".into(), empty.clone())]), wait);
        // A failing slave is due queue_wait after its last attempt.
        failing_since(&cfg, "sb", now_unix() - 5);
        let failed = Event::Failed {
            error: "down".into(),
            depth: 2,
        };
        let p = pause(&cfg, &[("sb".into(), failed.clone()), ("sc".into(), empty)]);
        assert!(
            (Duration::from_secs(14)..=wait - Duration::from_secs(5)).contains(&p),
            "{p:?}"
        );
        // A busy queue, or one that grew while shipping: soon, not at once.
        let busy = Event::Skipped { depth: 1 };
        assert_eq!(pause(&cfg, &[("sb".into(), failed), ("sc".into(), busy)]), MIN_PAUSE);
        let grew = Event::Delivered { delivered: 1, depth: 3 };
        assert_eq!(pause(&cfg, &[("sc".into(), grew)]), MIN_PAUSE);
        // queue_wait: 0 must not spin.
        let cfg0 = config(d.path(), "queue_wait: 0");
        assert_eq!(pause(&cfg0, &[]), MIN_PAUSE);
    }

    #[test]
    fn one_lock_per_queue_root_and_a_stale_pid_file_does_not_count() {
        let d = tempfile::tempdir().unwrap();
        let cfg = config(d.path(), "");
        let root = &cfg.shipping.as_ref().unwrap().queue_root;
        let pid_file = root.join(RUNNER_LOCK_FILE);
        // A pid file left by a runner killed with -9 (pid 1 is alive, even).
        fs::write(&pid_file, "1\n").unwrap();
        assert_eq!(probe(root).unwrap(), Probe::Idle);
        let held = acquire(&cfg).unwrap().unwrap();
        assert_eq!(fs::read_to_string(&pid_file).unwrap(), "1\n", "not recorded yet");
        held.record_pid().unwrap();
        let me = std::process::id();
        assert_eq!(fs::read_to_string(&pid_file).unwrap(), format!("{me}\n"));
        assert_eq!(probe(root).unwrap(), Probe::Running(Some(me)));
        assert_eq!(status_line(root), format!("queue runner: running, pid {me}"));
        let t = Instant::now();
        assert_eq!(acquire(&cfg).unwrap().err(), Some(Some(me)));
        assert!(t.elapsed() >= LOCK_WAIT, "a second runner waits out a probe first");
        drop(held);
        assert_eq!(fs::read_to_string(&pid_file).unwrap(), "", "emptied on a normal end");
        assert_eq!(status_line(root), "queue runner: not running");
    }

    #[test]
    fn a_probe_is_never_taken_for_a_runner() {
        // An archive call's probe while `--status` (or another archive
        // call) probes must not conclude that a runner ships its file.
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_path_buf();
        let until = Instant::now() + Duration::from_millis(1500);
        let other = std::thread::spawn({
            let root = root.clone();
            move || {
                while Instant::now() < until {
                    probe(&root).unwrap();
                }
            }
        });
        let mut seen = 0;
        while Instant::now() < until {
            if probe(&root).unwrap() != Probe::Idle {
                seen += 1;
            }
        }
        other.join().unwrap();
        assert_eq!(seen, 0, "probes saw each other as a running queue runner");
        // A runner's lock still counts.
        let held = take(&root, true).unwrap().unwrap();
        assert_eq!(probe(&root).unwrap(), Probe::Running(Some(std::process::id())));
        drop(held);
    }

    #[test]
    fn no_runner_for_sync_mode_off_or_nothing_queued() {
        // start_if_needed returns before probing (which would create the lock file).
        let d = tempfile::tempdir().unwrap();
        let left = [(
            "sb".to_string(),
            Event::Failed {
                error: "x".into(),
                depth: 1,
            },
        )];
        for extra in ["queue_runner: off", "ship_mode: sync"] {
            let cfg = config(d.path(), extra);
            start_if_needed(&cfg, &left);
            assert!(!d.path().join("q").join(RUNNER_LOCK_FILE).exists(), "{extra}");
        }
        let cfg = config(d.path(), "");
        start_if_needed(&cfg, &[("sb".to_string(), Event::Delivered { delivered: 1, depth: 0 })]);
        assert!(!d.path().join("q").join(RUNNER_LOCK_FILE).exists());
    }
}
