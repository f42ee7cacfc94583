//! Every PostgreSQL version difference pitrkit cares about, in one place.

use std::fmt;

/// A server version as `server_version_num` gives it (e.g. 150018).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PgVersion(pub u32);

impl PgVersion {
    /// Major version: 15 for 150018; 96 for 90624 (9.6), as `pgversion: 9.6` parses.
    pub fn major(self) -> u32 {
        if self.0 >= 100_000 {
            self.0 / 10_000
        } else {
            self.0 / 10_000 * 10 + self.0 / 100 % 100
        }
    }

    /// From a major version number as the config spells it (15, or 96 for 9.6).
    pub fn from_major(major: u32) -> PgVersion {
        if (10..90).contains(&major) {
            PgVersion(major * 10_000)
        } else {
            PgVersion(major / 10 * 10_000 + major % 10 * 100)
        }
    }

    /// pg_backup_start/stop replaced pg_start/stop_backup (and exclusive mode went away).
    pub fn has_pg_backup_start(self) -> bool {
        self.0 >= 150_000
    }

    /// 12 replaced recovery.conf with standby.signal / recovery.signal.
    /// `promote_trigger_file` (`trigger_file` in recovery.conf before 12):
    /// removed in 16, where only `pg_ctl promote` or `pg_promote()` promote.
    pub fn has_promote_trigger_file(self) -> bool {
        self.major() < 16
    }

    pub fn uses_signal_files(self) -> bool {
        self.0 >= 120_000
    }

    /// idle_session_timeout exists from 14.
    pub fn has_idle_session_timeout(self) -> bool {
        self.0 >= 140_000
    }

    /// `pg_wal` since 10, `pg_xlog` before.
    pub fn wal_dir(self) -> &'static str {
        if self.0 >= 100_000 {
            "pg_wal"
        } else {
            "pg_xlog"
        }
    }

    /// Starts a non-exclusive backup in the current session; `$1` is the label.
    pub fn backup_start_sql(self) -> &'static str {
        if self.has_pg_backup_start() {
            "SELECT pg_backup_start($1, true)::text"
        } else {
            "SELECT pg_start_backup($1, true, false)::text"
        }
    }

    /// Stops it: LSN, backup_label and tablespace_map contents. With
    /// `wait_for_archive` the call returns only once the last segment is
    /// archived (PostgreSQL checks once a second); either way a master
    /// switches to a new segment first.
    pub fn backup_stop_sql(self, wait_for_archive: bool) -> &'static str {
        match (self.has_pg_backup_start(), wait_for_archive) {
            (true, true) => "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(true)",
            (true, false) => "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)",
            (false, true) => "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, true)",
            (false, false) => "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, false)",
        }
    }
}

/// Where `global/pg_control` keeps the cluster state (u32) and the latest
/// checkpoint's time (i64, unix seconds), by the file's own
/// pg_control_version (bytes 8..12): the same from 12 (1201) to 18 (1800).
pub fn pg_control_offsets(pg_control_version: u32) -> Option<(usize, usize)> {
    matches!(pg_control_version, 1201 | 1300 | 1700 | 1800).then_some((16, 104))
}

impl fmt::Display for PgVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.major();
        if self.0 >= 100_000 {
            write!(f, "{m}")
        } else {
            write!(f, "{}.{}", m / 10, m % 10)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors() {
        assert_eq!(PgVersion(150018).major(), 15);
        assert_eq!(PgVersion(180001).major(), 18);
        assert_eq!(PgVersion(90624).major(), 96);
        assert_eq!(PgVersion::from_major(15), PgVersion(150000));
        assert_eq!(PgVersion::from_major(96).major(), 96);
        assert_eq!(PgVersion(90624).to_string(), "9.6");
        assert_eq!(PgVersion(120003).to_string(), "12");
    }

    #[test]
    fn differences() {
        assert!(PgVersion(150000).has_pg_backup_start());
        assert!(!PgVersion(140010).has_pg_backup_start());
        assert!(PgVersion(140010)
            .backup_start_sql()
            .contains("pg_start_backup($1, true, false)"));
        assert!(PgVersion(140010)
            .backup_stop_sql(false)
            .contains("pg_stop_backup(false, false)"));
        assert!(PgVersion(170000).backup_stop_sql(true).contains("pg_backup_stop(true)"));
        assert!(PgVersion(120000).uses_signal_files() && !PgVersion(110000).uses_signal_files());
        assert_eq!(PgVersion(96000).wal_dir(), "pg_xlog");
    }
}
