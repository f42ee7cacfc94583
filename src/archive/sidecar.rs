//! The archiver's side of the `.sum` sidecar (see `crate::layout`): every
//! plain copy `X` it places (local archives, the staging copy, each slave
//! queue) gets `X.sum` first, durably and with the same no-clobber rules,
//! and shipping treats `X.sum` as part of `X`'s delivery.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::queue::Outcome;
use crate::compress::Codec;
use crate::fsutil::{self, PlaceError, Placed};
use crate::integrity::{sum_name, Sum};

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> PlaceError + 'a {
    move |source| PlaceError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Writes `text` durably under a temporary name in `dir` and returns it.
fn durable_temp(dir: &Path, name: &str, text: &str) -> Result<PathBuf, PlaceError> {
    let tmp = fsutil::temp_name(dir, name);
    let _ = fs::remove_file(&tmp); // a leftover of a crashed process with our pid
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(io_err(&tmp, "write checksum file")(e))
        }
    }
}

/// Is `X` there in any stored form?
fn stored(dir: &Path, wal: &str) -> bool {
    Codec::ALL
        .iter()
        .any(|c| fs::symlink_metadata(dir.join(format!("{wal}{}", c.suffix()))).is_ok())
}

/// Places `dir/X.sum` for plain `X` (call it before `X` is placed).
/// Beside an existing `X` without a sidecar, only if that `X` holds our
/// bytes (then the sidecar is right). An existing sidecar with the same content is kept; a different one is
/// replaced only while `X` is absent (an orphan of an interrupted call).
/// Beside an `X` that differs from ours it is left for placing `X` to
/// report the conflict; beside our very `X` it is damaged: an error.
/// Nothing is placed beside an existing compressed form only (that copy
/// carries its own checksum).
pub fn place(dir: &Path, wal: &str, sum: &Sum) -> Result<Option<Placed>, PlaceError> {
    let plain = dir.join(wal);
    let compressed_only = !plain.exists() && stored(dir, wal);
    if compressed_only {
        return Ok(None);
    }
    let name = sum_name(wal);
    let path = dir.join(&name);
    let text = sum.render();
    if let Ok(existing) = fs::read(&path) {
        if existing == text.as_bytes() {
            return fsutil::accept_existing(&path, true, 0, None, false).map(Some);
        }
        if fs::symlink_metadata(&plain).is_ok() {
            // X is there: if it differs from ours, placing X reports that
            // conflict in its own terms; if it is ours, the sidecar is damaged.
            let same_file = Sum::of_file(&plain).map_err(io_err(&plain, "checksum existing file"))? == *sum;
            if !same_file {
                return Ok(None);
            }
            return Err(PlaceError::Io {
                path,
                op: "check checksum file",
                source: io::Error::other(format!(
                    "it does not match {}, which holds the same bytes as the WAL being archived, so the checksum file is damaged; move it aside and PostgreSQL's next retry rewrites it",
                    plain.display()
                )),
            });
        }
        fsutil::remove_durable(&path).map_err(io_err(&path, "replace orphan checksum file"))?;
    } else if fs::symlink_metadata(&plain).is_ok() {
        // An X already there without a sidecar (pitrtools put it there) gets
        // one only if it holds our very bytes: beside a different X, ours
        // would make restore reject the intact copy once placing X refuses.
        let regular = fs::symlink_metadata(&plain).is_ok_and(|m| m.is_file());
        if !regular || Sum::of_file(&plain).map_err(io_err(&plain, "checksum existing file"))? != *sum {
            return Ok(None);
        }
    }
    let tmp = durable_temp(dir, &name, &text)?;
    let placed = fsutil::place_link(&tmp, dir, &name);
    let _ = fs::remove_file(&tmp);
    placed.map(Some)
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

    #[test]
    fn placed_first_no_clobber_orphans_replaced() {
        let d = tempfile::tempdir().unwrap();
        let wal = "000000010000000000000003";
        let a = Sum { crc: 1, size: 10 };
        let b = Sum { crc: 2, size: 10 };
        assert_eq!(place(d.path(), wal, &a).unwrap(), Some(Placed::Created));
        assert_eq!(place(d.path(), wal, &a).unwrap(), Some(Placed::AlreadyPresent));
        // Orphan (no X): replaced.
        assert_eq!(place(d.path(), wal, &b).unwrap(), Some(Placed::Created));
        assert_eq!(fs::read_to_string(d.path().join(sum_name(wal))).unwrap(), b.render());
        // With X beside it: never replaced. X different from ours: left to
        // placing X (a conflict there); X ours: the sidecar is damaged.
        fs::write(d.path().join(wal), b"x").unwrap();
        assert_eq!(place(d.path(), wal, &a).unwrap(), None);
        let x = Sum::of_file(&d.path().join(wal)).unwrap();
        let e = place(d.path(), wal, &x).unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
        assert_eq!(fs::read_to_string(d.path().join(sum_name(wal))).unwrap(), b.render());
        // An X without a sidecar (pitrtools placed it): a sidecar only for our bytes.
        let w3 = "000000010000000000000005";
        fs::write(d.path().join(w3), b"theirs").unwrap();
        assert_eq!(place(d.path(), w3, &a).unwrap(), None);
        assert!(!d.path().join(sum_name(w3)).exists());
        let theirs = Sum::of_file(&d.path().join(w3)).unwrap();
        assert_eq!(place(d.path(), w3, &theirs).unwrap(), Some(Placed::Created));
        fs::remove_file(d.path().join(w3)).unwrap();
        fs::remove_file(d.path().join(sum_name(w3))).unwrap();
        // Beside a compressed form only: nothing.
        let w2 = "000000010000000000000004";
        fs::write(d.path().join(format!("{w2}.zst")), b"z").unwrap();
        assert_eq!(place(d.path(), w2, &a).unwrap(), None);
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
