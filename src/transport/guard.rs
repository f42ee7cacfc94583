//! What keeps shipping to the directory `-I` marked: the slave's mark read
//! in the same ssh session as the listing before a push and as the remote
//! sync after it, and the mount facts `-I` judges a slave's directory by.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::error::{summarize_stderr, Cause, TransportError};
use super::rsync::{Remote, RemoteFile};
use super::ssh::shell_quote;

/// A remote directory's mark file (see `archive::sysid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteMark {
    Missing,
    Unreadable,
    /// Its content, newlines made blanks.
    Content(String),
}

/// What a slave's `-I` mount guard needs from the remote host.
#[derive(Debug, Clone, Default)]
pub struct MountFacts {
    pub fstab: String,
    pub mountinfo: String,
    /// The directory, symlinks resolved.
    pub real: PathBuf,
    /// Device number of the directory and of each directory above it.
    pub devices: HashMap<PathBuf, u64>,
}

const MARK_TAG: &str = "pitrkit-mark";

impl RemoteMark {
    /// Reads the line [`Remote::mark_script`] printed (the first of the output).
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

impl Remote<'_> {
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

    /// A shell snippet removing rsync's temporary files (`.<WAL name>.XXXXXX`)
    /// that a transfer killed with its connection left in the remote
    /// directory, once they are older than [`fsutil::RECLAIM_AGE`]: a live
    /// transfer writes to its file all the time. Prints nothing.
    fn reclaim_script(&self) -> String {
        let dir = shell_quote(&self.dir.display().to_string());
        let minutes = crate::fsutil::RECLAIM_AGE.as_secs().div_ceil(60);
        format!(
            "find {dir} -maxdepth 1 -type f -mmin +{minutes} -regextype posix-extended \
             -regex '.*/\\.[0-9A-F]{{24}}[^/]*\\.[A-Za-z0-9]{{6}}' -delete 2>/dev/null"
        )
    }

    /// [`Remote::stat`], and in the same ssh session the content of the
    /// directory's `mark` file (read before the listing).
    pub fn stat_marked(
        &self,
        names: &[String],
        mark: &str,
    ) -> Result<(RemoteMark, HashMap<String, RemoteFile>), TransportError> {
        let before = format!("{}; {}", self.reclaim_script(), self.mark_script(mark));
        let (stdout, found) = self.stat_inner(names, Some(before))?;
        Ok((RemoteMark::parse(&stdout), found))
    }

    /// [`Remote::sync_files`] (nothing to sync when `names` is empty), and
    /// in the last of its ssh sessions the content of the directory's
    /// `mark` file: a share unmounted while shipping shows there.
    pub fn sync_files_marked(&self, names: &[String], mark: &str) -> Result<RemoteMark, TransportError> {
        let commands = self.sync_commands(names);
        let last = commands.len().saturating_sub(1);
        let remote_sync = |code, stderr| Cause::Remote {
            command: "remote `sync`".into(),
            code,
            stderr,
        };
        for words in &commands[..last] {
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            self.ssh_check("syncing files on", &words, remote_sync)?;
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
            return Err(self.fail("syncing files on", remote_sync(code, summarize_stderr(&stderr))));
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
                Cause::Remote {
                    command: format!(
                        "resolving {} and its parents with `readlink -f` and `stat`",
                        self.dir.display()
                    ),
                    code,
                    stderr: summarize_stderr(&stderr),
                },
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
}
