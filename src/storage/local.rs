//! The local filesystem as [`Storage`]: a directory, with `fsutil` as the
//! engine (durable no-clobber placement, directory fsyncs, temp reclaim).

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
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
}
