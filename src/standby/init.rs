//! `-I`: create pgdata, archivedir and every tablespace directory the master
//! reports (0700), refusing while the local PostgreSQL runs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::report::InitReport;
use super::Standby;
use crate::archive::{mount, sysid};
use crate::fsutil;
use crate::pg::master::{Master, MasterTarget, Tablespace};

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
    let archivedir = sb.cfg.required_archivedir("where WAL from the archiver arrives")?;
    // A share that is not mounted is a bare directory on the root
    // filesystem: marked, restore would answer "not found" from it.
    mount::check(&archivedir, Path::new(mount::FSTAB), false).map_err(|p| anyhow::anyhow!("archivedir: {p}"))?;
    let target = MasterTarget::from_standby(sb.cfg)?;
    let mut master = Master::open(&target, "pitrkit init")?;
    let tablespaces = master.tablespaces()?;
    let system_id = master.system_identifier()?;
    let mut dirs: Vec<(String, PathBuf)> = vec![
        ("pgdata".into(), sb.pgdata.clone()),
        ("archivedir".into(), archivedir.clone()),
    ];
    for ts in &tablespaces {
        dirs.push((
            format!("tablespace {} (master: {})", ts.name, ts.location.display()),
            local_location(sb, ts),
        ));
    }
    // Refuse another system's archive before creating anything.
    if let Ok(sysid::Recorded::System(a)) = sysid::read(&archivedir) {
        if a != system_id {
            sysid::claim(&archivedir, system_id, &format!("the master {}", target.describe()))
                .map_err(|e| anyhow::anyhow!("archivedir {}: {e}", archivedir.display()))?;
        }
    }
    for (what, dir) in &dirs {
        create(dir).with_context(|| format!("creating {what} {}", dir.display()))?;
    }
    // Restore answers "not found" only from a marked archive (an unmounted
    // share is an empty directory); mark it for the master's system.
    let mark = sysid::claim(&archivedir, system_id, &format!("the master {}", target.describe()))
        .map_err(|e| anyhow::anyhow!("archivedir {}: {e}", archivedir.display()))?;
    Ok(InitReport {
        created: dirs,
        archivedir,
        mark,
    })
}

fn create(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fsutil::ensure_dir(dir, 0o700)?;
    // PostgreSQL refuses a data or tablespace directory others can read.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
