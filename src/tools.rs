//! Finding the external programs we drive (rsync, ssh, PostgreSQL's
//! binaries) and running them with a time limit.

use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wait_timeout::ChildExt;

#[derive(Debug, thiserror::Error)]
#[error("{name} not found (searched {searched}); {install}")]
pub struct NotFound {
    pub name: String,
    pub searched: String,
    pub install: String,
}

/// Debian/Ubuntu package that ships a program, for the error message.
fn package_hint(name: &str) -> String {
    let pkg = match name {
        "rsync" => "rsync",
        "ssh" => "openssh-client",
        "sshd" => "openssh-server",
        "pg_ctl" | "initdb" | "postgres" | "pg_controldata" => "postgresql",
        "psql" | "pg_basebackup" => "postgresql-client",
        _ => return format!("install {name} or add its directory to 'includepath'"),
    };
    format!("install it (apt-get install {pkg}) or add its directory to 'includepath'")
}

/// Resolves a program: an explicit path from the config wins (it must be
/// executable); otherwise `includepath` directories, then PATH.
pub fn find_program(name: &str, explicit: Option<&Path>, includepath: &[PathBuf]) -> Result<PathBuf, NotFound> {
    if let Some(p) = explicit {
        if is_executable(p) {
            return Ok(p.to_path_buf());
        }
        return Err(NotFound {
            name: name.into(),
            searched: p.display().to_string(),
            install: format!(
                "the configured path is not an executable file; fix it or remove the key to search PATH ({})",
                package_hint(name)
            ),
        });
    }
    let mut dirs: Vec<PathBuf> = includepath.to_vec();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let joined = std::env::join_paths(&dirs).unwrap_or_default();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    which::which_in(name, Some(&joined), cwd).map_err(|_| NotFound {
        name: name.into(),
        searched: if dirs.is_empty() {
            "an empty PATH".into()
        } else {
            joined.to_string_lossy().into_owned()
        },
        install: package_hint(name),
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// PostgreSQL server binary directories, newest major version first: Debian's
/// `/usr/lib/postgresql/<ver>/bin`, PGDG RPM's `/usr/pgsql-<ver>/bin`, then
/// wherever `pg_ctl` on PATH lives.
pub fn postgres_bindirs() -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    let mut scan = |parent: &str, prefix: &str| {
        let Ok(rd) = std::fs::read_dir(parent) else { return };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(ver) = name.strip_prefix(prefix) else { continue };
            let Some(major) = ver.split('.').next().and_then(|v| v.parse::<u32>().ok()) else {
                continue;
            };
            let bin = e.path().join("bin");
            if bin.join("pg_ctl").exists() {
                found.push((major, bin));
            }
        }
    };
    scan("/usr/lib/postgresql", "");
    scan("/usr", "pgsql-");
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    let mut out: Vec<PathBuf> = found.into_iter().map(|(_, p)| p).collect();
    if let Some(dir) = which::which("pg_ctl")
        .ok()
        .and_then(|p| p.canonicalize().ok())
        .and_then(|c| c.parent().map(Path::to_path_buf))
    {
        if !out.contains(&dir) {
            out.push(dir);
        }
    }
    out
}

/// A command that runs `program` as `user` through `runuser` (we are root
/// and PostgreSQL refuses to run as root), or directly when `user` is None.
pub fn command_as(program: &Path, user: Option<&str>) -> std::process::Command {
    match user {
        Some(u) => {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", u, "--"]).arg(program);
            c
        }
        None => std::process::Command::new(program),
    }
}

/// How a command run by [`run_bounded`] ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// The time limit ran out and the process group was killed.
    pub timed_out: bool,
    /// Captured output (empty unless `capture` was asked for).
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// How long to wait for the output pipes to close once the program exited
/// without a time limit (a stray grandchild may hold them open).
const PIPE_GRACE: Duration = Duration::from_secs(5);

fn kill_group(pgid: u32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Runs `cmd` in its own process group, so that a time-out kills everything
/// it started (ssh under rsync, a hook's children), not just the first
/// process. `input` is written to its stdin from a thread (stdin is
/// /dev/null otherwise); with `capture`, stdout and stderr are read by
/// threads as they come (no pipe-full deadlock), else they are inherited.
/// `timeout` bounds the whole run; `None` means no limit.
pub fn run_bounded(
    cmd: &mut Command,
    input: Option<Vec<u8>>,
    capture: bool,
    timeout: Option<Duration>,
) -> io::Result<Finished> {
    run(cmd, input, capture, timeout, None)
}

/// [`run_bounded`] with stdout captured and handed to `on_stdout` as it
/// arrives (progress reports) instead of being collected; stderr is collected.
pub fn run_streaming(
    cmd: &mut Command,
    timeout: Option<Duration>,
    on_stdout: &mut dyn FnMut(&[u8]),
) -> io::Result<Finished> {
    run(cmd, None, true, timeout, Some(on_stdout))
}

/// Where streamed stdout goes.
type OnStdout<'a> = &'a mut dyn FnMut(&[u8]);

/// What the threads watching a child report.
enum Watch {
    Data(usize, Vec<u8>),
    Eof,
    Exited(io::Result<ExitStatus>),
}

/// Reads `pipe` in chunks as they come, tagged `i` (0 stdout, 1 stderr).
fn forward(i: usize, mut pipe: Box<dyn Read + Send>, tx: mpsc::Sender<Watch>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send(Watch::Data(i, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(Watch::Eof);
    });
}

/// Output inherited: only the exit (or the time-out) to wait for, here.
fn wait_only(mut child: std::process::Child, deadline: Option<Instant>) -> io::Result<Finished> {
    let mut timed_out = false;
    let status = match deadline {
        None => child.wait()?,
        Some(d) => match child.wait_timeout(d.saturating_duration_since(Instant::now()))? {
            Some(s) => s,
            None => {
                timed_out = true;
                // Not reaped yet, so the group id cannot have been reused.
                kill_group(child.id());
                child.wait()?
            }
        },
    };
    Ok(Finished {
        status,
        timed_out,
        stdout: Vec::new(),
        stderr: Vec::new(),
    })
}

fn run(
    cmd: &mut Command,
    input: Option<Vec<u8>>,
    capture: bool,
    timeout: Option<Duration>,
    on_stdout: Option<OnStdout>,
) -> io::Result<Finished> {
    let deadline = timeout.map(|t| Instant::now() + t);
    cmd.process_group(0)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    if capture {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = cmd.spawn()?;
    let pgid = child.id();
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        // A program may fill its output pipe before reading all of its input.
        // EPIPE (it exited early) is reported through its exit status.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    let (tx, rx) = mpsc::channel::<Watch>();
    let mut open = 0;
    let pipes: [Option<Box<dyn Read + Send>>; 2] = [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    for (i, pipe) in pipes.into_iter().enumerate() {
        if let Some(pipe) = pipe {
            open += 1;
            forward(i, pipe, tx.clone());
        }
    }
    if open == 0 {
        return wait_only(child, deadline);
    }
    std::thread::spawn(move || {
        let _ = tx.send(Watch::Exited(child.wait()));
    });
    watch(&rx, open, pgid, deadline, on_stdout)
}

/// Collects what the watching threads report until the child exited and its
/// pipes closed, enforcing the deadline.
fn watch(
    rx: &mpsc::Receiver<Watch>,
    mut open: usize,
    pgid: u32,
    deadline: Option<Instant>,
    mut on_stdout: Option<OnStdout>,
) -> io::Result<Finished> {
    let mut out: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let (mut status, mut timed_out, mut killed) = (None, false, false);
    // Once it exited: how long its output pipes may stay open (a stray
    // grandchild may hold them) before the group is killed, then given up on.
    let mut grace = None;
    while status.is_none() || open > 0 {
        let until = match status {
            None if killed => None,
            None => deadline,
            Some(_) => grace,
        };
        let msg = match until {
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(t) => rx.recv_timeout(t.saturating_duration_since(Instant::now())),
        };
        match msg {
            Ok(Watch::Data(0, b)) => match on_stdout.as_mut() {
                Some(f) => f(&b),
                None => out[0].extend_from_slice(&b),
            },
            Ok(Watch::Data(i, b)) => out[i].extend_from_slice(&b),
            Ok(Watch::Eof) => open -= 1,
            Ok(Watch::Exited(s)) => {
                status = Some(s?);
                grace = Some(match deadline {
                    Some(d) if !killed => d,
                    _ => Instant::now() + PIPE_GRACE,
                });
            }
            Err(mpsc::RecvTimeoutError::Timeout) if !killed => {
                // Not reaped yet (or something it started holds the pipes):
                // the group id cannot have been reused.
                timed_out |= status.is_none();
                kill_group(pgid);
                killed = true;
                if status.is_some() {
                    grace = Some(Instant::now() + PIPE_GRACE);
                }
            }
            // Give up on the output; the reader threads end with the process.
            Err(_) => break,
        }
    }
    let [stdout, stderr] = out;
    Ok(Finished {
        status: status.ok_or_else(|| io::Error::other("lost track of the child process"))?,
        timed_out,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_must_be_executable() {
        assert!(find_program("sh", Some(Path::new("/bin/sh")), &[]).is_ok());
        let e = find_program("rsync", Some(Path::new("/nonexistent/rsync")), &[]).unwrap_err();
        assert!(e.to_string().contains("apt-get install rsync"), "{e}");
    }

    #[test]
    fn includepath_is_searched_first() {
        let d = tempfile::tempdir().unwrap();
        let fake = d.path().join("rsync");
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_program("rsync", None, &[d.path().to_path_buf()]).unwrap(), fake);
        let e = find_program("no-such-program-xyz", None, &[]).unwrap_err();
        assert!(e.to_string().contains("includepath"), "{e}");
    }

    #[test]
    fn run_bounded_captures_large_output_and_feeds_stdin() {
        // More than a pipe buffer on both streams at once: no deadlock.
        let mut c = Command::new("/bin/sh");
        c.args([
            "-c",
            "cat; head -c 300000 /dev/zero; head -c 200000 /dev/zero >&2; exit 3",
        ]);
        let f = run_bounded(&mut c, Some(b"hello ".to_vec()), true, Some(Duration::from_secs(20))).unwrap();
        assert!(!f.timed_out);
        assert_eq!(f.status.code(), Some(3));
        assert_eq!(&f.stdout[..6], b"hello ");
        assert_eq!(f.stdout.len(), 300006);
        assert_eq!(f.stderr.len(), 200000);
    }

    #[test]
    fn run_bounded_kills_the_whole_group_on_timeout() {
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("pid");
        let mut c = Command::new("/bin/sh");
        c.arg("-c")
            .arg(format!("sleep 60 & echo $! > {}; wait", pidfile.display()));
        let t = Instant::now();
        let f = run_bounded(&mut c, None, true, Some(Duration::from_millis(500))).unwrap();
        assert!(f.timed_out);
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        // The background sleep (a grandchild) must be gone too.
        let gone = (0..100).any(|_| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let alive = stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'));
            if alive {
                std::thread::sleep(Duration::from_millis(50));
            }
            !alive
        });
        assert!(gone, "grandchild {pid} survived the time-out");
    }

    #[test]
    fn run_streaming_hands_over_stdout_as_it_comes() {
        let mut c = Command::new("/bin/sh");
        // The second line only comes after the first was seen: streamed, not collected.
        c.args(["-c", "echo one; sleep 0.3; echo two >&2; echo three"]);
        let mut seen = Vec::new();
        let f = run_streaming(&mut c, Some(Duration::from_secs(20)), &mut |b| {
            seen.extend_from_slice(b)
        })
        .unwrap();
        assert_eq!(f.status.code(), Some(0));
        assert_eq!(seen, b"one\nthree\n");
        assert!(f.stdout.is_empty());
        assert_eq!(f.stderr, b"two\n");
    }

    #[test]
    fn run_bounded_does_not_hang_on_a_grandchild_holding_the_pipe() {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "sleep 60 & echo done"]);
        let t = Instant::now();
        let f = run_bounded(&mut c, None, true, Some(Duration::from_secs(1))).unwrap();
        assert_eq!(f.status.code(), Some(0));
        assert_eq!(f.stdout, b"done\n");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }
}
