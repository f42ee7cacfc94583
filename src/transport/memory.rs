//! An in-memory [`Transport`] for tests: slaves that can be down, slow,
//! lose files, hold other stored forms or different bytes, or fail to
//! fsync, so that queue and verdict logic is tested without ssh and rsync.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use super::error::{Cause, Hint, TransportError};
use super::{Connect, MountFacts, PushReport, RemoteFile, RemoteMark, Transport, Verdict};
use crate::layout::SYSTEM_ID_FILE;

/// One slave's remote directory and its misbehaviour.
#[derive(Debug, Default, Clone)]
pub struct Slave {
    pub files: HashMap<String, Vec<u8>>,
    /// Names that are there but are not regular files (a directory, a symlink).
    pub odd: Vec<String>,
    /// Every call fails as ssh does when it cannot connect (exit 255).
    pub down: bool,
    /// Each call takes this long.
    pub delay: Duration,
    /// A push stores nothing and reports nothing sent (a skipping rsync).
    pub silent: bool,
    /// The remote fsync fails.
    pub sync_fails: bool,
    /// What was fsync'd, in order.
    pub synced: Vec<String>,
    /// Names pushed, in order (sent or not).
    pub pushed: Vec<String>,
    /// The share is unmounted during the sync: the mark (and everything
    /// pushed) is gone when the sync reads the mark again.
    pub unmount_at_sync: bool,
    /// What `-I`'s mount guard sees there (default: nothing in fstab).
    pub mount: MountFacts,
}

/// Every slave, by host name.
#[derive(Debug, Default)]
pub struct Memory {
    pub slaves: Mutex<HashMap<String, Slave>>,
}

impl Memory {
    /// Slaves whose directories `-I` marked (unclaimed: no system named).
    pub fn new(hosts: &[&str]) -> Memory {
        let m = Memory::default();
        for h in hosts {
            let mut slave = Slave::default();
            slave.files.insert(SYSTEM_ID_FILE.to_string(), Vec::new());
            m.slaves.lock().unwrap().insert(h.to_string(), slave);
        }
        m
    }

    /// Changes one slave.
    pub fn with<T>(&self, host: &str, f: impl FnOnce(&mut Slave) -> T) -> T {
        f(self.slaves.lock().unwrap().entry(host.to_string()).or_default())
    }
}

impl Connect for Memory {
    fn connect<'a>(&'a self, slave: &'a str) -> Box<dyn Transport + 'a> {
        Box::new(Remote {
            memory: self,
            host: slave,
        })
    }
}

struct Remote<'a> {
    memory: &'a Memory,
    host: &'a str,
}

impl Remote<'_> {
    fn sync_failed(&self) -> TransportError {
        TransportError::failed(
            "syncing files on",
            self.target(),
            Cause::Remote {
                command: "remote `sync`".into(),
                code: 1,
                stderr: "sync: error syncing '/r': Input/output error".into(),
            },
            Hint::Hung {
                host: self.host.to_string(),
            },
        )
    }

    /// Runs `f` on the slave, as a remote call that may fail or take time.
    fn call<T>(&self, what: &'static str, f: impl FnOnce(&mut Slave) -> T) -> Result<T, TransportError> {
        let delay = self.memory.with(self.host, |s| s.delay);
        std::thread::sleep(delay);
        self.memory.with(self.host, |s| {
            if s.down {
                return Err(TransportError::failed(
                    what,
                    self.target(),
                    Cause::Ssh {
                        code: 255,
                        stderr: format!("ssh: connect to host {} port 22: Connection refused", self.host),
                    },
                    Hint::ForExit {
                        host: self.host.to_string(),
                        dir: "/r".into(),
                        user: None,
                        code: Some(255),
                    },
                ));
            }
            Ok(f(s))
        })
    }
}

/// The mark as the real transport reports it (newlines made blanks).
fn mark_of(s: &Slave, mark: &str) -> RemoteMark {
    match s.files.get(mark) {
        Some(b) => RemoteMark::Content(String::from_utf8_lossy(b).replace('\n', " ")),
        None if s.odd.iter().any(|o| o == mark) => RemoteMark::Unreadable,
        None => RemoteMark::Missing,
    }
}

/// What of `names` the slave holds.
fn listing(s: &Slave, names: &[String]) -> HashMap<String, RemoteFile> {
    let mut found = HashMap::new();
    for n in names {
        if let Some(b) = s.files.get(n) {
            let size = b.len() as u64;
            found.insert(n.clone(), RemoteFile { size, regular: true });
        } else if s.odd.contains(n) {
            found.insert(
                n.clone(),
                RemoteFile {
                    size: 0,
                    regular: false,
                },
            );
        }
    }
    found
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}/{name}: {e}", dir.display()))
}

impl Transport for Remote<'_> {
    fn target(&self) -> String {
        format!("{}:/r", self.host)
    }

    fn push(&self, src_dir: &Path, names: &[String]) -> Result<PushReport, TransportError> {
        self.call("shipping WAL to", |s| {
            let mut report = PushReport::default();
            for n in names {
                s.pushed.push(n.clone());
                if s.silent || s.files.contains_key(n) || s.odd.contains(n) {
                    report.not_sent.push(n.clone());
                } else {
                    s.files.insert(n.clone(), read(src_dir, n));
                    report.sent.push(n.clone());
                }
            }
            report
        })
    }

    fn verify(&self, src_dir: &Path, names: &[String]) -> Result<Vec<(String, Verdict)>, TransportError> {
        self.call("comparing WAL with", |s| {
            names
                .iter()
                .map(|n| {
                    let v = match s.files.get(n) {
                        _ if s.odd.contains(n) => Verdict::Odd("cd+++++++++".into()),
                        None => Verdict::Missing,
                        Some(b) if *b == read(src_dir, n) => Verdict::Identical,
                        Some(_) => Verdict::Different,
                    };
                    (n.clone(), v)
                })
                .collect()
        })
    }

    fn stat_marked(
        &self,
        names: &[String],
        mark: &str,
    ) -> Result<(RemoteMark, HashMap<String, RemoteFile>), TransportError> {
        self.call("listing", |s| (mark_of(s, mark), listing(s, names)))
    }

    fn sync_files_marked(&self, names: &[String], mark: &str) -> Result<RemoteMark, TransportError> {
        let (failed, m) = self.call("syncing files on", |s| {
            s.synced.extend(names.iter().cloned());
            if s.unmount_at_sync {
                // The bare mount point, once the share is gone.
                s.files.clear();
            }
            (s.sync_fails && !names.is_empty(), mark_of(s, mark))
        })?;
        if failed {
            return Err(self.sync_failed());
        }
        Ok(m)
    }

    fn mount_facts(&self, _fstab: &Path) -> Result<MountFacts, TransportError> {
        self.call("checking mounts on", |s| s.mount.clone())
    }

    fn stat(&self, names: &[String]) -> Result<HashMap<String, RemoteFile>, TransportError> {
        self.call("listing", |s| listing(s, names))
    }

    fn fetch(&self, names: &[String], dest_dir: &Path) -> Result<(), TransportError> {
        self.call("fetching WAL from", |s| {
            for n in names {
                std::fs::write(dest_dir.join(n), &s.files[n]).unwrap();
            }
        })
    }

    fn sync_files(&self, names: &[String]) -> Result<(), TransportError> {
        let failed = self.call("syncing files on", |s| {
            s.synced.extend(names.iter().cloned());
            s.sync_fails
        })?;
        if failed {
            return Err(self.sync_failed());
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TransportError> {
        self.call("connecting to", |_| ())
    }

    fn read_file(&self, name: &str) -> Result<Option<Vec<u8>>, TransportError> {
        self.call("reading", |s| s.files.get(name).cloned())
    }

    fn write_file_durable(&self, name: &str, data: &[u8]) -> Result<(), TransportError> {
        self.call("writing", |s| {
            s.files.insert(name.to_string(), data.to_vec());
        })
    }
}
