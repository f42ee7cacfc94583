//! Administration: `-I` (create and mark the queues and archives, check the
//! slaves), `--status` and `--flush`.

use std::path::{Path, PathBuf};

use super::layout::STATE_FILE;
use super::ship::{depth, ship_round, with_rsync, Shipper};
use super::state::{Event, SlaveState};
use super::{mount, now_unix, queue, sysid, SYSTEM_ID_FILE};
use crate::config::s3::S3Location;
use crate::config::ArchiverConfig;
use crate::fsutil;
use crate::storage::S3Store;
use crate::transport::Transport;

/// `--flush`: ship every queue now, waiting for locks and ignoring back-off.
/// True when every queue is empty afterwards.
pub fn flush(cfg: &ArchiverConfig) -> (bool, Vec<(String, Event)>) {
    let results = ship_round(cfg, true, true);
    let all_empty = results
        .iter()
        .all(|(_, e)| matches!(e, Event::Delivered { depth: 0, .. }));
    (all_empty, results)
}

/// Result of `-I` for one item.
#[derive(Debug)]
pub struct InitCheck {
    pub what: String,
    pub problem: Option<String>,
}

/// `-I`: create the queue root, per-slave queues and local archives (0700),
/// refuse non-empty queues (as pitrtools did), then check every slave.
pub fn init(cfg: &ArchiverConfig) -> Vec<InitCheck> {
    init_with(cfg, Path::new(mount::FSTAB))
}

pub(super) fn init_with(cfg: &ArchiverConfig, fstab: &Path) -> Vec<InitCheck> {
    let mut checks = Vec::new();
    let unmounted = check_mounts(cfg, fstab, &mut checks);
    create_dirs(cfg, &unmounted, &mut checks);
    // Only -I marks a directory as an archive; see sysid.
    let queue_root = cfg.shipping.as_ref().map(|s| &s.queue_root);
    for d in cfg.local_archivedirs.iter().chain(queue_root) {
        if !d.is_dir() || unmounted.contains(d) {
            continue; // reported above
        }
        let (what, problem) = match sysid::init_dir(d, cfg.pgdata.as_deref()) {
            Ok(note) => (format!("{}: {note}", d.display()), None),
            Err(p) => (format!("{}: database system", d.display()), Some(p)),
        };
        checks.push(InitCheck { what, problem });
    }
    for loc in &cfg.archive_urls {
        checks.push(init_url(cfg, loc));
    }
    if let Some(remote) = with_rsync(cfg, |s| check_slaves(s, fstab)) {
        checks.extend(remote);
    }
    checks
}

/// `-I` for one `archive_urls` prefix: the endpoint must refuse a second
/// conditional create (else "never overwrite" would not hold there), then
/// the prefix is marked like a directory.
pub fn init_url(cfg: &ArchiverConfig, loc: &S3Location) -> InitCheck {
    let done = S3Store::open(loc).and_then(|s| {
        s.prove_conditional_create()?;
        sysid::init_store(&s, cfg.pgdata.as_deref())
    });
    match done {
        Ok(note) => InitCheck {
            what: format!("{}: refuses a second create (412); {note}", loc.url),
            problem: None,
        },
        Err(p) => InitCheck {
            what: format!("{}: object storage", loc.url),
            problem: Some(p),
        },
    }
}

/// Before anything is created: a directory under a share that is not
/// mounted would be created (and marked) on the root filesystem. Returns
/// the directories that are not mounted.
fn check_mounts(cfg: &ArchiverConfig, fstab: &Path, checks: &mut Vec<InitCheck>) -> Vec<PathBuf> {
    let mut unmounted = Vec::new();
    let guarded = cfg
        .local_archivedirs
        .iter()
        .map(|d| (d, cfg.require_mount))
        .chain(cfg.shipping.iter().map(|s| (&s.queue_root, false)));
    for (dir, required) in guarded {
        if let Err(p) = mount::check(dir, fstab, required) {
            checks.push(InitCheck {
                what: format!("{}: mounted", dir.display()),
                problem: Some(p),
            });
            unmounted.push(dir.clone());
        }
    }
    unmounted
}

/// Creates the local archives, the queue root and each slave's queue
/// (which must be empty).
fn create_dirs(cfg: &ArchiverConfig, unmounted: &[PathBuf], checks: &mut Vec<InitCheck>) {
    let mut mk = |what: String, dir: &Path, must_be_empty: bool| {
        if unmounted.iter().any(|u| dir.starts_with(u)) {
            return; // reported above
        }
        let problem = match fsutil::ensure_dir(dir, 0o700) {
            Err(e) => Some(format!("cannot create {}: {e}", dir.display())),
            Ok(()) if must_be_empty => match queue::queued_files(dir) {
                Ok(files) if !files.is_empty() => Some(format!(
                    "{} already holds {} queued file(s); ship them with `pitrkit archiver -C {} --flush`, or remove them if you are sure they are obsolete",
                    dir.display(), files.len(), cfg.source.display()
                )),
                Err(e) => Some(format!("cannot read {}: {e}", dir.display())),
                _ => None,
            },
            Ok(()) => None,
        };
        checks.push(InitCheck { what, problem });
    };
    for d in &cfg.local_archivedirs {
        mk(format!("local archive {}", d.display()), d, false);
    }
    if let Some(sh) = &cfg.shipping {
        mk(format!("queue root {}", sh.queue_root.display()), &sh.queue_root, false);
        for s in &sh.slaves {
            mk(format!("queue for {s}"), &sh.queue_dir(s), true);
        }
    }
}

/// Every slave: reachable with its directory writable and tools present,
/// its `r_archivedir` mounted if its `fstab` (at the path `fstab`) lists a
/// mount point above it, then marked.
pub(super) fn check_slaves(s: &Shipper, fstab: &Path) -> Vec<InitCheck> {
    let rdir = s.sh.remote_dir.display();
    let mut checks = Vec::new();
    for slave in &s.sh.slaves {
        let remote = s.net.connect(slave);
        let reachable = remote.check();
        let ok = reachable.is_ok();
        checks.push(InitCheck {
            what: format!("slave {slave}: {slave}:{rdir} reachable and writable, rsync present"),
            problem: reachable.err().map(|e| e.to_string()),
        });
        // A share not mounted on the slave is a bare directory there:
        // never mark it (shipping would then fill it).
        let guard = if ok {
            remote_mounted(remote.as_ref(), slave, &s.sh.remote_dir, fstab)
        } else {
            Ok(())
        };
        if let Err(p) = guard {
            checks.push(InitCheck {
                what: format!("slave {slave}: {rdir}: mounted"),
                problem: Some(format!("{p} (on {slave})")),
            });
        } else if ok {
            let (what, problem) = match mark_remote(s.cfg, remote.as_ref()) {
                Ok(note) => (format!("slave {slave}: {rdir}: {note}"), None),
                Err(p) => (format!("slave {slave}: {rdir}: database system"), Some(p)),
            };
            checks.push(InitCheck { what, problem });
        }
    }
    checks
}

/// `-I`'s mount guard for a slave's directory, from the facts one remote
/// call gathers (see [`mount::check_remote`]).
fn remote_mounted(remote: &dyn Transport, slave: &str, rdir: &Path, fstab: &Path) -> Result<(), String> {
    let f = remote.mount_facts(fstab).map_err(|e| e.to_string())?;
    let shown = if f.real == rdir {
        format!("{slave}:{}", rdir.display())
    } else {
        format!("{slave}:{} (really {})", rdir.display(), f.real.display())
    };
    mount::check_remote(&shown, &f.real, &f.fstab, fstab, &f.mountinfo, &f.devices)
}

/// `-I` for a slave's `r_archivedir`: the same mark as a local archive
/// directory, so that restore there can tell an archive from an empty
/// (unmounted) directory. Claims an unmarked or unclaimed directory,
/// refuses one that belongs to another system.
fn mark_remote(cfg: &ArchiverConfig, remote: &dyn Transport) -> Result<String, String> {
    let where_ = format!("{}/{SYSTEM_ID_FILE}", remote.target());
    let ours = cfg.pgdata.as_deref().map(|p| (p, sysid::pg_control_system_id(p)));
    let here = match remote.read_file(SYSTEM_ID_FILE).map_err(|e| e.to_string())? {
        None => sysid::Recorded::Missing,
        Some(bytes) => sysid::parse(&String::from_utf8_lossy(&bytes), &where_).map_err(|e| e.to_string())?,
    };
    let write = |id: Option<u64>| {
        remote
            .write_file_durable(SYSTEM_ID_FILE, sysid::content(id).as_bytes())
            .map_err(|e| e.to_string())
    };
    match (here, ours) {
        (sysid::Recorded::System(a), Some((p, Ok(o)))) if a != o => Err(format!(
            "this slave's archive belongs to system {a} ({where_}), but {} is system {o}: two clusters must never share an archive. Point r_archivedir at a directory of its own, or remove {where_} if the old system is gone for good",
            p.display()
        )),
        (sysid::Recorded::System(a), _) => Ok(format!("belongs to database system {a}")),
        (_, Some((_, Ok(o)))) => {
            write(Some(o))?;
            Ok(format!("claimed for database system {o}"))
        }
        (here, ours) => {
            if here == sysid::Recorded::Missing {
                write(None)?;
            }
            Ok(match ours {
                Some((p, Err(e))) => format!(
                    "unclaimed (cannot read {}/global/pg_control: {e}); run -I again once it can be read",
                    p.display()
                ),
                _ => "unclaimed (pgdata is not set); set pgdata and run -I again".into(),
            })
        }
    }
}

/// `--status`: one line per slave for humans and monitoring.
pub fn status(cfg: &ArchiverConfig) -> Vec<String> {
    let now = now_unix();
    let Some(sh) = &cfg.shipping else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for s in &sh.slaves {
        let qdir = sh.queue_dir(s);
        let st = SlaveState::load(&qdir.join(STATE_FILE));
        let conflicts = queue::conflict_count(&qdir);
        let health = if st.failing {
            format!(
                "FAILING for {}s ({} attempts): {}",
                now - st.since,
                st.failures,
                st.last_error
            )
        } else {
            "ok".into()
        };
        out.push(format!(
            "{s}: {} queued, {conflicts} conflict(s), {health}",
            depth(&qdir)
        ));
    }
    out.push(super::runner::status_line(&sh.queue_root));
    out
}
