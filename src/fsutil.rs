//! Durable file placement: the only way pitrkit writes a WAL file anywhere.
//!
//! A file is acknowledged only after: data written under a temporary name,
//! the file fsync'd, the final name created with `link(2)` (which, unlike
//! `rename(2)`, never replaces an existing file), and the directory fsync'd.
//! An existing file of the same name is compared byte for byte: identical is
//! success (PostgreSQL re-archives after a crash), different is an error.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
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
        "{path}: a different file of the same name is already there ({}; the file being archived has {ours} bytes); refusing to overwrite it. {}",
        existing_size(*existing, *compressed),
        conflict_advice(*existing, *ours)
    )]
    Conflict {
        path: PathBuf,
        /// The existing file's content size, comparable with `ours`
        /// (decompressed for a compressed form); `None` when its content
        /// cannot be read (a damaged compressed frame).
        existing: Option<u64>,
        ours: u64,
        /// The existing file is a compressed form.
        compressed: bool,
    },
    #[error("{path} is a {kind}, not an archived copy: pitrkit never follows it nor counts it as archived (only a regular file with the same bytes does). Move it aside; PostgreSQL's next retry archives the file")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

fn existing_size(existing: Option<u64>, compressed: bool) -> String {
    match (existing, compressed) {
        (Some(n), false) => format!("{n} bytes"),
        (Some(n), true) => format!("{n} bytes once decompressed"),
        (None, _) => "a compressed file that does not decompress".into(),
    }
}

fn conflict_advice(existing: Option<u64>, ours: u64) -> &'static str {
    match existing {
        Some(e) if e < ours => "The archived copy is shorter, so it is probably a truncated leftover of an interrupted copy by another tool: check it (pg_waldump) and move it aside; PostgreSQL's next retry then archives the file",
        Some(_) => "Two clusters may share this archive (a cloned server keeps its archive_command): check every server that archives here before touching the file",
        None => "The archived copy is damaged: check it and move it aside; PostgreSQL's next retry then archives the file",
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

/// Prefix of the compression scratch files of earlier builds (compressed forms
/// are now made in the temporary file of [`place_made`]): still reclaimed.
pub const COMPRESS_TEMP_PREFIX: &str = ".pitrkit-compress-";

/// A name [`temp_name`] makes, or a compression scratch file.
pub fn is_temp_name(name: &str) -> bool {
    if name.starts_with(COMPRESS_TEMP_PREFIX) {
        return true;
    }
    let Some(rest) = name.strip_prefix('.').and_then(|r| r.strip_suffix(".tmp")) else {
        return false;
    };
    rest.rsplit_once(".pitrkit-")
        .is_some_and(|(base, pid)| !base.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// A temporary file younger than this is never reclaimed: it covers the
/// moment between a writer creating its file and locking it, and writers
/// of small files that never lock.
pub const RECLAIM_AGE: Duration = Duration::from_secs(120);

/// Removes the temporary files of dead writers from `dir`: pitrkit temp
/// names ([`is_temp_name`]) older than [`RECLAIM_AGE`] that nobody holds
/// locked (every writer of WAL holds an flock on its temporary file while
/// writing). Returns how many went. Never follows a symlink.
pub fn reclaim_temp_files(dir: &Path) -> io::Result<usize> {
    use std::os::unix::fs::MetadataExt;
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        if !is_temp_name(&name.to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = OpenOptions::new()
            .read(true)
            .custom_flags(libc_flags::O_NOFOLLOW | libc_flags::O_NONBLOCK)
            .open(&path)
        else {
            continue;
        };
        let Ok(meta) = file.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age >= RECLAIM_AGE);
        if !meta.is_file() || !old {
            continue;
        }
        let Ok(_held) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue; // a live writer
        };
        // Still the same file under that name (not a new writer's)?
        if fs::symlink_metadata(&path).is_ok_and(|m| m.ino() == meta.ino() && m.dev() == meta.dev()) {
            match fs::remove_file(&path) {
                Ok(()) => {
                    log::info!("removed {}, left by a writer that died", path.display());
                    removed += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
            }
        }
    }
    Ok(removed)
}

/// open(2) flags std does not name.
mod libc_flags {
    pub const O_NOFOLLOW: i32 = nix::fcntl::OFlag::O_NOFOLLOW.bits();
    pub const O_NONBLOCK: i32 = nix::fcntl::OFlag::O_NONBLOCK.bits();
}

/// Opens an existing file for comparison only if it is a regular file:
/// never follows a symlink (O_NOFOLLOW), never blocks on a FIFO.
pub fn open_regular(path: &Path) -> Result<File, PlaceError> {
    let not_regular = |kind| PlaceError::NotRegular {
        path: path.to_path_buf(),
        kind,
    };
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags::O_NOFOLLOW | libc_flags::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
            return Err(not_regular("symbolic link"))
        }
        Err(e) => return Err(io_err(path, "open existing file")(e)),
    };
    let meta = file.metadata().map_err(io_err(path, "stat existing file"))?;
    if meta.is_file() {
        Ok(file)
    } else {
        Err(not_regular(kind_of(&meta.file_type())))
    }
}

/// A file type in words, for messages about what is at a name.
pub fn kind_of(t: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_symlink() {
        "symbolic link"
    } else if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() || t.is_char_device() {
        "device"
    } else {
        "non-regular file"
    }
}

/// What is at `path` without following a symlink: `None` if nothing.
/// Anything but a regular file is [`PlaceError::NotRegular`].
pub fn existing_regular(path: &Path) -> Result<Option<fs::Metadata>, PlaceError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Ok(Some(m)),
        Ok(m) => Err(PlaceError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(&m.file_type()),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, "stat")(e)),
    }
}

/// Holds an flock on an open temporary file (through a duplicate of its
/// descriptor, which shares the lock) so that [`reclaim_temp_files`] leaves it
/// alone while it is written; for writers that open the file themselves.
pub fn hold_temp_lock(file: &File) -> io::Result<LockFile> {
    Flock::lock(file.try_clone()?, FlockArg::LockExclusiveNonblock)
        .map(LockFile)
        .map_err(|(_, e)| io::Error::from(e))
}

/// Creates `tmp` (replacing a stale one of our pid) and holds an flock on
/// it, so that [`reclaim_temp_files`] leaves it alone while we write. Every
/// writer of a [`temp_name`] file that may take longer than [`RECLAIM_AGE`]
/// should create it through this; unlink or rename it before dropping the lock.
pub fn create_locked_temp(tmp: &Path, mode: u32) -> io::Result<Flock<File>> {
    match fs::remove_file(tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let out = OpenOptions::new().write(true).create_new(true).mode(mode).open(tmp)?;
    Flock::lock(out, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| io::Error::from(e))
}

/// Writes `src` durably as `dir/name` with `mode`, never replacing a different file.
///
/// The temporary file is created with `mode` (no moment where others can
/// read it), and `io::copy` between two files uses `copy_file_range(2)`, so
/// on one filesystem the data is not even read into user space. (`fs::copy`
/// would give the copy the source's permissions for a while.) Anything but a
/// regular file at the name (a symlink to the very segment, say) is a
/// conflict, never followed.
pub fn place_copy(src: &Path, dir: &Path, name: &str, mode: u32) -> Result<Placed, PlaceError> {
    let dest = dir.join(name);
    if existing_regular(&dest)?.is_some() {
        return compare_existing(src, &dest);
    }
    place_temp(dir, name, mode, Some(src), |out, tmp| {
        let mut input = File::open(src).map_err(io_err(src, "open"))?;
        io::copy(&mut input, out).map_err(io_err(tmp, "copy"))?;
        Ok(())
    })
}

/// Fills the temporary file of a placement. It reports its own errors, since
/// only it knows whether reading its input or writing failed.
pub type Fill<'a> = dyn FnMut(&mut dyn Write) -> Result<(), PlaceError> + 'a;

/// What a placement writes: a file's bytes (copied), or bytes made while
/// they are written (compressed while the segment is read).
pub enum Bytes<'a> {
    File(&'a Path),
    Made(&'a mut Fill<'a>),
}

/// [`place_copy`] or [`place_made`], as `bytes` says.
pub fn place_bytes(bytes: &mut Bytes, dir: &Path, name: &str, mode: u32) -> Result<Placed, PlaceError> {
    match bytes {
        Bytes::File(src) => place_copy(src, dir, name, mode),
        Bytes::Made(fill) => place_made(&mut **fill, dir, name, mode),
    }
}

/// [`place_copy`] for bytes that `fill` writes as it makes them, straight
/// into the temporary file: no intermediate copy. The same steps (temporary
/// name, fsync, `link(2)`, fsync of the directory); a name already taken is
/// judged by the finished temporary file's bytes. The kernel starts writing
/// each chunk to disk while `fill` still works ([`WriteBehind`]), so the
/// fsync waits only for the tail. `fill` may be called again by a caller
/// that retries.
pub fn place_made(fill: &mut Fill, dir: &Path, name: &str, mode: u32) -> Result<Placed, PlaceError> {
    place_temp(dir, name, mode, None, |out, tmp| {
        let mut w = WriteBehind::new(out);
        fill(&mut w)?;
        w.finish().map_err(io_err(tmp, "write"))
    })
}

/// The durable steps every placement shares: a locked temporary file that
/// `write` fills, chmod, fsync, `link(2)` to the final name (a name already
/// taken is compared with `compare`, or with the temporary file itself),
/// fsync of the directory. The temporary file never outlives the call
/// unless the process dies, and then a reclaimer removes it.
fn place_temp(
    dir: &Path,
    name: &str,
    mode: u32,
    compare: Option<&Path>,
    write: impl FnOnce(&mut File, &Path) -> Result<(), PlaceError>,
) -> Result<Placed, PlaceError> {
    let dest = dir.join(name);
    let tmp = temp_name(dir, name);
    let result = (|| {
        let mut out = create_locked_temp(&tmp, mode).map_err(io_err(&tmp, "create temporary file"))?;
        write(&mut out, &tmp)?;
        // The umask may have removed bits from `mode`.
        out.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err(&tmp, "chmod"))?;
        out.sync_all().map_err(io_err(&tmp, "fsync"))?;
        // Unlinked below while still locked: no reclaimer can mistake it.
        publish(&tmp, compare.unwrap_or(&tmp), &dest).map(|p| (p, out))
    })();
    let _ = fs::remove_file(&tmp);
    let (placed, _lock) = result?;
    fsync_dir(dir).map_err(io_err(dir, "fsync directory"))?;
    Ok(placed)
}

/// Bytes written at once, and how often the kernel is asked to start
/// writing them back.
const WRITE_CHUNK: usize = 1 << 20;

/// A buffered writer into a file being placed that asks the kernel to start
/// writing back every chunk as soon as it is written
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which waits for nothing): the
/// disk works while the producer (a compressor) still does, and the fsync
/// that follows has only the tail left. A hint only: durability comes from
/// that fsync. Without a WAIT flag the call neither waits nor consumes a
/// writeback error, so the fsync still reports any.
pub struct WriteBehind<'f> {
    file: &'f File,
    buf: Vec<u8>,
    written: u64,
}

impl<'f> WriteBehind<'f> {
    pub fn new(file: &'f File) -> WriteBehind<'f> {
        WriteBehind {
            file,
            buf: Vec::with_capacity(WRITE_CHUNK),
            written: 0,
        }
    }

    fn write_out(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        (&mut &*self.file).write_all(data)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(self.file);
        // SAFETY: a plain syscall on an open descriptor we borrow; no memory is passed.
        unsafe {
            libc::sync_file_range(
                fd,
                self.written as libc::off64_t,
                data.len() as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.written += data.len() as u64;
        Ok(())
    }

    /// Writes what is still buffered.
    pub fn finish(mut self) -> io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        self.write_out(&buf)
    }
}

impl Write for WriteBehind<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > WRITE_CHUNK {
            let buf = std::mem::take(&mut self.buf);
            self.write_out(&buf)?;
            self.buf = buf;
            self.buf.clear();
        }
        if data.len() >= WRITE_CHUNK {
            self.write_out(data)?;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        self.write_out(&buf)?;
        self.buf = buf;
        self.buf.clear();
        Ok(())
    }
}

/// Gives the durable temp file its final name with `link(2)`: atomic and
/// never clobbering, even if another process races us to the same name.
fn publish(tmp: &Path, src: &Path, dest: &Path) -> Result<Placed, PlaceError> {
    link_no_clobber(tmp, src, dest, "link into place")
}

/// `link(src_inode, dest)`; a name already taken is judged by content. A
/// taken name that vanishes while we compare (a concurrent `--flush`
/// shipping a queue entry) is linked again instead of failing.
fn link_no_clobber(from: &Path, src: &Path, dest: &Path, op: &'static str) -> Result<Placed, PlaceError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match fs::hard_link(from, dest) {
            Ok(()) => return Ok(Placed::Created),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match compare_existing(src, dest) {
                Err(PlaceError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound && tries < 10 => {
                    continue
                }
                other => return other,
            },
            Err(e) => return Err(io_err(dest, op)(e)),
        }
    }
}

/// Hard-links an already durable file under a second name (the per-slave
/// queues share one copy). Same no-clobber and directory-fsync rules.
pub fn place_link(src: &Path, dir: &Path, name: &str) -> Result<Placed, PlaceError> {
    let dest = dir.join(name);
    let placed = link_no_clobber(src, src, &dest, "hard-link into queue")?;
    fsync_dir(dir).map_err(io_err(dir, "fsync directory"))?;
    Ok(placed)
}

/// [`place_link`] without the directory fsync, for callers that make a
/// whole batch durable at once afterwards (a backup set before its manifest).
pub fn place_link_unsynced(src: &Path, dir: &Path, name: &str) -> Result<Placed, PlaceError> {
    link_no_clobber(src, src, &dir.join(name), "link into place")
}

fn compare_existing(src: &Path, dest: &Path) -> Result<Placed, PlaceError> {
    let existing = open_regular(dest)?;
    let input = File::open(src).map_err(io_err(src, "open"))?;
    let same = identical_files(input, existing).map_err(io_err(dest, "compare with existing file"))?;
    let ours = fs::metadata(src).map(|m| m.len()).unwrap_or(0);
    let theirs = fs::symlink_metadata(dest).map(|m| m.len()).unwrap_or(0);
    accept_existing(dest, same, ours, Some(theirs), false)
}

/// Settles a name that is already taken: the same content (however it was
/// judged) is success once made durable; anything else is a conflict.
/// `existing` is the taken file's content size, comparable with `ours`
/// (decompressed when `compressed`), if known.
pub fn accept_existing(
    dest: &Path,
    same: bool,
    ours: u64,
    existing: Option<u64>,
    compressed: bool,
) -> Result<Placed, PlaceError> {
    if same {
        // It may be there only in the page cache (we crashed before fsync last
        // time): make it durable before calling it archived.
        open_regular(dest)?.sync_all().map_err(io_err(dest, "fsync"))?;
        if let Some(dir) = dest.parent() {
            fsync_dir(dir).map_err(io_err(dir, "fsync directory"))?;
        }
        Ok(Placed::AlreadyPresent)
    } else {
        Err(PlaceError::Conflict {
            path: dest.to_path_buf(),
            existing,
            ours,
            compressed,
        })
    }
}

/// Byte-for-byte comparison of two files; `b` must be a regular file and is
/// never followed if it is a symlink (that is an error).
pub fn identical(a: &Path, b: &Path) -> io::Result<bool> {
    let fb = open_regular(b).map_err(|e| match e {
        PlaceError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    })?;
    identical_files(File::open(a)?, fb)
}

fn identical_files(ra: File, rb: File) -> io::Result<bool> {
    if ra.metadata()?.len() != rb.metadata()?.len() {
        return Ok(false);
    }
    same_bytes(ra, rb)
}

/// Do the two streams hold the same bytes?
pub fn same_bytes(mut ra: impl Read, mut rb: impl Read) -> io::Result<bool> {
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
        let mut out = create_locked_temp(&tmp, mode)?;
        io::Write::write_all(&mut *out, data)?;
        out.set_permissions(fs::Permissions::from_mode(mode))?;
        out.sync_all()?;
        // Renamed while still locked: no reclaimer can take it for a dead writer's.
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

/// An advisory lock on `path` (exclusive unless taken by [`lock_shared`]), released on drop.
pub struct LockFile(Flock<File>);

impl LockFile {
    /// The locked file, for a holder that records who it is in it (a pid).
    pub fn file(&self) -> &File {
        &self.0
    }
}

/// Takes an exclusive lock; `None` when `wait` is zero and the lock is busy,
/// or when `wait` ran out.
pub fn lock(path: &Path, wait: Duration) -> io::Result<Option<LockFile>> {
    lock_as(path, wait, FlockArg::LockExclusiveNonblock)
}

/// Takes a shared lock (many readers, no exclusive holder), as [`lock`].
pub fn lock_shared(path: &Path, wait: Duration) -> io::Result<Option<LockFile>> {
    lock_as(path, wait, FlockArg::LockSharedNonblock)
}

fn lock_as(path: &Path, wait: Duration, how: FlockArg) -> io::Result<Option<LockFile>> {
    let start = Instant::now();
    let mut file = open_lock_file(path)?;
    loop {
        match Flock::lock(file, how) {
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

/// Readable and writable: where flock() is emulated by fcntl() (NFS), a
/// shared lock needs read access and an exclusive one write access.
fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
}

/// Whether an exclusive [`lock`] on `path` is held (the file is created if
/// missing). Asks with a shared lock, so that two askers never take each
/// other for the holder.
pub fn is_locked(path: &Path) -> io::Result<bool> {
    let file = open_lock_file(path)?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => Ok(false),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(true),
        Err((_, e)) => Err(io::Error::from(e)),
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
                    existing: Some(9),
                    ours: 10,
                    compressed: false,
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
    fn place_made_writes_straight_into_the_file_it_links() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        // Chunks around the write-behind size, so the buffer is both used and bypassed.
        let data: Vec<u8> = (0..3 * WRITE_CHUNK + 4321).map(|i| (i * 7 % 253) as u8).collect();
        let mut inode = None;
        let mut fill = |w: &mut dyn Write| {
            for part in data.chunks(WRITE_CHUNK - 1000).chain([&data[..0]]) {
                w.write_all(part).map_err(io_err(&out, "write"))?;
            }
            // The only file in the directory is the temporary file being written.
            let names: Vec<_> = fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
            assert_eq!(names.len(), 1, "{names:?}");
            assert!(is_temp_name(&names[0].file_name().unwrap().to_string_lossy()));
            inode = Some(fs::metadata(&names[0]).unwrap().ino());
            Ok(())
        };
        assert_eq!(place_made(&mut fill, &out, "f", 0o640).unwrap(), Placed::Created);
        let placed = fs::metadata(out.join("f")).unwrap();
        assert_eq!(
            Some(placed.ino()),
            inode,
            "the written file itself was linked, not a copy"
        );
        assert_eq!(placed.permissions().mode() & 0o777, 0o640);
        assert!(fs::read(out.join("f")).unwrap() == data);
        assert_eq!(fs::read_dir(&out).unwrap().count(), 1, "no temporary file left");
        // The same bytes again: already there; other bytes: a conflict, untouched.
        let mut same = |w: &mut dyn Write| w.write_all(&data).map_err(io_err(&out, "write"));
        assert_eq!(place_made(&mut same, &out, "f", 0o640).unwrap(), Placed::AlreadyPresent);
        let mut other = |w: &mut dyn Write| w.write_all(b"other").map_err(io_err(&out, "write"));
        let e = place_made(&mut other, &out, "f", 0o640).unwrap_err();
        assert!(matches!(e, PlaceError::Conflict { .. }), "{e:?}");
        // A fill that fails leaves nothing behind and says why.
        let mut failing = |w: &mut dyn Write| {
            w.write_all(&data).map_err(io_err(&out, "write"))?;
            Err(io_err(Path::new("/src"), "read")(io::Error::other("disk on fire")))
        };
        let e = place_made(&mut failing, &out, "g", 0o640).unwrap_err().to_string();
        assert!(e.contains("/src: read: disk on fire"), "{e}");
        let names: Vec<_> = fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["f"]);
        assert!(fs::read(out.join("f")).unwrap() == data);
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
    fn a_symlink_at_the_name_is_a_conflict_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("000000010000000000000001");
        write(&src, b"segment");
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        // A symlink to the very file being archived: not a copy.
        std::os::unix::fs::symlink(&src, out.join("f")).unwrap();
        let e = place_copy(&src, &out, "f", 0o600).unwrap_err();
        assert!(
            matches!(
                e,
                PlaceError::NotRegular {
                    kind: "symbolic link",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("is a symbolic link, not an archived copy"),
            "{e}"
        );
        let e = place_link(&src, &out, "f").unwrap_err();
        assert!(matches!(e, PlaceError::NotRegular { .. }), "{e:?}");
        assert!(identical(&src, &out.join("f")).is_err());
        // A FIFO is refused without blocking on it.
        nix::unistd::mkfifo(&out.join("p"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = place_copy(&src, &out, "p", 0o600).unwrap_err();
        assert!(matches!(e, PlaceError::NotRegular { kind: "FIFO", .. }), "{e:?}");
        assert!(fs::symlink_metadata(out.join("f")).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&src).unwrap(), b"segment");
        // A symlinked directory (/var/lib/archive -> /mnt/nfs/archive) is the
        // admin's choice: only the entries inside are judged.
        let via = d.path().join("via");
        std::os::unix::fs::symlink(&out, &via).unwrap();
        assert_eq!(place_copy(&src, &via, "g", 0o600).unwrap(), Placed::Created);
        assert_eq!(place_copy(&src, &via, "g", 0o600).unwrap(), Placed::AlreadyPresent);
        assert!(fs::symlink_metadata(out.join("g")).unwrap().is_file());
    }

    fn backdate(p: &Path, secs: u64) {
        let t = std::time::SystemTime::now() - Duration::from_secs(secs);
        fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn temp_files_of_dead_writers_are_reclaimed_live_ones_kept() {
        assert!(is_temp_name(".000000010000000000000001.pitrkit-123.tmp"));
        assert!(is_temp_name(".pitrkit-system-id.pitrkit-9.tmp"));
        assert!(is_temp_name(".pitrkit-compress-AbC123"));
        for n in [
            "000000010000000000000001",
            ".pitrkit-system-id",
            ".x.pitrkit-.tmp",
            ".x.pitrkit-1a.tmp",
            "..pitrkit-1.tmp",
        ] {
            assert!(!is_temp_name(n), "{n}");
        }
        let d = tempfile::tempdir().unwrap();
        let dead = d.path().join(".000000010000000000000001.pitrkit-4000000.tmp");
        let young = d.path().join(".000000010000000000000002.pitrkit-4000001.tmp");
        let held = d.path().join(".000000010000000000000003.pitrkit-4000002.tmp");
        let wal = d.path().join("000000010000000000000004");
        let target = d.path().join("target");
        let link = d.path().join(".000000010000000000000005.pitrkit-4000003.tmp");
        for p in [&dead, &young, &held, &wal, &target] {
            write(p, b"x");
        }
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for p in [&dead, &held, &wal, &target] {
            backdate(p, 3600);
        }
        let _writer = lock(&held, Duration::ZERO).unwrap().unwrap();
        assert_eq!(reclaim_temp_files(d.path()).unwrap(), 1);
        assert!(!dead.exists(), "an old unlocked temp file is a dead writer's");
        assert!(young.exists(), "too young: its writer may not have locked it yet");
        assert!(held.exists(), "locked: a live writer");
        assert!(wal.exists() && target.exists() && fs::symlink_metadata(&link).is_ok());
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

    #[test]
    fn a_shared_lock_works_where_flock_is_emulated_by_fcntl() {
        // An NFS client turns flock() into a whole-file fcntl() lock, and a
        // read lock needs a descriptor open for reading (flock(2), NOTES):
        // a write-only lock file made every recover on an NFS repository
        // fail with EBADF. Take the fcntl read lock on the same descriptor.
        let d = tempfile::tempdir().unwrap();
        let held = lock_shared(&d.path().join("lock"), Duration::ZERO).unwrap().unwrap();
        let whole = libc::flock {
            l_type: libc::F_RDLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        nix::fcntl::fcntl(held.file(), nix::fcntl::FcntlArg::F_SETLK(&whole))
            .expect("an fcntl read lock on the lock file's descriptor (as NFS takes LOCK_SH)");
    }
}
