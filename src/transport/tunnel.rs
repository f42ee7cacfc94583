//! An ssh tunnel for pitrkit's SQL session: `ssh -N -L local:remote host`,
//! for sites where only ssh reaches the master (pitrtools ran psql on the
//! master through ssh and needed nothing more).
//!
//! The tunnel has its own ssh connection, not the shared ControlPersist
//! master: a forward requested through a shared master belongs to that
//! master and outlives the process that asked for it, so it could not be
//! torn down with the process. This one lives exactly as long as the
//! session: its process group is killed on drop, and it gets SIGTERM if
//! pitrkit dies first (PR_SET_PDEATHSIG).
//!
//! The local end is a unix socket in a private directory (no other local
//! user can reach the master through it), except when TLS is required:
//! the `postgres` crate, like libpq, speaks TLS only over TCP, so then it
//! is an ephemeral port on 127.0.0.1 (checked to be ssh's own listener).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ssh::SshSettings;

/// Where a forward ends on the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Tcp {
        host: String,
        port: u16,
    },
    /// A unix socket file (`<dir>/.s.PGSQL.<port>`).
    Unix(PathBuf),
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Remote::Tcp { host, port } => write!(f, "{host}:{port}"),
            Remote::Unix(p) => write!(f, "the unix socket {}", p.display()),
        }
    }
}

/// Where a forward starts on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// A port on 127.0.0.1.
    Tcp(u16),
    /// A unix socket `<dir>/.s.PGSQL.<port>`, as PostgreSQL clients name it.
    Unix { dir: PathBuf, port: u16 },
}

#[derive(Debug, Clone)]
pub struct Forward {
    pub local: Local,
    pub remote: Remote,
}

/// The `-L` argument: `local:remote`, IPv6 hosts in brackets.
pub fn forward_spec(local: &Local, remote: &Remote) -> String {
    let l = match local {
        Local::Tcp(p) => format!("127.0.0.1:{p}"),
        Local::Unix { dir, port } => format!("{}/.s.PGSQL.{port}", dir.display()),
    };
    let r = match remote {
        Remote::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
        Remote::Tcp { host, port } => format!("{host}:{port}"),
        Remote::Unix(p) => p.display().to_string(),
    };
    format!("{l}:{r}")
}

/// A running tunnel; dropping it ends it.
pub struct Tunnel {
    child: Child,
    pub host: String,
    pub forwards: Vec<Forward>,
    log: PathBuf,
    // Last: removed after ssh is gone.
    _dir: tempfile::TempDir,
}

impl Tunnel {
    /// Starts ssh with one forward per `(remote, tcp_local)` and waits until
    /// every local end listens. `tcp_local` asks for a TCP local end (TLS).
    pub fn open(
        ssh: &SshSettings,
        host: &str,
        remotes: &[(Remote, bool)],
        timeout: Duration,
    ) -> Result<Tunnel, String> {
        // Short and private: a unix socket path is limited to ~100 bytes, and
        // whoever can reach the socket reaches the master.
        let dir = tempfile::Builder::new()
            .prefix("pitrkit-tunnel-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("creating a private directory for the ssh tunnel in /tmp: {e}"))?;
        let forwards = plan_forwards(dir.path(), remotes)?;
        let mut c = ssh_command(ssh, host, &forwards)?;
        let log = dir.path().join("ssh.log");
        let stderr = std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        log::debug!("ssh tunnel: {c:?}");
        let child = c.spawn().map_err(|e| format!("cannot start ssh for the tunnel: {e}"))?;
        Tunnel {
            child,
            host: host.to_string(),
            forwards,
            log,
            _dir: dir,
        }
        .wait_listening(timeout)
    }

    /// Waits until every local end listens; on error the tunnel is dropped,
    /// which ends ssh.
    fn wait_listening(mut self, timeout: Duration) -> Result<Tunnel, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "ssh to {} for the tunnel exited ({status}) before forwarding: {}",
                    self.host,
                    self.messages()
                ));
            }
            let pid = self.child.id();
            if self.forwards.iter().all(|f| listening(&f.local, pid)) {
                return Ok(self);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "ssh to {} did not set up the tunnel within {}s: {}",
                    self.host,
                    timeout.as_secs(),
                    self.messages()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What ssh said (the last lines), for error messages: a refused
    /// forward shows as "open failed: connect failed: ...".
    pub fn messages(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            return "(ssh printed nothing)".into();
        }
        lines[lines.len().saturating_sub(6)..].join(" / ")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        use nix::sys::signal::{killpg, Signal};
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// One forward per remote: a unix socket in `dir`, or (`tcp`) a free port
/// on 127.0.0.1.
fn plan_forwards(dir: &Path, remotes: &[(Remote, bool)]) -> Result<Vec<Forward>, String> {
    let mut forwards = Vec::new();
    for (i, (remote, tcp)) in remotes.iter().enumerate() {
        let local = if *tcp {
            Local::Tcp(free_local_port().map_err(|e| format!("finding a free port on 127.0.0.1: {e}"))?)
        } else {
            Local::Unix {
                dir: dir.to_path_buf(),
                port: 5432 + i as u16,
            }
        };
        forwards.push(Forward {
            local,
            remote: remote.clone(),
        });
    }
    Ok(forwards)
}

/// `ssh -N -L ... host`, in its own process group and tied to pitrkit's
/// life; stdio is left to the caller.
fn ssh_command(ssh: &SshSettings, host: &str, forwards: &[Forward]) -> Result<Command, String> {
    let program = ssh.program().map_err(|e| e.to_string())?;
    let mut c = Command::new(program);
    // First, so that they win over the user's own options (ssh keeps the
    // first value it sees): no shared master (see the module comment),
    // and no silently missing forward.
    c.args([
        "-o",
        "ControlMaster=no",
        "-o",
        "ControlPath=none",
        "-o",
        "ExitOnForwardFailure=yes",
    ]);
    c.args(ssh.options()).arg("-N");
    for f in forwards {
        c.arg("-L").arg(forward_spec(&f.local, &f.remote));
    }
    c.arg(host);
    c.process_group(0);
    let parent = std::process::id();
    // SAFETY: only async-signal-safe system calls (prctl, getppid, _exit)
    // run between fork and exec.
    unsafe {
        c.pre_exec(move || {
            // Never outlive pitrkit, even if it is killed with SIGKILL.
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
            if nix::unistd::getppid().as_raw() as u32 != parent {
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
    Ok(c)
}

fn free_local_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// The local end exists, and (TCP) is a listening socket of ssh's own, not
/// of someone who took the port first.
fn listening(local: &Local, pid: u32) -> bool {
    match local {
        Local::Unix { dir, port } => dir.join(format!(".s.PGSQL.{port}")).exists(),
        Local::Tcp(port) => tcp_listener_inode(*port).is_some_and(|inode| owns_socket(pid, inode)),
    }
}

/// The inode of the socket listening on 127.0.0.1:`port` (/proc/net/tcp).
fn tcp_listener_inode(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let want = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // local_address, rem_address, st (0A: LISTEN), ..., inode (10th)
        (f.get(1) == Some(&want.as_str()) && f.get(3) == Some(&"0A"))
            .then(|| f.get(9)?.parse().ok())
            .flatten()
    })
}

fn owns_socket(pid: u32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == Path::new(&want)))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_specs() {
        let unix = Local::Unix {
            dir: PathBuf::from("/tmp/pitrkit-tunnel-x"),
            port: 5432,
        };
        assert_eq!(
            forward_spec(&unix, &Remote::Unix(PathBuf::from("/var/run/postgresql/.s.PGSQL.5433"))),
            "/tmp/pitrkit-tunnel-x/.s.PGSQL.5432:/var/run/postgresql/.s.PGSQL.5433"
        );
        assert_eq!(
            forward_spec(
                &Local::Tcp(40000),
                &Remote::Tcp {
                    host: "::1".into(),
                    port: 5432
                }
            ),
            "127.0.0.1:40000:[::1]:5432"
        );
    }

    #[test]
    fn a_tcp_listener_is_found_and_attributed_to_its_process() {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let inode = tcp_listener_inode(port).expect("listener in /proc/net/tcp");
        assert!(owns_socket(std::process::id(), inode));
        assert!(!owns_socket(1, inode));
        drop(l);
        assert!(tcp_listener_inode(port).is_none());
    }
}
