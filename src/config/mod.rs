//! Configuration: pitrtools INI files read unchanged, validated into typed structs.

pub mod archiver;
pub mod backup;
pub mod choices;
pub mod ini;
pub mod options;
pub mod remote;
pub mod rsync_flags;
pub mod s3;
pub mod standby;
pub mod validate;

pub use archiver::ArchiverConfig;
pub use backup::BackupConfig;
pub use choices::{BackupType, HostKeyChecking, QueueRunner, ShipMode, SqlViaSsh, SslMode, State};
pub use ini::{ConfigError, ConfigWarning, IniFile};
pub use options::Options;

use std::path::Path;

/// A typed configuration read from one INI file: each reads and checks its
/// file in `read`; the rest are the ways commands and tests ask for it.
pub trait ConfigFile: Sized {
    /// The configuration, and the warnings for the command to print where
    /// they help (never on the calls PostgreSQL makes per segment: its log).
    fn read(file: &IniFile) -> Result<(Self, Vec<ConfigWarning>), ConfigError>;

    fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_ini(&IniFile::load(path)?)
    }

    fn load_with_warnings(path: &Path) -> Result<(Self, Vec<ConfigWarning>), ConfigError> {
        Self::read(&IniFile::load(path)?)
    }

    fn from_ini(file: &IniFile) -> Result<Self, ConfigError> {
        Self::read(file).map(|(cfg, _)| cfg)
    }
}
pub use remote::{RsyncSettings, SshSettings, SslFiles};
pub use standby::StandbyConfig;

#[cfg(test)]
mod tests {
    use super::options::{all_defs, OptDef, ARCHIVER_OPTIONS, STANDBY_OPTIONS};
    use super::*;
    use std::fmt::Debug;
    use std::path::Path;
    use std::time::Duration;

    fn archiver(text: &str) -> Result<ArchiverConfig, ConfigError> {
        ArchiverConfig::from_ini(&IniFile::parse(Path::new("a.ini"), text).unwrap())
    }

    fn standby(text: &str) -> Result<StandbyConfig, ConfigError> {
        StandbyConfig::from_ini(&IniFile::parse(Path::new("a.ini"), text).unwrap())
    }

    /// For every key of the table (and every legacy name) the base does not
    /// set, `key:` with no value loads exactly like a file without the line.
    fn empty_is_absent<C: PartialEq + Debug>(
        defs: &'static [&'static [OptDef]],
        base: &str,
        load: fn(&str) -> Result<C, ConfigError>,
    ) {
        let absent = load(base).unwrap();
        let mut checked = 0;
        for def in all_defs(defs) {
            for name in std::iter::once(def.name).chain(def.aliases.iter().copied()) {
                if base.lines().any(|l| l.starts_with(&format!("{name}:"))) {
                    continue;
                }
                for empty in [format!("{name}:"), format!("{name} =   "), format!("{name}: \"\"")] {
                    let got = load(&format!("{base}{empty}\n"));
                    assert_eq!(got.as_ref().ok(), Some(&absent), "{empty:?}: {got:?}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 3 * 20, "{checked}");
    }

    #[test]
    fn every_empty_value_is_an_absent_line() {
        empty_is_absent(
            ARCHIVER_OPTIONS,
            "slaves: sb\nl_archivedir: /q\nr_archivedir: /r\n",
            archiver,
        );
        empty_is_absent(STANDBY_OPTIONS, "archivedir: /arch\n", standby);
    }

    /// The cases issue 8 found: each empty value used to disable its default.
    #[test]
    fn empty_values_take_the_defaults() {
        let a = archiver(
            "local_archivedirs: /a\nssh_timeout:\nlookahead:\nmax_queue_workers:\nlock_timeout:\nqueue_wait:\n\
             remote_fsync:\nssh_control_persist:\n",
        )
        .unwrap();
        // remote_fsync: used to read as off, silently dropping durability on the slaves.
        assert!(a.rsync.fsync);
        assert_eq!(a.ssh.control_persist, Duration::from_secs(60));
        assert_eq!(a.ssh.connect_timeout, Duration::from_secs(10));
        assert!(a.ssh.options().contains(&"ConnectTimeout=10".to_string()));
        assert_eq!(a.lookahead, 16);
        assert_eq!(a.max_queue_workers, 4);
        assert_eq!(a.lock_timeout, Duration::from_secs(300));
        assert_eq!(a.queue_wait, Duration::from_secs(30));
        let s = standby("wait_timeout:\nrepl_db_user:\nsslmode:\n").unwrap();
        assert_eq!(s.wait_timeout, Duration::from_secs(300));
        assert_eq!(s.repl_db_user, "replication");
        assert_eq!(s.sslmode, SslMode::Prefer);
    }

    #[test]
    fn an_empty_required_key_is_missing() {
        let e = archiver("slaves: sb\nl_archivedir:\nr_archivedir: /r\n").unwrap_err();
        assert!(
            e.to_string().contains("'slaves' is set but 'l_archivedir' is not"),
            "{e}"
        );
        let s = standby("archivedir:\n").unwrap();
        let e = s.required_archivedir("where WAL arrives").unwrap_err();
        assert!(e.to_string().contains("'archivedir' is not set"), "{e}");
    }

    #[test]
    fn zero_workers_are_refused() {
        let e = archiver("local_archivedirs: /a\nmax_queue_workers: 0\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(
            e.message.contains("max_queue_workers must be at least 1, got '0'"),
            "{e}"
        );
        assert!(e.to_string().contains("nothing would ever be shipped"), "{e}");
    }

    #[test]
    fn legacy_names_are_read_and_not_doubled() {
        let s = standby("postgresql_conf: /etc/pg/standby.conf\n").unwrap();
        assert_eq!(s.pg_conf.as_deref(), Some(Path::new("/etc/pg/standby.conf")));
        let e = standby("postgresql_conf: /a\npg_conf: /b\n").unwrap_err();
        assert!(e.to_string().contains("are the same key"), "{e}");
        let e = standby("postgresql_conf_failover: rel\n").unwrap_err();
        assert!(e.message.starts_with("postgresql_conf_failover: 'rel'"), "{e}");
    }

    /// Every default in the table is a valid value of its key.
    #[test]
    fn every_default_loads() {
        for (defs, base) in [(ARCHIVER_OPTIONS, "local_archivedirs: /a\n"), (STANDBY_OPTIONS, "")] {
            for def in all_defs(defs).filter(|d| d.default.is_some()) {
                let text = format!("{base}{}: {}\n", def.name, def.default.unwrap());
                let ok = if std::ptr::eq(defs, ARCHIVER_OPTIONS) {
                    archiver(&text).map(drop)
                } else {
                    standby(&text).map(drop)
                };
                assert!(ok.is_ok(), "{}: {ok:?}", def.name);
            }
        }
    }
}
