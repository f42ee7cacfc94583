//! Shipping: rounds over the slaves' queues (up to `max_queue_workers` at
//! once), one slave's delivery under its queue lock with its state and
//! alerts, and sync mode's verdicts (does this slave now have this file?).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::layout::{CONFLICTS_DIR, LOCK_FILE, STATE_FILE};
use super::now_unix;
use super::queue::{self, Outcome, QueueShip, Shipped};
use super::slavemark::Expected;
use super::state::{self, Event, SlaveState};
use crate::compress::Codec;
use crate::config::archiver::Shipping;
use crate::config::ArchiverConfig;
use crate::fsutil;
use crate::notify::Level;
use crate::transport::rsync::Rsync;
use crate::transport::Connect;

/// What shipping one slave's queue did.
#[derive(Debug)]
pub(super) struct SlaveRun {
    pub event: Event,
    /// Per-file outcomes, when the queue was shipped at all.
    pub shipped: Option<Shipped>,
}

/// Shipping for one configuration, through one way of reaching the slaves.
pub(super) struct Shipper<'a> {
    pub cfg: &'a ArchiverConfig,
    pub sh: &'a Shipping,
    pub net: &'a dyn Connect,
}

/// Runs `f` with the rsync-over-ssh shipper of `cfg` (none without slaves).
pub(super) fn with_rsync<T>(cfg: &ArchiverConfig, f: impl FnOnce(&Shipper) -> T) -> Option<T> {
    let sh = cfg.shipping.as_ref()?;
    let net = Rsync {
        dir: &sh.remote_dir,
        ssh: &cfg.ssh,
        rsync: &cfg.rsync,
    };
    Some(f(&Shipper { cfg, sh, net: &net }))
}

/// Ships every slave's queue (up to `max_queue_workers` at once).
/// `force` ignores the retry back-off; `wait` waits for a busy queue's lock.
pub fn ship_round(cfg: &ArchiverConfig, force: bool, wait: bool) -> Vec<(String, Event)> {
    with_rsync(cfg, |s| s.round_all(force, wait)).unwrap_or_default()
}

pub(super) fn depth(qdir: &Path) -> usize {
    queue::queued_files(qdir).map(|v| v.len()).unwrap_or(0)
}

impl Shipper<'_> {
    pub fn round_all(&self, force: bool, wait: bool) -> Vec<(String, Event)> {
        self.round(&self.sh.slaves, force, wait)
            .into_iter()
            .map(|(s, r)| (s, r.event))
            .collect()
    }

    pub fn round(&self, slaves: &[String], force: bool, wait: bool) -> Vec<(String, SlaveRun)> {
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<(String, SlaveRun)>> = Mutex::new(Vec::new());
        let workers = self.cfg.max_queue_workers.min(slaves.len()).max(1);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(slave) = slaves.get(i) else { break };
                    let run = self.slave(slave, force, wait);
                    results.lock().unwrap().push((slave.clone(), run));
                });
            }
        });
        let mut r = results.into_inner().unwrap();
        r.sort_by(|a, b| a.0.cmp(&b.0));
        r
    }

    /// One slave: take its queue lock (a busy queue is another process's
    /// job: skipped, state untouched), then under the lock load the delivery
    /// state, respect the back-off, ship, record the new state; notify after
    /// unlocking.
    pub fn slave(&self, slave: &str, force: bool, wait: bool) -> SlaveRun {
        let qdir = self.sh.queue_dir(slave);
        let wait_for = if wait { self.cfg.lock_timeout } else { Duration::ZERO };
        let (lock, lock_error) = match fsutil::lock(&qdir.join(LOCK_FILE), wait_for) {
            Ok(Some(l)) => (Some(l), None),
            Ok(None) => {
                log::debug!("slave {slave}: another pitrkit process is shipping this queue");
                return SlaveRun {
                    event: Event::Skipped { depth: depth(&qdir) },
                    shipped: None,
                };
            }
            // Nobody can hold a lock that cannot be opened: record the failure
            // (one warning per outage) like any other.
            Err(e) => (
                None,
                Some(format!(
                    "cannot lock queue {}: {e}; check that the directory exists and belongs to the archiver's OS user (`pitrkit archiver -I` creates it)",
                    qdir.display()
                )),
            ),
        };
        // A process killed while saving the delivery state leaves its
        // temporary file in the queue; nothing else would ever remove it.
        if lock.is_some() {
            if let Err(e) = fsutil::reclaim_temp_files(&qdir) {
                log::warn!("cannot reclaim temporary files in {}: {e}", qdir.display());
            }
        }
        let state_path = qdir.join(STATE_FILE);
        let prev = SlaveState::load(&state_path);
        let now = now_unix();
        let (event, shipped) = match lock_error {
            Some(error) => (
                Event::Failed {
                    error,
                    depth: depth(&qdir),
                },
                None,
            ),
            None => self.attempt(slave, &qdir, &prev, now, force),
        };
        let (next, notices) = state::transition(slave, &prev, &event, now, self.cfg.queue_critical_depth);
        if next != prev {
            if let Err(e) = next.save(&state_path) {
                log::warn!("cannot save delivery state {}: {e}", state_path.display());
            }
        }
        drop(lock);

        // Hooks may be slow: never while holding the queue.
        if let Some(s) = &shipped {
            self.notify_conflicts(slave, &qdir, s);
        }
        for n in notices {
            self.cfg.notify.send(n.level, &n.message);
        }
        if let Event::Failed { error, .. } = &event {
            log::warn!("slave {slave}: delivery failed, files stay queued: {error}");
        }
        SlaveRun { event, shipped }
    }

    /// Under the queue lock: ships the queue unless the back-off says wait.
    fn attempt(&self, slave: &str, qdir: &Path, prev: &SlaveState, now: i64, force: bool) -> (Event, Option<Shipped>) {
        if !state::should_attempt(prev, now, self.cfg.queue_wait.as_secs(), force) {
            log::debug!(
                "slave {slave}: last delivery failed {}s ago; next try after queue_wait",
                now - prev.last_attempt
            );
            return (Event::Skipped { depth: depth(qdir) }, None);
        }
        let remote = self.net.connect(slave);
        let run = QueueShip {
            remote: remote.as_ref(),
            slave,
            qdir,
            fsync: self.cfg.rsync.fsync,
            mark: Expected {
                slave,
                target: remote.target(),
                config: &self.cfg.source,
                queue_root: &self.sh.queue_root,
            },
        }
        .run();
        let s = match run {
            Ok(s) => s,
            Err(e) => {
                let event = Event::Failed {
                    error: e.to_string(),
                    depth: depth(qdir),
                };
                return (event, None);
            }
        };
        let delivered = s.delivered().len();
        if delivered > 0 {
            log::info!("slave {slave}: delivered {delivered} file(s), {} queued", s.remaining);
        }
        let event = if s.problems.is_empty() {
            Event::Delivered {
                delivered,
                depth: s.remaining,
            }
        } else {
            Event::Failed {
                error: format!(
                    "{} file(s) not confirmed on the slave and kept queued: {}",
                    s.problems.len(),
                    s.problems.join("; ")
                ),
                depth: s.remaining,
            }
        };
        (event, Some(s))
    }

    fn notify_conflicts(&self, slave: &str, qdir: &Path, s: &Shipped) {
        for c in s.conflicts() {
            // Another stored form of the same WAL (X beside our X.zst) counts too.
            let theirs = s
                .conflict_with
                .iter()
                .find(|(q, _)| *q == c)
                .map_or(c.clone(), |(_, forms)| forms.clone());
            self.cfg.notify.send(Level::Critical, &format!(
                "slave {slave} already has a different {theirs} in {}; pitrkit did not overwrite it and moved the queued copy to {}. Two clusters archiving to one standby directory?",
                self.sh.remote_dir.display(),
                qdir.join(CONFLICTS_DIR).join(&c).display()
            ));
        }
    }

    /// Sync mode: does `slave` now have `name`? Only this run's outcome for
    /// this very file counts, never the absence of the file from the queue.
    pub fn verdict(&self, slave: &str, run: &SlaveRun, name: &str) -> Result<(), String> {
        let conflict = self.sh.queue_dir(slave).join(CONFLICTS_DIR).join(name);
        let rdir = self.sh.remote_dir.display().to_string();
        let in_conflict = || {
            format!(
                "it already has a different {name} in {rdir}; pitrkit did not overwrite it and keeps ours in {}. Compare the two, then remove the wrong one (and {} once resolved)",
                conflict.display(),
                conflict.display()
            )
        };
        let shipped = match (&run.shipped, &run.event) {
            (Some(shipped), _) => shipped,
            (None, Event::Failed { error, .. }) => return Err(error.clone()),
            (None, Event::Skipped { .. }) => {
                return Err("busy: another pitrkit process is shipping this queue (lock_timeout)".into())
            }
            (None, Event::Delivered { .. }) => return Err(format!("{name} was not shipped")),
        };
        match shipped.outcome(name) {
            Some(Outcome::Delivered) if conflict.exists() => Err(format!(
                "{name} was delivered, but {} remains from an earlier conflict; check {rdir}/{name} on the slave, then remove it",
                conflict.display()
            )),
            Some(Outcome::Delivered) => Ok(()),
            Some(Outcome::Conflict) => Err(in_conflict()),
            Some(Outcome::StillQueued) => Err(format!(
                "{name} could not be confirmed on the slave ({}); it stays queued",
                if shipped.problems.is_empty() {
                    "see the log".to_string()
                } else {
                    shipped.problems.join("; ")
                }
            )),
            None if conflict.exists() => Err(in_conflict()),
            None => Err(format!(
                "{name} left the queue while another pitrkit process was shipping it; PostgreSQL's retry will confirm it"
            )),
        }
    }

    /// Sync mode: the slaves the ledger lists that still hold the file, the
    /// same size, checked with one remote `stat` each: a copy that vanished
    /// since (deleted, restored from a backup, a slave rebuilt) is shipped again.
    pub fn still_delivered(&self, wal: &str, listed: Vec<(String, Option<u64>)>) -> Vec<String> {
        let name = format!("{wal}{}", self.cfg.slave_codec.suffix());
        // A plain file was queued with its `.sum` sidecar: delivered means both.
        let sum = (self.cfg.slave_codec == Codec::None).then(|| crate::integrity::sum_name(wal));
        let names: Vec<String> = std::iter::once(name.clone()).chain(sum.clone()).collect();
        let mut kept = Vec::new();
        for (slave, size) in listed {
            if !self.sh.slaves.contains(&slave) {
                continue;
            }
            let why = match self.net.connect(&slave).stat(&names) {
                Ok(found) => match found.get(&name) {
                    Some(f) if f.regular && sum.as_ref().is_some_and(|s| !found.get(s).is_some_and(|f| f.regular)) => {
                        Some(format!(
                            "its checksum file {} is missing there",
                            sum.as_deref().unwrap_or("")
                        ))
                    }
                    Some(f) if f.regular && size.map_or(true, |s| s == f.size) => None,
                    Some(f) if f.regular => Some(format!("it has {} bytes there, not {}", f.size, size.unwrap_or(0))),
                    Some(_) => Some("it is not a regular file there".to_string()),
                    None => Some("it is gone from there".to_string()),
                },
                Err(e) => Some(format!("cannot check: {e}")),
            };
            match why {
                None => kept.push(slave),
                Some(why) => log::warn!(
                    "{wal}: the delivery ledger lists slave {slave}, but {why} ({slave}:{}/{name}); shipping it again",
                    self.sh.remote_dir.display()
                ),
            }
        }
        kept
    }
}
