//! A slave holding the same WAL under another stored form than the queued
//! one (X beside our X.zst) must never get a second form: such files are
//! judged by content, not pushed.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use super::queue::{qio, Outcome, ShipError};
use crate::compress::Codec;
use crate::fsutil;
use crate::transport::{RemoteFile, Transport};

/// How a queued file compares with other stored forms of its WAL on the slave.
pub(super) struct OtherForms {
    pub queued: String,
    /// Every form of the WAL the slave holds (the queued name included).
    pub remote_forms: Vec<String>,
    pub outcome: Outcome,
    pub problem: Option<String>,
}

/// Every stored form of the WAL `n` names.
fn forms(n: &str) -> Vec<String> {
    let base = Codec::detect(n).1.to_string();
    Codec::ALL.iter().map(|c| format!("{base}{}", c.suffix())).collect()
}

/// Every stored form of every queued WAL: what the one remote listing asks about.
pub(super) fn all_forms(names: &[String]) -> Vec<String> {
    names.iter().flat_map(|n| forms(n)).collect()
}

/// From the listing of [`all_forms`] (`present`): for a WAL the slave holds
/// under another form than the queued one, the forms it holds are fetched
/// and compared by content (decompressed) with ours: all the same is
/// delivered, any different is a conflict. Rare, so the fetch costs nothing
/// in the common case.
pub(super) fn judge_other_forms(
    remote: &dyn Transport,
    qdir: &Path,
    names: &[String],
    present: &HashMap<String, RemoteFile>,
) -> Result<Vec<OtherForms>, ShipError> {
    let mut out = Vec::new();
    for n in names {
        let here: Vec<String> = forms(n).into_iter().filter(|f| present.contains_key(f)).collect();
        if here.is_empty() || here == [n.clone()] {
            continue; // the usual push and checksum comparison decide
        }
        let mut judged = OtherForms {
            queued: n.clone(),
            remote_forms: here.clone(),
            outcome: Outcome::Delivered,
            problem: None,
        };
        if let Some(odd) = here.iter().find(|f| !present[*f].regular) {
            judged.outcome = Outcome::StillQueued;
            judged.problem = Some(format!(
                "{}/{odd} is not a regular file; check what is there",
                remote.target()
            ));
        } else if !compare_forms(remote, qdir, n, &here).map_err(qio(qdir))? {
            judged.outcome = Outcome::Conflict;
        }
        out.push(judged);
    }
    Ok(out)
}

/// Fetches `theirs` from the slave and compares each, decompressed, with
/// the queued `ours`, decompressed.
fn compare_forms(remote: &dyn Transport, qdir: &Path, ours: &str, theirs: &[String]) -> io::Result<bool> {
    let scratch = tempfile::Builder::new().prefix("pitrkit-compare-").tempdir()?;
    let fetched = scratch.path().join("theirs");
    fs::create_dir(&fetched)?;
    remote
        .fetch(theirs, &fetched)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let (codec, _) = Codec::detect(ours);
    let raw = scratch.path().join("ours");
    codec
        .decompress(fs::File::open(qdir.join(ours))?, fs::File::create(&raw)?)
        .map_err(|e| io::Error::other(format!("{}: {e}", qdir.join(ours).display())))?;
    for t in theirs {
        let (c, _) = Codec::detect(t);
        let path = fetched.join(t);
        let same = if c == Codec::None {
            fsutil::identical(&raw, &path)?
        } else {
            crate::compress::same_content(&path, c, &raw)?
        };
        if !same {
            return Ok(false);
        }
    }
    Ok(true)
}
