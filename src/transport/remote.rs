//! Commands run in a slave's remote directory over ssh (one ssh session
//! each, every word quoted for the remote shell): stat, read, durable
//! write, fsync, and the `-I` checks.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use super::error::{summarize_stderr, Cause, Hint, TransportError};
use super::rsync::{Remote, RemoteFile};
use super::ssh::shell_quote;
use crate::tools;

/// Names per remote `sync` command line.
const SYNC_BATCH: usize = 200;

impl Remote<'_> {
    /// Time limit for one remote command: the connection, then rsync_timeout.
    fn remote_limit(&self) -> Option<Duration> {
        (!self.rsync.timeout.is_zero()).then(|| self.rsync.timeout + self.ssh.connect_timeout)
    }

    pub(super) fn ssh_check(
        &self,
        what: &'static str,
        words: &[&str],
        cause: impl FnOnce(i32, String) -> Cause,
    ) -> Result<(), TransportError> {
        let out = self.ssh_run(what, words, None)?;
        if out.status.success() {
            return Ok(());
        }
        let code = out.status.code().unwrap_or(-1);
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(self.fail(what, cause(code, summarize_stderr(&stderr))))
    }

    /// Runs one remote command (its words quoted for the remote shell),
    /// bounded by ssh_timeout + rsync_timeout; a time-out is an error, any
    /// exit status is the caller's to judge.
    pub(super) fn ssh_run(
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
    pub(super) fn ssh_script(
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
        let out = tools::run_bounded(&mut c, input, true, limit).map_err(|e| {
            self.fail(
                what,
                Cause::Start {
                    program: "ssh",
                    error: e.to_string(),
                },
            )
        })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            log::debug!("ssh stderr ({what} {}):\n{}", self.target(), stderr.trim_end());
        }
        if out.timed_out {
            let secs = limit.map(|l| l.as_secs()).unwrap_or(0);
            return Err(TransportError::failed(
                what,
                self.target(),
                Cause::TimedOut {
                    command: shown.to_string(),
                    secs,
                },
                Hint::Hung {
                    host: self.host.to_string(),
                },
            ));
        }
        if out.status.code() == Some(255) {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(self.fail(
                what,
                Cause::Ssh {
                    code: 255,
                    stderr: summarize_stderr(&stderr),
                },
            ));
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

    /// [`Self::stat`], with `before` (a script reading the mark) run first
    /// in the same ssh session; its output, then the listing's.
    pub(super) fn stat_inner(
        &self,
        names: &[String],
        before: Option<String>,
    ) -> Result<(Vec<u8>, HashMap<String, RemoteFile>), TransportError> {
        let mut found = HashMap::new();
        let dir = self.dir.display().to_string();
        let mut input = Vec::new();
        for n in names {
            input.extend_from_slice(format!("{dir}/{n}").as_bytes());
            input.push(0);
        }
        // LC_ALL=C: the "No such file" messages are read below.
        let words = ["env", "LC_ALL=C", "xargs", "-0", "stat", "-c", "%s %f %n", "--"];
        let out = match &before {
            None => self.ssh_run("listing", &words, Some(input))?,
            Some(script) => {
                let quoted: Vec<String> = words.iter().map(|w| shell_quote(w)).collect();
                self.ssh_script("listing", &format!("{script}; {}", quoted.join(" ")), Some(input))?
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
                Cause::Remote {
                    command: "remote `stat`".into(),
                    code,
                    stderr: summarize_stderr(&stderr),
                },
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
        Ok((out.stdout, found))
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
            Cause::Remote {
                command: format!("`cat -- {path}`"),
                code,
                stderr: summarize_stderr(&stderr),
            },
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
                    Cause::Remote {
                        command: format!("`{}`", words.join(" ")),
                        code,
                        stderr: summarize_stderr(&stderr),
                    },
                ));
            }
        }
        Ok(())
    }

    /// The remote `sync` command lines that make `names` (in the remote
    /// directory) and the directory itself durable, at most SYNC_BATCH names each.
    pub(super) fn sync_commands(&self, names: &[String]) -> Vec<Vec<String>> {
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
            self.ssh_check("syncing files on", &words, |code, stderr| Cause::Remote {
                command: "remote `sync`".into(),
                code,
                stderr,
            })?;
        }
        Ok(())
    }

    /// For `-I`: reachable, directory present and writable, rsync installed.
    pub fn check(&self) -> Result<(), TransportError> {
        let dir = self.dir.display().to_string();
        let host = || self.host.to_string();
        let remote = |command: String| move |code, stderr| Cause::Remote { command, code, stderr };
        self.ssh_check("connecting to", &["true"], |code, stderr| Cause::Ssh { code, stderr })?;
        self.ssh_check("checking", &["test", "-d", &dir], |_, _| {
            Cause::Check("the directory does not exist")
        })
        .map_err(|e| {
            e.with_hint(Hint::CreateDir {
                host: host(),
                dir: dir.clone(),
            })
        })?;
        self.ssh_check("checking", &["test", "-w", &dir], |_, _| {
            Cause::Check("the directory is not writable by the ssh user")
        })
        .map_err(|e| e.with_hint(Hint::Chown { host: host() }))?;
        self.ssh_check(
            "checking rsync on",
            &["rsync", "--version"],
            remote("`rsync --version`".into()),
        )
        .map_err(|e| e.with_hint(Hint::InstallRsync { host: host() }))?;
        self.ssh_check(
            "checking sync on",
            &["sync", "--", &dir],
            remote(format!("`sync -- {dir}`")),
        )
        .map_err(|e| e.with_hint(Hint::InstallCoreutils { host: host() }))
    }
}
