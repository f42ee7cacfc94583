//! Every configuration key, defined once: name, type, default and meaning.
//!
//! The typed configs (`ArchiverConfig`, `StandbyConfig`) read values only
//! through [`Options`], which looks the definition up here, so a key's type
//! and default cannot drift between the parser, the docs and the code.

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

use super::choices::{BackupType, HostKeyChecking, QueueRunner, ShipMode, SlaveCodec, SqlViaSsh, SslMode, State};
use super::ini::{ConfigError, ConfigWarning, IniFile};
use super::s3::{is_url, S3Url};
use super::s3::{Sse, StorageClass as S3StorageClass};
use super::validate::{self, Refusal};
use crate::compress::Codec;

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Free text (kept verbatim).
    Text,
    /// An absolute path, checked with [`validate::check_path`].
    Path,
    /// Comma-separated absolute paths.
    Paths,
    /// on/off, yes/no, true/false, 1/0.
    Bool,
    /// A whole number.
    Count,
    /// A whole number of seconds.
    Seconds,
    /// One of a fixed set of words: the names of a [`Choice`] enum, so the
    /// table, the parser and the code share one list.
    OneOf(fn() -> Vec<&'static str>),
    /// Comma-separated host names.
    Hosts,
    /// A user name.
    User,
    /// A command line run through the shell (notify hooks only).
    Command,
    /// White-space separated command-line options for rsync or ssh.
    Flags,
    /// White-space separated words free of shell metacharacters.
    Words,
    /// Comma- or space-separated `s3://bucket/prefix` URLs.
    Urls,
    /// An absolute path, or an `s3://bucket/prefix` URL.
    PathOrUrl,
}

/// The values a number may take. Outside them it is refused, or, for the
/// soft caps pitrkit has always applied, silently brought inside (`clamp`).
#[derive(Clone, Copy, Debug)]
pub struct Range {
    pub min: u64,
    pub max: u64,
    pub clamp: bool,
}

#[derive(Debug)]
pub struct OptDef {
    pub name: &'static str,
    pub kind: Kind,
    /// The value an absent or empty line means. Keys without one are
    /// optional (unset) unless a caller requires them.
    pub default: Option<&'static str>,
    pub range: Option<Range>,
    /// Older names read as this key.
    pub aliases: &'static [&'static str],
    pub help: &'static str,
}

const fn opt(name: &'static str, kind: Kind, default: Option<&'static str>, help: &'static str) -> OptDef {
    OptDef {
        name,
        kind,
        default,
        range: None,
        aliases: &[],
        help,
    }
}

impl OptDef {
    /// Values outside `min..=max` are refused.
    const fn range(self, min: u64, max: u64) -> Self {
        OptDef {
            range: Some(Range { min, max, clamp: false }),
            ..self
        }
    }

    /// Values outside `min..=max` are brought inside.
    const fn clamp(self, min: u64, max: u64) -> Self {
        OptDef {
            range: Some(Range { min, max, clamp: true }),
            ..self
        }
    }

    const fn aliases(self, aliases: &'static [&'static str]) -> Self {
        OptDef { aliases, ..self }
    }

    /// The names a choice key accepts.
    pub fn choices(&self) -> Option<Vec<&'static str>> {
        match self.kind {
            OneOf(names) => Some(names()),
            _ => None,
        }
    }
}

/// A configuration word that names one of a fixed set of values.
pub trait Choice: Copy + 'static {
    fn all() -> Vec<Self>;
    fn name(self) -> &'static str;
}

/// The names of a [`Choice`], for the key table.
pub fn names<T: Choice>() -> Vec<&'static str> {
    T::all().into_iter().map(T::name).collect()
}

const NO_MAX: u64 = u64::MAX;
const PORT: u64 = 65535;

use Kind::*;

/// Keys both programs understand, with the same meaning.
#[rustfmt::skip]
pub static COMMON_OPTIONS: &[OptDef] = &[
    opt("includepath", Paths, None, "extra directories (':' or ',' separated) searched for rsync, ssh and PostgreSQL programs before PATH"),
    opt("user", User, None, "ssh user on the other host (default: ssh's own choice, usually the current user)"),
    opt("ssh_timeout", Seconds, Some("10"), "seconds to wait for an ssh connection (ssh ConnectTimeout)"),
    opt("ssh_debug", Bool, Some("off"), "run ssh with -v"),
    opt("ssh", Text, None, "legacy: path of the ssh program, optionally followed by ssh options (a -p N among them is taken as ssh_port)"),
    opt("ssh_port", Count, None, "ssh port on the other host (default: ssh's own, usually 22 or from ~/.ssh/config)").range(1, PORT),
    opt("ssh_identity", Path, None, "private key file for ssh (-i)"),
    opt("ssh_control_persist", Seconds, Some("60"), "reuse one ssh connection per host for this many idle seconds (OpenSSH ControlPersist); 0 turns it off"),
    opt("ssh_options", Words, None, "extra ssh -o options as Key=Value words, e.g. 'UserKnownHostsFile=/etc/pitrkit/known_hosts'"),
    opt("strict_host_key_checking", OneOf(names::<HostKeyChecking>), Some("accept-new"), "ssh StrictHostKeyChecking; 'no' is insecure"),
    opt("rsync_flags", Flags, None, "extra rsync options, e.g. -z: options that change how bytes travel are handed to rsync; -a, -v, -P and the like are accepted and have no effect; --timeout=N and -e 'ssh -p N' are taken as rsync_timeout and ssh_port; options that could lose or half-write WAL (--delete, --inplace, ...) are refused"),
    opt("notify_ok", Command, None, "command run when things recover; the message is appended as one argument"),
    opt("notify_warning", Command, None, "command run on a warning; the message is appended as one argument"),
    opt("notify_critical", Command, None, "command run on a critical problem; the message is appended as one argument"),
    opt("notify_timeout", Seconds, Some("30"), "seconds a notify hook may run before it is killed (at least 1)").range(1, NO_MAX),
    opt("debug", Bool, Some("off"), "log debug messages and per-step timings"),
];

/// Compression, for archived WAL (archiver) and backup sets (backup).
#[rustfmt::skip]
pub static COMPRESSION_OPTIONS: &[OptDef] = &[
    opt("compression", OneOf(names::<Codec>), Some("none"), "compress in process: archived WAL (archiver; file names get .lz4, .zst or .gz, restore reads them all) or each file of a backup set (backup)"),
    opt("compression_level", Count, None, "compression level (zstd 1-22, default 1; gzip 1-9, default 6; lz4 has none)").clamp(0, i32::MAX as u64),
];

/// The archiver's keys: pitrtools `cmd_archiver.ini` plus pitrkit's own.
pub static ARCHIVER_OPTIONS: &[&[OptDef]] = &[COMMON_OPTIONS, COMPRESSION_OPTIONS, ARCHIVER_OWN, S3_OPTIONS];

/// Object storage (any `s3://` location). Credentials are never keys: they
/// come from AWS_* variables, the shared credentials file, or `s3_credentials_file`.
#[rustfmt::skip]
pub static S3_OPTIONS: &[OptDef] = &[
    opt("s3_endpoint", Text, None, "S3 endpoint URL for a non-AWS store or a region endpoint, e.g. https://minio.example:9000 (default: AWS for s3_region)"),
    opt("s3_region", Text, None, "S3 region (default: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1)"),
    opt("s3_path_style", Bool, Some("off"), "on: path-style requests (endpoint/bucket/key), as MinIO and most self-hosted stores need; off: virtual-hosted style (bucket.endpoint/key)"),
    opt("s3_allow_http", Bool, Some("off"), "on: allow a plain http:// s3_endpoint (test servers only; warns: WAL and requests travel unencrypted)"),
    opt("s3_storage_class", OneOf(names::<S3StorageClass>), None, "storage class of the objects written (default: the bucket's, STANDARD); glacier and deep_archive are refused for WAL, which restore must read at once"),
    opt("s3_sse", OneOf(names::<Sse>), Some("default"), "server-side encryption: default (the bucket's), aes256 (SSE-S3) or aws:kms (SSE-KMS, with s3_sse_kms_key_id)"),
    opt("s3_sse_kms_key_id", Text, None, "KMS key id or ARN for s3_sse: aws:kms (default: the account's aws/s3 key)"),
    opt("s3_credentials_file", Path, None, "AWS shared-credentials file ([default] with aws_access_key_id, aws_secret_access_key, optionally aws_session_token), refused unless mode 0600; default: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, else ~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE)"),
    opt("s3_timeout", Seconds, Some("30"), "seconds one S3 request may take; failed requests (5xx, timeouts) are retried a few times with backoff within about three times this").range(1, NO_MAX),
];

/// Backup keys that mean the same in a `backup.ini` and a `standby.ini`
/// (a standby backing itself up with its existing file).
#[rustfmt::skip]
pub static BACKUP_SHARED: &[OptDef] = &[
    opt("backup_dir", PathOrUrl, None, "backup repository: a local or NFS directory, or an s3://bucket/prefix (see the s3_* keys); one directory (prefix) per backup set, named by its ID (UTC time, e.g. 20261130T101500Z)"),
    opt("s3_part_size", Count, Some("16"), "backups to s3://: MiB per part of a multipart upload; files larger than this are uploaded in parts (S3 needs at least 5 MiB per part but the last, and at most 10000 parts: 16 MiB parts hold files up to 156 GiB)").range(5, 5120),
    opt("s3_upload_concurrency", Count, Some("4"), "backups to s3://: parts of one file uploaded at the same time (memory: this many times s3_part_size)").range(1, 64),
    opt("keep_backups", Count, None, "retention: keep at least this many complete backups (with recovery_window: keep what either asks for)").range(1, NO_MAX),
    opt("recovery_window", Count, None, "retention: keep the backups needed to recover to any time in the last this many days").range(1, NO_MAX),
    opt("backup_wal_timeout", Seconds, Some("600"), "seconds a backup waits for its last WAL segment to reach archivedir"),
    opt("backup_type", OneOf(names::<BackupType>), Some("full"), "full, or incremental: files unchanged (size and mtime) since the previous complete backup are referenced, not stored again (backup --incremental says the same)"),
    opt("pitrkit_logfile", Text, None, "also write pitrkit's own log here; ^Y ^m ^d ^H ^M ^S expand to the date"),
    opt("cleanup_pause_file", Path, None, "while this file exists, cleanup and backup --expire remove no WAL from the archive (expire still removes backup sets)"),
];

/// `backup.ini`: the cluster on this host, its archive, the repository.
pub static BACKUP_OPTIONS: &[&[OptDef]] = &[
    COMMON_OPTIONS,
    COMPRESSION_OPTIONS,
    BACKUP_SHARED,
    BACKUP_OWN,
    S3_OPTIONS,
];

#[rustfmt::skip]
static BACKUP_OWN: &[OptDef] = &[
    opt("pgdata", Path, None, "data directory of the cluster to back up (a master or a standby, on this host)"),
    opt("port", Count, None, "port of that cluster (default: line 4 of its postmaster.pid)").range(1, PORT),
    opt("socket_dir", Path, None, "unix socket directory of that cluster (default: line 5 of its postmaster.pid)"),
    opt("db_user", User, None, "role the backup session logs in as (default: the OS user, as psql does); needs pg_backup_start/stop rights"),
    opt("archivedir", Path, None, "the WAL archive this cluster's WAL reaches (a standby's archivedir or the master's local archive)"),
];

#[rustfmt::skip]
static ARCHIVER_OWN: &[OptDef] = &[
    opt("slave_compression", OneOf(names::<SlaveCodec>), Some("same"), "compression for what is shipped to slaves; 'same' uses 'compression'"),
    opt("lookahead", Count, Some("16"), "with slaves: an archive call also archives up to this many other .ready segments and ships them in one rsync; 0 turns it off").clamp(0, 1024),
    opt("logfile", Text, None, "also log to this file; ^Y ^m ^d ^H ^M ^S expand to the date (e.g. /var/log/pitrkit/archiver-^Y-^m-^d.log)"),
    opt("state", OneOf(names::<State>), Some("online"), "offline makes every archive call fail so PostgreSQL keeps its WAL (maintenance switch)"),
    opt("pgdata", Path, None, "the master's data directory (relative %p paths are resolved against it)"),
    opt("r_archivedir", Path, None, "directory on each slave that receives WAL"),
    opt("l_archivedir", Path, None, "local queue root: one durable copy, hard-linked into one queue directory per slave"),
    opt("slaves", Hosts, None, "comma-separated slave hosts; also the names of their queue directories"),
    opt("rsync_bin", Path, None, "legacy: path of the rsync program"),
    opt("queue_user", User, None, "OS user that must run the archiver (checked, not switched to)"),
    opt("queue_wait", Seconds, Some("30"), "after a failed delivery, seconds before an archive call or the queue runner tries that slave again (--flush always tries); also how often the queue runner looks at its queues"),
    opt("queue_runner", OneOf(names::<QueueRunner>), Some("auto"), "auto: an async archive call that leaves files queued starts a detached queue runner (pitrkit queue, pitrtools' cmd_queue) that ships every queue_wait seconds until every queue is empty; off: never (run the queue service, or --flush from cron)"),
    opt("max_queue_workers", Count, Some("4"), "slaves shipped to in parallel (at least 1: with 0 nothing would ever be shipped)").range(1, NO_MAX),
    opt("local_archivedirs", Paths, None, "comma-separated local or NFS directories that get a durable copy of every file"),
    opt("archive_urls", Urls, None, "comma- or space-separated s3://bucket/prefix locations that get a durable copy of every file (acknowledged PUT, never an overwrite), like local_archivedirs; see the s3_* keys"),
    opt("require_mount", Bool, Some("off"), "on: -I refuses a local_archivedirs entry unless it, or a directory above it, is a mounted filesystem (a share that is not mounted is a plain directory on the root filesystem); directories /etc/fstab lists are checked either way"),
    opt("ship_mode", OneOf(names::<ShipMode>), Some("async"), "async: succeed once spooled locally (pitrtools); sync: succeed only when every destination has the file (OmniPITR)"),
    opt("queue_critical_depth", Count, Some("64"), "queued files per slave above which a critical notification is sent"),
    opt("rsync_timeout", Seconds, Some("120"), "rsync --timeout: seconds without I/O before a transfer is abandoned; also the limit for each remote command (sync, checks) once ssh is connected; at least 1").range(1, NO_MAX),
    opt("remote_fsync", Bool, Some("on"), "make shipped files durable on the slave (one remote `sync -- <files> <dir>` after each push, coreutils 8.24+) before they leave the queue; ship_mode: sync requires it"),
    opt("lock_timeout", Seconds, Some("300"), "seconds to wait for another pitrkit process shipping to the same slave"),
];

/// The standby's keys: pitrtools `cmd_standby.ini` plus pitrkit's own.
pub static STANDBY_OPTIONS: &[&[OptDef]] = &[
    COMMON_OPTIONS,
    STANDBY_OWN,
    COMPRESSION_OPTIONS,
    BACKUP_SHARED,
    S3_OPTIONS,
];

#[rustfmt::skip]
static STANDBY_OWN: &[OptDef] = &[
    opt("logfile", Path, None, "server log passed to pg_ctl -l when starting PostgreSQL (pitrtools meaning)"),
    opt("pgversion", Text, None, "major PostgreSQL version of this standby (e.g. 15); checked against the binaries and data directory"),
    opt("use_streaming_replication", Bool, Some("off"), "also stream WAL from the master (primary_conninfo)"),
    opt("trigger_file", Path, None, "pitrtools' trigger file: on PostgreSQL 12-15 it becomes promote_trigger_file, so touching it promotes the standby (without pg_conf_failover or action_failover: use -F999 for a whole failover); PostgreSQL 16 removed it, and -S warns that it has no effect"),
    opt("repl_db_user", User, Some("replication"), "role used for streaming replication"),
    opt("repl_db_password", Text, None, "password of repl_db_user (written to a private passfile, never to a world-readable file)"),
    opt("sslmode", OneOf(names::<SslMode>), Some("prefer"), "libpq sslmode for connections to the master"),
    opt("port", Count, Some("5432"), "the master's PostgreSQL port").range(1, PORT),
    opt("master_public_ip", Text, None, "the master's host name or address (used for SQL and ssh)"),
    opt("master_local_ip", Text, None, "the master's PostgreSQL address as seen on the master, for SQL through ssh (sql_via_ssh); unset: 127.0.0.1, then the unix socket in master_socket_dir"),
    opt("master_socket_dir", Path, Some("/var/run/postgresql"), "the master's unix socket directory (unix_socket_directories), for SQL through ssh when master_local_ip is unset and the master listens on no TCP address"),
    opt("sql_via_ssh", OneOf(names::<SqlViaSsh>), Some("auto"), "pitrkit's SQL session through an ssh tunnel to the master (OpenSSH -L): on always; auto when the direct connection to master_public_ip:port cannot be made; off never. Streaming replication cannot use it"),
    opt("sslrootcert", Text, None, "CA certificates to check the master's certificate against, or 'system' (libpq; default ~/.postgresql/root.crt)"),
    opt("sslcert", Path, None, "client certificate for the master (libpq; default ~/.postgresql/postgresql.crt, used if it exists)"),
    opt("sslkey", Path, None, "client certificate's private key, 0600 (libpq; default ~/.postgresql/postgresql.key)"),
    opt("sslcrl", Path, None, "certificate revocation list checked with the root certificates (libpq; default ~/.postgresql/root.crl, used if it exists)"),
    opt("rsync_timeout", Seconds, Some("600"), "rsync --timeout for a base backup (-B): seconds without I/O before the copy is abandoned; at least 1").range(1, NO_MAX),
    opt("rsync_threads", Count, Some("1"), "parallel rsync streams for a base backup").clamp(1, 64),
    opt("archivedir", PathOrUrl, None, "where WAL from the archiver arrives (the archiver's r_archivedir), or an s3://bucket/prefix the archiver's archive_urls fills (restore and cleanup read it; see the s3_* keys)"),
    opt("pgdata", Path, None, "this standby's data directory"),
    opt("pg_conf", Path, None, "postgresql.conf used while in standby mode").aliases(&["postgresql_conf"]),
    opt("pg_hba_conf", Path, None, "pg_hba.conf used while in standby mode"),
    opt("pg_conf_failover", Path, None, "postgresql.conf used after failover").aliases(&["postgresql_conf_failover"]),
    opt("pg_hba_conf_failover", Path, None, "pg_hba.conf used after failover"),
    opt("no_copy_conf", Bool, Some("off"), "pass the config files with -c config_file= instead of copying them into pgdata"),
    opt("recovery_conf", Path, None, "recovery.conf location (PostgreSQL 11 and older only)"),
    opt("action_failover", Command, None, "command run after a successful failover; must exit 0"),
    opt("rsync", Path, None, "legacy: path of the rsync program"),
    opt("pg_ctl", Path, None, "path of pg_ctl (default: found from pgversion)"),
    opt("master_db", Text, Some("postgres"), "database on the master to connect to"),
    opt("master_user", User, Some("postgres"), "role on the master for backups and checks"),
    opt("master_password", Text, None, "password of master_user (better: ~/.pgpass or PGPASSFILE)"),
    opt("master_pgdata", Path, None, "the master's data directory, if the helper functions are not installed"),
    opt("tablespace_map", Text, None, "old=new tablespace path pairs, comma-separated"),
    opt("primary_slot_name", Text, None, "replication slot on the master for streaming replication"),
    opt("start_command", Text, None, "command to start PostgreSQL instead of pg_ctl (systemd, pg_ctlcluster)"),
    opt("stop_command", Text, None, "command to stop PostgreSQL instead of pg_ctl"),
    opt("restore_delay", Seconds, Some("0"), "serve only WAL archived at least this many seconds ago (delayed standby); ignored during cmd_standby -F999, but a promotion started otherwise (pg_promote(), a trigger file) stops at the delay"),
    opt("restore_prefetch", Count, Some("0"), "restore: segments fetched ahead in the background (0: off; ignored with restore_delay)").clamp(0, 256),
    opt("wait_timeout", Seconds, Some("300"), "seconds to wait for PostgreSQL to start, stop or promote"),
];

/// A key pitrtools read or shipped in a sample that pitrkit has no use for:
/// accepted, with a warning that tells its story.
#[derive(Debug)]
pub struct LegacyKey {
    pub name: &'static str,
    /// What it was, and what replaces it.
    pub story: &'static str,
}

const fn legacy(name: &'static str, story: &'static str) -> LegacyKey {
    LegacyKey { name, story }
}

/// Legacy keys of both programs (a cmd_standby key found in an archiver
/// file warns just the same: pitrtools ignored it there too).
#[rustfmt::skip]
pub static LEGACY_KEYS: &[LegacyKey] = &[
    legacy("pgcontroldata", "cmd_archiver's path of pg_controldata, read but never run (its one function was a stub); pitrkit reads global/pg_control itself"),
    legacy("timeout", "an early cmd_archiver key that later versions read but never used; ssh_timeout (connecting) and rsync_timeout (transfers) are pitrkit's"),
    legacy("rsync_version", "cmd_archiver chose --remove-sent-files (2) or --remove-source-files (3) with it; pitrkit removes queued files itself once a slave has them durably, and uses no option rsync 2 lacks"),
    legacy("numarchives", "cmd_standby's pg_standby -k for PostgreSQL 8.2; pitrkit cleanup (archive_cleanup_command) removes what %r no longer needs"),
    legacy("pg_standby", "cmd_standby's restore_command program (removed in PostgreSQL 14); pitrkit restore replaces it"),
    legacy("pg_archivecleanup", "cmd_standby's archive_cleanup_command program; pitrkit cleanup replaces it"),
    legacy("r_psql", "psql on the master, run over ssh; pitrkit opens its own SQL session (directly, or through ssh: sql_via_ssh)"),
    legacy("path", "cmd_standby 1.3's search path for the master's psql; pitrkit runs no psql there (directories for local programs go in includepath)"),
];

/// Unknown keys this close to a known one (Damerau-Levenshtein) are refused:
/// `ship_mdoe: sync` silently keeping `async` would downgrade durability.
const TYPO_DISTANCE: usize = 2;

/// Typed, validated access to one INI file's values under a set of definitions.
///
/// An empty value is exactly an absent line: the default where the key has
/// one, unset where it has none. Keys with a default are read with the plain
/// getters (`count`, `seconds`, `text`, ...), which return the value; keys
/// without one with the `opt_*` getters, which return an `Option`.
pub struct Options<'a> {
    file: &'a IniFile,
    defs: &'static [&'static [OptDef]],
    /// Collected while loading; the commands decide whether to print them.
    warnings: RefCell<Vec<ConfigWarning>>,
}

/// Does this set of definitions know `name` (or a legacy name of a key)?
pub fn defines(defs: &'static [&'static [OptDef]], name: &str) -> bool {
    find_def(defs, name).is_some()
}

fn find_def(defs: &'static [&'static [OptDef]], name: &str) -> Option<&'static OptDef> {
    all_defs(defs).find(|d| d.name == name || d.aliases.contains(&name))
}

fn find_legacy(name: &str) -> Option<&'static LegacyKey> {
    LEGACY_KEYS.iter().find(|l| l.name == name)
}

/// The known key (or legacy name of one) closest to `key`, and its distance.
fn closest(defs: &'static [&'static [OptDef]], key: &str) -> Option<(usize, &'static str)> {
    all_defs(defs)
        .flat_map(|d| std::iter::once(d.name).chain(d.aliases.iter().copied()))
        .map(|name| (strsim::damerau_levenshtein(key, name), name))
        .min()
}

impl<'a> Options<'a> {
    /// Judges every key of the file (see [`Options::judge_key`]) and refuses
    /// a key set under two names; warnings are kept for [`Options::into_warnings`].
    pub fn new(file: &'a IniFile, defs: &'static [&'static [OptDef]]) -> Result<Self, ConfigError> {
        let o = Options {
            file,
            defs,
            warnings: RefCell::new(file.warnings.clone()),
        };
        for key in file.entries.keys() {
            o.judge_key(key)?;
        }
        o.other_sections()?;
        Ok(o)
    }

    /// Keys in sections other than [DEFAULT] are not read; known ones (or
    /// near misses) are pointed out, and a file whose settings all sit in
    /// another section is refused: pitrtools could not read it either.
    fn other_sections(&self) -> Result<(), ConfigError> {
        let (file, defs) = (self.file, self.defs);
        if file.entries.is_empty() {
            if let Some(k) = file.others.iter().find(|k| find_def(defs, &k.key).is_some()) {
                return Err(ConfigError::new(
                    &file.path,
                    format!(
                        "no key is set under [DEFAULT]: the keys are under [{}], which is not read",
                        k.section
                    ),
                )
                .at(Some(k.line))
                .hint(format!(
                    "pitrkit reads only [DEFAULT], as pitrtools did; rename the [{}] header to [DEFAULT]",
                    k.section
                )));
            }
        }
        for other in &file.others {
            let known = find_def(defs, &other.key).map(|d| d.name).or_else(|| {
                closest(defs, &other.key)
                    .filter(|(dist, _)| *dist <= TYPO_DISTANCE)
                    .map(|(_, name)| name)
            });
            if let Some(name) = known {
                self.warn(
                    ConfigError::new(
                        &file.path,
                        format!(
                            "'{}' in section [{}] is not read: pitrkit reads only [DEFAULT], as pitrtools did",
                            other.key, other.section
                        ),
                    )
                    .at(Some(other.line))
                    .key(&other.key)
                    .hint(format!(
                        "move it above the [{}] header (or under [DEFAULT]) if it is meant as '{name}'",
                        other.section
                    )),
                );
            }
        }
        Ok(())
    }

    /// A [DEFAULT] key: a known key (under one name only); a legacy key
    /// (warned); a helper key some `%(name)s` refers to (silent); an unknown
    /// key close to a known one (refused: a typo would silently keep the
    /// default); any other unknown key (warned, as pitrtools ignored it).
    fn judge_key(&self, key: &str) -> Result<(), ConfigError> {
        let file = self.file;
        if let Some(def) = find_def(self.defs, key) {
            let names = std::iter::once(def.name).chain(def.aliases.iter().copied());
            if let Some(other) = names.filter(|n| *n != key).find(|n| file.get(n).is_some()) {
                return Err(file
                    .error(key, format!("'{key}' and '{other}' are the same key, and both are set"))
                    .hint(format!("'{}' is the current name; delete the other line", def.name)));
            }
            if key != def.name {
                self.warn(
                    file.error(key, format!("'{key}' is read as '{}', its current name", def.name))
                        .hint(format!(
                            "rename the key to '{}' once pitrtools no longer reads this file",
                            def.name
                        )),
                );
            }
            return Ok(());
        }
        if let Some(l) = find_legacy(key) {
            self.warn(
                file.error(
                    key,
                    format!(
                        "'{key}' is a pitrtools key pitrkit has no use for, ignored: {}",
                        l.story
                    ),
                )
                .hint("delete the line once pitrtools no longer reads this file"),
            );
            return Ok(());
        }
        if file.referenced.contains(key) {
            return Ok(());
        }
        match closest(self.defs, key) {
            Some((dist, name)) if dist <= TYPO_DISTANCE => Err(file
                .error(key, format!("unknown key '{key}'"))
                .hint(format!("did you mean '{name}'? (a misspelt key would silently keep its default, so keys this close to a known one are refused)"))),
            _ => {
                self.warn(
                    file.error(key, format!("unknown key '{key}' is ignored"))
                        .hint("check its spelling against the commented sample files in etc/, or delete the line"),
                );
                Ok(())
            }
        }
    }

    /// Records a warning for the command to print (or not).
    pub fn warn(&self, warning: ConfigWarning) {
        self.warnings.borrow_mut().push(warning);
    }

    /// The warnings collected while loading, in file order.
    pub fn into_warnings(self) -> Vec<ConfigWarning> {
        let mut w = self.warnings.into_inner();
        w.sort_by_key(|w| w.line);
        w
    }

    pub fn file(&self) -> &IniFile {
        self.file
    }

    fn def(&self, name: &str) -> &'static OptDef {
        find_def(self.defs, name).unwrap_or_else(|| panic!("option '{name}' is not defined"))
    }

    /// The name the file sets `name` under (itself or a legacy alias).
    fn key(&self, name: &str) -> &str {
        let def = self.def(name);
        std::iter::once(def.name)
            .chain(def.aliases.iter().copied())
            .find(|n| self.file.get(n).is_some())
            .unwrap_or(def.name)
    }

    /// The value set in the file, else the default; `None` when neither.
    /// An empty value counts as not set.
    fn raw(&self, name: &str, kind: Kind) -> Option<String> {
        let def = self.def(name);
        debug_assert!(
            std::mem::discriminant(&def.kind) == std::mem::discriminant(&kind),
            "option '{name}' read as {kind:?} but defined as {:?}",
            def.kind
        );
        match self.file.get(self.key(name)).map(|e| e.value.trim()) {
            Some(v) if !v.is_empty() => Some(v.to_string()),
            _ => def.default.map(str::to_string),
        }
    }

    /// The value of a key with a default; the table guarantees one.
    fn value(&self, name: &str, kind: Kind) -> String {
        self.raw(name, kind).unwrap_or_else(|| no_default(name))
    }

    /// An error about `name`, at the line that sets it.
    fn err(&self, name: &str, message: String) -> ConfigError {
        let key = self.key(name);
        let err = self.file.error(key, message);
        // ConfigParser keeps '#' and quotes in a value; users of other INI
        // dialects expect a comment and quoting.
        match self.file.get(key) {
            Some(e) if e.secret.is_none() && e.value.contains(" #") => {
                err.hint("'#' starts a comment only at the beginning of a line; after a value write ' ; comment'")
            }
            // Quotes are shell syntax in commands, and may be meant in text.
            Some(e)
                if e.secret.is_none()
                    && e.value.contains(['"', '\''])
                    && !matches!(self.def(name).kind, Command | Text) =>
            {
                err.hint("quotes are part of the value in these files (ConfigParser); remove them")
            }
            _ => err,
        }
    }

    /// "`key`: `value` `why`", for a refused value or part of one.
    fn refused(&self, name: &str, fragment: &str, why: &dyn std::fmt::Display) -> ConfigError {
        self.err(name, format!("{}: {} {why}", self.key(name), self.show(name, fragment)))
    }

    /// A value (or part of one) for an error message; see [`IniFile::show`].
    pub fn show(&self, name: &str, fragment: &str) -> String {
        self.file.show(self.key(name), fragment)
    }

    /// Set to a non-empty value in the file.
    pub fn is_set(&self, name: &str) -> bool {
        self.file
            .get(self.key(name))
            .is_some_and(|e| !e.value.trim().is_empty())
    }

    pub fn opt_text(&self, name: &str) -> Option<String> {
        self.raw(name, Text)
    }

    pub fn text(&self, name: &str) -> String {
        self.value(name, Text)
    }

    /// The notify_ok / notify_warning / notify_critical hooks, checked.
    pub fn notifier(&self) -> Result<crate::notify::Notifier, ConfigError> {
        Ok(crate::notify::Notifier {
            ok: self.hook("notify_ok")?,
            warning: self.hook("notify_warning")?,
            critical: self.hook("notify_critical")?,
            timeout: self.seconds("notify_timeout")?,
        })
    }

    /// A notify hook: a command line that must be able to take the message
    /// appended as one more argument (see [`crate::notify::hook_problem`]).
    pub fn hook(&self, name: &str) -> Result<Option<String>, ConfigError> {
        let Some(h) = self.raw(name, Command) else {
            return Ok(None);
        };
        match crate::notify::hook_problem(&h) {
            None => Ok(Some(h)),
            Some(why) => Err(self.refused(name, &h, &why).hint(
                "a hook must be one command: a program and its arguments (VAR=value words before it are fine); put anything more complex in a script that takes the message as \"$1\", and name the script here",
            )),
        }
    }

    /// A command run without arguments (action_failover, start_command):
    /// refused only where pitrkit's `sh -c '<command> "$@"'` is a syntax
    /// error (see [`crate::notify::command_problem`]).
    pub fn user_command(&self, name: &str) -> Result<Option<String>, ConfigError> {
        let kind = self.def(name).kind;
        let Some(c) = self.raw(name, kind) else {
            return Ok(None);
        };
        match crate::notify::command_problem(&c) {
            None => Ok(Some(c)),
            Some(why) => Err(self
                .refused(name, &c, &why)
                .hint("put the commands in a script and name the script here")),
        }
    }

    pub fn path(&self, name: &str) -> Result<PathBuf, ConfigError> {
        Ok(self.opt_path(name)?.unwrap_or_else(|| no_default(name)))
    }

    pub fn opt_path(&self, name: &str) -> Result<Option<PathBuf>, ConfigError> {
        match self.raw(name, Path) {
            None => Ok(None),
            Some(v) => self.check_path(name, &v).map(Some),
        }
    }

    /// `v` (part of `name`'s value) as an absolute path safe for rsync and ssh.
    pub fn check_path(&self, name: &str, v: &str) -> Result<PathBuf, ConfigError> {
        validate::check_path(v)
            .map(|_| PathBuf::from(v))
            .map_err(|why| self.path_err(name, v, &why))
    }

    /// A refused path, with what to do about it.
    fn path_err(&self, name: &str, path: &str, why: &Refusal) -> ConfigError {
        let err = self.refused(name, path, why);
        match why {
            Refusal::NotAbsolute => err.hint("write the full path, starting with '/'"),
            // The continuation-line hint says it all.
            Refusal::LineBreak => err,
            _ => err.hint("paths are handed to rsync and ssh, and a remote shell would split or expand these characters; use a path without them (a symlink can provide one)"),
        }
    }

    pub fn paths(&self, name: &str) -> Result<Vec<PathBuf>, ConfigError> {
        let Some(v) = self.raw(name, Paths) else {
            return Ok(Vec::new());
        };
        v.split([',', ':'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|p| self.check_path(name, p))
            .collect()
    }

    /// `archive_urls`: each an `s3://bucket/prefix`, checked.
    pub fn s3_urls(&self, name: &str) -> Result<Vec<S3Url>, ConfigError> {
        let Some(v) = self.raw(name, Urls) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<S3Url> = Vec::new();
        for u in v.split([',', ' ', '\t', '\n']).map(str::trim).filter(|s| !s.is_empty()) {
            let url = S3Url::parse(u).map_err(|why| self.refused(name, u, &why))?;
            if out.contains(&url) {
                return Err(self
                    .refused(name, u, &"is listed twice")
                    .hint("list each location once"));
            }
            out.push(url);
        }
        Ok(out)
    }

    /// A directory or an `s3://` location.
    pub fn opt_location(&self, name: &str) -> Result<Option<Location>, ConfigError> {
        match self.raw(name, PathOrUrl) {
            None => Ok(None),
            Some(v) if is_url(&v) => S3Url::parse(&v)
                .map(|u| Some(Location::S3(u)))
                .map_err(|why| self.refused(name, &v, &why)),
            Some(v) => self.check_path(name, &v).map(|p| Some(Location::Dir(p))),
        }
    }

    pub fn bool(&self, name: &str) -> Result<bool, ConfigError> {
        let v = self.value(name, Bool);
        match v.to_ascii_lowercase().as_str() {
            "on" | "yes" | "true" | "1" => Ok(true),
            "off" | "no" | "false" | "0" => Ok(false),
            _ => Err(self
                .err(name, format!("{name} must be on or off, got {}", self.show(name, &v)))
                .hint("use on/off, yes/no, true/false or 1/0")),
        }
    }

    /// A whole number, checked against the table's range.
    fn number(&self, name: &str, kind: Kind) -> Result<Option<u64>, ConfigError> {
        let Some(v) = self.raw(name, kind) else {
            return Ok(None);
        };
        let seconds = matches!(kind, Seconds);
        let n = v.parse::<u64>().map_err(|_| {
            if v.bytes().all(|b| b.is_ascii_digit()) {
                self.err(name, format!("{name} is too large, got {}", self.show(name, &v)))
            } else {
                let unit = if seconds { " of seconds" } else { "" };
                self.err(
                    name,
                    format!("{name} must be a whole number{unit}, got {}", self.show(name, &v)),
                )
                .hint(if seconds {
                    "write digits only, without a unit, e.g. 30"
                } else {
                    "write digits only, e.g. 4"
                })
            }
        })?;
        let Some(r) = self.def(name).range else {
            return Ok(Some(n));
        };
        if r.clamp || (r.min..=r.max).contains(&n) {
            return Ok(Some(n.clamp(r.min, r.max)));
        }
        let got = self.show(name, &n.to_string());
        Err(if r.max == NO_MAX {
            let unit = if seconds { " second(s)" } else { "" };
            self.err(name, format!("{name} must be at least {}{unit}, got {got}", r.min))
                .hint(self.def(name).help)
        } else {
            self.err(name, format!("{name} must be {}..{}, got {got}", r.min, r.max))
        })
    }

    pub fn opt_count(&self, name: &str) -> Result<Option<u64>, ConfigError> {
        self.number(name, Count)
    }

    pub fn count(&self, name: &str) -> Result<u64, ConfigError> {
        Ok(self.number(name, Count)?.unwrap_or_else(|| no_default(name)))
    }

    pub fn seconds(&self, name: &str) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(
            self.number(name, Seconds)?.unwrap_or_else(|| no_default(name)),
        ))
    }

    pub fn choice<T: Choice>(&self, name: &str) -> Result<T, ConfigError> {
        let v = self.value(name, OneOf(names::<T>)).to_ascii_lowercase();
        T::all().into_iter().find(|c| c.name() == v).ok_or_else(|| {
            self.err(
                name,
                format!(
                    "{name} must be one of {}, got {}",
                    names::<T>().join(", "),
                    self.show(name, &v)
                ),
            )
            .hint(self.def(name).help)
        })
    }

    pub fn hosts(&self, name: &str) -> Result<Vec<String>, ConfigError> {
        let Some(v) = self.raw(name, Hosts) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<String> = Vec::new();
        for h in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            validate::check_host(h).map_err(|why| {
                let e = self.refused(name, h, &why);
                if h.contains(char::is_whitespace) {
                    e.hint("separate hosts with ','")
                } else {
                    e
                }
            })?;
            if out.iter().any(|o| o == h) {
                return Err(self.refused(name, h, &"is listed twice").hint("list each host once"));
            }
            out.push(h.to_string());
        }
        Ok(out)
    }

    pub fn opt_user(&self, name: &str) -> Result<Option<String>, ConfigError> {
        match self.raw(name, User) {
            None => Ok(None),
            Some(v) => validate::check_user(&v)
                .map(|_| Some(v.clone()))
                .map_err(|why| self.refused(name, &v, &why)),
        }
    }

    pub fn user(&self, name: &str) -> Result<String, ConfigError> {
        Ok(self.opt_user(name)?.unwrap_or_else(|| no_default(name)))
    }

    /// The text of an options key (`rsync_flags`), which
    /// [`super::rsync_flags`] judges word by word.
    pub fn flags_text(&self, name: &str) -> Option<String> {
        self.raw(name, Flags)
    }

    pub fn words(&self, name: &str) -> Result<Vec<String>, ConfigError> {
        let Some(v) = self.raw(name, Words) else {
            return Ok(Vec::new());
        };
        v.split_whitespace()
            .map(|w| match validate::unsafe_char_reason(w) {
                None => Ok(w.to_string()),
                Some(why) => Err(self.refused(name, w, &why)),
            })
            .collect()
    }
}

/// Where an archive is: a directory or an object storage prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Dir(PathBuf),
    S3(S3Url),
}

/// A plain getter used on a key the table gives no default: a bug.
fn no_default(name: &str) -> ! {
    panic!("option '{name}' has no default; read it with an opt_ getter")
}

/// The keys of `defs` as `--help` lists them: name, legacy names, values
/// and default, then the help text.
pub fn key_reference(defs: &'static [&'static [OptDef]]) -> String {
    let mut out = String::from("Configuration keys ([DEFAULT] section; a key with no value is the same as no line):\n");
    for d in all_defs(defs) {
        let values = match d.kind {
            OneOf(names) => names().join("|"),
            Text | Command => "text".into(),
            Path => "/path".into(),
            Paths => "/path,/path".into(),
            Bool => "on|off".into(),
            Count => "N".into(),
            Seconds => "seconds".into(),
            Hosts => "host,host".into(),
            User => "user".into(),
            Flags => "-options".into(),
            Words => "words".into(),
            Urls => "s3://bucket/prefix,...".into(),
            PathOrUrl => "/path|s3://bucket/prefix".into(),
        };
        let values = match d.range {
            Some(r) if !r.clamp && r.max == NO_MAX => format!("{values} >= {}", r.min),
            Some(r) => format!("{values} in {}..{}", r.min, r.max),
            None => values,
        };
        out += &format!("  {}: {values}", d.name);
        if let Some(def) = d.default {
            out += &format!(" (default {def})");
        }
        if !d.aliases.is_empty() {
            out += &format!(" (also read as {})", d.aliases.join(", "));
        }
        out += &format!("\n      {}\n", d.help);
    }
    let legacy: Vec<&str> = LEGACY_KEYS.iter().map(|l| l.name).collect();
    out += &format!("pitrtools keys ignored with a warning: {}\n", legacy.join(", "));
    out
}

/// Every definition, for `--help`-style listings and the sample-file test.
pub fn all_defs(defs: &'static [&'static [OptDef]]) -> impl Iterator<Item = &'static OptDef> {
    defs.iter().flat_map(|g| g.iter())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn opts(text: &str) -> Result<IniFile, ConfigError> {
        IniFile::parse(Path::new("archiver.ini"), text)
    }

    #[test]
    fn no_key_is_defined_twice() {
        for defs in [ARCHIVER_OPTIONS, STANDBY_OPTIONS, BACKUP_OPTIONS] {
            let mut names: Vec<_> = all_defs(defs)
                .flat_map(|d| std::iter::once(d.name).chain(d.aliases.iter().copied()))
                .collect();
            names.extend(LEGACY_KEYS.iter().map(|l| l.name));
            names.sort();
            let n = names.len();
            names.dedup();
            assert_eq!(n, names.len());
        }
    }

    #[test]
    fn unknown_key_suggests_the_closest() {
        let f = opts("[DEFAULT]\nstate: online\n\n\n\n\n\n\n\n\n\nslave: a\n").unwrap();
        let e = Options::new(&f, ARCHIVER_OPTIONS).err().unwrap();
        assert_eq!(
            e.to_string(),
            "archiver.ini line 12: unknown key 'slave' — did you mean 'slaves'? (a misspelt key would silently keep its default, so keys this close to a known one are refused)"
        );
    }

    fn warnings(text: &str, defs: &'static [&'static [OptDef]]) -> Result<Vec<String>, ConfigError> {
        let f = opts(text)?;
        Ok(Options::new(&f, defs)?
            .into_warnings()
            .iter()
            .map(ToString::to_string)
            .collect())
    }

    #[test]
    fn key_rules_for_configparser_files() {
        // Helper keys used by %(name)s pass silently, however they are spelt.
        let text = "base: /srv\nship: x\npgdata: %(base)s/main\nl_archivedir: %(ship)s\n";
        assert_eq!(warnings(text, ARCHIVER_OPTIONS).unwrap(), Vec::<String>::new());
        // Legacy keys warn with their story, in file order.
        let w = warnings(
            "timeout: 10\nnumarchives: 10\npgcontroldata: /usr/bin/pg_controldata\n",
            ARCHIVER_OPTIONS,
        )
        .unwrap();
        assert_eq!(w.len(), 3);
        assert!(
            w[0].starts_with("archiver.ini line 1: 'timeout' is a pitrtools key pitrkit has no use for, ignored: "),
            "{w:?}"
        );
        assert!(w[2].contains("line 3: 'pgcontroldata'"), "{w:?}");
        // Near a known key: refused; far from every key: warned.
        let e = warnings("ship_mdoe: sync\n", ARCHIVER_OPTIONS).unwrap_err();
        assert!(e.to_string().contains("did you mean 'ship_mode'?"), "{e}");
        let w = warnings("nagios_host: db1\n", ARCHIVER_OPTIONS).unwrap();
        assert_eq!(w, ["archiver.ini line 1: unknown key 'nagios_host' is ignored — check its spelling against the commented sample files in etc/, or delete the line"]);
        // Other sections are not read; known keys there are pointed out.
        let w = warnings(
            "[DEFAULT]\nstate: online\n[standby]\nship_mode: sync\nship_mdoe: sync\nowner: me\n",
            ARCHIVER_OPTIONS,
        )
        .unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0], "archiver.ini line 4: 'ship_mode' in section [standby] is not read: pitrkit reads only [DEFAULT], as pitrtools did — move it above the [standby] header (or under [DEFAULT]) if it is meant as 'ship_mode'");
        assert!(
            w[1].contains("'ship_mdoe' in section [standby]") && w[1].ends_with("if it is meant as 'ship_mode'"),
            "{w:?}"
        );
    }

    #[test]
    fn typed_values_and_their_errors() {
        let f = opts("ssh_timeout: 10s\ndebug: maybe\nslaves: a, b\nrsync_flags: -z --bwlimit=100\n").unwrap();
        let o = Options::new(&f, ARCHIVER_OPTIONS).unwrap();
        let e = o.seconds("ssh_timeout").unwrap_err();
        assert_eq!(e.line, Some(1));
        assert!(e
            .message
            .contains("ssh_timeout must be a whole number of seconds, got '10s'"));
        assert!(o.bool("debug").unwrap_err().message.contains("on or off"));
        assert_eq!(o.hosts("slaves").unwrap(), vec!["a", "b"]);
        // Defaults come from the table.
        assert_eq!(o.seconds("queue_wait").unwrap(), Duration::from_secs(30));
        assert_eq!(o.choice::<ShipMode>("ship_mode").unwrap(), ShipMode::Async);
    }

    #[test]
    fn dangerous_values_are_refused() {
        let f = opts("slaves: ok, -oProxyCommand=x\nr_archivedir: /a;b\nrsync_flags: -e;sh\n").unwrap();
        let o = Options::new(&f, ARCHIVER_OPTIONS).unwrap();
        assert!(o.hosts("slaves").unwrap_err().message.contains("option"));
        assert!(o.opt_path("r_archivedir").is_err());
    }

    #[test]
    fn continued_values_are_checked_by_their_key() {
        // A list may continue over several lines, as ConfigParser allows.
        let f = opts("slaves: a,\n  b\nlocal_archivedirs: /x,\n  /y\nr_archivedir: /r\n  /s\nstate: online\n").unwrap();
        let o = Options::new(&f, ARCHIVER_OPTIONS).unwrap();
        assert_eq!(o.hosts("slaves").unwrap(), vec!["a", "b"]);
        assert_eq!(o.paths("local_archivedirs").unwrap().len(), 2);
        // One path may not: refused with both lines and the reason.
        let e = o.opt_path("r_archivedir").unwrap_err();
        assert_eq!(
            e.to_string(),
            "archiver.ini lines 5-6: r_archivedir: '/r\\n/s' contains a line break — an indented line continues the value of the key above it (ConfigParser), so 'r_archivedir' runs on from line 5; remove the indentation if that line is a key of its own"
        );
        assert_eq!(o.choice::<State>("state").unwrap(), State::Online);
    }

    #[test]
    fn secrets_are_not_shown_by_value_checks() {
        let f = opts("master_password: hunter2\nuser: %(master_password)s x\nssh_port: %(master_password)s\n").unwrap();
        let o = Options::new(&f, STANDBY_OPTIONS).unwrap();
        for e in [o.opt_user("user").unwrap_err(), o.opt_count("ssh_port").unwrap_err()] {
            assert!(!e.to_string().contains("hunter2"), "{e}");
            assert!(e.to_string().contains("secret key 'master_password'"), "{e}");
        }
    }
}
