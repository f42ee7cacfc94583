//! Shipping goes only into the directory `-I` marked, and a `.sum` sidecar
//! only beside the file it belongs to: through the in-memory transport.

use super::*;
use crate::transport::MountFacts;

const MARK: &str = super::super::SYSTEM_ID_FILE;

/// `names` queued for `slave`, each plain file with its sidecar.
fn enqueue(cfg: &ArchiverConfig, slave: &str, names: &[&str]) {
    for n in names {
        fs::write(queue(cfg, slave).join(n), n.as_bytes()).unwrap();
        fs::write(queue(cfg, slave).join(format!("{n}.sum")), format!("sum of {n}")).unwrap();
    }
}

fn failed(e: &Event) -> &str {
    match e {
        Event::Failed { error, .. } => error,
        other => panic!("not a failure: {other:?}"),
    }
}

#[test]
fn nothing_is_pushed_to_a_slave_whose_mark_is_missing_or_another_systems() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb, sc", "");
    // The queued WAL is system 7's.
    sysid::write(&cfg.shipping.as_ref().unwrap().queue_root, Some(7)).unwrap();
    enqueue(&cfg, "sb", &[A]);
    enqueue(&cfg, "sc", &[A]);
    let net = Memory::new(&["sb", "sc"]);
    // sb: the share is not mounted (a bare directory, no mark); sc: another system's archive.
    net.with("sb", |s| s.files.remove(MARK));
    net.with("sc", |s| {
        s.files.insert(MARK.into(), sysid::content(Some(42)).into_bytes())
    });
    let events = shipper(&cfg, &net).round_all(false, false);
    let e = failed(&events[0].1);
    assert!(
        e.contains("sb:/r/.pitrkit-system-id does not exist") && e.contains("not mounted"),
        "{e}"
    );
    let e = failed(&events[1].1);
    assert!(e.contains("database system 42") && e.contains("is system 7"), "{e}");
    for s in ["sb", "sc"] {
        net.with(s, |sl| {
            assert!(sl.pushed.is_empty() && !sl.files.contains_key(A), "{s}: {sl:?}")
        });
        assert_eq!(queued(&cfg, s), vec![A]);
        assert!(queue(&cfg, s).join(format!("{A}.sum")).is_file());
    }
    // Marked for our system, or unclaimed: shipped.
    net.with("sb", |s| s.files.insert(MARK.into(), Vec::new()));
    net.with("sc", |s| {
        s.files.insert(MARK.into(), sysid::content(Some(7)).into_bytes())
    });
    let events = shipper(&cfg, &net).round_all(false, false);
    assert!(
        events
            .iter()
            .all(|(_, e)| *e == Event::Delivered { delivered: 1, depth: 0 }),
        "{events:?}"
    );
}

#[test]
fn a_mark_gone_at_the_sync_keeps_everything_queued() {
    for fsync in ["on", "off"] {
        let d = tempfile::tempdir().unwrap();
        let cfg = config(d.path(), "sb", &format!("remote_fsync: {fsync}\n"));
        enqueue(&cfg, "sb", &[A, B]);
        let net = Memory::new(&["sb"]);
        // The share goes away while shipping: the files went into what is
        // now the bare mount point.
        net.with("sb", |s| s.unmount_at_sync = true);
        let run = shipper(&cfg, &net).slave("sb", false, false);
        let e = failed(&run.event);
        assert!(
            e.contains("changed while shipping (unclaimed before, missing after)"),
            "fsync {fsync}: {e}"
        );
        assert!(net.with("sb", |s| s.pushed.contains(&A.to_string())));
        assert_eq!(queued(&cfg, "sb"), vec![A, B], "fsync {fsync}");
        for n in [A, B] {
            assert!(queue(&cfg, "sb").join(format!("{n}.sum")).is_file());
        }
        // Mounted again (and marked): the next round ships them.
        net.with("sb", |s| {
            s.unmount_at_sync = false;
            s.files.insert(MARK.into(), Vec::new());
        });
        let run = shipper(&cfg, &net).slave("sb", false, false);
        assert_eq!(run.event, Event::Delivered { delivered: 2, depth: 0 }, "fsync {fsync}");
    }
}

#[test]
fn sidecars_are_shipped_only_for_delivered_files() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb", "");
    enqueue(&cfg, "sb", &[A, B]);
    let net = Memory::new(&["sb"]);
    // B cannot be delivered (a directory of that name is there).
    net.with("sb", |s| s.odd.push(B.into()));
    let run = shipper(&cfg, &net).slave("sb", false, false);
    let shipped = run.shipped.unwrap();
    assert_eq!(shipped.outcome(A), Some(Outcome::Delivered));
    assert_eq!(shipped.outcome(B), Some(Outcome::StillQueued));
    net.with("sb", |s| {
        // The files first, then only A's sidecar.
        assert_eq!(s.pushed, vec![A.to_string(), B.to_string(), format!("{A}.sum")]);
        assert!(s.files.contains_key(&format!("{A}.sum")));
        assert!(!s.files.contains_key(&format!("{B}.sum")));
    });
    assert_eq!(queued(&cfg, "sb"), vec![B]);
    assert!(queue(&cfg, "sb").join(format!("{B}.sum")).is_file());
    assert!(!queue(&cfg, "sb").join(format!("{A}.sum")).exists());
}

#[test]
fn a_conflicting_files_sidecar_is_set_aside_with_it_and_never_shipped() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb", "");
    enqueue(&cfg, "sb", &[A]);
    let net = Memory::new(&["sb"]);
    // The slave holds another cluster's A (pitrtools, no sidecar).
    net.with("sb", |s| s.files.insert(A.into(), b"theirs".to_vec()));
    let run = shipper(&cfg, &net).slave("sb", false, false);
    assert_eq!(run.shipped.unwrap().outcomes, vec![(A.to_string(), Outcome::Conflict)]);
    net.with("sb", |s| {
        assert_eq!(s.pushed, vec![A.to_string()]);
        // Our sidecar beside their A would make restore reject their intact copy.
        assert!(!s.files.contains_key(&format!("{A}.sum")));
        assert_eq!(s.files[A], b"theirs");
    });
    let c = queue(&cfg, "sb").join(CONFLICTS_DIR);
    assert!(c.join(A).is_file() && c.join(format!("{A}.sum")).is_file());
    assert!(fs::read_dir(queue(&cfg, "sb"))
        .unwrap()
        .flatten()
        .all(|e| e.file_name().to_string_lossy().starts_with('.')));
}

#[test]
fn init_never_marks_a_slave_directory_whose_share_is_not_mounted() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "sb", "");
    let net = Memory::new(&["sb"]);
    let unmounted = MountFacts {
        fstab: "nas:/wal /r nfs defaults 0 0\n".into(),
        mountinfo: String::new(),
        real: "/r".into(),
        devices: [("/r".into(), 1), ("/".into(), 1)].into(),
    };
    net.with("sb", |s| {
        s.files.clear();
        s.mount = unmounted.clone();
    });
    let checks = admin::check_slaves(&shipper(&cfg, &net), Path::new("/etc/fstab"));
    let problems: Vec<_> = checks.iter().filter_map(|c| c.problem.as_deref()).collect();
    assert_eq!(problems.len(), 1, "{checks:?}");
    assert!(
        problems[0].contains("sb:/r should be on the filesystem mounted at /r"),
        "{problems:?}"
    );
    assert!(problems[0].ends_with("(on sb)"), "{problems:?}");
    assert!(net.with("sb", |s| !s.files.contains_key(MARK)));
    // Mounted (another device than its parent): marked.
    net.with("sb", |s| s.mount.devices.insert("/r".into(), 2));
    let checks = admin::check_slaves(&shipper(&cfg, &net), Path::new("/etc/fstab"));
    assert!(checks.iter().all(|c| c.problem.is_none()), "{checks:?}");
    assert!(net.with("sb", |s| s.files.contains_key(MARK)));
}
