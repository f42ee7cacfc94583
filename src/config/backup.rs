//! The backup's typed configuration: a `backup.ini`, or the same keys in a
//! `standby.ini`, so that a pitrtools standby backs itself up with its
//! existing file. There `port` keeps its pitrtools meaning (the master's), and
//! the local server is found from `pgdata`'s `postmaster.pid`.

use std::path::PathBuf;
use std::time::Duration;

use super::choices::BackupType;
use super::ini::{ConfigError, ConfigWarning, IniFile};
use super::options::{defines, Location, Options, BACKUP_OPTIONS, STANDBY_OPTIONS};
use super::s3::{S3Location, S3Settings};
use super::ConfigFile;
use super::StandbyConfig;
use crate::compress::Codec;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupConfig {
    pub source: PathBuf,
    pub pgdata: PathBuf,
    /// The local server's port and socket directory; `None`: from postmaster.pid.
    pub port: Option<u16>,
    pub socket_dir: Option<PathBuf>,
    pub db_user: Option<String>,
    pub archivedir: PathBuf,
    pub backup_dir: BackupDir,
    pub compression: Codec,
    pub compression_level: Option<i32>,
    pub keep_backups: Option<u64>,
    pub recovery_window_days: Option<u64>,
    pub backup_wal_timeout: Duration,
    pub backup_type: BackupType,
    /// While it exists, expire removes no WAL (cleanup's pause file).
    pub cleanup_pause_file: Option<PathBuf>,
    pub pitrkit_logfile: Option<String>,
    /// Searched first for PostgreSQL programs (pg_ctl for `recover --start`).
    pub includepath: Vec<PathBuf>,
    pub notify: crate::notify::Notifier,
    pub debug: bool,
    /// Read from a standby.ini: its settings (the master, for pg_switch_wal()).
    pub standby: Option<Box<StandbyConfig>>,
}

/// Where the repository is: a directory, or an object storage prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupDir {
    Dir(PathBuf),
    S3 { loc: S3Location, multipart: Multipart },
}

impl std::fmt::Display for BackupDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupDir::Dir(d) => write!(f, "{}", d.display()),
            BackupDir::S3 { loc, .. } => write!(f, "{}", loc.url),
        }
    }
}

/// How a backup uploads large files to object storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Multipart {
    /// Bytes per part (all but the last); S3 needs at least 5 MiB.
    pub part_size: usize,
    /// Parts in flight at once.
    pub concurrency: usize,
}

impl ConfigFile for BackupConfig {
    /// A backup.ini; a file with any key only a standby.ini has is read as
    /// one, decided by the keys present (never by which reading fails:
    /// unknown keys only warn, and `port` means the master's in a
    /// standby.ini but this cluster's in a backup.ini).
    fn read(file: &IniFile) -> Result<(Self, Vec<ConfigWarning>), ConfigError> {
        let standby_file = file
            .entries
            .keys()
            .any(|k| defines(STANDBY_OPTIONS, k) && !defines(BACKUP_OPTIONS, k));
        if standby_file {
            let (sb, warnings) = StandbyConfig::read(file)?;
            let o = Options::new(file, STANDBY_OPTIONS)?;
            return Ok((Self::from_standby(file, &o, sb)?, warnings));
        }
        let o = Options::new(file, BACKUP_OPTIONS)?;
        let cfg = Self::from_backup_ini(file, &o)?;
        Ok((cfg, o.into_warnings()))
    }
}

impl BackupConfig {
    fn from_backup_ini(file: &IniFile, o: &Options) -> Result<Self, ConfigError> {
        let (compression, compression_level) = codec(o)?;
        Ok(BackupConfig {
            source: file.path.clone(),
            pgdata: required(o, "pgdata", "the data directory of the cluster to back up")?,
            // The table keeps it within 1..=65535.
            port: o.opt_count("port")?.map(|p| p as u16),
            socket_dir: o.opt_path("socket_dir")?,
            db_user: o.opt_user("db_user")?,
            archivedir: required(o, "archivedir", "the WAL archive this cluster's WAL reaches")?,
            backup_dir: backup_dir(o)?,
            compression,
            compression_level,
            keep_backups: o.opt_count("keep_backups")?,
            recovery_window_days: o.opt_count("recovery_window")?,
            backup_wal_timeout: o.seconds("backup_wal_timeout")?,
            backup_type: o.choice("backup_type")?,
            cleanup_pause_file: o.opt_path("cleanup_pause_file")?,
            pitrkit_logfile: o.opt_text("pitrkit_logfile"),
            includepath: o.paths("includepath")?,
            notify: o.notifier()?,
            debug: o.bool("debug")?,
            standby: None,
        })
    }

    fn from_standby(file: &IniFile, o: &Options, sb: StandbyConfig) -> Result<Self, ConfigError> {
        let (compression, compression_level) = codec(o)?;
        Ok(BackupConfig {
            source: file.path.clone(),
            pgdata: sb.required_pgdata()?,
            port: None,
            socket_dir: None,
            db_user: None,
            archivedir: sb.required_archivedir("the WAL archive a backup copies its WAL from")?,
            backup_dir: backup_dir(o)?,
            compression,
            compression_level,
            keep_backups: o.opt_count("keep_backups")?,
            recovery_window_days: o.opt_count("recovery_window")?,
            backup_wal_timeout: o.seconds("backup_wal_timeout")?,
            backup_type: o.choice("backup_type")?,
            cleanup_pause_file: sb.cleanup_pause_file.clone(),
            pitrkit_logfile: sb.pitrkit_logfile.clone(),
            includepath: sb.includepath.clone(),
            notify: sb.notify.clone(),
            debug: sb.debug,
            standby: Some(Box::new(sb)),
        })
    }
}

fn required(o: &Options, key: &str, what: &str) -> Result<PathBuf, ConfigError> {
    o.opt_path(key)?.ok_or_else(|| {
        ConfigError::new(&o.file().path, format!("'{key}' is not set"))
            .key(key)
            .hint(format!("add '{key}: /absolute/path' ({what})"))
    })
}

/// `backup_dir`: a directory, or an s3:// prefix with the `s3_*` keys.
fn backup_dir(o: &Options) -> Result<BackupDir, ConfigError> {
    let what = "the backup repository";
    match o.opt_location("backup_dir")? {
        None => Err(ConfigError::new(&o.file().path, "'backup_dir' is not set")
            .key("backup_dir")
            .hint(format!(
                "add 'backup_dir: /absolute/path' or 'backup_dir: s3://bucket/prefix' ({what})"
            ))),
        Some(Location::Dir(d)) => Ok(BackupDir::Dir(d)),
        Some(Location::S3(url)) => {
            let settings = S3Settings::from_options(o)?;
            if let Some(w) = settings.http_warning() {
                o.warn(ConfigWarning::new(&o.file().path, w));
            }
            // The table keeps both within range (5..=5120 MiB, 1..=64).
            let multipart = Multipart {
                part_size: o.count("s3_part_size")? as usize * MIB,
                concurrency: o.count("s3_upload_concurrency")? as usize,
            };
            Ok(BackupDir::S3 {
                loc: S3Location { url, settings },
                multipart,
            })
        }
    }
}

const MIB: usize = 1 << 20;

/// `compression` and `compression_level`, checked together.
fn codec(o: &Options) -> Result<(Codec, Option<i32>), ConfigError> {
    let codec: Codec = o.choice("compression")?;
    // The table caps it at i32::MAX.
    let level = o.opt_count("compression_level")?.map(|l| l as i32);
    codec
        .check_level(level)
        .map_err(|e| o.file().error("compression_level", format!("compression_level: {e}")))?;
    Ok((codec, level))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<BackupConfig, ConfigError> {
        BackupConfig::from_ini(&IniFile::parse(std::path::Path::new("b.ini"), text).unwrap())
    }

    #[test]
    fn a_backup_ini_and_a_standby_ini_both_configure_a_backup() {
        let b = load("pgdata: /pg\narchivedir: /arch\nbackup_dir: /bk\nport: 5433\ncompression: zstd\n").unwrap();
        assert_eq!(
            (b.port, b.compression, b.standby.is_none()),
            (Some(5433), Codec::Zstd, true)
        );
        assert_eq!(b.backup_wal_timeout, Duration::from_secs(600));
        // In a standby.ini, port is the master's: the local server comes from postmaster.pid.
        let s = load(
            "pgdata: /pg\narchivedir: /arch\nbackup_dir: /bk\nport: 5433\nmaster_public_ip: db1\nkeep_backups: 2\n",
        )
        .unwrap();
        assert_eq!((s.port, s.keep_backups), (None, Some(2)));
        assert_eq!(s.standby.unwrap().master_port, 5433);
        let e = load("pgdata: /pg\narchivedir: /arch\n").unwrap_err();
        assert!(e.to_string().contains("'backup_dir' is not set"), "{e}");
        let e = load("pgdata: /pg\narchivedir: /arch\nbackup_dir: /bk\ncompression: lz4\ncompression_level: 3\n")
            .unwrap_err();
        assert!(e.to_string().contains("lz4 has no levels"), "{e}");
        let e = load("pgdata: /pg\narchivedir: /arch\nbackup_dir: /bk\nbackupdir: /x\n").unwrap_err();
        assert!(e.to_string().contains("did you mean 'backup_dir'"), "{e}");
    }

    #[test]
    fn backup_dir_may_be_an_s3_prefix_with_checked_part_sizes() {
        let b =
            load("pgdata: /pg\narchivedir: /arch\nbackup_dir: s3://pg-backups/db1/\ns3_region: eu-west-1\n").unwrap();
        let BackupDir::S3 { loc, multipart } = &b.backup_dir else {
            panic!("{:?}", b.backup_dir)
        };
        assert_eq!(b.backup_dir.to_string(), "s3://pg-backups/db1");
        assert_eq!(loc.settings.region.as_deref(), Some("eu-west-1"));
        assert_eq!((multipart.part_size, multipart.concurrency), (16 << 20, 4));
        let b = load(
            "pgdata: /pg\narchivedir: /arch\nbackup_dir: s3://pg-backups\ns3_part_size: 5\ns3_upload_concurrency: 8\n",
        )
        .unwrap();
        assert!(matches!(
            b.backup_dir,
            BackupDir::S3 {
                multipart: Multipart {
                    part_size: 5242880,
                    concurrency: 8
                },
                ..
            }
        ));
        // S3 refuses parts under 5 MiB (but the last): refused before anything is sent.
        let e = load("pgdata: /pg\narchivedir: /arch\nbackup_dir: s3://pg-backups\ns3_part_size: 4\n").unwrap_err();
        assert!(e.to_string().contains("s3_part_size"), "{e}");
        let e = load("pgdata: /pg\narchivedir: /arch\nbackup_dir: s3://Bad_Bucket/x\n").unwrap_err();
        assert!(e.to_string().contains("bucket name"), "{e}");
        assert!(matches!(
            load("pgdata: /pg\narchivedir: /arch\nbackup_dir: /bk\n")
                .unwrap()
                .backup_dir,
            BackupDir::Dir(_)
        ));
    }
}
