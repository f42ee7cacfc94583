//! Reading pitrtools-style INI files exactly as Python 2's `ConfigParser` did.
//!
//! pitrtools files keep every key in `[DEFAULT]` (or before any section), use
//! `key: value` or `key = value`, ` ;` inline comments, indented continuation
//! lines and `%(name)s` interpolation. The reader is line-based like
//! ConfigParser's own, so every key knows the lines it came from: an error
//! without a line number wastes a DBA's time.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration problem, located precisely enough to fix at 3 a.m.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// Last line of a value continued over several lines (u32 keeps the
    /// error small enough to pass by value).
    pub last_line: Option<u32>,
    pub key: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl ConfigError {
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: None,
            last_line: None,
            key: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn at(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }

    /// The lines a (continued) value spans.
    pub fn lines(mut self, first: Option<usize>, last: Option<usize>) -> Self {
        self.line = first;
        self.last_line = last.filter(|l| Some(*l) > first).and_then(|l| u32::try_from(l).ok());
        self
    }

    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_string());
        self
    }

    /// Adds a hint; a second one is appended, so a hint about the file's
    /// syntax (a continuation line) survives the key's own hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        let hint = hint.into();
        self.hint = Some(match self.hint.take() {
            Some(first) => format!("{first}; {hint}"),
            None => hint,
        });
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        match (self.line, self.last_line) {
            (Some(first), Some(last)) => write!(f, " lines {first}-{last}")?,
            (Some(line), None) => write!(f, " line {line}")?,
            _ => {}
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " — {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// One key's value after interpolation, with the lines it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: String,
    pub line: Option<usize>,
    /// Last continuation line, when the value spans several lines.
    pub last_line: Option<usize>,
    /// The secret key (a password) whose value this one is or includes;
    /// such a value is never printed (see [`IniFile::show`]).
    pub secret: Option<String>,
}

/// A warning has the shape of an error (where, what, what to do next); the
/// loaders collect them and the commands decide whether to print them.
pub type ConfigWarning = ConfigError;

/// A key in a section other than [DEFAULT]. pitrtools read only [DEFAULT]
/// (`ConfigParser.get('DEFAULT', key)`), so pitrkit reads no other section
/// either; [`super::options::Options`] warns about keys it knows there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherKey {
    pub section: String,
    pub key: String,
    pub line: usize,
}

/// The `[DEFAULT]` keys of one INI file.
#[derive(Debug, Clone)]
pub struct IniFile {
    pub path: PathBuf,
    pub entries: BTreeMap<String, Entry>,
    /// Keys of other sections, which are not read.
    pub others: Vec<OtherKey>,
    /// Keys some [DEFAULT] value refers to with `%(name)s`.
    pub referenced: BTreeSet<String>,
    /// Found while reading (a key set twice with the same value).
    pub warnings: Vec<ConfigWarning>,
}

/// Python 2 ConfigParser gives up after this many nested `%(x)s` rounds.
const MAX_INTERPOLATION_DEPTH: usize = 10;

/// Keys whose values are never printed: passwords end up in log files and
/// terminal scroll-back otherwise.
pub fn is_secret_key(key: &str) -> bool {
    key.contains("password")
}

/// A value for an error message: quoted, with line breaks and other control
/// characters escaped so the message stays on one line.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A comment line: `#` or `;` first, or the word `rem`.
fn is_comment(line: &str) -> bool {
    line.starts_with(['#', ';'])
        || (line.starts_with(['r', 'R'])
            && line
                .split_whitespace()
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case("rem")))
}

/// One `key: value` line (with its continuation lines) as read, in the
/// section it sits in (`None`: [DEFAULT] or before any section header).
struct Occurrence {
    key: String,
    section: Option<String>,
    value: RawValue,
}

/// Every line's key, section and raw value, as ConfigParser reads them.
fn read_lines(path: &Path, text: &str) -> Result<Vec<Occurrence>, ConfigError> {
    let mut out: Vec<Occurrence> = Vec::new();
    let mut section: Option<String> = None;
    // The occurrence an indented line continues.
    let mut current: Option<usize> = None;
    for (i, line) in text.split('\n').enumerate() {
        let n = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let trimmed = line.trim();
        if trimmed.is_empty() || is_comment(line) {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            if trimmed.starts_with(['#', ';']) {
                continue;
            }
            let Some(index) = current else {
                return Err(ConfigError::new(path, "indented line with no key above it to continue")
                    .at(Some(n))
                    .hint("an indented line continues the value of the key above (ConfigParser); remove the leading white space"));
            };
            out[index].value.lines.push(trimmed.to_string());
            out[index].value.last = n;
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            section = section_name(path, n, rest, trimmed)?;
            current = None;
            continue;
        }
        let (key, value) = key_value(path, n, line, trimmed)?;
        out.push(Occurrence {
            key,
            section: section.clone(),
            value: RawValue {
                lines: vec![value],
                first: n,
                last: n,
            },
        });
        current = Some(out.len() - 1);
    }
    Ok(out)
}

/// The [DEFAULT] keys of `lines`: a key set twice with the same value is
/// accepted with a warning; with different values it is refused, naming both
/// lines (ConfigParser silently kept the last, and an ambiguous setting in a
/// WAL tool is dangerous while the fix is one line).
fn default_values(
    path: &Path,
    lines: Vec<Occurrence>,
    hidden: &BTreeSet<String>,
    warnings: &mut Vec<ConfigWarning>,
    others: &mut Vec<OtherKey>,
) -> Result<BTreeMap<String, RawValue>, ConfigError> {
    let mut raw: BTreeMap<String, RawValue> = BTreeMap::new();
    for Occurrence { key, section, value } in lines {
        if let Some(section) = section {
            others.push(OtherKey {
                section,
                key,
                line: value.first,
            });
            continue;
        }
        let Some(old) = raw.get(&key) else {
            raw.insert(key, value);
            continue;
        };
        let (a, b) = (old.first, value.first);
        if old.lines == value.lines {
            warnings.push(
                ConfigError::new(
                    path,
                    format!("'{key}' is set twice, with the same value (lines {a} and {b})"),
                )
                .at(Some(b))
                .key(&key)
                .hint("delete one of the lines"),
            );
            continue;
        }
        let show = |v: &RawValue| {
            if is_secret_key(&key) || hidden.contains(&key) {
                "(not shown: a secret)".to_string()
            } else {
                quote(&v.lines.join("\n"))
            }
        };
        return Err(ConfigError::new(
            path,
            format!(
                "'{key}' is set twice with different values: line {a} says {}, line {b} says {}",
                show(old),
                show(&value)
            ),
        )
        .at(Some(b))
        .key(&key)
        .hint("delete the line you do not mean (ConfigParser silently used the last one; pitrkit will not guess)"));
    }
    Ok(raw)
}

/// A section header (`rest` follows its '['): `None` for [DEFAULT], else the
/// section's name.
fn section_name(path: &Path, n: usize, rest: &str, trimmed: &str) -> Result<Option<String>, ConfigError> {
    let Some(close) = rest.find(']').filter(|c| *c > 0) else {
        return Err(ConfigError::new(path, format!("bad section header {}", quote(trimmed)))
            .at(Some(n))
            .hint("write the header as [DEFAULT]"));
    };
    let name = &rest[..close];
    Ok((!name.eq_ignore_ascii_case("default")).then(|| name.to_string()))
}

/// A `key: value` or `key = value` line: the lower-cased key and the value
/// without its inline comment.
fn key_value(path: &Path, n: usize, line: &str, trimmed: &str) -> Result<(String, String), ConfigError> {
    let Some(sep) = line.find([':', '=']) else {
        // "master_password hunter2" lacks its colon: not an echo.
        let shown = if is_secret_key(&trimmed.to_ascii_lowercase()) {
            "this line (not shown: it mentions a password)".to_string()
        } else {
            quote(trimmed)
        };
        return Err(ConfigError::new(path, format!("{shown} is not a 'key: value' line"))
            .at(Some(n))
            .hint("write 'key: value' or 'key = value'; comment lines start with '#' or ';'"));
    };
    let key = line[..sep].trim_end().to_ascii_lowercase();
    if key.is_empty() {
        return Err(ConfigError::new(path, "a value without a key")
            .at(Some(n))
            .hint("write 'key: value' or 'key = value'"));
    }
    let mut value = line[sep + 1..].trim_start();
    // ';' starts a comment only after white space (ConfigParser looks
    // at the first ';' alone).
    if let Some(pos) = value.find(';').filter(|p| *p > 0) {
        if value[..pos].ends_with(char::is_whitespace) {
            value = &value[..pos];
        }
    }
    let mut value = value.trim().to_string();
    if value == "\"\"" {
        value.clear();
    }
    Ok((key, value))
}

/// A key's value as ConfigParser collects it: the first line's text, then
/// one more line per continuation line.
struct RawValue {
    lines: Vec<String>,
    first: usize,
    last: usize,
}

impl IniFile {
    pub fn load(path: &Path) -> Result<IniFile, ConfigError> {
        if path.is_dir() {
            return Err(ConfigError::new(path, "is a directory, not a configuration file")
                .hint("pass the configuration file itself with -C, e.g. -C /etc/pitrkit/archiver.ini"));
        }
        let bytes = std::fs::read(path).map_err(|e| {
            // A relative name (the default when -C is missing) means little
            // in PostgreSQL's log: say where it was looked for.
            let shown = std::env::current_dir().map(|d| d.join(path)).unwrap_or(path.into());
            let err = ConfigError::new(&shown, format!("cannot read configuration file: {e}"));
            match e.kind() {
                std::io::ErrorKind::NotFound => err.hint(
                    "pass the configuration file with -C /path/to/file.ini (without -C, it is looked for in the current directory)",
                ),
                std::io::ErrorKind::PermissionDenied => err.hint(
                    "make it readable by the OS user pitrkit runs as (usually postgres), e.g. chgrp postgres and chmod 640",
                ),
                _ => err.hint("pass the right file with -C, or check its permissions"),
            }
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            ConfigError::new(path, "is not UTF-8 text")
                .at(Some(line))
                .hint("save the file as UTF-8 (or plain ASCII)")
        })?;
        Self::parse(path, &text)
    }

    /// Parses like Python 2's `ConfigParser._read`: blank lines and lines
    /// starting with `#`, `;` or the word `rem` are comments; an indented line
    /// continues the value above (joined with '\n'); `key: value` or
    /// `key = value`, where ` ;` starts an inline comment on the key's line.
    /// Unlike ConfigParser, keys before any section are accepted (as
    /// [DEFAULT]), an indented comment line is a comment (as in Python 3), and
    /// a key set twice with different values is an error (ConfigParser
    /// silently kept the last one). Only [DEFAULT] is read and interpolated.
    pub fn parse(path: &Path, text: &str) -> Result<IniFile, ConfigError> {
        let lines = read_lines(path, text.strip_prefix('\u{feff}').unwrap_or(text))?;
        // A helper key may serve a value in another section too.
        let referenced = lines
            .iter()
            .flat_map(|o| o.value.lines.iter().flat_map(|l| references(l)))
            .collect();
        let (mut warnings, mut others) = (Vec::new(), Vec::new());
        let hidden = secret_helpers(&lines);
        let raw = default_values(path, lines, &hidden, &mut warnings, &mut others)?;
        let raw: BTreeMap<String, Entry> = raw
            .into_iter()
            .map(|(key, v)| {
                // ConfigParser joins continuation lines with '\n'; an empty
                // first line (the value starts on the next line) is kept.
                let entry = Entry {
                    value: v.lines.join("\n"),
                    line: Some(v.first),
                    last_line: Some(v.last).filter(|l| *l > v.first),
                    secret: is_secret_key(&key).then(|| key.clone()),
                };
                (key, entry)
            })
            .collect();
        let mut entries = BTreeMap::new();
        for (key, entry) in &raw {
            let (value, secret) = interpolate(path, key, entry, &raw)?;
            entries.insert(
                key.clone(),
                Entry {
                    value,
                    secret,
                    ..entry.clone()
                },
            );
        }
        Ok(IniFile {
            path: path.to_path_buf(),
            entries,
            others,
            referenced,
            warnings,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// An error about `key`, located at its line(s). A value continued over
    /// several lines gets a hint, since the continuation is rarely meant.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let entry = self.entries.get(key);
        let err = ConfigError::new(&self.path, message)
            .lines(entry.and_then(|e| e.line), entry.and_then(|e| e.last_line))
            .key(key);
        match entry {
            Some(Entry {
                line: Some(first),
                last_line: Some(_),
                ..
            }) => err.hint(format!(
                "an indented line continues the value of the key above it (ConfigParser), so '{key}' runs on from line {first}; remove the indentation if that line is a key of its own"
            )),
            _ => err,
        }
    }

    /// `fragment` (a key's value or part of it) for an error message: quoted
    /// and escaped, or, when the value comes from a password, only where it
    /// came from.
    pub fn show(&self, key: &str, fragment: &str) -> String {
        match self.entries.get(key).and_then(|e| e.secret.as_deref()) {
            Some(s) if s == key => format!("(value of secret key '{s}' not shown)"),
            Some(s) => format!("(value not shown: it includes secret key '{s}')"),
            None => quote(fragment),
        }
    }
}

/// Python 2 ConfigParser only interpolates values containing `%(`; then
/// `%(name)s` is replaced, `%%` becomes `%`, and a stray `%` is an error.
/// Returns the value and the secret key it includes, if any. Errors name the
/// key and line, and never repeat a reference found inside a secret value.
fn interpolate(
    path: &Path,
    key: &str,
    entry: &Entry,
    all: &BTreeMap<String, Entry>,
) -> Result<(String, Option<String>), ConfigError> {
    let mut secret = entry.secret.clone();
    let err = |msg: String| ConfigError::new(path, msg).lines(entry.line, entry.last_line).key(key);
    let mut value = entry.value.clone();
    for round in 0..MAX_INTERPOLATION_DEPTH {
        if !value.contains("%(") {
            return Ok((value, secret));
        }
        // From the second round on, the text holds values substituted in the
        // first: a secret's own text must not leak through a reference name.
        let hide = if round == 0 {
            entry.secret.clone()
        } else {
            secret.clone()
        };
        value = substitute(&value, all, &mut secret).map_err(|p| p.error(key, hide.as_deref(), err))?;
    }
    Err(err(format!(
        "'{key}': %(name)s references nest more than {MAX_INTERPOLATION_DEPTH} deep (a loop?)"
    ))
    .hint("a key must not refer to itself, directly or through other keys"))
}

/// Helper keys a secret is made of (`master_password: %(pw)s`), directly
/// or through other helpers: their values are secrets too.
fn secret_helpers(lines: &[Occurrence]) -> BTreeSet<String> {
    let mut hidden = BTreeSet::new();
    loop {
        let more: BTreeSet<String> = lines
            .iter()
            .filter(|o| is_secret_key(&o.key) || hidden.contains(&o.key))
            .flat_map(|o| o.value.lines.iter().flat_map(|l| references(l)))
            .filter(|k| !hidden.contains(k))
            .collect();
        if more.is_empty() {
            return hidden;
        }
        hidden.extend(more);
    }
}

/// The names a value refers to with `%(name)s` (lower-cased, as keys are).
fn references(value: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = value;
    while let Some(pos) = rest.find("%(") {
        rest = &rest[pos + 2..];
        if let Some(close) = rest.find(")s") {
            names.push(rest[..close].to_ascii_lowercase());
            rest = &rest[close + 2..];
        }
    }
    names
}

/// Why a value's `%` references could not be replaced.
enum Reference {
    Unterminated,
    Missing(String),
    LonePercent,
}

impl Reference {
    /// The error for `key`; `hide` names the secret whose text the value
    /// holds, so no reference name from it is repeated.
    fn error(self, key: &str, hide: Option<&str>, err: impl Fn(String) -> ConfigError) -> ConfigError {
        let hidden = match hide {
            None => String::new(),
            Some(s) if s == key => format!(" (the value is not shown: '{key}' is a secret)"),
            Some(s) => format!(", inside the value of secret key '{s}' (not shown)"),
        };
        match self {
            Reference::Unterminated => err(format!("'{key}' has an unterminated %(...)s reference{hidden}"))
                .hint("end each reference with ')s', or write %% for a literal percent sign"),
            Reference::Missing(name) => match hide {
                None => err(format!("'{key}' refers to %({name})s, which is not set in this file")),
                Some(_) => err(format!("'{key}' refers to a key that is not set in this file{hidden}")),
            }
            .hint("set that key, or write %% for a literal percent sign"),
            Reference::LonePercent => err(format!(
                "'{key}' contains a lone '%' in a value that uses %(name)s references"
            ))
            .hint("write %% for a literal percent sign"),
        }
    }
}

/// One round: each `%(name)s` replaced by that key's value, `%%` by `%`.
/// `secret` becomes the first secret key whose value is substituted.
fn substitute(value: &str, all: &BTreeMap<String, Entry>, secret: &mut Option<String>) -> Result<String, Reference> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos + 1..];
        if let Some(r) = rest.strip_prefix('%') {
            out.push('%');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('(') {
            let close = r.find(")s").ok_or(Reference::Unterminated)?;
            let name = r[..close].to_ascii_lowercase();
            let target = all.get(&name).ok_or(Reference::Missing(name))?;
            if secret.is_none() {
                *secret = target.secret.clone();
            }
            out.push_str(&target.value);
            rest = &r[close + 2..];
        } else {
            return Err(Reference::LonePercent);
        }
    }
    out.push_str(rest);
    Ok(out)
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
             notify_ok: echo OK\nl_archivedir: %(pgdata)s/../archive\nrem a comment too\nempty: \"\"\n",
        )
        .unwrap();
        assert_eq!(f.get("state").unwrap().value, "online");
        assert_eq!(f.get("state").unwrap().line, Some(4));
        assert_eq!(f.get("pgdata").unwrap().value, "/var/lib/pg");
        assert_eq!(f.get("notify_ok").unwrap().value, "echo OK");
        assert_eq!(f.get("l_archivedir").unwrap().value, "/var/lib/pg/../archive");
        assert_eq!(f.get("empty").unwrap().value, "");
        assert_eq!(f.entries.len(), 5);
    }

    #[test]
    fn inline_comments_follow_configparser() {
        // Only ';' after white space starts a comment, and only the first ';'
        // counts; '#' inside a value is part of it.
        let f = parse("a: x;y ; z\nb: x ; y ; z\nc: echo x # note\nd: a\tb ;c\n").unwrap();
        assert_eq!(f.get("a").unwrap().value, "x;y ; z");
        assert_eq!(f.get("b").unwrap().value, "x");
        assert_eq!(f.get("c").unwrap().value, "echo x # note");
        assert_eq!(f.get("d").unwrap().value, "a\tb");
    }

    #[test]
    fn continuation_lines_are_joined_with_newlines() {
        let f =
            parse("[DEFAULT]\nslaves: a,\n   b,\n\n\t c\n  ; an indented comment\nstate: online\npgdata: /x\n  /y\n")
                .unwrap();
        let s = f.get("slaves").unwrap();
        assert_eq!(s.value, "a,\nb,\nc");
        assert_eq!((s.line, s.last_line), (Some(2), Some(5)));
        // Line numbers of later keys stay right.
        assert_eq!(f.get("state").unwrap().line, Some(7));
        assert_eq!(f.get("state").unwrap().last_line, None);
        let p = f.get("pgdata").unwrap();
        assert_eq!(p.value, "/x\n/y");
        let e = f.error("pgdata", "pgdata: bad");
        assert_eq!((e.line, e.last_line), (Some(8), Some(9u32)));
        assert!(
            e.to_string()
                .starts_with("test.ini lines 8-9: pgdata: bad — an indented line continues"),
            "{e}"
        );
        // A value may start on the next line.
        assert_eq!(parse("a:\n  x\n").unwrap().get("a").unwrap().value, "\nx");
    }

    #[test]
    fn windows_line_ends_and_a_bom_are_read() {
        let f = parse("\u{feff}[DEFAULT]\r\nstate: online\r\nslaves: a,\r\n  b\r\n").unwrap();
        assert_eq!(f.get("state").unwrap().value, "online");
        assert_eq!(f.get("slaves").unwrap().value, "a,\nb");
        assert_eq!(f.get("slaves").unwrap().line, Some(3));
    }

    #[test]
    fn keys_without_a_section_are_accepted() {
        let f = parse("state: online\n").unwrap();
        assert_eq!(f.get("state").unwrap().value, "online");
    }

    #[test]
    fn malformed_lines_are_refused_with_their_line() {
        let e = parse("[DEFAULT]\n  state: online\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("no key above"), "{e}");
        let e = parse("a: 1\nslaves db1\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.ini line 2: 'slaves db1' is not a 'key: value' line — write 'key: value' or 'key = value'; comment lines start with '#' or ';'"
        );
        let e = parse("a: 1\nmaster_password hunter2\n").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(e.line, Some(2));
        let e = parse("[DEFAULT\n").unwrap_err();
        assert_eq!(e.line, Some(1));
        let e = parse(": x\n").unwrap_err();
        assert!(e.message.contains("without a key"), "{e}");
    }

    #[test]
    fn a_key_set_twice_with_different_values_is_refused() {
        let e = parse("[DEFAULT]\nstate: online\nx: 1\nSTATE: offline\n").unwrap_err();
        assert_eq!(e.line, Some(4));
        assert_eq!(
            e.to_string(),
            "test.ini line 4: 'state' is set twice with different values: line 2 says 'online', line 4 says 'offline' — delete the line you do not mean (ConfigParser silently used the last one; pitrkit will not guess)"
        );
        // Continued values are compared whole; secrets are not shown.
        assert!(parse("a: x\n  y\na: x\n").is_err());
        let e = parse("master_password: a\nmaster_password: b\n").unwrap_err();
        assert!(e.to_string().contains("line 1 says (not shown: a secret)"), "{e}");
        // Nor are the helper keys a secret is made of.
        let e = parse("pw: hunter2\nmaster_password: %(p)s\np: %(pw)s\npw: hunter3\n").unwrap_err();
        assert!(e.to_string().contains("line 1 says (not shown: a secret)"), "{e}");
        assert!(!e.to_string().contains("hunter"), "{e}");
    }

    #[test]
    fn a_key_set_twice_with_the_same_value_warns() {
        let f = parse("slaves: a,\n  b\nstate: online\nslaves: a,\n  b\n").unwrap();
        assert_eq!(f.get("slaves").unwrap().value, "a,\nb");
        assert_eq!(f.get("slaves").unwrap().line, Some(1));
        let w: Vec<String> = f.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            w,
            ["test.ini line 4: 'slaves' is set twice, with the same value (lines 1 and 4) — delete one of the lines"]
        );
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
        assert!(e.message.contains("nest more than 10 deep"), "{e}");
    }

    #[test]
    fn other_sections_are_kept_apart_and_not_read() {
        let f = parse("[DEFAULT]\na: 1\n[archiver]\nb: %(nope)s\na: 2\n[DEFAULT]\nc: %(a)s\n").unwrap();
        // Only [DEFAULT] is read, as pitrtools read it: a reference that
        // would fail in another section is never expanded.
        assert_eq!(f.entries.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(f.get("c").unwrap().value, "1");
        assert_eq!(
            f.others,
            [
                OtherKey {
                    section: "archiver".into(),
                    key: "b".into(),
                    line: 4
                },
                OtherKey {
                    section: "archiver".into(),
                    key: "a".into(),
                    line: 5
                },
            ]
        );
        assert_eq!(f.referenced.iter().collect::<Vec<_>>(), ["a", "nope"]);
        assert!(parse("[]\n").is_err());
    }

    /// The secret's text must appear in no error, whichever way it fails.
    #[test]
    fn interpolation_errors_never_show_a_secret() {
        for (text, line) in [
            ("master_password: Zq%(xy)sWv\n", 1),
            ("x: 1\nrepl_db_password: Zq%(xy\n", 2),
            ("master_password: Zq%(xy)s\nmaster_public_ip: %(master_password)s\n", 1),
            ("master_password: Zq%(xy)s%\nb: %(master_password)s\n", 2),
            ("master_password: Zq%(b)s\nb: x%(master_password)s\n", 2),
        ] {
            let e = parse(text).unwrap_err();
            let shown = e.to_string();
            assert!(!shown.contains("Zq") && !shown.contains("xy"), "{text:?}: {shown}");
            assert!(shown.contains("secret") || shown.contains("a loop?"), "{shown}");
            assert_eq!(e.line, Some(line), "{shown}");
        }
        // A reference in a key's own text is still named.
        let e = parse("master_password: Zq\nb: %(master_password)s%(nope)s\n").unwrap_err();
        assert!(
            e.to_string().contains("%(nope)s") && !e.to_string().contains("Zq"),
            "{e}"
        );
        // An interpolated secret is marked, so later checks do not print it.
        let f = parse("master_password: hunter2\nmaster_public_ip: db-%(master_password)s\n").unwrap();
        let shown = f.show("master_public_ip", &f.get("master_public_ip").unwrap().value);
        assert_eq!(shown, "(value not shown: it includes secret key 'master_password')");
        assert_eq!(f.show("state", "a\nb"), "'a\\nb'");
    }
}
