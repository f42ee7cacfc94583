//! `.pitrkit-system-id`: which database system an archive directory belongs
//! to, and proof that the directory was set up with `-I`.
//!
//! Only `-I` creates the file, so an archive call that finds none is looking
//! at a directory nobody prepared, typically the empty mount point of an NFS
//! share that is not mounted, and refuses to write WAL onto the root
//! filesystem. The file holds the system identifier from
//! `<pgdata>/global/pg_control`, or nothing ("unclaimed") when `-I` could not
//! read it; the first archived segment then claims the directory.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::storage::{LocalDir, Storage};

pub use super::layout::SYSTEM_ID_FILE;

/// The database system identifier from `<pgdata>/global/pg_control`: its
/// first field (a little-endian u64) in every PostgreSQL version.
pub fn pg_control_system_id(pgdata: &Path) -> io::Result<u64> {
    let path = pgdata.join("global").join("pg_control");
    let mut buf = [0u8; 8];
    File::open(&path)?.read_exact(&mut buf)?;
    match u64::from_le_bytes(buf) {
        0 => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} holds no system identifier", path.display()),
        )),
        id => Ok(id),
    }
}

/// What a directory's `.pitrkit-system-id` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// No such file: never initialized with `-I` (or the share is not mounted).
    Missing,
    /// Created by `-I` without knowing the system; the first segment claims it.
    Unclaimed,
    System(u64),
}

/// The mark of a local archive directory.
pub fn read(dir: &Path) -> io::Result<Recorded> {
    read_from(&LocalDir::new(dir))
}

/// The mark of an archive.
pub fn read_from(s: &dyn Storage) -> io::Result<Recorded> {
    match s.read_mark()? {
        None => Ok(Recorded::Missing),
        Some(text) => parse(&text, &s.locate(SYSTEM_ID_FILE)),
    }
}

/// Reads the content of a mark (`where_` names it in the error).
pub fn parse(text: &str, where_: &str) -> io::Result<Recorded> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(Recorded::Unclaimed);
    }
    t.parse().map(Recorded::System).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{where_} should hold a database system identifier (digits) but holds '{}'",
                t.chars().take(40).collect::<String>()
            ),
        )
    })
}

/// The content of a mark: the identifier and a newline, or nothing (unclaimed).
pub fn content(id: Option<u64>) -> String {
    id.map(|i| format!("{i}\n")).unwrap_or_default()
}

/// Replaces the file durably: temporary file, fsync, rename, directory fsync.
pub fn write(dir: &Path, id: Option<u64>) -> io::Result<()> {
    write_to(&LocalDir::new(dir), id)
}

/// Replaces an archive's mark durably.
pub fn write_to(s: &dyn Storage, id: Option<u64>) -> io::Result<()> {
    s.write_mark(&content(id))
}

/// `-I` for one archive directory (which exists). Returns a note for the
/// operator, or the problem.
pub fn init_dir(dir: &Path, pgdata: Option<&Path>) -> Result<String, String> {
    init_store(&LocalDir::new(dir), pgdata)
}

/// `-I` for one archive (a directory or an object storage prefix).
pub fn init_store(s: &dyn Storage, pgdata: Option<&Path>) -> Result<String, String> {
    let ours = pgdata.map(|p| (p, pg_control_system_id(p)));
    if let Some((p, Ok(o))) = ours {
        return claim_in(s, o, &p.display().to_string());
    }
    let file = s.locate(SYSTEM_ID_FILE);
    let here = read_from(s).map_err(|e| format!("cannot read {file}: {e}"))?;
    if let Recorded::System(a) = here {
        return Ok(format!("belongs to database system {a}"));
    }
    if here == Recorded::Missing {
        write_to(s, None).map_err(|e| format!("cannot write {file}: {e}"))?;
    }
    Ok(match ours {
        None => "unclaimed (pgdata is not set): the first archived segment claims it".into(),
        Some((p, Err(e))) => format!(
            "unclaimed (cannot read {}/global/pg_control: {e}): the first archived segment claims it",
            p.display()
        ),
        Some((_, Ok(_))) => unreachable!("handled above"),
    })
}

/// Marks `dir` for database system `id` (which `whose` has): an unmarked
/// or unclaimed directory is claimed, the same system is fine, another
/// system is refused and the mark left alone.
pub fn claim(dir: &Path, id: u64, whose: &str) -> Result<String, String> {
    claim_in(&LocalDir::new(dir), id, whose)
}

/// [`claim`] for any archive.
pub fn claim_in(s: &dyn Storage, id: u64, whose: &str) -> Result<String, String> {
    let file = s.locate(SYSTEM_ID_FILE);
    match read_from(s).map_err(|e| format!("cannot read {file}: {e}"))? {
        Recorded::System(a) if a != id => Err(format!(
            "{} belongs to database system {a}, but {whose} is system {id}: two clusters must never share an archive. Point this cluster at its own directory, or remove {file} if the old system is gone for good",
            s.location(),
        )),
        Recorded::System(a) => Ok(format!("belongs to database system {a}")),
        Recorded::Missing | Recorded::Unclaimed => {
            write_to(s, Some(id)).map_err(|e| format!("cannot write {file}: {e}"))?;
            Ok(format!("claimed for database system {id}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn pgdata_with_id(root: &Path, id: u64) -> std::path::PathBuf {
        let pg = root.join("pgdata");
        fs::create_dir_all(pg.join("global")).unwrap();
        let mut control = id.to_le_bytes().to_vec();
        control.extend_from_slice(&[0xAB; 100]);
        fs::write(pg.join("global/pg_control"), control).unwrap();
        pg
    }

    #[test]
    fn pg_control_holds_the_system_id_first() {
        let d = tempfile::tempdir().unwrap();
        let pg = pgdata_with_id(d.path(), 7_300_000_000_000_000_123);
        assert_eq!(pg_control_system_id(&pg).unwrap(), 7_300_000_000_000_000_123);
        assert!(pg_control_system_id(d.path()).is_err());
    }

    #[test]
    fn init_claims_or_leaves_unclaimed_and_refuses_another_system() {
        let d = tempfile::tempdir().unwrap();
        let arch = d.path().join("arch");
        fs::create_dir(&arch).unwrap();
        assert_eq!(read(&arch).unwrap(), Recorded::Missing);
        let note = init_dir(&arch, None).unwrap();
        assert!(note.contains("unclaimed"), "{note}");
        assert_eq!(read(&arch).unwrap(), Recorded::Unclaimed);
        let note = init_dir(&arch, Some(&d.path().join("nowhere"))).unwrap();
        assert!(note.contains("cannot read"), "{note}");

        let pg = pgdata_with_id(d.path(), 42);
        assert!(init_dir(&arch, Some(&pg))
            .unwrap()
            .contains("claimed for database system 42"));
        assert_eq!(read(&arch).unwrap(), Recorded::System(42));
        assert_eq!(fs::read_to_string(arch.join(SYSTEM_ID_FILE)).unwrap(), "42\n");
        // Idempotent.
        assert!(init_dir(&arch, Some(&pg))
            .unwrap()
            .contains("belongs to database system 42"));
        let other = pgdata_with_id(&d.path().join("o"), 43);
        let e = init_dir(&arch, Some(&other)).unwrap_err();
        assert!(e.contains("system 42") && e.contains("system 43"), "{e}");
        assert_eq!(read(&arch).unwrap(), Recorded::System(42), "never overwritten");
        // No temporary file left behind.
        assert_eq!(fs::read_dir(&arch).unwrap().count(), 1);
    }
}
