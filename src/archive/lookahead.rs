//! Look-ahead batching (the pgBackRest async / WAL-G model, without a daemon).
//!
//! PostgreSQL archives one file per call and waits for each. When it has a
//! backlog (`pg_wal/archive_status/*.ready`), the call it makes also stages
//! up to `lookahead` of the other ready files, so the slaves receive them all
//! in one rsync. Each file staged that way gets a marker in
//! `l_archivedir/.done/` once it is durable everywhere the mode promises;
//! PostgreSQL's own call for it later finds the marker and returns at once.
//!
//! A marker records the identity of the pg_wal file it vouches for (device,
//! inode, size, modification time) and is honoured only if the file still
//! matches: it can never stand in for other content under the same name.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::wal::WalName;

use super::layout::DONE_DIR;

fn identity(path: &Path) -> Option<String> {
    let m = fs::metadata(path).ok()?;
    Some(format!(
        "{} {} {} {}.{}",
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec()
    ))
}

/// True (and the marker consumed) if an earlier call already archived exactly this file.
pub fn take_marker(ldir: &Path, src: &Path, name: &str) -> bool {
    let marker = ldir.join(DONE_DIR).join(name);
    let Ok(recorded) = fs::read_to_string(&marker) else {
        return false;
    };
    let _ = fs::remove_file(&marker);
    identity(src).is_some_and(|now| now == recorded.trim())
}

/// Records that `src` is archived, with the one durable writer (a marker
/// vouches for WAL: it is never left half-written or as a stray temp file).
pub fn mark_done(ldir: &Path, src: &Path, name: &str) -> std::io::Result<()> {
    let dir = ldir.join(DONE_DIR);
    crate::fsutil::ensure_dir(&dir, 0o700)?;
    let Some(id) = identity(src) else { return Ok(()) };
    crate::fsutil::write_durable(&dir.join(name), id.as_bytes(), 0o600)
}

/// Other files PostgreSQL has marked ready, oldest first, next to `src`.
pub fn candidates(src: &Path, requested: &str, max: usize) -> Vec<(PathBuf, String)> {
    if max == 0 {
        return Vec::new();
    }
    let Some(wal_dir) = src.parent() else { return Vec::new() };
    let Ok(rd) = fs::read_dir(wal_dir.join("archive_status")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".ready").map(str::to_string))
        .filter(|n| n != requested && WalName::parse(n).is_ok())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| (wal_dir.join(&n), n))
        .filter(|(p, _)| p.is_file())
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_vouch_only_for_the_same_file() {
        let d = tempfile::tempdir().unwrap();
        let (ldir, wal) = (d.path().join("q"), d.path().join("000000010000000000000002"));
        fs::create_dir(&ldir).unwrap();
        fs::write(&wal, b"segment").unwrap();
        let name = "000000010000000000000002";
        assert!(!take_marker(&ldir, &wal, name));
        mark_done(&ldir, &wal, name).unwrap();
        assert!(take_marker(&ldir, &wal, name));
        assert!(!take_marker(&ldir, &wal, name), "a marker is used once");
        mark_done(&ldir, &wal, name).unwrap();
        // Replaced by other content under the same name: the marker is void.
        fs::remove_file(&wal).unwrap();
        fs::write(&wal, b"other bytes").unwrap();
        assert!(!take_marker(&ldir, &wal, name));
    }

    #[test]
    fn candidates_are_ready_files_in_order() {
        let d = tempfile::tempdir().unwrap();
        let st = d.path().join("archive_status");
        fs::create_dir(&st).unwrap();
        for n in [
            "000000010000000000000003",
            "000000010000000000000001",
            "000000010000000000000002",
            "00000002.history",
        ] {
            fs::write(d.path().join(n), b"x").unwrap();
            fs::write(st.join(format!("{n}.ready")), b"").unwrap();
        }
        fs::write(st.join("000000010000000000000009.done"), b"").unwrap();
        fs::write(st.join("junk.ready"), b"").unwrap();
        let src = d.path().join("000000010000000000000001");
        let got: Vec<String> = candidates(&src, "000000010000000000000001", 2)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(got, vec!["000000010000000000000002", "000000010000000000000003"]);
        assert!(candidates(&src, "x", 0).is_empty());
    }
}
