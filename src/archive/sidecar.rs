//! The archiver's side of the `.sum` sidecar (see `crate::layout`): every
//! plain copy `X` it places (local archives, the staging copy, each slave
//! queue) gets `X.sum` first, durably and with the same no-clobber rules,
//! and shipping treats `X.sum` as part of `X`'s delivery.

use std::io;
use std::path::{Path, PathBuf};

use super::queue::Outcome;
use crate::compress::Codec;
use crate::fsutil::{self, PlaceError, Placed};
use crate::integrity::{sum_name, Sum};
use crate::storage::{read_small, Kind, Storage};

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> PlaceError + 'a {
    move |source| PlaceError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// The checksum of the stored `wal`.
fn checksum(archive: &dyn Storage, wal: &str, shown: &Path) -> Result<Sum, PlaceError> {
    archive
        .get(wal)
        .and_then(Sum::of_reader)
        .map_err(io_err(shown, "checksum existing file"))
}

/// Is `X` there in any stored form?
fn stored(archive: &dyn Storage, wal: &str) -> io::Result<bool> {
    for c in Codec::ALL {
        if archive.stat(&format!("{wal}{}", c.suffix()))?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Places `X.sum` for plain `X` in `archive` (call it before `X` is placed).
/// Beside an existing `X` without a sidecar, only if that `X` holds our
/// bytes (then the sidecar is right). An existing sidecar with the same
/// content is kept; a different one is
/// replaced only while `X` is absent (an orphan of an interrupted call).
/// Beside an `X` that differs from ours it is left for placing `X` to
/// report the conflict; beside our very `X` it is damaged: an error.
/// Nothing is placed beside an existing compressed form only (that copy
/// carries its own checksum).
pub fn place(archive: &dyn Storage, wal: &str, sum: &Sum) -> Result<Option<Placed>, PlaceError> {
    let name = sum_name(wal);
    let path = PathBuf::from(archive.locate(&name));
    let plain_path = PathBuf::from(archive.locate(wal));
    let plain = archive.stat(wal).map_err(io_err(&plain_path, "stat"))?;
    // A link to nothing does not count as X (as Path::exists says).
    let plain_exists = plain.as_ref().is_some_and(|e| e.kind != Kind::DanglingLink);
    if !plain_exists && stored(archive, wal).map_err(io_err(&plain_path, "stat"))? {
        return Ok(None);
    }
    let text = sum.render();
    if let Ok(Some(existing)) = read_small(archive, &name) {
        if existing == text.as_bytes() {
            return archive.confirm(&name).map(Some);
        }
        if plain.is_some() {
            // X is there: if it differs from ours, placing X reports that
            // conflict in its own terms; if it is ours, the sidecar is damaged.
            if checksum(archive, wal, &plain_path)? != *sum {
                return Ok(None);
            }
            return Err(PlaceError::Io {
                path,
                op: "check checksum file",
                source: io::Error::other(format!(
                    "it does not match {}, which holds the same bytes as the WAL being archived, so the checksum file is damaged; move it aside and PostgreSQL's next retry rewrites it",
                    plain_path.display()
                )),
            });
        }
        archive
            .delete_durable(&name)
            .map_err(io_err(&path, "replace orphan checksum file"))?;
    } else if let Some(e) = &plain {
        // An X already there without a sidecar (pitrtools put it there) gets
        // one only if it holds our very bytes: beside a different X, ours
        // would make restore reject the intact copy once placing X refuses.
        if e.kind != Kind::File || checksum(archive, wal, &plain_path)? != *sum {
            return Ok(None);
        }
    }
    archive.put_bytes_if_absent(&name, text.as_bytes()).map(Some)
}

/// The staging copy's sidecar in `l_archivedir/.spool` (ours alone: replaced).
pub fn stage(sdir: &Path, wal: &str, sum: &Sum) -> Result<PathBuf, PlaceError> {
    let path = sdir.join(sum_name(wal));
    fsutil::write_durable(&path, sum.render().as_bytes(), 0o600).map_err(io_err(&path, "write checksum file"))?;
    Ok(path)
}

/// Links the staged sidecar into a queue before its file, replacing only an
/// orphan (no `X` in that queue).
pub fn link(staged: &Path, qdir: &Path, wal: &str) -> Result<Placed, PlaceError> {
    let name = sum_name(wal);
    let path = qdir.join(&name);
    if path.exists() && !qdir.join(wal).exists() && !fsutil::identical(staged, &path).unwrap_or(false) {
        fsutil::remove_durable(&path).map_err(io_err(&path, "replace orphan checksum file"))?;
    }
    fsutil::place_link(staged, qdir, &name)
}

/// Each queued file's fate in one shipping run.
pub type Outcomes = Vec<(String, Outcome)>;

/// Folds each sidecar's outcome into its file's: `X` counts as delivered
/// only when `X.sum` is too; a conflict on either is a conflict. Returns the
/// per-file outcomes (sidecars no longer listed) and the sidecars that go
/// with each delivered or conflicting file.
pub fn fold(outcomes: Outcomes) -> (Outcomes, Vec<(String, String)>) {
    let sidecar = |n: &str| n.strip_suffix(crate::layout::SUM_SUFFIX).map(str::to_string);
    let sums: Vec<(String, Outcome)> = outcomes
        .iter()
        .filter_map(|(n, o)| sidecar(n).map(|w| (w, *o)))
        .collect();
    let mut files = Vec::new();
    let mut pairs = Vec::new();
    for (n, o) in outcomes.into_iter().filter(|(n, _)| sidecar(n).is_none()) {
        let folded = match sums.iter().find(|(w, _)| *w == n).map(|(_, s)| *s) {
            None => o,
            Some(s) => {
                pairs.push((n.clone(), sum_name(&n)));
                match (o, s) {
                    (Outcome::Conflict, _) | (_, Outcome::Conflict) => Outcome::Conflict,
                    (Outcome::Delivered, Outcome::Delivered) => Outcome::Delivered,
                    _ => Outcome::StillQueued,
                }
            }
        };
        files.push((n, folded));
    }
    (files, pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalDir;
    use std::fs;

    #[test]
    fn placed_first_no_clobber_orphans_replaced() {
        let d = tempfile::tempdir().unwrap();
        let wal = "000000010000000000000003";
        let a = Sum { crc: 1, size: 10 };
        let b = Sum { crc: 2, size: 10 };
        assert_eq!(place(&LocalDir::new(d.path()), wal, &a).unwrap(), Some(Placed::Created));
        assert_eq!(
            place(&LocalDir::new(d.path()), wal, &a).unwrap(),
            Some(Placed::AlreadyPresent)
        );
        // Orphan (no X): replaced.
        assert_eq!(place(&LocalDir::new(d.path()), wal, &b).unwrap(), Some(Placed::Created));
        assert_eq!(fs::read_to_string(d.path().join(sum_name(wal))).unwrap(), b.render());
        // With X beside it: never replaced. X different from ours: left to
        // placing X (a conflict there); X ours: the sidecar is damaged.
        fs::write(d.path().join(wal), b"x").unwrap();
        assert_eq!(place(&LocalDir::new(d.path()), wal, &a).unwrap(), None);
        let x = Sum::of_file(&d.path().join(wal)).unwrap();
        let e = place(&LocalDir::new(d.path()), wal, &x).unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
        assert_eq!(fs::read_to_string(d.path().join(sum_name(wal))).unwrap(), b.render());
        // An X without a sidecar (pitrtools placed it): a sidecar only for our bytes.
        let w3 = "000000010000000000000005";
        fs::write(d.path().join(w3), b"theirs").unwrap();
        assert_eq!(place(&LocalDir::new(d.path()), w3, &a).unwrap(), None);
        assert!(!d.path().join(sum_name(w3)).exists());
        let theirs = Sum::of_file(&d.path().join(w3)).unwrap();
        assert_eq!(
            place(&LocalDir::new(d.path()), w3, &theirs).unwrap(),
            Some(Placed::Created)
        );
        fs::remove_file(d.path().join(w3)).unwrap();
        fs::remove_file(d.path().join(sum_name(w3))).unwrap();
        // Beside a compressed form only: nothing.
        let w2 = "000000010000000000000004";
        fs::write(d.path().join(format!("{w2}.zst")), b"z").unwrap();
        assert_eq!(place(&LocalDir::new(d.path()), w2, &a).unwrap(), None);
        let left: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 3, "no temporary file left: {left:?}");
    }

    #[test]
    fn a_file_is_delivered_only_with_its_sidecar() {
        let o = |v: &[(&str, Outcome)]| v.iter().map(|(n, o)| (n.to_string(), *o)).collect::<Vec<_>>();
        let (files, pairs) = fold(o(&[
            ("A", Outcome::Delivered),
            ("A.sum", Outcome::StillQueued),
            ("B", Outcome::Delivered),
            ("B.sum", Outcome::Delivered),
            ("C", Outcome::Delivered),
            ("C.sum", Outcome::Conflict),
            ("D.zst", Outcome::Delivered),
        ]));
        assert_eq!(
            files,
            o(&[
                ("A", Outcome::StillQueued),
                ("B", Outcome::Delivered),
                ("C", Outcome::Conflict),
                ("D.zst", Outcome::Delivered)
            ])
        );
        assert_eq!(pairs.len(), 3);
    }
}
