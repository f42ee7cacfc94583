//! What a backup copies from the data directory: every file, with the
//! exclusions PostgreSQL documents (pg_basebackup's list), tablespaces
//! followed through `pg_tblspc/<oid>`, and `global/pg_control` last.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Directories whose contents are not copied (the directory itself is):
/// rebuilt at startup, or meaningless in a copy.
const EMPTY_DIRS: &[&str] = &[
    "pg_wal",
    "pg_dynshmem",
    "pg_notify",
    "pg_replslot",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];

/// Files of the top directory that are not copied. backup_label and
/// tablespace_map come from pg_backup_stop; the signal files would turn
/// the copy into a standby or start a recovery of their own.
const SKIPPED_TOP: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "backup_manifest",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "standby.signal",
    "recovery.signal",
    "recovery.conf",
    crate::layout::PROMOTING_FILE,
    crate::layout::ARCHIVE_ALERT_FILE,
];

/// Skipped in every directory: temporary files and relcache init files.
fn skipped_anywhere(name: &str) -> bool {
    name.starts_with("pgsql_tmp") || name.starts_with("pg_internal.init")
}

/// pg_control: copied after every other file.
pub const PG_CONTROL: &str = "global/pg_control";

/// One thing to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Dir(String),
    File { path: String, source: PathBuf },
}

/// What the data directory holds, in copy order.
#[derive(Debug, Default)]
pub struct Survey {
    pub items: Vec<Item>,
    /// `pg_tblspc/<oid>` links: oid and location.
    pub tablespaces: Vec<(u32, String)>,
}

fn utf8(path: &Path) -> Result<String> {
    match path.to_str() {
        Some(s) if !s.contains('\n') => Ok(s.to_string()),
        _ => bail!(
            "{}: a file name that is not UTF-8 or holds a line break; pitrkit backups cannot record it. Rename or remove it",
            path.display()
        ),
    }
}

/// Surveys `pgdata`.
pub fn survey(pgdata: &Path) -> Result<Survey> {
    let mut s = Survey::default();
    walk(pgdata, "", &mut s)?;
    // A data directory without pg_control is not one.
    if !pgdata.join(PG_CONTROL).is_file() {
        bail!("{}: no {PG_CONTROL}: not a PostgreSQL data directory", pgdata.display());
    }
    s.items.push(Item::File {
        path: PG_CONTROL.into(),
        source: pgdata.join(PG_CONTROL),
    });
    Ok(s)
}

fn walk(dir: &Path, rel: &str, s: &mut Survey) -> Result<()> {
    let mut entries: Vec<_> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .collect::<io::Result<Vec<_>>>()
            .with_context(|| format!("listing {}", dir.display()))?,
        // A database dropped while we copy.
        Err(e) if e.kind() == io::ErrorKind::NotFound && !rel.is_empty() => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = utf8(Path::new(&e.file_name()))?;
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if skipped_anywhere(&name) || (rel.is_empty() && SKIPPED_TOP.contains(&name.as_str())) || path == PG_CONTROL {
            continue;
        }
        let meta = match fs::metadata(e.path()) {
            Ok(m) => m,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err).with_context(|| format!("reading {}", e.path().display())),
        };
        if rel == "pg_tblspc" && e.file_type()?.is_symlink() {
            let target = fs::read_link(e.path())?;
            let oid = name
                .parse()
                .with_context(|| format!("{}: a tablespace link that is not an oid", e.path().display()))?;
            s.tablespaces.push((oid, utf8(&target)?));
        }
        if meta.is_dir() {
            s.items.push(Item::Dir(path.clone()));
            if !(rel.is_empty() && EMPTY_DIRS.contains(&name.as_str())) {
                walk(&e.path(), &path, s)?;
            } else if name == "pg_wal" {
                s.items.push(Item::Dir("pg_wal/archive_status".into()));
            }
        } else if meta.is_file() {
            s.items.push(Item::File { path, source: e.path() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusions_and_pg_control_last() {
        let d = tempfile::tempdir().unwrap();
        let p = &d.path().join("data");
        let ts = d.path().join("ts");
        for dir in [
            "global",
            "base/1",
            "pg_wal/archive_status",
            "pg_replslot/s",
            "pg_tblspc",
        ] {
            fs::create_dir_all(p.join(dir)).unwrap();
        }
        fs::create_dir_all(ts.join("PG_17")).unwrap();
        for f in [
            "global/pg_control",
            "global/1260",
            "base/1/1259",
            "base/1/pg_internal.init",
            "base/pgsql_tmp123",
            "pg_wal/000000010000000000000001",
            "pg_replslot/s/state",
            "postmaster.pid",
            "standby.signal",
            "PG_VERSION",
        ] {
            fs::write(p.join(f), "x").unwrap();
        }
        fs::write(ts.join("PG_17/x"), "x").unwrap();
        std::os::unix::fs::symlink(&ts, p.join("pg_tblspc/16385")).unwrap();
        let s = survey(p).unwrap();
        let files: Vec<&str> = s
            .items
            .iter()
            .filter_map(|i| match i {
                Item::File { path, .. } => Some(path.as_str()),
                Item::Dir(_) => None,
            })
            .collect();
        assert_eq!(
            files,
            [
                "PG_VERSION",
                "base/1/1259",
                "global/1260",
                "pg_tblspc/16385/PG_17/x",
                "global/pg_control"
            ]
        );
        assert!(s.items.contains(&Item::Dir("pg_replslot".into())));
        assert!(s.items.contains(&Item::Dir("pg_wal/archive_status".into())));
        assert!(!s.items.contains(&Item::Dir("pg_replslot/s".into())));
        assert_eq!(s.tablespaces, vec![(16385, ts.display().to_string())]);
    }
}
