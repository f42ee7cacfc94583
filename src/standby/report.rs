//! What each standby action found or did, as data: the command renders it.

use std::path::PathBuf;

use crate::config::SslMode;

/// The outcome of one standby action.
#[derive(Debug)]
pub enum Report {
    Init(InitReport),
    BaseBackup(BaseBackupReport),
    StandbyStarted(StandbyStarted),
    Failover(FailoverReport),
    Ping(PingReport),
    /// `-A start` / `-A stop`: the server of this data directory.
    ServerStarted(PathBuf),
    ServerStopped(PathBuf),
}

/// `-I`: the directories made ready, and the archive's mark.
#[derive(Debug)]
pub struct InitReport {
    /// What each directory is for, and where it is.
    pub created: Vec<(String, PathBuf)>,
    pub archivedir: PathBuf,
    /// How the archive's system-id mark stands.
    pub mark: String,
}

/// `-B`.
#[derive(Debug)]
pub struct BaseBackupReport {
    pub host: String,
    pub data_dir: PathBuf,
    pub seconds: f64,
    pub bytes: u64,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub tablespaces: usize,
}

impl BaseBackupReport {
    /// One line, for the notify_ok hook as much as for the terminal.
    pub fn summary(&self) -> String {
        format!(
            "base backup of {}:{} complete in {:.1}s: {} copied, WAL from {} to {} needed{}",
            self.host,
            self.data_dir.display(),
            self.seconds,
            super::basebackup::human_bytes(self.bytes),
            self.start_lsn,
            self.stop_lsn,
            if self.tablespaces == 0 {
                String::new()
            } else {
                format!(", {} tablespace(s)", self.tablespaces)
            }
        )
    }
}

/// `-S`: the standby runs and replays WAL.
#[derive(Debug)]
pub struct StandbyStarted {
    pub pgdata: PathBuf,
    pub version: String,
    pub archivedir: Option<PathBuf>,
    pub streaming: bool,
    /// What will not work as configured: streaming through pitrkit's ssh
    /// tunnel, trigger_file on PostgreSQL 16+.
    pub warnings: Vec<String>,
}

/// `-F999` (with `-R`: point-in-time recovery).
#[derive(Debug)]
pub struct FailoverReport {
    pub pgdata: PathBuf,
    /// The recovery target time, for `-R`.
    pub target: Option<String>,
    /// `-R` on a spare while the master is alive: why it seems alive.
    pub beside_live_master: Option<String>,
    /// Whether `action_failover` is configured.
    pub action_failover: bool,
}

impl FailoverReport {
    /// One line, for the notify_ok hook as much as for the terminal.
    pub fn summary(&self) -> String {
        match &self.target {
            None => format!(
                "failover complete: {} is now a read-write master",
                self.pgdata.display()
            ),
            Some(t) => format!(
                "point-in-time recovery to {t} complete: {} is now read-write, with archiving off and no archive_cleanup_command{}",
                self.pgdata.display(),
                if self.beside_live_master.is_some() {
                    " (a recovery copy beside the live master)"
                } else {
                    ""
                }
            ),
        }
    }

    /// What the DBA must know about the recovered copy, for the terminal.
    pub fn notes(&self) -> Vec<String> {
        if self.target.is_none() {
            return Vec::new();
        }
        let mut notes = vec![
            "archive_mode = 'off' is set in postgresql.auto.conf (over any pg_conf_failover), so this copy writes \
             nothing into the production archive, and it has no archive_cleanup_command. Check the recovered data; \
             to make it a master of its own, point archive_command at its own archive, then \
             ALTER SYSTEM RESET archive_mode and restart."
                .to_string(),
        ];
        if let (Some(why), true) = (&self.beside_live_master, self.action_failover) {
            notes.push(format!(
                "action_failover did not run: the master is alive ({why}), so this is a recovery copy, not a failover of production."
            ));
        }
        notes
    }
}

/// `-P`: what the master said.
#[derive(Debug)]
pub struct PingReport {
    /// user@host:port/db
    pub master: String,
    pub user: String,
    pub version: String,
    /// How the session reached the master (directly, or through ssh to where).
    pub route: String,
    /// The session's TLS version ("TLSv1.3"), `None` in plain text.
    pub tls: Option<String>,
    pub sslmode: SslMode,
    pub in_recovery: bool,
    pub helpers: bool,
    /// The master's data directory, or why it could not be read.
    pub data_directory: Result<PathBuf, String>,
    /// The master's and this standby's versions, when their majors differ.
    pub major_mismatch: Option<(String, String)>,
}
