//! Every name pitrkit gives a file of its own inside an archive directory or
//! a data directory, and the stored forms of archived WAL. Readers and
//! writers (archive, shipping, restore, cleanup, backups) take the names
//! from here, so a rename cannot leave one of them behind.
//!
//! # Stored forms of an archived file `X` (segment, `.partial`, `.history`, `.backup`)
//!
//! - Compressed: `X.zst`, `X.lz4`, `X.gz`. The frame carries the checksum of
//!   the decompressed content (zstd content checksum, lz4 content checksum,
//!   gzip CRC-32), verified on every restore.
//! - Plain: `X` plus the sidecar `X.sum` ([`SUM_SUFFIX`]), one line:
//!   `crc32c <8 lowercase hex digits> <size in bytes>\n`, the CRC-32C of
//!   `X`'s bytes. The sidecar is made durable *before* `X` is linked into
//!   place, so a crash leaves at most a sidecar without its file (an orphan,
//!   which the next attempt may replace), never a file whose checksum was
//!   lost. Shipping sends it with its file, cleanup removes it with its file.
//! - A plain `X` without a sidecar (filled by pitrtools or an older pitrkit)
//!   is served only after a full check: every page header, the system
//!   identifier, and the CRC-32C of every record up to the end of valid WAL.
//!
//! # The queue root and archive directories
//!
//! Every dot-name under `l_archivedir` is listed and documented in
//! [`queue`] (re-exported as `crate::archive::layout`).
//!
//! # Marks
//!
//! - [`SYSTEM_ID_FILE`] in an archive directory: set up by `-I`, holds the
//!   database system identifier (or nothing: "unclaimed"). A directory
//!   without it is not an archive (an unmounted share is an empty directory),
//!   and restore never answers "not in the archive" from it.
//! - [`PROMOTING_FILE`] in a standby's data directory: written durably by
//!   `cmd_standby -F999` before it asks PostgreSQL to promote, removed once
//!   the server is read-write. While it exists restore holds nothing back
//!   (`restore_delay`) and turns every real error into a fatal one, because
//!   PostgreSQL ends recovery on "not found".

pub use queue::SYSTEM_ID_FILE;

pub mod queue {
    //! Every dot-name pitrkit keeps under `l_archivedir` (the queue root) and in
    //! an archive directory (queues, spool, ledgers, markers), re-exported
    //! as `crate::archive::layout`; the names and formats are part of the shared
    //! contract (restore, cleanup and `-I` read some of them).
    //!
    //! ```text
    //! l_archivedir/                   (also any local_archivedirs entry: the mark and temporary files)
    //!   .pitrkit-system-id            SYSTEM_ID_FILE: database system the WAL belongs to, set by -I
    //!                                 (empty: unclaimed); a directory without it is not an archive
    //!   .<name>.pitrkit-<pid>.tmp     a writer's temporary file (fsutil::temp_name), reclaimed
    //!                                 once its writer is gone
    //!   .pitrkit-compress-*           a compression scratch file of builds before issue 13
    //!                                 (fsutil::COMPRESS_TEMP_PREFIX; compressed forms are now
    //!                                 written into the destination's temporary file), reclaimed
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
}

/// Suffix of a plain archived file's checksum sidecar.
pub const SUM_SUFFIX: &str = ".sum";

/// In a data directory: a failover by pitrkit is under way. Holds the
/// promoted postmaster's pid and start time on lines 1 and 3, as
/// `postmaster.pid` does (then a line of explanation); restore honours it
/// only while `postmaster.pid` shows that same pid and start time, so a
/// marker left by a killed `-F999` is inert after any restart
/// (see `standby::promoting`).
pub const PROMOTING_FILE: &str = "pitrkit.promoting";

/// In a standby's data directory: when restore last sent the critical
/// "archive unavailable" notification (unix seconds), so that PostgreSQL's
/// retry every 5 seconds does not send one each time.
pub const ARCHIVE_ALERT_FILE: &str = "pitrkit.archive-alert";

/// In the prefetch spool: `<wal>` + this holds where the spooled copy came
/// from (the archived file's identity) and the checksum of its bytes, so a
/// spooled copy is served only while the archive still holds the same file.
pub const ORIGIN_SUFFIX: &str = ".origin";
