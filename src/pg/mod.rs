//! Talking to PostgreSQL: local clusters through pg_ctl, remote ones over a
//! real connection (the `postgres` crate). Version differences live in
//! `version.rs`.

pub mod master;
pub mod tls;
pub mod version;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::tools;

pub use crate::config::validate::parse_major;

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

/// Server log used by [`LocalCluster::start`] when `logfile` is unset and
/// nobody watches a terminal.
pub const DEFAULT_SERVER_LOG: &str = "pitrkit-server.log";

fn check_status(what: String, status: std::io::Result<std::process::ExitStatus>) -> Result<(), PgError> {
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(PgError::Command {
            what,
            detail: format!("{s} (its messages are above)"),
        }),
        Err(e) => Err(PgError::Command {
            what,
            detail: format!("cannot start: {e}"),
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

    /// `pg_ctl start -w`; `options` go to the server through `pg_ctl -o`.
    ///
    /// Without `logfile` the postmaster inherits pg_ctl's standard output and
    /// error. On a terminal that is pitrtools' behaviour (the server talks to
    /// the console of whoever started it). Anything else (a pipe from cron,
    /// ssh or a test) would be held open by the postmaster for its lifetime,
    /// and whoever reads it, us included, would wait forever: the server's
    /// output then goes to [`DEFAULT_SERVER_LOG`] in the data directory.
    pub fn start(&self, logfile: Option<&Path>, options: Option<&str>, timeout: Duration) -> Result<(), PgError> {
        use std::io::IsTerminal;
        let console = logfile.is_none() && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        let default_log = self.datadir.join(DEFAULT_SERVER_LOG);
        let logfile = match logfile {
            None if !console => {
                log::info!(
                    "no 'logfile' configured and no terminal: the server's output goes to {}",
                    default_log.display()
                );
                Some(default_log.as_path())
            }
            l => l,
        };
        let mut c = self.cmd("pg_ctl");
        c.arg("-D").arg(&self.datadir);
        if let Some(l) = logfile {
            c.arg("-l").arg(l);
        }
        if let Some(o) = options {
            c.arg("-o").arg(o);
        }
        c.args(["-w", "-t", &timeout.as_secs().to_string(), "start"]);
        let log_hint = logfile
            .map(|l| format!(" (server log: {})", l.display()))
            .unwrap_or_default();
        let what = format!("pg_ctl start -D {}{log_hint}", self.datadir.display());
        if console {
            // Not captured: the postmaster keeps these streams open.
            let status = c.status();
            return check_status(what, status);
        }
        check(what, c.output()).map(|_| ())
    }

    /// `pg_ctl promote -w`: ends recovery and waits until the server accepts writes.
    pub fn promote(&self, timeout: Duration) -> Result<(), PgError> {
        let out = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(&self.datadir)
            .args(["-w", "-t", &timeout.as_secs().to_string(), "promote"])
            .output();
        check(format!("pg_ctl promote -D {}", self.datadir.display()), out).map(|_| ())
    }

    /// Major version of these binaries (`pg_ctl --version`), e.g. 15.
    pub fn binary_major(&self) -> Result<u32, PgError> {
        let out = check("pg_ctl --version".into(), self.cmd("pg_ctl").arg("--version").output())?;
        // "pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        out.split_whitespace()
            .nth(2)
            .and_then(parse_major)
            .ok_or_else(|| PgError::Command {
                what: "pg_ctl --version".into(),
                detail: format!("unexpected output '{}'", out.trim()),
            })
    }

    /// Major version of the data directory (`PG_VERSION`), if there is one.
    pub fn data_major(&self) -> Option<u32> {
        std::fs::read_to_string(self.datadir.join("PG_VERSION"))
            .ok()
            .and_then(|v| parse_major(v.trim()))
    }

    /// Connects to the running server through the socket named in postmaster.pid.
    pub fn connect_local(&self, user: &str, db: &str, password: Option<&str>) -> Result<postgres::Client, PgError> {
        let (port, socket) = postmaster_listen(&self.datadir).unwrap_or((5432, None));
        let host = socket.unwrap_or_else(|| "127.0.0.1".to_string());
        let mut c = postgres::Config::new();
        c.host(&host)
            .port(port)
            .user(user)
            .dbname(db)
            .connect_timeout(Duration::from_secs(10));
        if let Some(p) = password {
            c.password(p);
        }
        c.connect(postgres::NoTls).map_err(|source| PgError::Connect {
            target: format!("local server {}:{port} as {user}", host),
            hint: format!(
                "check pg_hba.conf in {} for local connections by {user}",
                self.datadir.display()
            ),
            source,
        })
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

    /// The state and latest checkpoint time in `global/pg_control`, read
    /// directly: pg_controldata is not in every server package.
    pub fn control_data(&self) -> Result<ControlData, String> {
        let path = self.datadir.join("global/pg_control");
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        ControlData::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// True while a postmaster serves this data directory.
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

/// What pitrkit reads from `global/pg_control`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlData {
    /// As pg_controldata words it: "shut down", "in archive recovery", ...
    pub state: String,
    /// When the latest checkpoint (a restartpoint's: the master's checkpoint
    /// record) was taken, to the second, on the master's clock.
    pub checkpoint_time: Option<chrono::DateTime<chrono::Utc>>,
}

impl ControlData {
    pub fn from_bytes(b: &[u8]) -> Result<ControlData, String> {
        let u32_at = |o: usize| b.get(o..o + 4).map(|x| u32::from_le_bytes(x.try_into().unwrap()));
        let i64_at = |o: usize| b.get(o..o + 8).map(|x| i64::from_le_bytes(x.try_into().unwrap()));
        let version = u32_at(8).ok_or("too short")?;
        let (state_at, time_at) = version::pg_control_offsets(version)
            .ok_or_else(|| format!("pg_control version {version} is not one pitrkit knows (PostgreSQL 12-18)"))?;
        let state = match u32_at(state_at).ok_or("too short")? {
            0 => "starting up",
            1 => "shut down",
            2 => "shut down in recovery",
            3 => "shutting down",
            4 => "in crash recovery",
            5 => "in archive recovery",
            6 => "in production",
            n => return Err(format!("unknown cluster state {n}")),
        };
        let checkpoint_time = chrono::DateTime::from_timestamp(i64_at(time_at).ok_or("too short")?, 0);
        Ok(ControlData {
            state: state.to_string(),
            checkpoint_time,
        })
    }

    pub fn state(&self) -> &str {
        &self.state
    }

    pub fn checkpoint_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.checkpoint_time
    }
}

/// Where the server running in `datadir` listens, from its postmaster.pid:
/// line 4 the port, line 5 the first unix socket directory (`None` when it
/// has none). `None` when no server runs there.
pub fn postmaster_listen(datadir: &Path) -> Option<(u16, Option<String>)> {
    let pid = std::fs::read_to_string(datadir.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = pid.lines().collect();
    let port = lines.get(3)?.trim().parse().ok()?;
    let socket = lines
        .get(4)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Some((port, socket))
}

/// Connects with a libpq-style connection string.
pub fn connect(conninfo: &str, target: &str, hint: &str) -> Result<postgres::Client, PgError> {
    postgres::Client::connect(conninfo, postgres::NoTls).map_err(|source| PgError::Connect {
        target: target.to_string(),
        hint: hint.to_string(),
        source,
    })
}
