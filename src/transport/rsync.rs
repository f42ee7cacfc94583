//! rsync over OpenSSH to a remote directory, without ever replacing a file.
//!
//! rsync writes each file under a temporary dot-name in the destination
//! directory and renames it when complete, so a standby reading the directory
//! never sees half a segment. `--ignore-existing` makes rsync skip names that
//! already exist remotely; those are then compared by checksum (rare: only
//! after a crash or a misconfiguration), so an identical file counts as
//! delivered and a different one is reported as a conflict, never overwritten.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::ssh::{rsync_host, SshSettings};
use crate::tools;

#[derive(Debug, Clone)]
pub struct RsyncSettings {
    pub program: Option<PathBuf>,
    pub flags: Vec<String>,
    pub timeout: Duration,
    /// rsync --fsync (3.2.4+ on both ends) plus a remote directory sync.
    pub fsync: bool,
    pub includepath: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    NotFound(#[from] tools::NotFound),
    #[error("{what} {target} failed: {detail}\n  what to do: {hint}")]
    Failed {
        what: &'static str,
        target: String,
        detail: String,
        hint: String,
    },
}

/// One remote directory reached over ssh.
pub struct Remote<'a> {
    pub host: &'a str,
    pub dir: &'a Path,
    pub ssh: &'a SshSettings,
    pub rsync: &'a RsyncSettings,
}

/// What a push did with each requested file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Transferred now.
    pub sent: Vec<String>,
    /// Skipped because the name already existed remotely.
    pub existing: Vec<String>,
}

/// rsync's documented exit codes, in words.
fn rsync_exit_meaning(code: i32) -> &'static str {
    match code {
        1 => "syntax or usage error",
        2 => "protocol incompatibility",
        3 => "errors selecting input/output files or directories",
        5 => "error starting the client-server protocol",
        10 => "error in socket I/O",
        11 => "error in file I/O",
        12 => "error in the rsync protocol data stream",
        14 => "error in IPC code",
        20 => "interrupted",
        23 => "partial transfer due to error",
        24 => "some source files vanished",
        30 => "timeout in data send/receive",
        35 => "timeout waiting for the connection",
        127 => "rsync not found on the remote side",
        255 => "ssh failed (host unreachable, authentication or host key problem)",
        _ => "unexpected error",
    }
}

impl Remote<'_> {
    fn target(&self) -> String {
        format!("{}:{}", self.host, self.dir.display())
    }

    fn who(&self) -> String {
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| "the current user".into());
        let user = self.ssh.user.as_deref().map(|u| format!("{u}@")).unwrap_or_default();
        format!(
            "as OS user '{me}', `ssh {user}{}` must log in without a prompt",
            self.host
        )
    }

    fn hint_for(&self, code: Option<i32>) -> String {
        match code {
            Some(255) => format!(
                "check that sshd runs on {} and that {}; a changed host key must be fixed in known_hosts",
                self.host,
                self.who()
            ),
            Some(12) | Some(127) => format!(
                "check that rsync is installed on {} and that the remote login prints nothing (no echo in .bashrc)",
                self.host
            ),
            Some(3) | Some(11) | Some(23) => format!(
                "check that {} exists on {} and is writable by the ssh user (`pitrkit archiver -I` checks this)",
                self.dir.display(),
                self.host
            ),
            Some(30) | Some(35) => {
                "the network or the slave is too slow or stalled; check connectivity (rsync_timeout)".into()
            }
            _ => format!(
                "run the archiver with debug: on and ssh_debug: on, and try `ssh {}` by hand",
                self.host
            ),
        }
    }

    fn rsync_base(&self) -> Result<Command, TransportError> {
        let program = tools::find_program("rsync", self.rsync.program.as_deref(), &self.rsync.includepath)?;
        let mut c = Command::new(program);
        c.arg("-e").arg(self.ssh.rsync_rsh()?);
        if !self.rsync.timeout.is_zero() {
            c.arg(format!("--timeout={}", self.rsync.timeout.as_secs()));
        }
        c.args(["--from0", "--files-from=-", "--out-format=%i %n"]);
        Ok(c)
    }

    /// Runs rsync with `names` (relative to `src_dir`) fed on stdin; returns
    /// the itemized lines.
    fn run_listed(
        &self,
        mut c: Command,
        what: &'static str,
        src_dir: &Path,
        names: &[String],
    ) -> Result<Vec<String>, TransportError> {
        c.args(&self.rsync.flags)
            .arg("--")
            .arg(format!("{}/", src_dir.display()))
            .arg(format!("{}:{}/", rsync_host(self.host), self.dir.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        log::debug!("running {c:?}");
        let fail = |detail: String, code: Option<i32>| TransportError::Failed {
            what,
            target: self.target(),
            detail,
            hint: self.hint_for(code),
        };
        let mut child = c.spawn().map_err(|e| fail(format!("cannot start rsync: {e}"), None))?;
        let mut list = Vec::new();
        for n in names {
            list.extend_from_slice(n.as_bytes());
            list.push(0);
        }
        let mut stdin = child.stdin.take().expect("piped stdin");
        // Write from a thread: rsync may fill its stdout pipe before reading all of stdin.
        let writer = std::thread::spawn(move || stdin.write_all(&list));
        let out = child
            .wait_with_output()
            .map_err(|e| fail(format!("waiting for rsync: {e}"), None))?;
        let _ = writer.join();
        if !out.status.success() {
            let code = out.status.code();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
            return Err(fail(
                match code {
                    Some(c) => format!("rsync exit {c} ({}): {tail}", rsync_exit_meaning(c)),
                    None => format!("rsync killed by a signal: {tail}"),
                },
                code,
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Sends `names` from `src_dir`; never replaces a file that exists remotely.
    pub fn push(&self, src_dir: &Path, names: &[String]) -> Result<PushReport, TransportError> {
        if names.is_empty() {
            return Ok(PushReport::default());
        }
        let mut c = self.rsync_base()?;
        // --times: restore's apply delay reads the archived file's mtime.
        c.args(["--times", "--perms", "--ignore-existing"]);
        if self.rsync.fsync {
            c.arg("--fsync");
        }
        let lines = self.run_listed(c, "shipping WAL to", src_dir, names)?;
        let sent: std::collections::HashSet<String> = lines
            .iter()
            .filter_map(|l| l.split_once(' '))
            .filter(|(item, _)| item.starts_with(">f") || item.starts_with("<f"))
            .map(|(_, n)| n.to_string())
            .collect();
        let (sent, existing): (Vec<String>, Vec<String>) = names.iter().cloned().partition(|n| sent.contains(n));
        Ok(PushReport { sent, existing })
    }

    /// Of `names` (which exist remotely), those whose remote content differs.
    pub fn differing(&self, src_dir: &Path, names: &[String]) -> Result<Vec<String>, TransportError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.rsync_base()?;
        c.args(["--checksum", "--dry-run"]);
        let lines = self.run_listed(c, "comparing WAL with", src_dir, names)?;
        Ok(lines
            .iter()
            .filter_map(|l| l.split_once(' '))
            .filter(|(item, _)| item.starts_with(">f") || item.starts_with("<f"))
            .map(|(_, n)| n.to_string())
            .collect())
    }

    fn ssh_run(&self, what: &'static str, words: &[&str]) -> Result<std::process::Output, TransportError> {
        let mut c = self.ssh.command(self.host, words)?;
        c.stdin(Stdio::null());
        log::debug!("running {c:?}");
        c.output().map_err(|e| TransportError::Failed {
            what,
            target: self.target(),
            detail: format!("cannot start ssh: {e}"),
            hint: self.hint_for(None),
        })
    }

    fn ssh_check(
        &self,
        what: &'static str,
        words: &[&str],
        detail: impl FnOnce(i32, &str) -> String,
    ) -> Result<(), TransportError> {
        let out = self.ssh_run(what, words)?;
        if out.status.success() {
            return Ok(());
        }
        let code = out.status.code().unwrap_or(-1);
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(TransportError::Failed {
            what,
            target: self.target(),
            detail: detail(code, &stderr),
            hint: self.hint_for(Some(code)),
        })
    }

    /// Makes the directory entries of files just shipped durable on the
    /// remote host (rsync --fsync covers file data, not the rename).
    pub fn sync_dir(&self) -> Result<(), TransportError> {
        let dir = self.dir.display().to_string();
        self.ssh_check("syncing directory", &["sync", "--", &dir], |c, e| {
            format!("remote `sync` exited {c}: {e}")
        })
    }

    /// For `-I`: reachable, directory present and writable, rsync installed.
    pub fn check(&self) -> Result<(), TransportError> {
        let dir = self.dir.display().to_string();
        self.ssh_check("connecting to", &["true"], |c, e| format!("ssh exit {c}: {e}"))?;
        self.ssh_check("checking", &["test", "-d", &dir], |_, _| {
            "the directory does not exist".into()
        })
        .map_err(|e| {
            with_hint(
                e,
                format!("create it on {}: mkdir -p {dir} (owned by the ssh user)", self.host),
            )
        })?;
        self.ssh_check("checking", &["test", "-w", &dir], |_, _| {
            "the directory is not writable by the ssh user".into()
        })
        .map_err(|e| with_hint(e, format!("on {}: chown the directory to the ssh user", self.host)))?;
        self.ssh_check("checking rsync on", &["rsync", "--version"], |c, e| {
            format!("`rsync --version` exited {c}: {e}")
        })
        .map_err(|e| with_hint(e, format!("install rsync on {} (apt-get install rsync)", self.host)))
    }
}

fn with_hint(e: TransportError, new_hint: String) -> TransportError {
    match e {
        TransportError::Failed {
            what,
            target,
            detail,
            hint,
        } => {
            // A failure to connect at all keeps the connection advice.
            let hint = if detail.starts_with("ssh exit 255") || detail.contains("exit 255") {
                hint
            } else {
                new_hint
            };
            TransportError::Failed {
                what,
                target,
                detail,
                hint,
            }
        }
        other => other,
    }
}

/// One directory tree to copy from a remote host (base backups).
pub struct Pull<'a> {
    pub host: &'a str,
    pub src: &'a Path,
    pub dest: &'a Path,
    /// rsync filter options (`--exclude=...`, `--filter=P ...`), in order.
    pub filters: Vec<String>,
    /// Delete local files that are gone (or excluded) on the remote side.
    pub delete: bool,
}

/// Outcome of a pull: rsync exit 24 (files vanished while copying) is
/// expected during a hot copy, since WAL replay repairs it.
#[derive(Debug, Default)]
pub struct Pulled {
    pub vanished: bool,
}

/// Copies `job.src/` from `job.host` into `job.dest/`. `progress` receives
/// the cumulative bytes transferred (from rsync's --info=progress2).
pub fn pull_tree(
    ssh: &SshSettings,
    settings: &RsyncSettings,
    job: &Pull,
    progress: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<Pulled, TransportError> {
    use std::io::Read;
    let program = tools::find_program("rsync", settings.program.as_deref(), &settings.includepath)?;
    let mut c = Command::new(program);
    c.arg("-e").arg(ssh.rsync_rsh()?).arg("--archive");
    if job.delete {
        c.args(["--delete", "--delete-excluded"]);
    }
    if !settings.timeout.is_zero() {
        c.arg(format!("--timeout={}", settings.timeout.as_secs()));
    }
    if progress.is_some() {
        c.args(["--info=progress2", "--no-inc-recursive"]);
    }
    c.args(&job.filters)
        .args(&settings.flags)
        .arg("--")
        .arg(format!("{}:{}/", rsync_host(job.host), job.src.display()))
        .arg(format!("{}/", job.dest.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    log::debug!("running {c:?}");
    let target = format!("{}:{}", job.host, job.src.display());
    let mut child = c.spawn().map_err(|e| TransportError::Failed {
        what: "copying",
        target: target.clone(),
        detail: format!("cannot start rsync: {e}"),
        hint: "check the rsync installation".into(),
    })?;
    let mut stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // progress2 lines end in '\r'; the first field is the cumulative byte count.
    let mut stdout = child.stdout.take().expect("piped");
    let mut buf = [0u8; 4096];
    let mut line = Vec::new();
    while let Ok(n) = stdout.read(&mut buf) {
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            if b == b'\r' || b == b'\n' {
                if let (Some(cb), Some(bytes)) = (progress, parse_progress(&line)) {
                    cb(bytes);
                }
                line.clear();
            } else {
                line.push(b);
            }
        }
    }
    let status = child.wait().map_err(|e| TransportError::Failed {
        what: "copying",
        target: target.clone(),
        detail: format!("waiting for rsync: {e}"),
        hint: String::new(),
    })?;
    let stderr = err_reader.join().unwrap_or_default();
    match status.code() {
        Some(0) => Ok(Pulled::default()),
        Some(24) => Ok(Pulled { vanished: true }),
        code => {
            let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
            let remote = Remote {
                host: job.host,
                dir: job.src,
                ssh,
                rsync: settings,
            };
            Err(TransportError::Failed {
                what: "copying",
                target,
                detail: match code {
                    Some(c) => format!("rsync exit {c} ({}): {tail}", rsync_exit_meaning(c)),
                    None => format!("rsync killed by a signal: {tail}"),
                },
                hint: remote.hint_for(code),
            })
        }
    }
}

fn parse_progress(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let first = text.split_whitespace().next()?;
    first.replace(',', "").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines() {
        assert_eq!(
            parse_progress(b"  1,234,567  45%   12.34MB/s    0:00:10 (xfr#3, to-chk=0/9)"),
            Some(1234567)
        );
        assert_eq!(parse_progress(b"receiving file list ..."), None);
        assert_eq!(parse_progress(b""), None);
    }

    #[test]
    fn exit_codes_have_words() {
        assert!(rsync_exit_meaning(255).contains("ssh"));
        assert!(rsync_exit_meaning(24).contains("vanished"));
    }
}
