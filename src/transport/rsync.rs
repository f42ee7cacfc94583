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
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::ssh::{rsync_host, shell_quote, SshSettings};
use crate::tools;

pub use crate::config::RsyncSettings;

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

/// What [`Remote::mount_facts`] found on the remote host.
#[derive(Debug, Clone, Default)]
pub struct MountFacts {
    pub fstab: String,
    pub mountinfo: String,
    /// The directory, symlinks resolved.
    pub real: PathBuf,
    /// Device number of the directory and of each directory above it.
    pub devices: HashMap<PathBuf, u64>,
}

/// A remote directory's mark file (see `archive::sysid`), read over ssh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteMark {
    Missing,
    Unreadable,
    /// Its content, newlines made blanks.
    Content(String),
}

const MARK_TAG: &str = "pitrkit-mark";

impl RemoteMark {
    /// Reads the line `mark_script` printed (the first of the output).
    fn parse(stdout: &[u8]) -> RemoteMark {
        let text = String::from_utf8_lossy(stdout);
        let line = text.lines().next().unwrap_or("");
        match line.strip_prefix(MARK_TAG) {
            Some(c) if c.starts_with(':') => RemoteMark::Content(c[1..].to_string()),
            Some("-missing") => RemoteMark::Missing,
            _ => RemoteMark::Unreadable,
        }
    }
}

/// Names per remote `sync` command line.
const SYNC_BATCH: usize = 200;

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

/// The lines of rsync's (or ssh's) stderr worth showing a DBA: rsync's and
/// ssh's own messages and the usual ssh failures; else the last few lines.
pub(crate) fn summarize_stderr(stderr: &str) -> String {
    const SSH_FAILURES: &[&str] = &[
        "Permission denied",
        "Host key verification failed",
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
        "Could not resolve hostname",
        "Connection refused",
        "Connection timed out",
        "No route to host",
        "Connection closed",
        "command not found",
        "No such file or directory",
    ];
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let mut picked: Vec<&str> = Vec::new();
    for l in &lines {
        let wanted = l.starts_with("rsync:")
            || l.starts_with("rsync error")
            || l.starts_with("ssh:")
            || SSH_FAILURES.iter().any(|f| l.contains(f));
        if wanted && !picked.contains(l) {
            picked.push(l);
        }
    }
    if picked.is_empty() {
        picked = lines[lines.len().saturating_sub(3)..].to_vec();
    }
    if picked.is_empty() {
        return "(no error output)".into();
    }
    picked.join(" | ")
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

    fn fail(&self, what: &'static str, detail: String, code: Option<i32>) -> TransportError {
        TransportError::Failed {
            what,
            target: self.target(),
            detail,
            hint: self.hint_for(code),
        }
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
        let out = tools::run_bounded(&mut c, Some(list), true, None)
            .map_err(|e| self.fail(what, format!("cannot run rsync: {e}"), None))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            log::debug!("rsync stderr ({what} {}):\n{}", self.target(), stderr.trim_end());
        }
        if !out.status.success() {
            let code = out.status.code();
            let summary = summarize_stderr(&stderr);
            return Err(self.fail(
                what,
                match code {
                    Some(c) => format!("rsync exit {c} ({}): {summary}", rsync_exit_meaning(c)),
                    None => format!("rsync killed by a signal: {summary}"),
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

    /// Time limit for one remote command: the connection, then rsync_timeout.
    fn remote_limit(&self) -> Option<Duration> {
        (!self.rsync.timeout.is_zero()).then(|| self.rsync.timeout + self.ssh.connect_timeout)
    }

    fn ssh_check(
        &self,
        what: &'static str,
        words: &[&str],
        detail: impl FnOnce(i32, &str) -> String,
    ) -> Result<(), TransportError> {
        let out = self.ssh_run(what, words, None)?;
        if out.status.success() {
            return Ok(());
        }
        let code = out.status.code().unwrap_or(-1);
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(self.fail(what, detail(code, &summarize_stderr(&stderr)), Some(code)))
    }

    /// Runs one remote command (its words quoted for the remote shell),
    /// bounded by ssh_timeout + rsync_timeout; a time-out is an error, any
    /// exit status is the caller's to judge.
    fn ssh_run(
        &self,
        what: &'static str,
        words: &[&str],
        input: Option<Vec<u8>>,
    ) -> Result<tools::Finished, TransportError> {
        let c = self.ssh.command(self.host, words)?;
        self.run_remote(what, c, &words.join(" "), input)
    }

    /// [`Self::ssh_run`] for a small remote script whose every interpolated
    /// path is quoted with `shell_quote`.
    fn ssh_script(
        &self,
        what: &'static str,
        script: &str,
        input: Option<Vec<u8>>,
    ) -> Result<tools::Finished, TransportError> {
        let c = self.ssh.script(self.host, script)?;
        self.run_remote(what, c, script, input)
    }

    fn run_remote(
        &self,
        what: &'static str,
        mut c: Command,
        shown: &str,
        input: Option<Vec<u8>>,
    ) -> Result<tools::Finished, TransportError> {
        log::debug!("running {c:?}");
        let limit = self.remote_limit();
        let out = tools::run_bounded(&mut c, input, true, limit)
            .map_err(|e| self.fail(what, format!("cannot run ssh: {e}"), None))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            log::debug!("ssh stderr ({what} {}):\n{}", self.target(), stderr.trim_end());
        }
        if out.timed_out {
            let secs = limit.map(|l| l.as_secs()).unwrap_or(0);
            return Err(TransportError::Failed {
                what,
                target: self.target(),
                detail: format!("`{shown}` did not finish within {secs}s (ssh_timeout + rsync_timeout); pitrkit killed it"),
                hint: format!(
                    "{} or its disk may be hung: log in and check (e.g. run the command by hand, look at dmesg); the files stay queued",
                    self.host
                ),
            });
        }
        if out.status.code() == Some(255) {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(self.fail(what, format!("ssh exit 255: {}", summarize_stderr(&stderr)), Some(255)));
        }
        Ok(out)
    }

    /// Size and type of `names` in the remote directory, in one ssh session
    /// (`xargs -0 stat`, coreutils and findutils; symlinks are not
    /// followed). The paths go through stdin: a backlog's names would
    /// overflow one command line. A name missing from the answer does not
    /// exist there.
    pub fn stat(&self, names: &[String]) -> Result<HashMap<String, RemoteFile>, TransportError> {
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        self.stat_inner(names, None).map(|(_, found)| found)
    }

    /// [`Self::stat`], and in the same ssh session the content of the
    /// directory's `mark` file (read before the listing).
    pub fn stat_marked(
        &self,
        names: &[String],
        mark: &str,
    ) -> Result<(RemoteMark, HashMap<String, RemoteFile>), TransportError> {
        let (m, found) = self.stat_inner(names, Some(mark))?;
        Ok((m.unwrap_or(RemoteMark::Missing), found))
    }

    fn stat_inner(
        &self,
        names: &[String],
        mark: Option<&str>,
    ) -> Result<(Option<RemoteMark>, HashMap<String, RemoteFile>), TransportError> {
        let mut found = HashMap::new();
        let dir = self.dir.display().to_string();
        let mut input = Vec::new();
        for n in names {
            input.extend_from_slice(format!("{dir}/{n}").as_bytes());
            input.push(0);
        }
        // LC_ALL=C: the "No such file" messages are read below.
        let words = ["env", "LC_ALL=C", "xargs", "-0", "stat", "-c", "%s %f %n", "--"];
        let out = match mark {
            None => self.ssh_run("listing", &words, Some(input))?,
            Some(m) => {
                let quoted: Vec<String> = words.iter().map(|w| shell_quote(w)).collect();
                let script = format!("{}; {}", self.mark_script(m), quoted.join(" "));
                self.ssh_script("listing", &script, Some(input))?
            }
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        // stat's exit 1 (xargs: 123) with "No such file" for each missing
        // name is an answer too.
        let only_missing = stderr
            .lines()
            .filter(|l| l.starts_with("stat:"))
            .all(|l| l.contains("No such file or directory"));
        if !(out.status.success() || out.status.code() == Some(123) && only_missing) {
            let code = out.status.code().unwrap_or(-1);
            return Err(self.fail(
                "listing",
                format!("remote `stat` exited {code}: {}", summarize_stderr(&stderr)),
                Some(code),
            ));
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut w = line.splitn(3, ' ');
            let (Some(size), Some(mode), Some(path)) = (w.next(), w.next(), w.next()) else {
                continue;
            };
            let (Ok(size), Ok(mode)) = (size.parse::<u64>(), u32::from_str_radix(mode, 16)) else {
                continue;
            };
            let Some(name) = path.strip_prefix(&format!("{dir}/")) else {
                continue;
            };
            found.insert(
                name.to_string(),
                RemoteFile {
                    size,
                    regular: mode & 0o170000 == 0o100000,
                },
            );
        }
        let mark = mark.map(|_| RemoteMark::parse(&out.stdout));
        Ok((mark, found))
    }

    /// A shell snippet printing one line about `mark` in the remote
    /// directory, which [`RemoteMark::parse`] reads: its content (newlines
    /// made blanks), or that it is missing or unreadable.
    fn mark_script(&self, mark: &str) -> String {
        let path = shell_quote(&format!("{}/{mark}", self.dir.display()));
        format!(
            "if test -f {path} && test -r {path}; then printf '{MARK_TAG}:%s\\n' \"$(tr '\\n' ' ' < {path})\"; \
             elif test -e {path}; then echo {MARK_TAG}-unreadable; else echo {MARK_TAG}-missing; fi"
        )
    }

    /// The content of `name` in the remote directory; `None` if there is no such file.
    pub fn read_file(&self, name: &str) -> Result<Option<Vec<u8>>, TransportError> {
        let path = format!("{}/{name}", self.dir.display());
        let out = self.ssh_run("reading", &["env", "LC_ALL=C", "cat", "--", &path], None)?;
        if out.status.success() {
            return Ok(Some(out.stdout));
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No such file or directory") {
            return Ok(None);
        }
        let code = out.status.code().unwrap_or(-1);
        Err(self.fail(
            "reading",
            format!("`cat -- {path}` exited {code}: {}", summarize_stderr(&stderr)),
            Some(code),
        ))
    }

    /// Writes `data` as `name` in the remote directory durably, replacing
    /// it: a temporary name, fsync (`dd conv=fsync`), rename (`mv`), then
    /// the directory (`sync`); coreutils only, every path a separate word.
    pub fn write_file_durable(&self, name: &str, data: &[u8]) -> Result<(), TransportError> {
        let dir = self.dir.display().to_string();
        let tmp = crate::fsutil::temp_name(self.dir, name).display().to_string();
        let path = format!("{dir}/{name}");
        let of = format!("of={tmp}");
        let steps: [(&[&str], Option<Vec<u8>>); 3] = [
            (&["dd", &of, "conv=fsync", "status=none"], Some(data.to_vec())),
            (&["mv", "-f", "--", &tmp, &path], None),
            (&["sync", "--", &dir], None),
        ];
        for (words, input) in steps {
            let out = self.ssh_run("writing", words, input)?;
            if !out.status.success() {
                let _ = self.ssh_run("cleaning up", &["rm", "-f", "--", &tmp], None);
                let code = out.status.code().unwrap_or(-1);
                let stderr = String::from_utf8_lossy(&out.stderr);
                return Err(self.fail(
                    "writing",
                    format!("`{}` exited {code}: {}", words.join(" "), summarize_stderr(&stderr)),
                    Some(code),
                ));
            }
        }
        Ok(())
    }

    /// The remote `sync` command lines that make `names` (in the remote
    /// directory) and the directory itself durable, at most SYNC_BATCH names each.
    fn sync_commands(&self, names: &[String]) -> Vec<Vec<String>> {
        let dir = self.dir.display().to_string();
        names
            .chunks(SYNC_BATCH)
            .map(|batch| {
                let mut words = vec!["sync".to_string(), "--".to_string()];
                words.extend(batch.iter().map(|n| format!("{dir}/{n}")));
                words.push(dir.clone());
                words
            })
            .collect()
    }

    /// fsyncs `names` and the remote directory with coreutils `sync FILE...`
    /// (8.24+): needs nothing from rsync's version, and also covers files
    /// that were already there (perhaps only in the slave's page cache).
    pub fn sync_files(&self, names: &[String]) -> Result<(), TransportError> {
        for words in self.sync_commands(names) {
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            self.ssh_check("syncing files on", &words, |c, e| {
                format!("remote `sync` exited {c}: {e}")
            })?;
        }
        Ok(())
    }

    /// [`Self::sync_files`] (nothing to sync when `names` is empty), and in
    /// the last of its ssh sessions the content of the directory's `mark`
    /// file: a share unmounted while shipping shows there.
    pub fn sync_files_marked(&self, names: &[String], mark: &str) -> Result<RemoteMark, TransportError> {
        let commands = self.sync_commands(names);
        let last = commands.len().saturating_sub(1);
        for words in &commands[..last] {
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            self.ssh_check("syncing files on", &words, |c, e| {
                format!("remote `sync` exited {c}: {e}")
            })?;
        }
        // The mark is read only once the sync succeeded: the exit status is sync's.
        let script = match commands.get(last) {
            Some(w) => format!(
                "{} && {}",
                w.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" "),
                self.mark_script(mark)
            ),
            None => self.mark_script(mark),
        };
        let out = self.ssh_script("syncing files on", &script, None)?;
        if !out.status.success() {
            let code = out.status.code().unwrap_or(-1);
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(self.fail(
                "syncing files on",
                format!("remote `sync` exited {code}: {}", summarize_stderr(&stderr)),
                Some(code),
            ));
        }
        Ok(RemoteMark::parse(&out.stdout))
    }

    /// For `-I`'s mount guard, in one ssh session: the remote `fstab`, its
    /// mountinfo, the directory with symlinks resolved, and the device of
    /// that directory and of every directory above it.
    pub fn mount_facts(&self, fstab: &Path) -> Result<MountFacts, TransportError> {
        const SEP: &str = "pitrkit-mount-facts";
        let script = format!(
            "cat -- {fstab} 2>/dev/null; echo {SEP}; cat /proc/self/mountinfo 2>/dev/null; echo {SEP}; \
             r=$(readlink -f -- {dir}) && printf '%s\\n' \"$r\" && p=$r && \
             while :; do stat -c '%d %n' -- \"$p\" || exit 1; test \"$p\" = / && break; p=$(dirname -- \"$p\"); done",
            fstab = shell_quote(&fstab.display().to_string()),
            dir = shell_quote(&self.dir.display().to_string()),
        );
        let out = self.ssh_script("checking mounts on", &script, None)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let parts: Vec<&str> = text.splitn(3, &format!("{SEP}\n")).collect();
        let (true, &[fstab_text, mountinfo, rest]) = (out.status.success(), &parts[..]) else {
            let code = out.status.code().unwrap_or(-1);
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(self.fail(
                "checking mounts on",
                format!(
                    "resolving {} and its parents with `readlink -f` and `stat` exited {code}: {}",
                    self.dir.display(),
                    summarize_stderr(&stderr)
                ),
                Some(code),
            ));
        };
        let mut lines = rest.lines();
        let real = PathBuf::from(lines.next().unwrap_or_default());
        let devices = lines
            .filter_map(|l| {
                let (dev, path) = l.split_once(' ')?;
                Some((PathBuf::from(path), dev.parse().ok()?))
            })
            .collect();
        Ok(MountFacts {
            fstab: fstab_text.to_string(),
            mountinfo: mountinfo.to_string(),
            real,
            devices,
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
                format!(
                    "create it on {}: mkdir -p {} (owned by the ssh user)",
                    self.host,
                    shell_quote(&dir)
                ),
            )
        })?;
        self.ssh_check("checking", &["test", "-w", &dir], |_, _| {
            "the directory is not writable by the ssh user".into()
        })
        .map_err(|e| with_hint(e, format!("on {}: chown the directory to the ssh user", self.host)))?;
        self.ssh_check("checking rsync on", &["rsync", "--version"], |c, e| {
            format!("`rsync --version` exited {c}: {e}")
        })
        .map_err(|e| with_hint(e, format!("install rsync on {} (apt-get install rsync)", self.host)))?;
        self.ssh_check("checking sync on", &["sync", "--", &dir], |c, e| {
            format!("`sync -- {dir}` exited {c}: {e}")
        })
        .map_err(|e| {
            with_hint(
                e,
                format!(
                    "pitrkit fsyncs shipped WAL with coreutils `sync FILE...` (8.24+); install coreutils on {}",
                    self.host
                ),
            )
        })
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

    fn settings() -> (SshSettings, RsyncSettings) {
        use std::path::PathBuf;
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

    #[test]
    fn error_summary_keeps_what_explains_the_failure() {
        let stderr = "debug1: Reading configuration data /etc/ssh/ssh_config\n\
                      debug1: Connecting to sb port 22.\n\
                      postgres@sb: Permission denied (publickey).\n\
                      rsync: connection unexpectedly closed (0 bytes received so far) [sender]\n\
                      rsync error: unexplained error (code 255) at io.c(232) [sender=3.2.7]\n";
        let s = summarize_stderr(stderr);
        assert!(!s.contains("debug1"), "{s}");
        assert!(s.starts_with("postgres@sb: Permission denied"), "{s}");
        assert!(s.contains("rsync error: unexplained error"), "{s}");
        assert_eq!(summarize_stderr("a\nb\nc\nd\n"), "b | c | d");
        assert_eq!(summarize_stderr(""), "(no error output)");
    }
}
