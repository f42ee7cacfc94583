//! Moving files between hosts: the OpenSSH client and rsync, driven as
//! subprocesses with argument vectors (no shell). Local destinations need no
//! transport: they go through `fsutil` directly.

pub mod error;
pub mod guard;
#[cfg(any(test, feature = "test-support"))]
pub mod memory;
pub mod pull;
pub mod remote;
pub mod rsync;
pub mod ssh;
pub mod tunnel;

use std::collections::HashMap;
use std::path::Path;

pub use error::TransportError;
pub use guard::{MountFacts, RemoteMark};
pub use rsync::{PushReport, RemoteFile, Verdict};

/// One slave's remote directory, as shipping sees it. Names are relative to
/// that directory; local files are named relative to `src_dir`. The real
/// implementation is rsync over ssh ([`rsync::Remote`]); queue and verdict
/// logic is tested with an in-memory one.
pub trait Transport {
    /// `host:dir`, for messages.
    fn target(&self) -> String;
    /// Sends `names` from `src_dir`, never replacing a file that exists remotely.
    fn push(&self, src_dir: &Path, names: &[String]) -> Result<PushReport, TransportError>;
    /// Compares `names` in `src_dir` with the remote files of those names:
    /// one verdict per name, in order (what the push did not send).
    fn verify(&self, src_dir: &Path, names: &[String]) -> Result<Vec<(String, Verdict)>, TransportError>;
    /// Size and type of those of `names` that exist remotely.
    fn stat(&self, names: &[String]) -> Result<HashMap<String, RemoteFile>, TransportError>;
    /// [`Transport::stat`], with the content of the directory's `mark`
    /// file read first, in the same remote call.
    fn stat_marked(
        &self,
        names: &[String],
        mark: &str,
    ) -> Result<(RemoteMark, HashMap<String, RemoteFile>), TransportError>;
    /// Copies `names` from the remote directory into `dest_dir`.
    fn fetch(&self, names: &[String], dest_dir: &Path) -> Result<(), TransportError>;
    /// Makes `names` and the remote directory durable.
    fn sync_files(&self, names: &[String]) -> Result<(), TransportError>;
    /// [`Transport::sync_files`] (nothing to sync when `names` is empty),
    /// then, once that succeeded, the content of the directory's `mark`
    /// file, in the same remote call.
    fn sync_files_marked(&self, names: &[String], mark: &str) -> Result<RemoteMark, TransportError>;
    /// For `-I`: reachable, directory present and writable, tools installed.
    fn check(&self) -> Result<(), TransportError>;
    /// For `-I`'s mount guard: the remote `fstab`, mountinfo, the directory
    /// with symlinks resolved and the devices of it and its parents.
    fn mount_facts(&self, fstab: &Path) -> Result<MountFacts, TransportError>;
    /// The content of a small file (the archive mark); `None` if absent.
    fn read_file(&self, name: &str) -> Result<Option<Vec<u8>>, TransportError>;
    /// Writes a small file durably, replacing it (the archive mark).
    fn write_file_durable(&self, name: &str, data: &[u8]) -> Result<(), TransportError>;
}

/// Opens the [`Transport`] to one slave's remote directory.
pub trait Connect: Sync {
    fn connect<'a>(&'a self, slave: &'a str) -> Box<dyn Transport + 'a>;
}
