//! Reading pitrtools-style INI files exactly as Python 2's `ConfigParser` did.
//!
//! pitrtools files keep every key in `[DEFAULT]` (or before any section), use
//! `key: value` or `key = value`, ` ;` inline comments and `%(name)s`
//! interpolation. rust-ini does the tokenising; this module adds what it lacks:
//! line numbers for error messages, lower-cased keys and interpolation.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration problem, located precisely enough to fix at 3 a.m.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl ConfigError {
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: None,
            key: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn at(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }

    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_string());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " — {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// One key's value after interpolation, with the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: String,
    pub line: Option<usize>,
}

/// The `[DEFAULT]` keys of one INI file.
#[derive(Debug, Clone)]
pub struct IniFile {
    pub path: PathBuf,
    pub entries: BTreeMap<String, Entry>,
}

/// Python 2 ConfigParser gives up after this many nested `%(x)s` rounds.
const MAX_INTERPOLATION_DEPTH: usize = 10;

impl IniFile {
    pub fn load(path: &Path) -> Result<IniFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(path, format!("cannot read configuration file: {e}"))
                .hint("pass the right file with -C, or check its permissions")
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<IniFile, ConfigError> {
        let opt = ini::ParseOption {
            // Values are shell commands and paths: keep quotes and backslashes
            // verbatim, as ConfigParser did.
            enabled_quote: false,
            enabled_escape: false,
            ..Default::default()
        };
        let parsed = ini::Ini::load_from_str_opt(text, opt)
            .map_err(|e| ConfigError::new(path, format!("syntax error: {}", e.msg)).at(Some(e.line + 1)))?;
        let lines = key_lines(text);

        let mut raw: BTreeMap<String, Entry> = BTreeMap::new();
        for section in parsed.sections() {
            match section {
                None => {}
                Some(s) if s.eq_ignore_ascii_case("default") => {}
                Some(s) => {
                    return Err(ConfigError::new(path, format!("unexpected section [{s}]"))
                        .at(section_line(text, s))
                        .hint("pitrtools files keep every key under [DEFAULT]; move the keys there"))
                }
            }
            let props = parsed.section(section).expect("section listed by rust-ini");
            for (key, value) in props.iter() {
                let key = key.trim().to_ascii_lowercase();
                let line = lines.get(&key).copied();
                // Last occurrence wins, as in ConfigParser.
                raw.insert(
                    key,
                    Entry {
                        value: value.trim().to_string(),
                        line,
                    },
                );
            }
        }

        let mut entries = BTreeMap::new();
        for (key, entry) in &raw {
            let value = interpolate(path, key, entry, &raw)?;
            entries.insert(
                key.clone(),
                Entry {
                    value,
                    line: entry.line,
                },
            );
        }
        Ok(IniFile {
            path: path.to_path_buf(),
            entries,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(&self.path, message)
            .at(self.entries.get(key).and_then(|e| e.line))
            .key(key)
    }
}

/// Python 2 ConfigParser only interpolates values containing `%(`; then
/// `%(name)s` is replaced, `%%` becomes `%`, and a stray `%` is an error.
fn interpolate(path: &Path, key: &str, entry: &Entry, all: &BTreeMap<String, Entry>) -> Result<String, ConfigError> {
    let err = |msg: String| ConfigError::new(path, msg).at(entry.line).key(key);
    let mut value = entry.value.clone();
    for _ in 0..MAX_INTERPOLATION_DEPTH {
        if !value.contains("%(") {
            return Ok(value);
        }
        let mut out = String::with_capacity(value.len());
        let mut rest = value.as_str();
        while let Some(pos) = rest.find('%') {
            out.push_str(&rest[..pos]);
            rest = &rest[pos + 1..];
            if let Some(r) = rest.strip_prefix('%') {
                out.push('%');
                rest = r;
            } else if let Some(r) = rest.strip_prefix('(') {
                let close = r
                    .find(")s")
                    .ok_or_else(|| err(format!("'{key}' has an unterminated %(...)s reference")))?;
                let name = r[..close].to_ascii_lowercase();
                let target = all
                    .get(&name)
                    .ok_or_else(|| err(format!("'{key}' refers to %({name})s, which is not set in this file")))?;
                out.push_str(&target.value);
                rest = &r[close + 2..];
            } else {
                return Err(err(format!(
                    "'{key}' contains a lone '%' in a value that uses %(name)s references"
                ))
                .hint("write %% for a literal percent sign"));
            }
        }
        out.push_str(rest);
        value = out;
    }
    Err(err(format!("'{key}': %(name)s references nest too deeply (a loop?)")))
}

/// Maps each key to the last line (1-based) that assigns it. rust-ini does not
/// report positions, and an error without a line number wastes a DBA's time.
fn key_lines(text: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        // Continuation lines start with white space; they belong to the key above.
        if line.starts_with([' ', '\t']) && !line.trim().is_empty() && i > 0 {
            let trimmed = line.trim_start();
            if !trimmed.contains(['=', ':']) {
                continue;
            }
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with([';', '#', '[']) {
            continue;
        }
        if let Some(pos) = t.find(['=', ':']) {
            out.insert(t[..pos].trim().to_ascii_lowercase(), i + 1);
        }
    }
    out
}

fn section_line(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.trim().trim_start_matches('[').starts_with(name))
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<IniFile, ConfigError> {
        IniFile::parse(Path::new("test.ini"), text)
    }

    #[test]
    fn reads_pitrtools_syntax() {
        let f = parse(
            "[DEFAULT]\n; comment\n# comment\nstate: online\nPGDATA = /var/lib/pg ; inline\n\
             notify_ok: echo OK\nl_archivedir: %(pgdata)s/../archive\n",
        )
        .unwrap();
        assert_eq!(f.get("state").unwrap().value, "online");
        assert_eq!(f.get("state").unwrap().line, Some(4));
        assert_eq!(f.get("pgdata").unwrap().value, "/var/lib/pg");
        assert_eq!(f.get("notify_ok").unwrap().value, "echo OK");
        assert_eq!(f.get("l_archivedir").unwrap().value, "/var/lib/pg/../archive");
    }

    #[test]
    fn keys_without_a_section_are_accepted() {
        let f = parse("state: online\n").unwrap();
        assert_eq!(f.get("state").unwrap().value, "online");
    }

    #[test]
    fn percent_rules_follow_configparser() {
        // No %( in the value: taken verbatim, a shell command may use % freely.
        let f = parse("a: date +%s\nb: 100%%\n").unwrap();
        assert_eq!(f.get("a").unwrap().value, "date +%s");
        assert_eq!(f.get("b").unwrap().value, "100%%");
        let f = parse("x: /a\nb: %(x)s/100%%\n").unwrap();
        assert_eq!(f.get("b").unwrap().value, "/a/100%");
        let e = parse("x: /a\nb: %(x)s/5%\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("lone '%'"), "{e}");
    }

    #[test]
    fn missing_reference_names_the_key_and_line() {
        let e = parse("[DEFAULT]\nr: %(nope)s/x\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().contains("%(nope)s"), "{e}");
    }

    #[test]
    fn interpolation_loops_are_reported() {
        let e = parse("a: %(b)s\nb: %(a)s\n").unwrap_err();
        assert!(e.message.contains("nest too deeply"), "{e}");
    }

    #[test]
    fn other_sections_are_refused_with_a_hint() {
        let e = parse("[DEFAULT]\na: 1\n[archiver]\nb: 2\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.to_string().contains("[DEFAULT]"), "{e}");
    }
}
