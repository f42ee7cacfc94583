//! Copying a directory tree from a remote host with rsync (base backups).

use std::path::Path;
use std::process::Command;

use super::error::{Cause, Hint, TransportError};
use super::rsync::{Remote, RsyncSettings};
use super::ssh::{rsync_host, SshSettings};
use crate::tools;

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

fn pull_command(
    ssh: &SshSettings,
    settings: &RsyncSettings,
    job: &Pull,
    progress: bool,
) -> Result<Command, TransportError> {
    let program = tools::find_program("rsync", settings.program.as_deref(), &settings.includepath)?;
    let mut c = Command::new(program);
    c.arg("-e").arg(ssh.rsync_rsh()?).arg("--archive");
    if job.delete {
        c.args(["--delete", "--delete-excluded"]);
    }
    if !settings.timeout.is_zero() {
        c.arg(format!("--timeout={}", settings.timeout.as_secs()));
    }
    if progress {
        c.args(["--info=progress2", "--no-inc-recursive"]);
    }
    c.args(&job.filters)
        .args(&settings.flags)
        .arg("--")
        .arg(format!("{}:{}/", rsync_host(job.host), job.src.display()))
        .arg(format!("{}/", job.dest.display()));
    Ok(c)
}

/// Splits rsync's --info=progress2 output into lines (they end in '\r') and
/// reports the cumulative byte count each one starts with.
struct ProgressLines<'a> {
    line: Vec<u8>,
    report: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl ProgressLines<'_> {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\r' || b == b'\n' {
                if let (Some(cb), Some(n)) = (self.report, parse_progress(&self.line)) {
                    cb(n);
                }
                self.line.clear();
            } else {
                self.line.push(b);
            }
        }
    }
}

/// Copies `job.src/` from `job.host` into `job.dest/`. `progress` receives
/// the cumulative bytes transferred (from rsync's --info=progress2).
pub fn pull_tree(
    ssh: &SshSettings,
    settings: &RsyncSettings,
    job: &Pull,
    progress: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<Pulled, TransportError> {
    let mut c = pull_command(ssh, settings, job, progress.is_some())?;
    log::debug!("running {c:?}");
    let remote = Remote {
        host: job.host,
        dir: job.src,
        ssh,
        rsync: settings,
    };
    let mut lines = ProgressLines {
        line: Vec::new(),
        report: progress,
    };
    // rsync's own --timeout bounds a stalled copy.
    let out = tools::run_streaming(&mut c, None, &mut |b| lines.feed(b)).map_err(|e| {
        TransportError::failed(
            "copying",
            remote.target(),
            Cause::Start {
                program: "rsync",
                error: e.to_string(),
            },
            Hint::LocalRsync,
        )
    })?;
    match out.status.code() {
        Some(0) => Ok(Pulled::default()),
        Some(24) => Ok(Pulled { vanished: true }),
        code => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
            Err(remote.fail("copying", Cause::Rsync { code, stderr: tail }))
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
    fn progress_is_reported_across_chunk_boundaries() {
        let seen = std::sync::Mutex::new(Vec::new());
        let report = |n: u64| seen.lock().unwrap().push(n);
        let mut lines = ProgressLines {
            line: Vec::new(),
            report: Some(&report),
        };
        lines.feed(b"  1,000  1%\r  2,0");
        lines.feed(b"00  2%\rsent 3 bytes\n");
        assert_eq!(*seen.lock().unwrap(), vec![1000, 2000]);
    }
}
