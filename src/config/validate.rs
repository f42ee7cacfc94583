//! Checks for values that end up as paths, host names or command-line
//! options of rsync and ssh. We never hand them to a shell, but rsync passes
//! remote paths through the remote user's shell, and a value starting with `-`
//! would be read as an option: refuse both early, with the reason.

use std::path::{Component, Path, PathBuf};

/// Characters a shell would interpret; listed for the error message.
const SHELL_META: &str = "`$;&|<>(){}[]*?!~'\"\\#";

/// Why a value was refused; its text completes "'<value>' ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("is empty")]
    Empty,
    #[error("contains a line break")]
    LineBreak,
    #[error("contains a control character")]
    ControlChar,
    #[error("contains white space")]
    WhiteSpace,
    #[error("contains '{0}', which a shell would interpret")]
    ShellChar(char),
    #[error("is not an absolute path (it must start with '/')")]
    NotAbsolute,
    #[error("starts with '-', so ssh and rsync would read it as an option")]
    HostIsOption,
    #[error("contains '@': put the ssh user in the 'user' key, not in the host")]
    UserInHost,
    #[error("is used as a queue directory name and may not contain '/'")]
    SlashInHost,
    #[error("starts with '.': it names the slave's queue directory in l_archivedir, where pitrkit keeps its own dot-directories (.delivered, .spool)")]
    DotHost,
    #[error("is longer than a DNS name may be (253 characters)")]
    HostTooLong,
    #[error("is not a host name or IP address (letters, digits, '.', '-', '_', ':')")]
    NotHost,
    #[error("starts with '-', so it would be read as an option")]
    UserIsOption,
    #[error("is not a valid user name (letters, digits, '_', '.', '-')")]
    NotUser,
    #[error("is not an option (options start with '-')")]
    NotOption,
}

/// Why a value is unsafe for a (remote) shell, if it is.
pub fn unsafe_char_reason(value: &str) -> Option<Refusal> {
    value.chars().find_map(|c| match c {
        '\n' => Some(Refusal::LineBreak),
        c if c.is_control() => Some(Refusal::ControlChar),
        c if c.is_whitespace() => Some(Refusal::WhiteSpace),
        c if SHELL_META.contains(c) => Some(Refusal::ShellChar(c)),
        _ => None,
    })
}

/// An absolute path safe to pass to rsync/ssh (locally and on the remote side).
pub fn check_path(value: &str) -> Result<(), Refusal> {
    if value.is_empty() {
        return Err(Refusal::Empty);
    }
    if !value.starts_with('/') {
        return Err(Refusal::NotAbsolute);
    }
    unsafe_char_reason(value).map_or(Ok(()), Err)
}

/// `p` with `.` and repeated or trailing slashes removed and `..` resolved
/// lexically (without looking at the filesystem).
pub fn lexical(p: &Path) -> PathBuf {
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

/// `inner` is `outer` or lies below it: lexically, and through symlinks
/// where both exist.
pub fn path_within(inner: &Path, outer: &std::path::Path) -> bool {
    if lexical(inner).starts_with(lexical(outer)) {
        return true;
    }
    matches!((inner.canonicalize(), outer.canonicalize()), (Ok(i), Ok(o)) if i.starts_with(&o))
}

/// A host name, IPv4 or IPv6 address (no brackets, no user@).
pub fn check_host(value: &str) -> Result<(), Refusal> {
    let refusal = if value.is_empty() {
        Refusal::Empty
    } else if value.starts_with('-') {
        Refusal::HostIsOption
    } else if value.contains('@') {
        Refusal::UserInHost
    } else if value.contains('/') {
        Refusal::SlashInHost
    } else if value.starts_with('.') {
        Refusal::DotHost
    } else if let Some(r) = unsafe_char_reason(value) {
        r
    } else if value.len() > 253 {
        Refusal::HostTooLong
    } else if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%'))
    {
        Refusal::NotHost
    } else {
        return Ok(());
    };
    Err(refusal)
}

/// An OS or database user name.
pub fn check_user(value: &str) -> Result<(), Refusal> {
    if value.starts_with('-') {
        return Err(Refusal::UserIsOption);
    }
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(Refusal::NotUser);
    }
    Ok(())
}

/// One extra command-line option for rsync or ssh (e.g. `-z`, `--bwlimit=1000`).
pub fn check_flag(value: &str) -> Result<(), Refusal> {
    if !value.starts_with('-') {
        return Err(Refusal::NotOption);
    }
    unsafe_char_reason(value).map_or(Ok(()), Err)
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
        assert!(check_path("relative/dir").unwrap_err() == Refusal::NotAbsolute);
        assert!(check_path("/a b").unwrap_err() == Refusal::WhiteSpace);
        assert!(check_path("/a;rm -rf").is_err());
        assert!(check_path("/a/$(id)").unwrap_err() == Refusal::ShellChar('$'));
        assert!(check_path("/a/`id`").is_err());
        assert!(check_path("/a\nb").unwrap_err() == Refusal::LineBreak);
        assert!(check_path("/a\tb").unwrap_err() == Refusal::ControlChar);
    }

    #[test]
    fn hosts() {
        for ok in ["standby1", "db-2.example.com", "10.0.0.5", "::1", "fe80::1%eth0"] {
            assert!(check_host(ok).is_ok(), "{ok}");
        }
        assert!(check_host("-oProxyCommand=x").unwrap_err() == Refusal::HostIsOption);
        assert!(check_host("a;b").is_err());
        assert!(check_host("postgres@db").unwrap_err() == Refusal::UserInHost);
        assert!(check_host("..").is_err());
        for reserved in [".", ".delivered", ".conflicts", ".spool", ".pitrkit-system-id"] {
            assert!(check_host(reserved).unwrap_err() == Refusal::DotHost, "{reserved}");
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
