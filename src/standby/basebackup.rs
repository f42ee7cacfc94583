//! `-B`: a base backup from the master with rsync, in non-exclusive mode.
//!
//! One SQL session starts the backup, stays open (keep-alives, no timeouts)
//! while rsync copies the data directory and every tablespace, then stops the
//! backup and gets back `backup_label` and `tablespace_map`, which are written
//! into the copy byte for byte (tablespace paths remapped). If anything fails,
//! closing the session ends the backup on the master, and the copy keeps a
//! marker file so it is never started; running -B again resumes (rsync only
//! copies what differs). The same command re-syncs an old master after a
//! failover, which is where rsync's delta transfer shines.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::report::BaseBackupReport;
use super::{init::local_location, recovery::write_atomic, spare, Standby, INCOMPLETE_MARKER, PASSFILE};
use crate::config::validate;
use crate::fsutil;
use crate::pg::master::{BackupStop, Master, MasterTarget, Tablespace};
use crate::transport::rsync::{pull_tree, Pull, RsyncSettings};

/// Paths under the data directory that a base backup must not copy (they
/// are rebuilt or meaningless on the standby), as anchored rsync patterns.
/// From PostgreSQL's "Making a Base Backup Using the Low Level API".
const EXCLUDED: &[&str] = &[
    "/pg_wal/*",
    "/pg_xlog/*",
    "/postmaster.pid",
    "/postmaster.opts",
    "/pg_replslot/*",
    "/pg_dynshmem/*",
    "/pg_notify/*",
    "/pg_serial/*",
    "/pg_snapshots/*",
    "/pg_stat_tmp/*",
    "/pg_subtrans/*",
    "/pg_tblspc/*",
    "pgsql_tmp*",
    "pg_internal.init",
    "/backup_label",
    "/backup_label.old",
    "/tablespace_map",
    "/tablespace_map.old",
    "/standby.signal",
    "/recovery.signal",
    "/recovery.conf",
    "/recovery.done",
    "/postgresql.auto.conf.tmp",
    "/current_logfiles",
    // A -F999 interrupted on the master's host must not follow the copy,
    // nor a spare's mark (this copy writes its own when it is complete).
    "/pitrkit.promoting",
    "/pitrkit.spare",
];

/// The entries of `dir`; `None` if it does not exist.
fn entries(dir: &Path) -> Result<Option<Vec<String>>> {
    match fs::read_dir(dir) {
        Ok(rd) => Ok(Some(
            rd.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<Vec<_>>>()
                .with_context(|| format!("listing {}", dir.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{}: cannot list it (is it a directory?)", dir.display())),
    }
}

fn sample(names: &[String]) -> String {
    let mut names = names.to_vec();
    names.sort();
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    format!(
        "{}{} ({} entr{})",
        shown.join(", "),
        if names.len() > 5 { ", ..." } else { "" },
        names.len(),
        if names.len() == 1 { "y" } else { "ies" }
    )
}

/// Refuses to copy into a directory whose contents a base backup does not
/// own: `pgdata` must be missing, empty, a data directory of the master's
/// database system, or an unfinished copy of ours ([`INCOMPLETE_MARKER`]);
/// a tablespace directory must be missing, empty, or (when pgdata is ours)
/// hold only PostgreSQL's `PG_<version>_<catalog>` directories.
pub fn check_targets(pgdata: &Path, master_id: u64, tablespaces: &[PathBuf], config: &Path) -> Result<()> {
    let what_to_do = |dir: &Path| {
        format!(
            "Empty {} (move what you need elsewhere), or point it in {} at an empty or missing directory",
            dir.display(),
            config.display()
        )
    };
    let pgdata_ours = match entries(pgdata)? {
        None => false,
        Some(names) if names.is_empty() => false,
        Some(_) if pgdata.join(INCOMPLETE_MARKER).exists() => true,
        Some(names) => match crate::archive::sysid::pg_control_system_id(pgdata) {
            Ok(id) if id == master_id => true,
            Ok(id) => bail!(
                "{} holds a PostgreSQL data directory of another database system (system identifier {id}; the master's is {master_id}). \
                 A base backup (-B) would replace it with the master's. {}",
                pgdata.display(),
                what_to_do(pgdata)
            ),
            Err(e) => bail!(
                "{} is not empty and is not a PostgreSQL data directory ({}): it holds {}. \
                 A base backup (-B) makes pgdata an exact copy of the master's data directory and would delete them. {}",
                pgdata.display(),
                if e.kind() == std::io::ErrorKind::NotFound {
                    "no global/pg_control".to_string()
                } else {
                    format!("global/pg_control: {e}")
                },
                sample(&names),
                what_to_do(pgdata)
            ),
        },
    };
    for ts in tablespaces {
        if validate::path_within(ts, pgdata) || validate::path_within(pgdata, ts) {
            bail!(
                "the tablespace directory {} overlaps pgdata {}: each must be a separate copy. Set tablespace_map in {} (old=new) to a directory outside pgdata",
                ts.display(),
                pgdata.display(),
                config.display()
            );
        }
        let Some(names) = entries(ts)? else { continue };
        let foreign: Vec<String> = names
            .iter()
            .filter(|n| !(pgdata_ours && n.starts_with("PG_") && ts.join(n).is_dir()))
            .cloned()
            .collect();
        if !foreign.is_empty() {
            bail!(
                "the tablespace directory {} is not empty and holds files that are not part of this standby's copy: {}. \
                 A base backup (-B) makes it an exact copy of the master's tablespace and would delete them. {}",
                ts.display(),
                sample(&foreign),
                what_to_do(ts)
            );
        }
    }
    Ok(())
}

/// The rsync filters for the main data directory.
pub fn data_dir_filters(exclude_conf: bool, exclude_hba: bool, split_base: bool) -> Vec<String> {
    // Protect our marker from --delete-excluded; protect base/ when per-database jobs copy it.
    let mut f = vec![format!("--filter=P /{INCOMPLETE_MARKER}")];
    if split_base {
        f.push("--filter=P /base/*".into());
        f.push("--exclude=/base/*".into());
    }
    f.extend(EXCLUDED.iter().map(|e| format!("--exclude={e}")));
    f.push(format!("--exclude=/{INCOMPLETE_MARKER}"));
    f.push(format!("--exclude=/{PASSFILE}"));
    if exclude_conf {
        f.push("--exclude=/postgresql.conf".into());
    }
    if exclude_hba {
        f.push("--exclude=/pg_hba.conf".into());
    }
    f
}

/// Rewrites tablespace_map lines (`<oid> <path>`) for the standby's paths.
pub fn remap_tablespace_map(map: &str, remap: &[(PathBuf, PathBuf)]) -> String {
    let mut out = String::new();
    for line in map.lines() {
        match line.split_once(' ') {
            Some((oid, path)) => match remap.iter().find(|(old, _)| Path::new(path) == old) {
                Some((_, new)) => out.push_str(&format!("{oid} {}\n", new.display())),
                None => out.push_str(&format!("{line}\n")),
            },
            None => out.push_str(&format!("{line}\n")),
        }
    }
    out
}

struct Job {
    what: String,
    src: PathBuf,
    dest: PathBuf,
    filters: Vec<String>,
}

/// What the master has to copy, asked before the backup starts.
struct Source {
    data_dir: PathBuf,
    tablespaces: Vec<Tablespace>,
    db_oids: Vec<u32>,
    /// Bytes, for the progress bar (0: unknown).
    total: u64,
    /// Each tablespace's location on the master and on this standby.
    remap: Vec<(PathBuf, PathBuf)>,
}

pub fn run(sb: &Standby) -> Result<BaseBackupReport> {
    sb.require_stopped("a base backup")?;
    let cfg = sb.cfg;
    let target = MasterTarget::from_standby(cfg)?;
    let mut master = Master::open(&target, "pitrkit basebackup")?;
    let src = survey(sb, &mut master)?;
    // rsync --delete makes these exact copies of the master's: check that
    // nothing else lives there before the first change.
    let locals: Vec<PathBuf> = src.remap.iter().map(|(_, l)| l.clone()).collect();
    check_targets(&sb.pgdata, master.system_identifier()?, &locals, &cfg.source)?;
    fsutil::ensure_dir(&sb.pgdata, 0o700).with_context(|| format!("creating {}", sb.pgdata.display()))?;
    // Until it is complete again the copy is no spare (spare::classify).
    spare::remove_mark(&sb.pgdata)?;
    let marker = sb.pgdata.join(INCOMPLETE_MARKER);
    write_atomic(
        &marker,
        "a pitrkit base backup into this directory has not finished; run cmd_standby -B again\n",
    )?;
    let split = cfg.rsync_threads > 1;
    let jobs = plan_jobs(sb, &src, split)?;

    let started = Instant::now();
    let start_lsn = master.backup_start(&backup_label())?;
    log::info!(
        "backup started on {} at LSN {start_lsn}; copying {} with {} rsync stream(s)",
        target.describe(),
        src.data_dir.display(),
        cfg.rsync_threads
    );
    let copied = match copy_jobs(
        sb,
        &target.host,
        &rsync_settings(sb),
        &jobs,
        cfg.rsync_threads,
        src.total,
    ) {
        Ok(c) => c,
        Err(e) => {
            drop(master); // closing the session ends the backup on the master
            bail!(
                "{e:#}\nThe backup was stopped on the master (its session was closed). {} is incomplete and marked with {INCOMPLETE_MARKER}, so it will not be started. \
                 Fix the problem and run `cmd_standby -C {} -B` again: rsync resumes and copies only what differs.",
                sb.pgdata.display(),
                cfg.source.display()
            );
        }
    };
    // Cleanup of per-database directories dropped on the master since a previous copy.
    if split {
        remove_dropped_databases(&sb.pgdata, &src.db_oids)?;
    }
    let (stop, mark) = stop_backup(master)?;
    complete_copy(sb, &src, &stop)?;
    spare::write_mark(&sb.pgdata, &mark)?;
    fs::remove_file(&marker)?;
    fsutil::fsync_dir(&sb.pgdata)?;
    let report = BaseBackupReport {
        host: target.host.clone(),
        data_dir: src.data_dir.clone(),
        seconds: started.elapsed().as_secs_f64(),
        bytes: copied,
        start_lsn,
        stop_lsn: stop.lsn.clone(),
        tablespaces: src.tablespaces.len(),
    };
    cfg.notify.send(crate::notify::Level::Ok, &report.summary());
    Ok(report)
}

/// Stops the backup and closes the session; the spare's mark records
/// where and when (on the master's clock) the backup ended.
fn stop_backup(mut master: Master) -> Result<(BackupStop, spare::SpareMark)> {
    let stop = master.backup_stop(true).context("stopping the backup on the master (pg_backup_stop waits until the last WAL segment is archived: check archive_command and pg_stat_archiver there)")?;
    let stopped_at = master.clock().context("reading the master's clock after the backup")?;
    let mark = spare::SpareMark {
        stop_lsn: stop.lsn.clone(),
        stopped_at,
    };
    Ok((stop, mark))
}

/// The master's version, directories and sizes, checked.
fn survey(sb: &Standby, master: &mut Master) -> Result<Source> {
    if master.version.major() != sb.version.major() {
        bail!(
            "the master runs PostgreSQL {} but this standby's binaries are {}; a base backup needs the same major version",
            master.version,
            sb.version
        );
    }
    let data_dir = match &sb.cfg.master_pgdata {
        Some(d) => d.clone(),
        None => master.data_directory()?,
    };
    let tablespaces = master.tablespaces()?;
    let db_oids = master.database_oids()?;
    let total = master.total_size().unwrap_or(0);
    // Paths from the master reach rsync and the remote shell: same rules as config paths.
    for p in std::iter::once(&data_dir).chain(tablespaces.iter().map(|t| &t.location)) {
        validate::check_path(&p.display().to_string()).map_err(|why| {
            anyhow::anyhow!(
                "the master reports the path '{}', which {why}; pitrkit cannot copy it safely",
                p.display()
            )
        })?;
    }
    let remap = tablespaces
        .iter()
        .map(|t| (t.location.clone(), local_location(sb, t)))
        .collect();
    Ok(Source {
        data_dir,
        tablespaces,
        db_oids,
        total,
        remap,
    })
}

/// One rsync job for the data directory, one per database when the copy is
/// split over several streams, and one per tablespace (its directory created).
fn plan_jobs(sb: &Standby, src: &Source, split: bool) -> Result<Vec<Job>> {
    let cfg = sb.cfg;
    let mut jobs = vec![Job {
        what: "data directory".into(),
        src: src.data_dir.clone(),
        dest: sb.pgdata.clone(),
        filters: data_dir_filters(cfg.pg_conf.is_some(), cfg.pg_hba_conf.is_some(), split),
    }];
    let inner_filters = || vec!["--exclude=pgsql_tmp*".to_string(), "--exclude=pg_internal.init".into()];
    if split {
        fs::create_dir_all(sb.pgdata.join("base"))?;
        for oid in &src.db_oids {
            jobs.push(Job {
                what: format!("database {oid}"),
                src: src.data_dir.join("base").join(oid.to_string()),
                dest: sb.pgdata.join("base").join(oid.to_string()),
                filters: inner_filters(),
            });
        }
    }
    for ((_, local), ts) in src.remap.iter().zip(&src.tablespaces) {
        fsutil::ensure_dir(local, 0o700)
            .with_context(|| format!("creating tablespace directory {}", local.display()))?;
        jobs.push(Job {
            what: format!("tablespace {}", ts.name),
            src: ts.location.clone(),
            dest: local.clone(),
            filters: inner_filters(),
        });
    }
    Ok(jobs)
}

/// "pitrkit base backup for <this host> at <now>".
fn backup_label() -> String {
    format!(
        "pitrkit base backup for {} at {}",
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        chrono::Local::now().format("%Y-%m-%d %H:%M:%S")
    )
}

/// rsync for the copy: the standby's program and flags; no remote fsync
/// (the files are ours, and the copy is synced when it completes).
fn rsync_settings(sb: &Standby) -> RsyncSettings {
    RsyncSettings {
        program: sb.cfg.rsync_program.clone(),
        flags: sb.cfg.rsync_flags.clone(),
        timeout: sb.cfg.rsync_timeout,
        fsync: false,
        includepath: sb.cfg.includepath.clone(),
    }
}

/// Makes the copied files a startable backup: backup_label and
/// tablespace_map as the master returned them, tablespace links, the WAL
/// directories rsync excluded, and the standby's configuration.
fn complete_copy(sb: &Standby, src: &Source, stop: &BackupStop) -> Result<()> {
    write_atomic(&sb.pgdata.join("backup_label"), &stop.labelfile)?;
    let map_path = sb.pgdata.join("tablespace_map");
    if stop.spcmapfile.is_empty() {
        let _ = fs::remove_file(&map_path);
    } else {
        write_atomic(&map_path, &remap_tablespace_map(&stop.spcmapfile, &src.remap))?;
    }
    link_tablespaces(
        &sb.pgdata,
        &src.tablespaces
            .iter()
            .map(|t| t.oid)
            .zip(src.remap.iter().map(|(_, l)| l.clone()))
            .collect::<Vec<_>>(),
    )?;
    for dir in [
        sb.version.wal_dir().to_string(),
        format!("{}/archive_status", sb.version.wal_dir()),
    ] {
        fsutil::ensure_dir(&sb.pgdata.join(dir), 0o700)?;
    }
    super::start::copy_config(sb, false)?;
    if !sb.pgdata.join("postgresql.conf").exists() && !sb.cfg.no_copy_conf {
        log::warn!(
            "{} has no postgresql.conf (Debian keeps it in /etc/postgresql): set pg_conf and pg_hba_conf in {}",
            sb.pgdata.display(),
            sb.cfg.source.display()
        );
    }
    Ok(())
}

/// Runs the rsync jobs on `threads` workers, with a progress bar on a terminal.
fn copy_jobs(sb: &Standby, host: &str, rsync: &RsyncSettings, jobs: &[Job], threads: usize, total: u64) -> Result<u64> {
    use std::io::IsTerminal;
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(total.max(1));
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
            )
            .expect("static template"),
        );
        b
    });
    let per_job: Vec<AtomicU64> = jobs.iter().map(|_| AtomicU64::new(0)).collect();
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.min(jobs.len()).max(1) {
            s.spawn(|| loop {
                if first_error.lock().unwrap().is_some() {
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(job) = jobs.get(i) else { break };
                let progress = |bytes: u64| {
                    per_job[i].store(bytes, Ordering::Relaxed);
                    if let Some(b) = &bar {
                        b.set_position(per_job.iter().map(|a| a.load(Ordering::Relaxed)).sum());
                    }
                };
                let pull = Pull {
                    host,
                    src: &job.src,
                    dest: &job.dest,
                    filters: job.filters.clone(),
                    delete: true,
                };
                log::debug!(
                    "copying {} ({}) into {}",
                    job.what,
                    job.src.display(),
                    job.dest.display()
                );
                match pull_tree(&sb.cfg.ssh, rsync, &pull, Some(&progress)) {
                    Ok(p) if p.vanished => log::info!(
                        "{}: some files vanished during the copy (normal on a live master)",
                        job.what
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        first_error
                            .lock()
                            .unwrap()
                            .get_or_insert(anyhow::Error::new(e).context(format!("copying the {}", job.what)));
                    }
                }
            });
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match first_error.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(per_job.iter().map(|a| a.load(Ordering::Relaxed)).sum()),
    }
}

fn remove_dropped_databases(pgdata: &Path, oids: &[u32]) -> Result<()> {
    for e in fs::read_dir(pgdata.join("base"))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_ok_and(|oid| !oids.contains(&oid)) {
            log::info!("removing base/{name}: that database no longer exists on the master");
            fs::remove_dir_all(e.path())?;
        }
    }
    Ok(())
}

/// pg_tblspc/<oid> symlinks to the standby's tablespace directories
/// (PostgreSQL also recreates them from tablespace_map at startup).
fn link_tablespaces(pgdata: &Path, links: &[(u32, PathBuf)]) -> Result<()> {
    let dir = pgdata.join("pg_tblspc");
    fsutil::ensure_dir(&dir, 0o700)?;
    for (oid, target) in links {
        let link = dir.join(oid.to_string());
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link)
            .with_context(|| format!("linking {} to {}", link.display(), target.display()))?;
    }
    Ok(())
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tablespace_map_is_remapped_line_by_line() {
        let map = "16384 /srv/ts1\n16385 /srv/ts2\n";
        let remap = vec![(PathBuf::from("/srv/ts1"), PathBuf::from("/data/ts1"))];
        assert_eq!(remap_tablespace_map(map, &remap), "16384 /data/ts1\n16385 /srv/ts2\n");
    }

    #[test]
    fn filters_exclude_what_postgresql_documents_and_protect_the_marker() {
        let f = data_dir_filters(true, false, true);
        for must in [
            "--exclude=/pg_wal/*",
            "--exclude=/postmaster.pid",
            "--exclude=/pg_replslot/*",
            "--exclude=pgsql_tmp*",
            "--exclude=/postgresql.conf",
        ] {
            assert!(f.iter().any(|x| x == must), "{must} missing");
        }
        assert!(!f.iter().any(|x| x == "--exclude=/pg_hba.conf"));
        // Protect rules must come before the excludes they shield.
        let p = f.iter().position(|x| x == "--filter=P /base/*").unwrap();
        assert!(p < f.iter().position(|x| x == "--exclude=/base/*").unwrap());
        assert_eq!(f[0], format!("--filter=P /{INCOMPLETE_MARKER}"));
    }

    #[test]
    fn only_what_a_base_backup_owns_is_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let cfg = Path::new("/etc/standby.ini");
        let pgdata = d.path().join("data");
        let ts = d.path().join("ts");
        // Missing or empty: fine.
        check_targets(&pgdata, 42, std::slice::from_ref(&ts), cfg).unwrap();
        fs::create_dir_all(&pgdata).unwrap();
        fs::create_dir_all(&ts).unwrap();
        check_targets(&pgdata, 42, std::slice::from_ref(&ts), cfg).unwrap();
        // Anything else: refused, saying what is there and what to do.
        fs::write(pgdata.join("notes.txt"), "mine").unwrap();
        let msg = check_targets(&pgdata, 42, &[], cfg).unwrap_err().to_string();
        assert!(
            msg.contains("not a PostgreSQL data directory")
                && msg.contains("notes.txt (1 entry)")
                && msg.contains("Empty"),
            "{msg}"
        );
        // A data directory of the same system, or our unfinished copy: ours.
        fs::create_dir(pgdata.join("global")).unwrap();
        fs::write(pgdata.join("global/pg_control"), 42u64.to_le_bytes()).unwrap();
        check_targets(&pgdata, 42, &[], cfg).unwrap();
        let msg = check_targets(&pgdata, 7, &[], cfg).unwrap_err().to_string();
        assert!(
            msg.contains("another database system (system identifier 42; the master's is 7)"),
            "{msg}"
        );
        fs::write(pgdata.join(INCOMPLETE_MARKER), "").unwrap();
        check_targets(&pgdata, 7, &[], cfg).unwrap();
        // Tablespaces: PostgreSQL's version directories only, and only for our copy.
        fs::create_dir(ts.join("PG_15_202209061")).unwrap();
        check_targets(&pgdata, 7, std::slice::from_ref(&ts), cfg).unwrap();
        let fresh = d.path().join("fresh");
        assert!(check_targets(&fresh, 7, std::slice::from_ref(&ts), cfg).is_err());
        fs::write(ts.join("notes.txt"), "mine").unwrap();
        let msg = check_targets(&pgdata, 7, std::slice::from_ref(&ts), cfg)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("tablespace directory") && msg.contains("notes.txt (1 entry)"),
            "{msg}"
        );
        let inside = pgdata.join("ts");
        assert!(check_targets(&pgdata, 7, &[inside], cfg)
            .unwrap_err()
            .to_string()
            .contains("overlaps pgdata"));
    }

    #[test]
    fn bytes_for_humans() {
        assert_eq!(human_bytes(512), "512.0 B");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
