//! Checks for values that end up as paths, host names or command-line
//! options of rsync and ssh. We never hand them to a shell, but rsync passes
//! remote paths through the remote user's shell, and a value starting with `-`
//! would be read as an option: refuse both early, with the reason.

use std::path::{Component, Path, PathBuf};

/// Characters a shell would interpret; listed for the error message.
const SHELL_META: &str = "`$;&|<>(){}[]*?!~'\"\\#";

/// Why a value was refused, phrased to complete "'<value>' ...".
pub fn unsafe_char_reason(value: &str) -> Option<String> {
    for c in value.chars() {
        if c == '\n' {
            return Some("contains a line break".into());
        }
        if c.is_control() {
            return Some("contains a control character".into());
        }
        if c.is_whitespace() {
            return Some("contains white space".into());
        }
        if SHELL_META.contains(c) {
            return Some(format!("contains '{c}', which a shell would interpret"));
        }
    }
    None
}

/// An absolute path safe to pass to rsync/ssh (locally and on the remote side).
pub fn check_path(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty".into());
    }
    if !value.starts_with('/') {
        return Err("is not an absolute path (it must start with '/')".into());
    }
    if let Some(r) = unsafe_char_reason(value) {
        return Err(r);
    }
    Ok(())
}

/// `inner` is `outer` or lies below it: lexically, and through symlinks
/// where both exist.
pub fn path_within(inner: &Path, outer: &std::path::Path) -> bool {
    fn lexical(p: &Path) -> PathBuf {
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::CurDir => {}
                c => out.push(c),
            }
        }
        out
    }
    if lexical(inner).starts_with(lexical(outer)) {
        return true;
    }
    matches!((inner.canonicalize(), outer.canonicalize()), (Ok(i), Ok(o)) if i.starts_with(&o))
}

/// A host name, IPv4 or IPv6 address (no brackets, no user@).
pub fn check_host(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty".into());
    }
    if value.starts_with('-') {
        return Err("starts with '-', so ssh and rsync would read it as an option".into());
    }
    if value.contains('@') {
        return Err("contains '@': put the ssh user in the 'user' key, not in the host".into());
    }
    if value.contains('/') {
        return Err("is used as a queue directory name and may not contain '/'".into());
    }
    if value.starts_with('.') {
        return Err(
            "starts with '.': it names the slave's queue directory in l_archivedir, where pitrkit keeps its own dot-directories (.delivered, .spool)"
                .into(),
        );
    }
    if let Some(r) = unsafe_char_reason(value) {
        return Err(r);
    }
    if value.len() > 253 {
        return Err("is longer than a DNS name may be (253 characters)".into());
    }
    let ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%'));
    if !ok {
        return Err("is not a host name or IP address (letters, digits, '.', '-', '_', ':')".into());
    }
    Ok(())
}

/// An OS or database user name.
pub fn check_user(value: &str) -> Result<(), String> {
    if value.starts_with('-') {
        return Err("starts with '-', so it would be read as an option".into());
    }
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '$'))
        && !value.contains('$');
    if !ok {
        return Err("is not a valid user name (letters, digits, '_', '.', '-')".into());
    }
    Ok(())
}

/// One extra command-line option for rsync or ssh (e.g. `-z`, `--bwlimit=1000`).
pub fn check_flag(value: &str) -> Result<(), String> {
    if !value.starts_with('-') {
        return Err("is not an option (options start with '-')".into());
    }
    if let Some(r) = unsafe_char_reason(value) {
        return Err(r);
    }
    Ok(())
}

/// "15" → 15, "15.18" → 15, "9.6.24" → 96 (the config's spelling of 9.6).
pub fn parse_major(v: &str) -> Option<u32> {
    let mut parts = v.split('.');
    let first: u32 = parts.next()?.trim().parse().ok()?;
    if first >= 10 {
        return Some(first);
    }
    let second: u32 = parts.next()?.trim().parse().ok()?;
    Some(first * 10 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(check_path("/var/lib/postgresql/archive").is_ok());
        assert!(check_path("/srv/pg-15/wal_archive.1").is_ok());
        assert!(check_path("relative/dir").unwrap_err().contains("absolute"));
        assert!(check_path("/a b").unwrap_err().contains("white space"));
        assert!(check_path("/a;rm -rf").is_err());
        assert!(check_path("/a/$(id)").unwrap_err().contains("'$'"));
        assert!(check_path("/a/`id`").is_err());
        assert!(check_path("/a\nb").unwrap_err().contains("line break"));
        assert!(check_path("/a\tb").unwrap_err().contains("control"));
    }

    #[test]
    fn hosts() {
        for ok in ["standby1", "db-2.example.com", "10.0.0.5", "::1", "fe80::1%eth0"] {
            assert!(check_host(ok).is_ok(), "{ok}");
        }
        assert!(check_host("-oProxyCommand=x").unwrap_err().contains("option"));
        assert!(check_host("a;b").is_err());
        assert!(check_host("postgres@db").unwrap_err().contains("'user'"));
        assert!(check_host("..").is_err());
        for reserved in [".", ".delivered", ".conflicts", ".spool", ".pitrkit-system-id"] {
            assert!(
                check_host(reserved).unwrap_err().contains("starts with '.'"),
                "{reserved}"
            );
        }
        assert!(check_host("a/b").is_err());
        assert!(check_host("").is_err());
    }

    #[test]
    fn users_and_flags() {
        assert!(check_user("postgres").is_ok());
        assert!(check_user("-x").is_err());
        assert!(check_user("a b").is_err());
        assert!(check_flag("-z").is_ok());
        assert!(check_flag("--bwlimit=1000").is_ok());
        assert!(check_flag("z").is_err());
        assert!(check_flag("--rsh=sh;id").is_err());
    }
}
