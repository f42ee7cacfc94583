//! `rsync_flags` as pitrtools users wrote them (`-az`, `-z --partial`,
//! `--timeout=30`, `-e 'ssh -p 2222'`). pitrkit decides from rsync's report
//! what reached the other side, so each option is judged by one table
//! ([`RULES`]): handed to rsync, dropped with a warning that it has no
//! effect, taken over by the pitrkit setting that does the same, or refused
//! with what to do instead. Anything the table does not name is refused.

use super::ini::ConfigError;
use super::options::Options;
use super::validate;

/// The program whose file is read: a few options are harmless in one and
/// dangerous in the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    Archiver,
    Standby,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Treat {
    /// Handed to rsync.
    Pass,
    /// Not handed to rsync; a warning says it has no effect.
    Drop,
    /// `--timeout=N`: taken as `rsync_timeout`.
    Timeout,
    /// `-e` / `--rsh`: its `-p` port taken as `ssh_port`.
    Rsh,
    /// Refused with the reason.
    Refuse,
}

struct Rule {
    /// `-x` (a letter, also inside bundles like `-az`), `--long`, or
    /// `--long=` followed by what the value may be: `N` digits, `W` a word
    /// (letters, digits, `.:-_`), nothing for any value.
    flags: &'static [&'static str],
    /// `None`: both programs.
    only: Option<Program>,
    treat: Treat,
    why: &'static str,
}

const fn rule(flags: &'static [&'static str], only: Option<Program>, treat: Treat, why: &'static str) -> Rule {
    Rule {
        flags,
        only,
        treat,
        why,
    }
}

const ARCHIVER: Option<Program> = Some(Program::Archiver);
const STANDBY: Option<Program> = Some(Program::Standby);

use Treat::*;

/// The first rule naming a flag for the program decides.
#[rustfmt::skip]
static RULES: &[Rule] = &[
    rule(&["-z", "--compress", "--compress-level=N", "--zl=N", "--zc=W", "--compress-choice=W", "--bwlimit=W",
           "-4", "-6", "--ipv4", "--ipv6", "--address=W", "--contimeout=N", "--protocol=N", "-c", "--checksum",
           "-W", "--whole-file"],
         None, Pass, "changes only how bytes travel"),
    rule(&["-a", "--archive", "-r", "--recursive", "-l", "--links", "-t", "--times", "-p", "--perms",
           "-o", "--owner", "-g", "--group", "-D", "--devices", "--specials", "--numeric-ids",
           "-H", "--hard-links", "-S", "--sparse", "-x", "--one-file-system"],
         None, Drop, "pitrkit sets the copy options it needs itself"),
    rule(&["-v", "--verbose", "-q", "--quiet", "-h", "--human-readable", "--progress", "-P", "--stats",
           "-i", "--itemize-changes"],
         None, Drop, "pitrkit reads rsync's report itself and logs what happened (debug: on logs more)"),
    rule(&["--partial", "--partial-dir="],
         None, Drop, "pitrkit keeps no half-transferred file: an interrupted transfer starts again"),
    rule(&["--timeout=N", "--timeout"], None, Timeout, "rsync_timeout is pitrkit's time limit for rsync"),
    rule(&["-e", "--rsh=", "--rsh"], None, Rsh,
         "pitrkit runs ssh itself with its ssh_* settings; only a port (-p N) is taken over, as ssh_port"),
    rule(&["--delete", "--del", "--delete-before", "--delete-during", "--delete-delay", "--delete-after",
           "--delete-excluded", "--delete-missing-args", "--force"],
         ARCHIVER, Refuse,
         "it would delete archived WAL on the slave that is not in this queue; old WAL is removed by the standby's archive_cleanup_command (pitrkit cleanup)"),
    rule(&["--delete", "--del", "--delete-before", "--delete-during", "--delete-delay", "--delete-after",
           "--delete-excluded", "--force"],
         STANDBY, Drop, "a base backup already deletes what the master does not have"),
    rule(&["--remove-source-files", "--remove-sent-files"], ARCHIVER, Drop,
         "pitrkit removes queued files itself, once the slave has them durably"),
    rule(&["--remove-source-files", "--remove-sent-files"], STANDBY, Refuse,
         "a base backup would delete the master's data files"),
    rule(&["--inplace", "--append", "--append-verify"], None, Refuse,
         "rsync would write files under their real names before they are complete: a standby could restore half a WAL segment, or start from half-updated data files"),
    rule(&["--ignore-existing"], ARCHIVER, Drop,
         "pitrkit never replaces a file on a slave already (a different one is a conflict)"),
    rule(&["--ignore-existing", "--existing", "-u", "--update", "--size-only"], None, Refuse,
         "rsync would skip files that differ, and a base backup would keep stale data files"),
    rule(&["-n", "--dry-run", "--list-only", "--max-size=", "--min-size=", "--exclude=", "--include=",
           "--exclude-from=", "--include-from=", "--filter=", "-f", "-F", "-C", "--cvs-exclude",
           "--compare-dest=", "--copy-dest=", "--link-dest=", "-T", "--temp-dir=", "--out-format=",
           "--log-format=", "--info=", "--debug=", "-b", "--backup", "--backup-dir=", "--suffix="],
         None, Refuse,
         "it changes which files rsync copies, where, or what it reports, and pitrkit decides from that report what reached the other side"),
];

/// What `rsync_flags` amounts to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RsyncFlags {
    /// Handed to rsync.
    pub pass: Vec<String>,
    /// From `--timeout=N`.
    pub timeout: Option<u64>,
    /// From `-e 'ssh -p N'`.
    pub ssh_port: Option<u16>,
}

/// One option, with its value when it takes one.
struct Flag {
    /// As written, for messages.
    shown: String,
    /// `-x` or `--long`.
    name: String,
    value: Option<String>,
}

/// Judges `rsync_flags`; warnings go to `o`.
pub fn judge(o: &Options, program: Program) -> Result<RsyncFlags, ConfigError> {
    let Some(text) = o.flags_text("rsync_flags") else {
        return Ok(RsyncFlags::default());
    };
    let words = split_words(&text).map_err(|why| refused(o, &text, why))?;
    let mut out = RsyncFlags::default();
    for flag in flags(o, &words)? {
        let Some((r, pattern)) = find_rule(&flag, program) else {
            return Err(refused(o, &flag.shown, "is not an option pitrkit knows to be safe here".into()).hint(
                "only options that change how bytes travel are handed to rsync: -z, --compress, --compress-level=N, --zl=N, --zc=NAME, --compress-choice=NAME, --bwlimit=RATE, -4, -6, --address=ADDR, --contimeout=N, --protocol=N, -c, --checksum, -W; -a, -v, -P, --partial and the like are accepted and have no effect; use the ssh_* keys for ssh settings",
            ));
        };
        match r.treat {
            Pass => out.pass.push(checked(o, &flag, pattern)?),
            Drop => o.warn(no_effect(o, &flag, r.why)),
            Refuse => {
                return Err(refused(o, &flag.shown, format!("is refused: {}", r.why)).hint("remove it from rsync_flags"))
            }
            Timeout => {
                let t = number(o, &flag)?;
                once(o, &mut out.timeout, t, "--timeout")?;
                o.warn(mapped(o, &flag, "rsync_timeout", &t.to_string(), r.why));
            }
            Rsh => {
                let port = rsh_port(o, &flag)?;
                if let Some(p) = port {
                    once(o, &mut out.ssh_port, p, "-e")?;
                }
                o.warn(match port {
                    Some(p) => mapped(o, &flag, "ssh_port", &p.to_string(), r.why),
                    None => no_effect(o, &flag, r.why),
                });
            }
        }
    }
    Ok(out)
}

impl RsyncFlags {
    /// `rsync_timeout`, or the `--timeout` of rsync_flags; both set and
    /// different is refused with both lines.
    pub fn timeout(&self, o: &Options) -> Result<std::time::Duration, ConfigError> {
        let key = o.seconds("rsync_timeout")?;
        match self.timeout {
            Some(t) if o.is_set("rsync_timeout") && t != key.as_secs() => Err(conflict(
                o,
                &format!("--timeout={t}"),
                "rsync_timeout",
                &key.as_secs().to_string(),
            )),
            Some(0) => Err(refused(
                o,
                "--timeout=0",
                "would let a hung transfer hold the queue forever".into(),
            )
            .hint("use rsync_timeout: N (at least 1)")),
            Some(t) => Ok(std::time::Duration::from_secs(t)),
            None => Ok(key),
        }
    }

    /// The port already known (`ssh_port`, or a legacy `ssh: ... -p N`), or
    /// the `-p` port of an `-e 'ssh -p N'`; both set and different is
    /// refused with both lines.
    pub fn ssh_port(&self, o: &Options, known: Option<u16>) -> Result<Option<u16>, ConfigError> {
        match (self.ssh_port, known) {
            (Some(p), Some(k)) if p != k => Err(conflict(o, &format!("-e 'ssh -p {p}'"), "ssh_port", &k.to_string())),
            (p, k) => Ok(p.or(k)),
        }
    }
}

/// "rsync_flags: '<flag>' <why>", at the rsync_flags line.
fn refused(o: &Options, shown: &str, why: String) -> ConfigError {
    o.file().error(
        "rsync_flags",
        format!("rsync_flags: {} {why}", o.show("rsync_flags", shown)),
    )
}

/// The warning for an option that is not handed to rsync.
fn no_effect(o: &Options, flag: &Flag, why: &str) -> ConfigError {
    o.file()
        .error(
            "rsync_flags",
            format!("rsync_flags: '{}' has no effect in pitrkit: {why}", flag.shown),
        )
        .hint("remove it from rsync_flags")
}

/// The warning for an option taken over by a pitrkit key.
fn mapped(o: &Options, flag: &Flag, key: &str, value: &str, why: &str) -> ConfigError {
    o.file()
        .error(
            "rsync_flags",
            format!("rsync_flags: '{}' is taken as {key}: {value} ({why})", flag.shown),
        )
        .hint(format!("write '{key}: {value}' and remove it from rsync_flags"))
}

/// An option of rsync_flags and an explicit key that disagree.
fn conflict(o: &Options, flag: &str, key: &str, value: &str) -> ConfigError {
    let line = |k: &str| {
        o.file()
            .get(k)
            .and_then(|e| e.line)
            .map_or(String::new(), |l| format!(" (line {l})"))
    };
    o.file()
        .error(
            "rsync_flags",
            format!(
                "rsync_flags{} says {flag} but {key}{} is {value}",
                line("rsync_flags"),
                line(key)
            ),
        )
        .hint(format!("keep one: set {key} and remove the option from rsync_flags"))
}

/// Records a mapped value, refusing a second, different one.
fn once<T: PartialEq + std::fmt::Display + Copy>(
    o: &Options,
    slot: &mut Option<T>,
    value: T,
    name: &str,
) -> Result<(), ConfigError> {
    match slot {
        Some(old) if *old != value => {
            Err(refused(o, name, format!("is given twice, as {old} and {value}")).hint("keep one"))
        }
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// The rule for `flag` in `program`, with the table entry it matched.
fn find_rule(flag: &Flag, program: Program) -> Option<(&'static Rule, &'static str)> {
    RULES
        .iter()
        .filter(|r| r.only.map_or(true, |p| p == program))
        .find_map(|r| r.flags.iter().find(|p| matches(p, flag)).map(|p| (r, *p)))
}

fn matches(pattern: &str, flag: &Flag) -> bool {
    match pattern.split_once('=') {
        Some((name, _)) => name == flag.name && flag.value.is_some(),
        None => {
            pattern == flag.name && (flag.value.is_none() || matches!(flag.name.as_str(), "-e" | "--rsh" | "--timeout"))
        }
    }
}

/// A passed option, its value checked against the table's pattern, as rsync
/// gets it.
fn checked(o: &Options, flag: &Flag, pattern: &str) -> Result<String, ConfigError> {
    let Some(value) = &flag.value else {
        return Ok(flag.name.clone());
    };
    let ok = match pattern.rsplit_once('=').map(|(_, kind)| kind) {
        Some("N") => value.bytes().all(|b| b.is_ascii_digit()),
        _ => value.chars().all(|c| c.is_ascii_alphanumeric() || ".:-_".contains(c)),
    };
    if value.is_empty() || !ok {
        return Err(refused(o, &flag.shown, "has a value pitrkit does not accept".into())
            .hint("write digits for numbers, and letters, digits, '.', ':', '-' or '_' for names and rates"));
    }
    Ok(format!("{}={value}", flag.name))
}

fn number(o: &Options, flag: &Flag) -> Result<u64, ConfigError> {
    let v = flag.value.as_deref().unwrap_or_default();
    v.parse()
        .map_err(|_| refused(o, &flag.shown, "needs a whole number of seconds".into()).hint("e.g. --timeout=30"))
}

/// The port of `-e 'ssh -p N'` (None for a plain `-e ssh`); anything else
/// in the command is refused.
fn rsh_port(o: &Options, flag: &Flag) -> Result<Option<u16>, ConfigError> {
    let v = flag.value.as_deref().unwrap_or_default();
    let words: Vec<&str> = v.split_whitespace().collect();
    let bad = || {
        refused(
            o,
            &flag.shown,
            "is refused: pitrkit runs ssh itself, and takes over only its port (-p N)".into(),
        )
        .hint("put ssh options in ssh_options, the key file in ssh_identity, the program in ssh")
    };
    let (Some(program), rest) = (words.first(), &words[words.len().min(1)..]) else {
        return Err(bad());
    };
    if program.rsplit('/').next() != Some("ssh") {
        return Err(bad());
    }
    let port = match rest {
        [] => return Ok(None),
        ["-p", n] => *n,
        [p] if p.starts_with("-p") => &p[2..],
        _ => return Err(bad()),
    };
    port.parse::<u16>().ok().filter(|p| *p > 0).map(Some).ok_or_else(bad)
}

/// The words of `rsync_flags` into options: `--long=value`, `--long value`
/// for --timeout and --rsh, `-e value`, and bundles of letters (`-avz`,
/// whose `e`, last, takes the next word).
fn flags(o: &Options, words: &[String]) -> Result<Vec<Flag>, ConfigError> {
    let mut out = Vec::new();
    let mut it = words.iter().peekable();
    while let Some(w) = it.next() {
        let takes_next = |name: &str| matches!(name, "-e" | "--rsh" | "--timeout");
        if let Some(long) = w.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (format!("--{n}"), Some(v.to_string())),
                None if takes_next(w) => (w.clone(), it.next().cloned()),
                None => (w.clone(), None),
            };
            out.push(Flag {
                shown: value.as_ref().map_or(name.clone(), |v| format!("{name}={v}")),
                name,
                value,
            });
            continue;
        }
        let Some(letters) = w.strip_prefix('-').filter(|l| !l.is_empty()) else {
            return Err(refused(o, w, validate::Refusal::NotOption.to_string())
                .hint("write options with their value joined by '=', e.g. --bwlimit=1000"));
        };
        for (i, c) in letters.char_indices() {
            if c == 'e' {
                let rest = &letters[i + 1..];
                let value = if rest.is_empty() {
                    it.next().cloned()
                } else {
                    Some(rest.to_string())
                };
                let shown = format!("-e {}", value.clone().unwrap_or_default());
                out.push(Flag {
                    shown,
                    name: "-e".into(),
                    value,
                });
                break;
            }
            out.push(Flag {
                shown: if letters.len() > 1 {
                    format!("-{c} (in {w})")
                } else {
                    w.clone()
                },
                name: format!("-{c}"),
                value: None,
            });
        }
    }
    Ok(out)
}

/// Splits like a shell (the way pitrtools' os.system read rsync_flags):
/// white space between words, '...' and "..." quote, `\` escapes.
fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' | '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        None => return Err(format!("has an unclosed {c}")),
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => w.extend(chars.next()),
                        Some(x) => w.push(x),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::options::ARCHIVER_OPTIONS;
    use crate::config::IniFile;
    use std::path::Path;

    fn judge_text(program: Program, text: &str) -> (Result<RsyncFlags, ConfigError>, Vec<String>) {
        let f = IniFile::parse(Path::new("a.ini"), text).unwrap();
        let defs = match program {
            Program::Archiver => ARCHIVER_OPTIONS,
            Program::Standby => crate::config::options::STANDBY_OPTIONS,
        };
        let o = Options::new(&f, defs).unwrap();
        let r = judge(&o, program);
        (r, o.into_warnings().iter().map(|w| w.message.clone()).collect())
    }

    fn flags_of(program: Program, flags: &str) -> (Result<RsyncFlags, ConfigError>, Vec<String>) {
        judge_text(program, &format!("rsync_flags: {flags}\n"))
    }

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            split_words(r#"-z -e 'ssh -p 2222' --rsh="ssh -p \"1\"" a\ b"#).unwrap(),
            ["-z", "-e", "ssh -p 2222", "--rsh=ssh -p \"1\"", "a b"]
        );
        assert!(split_words("-e 'ssh").is_err());
    }

    #[test]
    fn real_files_flags_are_passed_dropped_or_mapped() {
        for program in [Program::Archiver, Program::Standby] {
            let (r, w) = flags_of(
                program,
                "-avzP --partial --progress -q --timeout=30 -e 'ssh -p 2222' --bwlimit=1.5m",
            );
            let r = r.unwrap();
            assert_eq!(r.pass, ["-z", "--bwlimit=1.5m"]);
            assert_eq!((r.timeout, r.ssh_port), (Some(30), Some(2222)));
            assert_eq!(w.len(), 8, "{w:#?}");
            assert!(
                w[0].starts_with("rsync_flags: '-a (in -avzP)' has no effect in pitrkit"),
                "{w:#?}"
            );
            assert!(w.iter().any(|m| m == "rsync_flags: '--timeout=30' is taken as rsync_timeout: 30 (rsync_timeout is pitrkit's time limit for rsync)"), "{w:#?}");
            assert!(
                w.iter()
                    .any(|m| m.starts_with("rsync_flags: '-e ssh -p 2222' is taken as ssh_port: 2222")),
                "{w:#?}"
            );
        }
        let (r, w) = flags_of(Program::Archiver, "-e ssh");
        assert_eq!(r.unwrap(), RsyncFlags::default());
        assert!(
            w.len() == 1 && w[0].starts_with("rsync_flags: '-e ssh' has no effect"),
            "{w:?}"
        );
        let (r, _) = flags_of(Program::Archiver, "-ze /usr/bin/ssh\\ -p2022 --timeout 9");
        let r = r.unwrap();
        assert_eq!(
            (r.pass.as_slice(), r.timeout, r.ssh_port),
            (&["-z".to_string()][..], Some(9), Some(2022))
        );
    }

    #[test]
    fn unsafe_flags_are_refused_with_the_reason() {
        for (program, flag, why) in [
            (Program::Archiver, "--delete", "archive_cleanup_command"),
            (Program::Archiver, "--delete-after", "archive_cleanup_command"),
            (Program::Archiver, "--inplace", "half a WAL segment"),
            (Program::Archiver, "--append-verify", "half a WAL segment"),
            (Program::Standby, "--remove-source-files", "master's data files"),
            (Program::Standby, "--ignore-existing", "stale data files"),
            (Program::Archiver, "-zn", "what it reports"),
            (Program::Archiver, "--out-format=%n", "what it reports"),
            (Program::Archiver, "-e 'ssh -i /k'", "only its port"),
            (Program::Archiver, "-e rsh", "only its port"),
            (Program::Archiver, "--bwlimit=", "does not accept"),
            (Program::Archiver, "--protocol=x", "does not accept"),
            (Program::Archiver, "-X", "not an option pitrkit knows"),
            (Program::Archiver, "--timeout=30 --timeout=40", "given twice"),
            (Program::Archiver, "bwlimit=5", "is not an option"),
        ] {
            let (r, _) = flags_of(program, flag);
            let e = r.unwrap_err();
            assert_eq!(e.line, Some(1), "{flag}");
            assert!(e.to_string().contains(why), "{flag}: {e}");
        }
        // Harmless where pitrkit already does it.
        let (r, w) = flags_of(Program::Archiver, "--remove-source-files --ignore-existing");
        assert!(r.unwrap().pass.is_empty());
        assert_eq!(w.len(), 2);
        let (r, w) = flags_of(Program::Standby, "--delete");
        assert!(r.unwrap().pass.is_empty() && w.len() == 1);
    }

    #[test]
    fn a_mapped_flag_and_its_key_must_agree() {
        let text = "rsync_timeout: 60\nrsync_flags: --timeout=30 -e 'ssh -p 22'\nssh_port: 2222\n";
        let f = IniFile::parse(Path::new("a.ini"), text).unwrap();
        let o = Options::new(&f, ARCHIVER_OPTIONS).unwrap();
        let r = judge(&o, Program::Archiver).unwrap();
        assert_eq!(
            r.timeout(&o).unwrap_err().to_string(),
            "a.ini line 2: rsync_flags (line 2) says --timeout=30 but rsync_timeout (line 1) is 60 — keep one: set rsync_timeout and remove the option from rsync_flags"
        );
        assert!(r
            .ssh_port(&o, Some(2222))
            .unwrap_err()
            .to_string()
            .contains("says -e 'ssh -p 22' but ssh_port (line 3) is 2222"));
        let f = IniFile::parse(Path::new("a.ini"), "rsync_timeout: 30\nrsync_flags: --timeout=30\n").unwrap();
        let o = Options::new(&f, ARCHIVER_OPTIONS).unwrap();
        let r = judge(&o, Program::Archiver).unwrap();
        assert_eq!(r.timeout(&o).unwrap().as_secs(), 30);
        assert_eq!(r.ssh_port(&o, None).unwrap(), None);
    }
}
