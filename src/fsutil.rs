//! Durable file placement: the only way pitrkit writes a WAL file anywhere.
//!
//! A file is acknowledged only after: data written under a temporary name,
//! the file fsync'd, the final name created with `link(2)` (which, unlike
//! `rename(2)`, never replaces an existing file), and the directory fsync'd.
//! An existing file of the same name is compared byte for byte: identical is
//! success (PostgreSQL re-archives after a crash), different is an error.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

/// What happened when a file was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// Newly written and durable.
    Created,
    /// A byte-identical file was already there (and is now known durable).
    AlreadyPresent,
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error(
        "{path}: a different file of the same name is already there ({existing} bytes; the file being archived has {ours} bytes); refusing to overwrite it. {}",
        conflict_advice(*existing, *ours)
    )]
    Conflict { path: PathBuf, existing: u64, ours: u64 },
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

fn conflict_advice(existing: u64, ours: u64) -> &'static str {
    if existing < ours {
        "The archived copy is shorter, so it is probably a truncated leftover of an interrupted copy by another tool: check it (pg_waldump) and move it aside; PostgreSQL's next retry then archives the file"
    } else {
        "Two clusters may share this archive (a cloned server keeps its archive_command): check every server that archives here before touching the file"
    }
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> PlaceError + 'a {
    move |source| PlaceError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// fsync a directory so that entries created or removed in it survive a crash.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A temporary name in `dir` for `name` that no other process uses
/// (WAL file names never start with '.', so readers skip it).
pub fn temp_name(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.pitrkit-{}.tmp", std::process::id()))
}

/// Writes `src` durably as `dir/name` with `mode`, never replacing a different file.
///
/// The temporary file is created with `mode` (no moment where others can
/// read it), and `io::copy` between two files uses `copy_file_range(2)`, so
/// on one filesystem the data is not even read into user space. (`fs::copy`
/// would give the copy the source's permissions for a while.)
pub fn place_copy(src: &Path, dir: &Path, name: &str, mode: u32) -> Result<Placed, PlaceError> {
    let dest = dir.join(name);
    if dest.exists() {
        return compare_existing(src, &dest);
    }
    let tmp = temp_name(dir, name);
    let result = (|| {
        let mut input = File::open(src).map_err(io_err(src, "open"))?;
        // Left over by a crashed process that had our pid: ours to replace.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err(&tmp, "remove stale temporary file")(e))
            }
            _ => {}
        }
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err(&tmp, "create temporary file"))?;
        io::copy(&mut input, &mut out).map_err(io_err(&tmp, "copy"))?;
        // The umask may have removed bits from `mode`.
        out.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err(&tmp, "chmod"))?;
        out.sync_all().map_err(io_err(&tmp, "fsync"))?;
        drop(out);
        publish(&tmp, src, &dest)
    })();
    let _ = fs::remove_file(&tmp);
    let placed = result?;
    fsync_dir(dir).map_err(io_err(dir, "fsync directory"))?;
    Ok(placed)
}

/// Gives the durable temp file its final name with `link(2)`: atomic and
/// never clobbering, even if another process races us to the same name.
fn publish(tmp: &Path, src: &Path, dest: &Path) -> Result<Placed, PlaceError> {
    match fs::hard_link(tmp, dest) {
        Ok(()) => Ok(Placed::Created),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => compare_existing(src, dest),
        Err(e) => Err(PlaceError::Io {
            path: dest.to_path_buf(),
            op: "link into place",
            source: e,
        }),
    }
}

/// Hard-links an already durable file under a second name (the per-slave
/// queues share one copy). Same no-clobber and directory-fsync rules.
pub fn place_link(src: &Path, dir: &Path, name: &str) -> Result<Placed, PlaceError> {
    let dest = dir.join(name);
    let placed = match fs::hard_link(src, &dest) {
        Ok(()) => Placed::Created,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => compare_existing(src, &dest)?,
        Err(e) => return Err(io_err(&dest, "hard-link into queue")(e)),
    };
    fsync_dir(dir).map_err(io_err(dir, "fsync directory"))?;
    Ok(placed)
}

fn compare_existing(src: &Path, dest: &Path) -> Result<Placed, PlaceError> {
    let same = identical(src, dest).map_err(io_err(dest, "compare with existing file"))?;
    let ours = fs::metadata(src).map(|m| m.len()).unwrap_or(0);
    accept_existing(dest, same, ours)
}

/// Settles a name that is already taken: the same content (however it was
/// judged) is success once made durable; anything else is a conflict.
pub fn accept_existing(dest: &Path, same: bool, ours: u64) -> Result<Placed, PlaceError> {
    if same {
        // It may be there only in the page cache (we crashed before fsync last
        // time): make it durable before calling it archived.
        File::open(dest)
            .and_then(|f| f.sync_all())
            .map_err(io_err(dest, "fsync"))?;
        if let Some(dir) = dest.parent() {
            fsync_dir(dir).map_err(io_err(dir, "fsync directory"))?;
        }
        Ok(Placed::AlreadyPresent)
    } else {
        Err(PlaceError::Conflict {
            path: dest.to_path_buf(),
            existing: fs::metadata(dest).map(|m| m.len()).unwrap_or(0),
            ours,
        })
    }
}

/// Byte-for-byte comparison of two files.
pub fn identical(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut ra, mut rb) = (File::open(a)?, File::open(b)?);
    if ra.metadata()?.len() != rb.metadata()?.len() {
        return Ok(false);
    }
    let mut bufa = vec![0u8; 1 << 20];
    let mut bufb = vec![0u8; 1 << 20];
    loop {
        let n = read_full(&mut ra, &mut bufa)?;
        let m = read_full(&mut rb, &mut bufb)?;
        if n != m || bufa[..n] != bufb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Writes a small file durably, replacing any previous one: a temporary name
/// in the same directory, fsync, `rename(2)`, fsync of the directory. Readers
/// see the old content or the new, never a mix, and after a crash the new
/// content is there once this returned. The temporary file is removed on
/// every error path. The one writer for state files, markers and settings.
pub fn write_durable(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        )
    })?;
    let tmp = temp_name(dir, &name.to_string_lossy());
    let result = (|| {
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut out = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        io::Write::write_all(&mut out, data)?;
        out.set_permissions(fs::Permissions::from_mode(mode))?;
        out.sync_all()?;
        drop(out);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    fsync_dir(dir)
}

/// Removes a file durably (the directory is fsync'd); a missing file is fine.
pub fn remove_durable(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => fsync_dir(d),
        _ => fsync_dir(Path::new(".")),
    }
}

/// Creates a directory (and parents) with `mode` if missing.
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(mode).create(dir)
}

/// An exclusive advisory lock on `path`, released on drop.
pub struct LockFile(#[allow(dead_code)] Flock<File>);

/// Takes an exclusive lock; `None` when `wait` is zero and the lock is busy,
/// or when `wait` ran out.
pub fn lock(path: &Path, wait: Duration) -> io::Result<Option<LockFile>> {
    let start = Instant::now();
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(Some(LockFile(l))),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                if start.elapsed() >= wait {
                    return Ok(None);
                }
                file = f;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((_, e)) => return Err(io::Error::from(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, data: &[u8]) {
        fs::write(p, data).unwrap();
    }

    #[test]
    fn place_copy_creates_then_accepts_identical_and_refuses_different() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        write(&src, b"segment-a");
        assert_eq!(place_copy(&src, &out, "f", 0o600).unwrap(), Placed::Created);
        assert_eq!(fs::read(out.join("f")).unwrap(), b"segment-a");
        let mode = fs::metadata(out.join("f")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(place_copy(&src, &out, "f", 0o600).unwrap(), Placed::AlreadyPresent);
        write(&src, b"segment-b2");
        let e = place_copy(&src, &out, "f", 0o600).unwrap_err();
        assert!(
            matches!(
                e,
                PlaceError::Conflict {
                    existing: 9,
                    ours: 10,
                    ..
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains("(9 bytes; the file being archived has 10 bytes)"), "{msg}");
        assert!(
            msg.contains("refusing to overwrite") && msg.contains("truncated leftover"),
            "{msg}"
        );
        write(&src, b"segment");
        let msg = place_copy(&src, &out, "f", 0o600).unwrap_err().to_string();
        assert!(msg.contains("Two clusters may share this archive"), "{msg}");
        // The original is untouched and no temporary file is left behind.
        assert_eq!(fs::read(out.join("f")).unwrap(), b"segment-a");
        assert_eq!(fs::read_dir(&out).unwrap().count(), 1);
    }

    #[test]
    fn place_copy_gives_the_copy_our_mode_not_the_sources() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        write(&src, b"wal");
        fs::set_permissions(&src, fs::Permissions::from_mode(0o644)).unwrap();
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        // A stale temporary file of a crashed process with our pid is replaced.
        write(&temp_name(&out, "f"), b"stale junk");
        assert_eq!(place_copy(&src, &out, "f", 0o600).unwrap(), Placed::Created);
        let mode = fs::metadata(out.join("f")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read(out.join("f")).unwrap(), b"wal");
        assert_eq!(fs::read_dir(&out).unwrap().count(), 1);
    }

    #[test]
    fn place_link_shares_the_inode_and_never_clobbers() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        write(&src, b"x");
        let q = d.path().join("q");
        fs::create_dir(&q).unwrap();
        assert_eq!(place_link(&src, &q, "f").unwrap(), Placed::Created);
        assert_eq!(
            fs::metadata(&src).unwrap().ino(),
            fs::metadata(q.join("f")).unwrap().ino()
        );
        assert_eq!(place_link(&src, &q, "f").unwrap(), Placed::AlreadyPresent);
        let other = d.path().join("other");
        write(&other, b"y");
        assert!(matches!(place_link(&other, &q, "f"), Err(PlaceError::Conflict { .. })));
    }

    #[test]
    fn identical_compares_content_not_just_size() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        write(&a, &vec![1u8; 3 << 20]);
        let mut v = vec![1u8; 3 << 20];
        write(&b, &v);
        assert!(identical(&a, &b).unwrap());
        v[(3 << 20) - 1] = 2;
        write(&b, &v);
        assert!(!identical(&a, &b).unwrap());
    }

    #[test]
    fn write_durable_replaces_and_leaves_no_temp_file_on_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state");
        write_durable(&p, b"one", 0o600).unwrap();
        write_durable(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        // Renaming onto a directory fails: the temporary file must not stay.
        let blocked = d.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), b"").unwrap();
        assert!(write_durable(&blocked, b"x", 0o600).is_err());
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        remove_durable(&p).unwrap();
        remove_durable(&p).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn lock_is_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let held = lock(&p, Duration::ZERO).unwrap().unwrap();
        assert!(lock(&p, Duration::from_millis(120)).unwrap().is_none());
        drop(held);
        assert!(lock(&p, Duration::ZERO).unwrap().is_some());
    }
}
