//! The archiver's typed configuration (`cmd_archiver.ini`).

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use super::choices::{QueueRunner, ShipMode};
use super::choices::{SlaveCodec, State};
use super::ini::{ConfigError, ConfigWarning, IniFile};
use super::options::{Options, ARCHIVER_OPTIONS};
use super::remote::{RsyncSettings, SshSettings};
use super::rsync_flags::{self, Program};
use super::s3::{S3Location, S3Settings};
use super::ConfigFile;
use crate::compress::Codec;

/// Shipping to slaves: `slaves` with `l_archivedir` and `r_archivedir`, all
/// set together (the loader refuses half of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipping {
    /// `l_archivedir`: the local queue root, one queue directory per slave.
    pub queue_root: PathBuf,
    /// `r_archivedir`: the directory on every slave that receives WAL.
    pub remote_dir: PathBuf,
    /// Never empty.
    pub slaves: Vec<String>,
}

impl Shipping {
    /// The queue directory of one slave.
    pub fn queue_dir(&self, slave: &str) -> PathBuf {
        self.queue_root.join(slave)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiverConfig {
    pub source: PathBuf,
    pub online: bool,
    pub pgdata: Option<PathBuf>,
    /// `None` when no slaves are configured.
    pub shipping: Option<Shipping>,
    pub local_archivedirs: Vec<PathBuf>,
    /// `archive_urls`: object storage prefixes that get a durable copy of every file.
    pub archive_urls: Vec<S3Location>,
    /// `-I` refuses a local_archivedirs entry that is not on a mounted filesystem.
    pub require_mount: bool,
    pub ship_mode: ShipMode,
    pub queue_user: Option<String>,
    pub queue_wait: Duration,
    /// Whether an archive call that leaves files queued starts the queue runner.
    pub queue_runner: QueueRunner,
    pub max_queue_workers: usize,
    pub queue_critical_depth: usize,
    pub lock_timeout: Duration,
    pub ssh: SshSettings,
    pub rsync: RsyncSettings,
    pub notify: crate::notify::Notifier,
    pub debug: bool,
    pub logfile: Option<String>,
    /// Codec for local_archivedirs, and for what is shipped to slaves.
    pub local_codec: Codec,
    pub slave_codec: Codec,
    pub compression_level: Option<i32>,
    /// Other .ready segments an archive call takes along (slaves only).
    pub lookahead: usize,
}

impl ConfigFile for ArchiverConfig {
    fn read(file: &IniFile) -> Result<(Self, Vec<ConfigWarning>), ConfigError> {
        let o = Options::new(file, ARCHIVER_OPTIONS)?;
        let (local_codec, slave_codec, compression_level) = codecs(&o)?;
        let rsync_flags = rsync_flags::judge(&o, Program::Archiver)?;
        let mut ssh = SshSettings::from_options(&o)?;
        ssh.port = rsync_flags.ssh_port(&o, ssh.port)?;
        let mut cfg = ArchiverConfig {
            source: file.path.clone(),
            online: o.choice::<State>("state")? == State::Online,
            pgdata: o.opt_path("pgdata")?,
            shipping: None,
            local_archivedirs: o.paths("local_archivedirs")?,
            archive_urls: s3_locations(&o)?,
            require_mount: o.bool("require_mount")?,
            ship_mode: o.choice("ship_mode")?,
            queue_user: o.opt_user("queue_user")?,
            queue_wait: o.seconds("queue_wait")?,
            queue_runner: o.choice("queue_runner")?,
            max_queue_workers: o.count("max_queue_workers")? as usize,
            queue_critical_depth: o.count("queue_critical_depth")? as usize,
            lock_timeout: o.seconds("lock_timeout")?,
            ssh,
            rsync: RsyncSettings {
                program: o.opt_path("rsync_bin")?,
                timeout: rsync_flags.timeout(&o)?,
                flags: rsync_flags.pass,
                fsync: o.bool("remote_fsync")?,
                includepath: o.paths("includepath")?,
            },
            notify: o.notifier()?,
            debug: o.bool("debug")?,
            logfile: o.opt_text("logfile"),
            local_codec,
            slave_codec,
            compression_level,
            lookahead: o.count("lookahead")? as usize,
        };
        let (l, r, slaves) = (
            o.opt_path("l_archivedir")?,
            o.opt_path("r_archivedir")?,
            o.hosts("slaves")?,
        );
        cfg.check(&o, l.as_deref(), &slaves)?;
        if let (Some(queue_root), Some(remote_dir), false) = (l, r, slaves.is_empty()) {
            cfg.shipping = Some(Shipping {
                queue_root,
                remote_dir,
                slaves,
            });
        }
        Ok((cfg, o.into_warnings()))
    }
}

/// `archive_urls` with the `s3_*` settings, refused for a storage class WAL
/// cannot live in.
fn s3_locations(o: &Options) -> Result<Vec<S3Location>, ConfigError> {
    let urls = o.s3_urls("archive_urls")?;
    if urls.is_empty() {
        return Ok(Vec::new());
    }
    let settings = S3Settings::from_options(o)?;
    settings.check_for_wal(o)?;
    if let Some(w) = settings.http_warning() {
        o.warn(ConfigWarning::new(&o.file().path, w));
    }
    Ok(urls
        .into_iter()
        .map(|url| S3Location {
            url,
            settings: settings.clone(),
        })
        .collect())
}

impl ArchiverConfig {
    /// Cross-key rules.
    fn check(&self, o: &Options, l_archivedir: Option<&Path>, slaves: &[String]) -> Result<(), ConfigError> {
        let file = &o.file().path;
        if !slaves.is_empty() {
            for key in ["l_archivedir", "r_archivedir"] {
                if !o.is_set(key) {
                    return Err(o
                        .file()
                        .error("slaves", format!("'slaves' is set but '{key}' is not"))
                        .hint(format!(
                            "add '{key}: /absolute/path' (the {})",
                            if key == "l_archivedir" {
                                "local queue directory on this master"
                            } else {
                                "directory on each slave that receives WAL"
                            }
                        )));
                }
            }
        }
        if slaves.is_empty() && self.local_archivedirs.is_empty() && self.archive_urls.is_empty() {
            return Err(
                ConfigError::new(file, "no destination configured: WAL would be archived nowhere").hint(
                    "set 'slaves' (with l_archivedir and r_archivedir), 'local_archivedirs' and/or 'archive_urls'",
                ),
            );
        }
        if self.ship_mode == ShipMode::Sync && !slaves.is_empty() && !self.rsync.fsync {
            return Err(o
                .file()
                .error(
                    "remote_fsync",
                    "ship_mode: sync with remote_fsync: off: sync mode promises PostgreSQL that every slave has the file durably, which only the remote sync guarantees",
                )
                .hint("set remote_fsync: on, or ship_mode: async if losing the newest WAL on a slave crash is acceptable"));
        }
        if let Some(l) = l_archivedir {
            // Compared by components: "/q/" and "/q/./sb" are "/q" and "/q/sb".
            let norm = |p: &Path| p.components().collect::<PathBuf>();
            let l = norm(l);
            for d in &self.local_archivedirs {
                let d = norm(d);
                let why = if d == l {
                    Some("it is l_archivedir itself; the queue root cannot also be an archive".to_string())
                } else {
                    slaves.iter().find(|s| d.starts_with(l.join(s))).map(|s| {
                        format!(
                            "it is inside the queue of slave {s} ({}): shipping would send the archive's files to the slave and remove them",
                            l.join(s).display()
                        )
                    })
                };
                if let Some(why) = why {
                    return Err(o
                        .file()
                        .error(
                            "local_archivedirs",
                            format!("local_archivedirs entry {}: {why}", d.display()),
                        )
                        .hint("give local_archivedirs a directory of its own, outside l_archivedir's queues"));
                }
            }
        }
        Ok(())
    }

    /// The configured slaves (none without shipping).
    pub fn slaves(&self) -> &[String] {
        self.shipping.as_ref().map_or(&[], |s| &s.slaves)
    }
}

/// `compression`, `slave_compression` and `compression_level`, checked together.
fn codecs(o: &Options) -> Result<(Codec, Codec, Option<i32>), ConfigError> {
    let local: Codec = o.choice("compression")?;
    let slave = match o.choice("slave_compression")? {
        SlaveCodec::Same => local,
        SlaveCodec::Codec(c) => c,
    };
    // The table caps it at i32::MAX.
    let level = o.opt_count("compression_level")?.map(|l| l as i32);
    let leveled: Vec<Codec> = [local, slave]
        .into_iter()
        .filter(|c| c.default_level().is_some())
        .collect();
    if level.is_some() && leveled.is_empty() {
        return Err(o
            .file()
            .error(
                "compression_level",
                "compression_level is set, but neither compression nor slave_compression takes a level",
            )
            .hint("use compression: zstd or gzip, or remove compression_level"));
    }
    for codec in leveled {
        codec
            .check_level(level)
            .map_err(|e| o.file().error("compression_level", format!("compression_level: {e}")))?;
    }
    Ok((local, slave, level))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<ArchiverConfig, ConfigError> {
        ArchiverConfig::from_ini(&IniFile::parse(Path::new("cmd_archiver.ini"), text).unwrap())
    }

    /// The sample from the pitrtools how-to, unchanged.
    const PITRTOOLS_13: &str = "\
[DEFAULT]
; online or offline
state: online

; The base database directory

pgdata: /var/lib/postgresql/8.4/main

; where to remotely copy archives
r_archivedir: /var/lib/postgresql/archive

; where to locally copy archives
l_archivedir: /var/lib/postgresql/archive

; where is ssh and what flags to add
ssh: /usr/bin/ssh

; where is rsync
rsync_bin: /usr/bin/rsync

; extra rsync flags
rsync_flags: -z

; option 2 or 3, if running RHEL5 or similar it is likely 2
rsync_version = 3

; IP of slave
slaves: bitarena-clone

; the user for the ssh connection to a standby
user: postgres

; if rsync can't connect in 10 seconds error
ssh_timeout: 10

; command to process in ok
notify_ok: echo OK

; command to process in warning
notify_warning:  echo WARNING

; command to process in critical
notify_critical: echo CRITICAL

; if you want to debug on/off only
debug: on

; if you want ssh debug (warning noisy)
ssh_debug: off
includepath: /usr/local/bin
queue_user: postgres
queue_wait: 10
max_queue_workers: 2
";

    #[test]
    fn reads_a_pitrtools_13_file_unchanged() {
        let c = load(PITRTOOLS_13).unwrap();
        assert!(c.online);
        assert_eq!(c.slaves(), ["bitarena-clone"]);
        assert_eq!(
            c.shipping.as_ref().map(|s| s.remote_dir.as_path()),
            Some(Path::new("/var/lib/postgresql/archive"))
        );
        assert_eq!(c.rsync.flags, vec!["-z"]);
        assert_eq!(c.ssh.user.as_deref(), Some("postgres"));
        assert_eq!(c.ssh.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.notify.warning.as_deref(), Some("echo WARNING"));
        assert_eq!(c.ship_mode, ShipMode::Async);
        assert_eq!(c.max_queue_workers, 2);
        assert!(c.debug);
    }

    #[test]
    fn cross_key_rules() {
        let e = load("slaves: a\nl_archivedir: /q\n").unwrap_err();
        assert!(e.to_string().contains("'r_archivedir' is not"), "{e}");
        let e = load("state: online\n").unwrap_err();
        assert!(e.to_string().contains("no destination"), "{e}");
        assert!(load("local_archivedirs: /a, /b\n").is_ok());
        let e = load("state: sleeping\nlocal_archivedirs: /a\n").unwrap_err();
        assert_eq!(e.line, Some(1));
        assert!(e.message.contains("online, offline"), "{e}");
    }

    #[test]
    fn local_archivedirs_never_inside_a_slaves_queue() {
        let base = "slaves: sb, sc\nl_archivedir: /q\nr_archivedir: /r\n";
        let e = load(&format!("{base}local_archivedirs: /a, /q/\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("local_archivedirs entry /q: it is l_archivedir itself"),
            "{e}"
        );
        let e = load(&format!("{base}local_archivedirs: /q/./sc/arch\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("local_archivedirs entry /q/sc/arch: it is inside the queue of slave sc (/q/sc)"),
            "{e}"
        );
        assert!(e.to_string().contains("outside l_archivedir's queues"), "{e}");
        // Beside the queues, or a name that merely starts like one: fine.
        assert!(load(&format!("{base}local_archivedirs: /q/archive, /q/sbx, /qa\n")).is_ok());
    }

    #[test]
    fn rsync_flags_are_judged_and_mapped() {
        let c =
            load("local_archivedirs: /a\nrsync_flags: -avz --timeout=30 -e 'ssh -p 2222' --bwlimit=5000\n").unwrap();
        assert_eq!(c.rsync.flags, ["-z", "--bwlimit=5000"]);
        assert_eq!(c.rsync.timeout, Duration::from_secs(30));
        assert_eq!(c.ssh.port, Some(2222));
        let e = load("local_archivedirs: /a\nrsync_flags: -z --delete\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("'--delete' is refused"), "{e}");
        // Without the flags, the keys.
        let c = load("local_archivedirs: /a\nssh_port: 22\n").unwrap();
        assert_eq!((c.rsync.timeout, c.ssh.port), (Duration::from_secs(120), Some(22)));
    }

    #[test]
    fn time_limits_and_hooks_are_checked() {
        let e = load("local_archivedirs: /a\nrsync_timeout: 0\n").unwrap_err();
        assert!(e.message.contains("rsync_timeout must be at least 1"), "{e}");
        let e = load("local_archivedirs: /a\nnotify_timeout: 0\n").unwrap_err();
        assert!(e.message.contains("notify_timeout must be at least 1"), "{e}");
        for bad in ["echo x;", "logger -t pg &", "mail dba |"] {
            let e = load(&format!("local_archivedirs: /a\nnotify_warning: {bad}\n")).unwrap_err();
            assert!(
                e.message.contains("notify_warning") && e.message.contains("appends the message"),
                "{bad}: {e}"
            );
        }
        assert!(load("local_archivedirs: /a\nnotify_warning: logger -t pitrkit\n").is_ok());
    }

    #[test]
    fn sync_mode_requires_remote_fsync() {
        let base = "slaves: sb\nl_archivedir: /q\nr_archivedir: /r\nship_mode: sync\n";
        let e = load(&format!("{base}remote_fsync: off\n")).unwrap_err();
        assert!(
            e.message.contains("remote_fsync: off") && e.message.contains("durably"),
            "{e}"
        );
        assert!(load(base).unwrap().rsync.fsync);
        // rsync_version: 2 no longer switches durability off.
        assert!(load(&format!("{base}rsync_version: 2\n")).unwrap().rsync.fsync);
        assert!(
            !load("slaves: sb\nl_archivedir: /q\nr_archivedir: /r\nremote_fsync: off\n")
                .unwrap()
                .rsync
                .fsync
        );
    }
}
