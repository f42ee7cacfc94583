//! What went wrong talking to another host, kept as data: the step, the
//! target, the cause (program, exit code, its stderr summary) and the advice.
//! Text is rendered only when the error is displayed.

use crate::tools;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    NotFound(#[from] tools::NotFound),
    #[error("{} {} failed: {}\n  what to do: {}", .0.what, .0.target, .0.cause, .0.hint)]
    Failed(Box<Failure>),
}

/// One failed step.
#[derive(Debug)]
pub struct Failure {
    pub what: &'static str,
    /// `host:dir`.
    pub target: String,
    pub cause: Cause,
    pub hint: Hint,
}

impl TransportError {
    pub fn failed(what: &'static str, target: String, cause: Cause, hint: Hint) -> TransportError {
        TransportError::Failed(Box::new(Failure {
            what,
            target,
            cause,
            hint,
        }))
    }

    /// Replaces the advice, except after a failure to connect at all, which
    /// keeps the connection advice (no later step can be the problem).
    pub fn with_hint(self, new_hint: Hint) -> TransportError {
        match self {
            TransportError::Failed(mut f) => {
                if !f.cause.is_connection_failure() {
                    f.hint = new_hint;
                }
                TransportError::Failed(f)
            }
            other => other,
        }
    }
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The program could not be started (or waited for).
    Start { program: &'static str, error: String },
    /// rsync ended with an error (`None`: killed by a signal).
    Rsync { code: Option<i32>, stderr: String },
    /// ssh itself failed (exit 255: no connection, authentication, host key).
    Ssh { code: i32, stderr: String },
    /// A remote command ran and failed.
    Remote { command: String, code: i32, stderr: String },
    /// A remote command did not finish in time and was killed.
    TimedOut { command: String, secs: u64 },
    /// A remote check said no.
    Check(&'static str),
}

impl Cause {
    /// ssh (alone or under rsync) could not connect.
    pub fn is_connection_failure(&self) -> bool {
        matches!(
            self,
            Cause::Ssh { code: 255, .. } | Cause::Rsync { code: Some(255), .. }
        )
    }

    /// The exit code that chooses the advice.
    pub fn code(&self) -> Option<i32> {
        match self {
            Cause::Rsync { code, .. } => *code,
            Cause::Ssh { code, .. } | Cause::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Start { program, error } => write!(f, "cannot run {program}: {error}"),
            Cause::Rsync { code: Some(c), stderr } => {
                write!(f, "rsync exit {c} ({}): {stderr}", rsync_exit_meaning(*c))
            }
            Cause::Rsync { code: None, stderr } => write!(f, "rsync killed by a signal: {stderr}"),
            Cause::Ssh { code, stderr } => write!(f, "ssh exit {code}: {stderr}"),
            Cause::Remote { command, code, stderr } => write!(f, "{command} exited {code}: {stderr}"),
            Cause::TimedOut { command, secs } => write!(
                f,
                "`{command}` did not finish within {secs}s (ssh_timeout + rsync_timeout); pitrkit killed it"
            ),
            Cause::Check(why) => f.write_str(why),
        }
    }
}

/// What the DBA should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// Advice chosen by the exit code of rsync or ssh.
    ForExit {
        host: String,
        dir: String,
        user: Option<String>,
        code: Option<i32>,
    },
    /// A remote command hung.
    Hung {
        host: String,
    },
    CreateDir {
        host: String,
        dir: String,
    },
    Chown {
        host: String,
    },
    InstallRsync {
        host: String,
    },
    InstallCoreutils {
        host: String,
    },
    /// rsync could not be started here.
    LocalRsync,
}

impl std::fmt::Display for Hint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hint::ForExit { host, dir, user, code } => match code {
                Some(255) => write!(
                    f,
                    "check that sshd runs on {host} and that {}; a changed host key must be fixed in known_hosts",
                    who(host, user.as_deref())
                ),
                Some(12) | Some(127) => write!(
                    f,
                    "check that rsync is installed on {host} and that the remote login prints nothing (no echo in .bashrc)"
                ),
                Some(3) | Some(11) | Some(23) => write!(
                    f,
                    "check that {dir} exists on {host} and is writable by the ssh user (`pitrkit archiver -I` checks this)"
                ),
                Some(30) | Some(35) => {
                    f.write_str("the network or the slave is too slow or stalled; check connectivity (rsync_timeout)")
                }
                _ => write!(
                    f,
                    "run the archiver with debug: on and ssh_debug: on, and try `ssh {host}` by hand"
                ),
            },
            Hint::Hung { host } => write!(
                f,
                "{host} or its disk may be hung: log in and check (e.g. run the command by hand, look at dmesg); the files stay queued"
            ),
            Hint::CreateDir { host, dir } => write!(
                f,
                "create it on {host}: mkdir -p {} (owned by the ssh user)",
                super::ssh::shell_quote(dir)
            ),
            Hint::Chown { host } => write!(f, "on {host}: chown the directory to the ssh user"),
            Hint::InstallRsync { host } => write!(f, "install rsync on {host} (apt-get install rsync)"),
            Hint::InstallCoreutils { host } => write!(
                f,
                "pitrkit fsyncs shipped WAL with coreutils `sync FILE...` (8.24+); install coreutils on {host}"
            ),
            Hint::LocalRsync => f.write_str("check the rsync installation"),
        }
    }
}

fn who(host: &str, user: Option<&str>) -> String {
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "the current user".into());
    let user = user.map(|u| format!("{u}@")).unwrap_or_default();
    format!("as OS user '{me}', `ssh {user}{host}` must log in without a prompt")
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
pub(crate) fn rsync_exit_meaning(code: i32) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_have_words() {
        assert!(rsync_exit_meaning(255).contains("ssh"));
        assert!(rsync_exit_meaning(24).contains("vanished"));
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

    fn failed(cause: Cause) -> TransportError {
        TransportError::failed("checking", "sb:/r".into(), cause, Hint::Hung { host: "sb".into() })
    }

    #[test]
    fn a_connection_failure_keeps_its_advice() {
        let hint = |e: TransportError| match e {
            TransportError::Failed(f) => f.hint,
            _ => unreachable!(),
        };
        let new = Hint::Chown { host: "sb".into() };
        // Decided by the exit code, not by searching the message: stderr
        // mentioning "exit 255" does not make a failed check a connection failure.
        for (cause, kept) in [
            (
                Cause::Ssh {
                    code: 255,
                    stderr: "x".into(),
                },
                true,
            ),
            (
                Cause::Rsync {
                    code: Some(255),
                    stderr: "x".into(),
                },
                true,
            ),
            (Cause::Check("the directory is not writable by the ssh user"), false),
            (
                Cause::Remote {
                    command: "`test -w /r`".into(),
                    code: 1,
                    stderr: "exit 255".into(),
                },
                false,
            ),
        ] {
            let h = hint(failed(cause.clone()).with_hint(new.clone()));
            assert_eq!(h != new, kept, "{cause:?}");
        }
    }
}
