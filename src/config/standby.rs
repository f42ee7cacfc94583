//! The standby's typed configuration (`cmd_standby.ini`); also read by
//! `pitrkit restore` and `pitrkit cleanup`, which PostgreSQL runs on the standby.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::choices::{SqlViaSsh, SslMode};
use super::ini::{ConfigError, ConfigWarning, IniFile};
use super::options::{Location, Options, STANDBY_OPTIONS};
use super::remote::{SshSettings, SslFiles};
use super::rsync_flags::{self, Program};
use super::s3::{S3Location, S3Settings};
use super::validate;
use super::ConfigFile;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyConfig {
    pub source: PathBuf,
    /// Major version from `pgversion` (e.g. 15), if set.
    pub pgversion: Option<u32>,
    pub streaming: bool,
    pub trigger_file: Option<PathBuf>,
    pub repl_db_user: String,
    pub repl_db_password: Option<String>,
    pub sslmode: SslMode,
    /// sslrootcert, sslcert, sslkey, sslcrl.
    pub ssl: SslFiles,
    /// pitrkit's SQL session through an ssh tunnel.
    pub sql_via_ssh: SqlViaSsh,
    /// `master_local_ip` when set: the tunnel's destination on the master.
    pub master_local_ip: Option<String>,
    /// The master's unix socket directory, the tunnel's last resort.
    pub master_socket_dir: PathBuf,
    pub master_host: Option<String>,
    pub master_port: u16,
    pub master_db: String,
    pub master_user: String,
    pub master_password: Option<String>,
    pub master_pgdata: Option<PathBuf>,
    pub tablespace_map: Vec<(PathBuf, PathBuf)>,
    pub primary_slot_name: Option<String>,
    pub rsync_threads: usize,
    pub rsync_program: Option<PathBuf>,
    pub rsync_flags: Vec<String>,
    /// rsync --timeout for base backups (`rsync_timeout`).
    pub rsync_timeout: Duration,
    /// A local `archivedir` (`None` when it is an s3:// URL: see `archive_s3`).
    pub archivedir: Option<PathBuf>,
    /// An `archivedir: s3://bucket/prefix` (restore, cleanup and -I read it).
    pub archive_s3: Option<S3Location>,
    pub pgdata: Option<PathBuf>,
    pub pg_conf: Option<PathBuf>,
    pub pg_hba_conf: Option<PathBuf>,
    pub pg_conf_failover: Option<PathBuf>,
    pub pg_hba_conf_failover: Option<PathBuf>,
    pub no_copy_conf: bool,
    pub recovery_conf: Option<PathBuf>,
    /// Server log for `pg_ctl -l` (pitrtools' meaning of `logfile`).
    pub server_log: Option<PathBuf>,
    /// pitrkit's own log file pattern.
    pub pitrkit_logfile: Option<String>,
    pub action_failover: Option<String>,
    pub pg_ctl: Option<PathBuf>,
    pub start_command: Option<String>,
    pub stop_command: Option<String>,
    pub restore_delay: Duration,
    pub restore_prefetch: usize,
    pub cleanup_pause_file: Option<PathBuf>,
    pub wait_timeout: Duration,
    pub includepath: Vec<PathBuf>,
    pub ssh: SshSettings,
    pub notify: crate::notify::Notifier,
    pub debug: bool,
}

impl ConfigFile for StandbyConfig {
    fn read(file: &IniFile) -> Result<(Self, Vec<ConfigWarning>), ConfigError> {
        Self::parse(file, true)
    }
}

impl StandbyConfig {
    /// For `pitrkit restore` and `cleanup`, which PostgreSQL calls per
    /// segment: an `rsync_flags` option refused since an upgrade (the list
    /// became stricter) must not stop recovery, and these calls never run
    /// rsync. Its flags are dropped here; every standby action still refuses
    /// the file with the reason.
    pub fn load_for_wal_calls(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&IniFile::load(path)?, false).map(|(cfg, _)| cfg)
    }

    fn parse(file: &IniFile, strict_rsync: bool) -> Result<(Self, Vec<ConfigWarning>), ConfigError> {
        let o = Options::new(file, STANDBY_OPTIONS)?;
        let rsync_flags = match rsync_flags::judge(&o, Program::Standby) {
            Ok(f) => f,
            Err(_) if !strict_rsync => Default::default(),
            Err(e) => return Err(e),
        };
        let mut ssh = SshSettings::from_options(&o)?;
        ssh.port = rsync_flags.ssh_port(&o, ssh.port)?;
        let (archivedir, archive_s3) = match o.opt_location("archivedir")? {
            None => (None, None),
            Some(Location::Dir(d)) => (Some(d), None),
            Some(Location::S3(url)) => {
                let settings = S3Settings::from_options(&o)?;
                if let Some(w) = settings.http_warning() {
                    o.warn(ConfigWarning::new(&file.path, w));
                }
                (None, Some(S3Location { url, settings }))
            }
        };
        let pgdata = o.opt_path("pgdata")?;
        let tablespace_map = tablespace_map(&o)?;
        let sslmode = o.choice("sslmode")?;
        check_overlaps(file, archivedir.as_deref(), pgdata.as_deref(), &tablespace_map)?;
        let cfg = StandbyConfig {
            source: file.path.clone(),
            pgversion: pgversion(&o)?,
            streaming: o.bool("use_streaming_replication")?,
            trigger_file: o.opt_path("trigger_file")?,
            repl_db_user: o.user("repl_db_user")?,
            repl_db_password: o.opt_text("repl_db_password"),
            sslmode,
            ssl: ssl_files(&o, sslmode)?,
            sql_via_ssh: o.choice("sql_via_ssh")?,
            master_local_ip: master_local_ip(&o)?,
            master_socket_dir: master_socket_dir(&o)?,
            master_host: master_host(&o)?,
            // The table's range keeps it within 1..=65535.
            master_port: o.count("port")? as u16,
            master_db: o.text("master_db"),
            master_user: o.user("master_user")?,
            master_password: o.opt_text("master_password"),
            master_pgdata: o.opt_path("master_pgdata")?,
            tablespace_map,
            primary_slot_name: slot_name(&o)?,
            rsync_threads: o.count("rsync_threads")? as usize,
            rsync_program: o.opt_path("rsync")?,
            rsync_timeout: rsync_flags.timeout(&o)?,
            rsync_flags: rsync_flags.pass,
            archivedir,
            archive_s3,
            pgdata,
            pg_conf: o.opt_path("pg_conf")?,
            pg_hba_conf: o.opt_path("pg_hba_conf")?,
            pg_conf_failover: o.opt_path("pg_conf_failover")?,
            pg_hba_conf_failover: o.opt_path("pg_hba_conf_failover")?,
            no_copy_conf: o.bool("no_copy_conf")?,
            recovery_conf: o.opt_path("recovery_conf")?,
            server_log: o.opt_path("logfile")?,
            pitrkit_logfile: o.opt_text("pitrkit_logfile"),
            action_failover: o.user_command("action_failover")?,
            pg_ctl: o.opt_path("pg_ctl")?,
            start_command: o.user_command("start_command")?,
            stop_command: o.user_command("stop_command")?,
            restore_delay: o.seconds("restore_delay")?,
            restore_prefetch: o.count("restore_prefetch")? as usize,
            cleanup_pause_file: o.opt_path("cleanup_pause_file")?,
            wait_timeout: o.seconds("wait_timeout")?,
            includepath: o.paths("includepath")?,
            ssh,
            notify: o.notifier()?,
            debug: o.bool("debug")?,
        };
        Ok((cfg, o.into_warnings()))
    }

    /// Is a configuration for after failover set (pg_conf_failover / pg_hba_conf_failover)?
    pub fn has_failover_conf(&self) -> bool {
        self.pg_conf_failover.is_some() || self.pg_hba_conf_failover.is_some()
    }

    /// `archivedir`, which `purpose` needs.
    pub fn required_archivedir(&self, purpose: &str) -> Result<PathBuf, ConfigError> {
        if let Some(s3) = &self.archive_s3 {
            return Err(ConfigError::new(
                &self.source,
                format!("archivedir is {}, but {purpose} must be a local directory", s3.url),
            )
            .key("archivedir")
            .hint("on object storage, pitrkit restore, cleanup and cmd_standby -I work; give this action a local archivedir"));
        }
        self.required(&self.archivedir, "archivedir", "/absolute/path", purpose)
    }

    /// `pgdata`, which every standby action needs.
    pub fn required_pgdata(&self) -> Result<PathBuf, ConfigError> {
        self.required(
            &self.pgdata,
            "pgdata",
            "/absolute/path",
            "this standby's data directory",
        )
    }

    /// `master_public_ip`, which every action that talks to the master needs.
    pub fn required_master_host(&self) -> Result<String, ConfigError> {
        self.required(
            &self.master_host,
            "master_public_ip",
            "<the master's host name or address>",
            "",
        )
    }

    /// A required value, with the error a DBA needs when it is missing.
    fn required<T: Clone>(&self, value: &Option<T>, key: &str, example: &str, why: &str) -> Result<T, ConfigError> {
        value.clone().ok_or_else(|| {
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            };
            ConfigError::new(&self.source, format!("'{key}' is not set"))
                .key(key)
                .hint(format!("add '{key}: {example}'{why}"))
        })
    }
}

/// `pgversion`: "9.6" and "15" both name a major version; 10+ has one number.
fn pgversion(o: &Options) -> Result<Option<u32>, ConfigError> {
    let Some(v) = o.opt_text("pgversion") else {
        return Ok(None);
    };
    validate::parse_major(&v).map(Some).ok_or_else(|| {
        o.file().error(
            "pgversion",
            format!(
                "pgversion must be a PostgreSQL major version like 15, got {}",
                o.show("pgversion", &v)
            ),
        )
    })
}

fn master_host(o: &Options) -> Result<Option<String>, ConfigError> {
    let host = o.opt_text("master_public_ip");
    if let Some(h) = &host {
        validate::check_host(h).map_err(|why| {
            o.file().error(
                "master_public_ip",
                format!("master_public_ip: {} {why}", o.show("master_public_ip", h)),
            )
        })?;
    }
    Ok(host)
}

fn slot_name(o: &Options) -> Result<Option<String>, ConfigError> {
    let slot = o.opt_text("primary_slot_name");
    if let Some(s) = &slot {
        if !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            || s.len() > 63
        {
            return Err(o
                .file()
                .error(
                    "primary_slot_name",
                    format!(
                        "primary_slot_name {} is not a valid slot name",
                        o.show("primary_slot_name", s)
                    ),
                )
                .hint("slot names use lower-case letters, digits and '_' (at most 63)"));
        }
    }
    Ok(slot)
}

/// A base backup (`-B`) makes pgdata and each tablespace directory an exact
/// copy of the master's (rsync --delete): anything else inside them is
/// deleted. The archive must not be there, nor a tablespace inside pgdata.
fn check_overlaps(
    file: &IniFile,
    archivedir: Option<&Path>,
    pgdata: Option<&Path>,
    tablespaces: &[(PathBuf, PathBuf)],
) -> Result<(), ConfigError> {
    let hint = "give each its own directory, outside the others (the archive is usually next to pgdata, not in it)";
    if let (Some(a), Some(d)) = (archivedir, pgdata) {
        if validate::path_within(a, d) {
            return Err(file
                .error(
                    "archivedir",
                    format!(
                        "archivedir {} is inside pgdata {}: a base backup (-B) replaces pgdata with the master's copy and would delete the archived WAL",
                        a.display(),
                        d.display()
                    ),
                )
                .hint(hint));
        }
    }
    for (_, local) in tablespaces {
        let clash = [(pgdata, "pgdata"), (archivedir, "archivedir")]
            .into_iter()
            .find_map(|(p, key)| {
                p.filter(|p| validate::path_within(local, p) || validate::path_within(p, local))
                    .map(|p| (p, key))
            });
        if let Some((p, key)) = clash {
            return Err(file
                .error(
                    "tablespace_map",
                    format!(
                        "tablespace_map: {} overlaps {key} {}: a base backup (-B) makes each of them an exact copy of the master's and would delete the other's files",
                        local.display(),
                        p.display()
                    ),
                )
                .hint(hint));
        }
    }
    Ok(())
}

/// `master_local_ip`: it becomes part of an ssh -L specification
/// (host:port), so ':' only in an IPv6 address (a port belongs in 'port').
fn master_local_ip(o: &Options) -> Result<Option<String>, ConfigError> {
    let ip = o.opt_text("master_local_ip");
    if let Some(ip) = &ip {
        if ip.starts_with('-')
            || !ip.chars().all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
            || (ip.contains(':') && ip.parse::<std::net::Ipv6Addr>().is_err())
        {
            return Err(o
                .file()
                .error(
                    "master_local_ip",
                    format!(
                        "master_local_ip {} is not a host name or IP address",
                        o.show("master_local_ip", ip)
                    ),
                )
                .hint("write the address the master's PostgreSQL listens on, as seen on the master, e.g. 127.0.0.1"));
        }
    }
    Ok(ip)
}

/// `master_socket_dir`: the unix socket path is part of an ssh -L specification.
fn master_socket_dir(o: &Options) -> Result<PathBuf, ConfigError> {
    let dir = o.path("master_socket_dir")?;
    if dir.to_string_lossy().contains(':') {
        return Err(o
            .file()
            .error(
                "master_socket_dir",
                format!(
                    "master_socket_dir {} contains ':', which ssh -L reads as a separator",
                    o.show("master_socket_dir", &dir.display().to_string())
                ),
            )
            .hint("use a path without ':' (a symlink can provide one)"));
    }
    Ok(dir)
}

/// sslrootcert (a path or `system`), sslcert, sslkey, sslcrl.
fn ssl_files(o: &Options, sslmode: SslMode) -> Result<SslFiles, ConfigError> {
    let rootcert = o.opt_text("sslrootcert");
    match rootcert.as_deref() {
        None => {}
        // libpq 16+ refuses the system's store without a name check: any
        // certificate a public CA issued to anyone would pass.
        Some("system") if sslmode != SslMode::VerifyFull => {
            return Err(o
                .file()
                .error(
                    "sslrootcert",
                    format!("sslrootcert: system needs sslmode verify-full, not {sslmode}"),
                )
                .hint("set sslmode: verify-full (any certificate from a public CA would pass verify-ca)"))
        }
        Some("system") => {}
        Some(p) => {
            o.check_path("sslrootcert", p)?;
        }
    }
    Ok(SslFiles {
        rootcert,
        cert: o.opt_path("sslcert")?,
        key: o.opt_path("sslkey")?,
        crl: o.opt_path("sslcrl")?,
    })
}

fn tablespace_map(o: &Options) -> Result<Vec<(PathBuf, PathBuf)>, ConfigError> {
    let Some(v) = o.opt_text("tablespace_map") else {
        return Ok(Vec::new());
    };
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let bad = |why: String| {
                o.file()
                    .error(
                        "tablespace_map",
                        format!("tablespace_map: {} {why}", o.show("tablespace_map", pair)),
                    )
                    .hint("write old=new pairs of absolute paths, comma-separated")
            };
            let (old, new) = pair.split_once('=').ok_or_else(|| bad("is not old=new".into()))?;
            for p in [old.trim(), new.trim()] {
                validate::check_path(p).map_err(|why| bad(format!("({} {why})", o.show("tablespace_map", p))))?;
            }
            Ok((PathBuf::from(old.trim()), PathBuf::from(new.trim())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<StandbyConfig, ConfigError> {
        StandbyConfig::from_ini(&IniFile::parse(Path::new("cmd_standby.ini"), text).unwrap())
    }

    /// pitrtools' sample cmd_standby.ini (8.4 era), unchanged.
    const PITRTOOLS: &str = "\
pgversion: 8.4
numarchives: 10
use_streaming_replication: no
trigger_file: /var/lib/postgresql/pitrtools/cmd_end_recovery
repl_db_user: replication
repl_db_password: replication
sslmode: prefer
ssh: /usr/bin/ssh
rsync: /usr/bin/rsync
rsync_flags: -z
pg_standby: /usr/lib/postgresql/8.4/bin/pg_standby
pg_ctl: /usr/lib/postgresql/8.4/bin/pg_ctl
pg_archivecleanup: /usr/lib/postgresql/9.0/bin/pg_archivecleanup
r_psql: /usr/lib/postgresql/8.4/bin/psql
port: 5432
master_public_ip: bitarena
user: postgres
debug: on
ssh_debug: off
ssh_timeout: 30
archivedir: /var/lib/postgresql/archive
pgdata: /var/lib/postgresql/8.4/main
pg_conf_failover: /var/lib/postgresql/pitrtools/etc/pg_conf_failover/postgresql.conf
pg_hba_conf_failover: /var/lib/postgresql/pitrtools/etc/pg_conf_failover/pg_hba.conf
pg_conf: /var/lib/postgresql/pitrtools/etc/pg_conf/postgresql.conf
pg_hba_conf: /var/lib/postgresql/pitrtools/etc/pg_conf/pg_hba.conf
recovery_conf: /var/lib/postgresql/8.4/main/recovery.conf
logfile: /var/log/postgresql/postgresql-8.4-main.log
notify_critical: echo CRITICAL
notify_warning: echo WARNING
notify_ok: echo OK
action_failover: /var/lib/postgresql/pitrtools/scripts/
";

    #[test]
    fn reads_the_pitrtools_sample_unchanged() {
        let c = load(PITRTOOLS).unwrap();
        assert_eq!(c.pgversion, Some(84));
        assert_eq!(c.master_host.as_deref(), Some("bitarena"));
        assert_eq!(c.archivedir.as_deref(), Some(Path::new("/var/lib/postgresql/archive")));
        assert_eq!(c.ssh.connect_timeout, Duration::from_secs(30));
        assert!(!c.streaming);
        assert_eq!(
            c.action_failover.as_deref(),
            Some("/var/lib/postgresql/pitrtools/scripts/")
        );
    }

    /// Review of issue 9: the stricter rsync_flags list must not turn an
    /// upgrade into a stopped standby. restore and cleanup never run rsync.
    #[test]
    fn a_refused_rsync_flag_stops_standby_actions_but_never_restore() {
        let d = tempfile::tempdir().unwrap();
        let ini = d.path().join("standby.ini");
        std::fs::write(&ini, "archivedir: /arch\nrsync_flags: -z --inplace\n").unwrap();
        let e = StandbyConfig::load_with_warnings(&ini).unwrap_err();
        assert!(e.to_string().contains("--inplace"), "{e}");
        let c = StandbyConfig::load_for_wal_calls(&ini).unwrap();
        assert_eq!(c.archivedir.as_deref(), Some(Path::new("/arch")));
        // Harmless copy options of real files only warn.
        std::fs::write(&ini, "archivedir: /arch\nrsync_flags: -aH --numeric-ids -S\n").unwrap();
        let (c, warnings) = StandbyConfig::load_with_warnings(&ini).unwrap();
        assert!(c.rsync_flags.is_empty());
        assert_eq!(warnings.len(), 4, "{warnings:?}");
    }

    #[test]
    fn an_archive_inside_pgdata_is_refused() {
        for archivedir in ["/data/pg/archive", "/data/pg", "/data/pg/./x/../archive"] {
            let e = load(&format!("pgdata: /data/pg\narchivedir: {archivedir}\n")).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("is inside pgdata") && msg.contains("delete the archived WAL"),
                "{msg}"
            );
        }
        assert!(load("pgdata: /data/pg\narchivedir: /data/pg_archive\n").is_ok());
        // Through a symlink too.
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("pg")).unwrap();
        std::os::unix::fs::symlink(d.path().join("pg"), d.path().join("link")).unwrap();
        let text = format!(
            "pgdata: {}\narchivedir: {}\n",
            d.path().join("pg").display(),
            d.path().join("link").display()
        );
        assert!(load(&text).unwrap_err().to_string().contains("is inside pgdata"));
    }

    #[test]
    fn connection_keys() {
        let c = load("").unwrap();
        assert_eq!(c.sql_via_ssh, SqlViaSsh::Auto);
        assert_eq!(c.master_local_ip, None);
        assert_eq!(c.master_socket_dir, PathBuf::from("/var/run/postgresql"));
        assert_eq!(c.ssl, Default::default());
        let c = load("sslmode: verify-full\nsslrootcert: system\nsslkey: /k\nmaster_local_ip: ::1\n").unwrap();
        assert_eq!(c.ssl.rootcert.as_deref(), Some("system"));
        assert_eq!(c.master_local_ip.as_deref(), Some("::1"));
        let e = load("sslmode: verify-ca\nsslrootcert: system\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs sslmode verify-full"), "{e}");
        assert!(load("sslrootcert: root.crt\n")
            .unwrap_err()
            .to_string()
            .contains("absolute"));
        assert!(load("master_local_ip: -oProxyCommand=x\n").is_err());
        assert!(load("master_local_ip: 10.0.0.1:5432\n").is_err());
        assert!(load("master_local_ip: a/b\n").is_err());
        assert!(load("master_socket_dir: /run/a:b\n")
            .unwrap_err()
            .to_string()
            .contains("ssh -L"));
        assert!(load("sql_via_ssh: maybe\n").is_err());
    }

    #[test]
    fn versions_and_maps() {
        assert_eq!(load("pgversion: 15\n").unwrap().pgversion, Some(15));
        assert_eq!(load("pgversion: 9.6\n").unwrap().pgversion, Some(96));
        assert!(load("pgversion: fifteen\n")
            .unwrap_err()
            .to_string()
            .contains("major version"));
        let c = load("tablespace_map: /a=/b, /c = /d\n").unwrap();
        assert_eq!(
            c.tablespace_map,
            vec![
                (PathBuf::from("/a"), PathBuf::from("/b")),
                (PathBuf::from("/c"), PathBuf::from("/d"))
            ]
        );
        assert!(load("tablespace_map: /a\n")
            .unwrap_err()
            .to_string()
            .contains("old=new"));
        assert!(load("master_public_ip: -oProxyCommand=x\n").is_err());
        assert!(load("tablespace_map: /srv/ts=/data/pg/ts\npgdata: /data/pg\n")
            .unwrap_err()
            .to_string()
            .contains("overlaps pgdata"));
        assert!(load("tablespace_map: /srv/ts=/data/ts\npgdata: /data/pg\narchivedir: /data/arch\n").is_ok());
        assert!(load("primary_slot_name: Bad-Slot\n").is_err());
    }
}
