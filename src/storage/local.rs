//! The local filesystem as [`Storage`]: a directory, with `fsutil` as the
//! engine (durable no-clobber placement, directory fsyncs, temp reclaim).

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Entry, Kind, Listed, Storage};
use crate::fsutil::{self, Fill, PlaceError, Placed};
use crate::layout::SYSTEM_ID_FILE;

/// Mode of archived files, sidecars included.
const FILE_MODE: u32 = 0o600;
/// Mode of the mark (readable by other OS users that restore from it).
const MARK_MODE: u32 = 0o644;

/// An archive directory.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    pub fn new(root: impl Into<PathBuf>) -> LocalDir {
        LocalDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The local path of `name` (local-only callers: hard links, prefetch).
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

fn entry(kind: Kind, m: &fs::Metadata) -> Entry {
    Entry {
        kind,
        size: m.size(),
        modified: m.modified().ok(),
        version: format!(
            "{} {} {} {}.{} {}.{}",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        ),
    }
}

impl LocalDir {
    /// Opens a stored regular file for reading. Never blocks on a FIFO put
    /// there; a link to a file is read through.
    fn open_regular(&self, name: &str) -> io::Result<fs::File> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(self.root.join(name))?;
        if !f.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(f)
    }
}

impl Storage for LocalDir {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn locate(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }

    fn available(&self) -> Result<(), String> {
        match fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err("is not a directory".to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(if fs::symlink_metadata(&self.root).is_ok() {
                "is a symbolic link to something that is not there (an unmounted share?)".to_string()
            } else {
                "does not exist".to_string()
            }),
            Err(e) => Err(format!("cannot be read: {e}")),
        }
    }

    fn put_if_absent(&self, src: &Path, name: &str) -> Result<Placed, PlaceError> {
        fsutil::place_copy(src, &self.root, name, FILE_MODE)
    }

    fn put_made_if_absent(&self, name: &str, fill: &mut Fill) -> Result<Placed, PlaceError> {
        fsutil::place_made(fill, &self.root, name, FILE_MODE)
    }

    fn put_bytes_if_absent(&self, name: &str, data: &[u8]) -> Result<Placed, PlaceError> {
        // Written durably under a temporary name, then linked without clobbering.
        let tmp = fsutil::temp_name(&self.root, name);
        let io_err = |op| {
            let tmp = tmp.clone();
            move |source| PlaceError::Io { path: tmp, op, source }
        };
        let written = (|| {
            let mut f = fsutil::create_locked_temp(&tmp, FILE_MODE)?;
            io::Write::write_all(&mut *f, data)?;
            f.sync_all()?;
            Ok(f)
        })();
        let placed = match written {
            Ok(_lock) => fsutil::place_link(&tmp, &self.root, name),
            Err(e) => Err(io_err("write")(e)),
        };
        let _ = fs::remove_file(&tmp);
        placed
    }

    fn confirm(&self, name: &str) -> Result<Placed, PlaceError> {
        fsutil::accept_existing(&self.root.join(name), true, 0, None, false)
    }

    fn get(&self, name: &str) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.open_regular(name)?))
    }

    fn get_from(&self, name: &str, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        let mut f = self.open_regular(name)?;
        f.seek(io::SeekFrom::Start(offset))?;
        Ok(Box::new(f))
    }

    fn stat(&self, name: &str) -> io::Result<Option<Entry>> {
        let path = self.root.join(name);
        let lm = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if lm.is_file() {
            return Ok(Some(entry(Kind::File, &lm)));
        }
        if !lm.file_type().is_symlink() {
            return Ok(Some(entry(Kind::Other(fsutil::kind_of(&lm.file_type())), &lm)));
        }
        Ok(Some(match fs::metadata(&path) {
            Ok(m) if m.is_file() => entry(Kind::LinkToFile, &m),
            Ok(m) => entry(Kind::Other("symbolic link"), &m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => entry(Kind::DanglingLink, &lm),
            Err(e) => return Err(e),
        }))
    }

    fn list(&self) -> io::Result<Vec<Listed>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.root)? {
            let e = match e {
                Ok(e) => e,
                Err(err) => {
                    out.push(Listed::Problem(format!(
                        "{}: cannot read directory entry: {err}",
                        self.root.display()
                    )));
                    continue;
                }
            };
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                out.push(Listed::NotUtf8(format!("{:?}", e.file_name())));
                continue;
            };
            match e.file_type() {
                Ok(t) => out.push(Listed::Name { name, dir: t.is_dir() }),
                Err(err) => out.push(Listed::Problem(format!("{}: {err}", e.path().display()))),
            }
        }
        Ok(out)
    }

    fn delete(&self, name: &str) -> io::Result<bool> {
        match fs::remove_file(self.root.join(name)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn sync(&self) -> io::Result<()> {
        fsutil::fsync_dir(&self.root)
    }

    fn delete_durable(&self, name: &str) -> io::Result<()> {
        fsutil::remove_durable(&self.root.join(name))
    }

    fn read_mark(&self) -> io::Result<Option<String>> {
        match fs::read_to_string(self.root.join(SYSTEM_ID_FILE)) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_mark(&self, content: &str) -> io::Result<()> {
        fsutil::write_durable(&self.root.join(SYSTEM_ID_FILE), content.as_bytes(), MARK_MODE)
    }

    fn reclaim(&self) -> io::Result<usize> {
        fsutil::reclaim_temp_files(&self.root)
    }

    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
        fsutil::write_durable(&self.root.join(name), data, MARK_MODE)
    }

    fn put_stream(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<Placed, PlaceError> {
        self.stream_into(name, write, true)
    }

    fn put_stream_deferred(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<Placed, PlaceError> {
        self.stream_into(name, write, false)
    }

    fn sync_deferred(&self) -> io::Result<()> {
        // One syncfs(2) instead of two fsyncs per file.
        nix::unistd::syncfs(fs::File::open(&self.root)?).map_err(io::Error::from)
    }

    fn list_tree(&self, prefix: &str) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let start = self.root.join(prefix);
        match fs::symlink_metadata(&start) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        walk(&self.root, &start, &mut out)?;
        out.sort();
        Ok(out)
    }

    fn delete_tree(&self, prefix: &str) -> io::Result<()> {
        let dir = self.root.join(prefix);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            r => r?,
        }
        fsutil::fsync_dir(dir.parent().unwrap_or(&self.root))
    }

    fn scoped(&self, prefix: &str) -> io::Result<Box<dyn Storage>> {
        let dir = self.root.join(prefix);
        make_dirs(&self.root, &dir)?;
        Ok(Box::new(LocalDir::new(dir)))
    }
}

impl LocalDir {
    /// Writes `name` (directories made) under a temporary name and links it
    /// into place; `durable`: fsync'd with its directory before returning.
    fn stream_into(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
        durable: bool,
    ) -> Result<Placed, PlaceError> {
        let dest = self.root.join(name);
        let (dir, base) = match (dest.parent(), dest.file_name()) {
            (Some(d), Some(b)) => (d.to_path_buf(), b.to_string_lossy().into_owned()),
            _ => {
                return Err(PlaceError::Io {
                    path: dest.clone(),
                    op: "store",
                    source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
                })
            }
        };
        make_dirs(&self.root, &dir).map_err(|source| PlaceError::Io {
            path: dir.clone(),
            op: "create directory",
            source,
        })?;
        let tmp = fsutil::temp_name(&dir, &base);
        let written = (|| {
            let mut f = fsutil::create_locked_temp(&tmp, FILE_MODE)?;
            let mut out = io::BufWriter::with_capacity(1 << 20, &mut *f);
            write(&mut out)?;
            out.flush()?;
            drop(out);
            if durable {
                f.sync_all()?;
            }
            Ok(f)
        })();
        let placed = match written {
            Ok(_lock) if durable => fsutil::place_link(&tmp, &dir, &base),
            Ok(_lock) => fsutil::place_link_unsynced(&tmp, &dir, &base),
            Err(source) => Err(PlaceError::Io {
                path: tmp.clone(),
                op: "write",
                source,
            }),
        };
        let _ = fs::remove_file(&tmp);
        placed
    }
}

/// Creates `dir` and the missing directories above it (down from `root`),
/// each made durable in its parent.
fn make_dirs(root: &Path, dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| *p != root && p.starts_with(root)) {
        make_dirs(root, parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        r => r?,
    }
    fsutil::fsync_dir(dir.parent().unwrap_or(root))
}

/// Every regular file under `dir`, relative to `root`, temporary files left out.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        let name = e.file_name().to_string_lossy().into_owned();
        if t.is_dir() {
            walk(root, &e.path(), out)?;
        } else if !fsutil::is_temp_name(&name) {
            let rel = e
                .path()
                .strip_prefix(root)
                .map(Path::to_path_buf)
                .unwrap_or_else(|_| e.path());
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::read_small;

    #[test]
    fn put_if_absent_never_clobbers_and_accepts_the_same_bytes() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalDir::new(d.path().join("a"));
        fs::create_dir(s.root()).unwrap();
        let src = d.path().join("src");
        fs::write(&src, b"one").unwrap();
        assert_eq!(s.put_if_absent(&src, "X").unwrap(), Placed::Created);
        assert_eq!(s.put_if_absent(&src, "X").unwrap(), Placed::AlreadyPresent);
        fs::write(&src, b"two").unwrap();
        assert!(matches!(s.put_if_absent(&src, "X"), Err(PlaceError::Conflict { .. })));
        assert_eq!(s.put_bytes_if_absent("Y", b"y").unwrap(), Placed::Created);
        assert_eq!(s.put_bytes_if_absent("Y", b"y").unwrap(), Placed::AlreadyPresent);
        assert!(matches!(
            s.put_bytes_if_absent("Y", b"z"),
            Err(PlaceError::Conflict { .. })
        ));
        assert_eq!(read_small(&s, "X").unwrap().unwrap(), b"one");
        assert_eq!(read_small(&s, "nope").unwrap(), None);
        let names: Vec<_> = fs::read_dir(s.root())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }

    #[test]
    fn stat_tells_files_links_and_the_rest_apart() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalDir::new(d.path());
        fs::write(d.path().join("f"), b"abc").unwrap();
        std::os::unix::fs::symlink(d.path().join("f"), d.path().join("l")).unwrap();
        std::os::unix::fs::symlink(d.path().join("gone"), d.path().join("dangling")).unwrap();
        fs::create_dir(d.path().join("dir")).unwrap();
        let kind = |n| s.stat(n).unwrap().map(|e| e.kind);
        assert_eq!(kind("f"), Some(Kind::File));
        assert_eq!(s.stat("l").unwrap().unwrap().size, 3);
        assert_eq!(kind("l"), Some(Kind::LinkToFile));
        assert_eq!(kind("dangling"), Some(Kind::DanglingLink));
        assert_eq!(kind("dir"), Some(Kind::Other("directory")));
        assert_eq!(kind("none"), None);
        assert!(s.delete("f").unwrap());
        assert!(!s.delete("f").unwrap());
        assert_eq!(
            LocalDir::new(d.path().join("none")).available().unwrap_err(),
            "does not exist"
        );
    }

    #[test]
    fn streams_into_subdirectories_lists_and_scopes() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalDir::new(d.path());
        let put = |name: &str, data: &'static [u8]| s.put_stream(name, &mut |w| w.write_all(data));
        assert_eq!(put("set/data/base/1/123", b"abc").unwrap(), Placed::Created);
        assert_eq!(put("set/data/base/1/123", b"abc").unwrap(), Placed::AlreadyPresent);
        assert!(matches!(
            put("set/data/base/1/123", b"abd"),
            Err(PlaceError::Conflict { .. })
        ));
        put("set/manifest", b"m").unwrap();
        assert_eq!(s.list_tree("set").unwrap(), vec!["set/data/base/1/123", "set/manifest"]);
        assert_eq!(s.list_tree("none").unwrap(), Vec::<String>::new());
        let wal = s.scoped("set/wal").unwrap();
        wal.write_mark("1\n").unwrap();
        assert!(d.path().join("set/wal").join(SYSTEM_ID_FILE).is_file());
        s.delete_tree("set").unwrap();
        assert!(!d.path().join("set").exists());
    }
}
