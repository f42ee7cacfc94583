//! Every dot-name pitrkit keeps under `l_archivedir` (the queue root) and in
//! an archive directory. `crate::layout` re-exports this module as
//! `crate::layout::queue`; the names and formats are part of the shared
//! contract (restore, cleanup and `-I` read some of them).
//!
//! ```text
//! l_archivedir/                   (also any local_archivedirs entry: the mark and temporary files)
//!   .pitrkit-system-id            SYSTEM_ID_FILE: database system the WAL belongs to, set by -I
//!                                 (empty: unclaimed); a directory without it is not an archive
//!   .<name>.pitrkit-<pid>.tmp     a writer's temporary file (fsutil::temp_name), reclaimed
//!                                 once its writer is gone
//!   .pitrkit-compress-*           a compressed copy being made (fsutil::COMPRESS_TEMP_PREFIX),
//!                                 flock'd by its writer while it lives
//!   .delivered/<wal>              LEDGER_DIR, sync mode: "<slave> <size>" lines, the slaves
//!                                 that already have <wal> (older ledgers: "<slave>" alone)
//!   .spool/<wal>[.sum]            SPOOL_DIR: the one durable copy being linked into the queues
//!   .spool/.lock                  LOCK_FILE in SPOOL_DIR: held while spooling
//!   .done/<wal>                   DONE_DIR: look-ahead marker, the identity (dev ino size
//!                                 mtime) of the pg_wal file an earlier call archived
//!   <slave>/<wal>[.sum]           a slave's queue: hard links of the spooled copy, 0600
//!   <slave>/.lock                 LOCK_FILE: held while shipping this queue
//!   <slave>/.state                STATE_FILE: delivery state (drives notifications)
//!   <slave>/.conflicts/<wal>[.N]  CONFLICTS_DIR: queued files the slave already had, differently
//! ```
//!
//! Queue listings skip every dot-name: only valid WAL names (with a codec
//! suffix or a `.sum`) are queued files.

/// In an archive directory or the queue root: which database system it belongs to.
pub const SYSTEM_ID_FILE: &str = ".pitrkit-system-id";
/// A lock file: in a slave's queue (shipping) and in [`SPOOL_DIR`] (spooling).
pub const LOCK_FILE: &str = ".lock";
/// In a slave's queue: its delivery state.
pub const STATE_FILE: &str = ".state";
/// In a slave's queue: files the slave already had with other content.
pub const CONFLICTS_DIR: &str = ".conflicts";
/// In the queue root: sync mode's per-file delivery ledgers.
pub const LEDGER_DIR: &str = ".delivered";
/// In the queue root: the staging copy linked into each queue.
pub const SPOOL_DIR: &str = ".spool";
/// In the queue root: look-ahead markers.
pub const DONE_DIR: &str = ".done";
