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

/// What a user command line is, as far as appending `"$@"` to it goes.
#[derive(Debug, PartialEq, Eq)]
enum Shape {
    /// One simple command: optional `VAR=x` words, the program, its arguments
    /// and redirections. The only shape that receives the message intact.
    Simple,
    /// A control operator (`;`, `&`, `|`, `&&`, `||`, a line break); `trailing`
    /// when nothing follows it.
    Operator {
        op: &'static str,
        trailing: bool,
    },
    /// `( ... )` outside `$( ... )`.
    Subshell,
    /// The command starts with a shell keyword (`if`, `{`, `while`, ...).
    Keyword(String),
    /// `eval` runs its arguments, the message included, as shell code.
    Eval,
    /// An unquoted `#` at the start of a word.
    Comment,
    Unterminated(char),
    TrailingBackslash,
    /// Only `VAR=x` words or redirections: the message would be the command.
    NoCommand,
}

const KEYWORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "do", "done", "case", "esac", "while", "until", "for", "in", "{", "}", "[[",
    "]]", "function", "select",
];

/// Index just past the `close` matching the opening bracket before `from`,
/// skipping quoted text; `None` if unbalanced.
fn skip_balanced(c: &[char], from: usize, open: char, close: char) -> Option<usize> {
    let mut depth = 1;
    let mut i = from;
    while i < c.len() {
        match c[i] {
            '\\' => i += 1,
            '\'' => i += c[i + 1..].iter().position(|&x| x == '\'')? + 1,
            x if x == open => depth += 1,
            x if x == close => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// What `shape` knows about the first simple command so far.
#[derive(Default)]
struct FirstCommand {
    have_command: bool,
    /// The next word is the file of a redirection (`>`, `2>>`).
    redirect_target: bool,
}

impl FirstCommand {
    /// Called at the end of each word: a shape as soon as the word decides it.
    fn end_word(&mut self, word: &mut String) -> Option<Shape> {
        if word.is_empty() || self.have_command {
            word.clear();
            return None;
        }
        let w = std::mem::take(word);
        if self.redirect_target {
            self.redirect_target = false;
            return None;
        }
        let digits = w.trim_start_matches(|ch: char| ch.is_ascii_digit());
        if digits.starts_with(['<', '>']) {
            // `>`, `2>>`: the file name is the next word; `>file` is one word.
            self.redirect_target = digits.trim_start_matches(['<', '>', '&', '|']).is_empty();
            return None;
        }
        let assignment = w.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty()
                && !name.starts_with(|ch: char| ch.is_ascii_digit())
                && name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        });
        if assignment {
            return None;
        }
        self.have_command = true;
        if KEYWORDS.contains(&w.as_str()) {
            return Some(Shape::Keyword(w));
        }
        (w == "eval").then_some(Shape::Eval)
    }
}

/// Index of the quote closing the one at `i`; `None` if unterminated.
fn closing_quote(c: &[char], i: usize) -> Option<usize> {
    let q = c[i];
    let mut j = i + 1;
    while j < c.len() && c[j] != q {
        if c[j] == '\\' && q != '\'' {
            j += 1;
        }
        j += 1;
    }
    (j < c.len()).then_some(j)
}

/// The control operator at `i` (`;`, `&`, `&&`, `|`, `||`, a line break).
fn operator(c: &[char], i: usize) -> Shape {
    let ch = c[i];
    let doubled = ch != '\n' && ch != ';' && c.get(i + 1) == Some(&ch);
    let op = match (ch, doubled) {
        (';', _) => ";",
        ('&', true) => "&&",
        ('&', false) => "&",
        ('|', true) => "||",
        ('|', false) => "|",
        _ => "a line break",
    };
    let rest = if doubled { i + 2 } else { i + 1 };
    let trailing = c[rest..].iter().all(|x| x.is_whitespace());
    Shape::Operator { op, trailing }
}

/// A light reading of a POSIX `sh` command line: enough to tell one simple
/// command from anything else, without running it.
fn shape(line: &str) -> Shape {
    let c: Vec<char> = line.trim().chars().collect();
    let mut word = String::new();
    let mut first = FirstCommand::default();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        match ch {
            '\\' if i + 1 == c.len() => return Shape::TrailingBackslash,
            '\\' => {
                word.push(ch);
                word.push(c[i + 1]);
                i += 2;
                continue;
            }
            '\'' | '"' | '`' => {
                let Some(j) = closing_quote(&c, i) else {
                    return Shape::Unterminated(ch);
                };
                word.extend(&c[i..=j]);
                i = j + 1;
                continue;
            }
            '$' if matches!(c.get(i + 1), Some('(') | Some('{')) => {
                let (open, close) = if c[i + 1] == '(' { ('(', ')') } else { ('{', '}') };
                let Some(end) = skip_balanced(&c, i + 2, open, close) else {
                    return Shape::Unterminated(open);
                };
                word.extend(&c[i..end]);
                i = end;
                continue;
            }
            '#' if word.is_empty() => return Shape::Comment,
            ' ' | '\t' => {
                if let Some(s) = first.end_word(&mut word) {
                    return s;
                }
            }
            '(' | ')' => return Shape::Subshell,
            // Part of a redirection: 2>&1, >&2, <&0, >|file.
            '&' | '|' if word.ends_with(['<', '>']) => word.push(ch),
            ';' | '&' | '|' | '\n' => return first.end_word(&mut word).unwrap_or_else(|| operator(&c, i)),
            _ => word.push(ch),
        }
        i += 1;
    }
    if let Some(s) = first.end_word(&mut word) {
        return s;
    }
    if first.have_command {
        Shape::Simple
    } else {
        Shape::NoCommand
    }
}

/// Why a notify hook cannot take the message appended as its last argument,
/// if it cannot. pitrkit runs `sh -c '<hook> "$@"'`, so only one simple
/// command (`program arg ...`, optionally `VAR=x` before it) gets the message
/// as its last argument; anything else loses it, gives it to another command,
/// or is a syntax error that makes every notification fail.
pub fn hook_problem(hook: &str) -> Option<String> {
    const RUN: &str = "pitrkit appends the message as an argument (sh -c '<hook> \"$@\"')";
    let why = match shape(hook) {
        Shape::Simple => return None,
        Shape::Operator { op, trailing: true } => format!(
            "ends with '{op}': {RUN}, so the message would be lost or run as a separate command"
        ),
        Shape::Operator { op: "||", .. } => format!(
            "contains '||': {RUN}, so the message would go to the command after '||' (not the first one), and a failing hook would be hidden"
        ),
        Shape::Operator { op: "&", .. } => format!(
            "contains '&': {RUN}; the command before '&' would run in the background without the message, unwatched by notify_timeout"
        ),
        Shape::Operator { op: "|", .. } => format!(
            "is a pipeline ('|'): {RUN}, so the message would go to the last command of the pipeline, not the first"
        ),
        Shape::Operator { op, .. } => format!(
            "runs several commands ('{op}'): {RUN}, so only the last command would get the message"
        ),
        Shape::Subshell => format!(
            "contains '(' or ')': {RUN}, and '( ... ) \"$@\"' is a shell syntax error, so every notification would fail"
        ),
        Shape::Keyword(k) => format!(
            "starts with the shell keyword '{k}': {RUN}, which after a compound command is a syntax error or lost"
        ),
        Shape::Eval => format!("starts with 'eval': {RUN}, so the message text would be run as shell code"),
        Shape::Comment => format!("contains a '#' comment: {RUN}, and the comment would swallow the message"),
        Shape::Unterminated(q) => format!(
            "has an unclosed '{q}': {RUN}, which the open quote or bracket would swallow (a syntax error)"
        ),
        Shape::TrailingBackslash => format!(
            "ends with '\\': {RUN}, and the backslash would glue the message to the last word"
        ),
        Shape::NoCommand => format!(
            "has no command, only variable assignments or redirections: {RUN}, so the message itself would run as the command"
        ),
    };
    Some(why)
}

/// Why a user command run without arguments (action_failover) is broken
/// anyway: pitrkit still appends `"$@"`, which is a syntax error after
/// `( ... )`, a compound command or an open quote.
pub fn command_problem(cmd: &str) -> Option<String> {
    const RUN: &str = "pitrkit runs it as sh -c '<command> \"$@\"'";
    match shape(cmd) {
        Shape::Subshell => Some(format!(
            "contains '(' or ')': {RUN}, and '( ... ) \"$@\"' is a shell syntax error, so it would always fail"
        )),
        Shape::Keyword(k) => Some(format!(
            "starts with the shell keyword '{k}': {RUN}, which after a compound command is a syntax error"
        )),
        Shape::Unterminated(q) => Some(format!("has an unclosed '{q}' (a shell syntax error)")),
        _ => None,
    }
}

/// The three notify hooks of one configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
        for (bad, why) in [
            ("echo x;", "ends with ';'"),
            ("logger -t pg &", "ends with '&'"),
            ("mail -s alert dba |", "ends with '|'"),
            ("echo a && ", "ends with '&&'"),
            ("echo x # note", "'#' comment"),
            ("# off", "'#' comment"),
            ("x \\", "ends with '\\'"),
            ("(logger -t pg)", "'(' or ')'"),
            ("logger $(date) (x)", "'(' or ')'"),
            ("{ logger -t pg; }", "keyword '{'"),
            ("if true; then logger x; fi", "keyword 'if'"),
            ("logger -t pg || true", "contains '||'"),
            ("logger -t pg && mail dba", "several commands ('&&')"),
            ("logger -t pg;echo x", "several commands (';')"),
            ("logger -t pg\necho x", "several commands ('a line break')"),
            ("logger -t pg & mail dba", "contains '&'"),
            ("logger -t pg &> /dev/null", "contains '&'"),
            ("echo | mail dba", "pipeline"),
            ("echo 'unclosed", "unclosed '''"),
            ("echo \"unclosed", "unclosed '\"'"),
            ("echo $(date", "unclosed '('"),
            ("FOO=bar", "no command"),
            ("FOO=bar > /tmp/x", "no command"),
            ("eval echo", "'eval'"),
        ] {
            let got = hook_problem(bad);
            assert!(got.as_deref().is_some_and(|g| g.contains(why)), "{bad:?}: {got:?}");
        }
        for ok in [
            "echo OK",
            "/usr/lib/nagios/send 2",
            "printf '%s' a#b",
            "VAR=x command arg",
            "NAGIOS_CMD_FILE=/a/b NAGIOS_HOST=db1 /usr/local/share/pitrkit/nagios-passive-check 2",
            "logger -t \"pitr (db1)\" -p user.err",
            "logger -t 'a;b|c&d' x",
            "logger -t pg 2>&1 >> /tmp/log",
            "logger -t $(hostname) ${TAG:-pitr} `date`",
            "echo a\\;b",
            "! false",
        ] {
            assert_eq!(hook_problem(ok), None, "{ok}");
        }
    }

    /// What is refused really fails or loses the message when run as
    /// pitrkit runs it; what is accepted really gets it.
    #[test]
    fn refused_hooks_really_lose_the_message() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let o = out.display();
        let receives = |hook: &str| {
            let _ = std::fs::remove_file(&out);
            let outcome = run_hook(hook, &["the-message"], &[], Duration::from_secs(10));
            let got = std::fs::read_to_string(&out).unwrap_or_default();
            outcome == HookOutcome::Exited(0) && got.trim_end() == "x the-message"
        };
        let recorder = format!("sh -c 'echo \"$*\" >> {o}' sh x");
        for bad in [
            format!("( {recorder} )"),
            format!("{recorder} # note"),
            format!("{recorder} || true"),
            format!("true && {recorder}; true"),
            format!("{recorder} &"),
            format!("{recorder};"),
        ] {
            assert!(hook_problem(&bad).is_some(), "{bad}");
            assert!(!receives(&bad), "{bad} delivered the message although it is refused");
        }
        for good in [recorder.clone(), format!("X=1 {recorder} 2>&1")] {
            assert_eq!(hook_problem(&good), None, "{good}");
            assert!(receives(&good), "{good}");
        }
    }

    #[test]
    fn commands_without_a_message_are_checked_for_syntax_only() {
        for bad in ["(cd / && true)", "if true; then true; fi", "echo 'a"] {
            assert!(command_problem(bad).is_some(), "{bad}");
            // Run as pitrkit runs it, each one fails.
            assert!(!run_hook(bad, &[], &[], Duration::from_secs(5)).succeeded(), "{bad}");
        }
        for ok in ["/x/failover.sh", "a && b", "a; b", "a || true", "x #note"] {
            assert_eq!(command_problem(ok), None, "{ok}");
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
