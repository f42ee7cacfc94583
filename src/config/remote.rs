//! Settings for the ssh and rsync subprocesses, read from the keys both
//! programs share. They live here, not in `transport`, so that config does
//! not depend on the module that runs the programs (`transport` adds the
//! behaviour: argument vectors, spawning).

use std::path::PathBuf;
use std::time::Duration;

use super::choices::HostKeyChecking;
use super::ini::ConfigError;
use super::options::Options;
use super::validate;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSettings {
    /// Explicit program from the legacy `ssh` key; else found on PATH.
    pub program: Option<PathBuf>,
    /// Options from the legacy `ssh` key's extra words and from `ssh_options`.
    pub extra_args: Vec<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub strict_host_key_checking: HostKeyChecking,
    pub debug: bool,
    pub includepath: Vec<PathBuf>,
    /// ssh connection reuse (ControlPersist); zero turns it off.
    pub control_persist: Duration,
}

/// The TLS files of the standby's SQL connection to the master, as written
/// (libpq's meanings); `pg::tls` uses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SslFiles {
    /// A file of trusted CA certificates, or `system` (the system's store).
    pub rootcert: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub crl: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsyncSettings {
    pub program: Option<PathBuf>,
    pub flags: Vec<String>,
    /// rsync --timeout (I/O inactivity); also bounds each remote command.
    pub timeout: Duration,
    /// After a push, fsync the delivered files and the directory on the
    /// remote host with one `sync -- <files> <dir>` (coreutils 8.24+).
    pub fsync: bool,
    pub includepath: Vec<PathBuf>,
}

impl SshSettings {
    pub fn from_options(o: &Options) -> Result<Self, ConfigError> {
        let (program, mut extra_args, legacy_port) = legacy_ssh(o)?;
        for kv in o.words("ssh_options")? {
            if !kv.contains('=') {
                return Err(o
                    .file()
                    .error(
                        "ssh_options",
                        format!("ssh_options: {} is not Key=Value", o.show("ssh_options", &kv)),
                    )
                    .hint("write ssh -o options as Key=Value words, e.g. 'ServerAliveInterval=15'"));
            }
            extra_args.push("-o".into());
            extra_args.push(kv);
        }
        Ok(SshSettings {
            program,
            extra_args,
            user: o.opt_user("user")?,
            port: one_port(o, legacy_port)?,
            identity: o.opt_path("ssh_identity")?,
            connect_timeout: o.seconds("ssh_timeout")?,
            strict_host_key_checking: o.choice("strict_host_key_checking")?,
            debug: o.bool("ssh_debug")?,
            includepath: o.paths("includepath")?,
            control_persist: o.seconds("ssh_control_persist")?,
        })
    }
}

/// pitrtools allowed "ssh: /usr/bin/ssh -p 2222": the program, options,
/// and its `-p` port taken out. Left among the options, that `-p` would
/// come first on ssh's command line, and ssh keeps the first port it is
/// given: `ssh_port` would be silently ignored.
type LegacySsh = (Option<PathBuf>, Vec<String>, Option<u16>);

fn legacy_ssh(o: &Options) -> Result<LegacySsh, ConfigError> {
    let Some(legacy) = o.opt_text("ssh") else {
        return Ok((None, Vec::new(), None));
    };
    let bad = |w: &str, why: String| o.file().error("ssh", format!("ssh: {} {why}", o.show("ssh", w)));
    let mut words = legacy.split_whitespace();
    let program = words.next().map(|p| o.check_path("ssh", p)).transpose()?;
    let (mut extra_args, mut port) = (Vec::new(), None);
    while let Some(w) = words.next() {
        if let Some(attached) = w.strip_prefix("-p") {
            let value = if attached.is_empty() {
                words.next().unwrap_or("")
            } else {
                attached
            };
            match value.parse::<u16>() {
                Ok(p) if p > 0 => port = Some(p),
                _ => return Err(bad(w, format!("needs a port number (1-65535), not '{value}'"))),
            }
            continue;
        }
        if w.starts_with('-') {
            validate::check_flag(w)
        } else {
            validate::unsafe_char_reason(w).map_or(Ok(()), Err)
        }
        .map_err(|why| bad(w, why.to_string()))?;
        extra_args.push(w.to_string());
    }
    Ok((program, extra_args, port))
}

/// `ssh_port`, or the port of a legacy `ssh: ... -p N`; both set and
/// different is refused.
fn one_port(o: &Options, legacy: Option<u16>) -> Result<Option<u16>, ConfigError> {
    // The table's range keeps it within 1..=65535.
    let key = o.opt_count("ssh_port")?.map(|p| p as u16);
    match (legacy, key) {
        (Some(l), Some(k)) if l != k => Err(o
            .file()
            .error("ssh", format!("ssh says -p {l} but ssh_port is {k}"))
            .hint("keep one of them: pitrkit reads the port from ssh_port")),
        (l, k) => Ok(l.or(k)),
    }
}
