//! User hooks: `notify_ok`, `notify_warning`, `notify_critical` and
//! `action_failover`.
//!
//! Hooks are the one place a shell runs, because users write them as shell
//! command lines (`echo OK`, `/usr/lib/nagios/plugins/... -H x`). The message
//! is never spliced into that line: it is passed as a positional argument and
//! the line is run as `sh -c '<hook> "$@"' pitrkit <message>`, so a message
//! containing `; rm -rf` is just text. pitrtools executed the message itself
//! when a hook was empty; an empty hook here is simply skipped.

use std::process::Command;
use std::time::Duration;

use crate::tools;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }
}

/// How a hook run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum HookOutcome {
    NotConfigured,
    Exited(i32),
    Signalled,
    TimedOut,
    FailedToStart(String),
}

impl HookOutcome {
    pub fn succeeded(&self) -> bool {
        matches!(self, HookOutcome::Exited(0))
    }
}

/// Runs a user hook command line with `args` appended as separate arguments.
/// `env` adds variables (PITRKIT_LEVEL and the like) for richer hooks. The
/// hook runs in its own process group; on time-out the whole group is killed.
pub fn run_hook(hook: &str, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> HookOutcome {
    if hook.trim().is_empty() {
        return HookOutcome::NotConfigured;
    }
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!("{hook} \"$@\""))
        .arg("pitrkit-hook")
        .args(args)
        .envs(env.iter().copied());
    // Output is inherited: hooks run by hand (action_failover) talk to the user.
    match tools::run_bounded(&mut cmd, None, false, Some(timeout)) {
        Err(e) => HookOutcome::FailedToStart(e.to_string()),
        Ok(f) if f.timed_out => HookOutcome::TimedOut,
        Ok(f) => match f.status.code() {
            Some(code) => HookOutcome::Exited(code),
            None => HookOutcome::Signalled,
        },
    }
}

/// Why a hook command line cannot take the message appended to it, if it
/// cannot: pitrkit runs `<hook> "$@"`, so a line ending in `;`, `&` or `|`
/// or holding a `#` comment would drop or detach the message.
pub fn hook_problem(hook: &str) -> Option<String> {
    let h = hook.trim_end();
    if let Some(c) = h.chars().last().filter(|c| matches!(c, ';' | '&' | '|' | '\\')) {
        return Some(format!(
            "ends with '{c}': pitrkit appends the message as an argument (<hook> \"$@\"), which would then be lost or run as a separate command"
        ));
    }
    let comment = h.starts_with('#')
        || h.char_indices()
            .any(|(i, c)| c == '#' && h[..i].ends_with(char::is_whitespace));
    if comment {
        return Some(
            "contains a '#' comment: pitrkit appends the message as an argument (<hook> \"$@\"), and the comment would swallow it".into(),
        );
    }
    None
}

/// The three notify hooks of one configuration.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    pub ok: Option<String>,
    pub warning: Option<String>,
    pub critical: Option<String>,
    pub timeout: Duration,
}

impl Notifier {
    /// Logs the message at the matching level and runs the hook. A failing
    /// hook is logged, never fatal: alerting trouble must not stop archiving.
    pub fn send(&self, level: Level, message: &str) -> HookOutcome {
        match level {
            Level::Ok => log::info!("{message}"),
            Level::Warning => log::warn!("{message}"),
            Level::Critical => log::error!("{message}"),
        }
        let hook = match level {
            Level::Ok => &self.ok,
            Level::Warning => &self.warning,
            Level::Critical => &self.critical,
        };
        let Some(hook) = hook else {
            return HookOutcome::NotConfigured;
        };
        let outcome = run_hook(hook, &[message], &[("PITRKIT_LEVEL", level.as_str())], self.timeout);
        match &outcome {
            HookOutcome::Exited(0) | HookOutcome::NotConfigured => {
                log::debug!("notify_{} hook succeeded", level.as_str())
            }
            HookOutcome::Exited(code) => log::warn!(
                "notify_{} hook '{hook}' exited with status {code}; check the hook command",
                level.as_str()
            ),
            HookOutcome::Signalled => {
                log::warn!("notify_{} hook '{hook}' was killed by a signal", level.as_str())
            }
            HookOutcome::TimedOut => log::warn!(
                "notify_{} hook '{hook}' ran longer than {}s and was killed (notify_timeout)",
                level.as_str(),
                self.timeout.as_secs()
            ),
            HookOutcome::FailedToStart(e) => {
                log::warn!("notify_{} hook '{hook}' could not start: {e}", level.as_str())
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_one_argument_never_shell_code() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let canary = d.path().join("canary");
        let hook = format!(
            "printf '%s|' \"$PITRKIT_LEVEL\" >> {}; printf '[%s]' >> {}",
            out.display(),
            out.display()
        );
        let msg = format!("slave x down; touch {} $(touch {})", canary.display(), canary.display());
        let n = Notifier {
            warning: Some(hook),
            timeout: Duration::from_secs(10),
            ..Default::default()
        };
        assert_eq!(n.send(Level::Warning, &msg), HookOutcome::Exited(0));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), format!("warning|[{msg}]"));
        assert!(!canary.exists(), "message text was executed");
    }

    #[test]
    fn empty_hook_is_skipped_not_executed() {
        let n = Notifier {
            ok: Some("   ".into()),
            timeout: Duration::from_secs(1),
            ..Default::default()
        };
        assert_eq!(
            n.send(Level::Ok, "touch /tmp/should-not-exist"),
            HookOutcome::NotConfigured
        );
        assert_eq!(n.send(Level::Critical, "x"), HookOutcome::NotConfigured);
    }

    #[test]
    fn exit_status_and_timeout_are_reported() {
        assert_eq!(
            run_hook("exit 3; :", &[], &[], Duration::from_secs(5)),
            HookOutcome::Exited(3)
        );
        let t = std::time::Instant::now();
        assert_eq!(
            run_hook("sleep 30", &[], &[], Duration::from_millis(300)),
            HookOutcome::TimedOut
        );
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn hooks_that_would_lose_the_message_are_recognised() {
        for bad in [
            "echo x;",
            "logger -t pg &",
            "mail -s alert dba |",
            "echo a && ",
            "echo x # note",
            "# off",
            "x \\",
        ] {
            assert!(hook_problem(bad).is_some(), "{bad}");
        }
        for ok in [
            "echo OK",
            "/usr/lib/nagios/send 2",
            "printf '%s' a#b",
            "logger -t pg;echo x",
        ] {
            assert_eq!(hook_problem(ok), None, "{ok}");
        }
    }

    #[test]
    fn timeout_kills_the_hooks_children_too() {
        let d = tempfile::tempdir().unwrap();
        let late = d.path().join("late");
        let t = std::time::Instant::now();
        let hook = format!("(sleep 1; touch {}) & sleep 30; :", late.display());
        assert_eq!(
            run_hook(&hook, &[], &[], Duration::from_millis(300)),
            HookOutcome::TimedOut
        );
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!late.exists(), "a child of the timed-out hook kept running");
    }
}
