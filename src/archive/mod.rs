//! The archiver: PostgreSQL's archive_command, plus queue flushing and set-up.
//!
//! One call archives one file. It returns success only when the file is
//! durable everywhere the configured mode promises:
//! - every `local_archivedirs` entry: always;
//! - the local queue under `l_archivedir`: always (async mode stops here, as
//!   pitrtools did, and ships the queues best-effort);
//! - every slave: in `ship_mode: sync`.
//!
//! Three parts: the push path (`push`, `stage`, `spool`), shipping (`ship`
//! for rounds and verdicts, `queue` for one queue through a
//! [`crate::transport::Transport`], `ledger`, `state`), and administration
//! (`admin`: `-I`, `--status`, `--flush`), and the queue runner (`runner`:
//! `pitrkit queue`, started by an archive call that leaves work queued).
//! Every dot-name under
//! `l_archivedir` is in `layout`.

pub mod admin;
mod forms;
pub mod layout;
pub mod ledger;
pub mod lookahead;
pub mod mount;
pub mod push;
pub mod queue;
pub mod runner;
pub mod ship;
pub mod sidecar;
pub mod slavemark;
mod spool;
mod stage;
pub mod state;
pub mod sysid;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::fsutil::{PlaceError, Placed};
use crate::notify::Level;
use crate::wal;
pub use admin::{flush, init, status, InitCheck};
pub use layout::SYSTEM_ID_FILE;
pub use push::archive_file;
pub use ship::ship_round;
use state::Event;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archiving is switched off (state: offline in {config}); {wal} stays in pg_wal and PostgreSQL will retry. Set 'state: online' to resume")]
    Offline { config: String, wal: String },
    #[error(transparent)]
    BadName(#[from] wal::BadWalName),
    #[error("{path}: no such file (PostgreSQL passes %p relative to its data directory; check the -F argument and 'pgdata')")]
    Missing { path: PathBuf },
    #[error(transparent)]
    Segment(#[from] wal::SegmentCheckError),
    #[error("{path}: not a timeline history file as PostgreSQL writes it: {why}; it was not archived (a damaged history file in the archive would stop every standby that asks for it)")]
    BadHistory { path: PathBuf, why: String },
    #[error("{dir} holds WAL of database system {archive}, but {wal} comes from system {ours}: two clusters must never share an archive (a cloned server keeps its old archive_command). Point this cluster at its own directory")]
    SystemIdMismatch {
        dir: PathBuf,
        archive: u64,
        ours: u64,
        wal: String,
    },
    #[error("{wal} comes from database system {segment}, but this cluster ({pgdata}) is system {cluster}: refusing to archive WAL of another cluster. A file was copied or renamed into pg_wal, or 'pgdata' in {config} names the wrong cluster: check both; nothing was written")]
    ForeignSegment {
        wal: String,
        segment: u64,
        cluster: u64,
        pgdata: PathBuf,
        config: String,
    },
    #[error("cannot read the database system identifier of this cluster: {source}; check 'pgdata' in {config} (the cluster's data directory, readable by the archiver's OS user)")]
    ClusterId {
        config: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir} does not exist ({why}); create it, or run `pitrkit archiver -C <config> -I`")]
    NoDirectory { dir: PathBuf, why: &'static str },
    #[error("{url}: {why}; the WAL stays in pg_wal and PostgreSQL retries")]
    ObjectStore { url: String, why: String },
    #[error("{dir} is not initialized for pitrkit (no {SYSTEM_ID_FILE}): run `pitrkit archiver -C {config} -I`, and check that the share is mounted")]
    NotInitialized { dir: PathBuf, config: String },
    #[error("{dir}: {source}; fix or remove the file, then run `pitrkit archiver -C {config} -I`")]
    SystemIdFile {
        dir: PathBuf,
        config: String,
        #[source]
        source: std::io::Error,
    },
    #[error("archiving {wal} to {dest}: {source}")]
    Place {
        wal: String,
        dest: String,
        #[source]
        source: PlaceError,
    },
    #[error("{wal} is not on every slave yet (ship_mode: sync): {}", .failures.join("; "))]
    NotDelivered { wal: String, failures: Vec<String> },
}

impl ArchiveError {
    /// Level of the notification this failure deserves.
    fn level(&self) -> Level {
        match self {
            ArchiveError::Offline { .. } | ArchiveError::NotDelivered { .. } => Level::Warning,
            _ => Level::Critical,
        }
    }
}

/// What one archive call did.
#[derive(Debug, Default)]
pub struct ArchiveReport {
    pub wal: String,
    pub local: Vec<(PathBuf, Placed)>,
    pub spooled: Vec<String>,
    pub slaves: Vec<(String, Event)>,
    /// This call found the file already archived by an earlier look-ahead.
    pub by_lookahead: bool,
    /// Other ready files this call archived along.
    pub lookahead: usize,
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
