//! Where archived WAL is kept: the [`Storage`] seam between the archive,
//! restore and cleanup logic and the place that holds the files. Names are
//! strings relative to the storage root (a WAL name, `X.sum`, the mark), so
//! that an object store can be a second implementation; the local
//! filesystem ([`local::LocalDir`], built on `fsutil`) is the first.
//!
//! The rules every implementation keeps:
//! - [`Storage::put_if_absent`] is durable before it returns and never
//!   replaces anything: the same bytes already there are
//!   [`Placed::AlreadyPresent`] (made durable), anything else a conflict;
//! - [`Storage::stat`] tells a stored file from anything else under the name;
//! - the archive mark ([`crate::layout::SYSTEM_ID_FILE`]) is read and
//!   replaced durably as a whole.

pub mod local;
pub mod s3;

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::SystemTime;

use crate::config::{ConfigError, StandbyConfig};
use crate::fsutil::{Fill, PlaceError, Placed};

pub use local::LocalDir;
pub use s3::S3Store;

/// What is stored under a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A stored file.
    File,
    /// A link to a stored file (local storage only); read through, but
    /// never taken for an archived copy by the archiver.
    LinkToFile,
    /// A link to nothing (an unmounted share?).
    DanglingLink,
    /// Anything else (a directory, a device, a link to one); the word for it.
    Other(&'static str),
}

/// A stored name's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Content size in bytes (of the file a link leads to).
    pub size: u64,
    pub modified: Option<SystemTime>,
    /// Changes whenever the content is replaced or rewritten (local: device,
    /// inode, size, mtime, ctime).
    pub version: String,
}

/// One name in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// A name and whether it is a directory (never a stored file).
    Name { name: String, dir: bool },
    /// A name that is not UTF-8 (never one pitrkit wrote).
    NotUtf8(String),
    /// An entry that could not be read.
    Problem(String),
}

pub trait Storage: Send + Sync {
    /// Where it is, for messages.
    fn location(&self) -> String;

    /// Where `name` is, for messages.
    fn locate(&self, name: &str) -> String;

    /// Is the storage there at all (not a missing directory, a dangling
    /// link, an unmounted share)? The reason if not.
    fn available(&self) -> Result<(), String>;

    /// Stores local file `src` as `name`, durably, unless a file is there.
    fn put_if_absent(&self, src: &Path, name: &str) -> Result<Placed, PlaceError>;

    /// Stores what `fill` writes as `name`, durably, unless a file is there
    /// (then judged by the bytes `fill` wrote). Local storage writes them
    /// straight into the temporary file that becomes `name`.
    fn put_made_if_absent(&self, name: &str, fill: &mut Fill) -> Result<Placed, PlaceError>;

    /// Stores `data` as `name`, durably, unless a file is there.
    fn put_bytes_if_absent(&self, name: &str, data: &[u8]) -> Result<Placed, PlaceError>;

    /// The same content is already stored under `name`: makes sure it is
    /// durable (it may have been written just before a crash) and says so.
    fn confirm(&self, name: &str) -> Result<Placed, PlaceError>;

    /// Reads a stored file (following a link to one).
    fn get(&self, name: &str) -> io::Result<Box<dyn Read + Send>>;

    /// Reads a stored file from byte `offset` on. The default reads and
    /// drops the bytes before it; local storage seeks.
    fn get_from(&self, name: &str, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        let mut r = self.get(name)?;
        io::copy(&mut (&mut r).take(offset), &mut io::sink())?;
        Ok(r)
    }

    /// What is under `name`; `None` if nothing.
    fn stat(&self, name: &str) -> io::Result<Option<Entry>>;

    /// Every name.
    fn list(&self) -> io::Result<Vec<Listed>>;

    /// Removes `name`; false if it was not there. Call [`Storage::sync`]
    /// once after a batch to make the removals durable.
    fn delete(&self, name: &str) -> io::Result<bool>;

    /// Makes removals durable.
    fn sync(&self) -> io::Result<()>;

    /// [`Storage::delete`] for each of `names`, in order (an object store
    /// batches them, and cannot tell a name that was not there). Call
    /// [`Storage::sync`] after.
    fn delete_many(&self, names: &[String]) -> Vec<io::Result<bool>> {
        names.iter().map(|n| self.delete(n)).collect()
    }

    /// Replaces a small file of pitrkit's own (a hold or cleanup mark,
    /// [`crate::layout::backup`]) durably as a whole.
    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()>;

    /// Removes `name` durably now (an orphaned sidecar before its replacement).
    fn delete_durable(&self, name: &str) -> io::Result<()>;

    /// The archive mark's content; `None` if there is no mark.
    fn read_mark(&self) -> io::Result<Option<String>>;

    /// Replaces the archive mark durably.
    fn write_mark(&self, content: &str) -> io::Result<()>;

    /// Stores what `write` writes as `name`, durably, unless a file is
    /// there (then `write` is not called and the answer is a conflict or
    /// [`Placed::AlreadyPresent`] by content, as for [`Storage::put_if_absent`]
    /// — callers of a fresh name get `Created`). `name` may contain `/`:
    /// the directories are made (a backup set's files keep their paths).
    fn put_stream(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<Placed, PlaceError>;

    /// Like [`Storage::put_stream`], but durable only after the next
    /// [`Storage::sync_deferred`]: for the thousands of files of a backup
    /// set, which count only once its manifest is written (durably, after
    /// that sync). By default, durable at once.
    fn put_stream_deferred(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<Placed, PlaceError> {
        self.put_stream(name, write)
    }

    /// Makes everything [`Storage::put_stream_deferred`] stored durable.
    fn sync_deferred(&self) -> io::Result<()> {
        Ok(())
    }

    /// Every stored file under directory `prefix` ("" for all), as names
    /// relative to the root (with `/`), temporary files left out, sorted.
    fn list_tree(&self, prefix: &str) -> io::Result<Vec<String>>;

    /// The bytes stored under directory `prefix` (an object store has them
    /// from its listing: no request per file).
    fn tree_size(&self, prefix: &str) -> io::Result<u64> {
        let mut total = 0;
        for n in self.list_tree(prefix)? {
            total += self.stat(&n)?.map_or(0, |e| e.size);
        }
        Ok(total)
    }

    /// Removes directory `prefix` and everything under it, durably; fine if
    /// it is not there.
    fn delete_tree(&self, prefix: &str) -> io::Result<()>;

    /// The storage under directory `prefix` (made if missing) as a storage
    /// of its own: a backup set's WAL is an archive with its own mark.
    fn scoped(&self, prefix: &str) -> io::Result<Box<dyn Storage>>;

    /// Reclaims temporary files of writers that died (local storage), or
    /// aborts the recorded multipart uploads of backups that died (an S3
    /// repository); how many. Call under the repository lock.
    fn reclaim(&self) -> io::Result<usize> {
        Ok(0)
    }
}

/// The archive a standby configuration's `archivedir` names: a directory,
/// or an `s3://` prefix (a client for it; nothing is sent yet).
pub fn standby_archive(cfg: &StandbyConfig, purpose: &str) -> Result<Box<dyn Storage>, ConfigError> {
    if let Some(loc) = &cfg.archive_s3 {
        return S3Store::open(loc)
            .map(|s| Box::new(s) as Box<dyn Storage>)
            .map_err(|why| ConfigError::new(&cfg.source, format!("archivedir {}: {why}", loc.url)).key("archivedir"));
    }
    Ok(Box::new(LocalDir::new(cfg.required_archivedir(purpose)?)))
}

/// Reads all of a small stored file; `None` if it is not there.
pub fn read_small(s: &dyn Storage, name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut r = match s.get(name) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = Vec::new();
    r.read_to_end(&mut buf)?;
    Ok(Some(buf))
}
