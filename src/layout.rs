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
//! - [`SPARE_FILE`] in a standby's data directory: written durably by
//!   `cmd_standby -B` once the copy is complete, removed durably by `-B`
//!   before it copies, by `-S` before it writes standby.signal, and by
//!   `-F999` once the server is read-write. It marks a spare: a copy that
//!   has not run as a standby since its base backup, which `-F999 -R` may
//!   recover while the master runs.

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
    //!   .queue-runner.pid             RUNNER_LOCK_FILE: flock'd by the one queue runner
    //!                                 (`pitrkit queue`) of this queue root; holds its pid
    //!                                 for humans (the lock, not the pid, says who runs)
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
    /// In the queue root: the queue runner's lock, holding its pid.
    pub const RUNNER_LOCK_FILE: &str = ".queue-runner.pid";
}

pub mod backup {
    //! The backup repository (`backup_dir`) and the files a backup keeps
    //! elsewhere; the names and formats are part of the shared contract.
    //!
    //! ```text
    //! backup_dir/
    //!   .lock                      REPO_LOCK: held by a running backup or expire (flock; on S3 an
    //!                              object created only if absent: host, pid, start time, what)
    //!   .uploads/<n>               UPLOADS_DIR (S3 only): one record per multipart upload in
    //!                              progress, `key: <object key>\nupload_id: <id>\n`, written before
    //!                              its first part, removed once it is completed or aborted
    //!   .recover.lock              READ_LOCK: shared by each running recover, exclusive while
    //!                              expire removes sets or WAL (flock)
    //!   <ID>/                      one backup set; ID is its UTC start time, 20261130T101500Z
    //!     data/<path>[.zst|.lz4|.gz]   DATA_DIR: each file of the data directory (tablespaces under
    //!                              pg_tblspc/<oid>/), compressed per file; backup_label and
    //!                              tablespace_map as pg_backup_stop returned them; an
    //!                              incremental's unchanged files are not here but in the set
    //!                              its manifest's `ref:` line names
    //!     wal/                     WAL_DIR: the WAL from start to stop, stored as in an archive
    //!                              (X.zst, or X with X.sum), with its own .pitrkit-system-id mark
    //!     manifest                 MANIFEST: written durably last; a set without it is incomplete
    //! archivedir/
    //!   .pitrkit-backup-hold       HOLD_FILE: the oldest segment a backup needs (cleanup keeps it),
    //!                              then `repository: <backup_dir>`, the one repository it holds for
    //!   .pitrkit-cleanup-r         CLEANUP_MARK_FILE: the last %r cleanup was given (expire keeps it)
    //! ```
    //!
    //! The manifest is text, one `key: value` line each (see `backup::manifest`;
    //! version 2 adds `type: incremental`, `depends_on:` and `ref:` lines).
    //! A restored data directory gets PostgreSQL's own [`PG_MANIFEST`].

    /// In `backup_dir`: held while a backup or expire runs.
    pub const REPO_LOCK: &str = ".lock";
    /// In `backup_dir`: shared by every running recover; expire removes
    /// nothing while it cannot take it exclusively. Separate from
    /// [`REPO_LOCK`] so that a backup never waits for a recover.
    pub const READ_LOCK: &str = ".recover.lock";
    /// In `backup_dir` on S3: the records of multipart uploads in progress
    /// (a killed backup's are aborted by id by the next `--expire`).
    pub const UPLOADS_DIR: &str = ".uploads";
    /// In a set: its manifest, the last file written.
    pub const MANIFEST: &str = "manifest";
    /// In a set: the data directory's files.
    pub const DATA_DIR: &str = "data";
    /// In a set: its WAL range.
    pub const WAL_DIR: &str = "wal";
    /// In a restored data directory: PostgreSQL's backup manifest (pg_verifybackup).
    pub const PG_MANIFEST: &str = "backup_manifest";

    /// In an archive directory: the oldest segment a kept or running backup
    /// needs, one line (`000000010000000000000002\n`), written durably by
    /// `backup` and `--expire`. `pitrkit cleanup` never removes it or later
    /// segments, whatever INI file it was given.
    pub const HOLD_FILE: &str = ".pitrkit-backup-hold";

    /// In an archive directory: the last `%r` `pitrkit cleanup` was given,
    /// one line, written durably; `--expire` never removes WAL from it on,
    /// so a delayed standby on the same archive keeps what it has not replayed.
    pub const CLEANUP_MARK_FILE: &str = ".pitrkit-cleanup-r";
}

/// In an object storage archive prefix: the object `-I` creates twice (and
/// removes) to prove that the endpoint refuses a second conditional create
/// (412), which "never overwrite" depends on.
pub const CREATE_PROBE_FILE: &str = ".pitrkit-create-probe";

/// Suffix of a plain archived file's checksum sidecar.
pub const SUM_SUFFIX: &str = ".sum";

/// In a data directory: a failover by pitrkit is under way. Holds the
/// promoted postmaster's pid and start time on lines 1 and 3, as
/// `postmaster.pid` does (then a line of explanation); restore honours it
/// only while `postmaster.pid` shows that same pid and start time, so a
/// marker left by a killed `-F999` is inert after any restart
/// (see `standby::promoting`).
pub const PROMOTING_FILE: &str = "pitrkit.promoting";

/// In a data directory: a spare, i.e. a complete `-B` copy that has not run
/// under `-S` since (see `standby::spare`). Lines of `key: value`:
/// `stop_lsn` (the LSN pg_backup_stop returned) and `stopped_at` (the
/// master's clock just after it returned, RFC 3339 in UTC: the copy is
/// consistent only from there, so `-F999 -R` refuses earlier targets),
/// then `#` comment lines.
pub const SPARE_FILE: &str = "pitrkit.spare";

/// In a standby's data directory: when restore last sent the critical
/// "archive unavailable" notification (unix seconds), so that PostgreSQL's
/// retry every 5 seconds does not send one each time.
pub const ARCHIVE_ALERT_FILE: &str = "pitrkit.archive-alert";

/// In the prefetch spool: `<wal>` + this holds where the spooled copy came
/// from (the archived file's identity) and the checksum of its bytes, so a
/// spooled copy is served only while the archive still holds the same file.
pub const ORIGIN_SUFFIX: &str = ".origin";
