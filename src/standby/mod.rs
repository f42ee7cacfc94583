//! The standby: pitrtools' `cmd_standby`, one file per action.
//!
//! Everything here runs on the standby host as the PostgreSQL OS user. SQL to
//! the master goes over a real connection (`pg::master`); files come over
//! rsync + ssh; the local server is driven with pg_ctl (or the configured
//! start/stop commands).

pub mod basebackup;
pub mod failover;
pub mod init;
pub mod ping;
pub mod promoting;
pub mod recovery;
pub mod report;
pub mod spare;
pub mod start;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::StandbyConfig;
use crate::notify::{self, HookOutcome};
use crate::pg::version::PgVersion;
use crate::pg::LocalCluster;
use crate::tools;
use crate::transport::ssh::shell_quote;

/// Marks a data directory whose base backup did not finish: never start it.
pub const INCOMPLETE_MARKER: &str = "PITRKIT_BACKUP_INCOMPLETE";
/// Password file for primary_conninfo (0600, excluded from base backups).
pub const PASSFILE: &str = "pitrkit.pgpass";

/// A standby's configuration plus what was found on this host.
pub struct Standby<'a> {
    pub cfg: &'a StandbyConfig,
    pub pgdata: PathBuf,
    pub cluster: LocalCluster,
    /// Version of the local PostgreSQL binaries.
    pub version: PgVersion,
}

impl<'a> Standby<'a> {
    /// Finds pg_ctl and checks `pgversion` against the binaries and the data directory.
    pub fn new(cfg: &'a StandbyConfig) -> Result<Standby<'a>> {
        let pgdata = cfg.required_pgdata()?;
        let pg_ctl = find_pg_ctl(cfg)?;
        let bindir = pg_ctl.parent().map(Path::to_path_buf).unwrap_or_default();
        let cluster = LocalCluster {
            bindir,
            datadir: pgdata.clone(),
            run_as: None,
        };
        let major = cluster.binary_major()?;
        if let Some(want) = cfg.pgversion {
            if want != major {
                bail!(
                    "{}: pgversion is {} but {} is PostgreSQL {}; set pgversion to match, or point pg_ctl at the right binaries",
                    cfg.source.display(),
                    PgVersion::from_major(want),
                    pg_ctl.display(),
                    PgVersion::from_major(major)
                );
            }
        }
        if let Some(data) = cluster.data_major() {
            if data != major {
                bail!(
                    "{} holds a PostgreSQL {} cluster but the binaries ({}) are PostgreSQL {}",
                    pgdata.display(),
                    PgVersion::from_major(data),
                    pg_ctl.display(),
                    PgVersion::from_major(major)
                );
            }
        }
        Ok(Standby {
            cfg,
            pgdata,
            cluster,
            version: PgVersion::from_major(major),
        })
    }

    /// Starts the local server: `start_command` if configured, else pg_ctl.
    pub fn start_server(&self, config_files: Option<(&Path, Option<&Path>)>) -> Result<()> {
        if let Some(cmd) = &self.cfg.start_command {
            return run_user_command("start_command", cmd, self.cfg.wait_timeout);
        }
        // no_copy_conf: point the server at the configuration files instead of copying them.
        let options = config_files.map(|(conf, hba)| {
            let mut o = format!("-c config_file={}", conf.display());
            if let Some(h) = hba {
                o.push_str(&format!(" -c hba_file={}", h.display()));
            }
            o
        });
        self.cluster.start(
            self.cfg.server_log.as_deref(),
            options.as_deref(),
            self.cfg.wait_timeout,
        )?;
        Ok(())
    }

    pub fn stop_server(&self) -> Result<()> {
        if let Some(cmd) = &self.cfg.stop_command {
            return run_user_command("stop_command", cmd, self.cfg.wait_timeout);
        }
        self.cluster.stop("fast")?;
        Ok(())
    }

    /// Waits until the local server answers and pg_is_in_recovery() is `want`.
    pub fn wait_for_recovery_state(&self, want: bool) -> Result<()> {
        let deadline = std::time::Instant::now() + self.cfg.wait_timeout;
        loop {
            let last_err = match self
                .cluster
                .connect_local(
                    &self.cfg.master_user,
                    &self.cfg.master_db,
                    self.cfg.master_password.as_deref(),
                )
                .and_then(|mut c| Ok(c.query_one("SELECT pg_is_in_recovery()", &[])?.get::<_, bool>(0)))
            {
                Ok(state) if state == want => return Ok(()),
                Ok(state) => format!("pg_is_in_recovery() is still {state}"),
                Err(e) => e.to_string(),
            };
            if std::time::Instant::now() > deadline {
                bail!(
                    "PostgreSQL in {} did not reach {} within {}s (wait_timeout): {last_err}",
                    self.pgdata.display(),
                    if want {
                        "recovery (standby mode)"
                    } else {
                        "read-write mode"
                    },
                    self.cfg.wait_timeout.as_secs()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }

    /// Refuses to touch a data directory a running server owns.
    pub fn require_stopped(&self, what: &str) -> Result<()> {
        if self.cluster.is_running() {
            bail!(
                "PostgreSQL is running on {}; {what} needs it stopped. Stop it first: cmd_standby -C {} -A stop",
                self.pgdata.display(),
                self.cfg.source.display()
            );
        }
        Ok(())
    }

    /// restore_command / archive_cleanup_command pointing at this binary and
    /// config. `args` are PostgreSQL's own escapes (`%f %p`, `%r`), kept as is.
    pub fn own_command(&self, sub: &str, args: &str) -> Result<String> {
        let exe = std::env::current_exe().context("locating the pitrkit binary")?;
        let config = self
            .cfg
            .source
            .canonicalize()
            .unwrap_or_else(|_| self.cfg.source.clone());
        Ok(format!(
            "{} {sub} -C {} {args}",
            command_word(&exe, "the pitrkit binary")?,
            command_word(&config, "the configuration file")?
        ))
    }
}

/// A path as one word of a restore_command / archive_cleanup_command.
///
/// PostgreSQL first replaces `%f`, `%p`, `%r` and `%%` in the string, then
/// runs it with `sh -c`. So the path is shell-quoted (a space, `(` or `;`
/// would otherwise give exit 2, "not found", and end recovery early, or run
/// a command), and every `%` is doubled. The GUC quoting of the whole
/// string is `recovery::quote`'s job. A line break cannot be put into a
/// postgresql.conf string, and a non-UTF-8 name not into the file at all:
/// refused with the reason.
pub fn command_word(path: &Path, what: &str) -> Result<String> {
    let Some(s) = path.to_str() else {
        bail!(
            "{what} {} has a name that is not valid UTF-8, which cannot be written into PostgreSQL's restore_command; \
             move it to a path with a UTF-8 name",
            path.display()
        );
    };
    if let Some(c) = s.chars().find(|c| matches!(c, '\n' | '\r' | '\0')) {
        bail!(
            "{what} {s:?} contains {}, which cannot be written into PostgreSQL's restore_command \
             (a postgresql.conf string is one line); move it to a path without it",
            match c {
                '\n' => "a newline",
                '\r' => "a carriage return",
                _ => "a NUL byte",
            }
        );
    }
    Ok(shell_quote(s).replace('%', "%%"))
}

fn find_pg_ctl(cfg: &StandbyConfig) -> Result<PathBuf> {
    if let Some(p) = &cfg.pg_ctl {
        return Ok(tools::find_program("pg_ctl", Some(p), &[])?);
    }
    if let Some(want) = cfg.pgversion {
        let v = PgVersion::from_major(want).to_string();
        for dir in [format!("/usr/lib/postgresql/{v}/bin"), format!("/usr/pgsql-{v}/bin")] {
            let p = Path::new(&dir).join("pg_ctl");
            if p.exists() {
                return Ok(p);
            }
        }
    }
    let mut dirs = cfg.includepath.clone();
    dirs.extend(tools::postgres_bindirs());
    Ok(tools::find_program("pg_ctl", None, &dirs)?)
}

/// Runs a configured start/stop command (a user command line, like a hook).
fn run_user_command(key: &str, cmd: &str, timeout: std::time::Duration) -> Result<()> {
    match notify::run_hook(cmd, &[], &[], timeout) {
        HookOutcome::Exited(0) => Ok(()),
        other => bail!("{key} '{cmd}' failed: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    /// What PostgreSQL's config parser gives back for a quoted literal.
    fn guc_unquote(lit: &str) -> String {
        let inner = &lit[1..lit.len() - 1];
        let mut out = String::new();
        let mut it = inner.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                '\\' => out.push(it.next().unwrap()),
                '\'' => {
                    assert_eq!(it.next(), Some('\''), "lone quote in {lit}");
                    out.push('\'');
                }
                c => out.push(c),
            }
        }
        out
    }

    /// PostgreSQL's %-expansion of restore_command (%% and the given escapes).
    fn expand_percent(cmd: &str, f: &str, p: &str) -> String {
        let mut out = String::new();
        let mut it = cmd.chars();
        while let Some(c) = it.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match it.next() {
                Some('%') => out.push('%'),
                Some('f') => out.push_str(f),
                Some('p') => out.push_str(p),
                other => panic!("unexpected %{other:?} in {cmd}"),
            }
        }
        out
    }

    #[test]
    fn paths_are_quoted_for_the_shell_percent_expansion_and_the_conf_file() {
        let path = Path::new(r"/tmp/it's (a) 100% dir; x\y/standby.ini");
        let word = command_word(path, "the configuration file").unwrap();
        assert_eq!(word, r"'/tmp/it'\''s (a) 100%% dir; x\y/standby.ini'");
        let cmd = format!("/usr/bin/pitrkit restore -C {word} %f %p");
        let lit = recovery::quote(&cmd);
        assert_eq!(
            lit,
            r"'/usr/bin/pitrkit restore -C ''/tmp/it''\\''''s (a) 100%% dir; x\\y/standby.ini'' %f %p'"
        );
        // Back through the conf parser and the %-expansion: the shell gets
        // the path as one single-quoted word.
        assert_eq!(
            expand_percent(&guc_unquote(&lit), "F", "P"),
            r"/usr/bin/pitrkit restore -C '/tmp/it'\''s (a) 100% dir; x\y/standby.ini' F P"
        );
        // Plain paths stay readable.
        assert_eq!(
            command_word(Path::new("/etc/pitrkit/standby.ini"), "x").unwrap(),
            "/etc/pitrkit/standby.ini"
        );
    }

    #[test]
    fn paths_that_cannot_be_quoted_are_refused_with_the_reason() {
        let e = command_word(Path::new("/tmp/a\nb/s.ini"), "the configuration file").unwrap_err();
        assert!(e.to_string().contains("contains a newline"), "{e}");
        assert!(e.to_string().contains("move it to a path without it"), "{e}");
        let raw = std::ffi::OsStr::from_bytes(b"/tmp/\xff/s.ini");
        let e = command_word(Path::new(raw), "the configuration file").unwrap_err();
        assert!(e.to_string().contains("not valid UTF-8"), "{e}");
    }
}
