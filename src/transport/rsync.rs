//! rsync over OpenSSH to a remote directory, without ever replacing a file.
//!
//! rsync writes each file under a temporary dot-name in the destination
//! directory and renames it when complete, so a standby reading the directory
//! never sees half a segment. `--ignore-existing` makes rsync skip names that
//! already exist remotely. rsync's silence proves nothing (an option, a
//! filter or a bug can make it skip a file without a word), so every name it
//! did not report as sent is then compared by checksum in a dry run: an
//! identical remote file counts as delivered, a different one is a conflict
//! (never overwritten), and a name rsync says nothing about stays queued.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use super::error::summarize_stderr;
pub use super::error::{Cause, Hint, TransportError};
pub use super::pull::{pull_tree, Pull, Pulled};
use super::ssh::{rsync_host, SshSettings};
use super::{Connect, MountFacts, RemoteMark, Transport};
use crate::tools;

pub use crate::config::RsyncSettings;

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
    /// Itemized by rsync as transferred.
    pub sent: Vec<String>,
    /// Everything else: already there (skipped by --ignore-existing), or not
    /// reported at all. [`Remote::verify`] tells which.
    pub not_sent: Vec<String>,
}

/// How a file rsync did not send compares with the remote file of its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Same bytes: delivered.
    Identical,
    /// No such file on the remote side (rsync would create it).
    Missing,
    /// Different bytes under the same name: a conflict.
    Different,
    /// rsync itemized it in an unexpected way (e.g. a directory of that name).
    Odd(String),
    /// rsync said nothing about it.
    Unreported,
}

/// A file in the remote directory, as `stat` saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteFile {
    pub size: u64,
    /// A regular file (not a symlink, directory, ...).
    pub regular: bool,
}

/// `%i %n` lines by file name, for the names asked about. An itemize string
/// may contain spaces (`.f          NAME`); WAL names never do, so the item
/// is the first word and the name the last.
fn itemized(lines: &[String], names: &[String]) -> HashMap<String, String> {
    let wanted: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    let mut out = HashMap::new();
    for l in lines {
        let words: Vec<&str> = l.split_whitespace().collect();
        if let [item, .., name] = words[..] {
            if wanted.contains(name) {
                out.insert(name.to_string(), item.to_string());
            }
        }
    }
    out
}

fn is_transfer(item: &str) -> bool {
    item.starts_with(">f") || item.starts_with("<f")
}

/// Reads one item of `rsync -ii --checksum --dry-run` (see rsync(1),
/// --itemize-changes): `.f` nothing to change, `>f+++++++++` a new file,
/// any other `>f`/`<f` a file whose content differs.
fn classify(item: Option<&str>) -> Verdict {
    match item {
        None => Verdict::Unreported,
        Some(i) if i.starts_with(".f") => Verdict::Identical,
        Some(i) if is_transfer(i) && i.len() > 2 && i[2..].chars().all(|c| c == '+') => Verdict::Missing,
        Some(i) if is_transfer(i) => Verdict::Different,
        Some(i) => Verdict::Odd(i.to_string()),
    }
}
impl Remote<'_> {
    pub(super) fn target(&self) -> String {
        format!("{}:{}", self.host, self.dir.display())
    }

    pub(super) fn hint_for(&self, code: Option<i32>) -> Hint {
        Hint::ForExit {
            host: self.host.to_string(),
            dir: self.dir.display().to_string(),
            user: self.ssh.user.clone(),
            code,
        }
    }

    pub(super) fn fail(&self, what: &'static str, cause: Cause) -> TransportError {
        TransportError::failed(what, self.target(), cause.clone(), self.hint_for(cause.code()))
    }

    /// `rsync <user flags> -e <ssh> ...`: the user's flags come first so that
    /// pitrkit's own options, later on the line, win where rsync lets a later
    /// option override an earlier one.
    fn rsync_base(&self, user_flags: bool) -> Result<Command, TransportError> {
        let program = tools::find_program("rsync", self.rsync.program.as_deref(), &self.rsync.includepath)?;
        let mut c = Command::new(program);
        if user_flags {
            c.args(&self.rsync.flags);
        }
        c.arg("-e").arg(self.ssh.rsync_rsh()?);
        if !self.rsync.timeout.is_zero() {
            c.arg(format!("--timeout={}", self.rsync.timeout.as_secs()));
        }
        c.args(["--from0", "--files-from=-", "--out-format=%i %n"]);
        Ok(c)
    }

    /// The argument vector of a push (for tests and debug logs).
    fn push_command(&self, src_dir: &Path) -> Result<Command, TransportError> {
        let mut c = self.rsync_base(true)?;
        // --times: restore's apply delay reads the archived file's mtime.
        c.args(["--times", "--perms", "--ignore-existing"]);
        self.endpoints(&mut c, src_dir);
        Ok(c)
    }

    fn verify_command(&self, src_dir: &Path) -> Result<Command, TransportError> {
        // No user flags: this run decides what counts as delivered.
        let mut c = self.rsync_base(false)?;
        c.args(["-ii", "--checksum", "--dry-run"]);
        self.endpoints(&mut c, src_dir);
        Ok(c)
    }

    fn endpoints(&self, c: &mut Command, src_dir: &Path) {
        c.arg("--").arg(format!("{}/", src_dir.display())).arg(format!(
            "{}:{}/",
            rsync_host(self.host),
            self.dir.display()
        ));
    }

    /// Runs rsync with `names` (relative to `src_dir`) fed on stdin; returns
    /// its stdout lines. rsync's own --timeout bounds a stalled transfer.
    fn run_listed(&self, mut c: Command, what: &'static str, names: &[String]) -> Result<Vec<String>, TransportError> {
        log::debug!("running {c:?}");
        let mut list = Vec::new();
        for n in names {
            list.extend_from_slice(n.as_bytes());
            list.push(0);
        }
        let out = tools::run_bounded(&mut c, Some(list), true, None).map_err(|e| {
            self.fail(
                what,
                Cause::Start {
                    program: "rsync",
                    error: e.to_string(),
                },
            )
        })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            log::debug!("rsync stderr ({what} {}):\n{}", self.target(), stderr.trim_end());
        }
        if !out.status.success() {
            return Err(self.fail(
                what,
                Cause::Rsync {
                    code: out.status.code(),
                    stderr: summarize_stderr(&stderr),
                },
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
        let lines = self.run_listed(self.push_command(src_dir)?, "shipping WAL to", names)?;
        let items = itemized(&lines, names);
        let (sent, not_sent) = names
            .iter()
            .cloned()
            .partition(|n| items.get(n).is_some_and(|i| is_transfer(i)));
        Ok(PushReport { sent, not_sent })
    }

    /// Copies `names` from the remote directory into `dest_dir` (to compare
    /// them here); a name missing there is an error.
    pub fn fetch(&self, names: &[String], dest_dir: &Path) -> Result<(), TransportError> {
        if names.is_empty() {
            return Ok(());
        }
        let mut c = self.rsync_base(false)?;
        c.arg("--")
            .arg(format!("{}:{}/", rsync_host(self.host), self.dir.display()))
            .arg(format!("{}/", dest_dir.display()));
        self.run_listed(c, "fetching WAL from", names).map(|_| ())
    }

    /// Compares `names` in `src_dir` with the remote files of those names
    /// (checksums, dry run); one verdict per name, in order.
    pub fn verify(&self, src_dir: &Path, names: &[String]) -> Result<Vec<(String, Verdict)>, TransportError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let lines = self.run_listed(self.verify_command(src_dir)?, "comparing WAL with", names)?;
        let items = itemized(&lines, names);
        Ok(names
            .iter()
            .map(|n| (n.clone(), classify(items.get(n).map(String::as_str))))
            .collect())
    }
}

/// Reaches every slave's `dir` with rsync over ssh.
pub struct Rsync<'a> {
    pub dir: &'a Path,
    pub ssh: &'a SshSettings,
    pub rsync: &'a RsyncSettings,
}

impl Connect for Rsync<'_> {
    fn connect<'a>(&'a self, slave: &'a str) -> Box<dyn Transport + 'a> {
        Box::new(Remote {
            host: slave,
            dir: self.dir,
            ssh: self.ssh,
            rsync: self.rsync,
        })
    }
}

impl Transport for Remote<'_> {
    fn target(&self) -> String {
        Remote::target(self)
    }
    fn push(&self, src_dir: &Path, names: &[String]) -> Result<PushReport, TransportError> {
        Remote::push(self, src_dir, names)
    }
    fn verify(&self, src_dir: &Path, names: &[String]) -> Result<Vec<(String, Verdict)>, TransportError> {
        Remote::verify(self, src_dir, names)
    }
    fn stat(&self, names: &[String]) -> Result<HashMap<String, RemoteFile>, TransportError> {
        Remote::stat(self, names)
    }
    fn fetch(&self, names: &[String], dest_dir: &Path) -> Result<(), TransportError> {
        Remote::fetch(self, names, dest_dir)
    }
    fn sync_files(&self, names: &[String]) -> Result<(), TransportError> {
        Remote::sync_files(self, names)
    }
    fn stat_marked(
        &self,
        names: &[String],
        mark: &str,
    ) -> Result<(RemoteMark, HashMap<String, RemoteFile>), TransportError> {
        Remote::stat_marked(self, names, mark)
    }
    fn sync_files_marked(&self, names: &[String], mark: &str) -> Result<RemoteMark, TransportError> {
        Remote::sync_files_marked(self, names, mark)
    }
    fn mount_facts(&self, fstab: &Path) -> Result<MountFacts, TransportError> {
        Remote::mount_facts(self, fstab)
    }
    fn check(&self) -> Result<(), TransportError> {
        Remote::check(self)
    }
    fn read_file(&self, name: &str) -> Result<Option<Vec<u8>>, TransportError> {
        Remote::read_file(self, name)
    }
    fn write_file_durable(&self, name: &str, data: &[u8]) -> Result<(), TransportError> {
        Remote::write_file_durable(self, name, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    fn settings() -> (SshSettings, RsyncSettings) {
        let ssh = SshSettings {
            program: Some(PathBuf::from("/bin/sh")),
            extra_args: vec![],
            user: None,
            port: None,
            identity: None,
            connect_timeout: Duration::from_secs(10),
            strict_host_key_checking: crate::config::HostKeyChecking::AcceptNew,
            debug: false,
            includepath: vec![],
            control_persist: Duration::ZERO,
        };
        let rsync = RsyncSettings {
            program: Some(PathBuf::from("/bin/sh")),
            flags: vec!["-z".into(), "--bwlimit=100".into()],
            timeout: Duration::from_secs(120),
            fsync: true,
            includepath: vec![],
        };
        (ssh, rsync)
    }

    fn args(c: &Command) -> Vec<String> {
        c.get_args().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn user_flags_come_first_and_never_reach_the_verification() {
        let (ssh, rsync) = settings();
        let r = Remote {
            host: "sb",
            dir: Path::new("/r"),
            ssh: &ssh,
            rsync: &rsync,
        };
        let push = args(&r.push_command(Path::new("/q/sb")).unwrap());
        assert_eq!(&push[..2], ["-z", "--bwlimit=100"], "{push:?}");
        for ours in [
            "--out-format=%i %n",
            "--ignore-existing",
            "--timeout=120",
            "--files-from=-",
        ] {
            assert!(push.iter().position(|a| a == ours).unwrap() > 1, "{ours}: {push:?}");
        }
        assert!(
            !push.iter().any(|a| a == "--fsync"),
            "--fsync needs rsync 3.2.4 on both ends: {push:?}"
        );
        assert_eq!(&push[push.len() - 3..], ["--", "/q/sb/", "sb:/r/"]);
        let verify = args(&r.verify_command(Path::new("/q/sb")).unwrap());
        assert!(
            !verify.iter().any(|a| a == "-z" || a.starts_with("--bwlimit")),
            "{verify:?}"
        );
        for ours in ["-ii", "--checksum", "--dry-run", "--out-format=%i %n"] {
            assert!(verify.iter().any(|a| a == ours), "{ours}: {verify:?}");
        }
    }

    #[test]
    fn itemized_lines_are_classified_and_silence_is_not_success() {
        let names: Vec<String> = ["A", "B", "C", "D", "E", "F"].iter().map(|s| s.to_string()).collect();
        // As printed by rsync 3.x with -ii --checksum --dry-run --out-format='%i %n'.
        let lines: Vec<String> = [
            ".f          A",
            "<f+++++++++ B",
            "<fc.T...... C",
            ">fcsT...... D",
            "cd+++++++++ E",
            "some noise",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let items = itemized(&lines, &names);
        let v: Vec<Verdict> = names
            .iter()
            .map(|n| classify(items.get(n).map(String::as_str)))
            .collect();
        assert_eq!(
            v,
            vec![
                Verdict::Identical,
                Verdict::Missing,
                Verdict::Different,
                Verdict::Different,
                Verdict::Odd("cd+++++++++".into()),
                Verdict::Unreported,
            ]
        );
        // A name not asked about is ignored, even if rsync mentions it.
        assert!(itemized(&[".f          X".into()], &names).is_empty());
    }

    #[test]
    fn sync_covers_every_file_and_the_directory_in_batches() {
        let (ssh, rsync) = settings();
        let r = Remote {
            host: "sb",
            dir: Path::new("/r"),
            ssh: &ssh,
            rsync: &rsync,
        };
        let names: Vec<String> = (0..450).map(|i| format!("{i:024X}")).collect();
        let cmds = r.sync_commands(&names);
        assert_eq!(cmds.len(), 3);
        assert_eq!(cmds.iter().map(|c| c.len() - 3).collect::<Vec<_>>(), vec![200, 200, 50]);
        for c in &cmds {
            assert_eq!(&c[..2], ["sync", "--"]);
            assert_eq!(c.last().unwrap(), "/r");
        }
        assert_eq!(cmds[0][2], format!("/r/{}", names[0]));
        assert_eq!(cmds[2][cmds[2].len() - 2], format!("/r/{}", names[449]));
    }
}
