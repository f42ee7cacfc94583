//! Command-line interface. The archiver and standby keep pitrtools' flags
//! (`cmd_archiver -C -F -I`, `cmd_standby -C -I -B -S -F999 -R -P -A`), and
//! the binary behaves as those subcommands when called through links named
//! `cmd_archiver` / `cmd_standby` / `cmd_queue`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::config::options::{key_reference, ARCHIVER_OPTIONS, STANDBY_OPTIONS};

#[derive(Debug, Parser)]
#[command(
    name = "pitrkit",
    version,
    about = "WAL archiving, shipping and standby management for PostgreSQL 12-18"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Archive WAL (PostgreSQL's archive_command), ship queues, set up queues.
    #[command(alias = "cmd_archiver", version)]
    Archiver(ArchiverArgs),
    /// Manage a standby: init, base backup, start, failover, point-in-time recovery.
    #[command(alias = "cmd_standby", version)]
    Standby(StandbyArgs),
    /// Ship every slave's queue every queue_wait seconds (pitrtools' cmd_queue).
    #[command(alias = "cmd_queue", version)]
    Queue(QueueArgs),
    /// restore_command: copy archived WAL %f into %p (replaces pg_standby).
    Restore(RestoreArgs),
    /// archive_cleanup_command: remove archived WAL older than %r.
    Cleanup(CleanupArgs),
    /// Quick start: a throw-away cluster archiving through pitrkit into a local directory.
    Demo(DemoArgs),
    /// Take a backup of the local cluster (master or standby) into backup_dir; list, verify or expire backups.
    Backup(BackupArgs),
    /// Restore a backup into a new data directory, to a point in time.
    Recover(RecoverArgs),
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Backup configuration file (backup.ini, or a standby.ini with backup_dir).
    #[arg(short = 'C', long = "config", default_value = "backup.ini")]
    pub config: PathBuf,
    /// List the backups instead of taking one.
    #[arg(long, conflicts_with = "verify")]
    pub list: bool,
    /// With --list: as JSON (documented in the README, stable).
    #[arg(long, requires = "list")]
    pub json: bool,
    /// Check every stored file of each backup (or of ID) against its manifest,
    /// and the archive's WAL from each backup's start to the newest segment.
    #[arg(long, value_name = "ID", num_args = 0..=1, default_missing_value = "")]
    pub verify: Option<String>,
    /// Apply retention (keep_backups, recovery_window) and remove the WAL no
    /// kept backup needs (also done after every backup).
    #[arg(long, conflicts_with_all = ["list", "verify"])]
    pub expire: bool,
    /// Take an incremental backup (whatever backup_type says): files unchanged
    /// since the previous complete backup are referenced, not stored again.
    #[arg(long, conflicts_with_all = ["list", "verify", "expire"])]
    pub incremental: bool,
}

/// Where a recovery stops.
#[derive(Debug, Args)]
#[group(required = false, multiple = false)]
pub struct RecoveryTarget {
    /// Recover up to this time (e.g. '2026-11-30 10:02:00+00').
    #[arg(long, value_name = "TIME")]
    pub target_time: Option<String>,
    /// Recover up to this transaction ID.
    #[arg(long, value_name = "XID")]
    pub target_xid: Option<String>,
    /// Recover up to this LSN (e.g. 0/5000028).
    #[arg(long, value_name = "LSN")]
    pub target_lsn: Option<String>,
    /// Recover up to this restore point (pg_create_restore_point).
    #[arg(long, value_name = "NAME")]
    pub target_name: Option<String>,
    /// Recover only to the end of the backup (the earliest consistent point).
    #[arg(long)]
    pub immediate: bool,
    /// Build a standby instead (standby.signal, the standby.ini's settings, no target).
    #[arg(long)]
    pub standby: bool,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Backup configuration file (backup.ini, or a standby.ini with backup_dir).
    #[arg(short = 'C', long = "config", default_value = "backup.ini")]
    pub config: PathBuf,
    /// The new data directory (missing or empty).
    #[arg(long, value_name = "DIR", required_unless_present = "restore_wal")]
    pub to: Option<PathBuf>,
    #[command(flatten)]
    pub target: RecoveryTarget,
    /// The backup to restore (its ID); default: chosen from the target.
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    /// Put a tablespace elsewhere: OLD=NEW (repeatable).
    #[arg(long, value_name = "OLD=NEW")]
    pub tablespace_map: Vec<String>,
    /// Start the recovered server and wait until it has reached the target.
    #[arg(long)]
    pub start: bool,
    /// Port of the recovered server (postgresql.auto.conf).
    #[arg(long)]
    pub port: Option<u16>,
    /// Keep archive_mode/archive_command as backed up (default: archiving off).
    #[arg(long)]
    pub keep_archiving: bool,
    /// Internal: the recovered server's restore_command (%f %p): the set's
    /// WAL, then archivedir.
    #[arg(long, hide = true, num_args = 2, value_names = ["F", "P"], requires = "backup")]
    pub restore_wal: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Standby configuration file (archivedir, restore_delay).
    #[arg(short = 'C', long = "config", default_value = "cmd_standby.ini")]
    pub config: PathBuf,
    /// PostgreSQL's %f: the file name wanted.
    pub wal: String,
    /// PostgreSQL's %p: where to put it (relative to the data directory).
    pub dest: PathBuf,
    /// Internal: run as the prefetch worker after %f was served; the value
    /// is the segment size.
    #[arg(long, hide = true, value_name = "SEGMENT_SIZE")]
    pub prefetch_after: Option<u64>,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Standby configuration file (archivedir, cleanup_pause_file).
    #[arg(short = 'C', long = "config", default_value = "cmd_standby.ini")]
    pub config: PathBuf,
    /// PostgreSQL's %r: the oldest file still needed.
    pub oldest_kept: String,
    /// Only print what would be removed.
    #[arg(short = 'n', long = "dry-run")]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ArchiverArgs {
    /// Configuration file (pitrtools cmd_archiver.ini format).
    #[arg(short = 'C', long = "config", default_value = "cmd_archiver.ini")]
    pub config: PathBuf,
    /// WAL file to archive: PostgreSQL's %p (relative to pgdata or absolute).
    #[arg(short = 'F', long = "file", value_name = "WAL")]
    pub file: Option<PathBuf>,
    /// Create the queue directories and check every slave over ssh.
    #[arg(short = 'I', long = "init")]
    pub init: bool,
    /// Ship every queued file now (for cron or systemd timers while the master is idle).
    #[arg(long, conflicts_with_all = ["file", "init"])]
    pub flush: bool,
    /// Show each slave's queue depth and delivery state.
    #[arg(long, conflicts_with_all = ["file", "init", "flush"])]
    pub status: bool,
}

/// `pitrkit queue` / `cmd_queue`: the queue runner.
#[derive(Debug, Args)]
#[command(
    after_help = "In the foreground (no -d) it keeps running until SIGTERM, for a systemd service of Type=simple (etc/pitrkit-queue.service). One runner per l_archivedir: a second one exits 0 at once, saying which pid runs."
)]
pub struct QueueArgs {
    /// The archiver's configuration file (pitrtools cmd_archiver.ini format).
    #[arg(short = 'C', long = "config", default_value = "cmd_archiver.ini")]
    pub config: PathBuf,
    /// Detach: new session, working directory /, standard streams on
    /// /dev/null (log lines go to the configured logfile).
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Exit once every queue is empty (what an archive call starts).
    #[arg(long)]
    pub until_empty: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum StandbyAction {
    Start,
    Stop,
    StopBasebackup,
}

#[derive(Debug, Args)]
pub struct StandbyArgs {
    /// Configuration file (pitrtools cmd_standby.ini format).
    #[arg(short = 'C', long = "config", default_value = "cmd_standby.ini")]
    pub config: PathBuf,
    /// Create pgdata, archivedir and tablespace directories.
    #[arg(short = 'I', long = "init", visible_alias = "dbinit")]
    pub init: bool,
    /// Take a base backup from the master (a spare until -S runs on it).
    #[arg(short = 'B', long = "basebackup")]
    pub basebackup: bool,
    /// Start PostgreSQL as a standby.
    #[arg(short = 'S', long = "startstandby", visible_alias = "standby")]
    pub start_standby: bool,
    /// Fail over: -F999 (the value is a safety catch, as in pitrtools).
    #[arg(short = 'F', long = "failover", value_name = "999")]
    pub failover: Option<String>,
    /// With -F999: point-in-time recovery of a stopped copy to this timestamp, then promote.
    /// On a spare (a -B copy taken before the timestamp that never ran -S) it runs while
    /// the master is alive; the copy never archives or cleans the archive.
    #[arg(short = 'R', long = "recovertotime", value_name = "TIMESTAMP")]
    pub recover_to_time: Option<String>,
    /// Ping the master and report what was found.
    #[arg(short = 'P', long = "ping")]
    pub ping: bool,
    /// start | stop | stop_basebackup.
    #[arg(short = 'A', long = "action", value_enum)]
    pub action: Option<StandbyAction>,
    /// Fail over even though the master seems alive (dangerous).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many WAL segments to generate and archive.
    #[arg(long, default_value_t = 5)]
    pub segments: u32,
    /// Keep the demo directory (cluster, config, archive) instead of removing it.
    #[arg(long)]
    pub keep: bool,
}

/// Names under which the binary acts as a subcommand (pitrtools' programs).
const MULTI_CALL: &[(&str, &str)] = &[
    ("cmd_archiver", "archiver"),
    ("cmd_standby", "standby"),
    ("cmd_queue", "queue"),
];

/// Rewrites `cmd_archiver -C x -F y` into `pitrkit archiver -C x -F y`
/// when argv[0]'s file name is one of pitrtools' program names.
pub fn multi_call_args(args: Vec<OsString>) -> Vec<OsString> {
    let Some(argv0) = args.first() else { return args };
    let base = Path::new(argv0)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = base.strip_suffix(".py").unwrap_or(&base);
    match MULTI_CALL.iter().find(|(name, _)| *name == base) {
        Some((_, sub)) => {
            let mut out = vec![OsString::from("pitrkit"), OsString::from(*sub)];
            out.extend(args.into_iter().skip(1));
            out
        }
        None => args,
    }
}

/// The command line, with every configuration key (from the key table)
/// listed in `archiver --help` and `standby --help`.
pub fn command() -> clap::Command {
    Cli::command()
        .mut_subcommand("archiver", |c| c.after_long_help(key_reference(ARCHIVER_OPTIONS)))
        .mut_subcommand("standby", |c| c.after_long_help(key_reference(STANDBY_OPTIONS)))
}

/// Parses `args` as [`command`] describes them.
pub fn parse(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    command()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m))
}

/// The program name to show in log lines.
pub fn program_name(args: &[OsString]) -> String {
    args.first()
        .and_then(|a| Path::new(a).file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pitrkit".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let v: Vec<OsString> = args.iter().map(OsString::from).collect();
        super::parse(multi_call_args(v))
    }

    /// `--help` lists every key of the table, with its default.
    #[test]
    fn long_help_lists_every_key() {
        use crate::config::options::all_defs;
        for (sub, defs) in [("archiver", ARCHIVER_OPTIONS), ("standby", STANDBY_OPTIONS)] {
            let help = command()
                .find_subcommand_mut(sub)
                .unwrap()
                .render_long_help()
                .to_string();
            for d in all_defs(defs) {
                let line = format!("  {}: ", d.name);
                let at = help
                    .find(&line)
                    .unwrap_or_else(|| panic!("{sub} --help lacks {}", d.name));
                let shown = help[at..].lines().next().unwrap();
                if let Some(def) = d.default {
                    assert!(shown.contains(&format!("(default {def})")), "{shown}");
                }
            }
        }
        let e = parse(&["pitrkit", "archiver", "--help"]).unwrap_err();
        assert!(e.to_string().contains("max_queue_workers: N >= 1 (default 4)"), "{e}");
    }

    #[test]
    fn cmd_archiver_link_keeps_pitrtools_flags() {
        let cli = parse(&[
            "/usr/local/bin/cmd_archiver",
            "-C",
            "/etc/a.ini",
            "-F",
            "pg_wal/000000010000000000000001",
        ])
        .unwrap();
        let Command::Archiver(a) = cli.command else { panic!() };
        assert_eq!(a.config, PathBuf::from("/etc/a.ini"));
        assert_eq!(a.file, Some(PathBuf::from("pg_wal/000000010000000000000001")));
        let cli = parse(&["cmd_archiver", "-C", "a.ini", "-I"]).unwrap();
        let Command::Archiver(a) = cli.command else { panic!() };
        assert!(a.init);
    }

    #[test]
    fn cmd_standby_link_keeps_pitrtools_flags() {
        let cli = parse(&["cmd_standby", "-C", "s.ini", "-F999", "-R", "2026-11-21 10:00:00"]).unwrap();
        let Command::Standby(s) = cli.command else { panic!() };
        assert_eq!(s.failover.as_deref(), Some("999"));
        assert_eq!(s.recover_to_time.as_deref(), Some("2026-11-21 10:00:00"));
        // pitrtools' long forms too.
        for flag in [
            "-I",
            "-B",
            "-S",
            "-P",
            "--dbinit",
            "--standby",
            "--init",
            "--startstandby",
        ] {
            assert!(parse(&["cmd_standby", "-C", "s.ini", flag]).is_ok(), "{flag}");
        }
        let cli = parse(&["cmd_standby", "-C", "s.ini", "-A", "stop_basebackup"]).unwrap();
        let Command::Standby(s) = cli.command else { panic!() };
        assert_eq!(s.action, Some(StandbyAction::StopBasebackup));
    }

    #[test]
    fn version_works_through_the_links() {
        for argv0 in ["cmd_archiver", "cmd_standby", "cmd_queue"] {
            let e = parse(&[argv0, "--version"]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion, "{argv0}");
        }
    }

    #[test]
    fn cmd_queue_link_takes_pitrtools_flags() {
        for args in [
            &["cmd_queue", "-C", "a.ini", "--daemon"][..],
            &["cmd_queue", "-C", "a.ini", "-d"],
            &["/usr/local/bin/cmd_queue", "--config", "a.ini", "-d", "--until-empty"],
        ] {
            let Command::Queue(q) = parse(args).unwrap().command else {
                panic!("{args:?}")
            };
            assert_eq!(q.config, PathBuf::from("a.ini"));
            assert!(q.daemon);
            assert_eq!(q.until_empty, args.contains(&"--until-empty"));
        }
        let Command::Queue(q) = parse(&["pitrkit", "queue", "-C", "a.ini"]).unwrap().command else {
            panic!()
        };
        assert!(!q.daemon && !q.until_empty);
    }

    #[test]
    fn subcommands_and_aliases() {
        assert!(parse(&["pitrkit", "archiver", "-C", "a.ini", "--flush"]).is_ok());
        assert!(parse(&["pitrkit", "cmd_archiver", "-C", "a.ini"]).is_ok());
        assert!(parse(&["pitrkit", "archiver", "--flush", "-F", "x"]).is_err());
        assert!(parse(&["pitrkit", "demo", "--segments", "3"]).is_ok());
    }

    #[test]
    fn restore_usage_errors_stop_recovery() {
        use crate::commands::usage_error_code;
        let v = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        // Missing %p: must not read as "not in the archive".
        assert!(parse(&["pitrkit", "restore", "-C", "s.ini", "000000010000000000000001"]).is_err());
        assert_eq!(usage_error_code(&v(&["pitrkit", "restore", "-C", "s.ini"])), 200);
        assert_eq!(usage_error_code(&v(&["pitrkit", "cleanup"])), 2);
        assert_eq!(usage_error_code(&v(&["pitrkit"])), 2);
    }
}
