//! `pitrkit recover`: a backup set restored into an empty directory, every
//! checksum checked, then made a point-in-time recovery (recovery.signal,
//! settings in postgresql.auto.conf only) with PostgreSQL's own
//! `backup_manifest`, so `pg_verifybackup` accepts the copy before it starts.

use crate::config::ConfigFile;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::incremental::Sources;
use super::manifest::{format_lsn, FileEntry, Manifest};
use super::pgmanifest;
use super::repo::Repository;
use super::target::{self, Target};
use crate::config::backup::BackupDir;
use crate::config::BackupConfig;
use crate::fsutil;
use crate::integrity::Summer;
use crate::layout::backup::PG_MANIFEST;
use crate::pg::LocalCluster;
use crate::storage::LocalDir;

/// What to recover, where.
#[derive(Debug, Clone)]
pub struct Request {
    pub to: PathBuf,
    pub target: Target,
    pub backup: Option<String>,
    /// Tablespace locations: old=new.
    pub tablespace_map: Vec<(PathBuf, PathBuf)>,
    pub port: Option<u16>,
    pub keep_archiving: bool,
    /// The program PostgreSQL runs as restore_command (this one).
    pub program: PathBuf,
}

pub struct Recovered {
    pub manifest: Manifest,
    /// Why this set, when it was a guess.
    pub note: Option<String>,
    pub dir: PathBuf,
    /// The repository's read lock: expire removes no set or WAL until this is dropped.
    pub reading: super::repo::ReadGuard,
}

/// A file written durably into the new directory (`write_durable` cannot
/// stream), read from the set or from the set a reference names.
struct Restoring<'a> {
    src: &'a Sources<'a>,
}

impl Restoring<'_> {
    /// Restores `f` to `dest`, checking its size and CRC-32C.
    fn file(&self, f: &FileEntry, dest: &Path) -> Result<()> {
        let id = &self.src.m.id;
        let at = self.src.locate(f);
        let (set, stored) = (at.store, &at.stored);
        let input = set
            .get(stored)
            .with_context(|| format!("damaged backup set {id}: {} cannot be read", set.locate(stored)))?;
        let out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dest)
            .with_context(|| format!("creating {}", dest.display()))?;
        let mut w = Summing {
            inner: io::BufWriter::with_capacity(1 << 20, out),
            sum: Summer::default(),
        };
        at.codec
            .decompress(input, &mut w)
            .with_context(|| format!("damaged backup set {id}: {}", set.locate(stored)))?;
        let out = w.inner.into_inner().map_err(|e| e.into_error())?;
        let sum = w.sum.finish();
        if sum.size != f.size || sum.crc != f.crc {
            bail!(
                "damaged backup set {}: {} holds {} bytes with CRC-32C {:08x}, but the manifest says {} bytes with {:08x}. \
                 Recover from another backup (--backup ID); `pitrkit backup --verify` checks every set",
                id,
                set.locate(stored),
                sum.size,
                sum.crc,
                f.size,
                f.crc
            );
        }
        // Made durable all at once at the end (syncfs), not file by file.
        out.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(f.mtime.max(0) as u64))?;
        Ok(())
    }
}

struct Summing<W> {
    inner: W,
    sum: Summer,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sum.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Refuses anything but a missing or empty directory.
fn check_empty(dir: &Path, what: &str) -> Result<()> {
    match fs::read_dir(dir) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                bail!(
                    "{what} {} is not empty: recover writes only into a missing or empty directory",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("{what} {}", dir.display())),
    }
}

fn mkdir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Each tablespace's new location.
fn tablespace_locations(m: &Manifest, req: &Request) -> Vec<(u32, PathBuf, PathBuf)> {
    m.tablespaces
        .iter()
        .map(|(oid, old)| {
            let old = PathBuf::from(old);
            let new = req
                .tablespace_map
                .iter()
                .find(|(o, _)| *o == old)
                .map_or_else(|| old.clone(), |(_, n)| n.clone());
            (*oid, old, new)
        })
        .collect()
}

/// Recovers. Nothing is started; see [`start`].
pub fn run(cfg: &BackupConfig, req: &Request) -> Result<Recovered> {
    let repo = Repository::open(&cfg.backup_dir)?;
    // Taken before the set is chosen: expire cannot remove it from under us.
    let reading = repo.read_lock()?;
    let sets = repo.complete()?;
    let archive = LocalDir::new(&cfg.archivedir);
    let hold = crate::cleanup::read_mark(&archive, crate::layout::backup::HOLD_FILE);
    let (m, note) = target::choose_held(&sets, &req.target, req.backup.as_deref(), hold.as_ref())?;
    target::check_archive_end(&archive, &m, &req.target)?;
    check_empty(&req.to, "the target directory")?;
    let spaces = tablespace_locations(&m, req);
    for (_, _, new) in &spaces {
        check_empty(new, "the tablespace directory")?;
    }
    let src = Sources::open(&repo, &m, &sets).map_err(anyhow::Error::msg)?;
    let made = restore_files(&src, req, &spaces)
        .and_then(|files| configure(cfg, &m, req, files))
        .and_then(|()| {
            for dir in std::iter::once(&req.to).chain(spaces.iter().map(|(_, _, new)| new)) {
                nix::unistd::syncfs(fs::File::open(dir)?).with_context(|| format!("syncing {}", dir.display()))?;
            }
            Ok(())
        });
    if let Err(e) = made {
        // Everything there is ours: the directories were empty or missing.
        let _ = fs::remove_dir_all(&req.to);
        for (_, _, new) in &spaces {
            let _ = fs::remove_dir_all(new);
        }
        return Err(e.context(format!("nothing was left in {}; nothing was started", req.to.display())));
    }
    Ok(Recovered {
        manifest: m,
        note,
        dir: req.to.clone(),
        reading,
    })
}

/// Directories, tablespace links and files; the manifest's files as
/// restored (tablespace_map rewritten for moved tablespaces).
fn restore_files(src: &Sources, req: &Request, spaces: &[(u32, PathBuf, PathBuf)]) -> Result<Vec<FileEntry>> {
    let m = src.m;
    mkdir(&req.to)?;
    for (oid, _, new) in spaces {
        mkdir(new)?;
        mkdir(&req.to.join("pg_tblspc"))?;
        std::os::unix::fs::symlink(new, req.to.join(format!("pg_tblspc/{oid}")))?;
    }
    for d in &m.dirs {
        let p = req.to.join(d);
        if !p.exists() {
            mkdir(&p)?;
        }
    }
    for parent in m
        .files
        .iter()
        .filter_map(|f| req.to.join(&f.path).parent().map(Path::to_path_buf))
    {
        if !parent.exists() {
            mkdir(&parent)?;
        }
    }
    let remap = spaces.iter().any(|(_, old, new)| old != new);
    let r = Restoring { src };
    // The files on a few workers, largest first; the list keeps the manifest's order.
    let order = super::pool::largest_first(m.files.len(), |i| m.files[i].size);
    super::pool::map_ordered(&m.files, &order, super::pool::workers(), |f| {
        let dest = req.to.join(&f.path);
        if f.path == "tablespace_map" && remap {
            return remap_tablespace_map(src, f, &dest, spaces);
        }
        r.file(f, &dest)?;
        Ok(f.clone())
    })
}

/// tablespace_map with the new locations; its manifest entry to match.
fn remap_tablespace_map(
    src: &Sources,
    f: &FileEntry,
    dest: &Path,
    spaces: &[(u32, PathBuf, PathBuf)],
) -> Result<FileEntry> {
    let mut text = Vec::new();
    let at = src.locate(f);
    at.codec.decompress(at.store.get(&at.stored)?, &mut text)?;
    let remap: Vec<(PathBuf, PathBuf)> = spaces.iter().map(|(_, o, n)| (o.clone(), n.clone())).collect();
    let new = crate::standby::basebackup::remap_tablespace_map(&String::from_utf8_lossy(&text), &remap);
    fsutil::write_durable(dest, new.as_bytes(), 0o600)?;
    let mut sum = Summer::default();
    sum.update(new.as_bytes());
    let s = sum.finish();
    Ok(FileEntry {
        size: s.size,
        crc: s.crc,
        ..f.clone()
    })
}

/// The recovery settings, recovery.signal and backup_manifest.
fn configure(cfg: &BackupConfig, m: &Manifest, req: &Request, mut files: Vec<FileEntry>) -> Result<()> {
    if req.target == Target::Standby {
        standby_settings(cfg, req)?;
        // -S's private passfile (repl_db_password): listed, so pg_verifybackup accepts the copy.
        files.extend(written_entry(&req.to, crate::standby::PASSFILE)?);
    } else {
        let auto = req.to.join("postgresql.auto.conf");
        let mut conf = fs::read_to_string(&auto).unwrap_or_default();
        conf.push_str(&settings(cfg, m, req)?);
        fsutil::write_durable(&auto, conf.as_bytes(), 0o600)?;
        fsutil::write_durable(&req.to.join("recovery.signal"), b"", 0o600)?;
    }
    let restored = Manifest { files, ..m.clone() };
    fsutil::write_durable(
        &req.to.join(PG_MANIFEST),
        pgmanifest::render(&restored).as_bytes(),
        0o600,
    )?;
    fsutil::fsync_dir(&req.to)?;
    Ok(())
}

/// The manifest entry of a file recover wrote into `dir`, if it is there.
fn written_entry(dir: &Path, path: &str) -> Result<Option<FileEntry>> {
    let file = dir.join(path);
    let bytes = match fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let mtime = fs::metadata(&file)?
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut sum = Summer::default();
    sum.update(&bytes);
    let s = sum.finish();
    Ok(Some(FileEntry {
        path: path.to_string(),
        size: s.size,
        mtime,
        crc: s.crc,
        stored: 0,
        holder: None,
    }))
}

/// The lines appended to postgresql.auto.conf for a targeted recovery.
fn settings(cfg: &BackupConfig, m: &Manifest, req: &Request) -> Result<String> {
    use crate::standby::{command_word, recovery::quote};
    let config = cfg
        .source
        .canonicalize()
        .with_context(|| format!("{}", cfg.source.display()))?;
    let restore_command = format!(
        "{} recover -C {} --backup {} --restore-wal %f %p",
        command_word(&req.program, "the pitrkit binary")?,
        command_word(&config, "the configuration file")?,
        m.id
    );
    let mut s = format!(
        "\n# Added by pitrkit recover from backup {} (WAL {}..{}, timeline {}).\nrestore_command = {}\n",
        m.id,
        format_lsn(m.start_lsn),
        format_lsn(m.stop_lsn),
        m.timeline,
        quote(&restore_command)
    );
    let (key, value) = match &req.target {
        Target::Time(t, _) => ("recovery_target_time", t.clone()),
        Target::Xid(x) => ("recovery_target_xid", x.clone()),
        Target::Lsn(l) => ("recovery_target_lsn", format_lsn(*l)),
        Target::Name(n) => ("recovery_target_name", n.clone()),
        Target::Immediate | Target::Standby => ("recovery_target", "immediate".to_string()),
    };
    s += &format!("{key} = {}\nrecovery_target_action = 'promote'\n", quote(&value));
    if !req.keep_archiving {
        // A recovered copy must not write a new timeline into production's archive.
        s += "archive_mode = 'off'\n";
    }
    if let Some(p) = req.port {
        s += &format!("port = {p}\n");
    }
    Ok(s)
}

/// `--standby`: the standby.ini's own settings (restore and cleanup through
/// its archive, primary_conninfo as `-S` writes it), standby.signal, no target.
fn standby_settings(cfg: &BackupConfig, req: &Request) -> Result<()> {
    use crate::standby::{recovery, start, Standby};
    let Some(sb_cfg) = cfg.standby.as_deref() else {
        bail!(
            "--standby builds a standby from its standby.ini, but {} is a backup.ini: run recover -C <standby.ini> --standby",
            cfg.source.display()
        );
    };
    let mut sb_cfg = sb_cfg.clone();
    sb_cfg.pgdata = Some(req.to.clone());
    let sb = Standby::new(&sb_cfg)?;
    let s = start::standby_settings(&sb)?;
    recovery::write(&req.to, sb.version, recovery::Mode::Standby, &s, None)?;
    if let Some(p) = req.port {
        let auto = req.to.join("postgresql.auto.conf");
        let conf = fs::read_to_string(&auto).unwrap_or_default() + &format!("port = {p}\n");
        fsutil::write_durable(&auto, conf.as_bytes(), 0o600)?;
    }
    Ok(())
}

/// PostgreSQL's restore_command for a recovered copy: the set's WAL first,
/// then archivedir.
pub fn restore_wal(
    cfg: &BackupConfig,
    id: &str,
    wanted: &str,
    dest: &Path,
) -> Result<crate::restore::RestoreOutcome, crate::restore::RestoreError> {
    use crate::restore::{restore, RestoreOutcome};
    let empty = crate::config::IniFile::parse(&cfg.source, "").map_err(crate::restore::RestoreError::Config)?;
    let mut sb = crate::config::StandbyConfig::from_ini(&empty)?;
    sb.notify = cfg.notify.clone();
    let set_wal = format!("{id}/{}", crate::layout::backup::WAL_DIR);
    let repo_wal = match &cfg.backup_dir {
        BackupDir::Dir(d) => (Some(d.join(&set_wal)), None),
        BackupDir::S3 { loc, .. } => {
            let mut loc = loc.clone();
            loc.url.prefix = [loc.url.prefix.as_str(), &set_wal]
                .iter()
                .filter(|p| !p.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("/");
            (None, Some(loc))
        }
    };
    for (dir, s3) in [repo_wal, (Some(cfg.archivedir.clone()), None)] {
        (sb.archivedir, sb.archive_s3) = (dir, s3);
        match restore(&sb, wanted, dest)? {
            RestoreOutcome::NotFound => continue,
            found => return Ok(found),
        }
    }
    Ok(RestoreOutcome::NotFound)
}

/// What PostgreSQL 13+ says when the WAL ends before the target.
const NOT_REACHED: &str = "recovery ended before configured recovery target was reached";
/// What it says once recovery is over and the server promoted.
const PROMOTED: &str = "database system is ready to accept connections";

/// Starts the recovered server (the binaries of the backup's major version)
/// and waits until recovery has reached its target and the server promoted.
pub fn start(m: &Manifest, dir: &Path, includepath: &[PathBuf], timeout: Duration) -> Result<PathBuf> {
    let major = crate::pg::version::PgVersion(m.pg_version).major();
    let cluster = includepath
        .iter()
        .cloned()
        .chain(crate::tools::postgres_bindirs())
        .filter(|d| d.join("pg_ctl").is_file())
        .map(|bindir| LocalCluster {
            bindir,
            datadir: dir.to_path_buf(),
            run_as: None,
        })
        .find(|c| c.binary_major().ok() == Some(major))
        .with_context(|| {
            format!("no PostgreSQL {major} binaries (pg_ctl) found on this host to start the recovered copy")
        })?;
    let log = dir.join(crate::pg::DEFAULT_SERVER_LOG);
    let started = Instant::now();
    let outcome = cluster.start(Some(&log), None, timeout);
    loop {
        let text = fs::read_to_string(&log).unwrap_or_default();
        if text.contains(NOT_REACHED) {
            bail!(
                "PostgreSQL stopped: \"{NOT_REACHED}\": the WAL in the backup set and archivedir ends before the target. \
                 Choose an earlier target, or make the missing WAL available in archivedir and start the server again ({})",
                log.display()
            );
        }
        if text.contains(PROMOTED) {
            return Ok(log);
        }
        if let Err(e) = &outcome {
            bail!("starting the recovered server failed: {e}; see {}", log.display());
        }
        if !cluster.is_running() || started.elapsed() > timeout {
            bail!("the recovered server did not finish recovery; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}
