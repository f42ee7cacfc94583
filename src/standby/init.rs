//! `-I`: create pgdata, archivedir and every tablespace directory the master
//! reports (0700), refusing while the local PostgreSQL runs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::report::InitReport;
use super::Standby;
use crate::archive::{mount, sysid};
use crate::fsutil;
use crate::pg::master::{Master, MasterTarget, Tablespace};
use crate::storage::{LocalDir, S3Store, Storage};

/// Where a master tablespace lives on this standby (`tablespace_map`).
pub fn local_location(sb: &Standby, ts: &Tablespace) -> PathBuf {
    sb.cfg
        .tablespace_map
        .iter()
        .find(|(old, _)| old == &ts.location)
        .map(|(_, new)| new.clone())
        .unwrap_or_else(|| ts.location.clone())
}

pub fn run(sb: &Standby) -> Result<InitReport> {
    sb.require_stopped("-I")?;
    let (archive, archivedir) = archive(sb)?;
    let target = MasterTarget::from_standby(sb.cfg)?;
    let mut master = Master::open(&target, "pitrkit init")?;
    let tablespaces = master.tablespaces()?;
    let system_id = master.system_identifier()?;
    let mut dirs: Vec<(String, PathBuf)> = vec![("pgdata".into(), sb.pgdata.clone())];
    dirs.extend(archivedir.map(|d| ("archivedir".into(), d)));
    for ts in &tablespaces {
        dirs.push((
            format!("tablespace {} (master: {})", ts.name, ts.location.display()),
            local_location(sb, ts),
        ));
    }
    let whose = format!("the master {}", target.describe());
    let claim = |a: &dyn Storage| {
        sysid::claim_in(a, system_id, &whose).map_err(|e| anyhow::anyhow!("archivedir {}: {e}", a.location()))
    };
    // Refuse another system's archive before creating anything.
    if let Ok(sysid::Recorded::System(a)) = sysid::read_from(archive.as_ref()) {
        if a != system_id {
            claim(archive.as_ref())?;
        }
    }
    for (what, dir) in &dirs {
        create(dir).with_context(|| format!("creating {what} {}", dir.display()))?;
    }
    // Restore answers "not found" only from a marked archive (an unmounted
    // share is an empty directory); mark it for the master's system.
    let mark = claim(archive.as_ref())?;
    Ok(InitReport {
        created: dirs,
        archivedir: PathBuf::from(archive.location()),
        mark,
    })
}

/// The archive `-I` marks, and its directory if it is local (to create).
/// A share that is not mounted is a bare directory on the root filesystem:
/// marked, restore would answer "not found" from it. An object store must
/// prove that it refuses a second create, which "never overwrite" needs.
fn archive(sb: &Standby) -> Result<(Box<dyn Storage>, Option<PathBuf>)> {
    if let Some(loc) = &sb.cfg.archive_s3 {
        let store = S3Store::open(loc).map_err(|e| anyhow::anyhow!("archivedir {}: {e}", loc.url))?;
        store
            .prove_conditional_create()
            .map_err(|e| anyhow::anyhow!("archivedir {}: {e}", loc.url))?;
        return Ok((Box::new(store), None));
    }
    let archivedir = sb.cfg.required_archivedir("where WAL from the archiver arrives")?;
    mount::check(&archivedir, Path::new(mount::FSTAB), false).map_err(|p| anyhow::anyhow!("archivedir: {p}"))?;
    Ok((Box::new(LocalDir::new(&archivedir)), Some(archivedir)))
}

fn create(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fsutil::ensure_dir(dir, 0o700)?;
    // PostgreSQL refuses a data or tablespace directory others can read.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
