//! Queue and verdict logic through the in-memory transport: fast, no ssh,
//! no rsync. The real transport keeps its integration tests (tests/archiver.rs).

use crate::config::ConfigFile;
use std::fs;
use std::path::{Path, PathBuf};

use super::layout::{CONFLICTS_DIR, LEDGER_DIR, LOCK_FILE, STATE_FILE};
use super::ledger::Ledger;
use super::push::archive_via;
use super::queue::Outcome;
use super::ship::Shipper;
use super::state::Event;
use super::{admin, sysid, ArchiveError};
use crate::compress::Codec;
use crate::config::{ArchiverConfig, IniFile};
use crate::transport::memory::Memory;
use crate::transport::Connect;

mod marks;

/// A configuration shipping to `slaves` from a queue root in `dir`, with
/// every alert appended to `dir/alerts` as "<level> <message>".
fn config(dir: &Path, slaves: &str, extra: &str) -> ArchiverConfig {
    let alerts = dir.join("alerts");
    let hook = |level: &str| format!("sh -c 'echo \"$*\" >> {}' sh {level}", alerts.display());
    let text = format!(
        "slaves: {slaves}\nl_archivedir: {}/q\nr_archivedir: /r\nlock_timeout: 5\n{}\
         notify_ok: {}\nnotify_warning: {}\nnotify_critical: {}\n{extra}",
        dir.display(),
        if extra.contains("queue_wait") {
            ""
        } else {
            "queue_wait: 0\n"
        },
        hook("ok"),
        hook("warning"),
        hook("critical"),
    );
    let cfg = ArchiverConfig::from_ini(&IniFile::parse(&dir.join("a.ini"), &text).unwrap()).unwrap();
    let sh = cfg.shipping.as_ref().unwrap();
    fs::create_dir_all(&sh.queue_root).unwrap();
    sysid::write(&sh.queue_root, None).unwrap();
    for s in &sh.slaves {
        fs::create_dir_all(sh.queue_dir(s)).unwrap();
    }
    cfg
}

/// The alerts sent, one per hook run (a message may span lines).
fn alerts(dir: &Path) -> Vec<String> {
    let text = fs::read_to_string(dir.join("alerts")).unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        match out.last_mut() {
            Some(last) if !["ok ", "warning ", "critical "].iter().any(|l| line.starts_with(l)) => {
                last.push('\n');
                last.push_str(line);
            }
            _ => out.push(line.to_string()),
        }
    }
    out
}

fn shipper<'a>(cfg: &'a ArchiverConfig, net: &'a dyn Connect) -> Shipper<'a> {
    Shipper {
        cfg,
        sh: cfg.shipping.as_ref().unwrap(),
        net,
    }
}

fn queue(cfg: &ArchiverConfig, slave: &str) -> PathBuf {
    cfg.shipping.as_ref().unwrap().queue_dir(slave)
}

fn queued(cfg: &ArchiverConfig, slave: &str) -> Vec<String> {
    super::queue::queued_files(&queue(cfg, slave)).unwrap()
}

const A: &str = "000000010000000000000001";
const B: &str = "000000010000000000000002";
/// A WAL file that is not segment data: archived without a segment header.
const H: &str = "00000002.history";
/// A history file as PostgreSQL writes it (the archiver checks them).
const OURS: &[u8] = b"1\t0/3000000\tno recovery target specified\n";

/// A `.history` file in a fake pg_wal, as PostgreSQL passes it.
fn history(dir: &Path, content: &[u8]) -> PathBuf {
    let wal = dir.join("pg_wal");
    fs::create_dir_all(&wal).unwrap();
    let p = wal.join(H);
    fs::write(&p, content).unwrap();
    p
}

#[test]
fn a_round_delivers_every_queue_and_leaves_them_empty() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb, sc", "");
    for s in ["sb", "sc"] {
        for n in [A, B] {
            fs::write(queue(&cfg, s).join(n), n.as_bytes()).unwrap();
        }
    }
    let net = Memory::new(&["sb", "sc"]);
    let events = shipper(&cfg, &net).round_all(false, false);
    assert_eq!(
        events,
        vec![
            ("sb".to_string(), Event::Delivered { delivered: 2, depth: 0 }),
            ("sc".to_string(), Event::Delivered { delivered: 2, depth: 0 }),
        ]
    );
    for s in ["sb", "sc"] {
        assert!(queued(&cfg, s).is_empty());
        net.with(s, |sl| {
            assert_eq!(sl.files[A], A.as_bytes());
            // remote_fsync (the default): what left the queue was fsync'd first.
            assert_eq!(sl.synced, vec![A.to_string(), B.to_string()]);
        });
    }
    assert!(alerts(d.path()).is_empty(), "{:?}", alerts(d.path()));
}

/// A process killed while saving a slave's delivery state (write_durable)
/// leaves `..state.pitrkit-<pid>.tmp` in its queue: the next round over
/// that queue reclaims it (the fault suite's ship-kill found it piling up).
#[test]
fn a_round_reclaims_the_state_file_temporaries_of_killed_processes() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb", "");
    let dead = queue(&cfg, "sb").join(format!(".{STATE_FILE}.pitrkit-{}.tmp", u32::MAX));
    let f = fs::File::create(&dead).unwrap();
    f.set_modified(std::time::SystemTime::now() - crate::fsutil::RECLAIM_AGE - std::time::Duration::from_secs(5))
        .unwrap();
    let net = Memory::new(&["sb"]);
    shipper(&cfg, &net).round_all(true, false);
    assert!(!dead.exists(), "a killed process's state temporary stays in the queue");
}

#[test]
fn a_file_leaves_the_queue_only_with_its_sidecar() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb", "");
    let q = queue(&cfg, "sb");
    fs::write(q.join(A), b"wal").unwrap();
    fs::write(q.join(format!("{A}.sum")), b"crc32c 00000000 3\n").unwrap();
    // The slave already has a different checksum file for it.
    let net = Memory::new(&["sb"]);
    net.with("sb", |s| s.files.insert(format!("{A}.sum"), b"other".to_vec()));
    let run = shipper(&cfg, &net).slave("sb", false, false);
    let shipped = run.shipped.unwrap();
    // Folded: one outcome, for the file, and a conflict because of its sidecar.
    assert_eq!(shipped.outcomes, vec![(A.to_string(), Outcome::Conflict)]);
    let c = q.join(CONFLICTS_DIR);
    assert!(c.join(A).is_file() && c.join(format!("{A}.sum")).is_file());
    assert!(queued(&cfg, "sb").is_empty());
    // The slave's sum was not touched; the file itself was sent (no clobber
    // either way), but the pair is not "delivered".
    net.with("sb", |s| assert_eq!(s.files[&format!("{A}.sum")], b"other"));
    let a = alerts(d.path());
    assert!(
        a.len() == 1 && a[0].starts_with("critical slave sb already has a different"),
        "{a:?}"
    );
}

#[test]
fn another_stored_form_with_the_same_content_counts_as_delivered() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb", "");
    let q = queue(&cfg, "sb");
    let raw = vec![7u8; 4096];
    let mut zst = Vec::new();
    Codec::Zstd.compress(&raw[..], &mut zst, None).unwrap();
    fs::write(q.join(format!("{A}.zst")), &zst).unwrap();
    let net = Memory::new(&["sb"]);
    net.with("sb", |s| s.files.insert(A.to_string(), raw.clone()));
    let run = shipper(&cfg, &net).slave("sb", false, false);
    assert_eq!(run.event, Event::Delivered { delivered: 1, depth: 0 });
    net.with("sb", |s| {
        // Never a second form on the slave; the form it has is made durable.
        assert!(!s.files.contains_key(&format!("{A}.zst")));
        assert!(s.pushed.is_empty(), "{:?}", s.pushed);
        assert_eq!(s.synced, vec![A.to_string()]);
    });
}

#[test]
fn another_stored_form_with_other_content_is_a_conflict_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb", "");
    let q = queue(&cfg, "sb");
    let mut zst = Vec::new();
    Codec::Zstd.compress(&[1u8; 100][..], &mut zst, None).unwrap();
    fs::write(q.join(format!("{A}.zst")), &zst).unwrap();
    let net = Memory::new(&["sb"]);
    net.with("sb", |s| s.files.insert(A.to_string(), vec![2u8; 100]));
    let run = shipper(&cfg, &net).slave("sb", false, false);
    let shipped = run.shipped.unwrap();
    assert_eq!(shipped.conflicts(), vec![format!("{A}.zst")]);
    assert_eq!(shipped.conflict_with, vec![(format!("{A}.zst"), A.to_string())]);
    assert!(q.join(CONFLICTS_DIR).join(format!("{A}.zst")).is_file());
    let a = alerts(d.path());
    assert!(a[0].contains(&format!("a different {A} in /r")), "{a:?}");
}

#[test]
fn an_odd_remote_form_keeps_the_file_queued() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb", "");
    fs::write(queue(&cfg, "sb").join(format!("{A}.zst")), b"z").unwrap();
    let net = Memory::new(&["sb"]);
    net.with("sb", |s| s.odd.push(A.to_string()));
    let run = shipper(&cfg, &net).slave("sb", false, false);
    match &run.event {
        Event::Failed { error, depth: 1 } => assert!(
            error.contains("sb:/r/") && error.contains("not a regular file"),
            "{error}"
        ),
        e => panic!("{e:?}"),
    }
    assert_eq!(queued(&cfg, "sb"), vec![format!("{A}.zst")]);
}

#[test]
fn a_skipping_transport_is_not_taken_for_delivery() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb", "");
    fs::write(queue(&cfg, "sb").join(A), b"x").unwrap();
    let net = Memory::new(&["sb"]);
    net.with("sb", |s| s.silent = true);
    let run = shipper(&cfg, &net).slave("sb", false, false);
    match &run.event {
        Event::Failed { error, depth: 1 } => assert!(error.contains("does not have it"), "{error}"),
        e => panic!("{e:?}"),
    }
    assert_eq!(queued(&cfg, "sb"), vec![A]);
}

#[test]
fn nothing_leaves_the_queue_when_the_remote_fsync_fails() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb", "");
    fs::write(queue(&cfg, "sb").join(A), b"x").unwrap();
    let net = Memory::new(&["sb"]);
    net.with("sb", |s| s.sync_fails = true);
    let run = shipper(&cfg, &net).slave("sb", false, false);
    assert!(
        matches!(&run.event, Event::Failed { error, depth: 1 } if error.contains("remote `sync` exited 1")),
        "{:?}",
        run.event
    );
    assert_eq!(queued(&cfg, "sb"), vec![A]);
}

#[test]
fn a_down_slave_warns_once_backs_off_and_recovers_with_an_ok() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb", "queue_wait: 3600\n");
    fs::write(queue(&cfg, "sb").join(A), b"x").unwrap();
    let net = Memory::new(&["sb"]);
    net.with("sb", |s| s.down = true);
    let s = shipper(&cfg, &net);
    let first = s.slave("sb", false, false);
    assert!(
        matches!(&first.event, Event::Failed { error, depth: 1 } if error.contains("ssh exit 255")),
        "{:?}",
        first.event
    );
    assert!(fs::read_to_string(queue(&cfg, "sb").join(STATE_FILE))
        .unwrap()
        .contains("failing=1"));
    // Within queue_wait: not even tried, and no second alert.
    net.with("sb", |sl| sl.down = false);
    assert_eq!(s.slave("sb", false, false).event, Event::Skipped { depth: 1 });
    net.with("sb", |sl| assert!(sl.pushed.is_empty()));
    // --flush ignores the back-off; the recovery is announced.
    assert_eq!(
        s.slave("sb", true, true).event,
        Event::Delivered { delivered: 1, depth: 0 }
    );
    let a = alerts(d.path());
    assert_eq!(a.len(), 2, "{a:?}");
    assert!(a[0].starts_with("warning ") && a[1].starts_with("ok "), "{a:?}");
}

#[test]
fn a_queue_past_its_critical_depth_raises_one_alarm() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb", "queue_critical_depth: 1\n");
    for n in [A, B] {
        fs::write(queue(&cfg, "sb").join(n), b"x").unwrap();
    }
    let net = Memory::new(&["sb"]);
    net.with("sb", |s| s.down = true);
    let s = shipper(&cfg, &net);
    s.slave("sb", true, false);
    s.slave("sb", true, false);
    let a = alerts(d.path());
    assert_eq!(a.iter().filter(|l| l.starts_with("critical ")).count(), 1, "{a:?}");
}

#[test]
fn a_busy_queue_is_left_alone_state_and_alerts_included() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb", "queue_critical_depth: 1\n");
    let q = queue(&cfg, "sb");
    for n in [A, B] {
        fs::write(q.join(n), b"x").unwrap();
    }
    let _held = crate::fsutil::lock(&q.join(LOCK_FILE), std::time::Duration::ZERO)
        .unwrap()
        .unwrap();
    let net = Memory::new(&["sb"]);
    let run = shipper(&cfg, &net).slave("sb", false, false);
    assert_eq!(run.event, Event::Skipped { depth: 2 });
    assert!(run.shipped.is_none());
    assert!(!q.join(STATE_FILE).exists(), "state written without the lock");
    assert!(alerts(d.path()).is_empty());
    net.with("sb", |s| assert!(s.pushed.is_empty()));
}

#[test]
fn sync_mode_records_partial_delivery_and_retries_only_the_missing_slave() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb, sc", "ship_mode: sync\n");
    let src = history(d.path(), b"1\t0/3000000\tno recovery target specified\n");
    let net = Memory::new(&["sb", "sc"]);
    net.with("sc", |s| s.down = true);
    let e = archive_via(&cfg, Some(&net), &src).unwrap_err();
    match &e {
        ArchiveError::NotDelivered { failures, .. } => {
            assert_eq!(failures.len(), 1, "{failures:?}");
            assert!(failures[0].starts_with("sc: "), "{failures:?}");
        }
        e => panic!("{e}"),
    }
    let ledger = Ledger::new(&cfg.shipping.as_ref().unwrap().queue_root, H);
    assert_eq!(ledger.delivered(), vec![("sb".to_string(), Some(41))]);
    // The retry: sb is checked (still there, same size), not shipped again.
    net.with("sc", |s| s.down = false);
    let pushed_before = net.with("sb", |s| s.pushed.len());
    let r = archive_via(&cfg, Some(&net), &src).unwrap();
    assert_eq!(r.spooled, vec!["sc"]);
    assert_eq!(net.with("sb", |s| s.pushed.len()), pushed_before);
    assert!(net.with("sc", |s| s.files.contains_key(H)));
    assert!(ledger.delivered().is_empty(), "the ledger goes once every slave has it");
}

#[test]
fn sync_mode_ships_again_to_a_slave_that_lost_the_file() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb, sc", "ship_mode: sync\n");
    let src = history(d.path(), b"1\t0/3000000\tno recovery target specified\n");
    let net = Memory::new(&["sb", "sc"]);
    net.with("sc", |s| s.down = true);
    archive_via(&cfg, Some(&net), &src).unwrap_err();
    net.with("sc", |s| s.down = false);
    net.with("sb", |s| s.files.retain(|n, _| n == super::SYSTEM_ID_FILE));
    let r = archive_via(&cfg, Some(&net), &src).unwrap();
    assert_eq!(r.spooled, vec!["sb", "sc"]);
    assert!(net.with("sb", |s| s.files.contains_key(H)));
}

#[test]
fn sync_mode_fails_on_a_conflict_and_keeps_ours_aside() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb", "ship_mode: sync\n");
    let src = history(d.path(), OURS);
    let net = Memory::new(&["sb"]);
    net.with("sb", |s| {
        s.files.insert(H.to_string(), b"1\t0/4000000\ttheirs\n".to_vec())
    });
    let e = archive_via(&cfg, Some(&net), &src).unwrap_err().to_string();
    assert!(e.contains(&format!("it already has a different {H} in /r")), "{e}");
    assert!(queue(&cfg, "sb").join(CONFLICTS_DIR).join(H).is_file());
    // The conflict stays until resolved: a retry fails the same way, even
    // though the slave's copy now matches.
    net.with("sb", |s| s.files.insert(H.to_string(), OURS.to_vec()));
    let e = archive_via(&cfg, Some(&net), &src).unwrap_err().to_string();
    assert!(e.contains("remains from an earlier conflict"), "{e}");
    assert!(
        !d.path().join("q").join(LEDGER_DIR).join(H).exists()
            || Ledger::new(&d.path().join("q"), H).delivered().is_empty()
    );
}

#[test]
fn async_mode_succeeds_once_spooled_whatever_the_slaves_do() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb, sc", "");
    let src = history(d.path(), OURS);
    let net = Memory::new(&["sb", "sc"]);
    net.with("sc", |s| s.down = true);
    let r = archive_via(&cfg, Some(&net), &src).unwrap();
    assert_eq!(r.spooled, vec!["sb", "sc"]);
    assert!(
        matches!(r.slaves[1], (ref s, Event::Failed { depth: 1, .. }) if s == "sc"),
        "{:?}",
        r.slaves
    );
    assert!(queued(&cfg, "sb").is_empty());
    assert_eq!(queued(&cfg, "sc"), vec![H]);
    assert!(queue(&cfg, "sc").join(format!("{H}.sum")).is_file(), "with its sidecar");
}

#[test]
fn slow_slaves_are_shipped_in_parallel() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "s1, s2, s3, s4", "max_queue_workers: 4\n");
    let net = Memory::new(&["s1", "s2", "s3", "s4"]);
    for s in ["s1", "s2", "s3", "s4"] {
        fs::write(queue(&cfg, s).join(A), b"x").unwrap();
        net.with(s, |sl| sl.delay = std::time::Duration::from_millis(300));
    }
    let t = std::time::Instant::now();
    let events = shipper(&cfg, &net).round_all(false, false);
    // stat, push, fsync: three calls per slave; one after another would take 3.6s.
    assert!(
        t.elapsed() < std::time::Duration::from_millis(3000),
        "{:?}",
        t.elapsed()
    );
    assert!(events
        .iter()
        .all(|(_, e)| *e == Event::Delivered { delivered: 1, depth: 0 }));
}

#[test]
fn init_marks_reachable_slaves_and_reports_the_others() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb, sc", "");
    let net = Memory::new(&["sb", "sc"]);
    net.with("sc", |s| s.down = true);
    let checks = admin::check_slaves(&shipper(&cfg, &net), Path::new("/nonexistent/fstab"));
    let problems: Vec<_> = checks.iter().filter_map(|c| c.problem.as_deref()).collect();
    assert_eq!(problems.len(), 1, "{checks:?}");
    assert!(
        problems[0].contains("connecting to sc:/r failed: ssh exit 255"),
        "{problems:?}"
    );
    // pgdata is not set: the mark says "unclaimed".
    assert_eq!(
        net.with("sb", |s| s.files[super::SYSTEM_ID_FILE].clone()),
        sysid::content(None).as_bytes()
    );
    // Another system's archive is refused, and left alone.
    net.with("sc", |s| {
        s.down = false;
        s.files
            .insert(super::SYSTEM_ID_FILE.into(), sysid::content(Some(42)).into_bytes());
    });
    let checks = admin::check_slaves(&shipper(&cfg, &net), Path::new("/nonexistent/fstab"));
    assert!(checks.iter().all(|c| c.problem.is_none()), "{checks:?}");
    assert!(
        checks.iter().any(|c| c.what.contains("belongs to database system 42")),
        "{checks:?}"
    );
}
