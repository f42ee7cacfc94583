//! Talking to PostgreSQL: local clusters through pg_ctl, remote ones over a
//! real connection (the `postgres` crate).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::tools;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("connecting to PostgreSQL ({target}): {source}\n  what to do: {hint}")]
    Connect {
        target: String,
        hint: String,
        #[source]
        source: postgres::Error,
    },
    #[error("query failed: {0}")]
    Query(#[from] postgres::Error),
}

/// A PostgreSQL data directory on this host, managed with pg_ctl.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    pub bindir: PathBuf,
    pub datadir: PathBuf,
    /// OS user to run PostgreSQL programs as (when we are root).
    pub run_as: Option<String>,
}

fn check(what: String, out: std::io::Result<Output>) -> Result<String, PgError> {
    match out {
        Err(e) => Err(PgError::Command {
            what,
            detail: format!("cannot start: {e}"),
        }),
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => Err(PgError::Command {
            what,
            detail: format!(
                "{}: {}{}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim(),
                String::from_utf8_lossy(&o.stdout).trim()
            ),
        }),
    }
}

impl LocalCluster {
    fn cmd(&self, program: &str) -> Command {
        tools::command_as(&self.bindir.join(program), self.run_as.as_deref())
    }

    pub fn initdb(&self, extra: &[&str]) -> Result<(), PgError> {
        let out = self
            .cmd("initdb")
            .arg("-D")
            .arg(&self.datadir)
            .args(["-A", "trust", "--no-sync"])
            .args(extra)
            .output();
        check(format!("initdb -D {}", self.datadir.display()), out).map(|_| ())
    }

    pub fn start(&self, logfile: &Path, timeout: Duration) -> Result<(), PgError> {
        let out = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(&self.datadir)
            .arg("-l")
            .arg(logfile)
            .args(["-w", "-t", &timeout.as_secs().to_string(), "start"])
            .output();
        check(
            format!(
                "pg_ctl start -D {} (server log: {})",
                self.datadir.display(),
                logfile.display()
            ),
            out,
        )
        .map(|_| ())
    }

    pub fn stop(&self, mode: &str) -> Result<(), PgError> {
        let out = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(&self.datadir)
            .args(["-m", mode, "-w", "stop"])
            .output();
        check(format!("pg_ctl stop -D {}", self.datadir.display()), out).map(|_| ())
    }

    pub fn is_running(&self) -> bool {
        self.cmd("pg_ctl")
            .arg("-D")
            .arg(&self.datadir)
            .arg("status")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

/// Connects with a libpq-style connection string.
pub fn connect(conninfo: &str, target: &str, hint: &str) -> Result<postgres::Client, PgError> {
    postgres::Client::connect(conninfo, postgres::NoTls).map_err(|source| PgError::Connect {
        target: target.to_string(),
        hint: hint.to_string(),
        source,
    })
}
