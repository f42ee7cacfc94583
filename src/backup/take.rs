//! `pitrkit backup`: one held session to the local cluster (master or
//! standby), a non-exclusive backup, every file compressed into the set,
//! pg_control last, the WAL range from the archive, the manifest last.

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::files::{self, Item, Survey};
use super::incremental::Base;
use super::manifest::{parse_lsn, FileEntry, Manifest};
use super::pool;
use super::repo::{id_at, Repository};
use super::walrange;
use crate::archive::sysid::{self, Recorded};
use crate::config::{BackupConfig, BackupType};
use crate::integrity::Summer;
use crate::layout::backup::{MANIFEST, WAL_DIR};
use crate::pg::master::{Master, MasterTarget};
use crate::storage::{LocalDir, Storage};
use crate::wal;

/// What a finished backup reports.
#[derive(Debug, Clone)]
pub struct TakeReport {
    pub manifest: Manifest,
    pub seconds: f64,
}

impl TakeReport {
    pub fn summary(&self) -> String {
        let m = &self.manifest;
        let refs = m.files.iter().filter(|f| f.holder.is_some()).count();
        let kind = match m.kind {
            BackupType::Full => "full".to_string(),
            BackupType::Incremental => format!(
                "incremental: {refs} unchanged files referenced in {}",
                if refs == 0 {
                    "none".to_string()
                } else {
                    m.depends_on().join(", ")
                }
            ),
        };
        format!(
            "backup {} complete ({kind}): {} files, {} MiB ({} MiB stored), WAL {}..{} on timeline {}, in {:.1} s",
            m.id,
            m.files.len(),
            m.original_size() >> 20,
            m.stored_size() >> 20,
            super::manifest::format_lsn(m.start_lsn),
            super::manifest::format_lsn(m.stop_lsn),
            m.timeline,
            self.seconds
        )
    }
}

/// The local server: socket directory and port (configured, else from postmaster.pid).
fn local_server(cfg: &BackupConfig) -> Result<(PathBuf, u16)> {
    let pid = crate::pg::postmaster_listen(&cfg.pgdata);
    let port = cfg.port.or(pid.as_ref().map(|p| p.0));
    let socket = cfg
        .socket_dir
        .clone()
        .or_else(|| pid.as_ref().and_then(|p| p.1.clone()).map(PathBuf::from));
    match (socket, port) {
        (Some(s), Some(p)) => Ok((s, p)),
        _ => bail!(
            "no PostgreSQL server runs in {} (no postmaster.pid naming a port and unix socket directory), and {} does not set port and socket_dir: \
             start the server, or set both keys",
            cfg.pgdata.display(),
            cfg.source.display()
        ),
    }
}

/// The checks before the backup starts: the server serves `pgdata`, and
/// the archive belongs to its database system.
fn check_source(cfg: &BackupConfig, session: &mut Master, archive: &LocalDir) -> Result<u64> {
    let served = session.data_directory()?;
    let same = |a: &Path, b: &Path| {
        a.canonicalize()
            .ok()
            .zip(b.canonicalize().ok())
            .is_some_and(|(x, y)| x == y)
    };
    if !same(&served, &cfg.pgdata) {
        bail!(
            "the server reached serves {}, not pgdata {} from {}: fix port/socket_dir or pgdata",
            served.display(),
            cfg.pgdata.display(),
            cfg.source.display()
        );
    }
    let system = session.system_identifier()?;
    if let Err(why) = archive.available() {
        bail!("archivedir {}: {why}", archive.location());
    }
    match sysid::read_from(archive)? {
        Recorded::System(id) if id != system => bail!(
            "archivedir {} belongs to database system {id}, but the cluster in {} is system {system}: point archivedir at this cluster's archive",
            archive.location(),
            cfg.pgdata.display()
        ),
        _ => Ok(system),
    }
}

/// A reader that sums what passes through it.
struct Summing<R> {
    inner: R,
    sum: Summer,
}

impl<R: Read> Read for Summing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sum.update(&buf[..n]);
        Ok(n)
    }
}

/// Compresses `input` into the set as `stored`; its size, CRC and stored bytes.
fn store(set: &dyn Storage, cfg: &BackupConfig, stored: &str, input: impl Read) -> Result<(u64, u32, u64)> {
    let mut r = Summing {
        inner: input,
        sum: Summer::default(),
    };
    let mut written = 0;
    set.put_stream_deferred(stored, &mut |w| {
        let c = cfg
            .compression
            .compress(&mut r, w, cfg.compression_level)
            .map_err(io::Error::other)?;
        written = c.written;
        Ok(())
    })
    .with_context(|| format!("storing {}", set.locate(stored)))?;
    let sum = r.sum.finish();
    Ok((sum.size, sum.crc, written))
}

/// Copies one file of the data directory, or references it in the set
/// that stores it when `base` has it unchanged; `None` if it vanished
/// meanwhile (a dropped table: WAL replay removes it anyway).
fn copy_file(
    set: &dyn Storage,
    cfg: &BackupConfig,
    m: &Manifest,
    base: Option<&Base>,
    path: &str,
    source: &Path,
) -> Result<Option<FileEntry>> {
    let f = match File::open(source) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", source.display())),
    };
    let md = f.metadata().with_context(|| format!("reading {}", source.display()))?;
    let mtime = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    if let Some(r) = base.and_then(|b| b.reference(path, md.len(), mtime)) {
        return Ok(Some(r));
    }
    let (size, crc, stored) = store(set, cfg, &m.stored_name(path), f)?;
    Ok(Some(FileEntry {
        path: path.to_string(),
        size,
        mtime,
        crc,
        stored,
        holder: None,
    }))
}

fn progress(total: u64) -> Option<indicatif::ProgressBar> {
    io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(total.max(1));
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
                .expect("static template"),
        );
        b
    })
}

/// Copies every surveyed item into the set: the files on a few workers
/// (largest first), the manifest in survey order, and pg_control (the
/// survey's last file) alone after all the others, as pg_basebackup does.
fn copy_all(
    set: &dyn Storage,
    cfg: &BackupConfig,
    survey: &Survey,
    base: Option<&Base>,
    m: &mut Manifest,
    total: u64,
) -> Result<()> {
    let bar = progress(total);
    let mut files: Vec<(&str, &Path)> = Vec::new();
    for item in &survey.items {
        match item {
            Item::Dir(d) => m.dirs.push(d.clone()),
            Item::File { path, source } => files.push((path, source)),
        }
    }
    let last = files.pop();
    let sizes: Vec<u64> = files
        .iter()
        .map(|(_, src)| std::fs::metadata(src).map_or(0, |md| md.len()))
        .collect();
    let order = pool::largest_first(files.len(), |i| sizes[i]);
    let manifest = &*m;
    let copy = |(path, source): &(&str, &Path)| {
        let e = copy_file(set, cfg, manifest, base, path, source)?;
        if let (Some(b), Some(e)) = (&bar, &e) {
            b.inc(e.size);
        }
        Ok(e)
    };
    let copied = pool::map_ordered(&files, &order, pool::workers(), copy)?;
    let pg_control = last.map(|f| copy(&f)).transpose()?.flatten();
    m.files.extend(copied.into_iter().flatten().chain(pg_control));
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(())
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A fresh set ID: the current second, or a later one if a set has it.
fn fresh_id(repo: &Repository) -> Result<String> {
    let taken: Vec<String> = repo.sets()?.into_iter().map(|s| s.id).collect();
    loop {
        let id = id_at(chrono::Utc::now().timestamp());
        if !taken.contains(&id) {
            return Ok(id);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// "START TIMELINE: 1" from backup_label.
fn label_timeline(label: &str) -> Option<u32> {
    label
        .lines()
        .find_map(|l| l.strip_prefix("START TIMELINE: "))
        .and_then(|t| t.trim().parse().ok())
}

/// The base of an incremental: the newest complete set of this system.
/// Without one the backup is a full one, and says so.
fn choose_base<'a>(repo: &Repository, kind: BackupType, system: u64, sets: &'a [Manifest]) -> Option<Base<'a>> {
    if kind == BackupType::Full {
        return None;
    }
    let base = Base::newest(sets, system);
    match &base {
        Some(b) => log::info!("incremental backup on {} (the newest complete backup of this system)", b.manifest.id),
        None => log::warn!(
            "an incremental backup was asked for, but {} holds no complete backup of database system {system} to build on: \
             taking a full backup instead",
            repo.location()
        ),
    }
    base
}

/// Takes a backup of type `kind` (an incremental without a previous
/// complete backup is a full one). `user`: the role when db_user is unset.
pub fn run(cfg: &BackupConfig, user: &str, kind: BackupType) -> Result<TakeReport> {
    let started = std::time::Instant::now();
    let repo = Repository::open(&cfg.backup_dir)?;
    let _lock = repo.lock("this backup")?;
    remove_incomplete(&repo)?;
    abort_orphaned_uploads(&repo)?;
    let (socket, port) = local_server(cfg)?;
    let mut session = Master::open_local(&socket, port, cfg.db_user.as_deref().unwrap_or(user), "pitrkit backup")?;
    let archive = LocalDir::new(&cfg.archivedir);
    let system_id = check_source(cfg, &mut session, &archive)?;
    super::expire::check_hold_owner(&archive, &repo.store.location())?;
    let in_recovery = session.in_recovery()?;
    let segment_size = session.wal_segment_size()?;
    let total = session.total_size().unwrap_or(0);
    let sets = repo.complete()?;
    let base = choose_base(&repo, kind, system_id, &sets);
    let id = fresh_id(&repo)?;
    let set = repo.store.scoped(&id)?;
    let mut m = Manifest {
        id: id.clone(),
        kind: if base.is_some() { kind } else { BackupType::Full },
        system_id,
        pg_version: session.version.0,
        timeline: 1,
        segment_size,
        start_lsn: 0,
        stop_lsn: 0,
        start_time: now_micros(),
        stop_time: 0,
        compression: cfg.compression,
        tablespaces: Vec::new(),
        dirs: Vec::new(),
        files: Vec::new(),
        wal: Vec::new(),
    };
    let result = (|| {
        let start = session.backup_start(&format!("pitrkit backup {id}"))?;
        m.start_lsn = parse_lsn(&start).with_context(|| format!("pg_backup_start returned '{start}'"))?;
        let tl = session.checkpoint_timeline()?;
        super::expire::hold_for_running(
            &archive,
            &wal::segment_name(tl, m.start_lsn / segment_size, segment_size),
            &repo.store.location(),
        )?;
        log::info!(
            "backup {id} started at LSN {start} (the cluster is a {})",
            if in_recovery { "standby" } else { "master" }
        );
        let survey = files::survey(&cfg.pgdata)?;
        m.tablespaces = survey.tablespaces.clone();
        copy_all(&*set, cfg, &survey, base.as_ref(), &mut m, total)?;
        // Not PostgreSQL's wait (it checks once a second): `finish` waits for the
        // last segment in archivedir itself, where the set's WAL comes from.
        let stop = session.backup_stop(false)?;
        m.stop_time = now_micros();
        finish(cfg, &*set, &archive, &mut m, &stop, in_recovery)
    })();
    drop(session);
    if let Err(e) = result {
        // No half-written set may stay behind looking like one.
        let _ = repo.store.delete_tree(&id);
        return Err(e.context(format!("backup {id} failed; nothing of it was kept")));
    }
    Ok(TakeReport {
        manifest: m,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// After pg_backup_stop: backup_label and tablespace_map, the WAL range,
/// then the manifest, durably, last.
fn finish(
    cfg: &BackupConfig,
    set: &dyn Storage,
    archive: &LocalDir,
    m: &mut Manifest,
    stop: &crate::pg::master::BackupStop,
    in_recovery: bool,
) -> Result<()> {
    m.stop_lsn = parse_lsn(&stop.lsn).with_context(|| format!("pg_backup_stop returned '{}'", stop.lsn))?;
    m.timeline =
        label_timeline(&stop.labelfile).context("pg_backup_stop returned a backup_label without START TIMELINE")?;
    let mtime = m.stop_time / 1_000_000;
    for (name, text) in [("backup_label", &stop.labelfile), ("tablespace_map", &stop.spcmapfile)] {
        if name == "tablespace_map" && text.is_empty() {
            continue;
        }
        let (size, crc, stored) = store(set, cfg, &m.stored_name(name), text.as_bytes())?;
        m.files.push(FileEntry {
            path: name.into(),
            size,
            mtime,
            crc,
            stored,
            holder: None,
        });
    }
    let segments = walrange::range(m.timeline, m.start_lsn, m.stop_lsn, m.segment_size);
    let last = segments.last().cloned().unwrap_or_default();
    let mut nudge = || ask_master_to_switch(cfg, in_recovery);
    walrange::wait_for(archive, &last, cfg.backup_wal_timeout, &mut nudge)?;
    let set_wal = set.scoped(WAL_DIR)?;
    set_wal.write_mark(&sysid::content(Some(m.system_id)))?;
    m.wal = walrange::copy(archive, &*set_wal, &segments, m.timeline)?;
    set.sync_deferred()
        .with_context(|| format!("making {} durable", set.location()))?;
    set.put_stream(MANIFEST, &mut |w| w.write_all(m.render().as_bytes()))
        .with_context(|| format!("writing {}", set.locate(MANIFEST)))?;
    Ok(())
}

/// On a standby, pg_backup_stop neither switches WAL nor waits: ask the
/// master (when one is configured) to close its segment.
fn ask_master_to_switch(cfg: &BackupConfig, in_recovery: bool) {
    let Some(sb) = cfg.standby.as_deref().filter(|_| in_recovery) else {
        return;
    };
    if sb.master_host.is_none() {
        return;
    }
    let switched = MasterTarget::from_standby(sb)
        .map_err(anyhow::Error::from)
        .and_then(|t| Ok(Master::open(&t, "pitrkit backup")?.switch_wal()?));
    match switched {
        Ok(lsn) => log::info!("asked the master to switch WAL (pg_switch_wal() returned {lsn})"),
        Err(e) => log::warn!("could not ask the master for pg_switch_wal(): {e:#}; waiting for the segment anyway"),
    }
}

/// Removes sets without a manifest (a killed backup's leftovers): under the
/// lock nobody is writing them. Never one a complete set references files
/// in: that one lost its manifest, and its files are still needed.
fn remove_incomplete(repo: &Repository) -> Result<()> {
    let sets = repo.sets()?;
    let referenced: Vec<String> = sets
        .iter()
        .filter_map(|s| s.manifest.as_ref().ok())
        .flat_map(Manifest::depends_on)
        .collect();
    for s in sets {
        if referenced.contains(&s.id) {
            log::warn!(
                "backup set {} has no readable manifest, but other backups reference files in it: kept. \
                 Restore its manifest, or remove the backups that depend on it (`backup --list` shows them)",
                repo.store.locate(&s.id)
            );
            continue;
        }
        if s.manifest.is_err() && repo.store.stat(&format!("{}/{MANIFEST}", s.id))?.is_none() {
            log::info!("removing incomplete backup set {} (a failed or killed backup)", s.id);
            repo.store.delete_tree(&s.id).with_context(|| {
                format!(
                    "removing the incomplete backup set {}: remove it by hand (it has no manifest, so no backup is lost)",
                    repo.store.locate(&s.id)
                )
            })?;
        }
    }
    Ok(())
}

/// Aborts the multipart uploads a killed backup left in an S3 repository
/// (under the lock nobody is uploading), so that their parts are not kept
/// and billed.
pub fn abort_orphaned_uploads(repo: &Repository) -> Result<()> {
    let n = repo.store.reclaim().with_context(|| {
        format!(
            "aborting the multipart uploads killed backups left in {}: see the message, then run backup --expire again",
            repo.location()
        )
    })?;
    if n > 0 {
        log::info!(
            "aborted {n} multipart upload(s) a killed backup left in {}",
            repo.location()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::manifest::tests::sample;

    #[test]
    fn a_set_others_reference_is_not_removed_as_incomplete() {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::open(&crate::config::backup::BackupDir::Dir(d.path().to_path_buf())).unwrap();
        let inc = Manifest {
            id: "20261130T000000Z".into(),
            kind: BackupType::Incremental,
            files: vec![FileEntry {
                holder: Some("20261129T000000Z".into()),
                ..sample().files[0].clone()
            }],
            ..sample()
        };
        for id in ["20261129T000000Z", "20261128T000000Z", &inc.id] {
            std::fs::create_dir_all(d.path().join(id).join("data")).unwrap();
        }
        std::fs::write(d.path().join(&inc.id).join(MANIFEST), inc.render()).unwrap();
        remove_incomplete(&repo).unwrap();
        assert!(d.path().join("20261129T000000Z").exists(), "referenced: kept");
        assert!(
            !d.path().join("20261128T000000Z").exists(),
            "a killed backup's leftovers: removed"
        );
    }
}
