//! Incremental backups: the set a backup builds on, the files it references
//! there instead of storing them again, and where a set's files are read
//! from (itself, or the set a reference names).
//!
//! A reference always names the set that *stores* the file (pgBackRest's
//! way): when the base references a file itself, the new reference points
//! straight at the base's holder. Restoring and verifying follow one hop,
//! never a chain, and retention keeps exactly the sets named.

use std::collections::{HashMap, HashSet};

use super::files::PG_CONTROL;
use super::manifest::{FileEntry, Manifest};
use super::repo::Repository;
use crate::compress::Codec;
use crate::storage::Storage;

/// Files whose mtime is this close to the base's start, or later, are
/// always copied. The manifest keeps whole seconds (and some filesystems,
/// NFS among them, keep coarser ones), so a file written in the same second
/// the base copied it can show the recorded size and mtime with other
/// bytes; and a write racing the base's copy of a file lands in that same
/// moment. Five seconds covers both with room for a clock step.
pub const MTIME_SLACK_SECS: i64 = 5;

/// Always copied, whatever their size and mtime: pg_control (rewritten in
/// place at every checkpoint, its size never changes, and it must be this
/// backup's), and the files pg_backup_stop returns.
const ALWAYS_COPIED: &[&str] = &[PG_CONTROL, "backup_label", "tablespace_map"];

/// The previous complete backup an incremental builds on.
pub struct Base<'a> {
    pub manifest: &'a Manifest,
    by_path: HashMap<&'a str, &'a FileEntry>,
    /// The complete sets: a file the base references in a set that is not
    /// (its manifest lost) is copied again rather than referenced there.
    complete: HashSet<&'a str>,
}

impl<'a> Base<'a> {
    /// `manifest`, one of the complete sets `sets`.
    pub fn new(manifest: &'a Manifest, sets: &'a [Manifest]) -> Base<'a> {
        let by_path = manifest.files.iter().map(|f| (f.path.as_str(), f)).collect();
        let complete = sets.iter().map(|m| m.id.as_str()).collect();
        Base {
            manifest,
            by_path,
            complete,
        }
    }

    /// The newest of the complete sets `sets` of database system `system`
    /// (any timeline: a file unchanged across a promotion is still the
    /// same file).
    pub fn newest(sets: &'a [Manifest], system: u64) -> Option<Base<'a>> {
        sets.iter()
            .rev()
            .find(|m| m.system_id == system)
            .map(|m| Base::new(m, sets))
    }

    /// The entry for file `path` of `size` bytes, modified at `mtime` (unix
    /// seconds), when it is unchanged since the base: a reference to the
    /// set that stores it. `None`: copy it.
    pub fn reference(&self, path: &str, size: u64, mtime: i64) -> Option<FileEntry> {
        if ALWAYS_COPIED.contains(&path) {
            return None;
        }
        let prev = self.by_path.get(path)?;
        let base_start = self.manifest.start_time.div_euclid(1_000_000);
        if prev.size != size || prev.mtime != mtime || mtime >= base_start - MTIME_SLACK_SECS {
            return None;
        }
        let holder = prev.holder.clone().unwrap_or_else(|| self.manifest.id.clone());
        self.complete.contains(holder.as_str()).then(|| FileEntry {
            holder: Some(holder),
            ..(*prev).clone()
        })
    }
}

/// Where a set's files are read from: the set itself and each set its
/// references name (their manifests give their codecs).
pub struct Sources<'a> {
    pub m: &'a Manifest,
    own: Box<dyn Storage>,
    holders: HashMap<String, (Manifest, Box<dyn Storage>)>,
}

/// One stored file, located.
pub struct Located<'s> {
    pub store: &'s dyn Storage,
    /// Its name in `store`.
    pub stored: String,
    pub codec: Codec,
    /// The set that stores it.
    pub set: &'s str,
}

impl<'a> Sources<'a> {
    /// The sources of `m`, with `complete` the repository's complete sets;
    /// an error naming both sets when one it depends on is missing.
    pub fn open(repo: &Repository, m: &'a Manifest, complete: &[Manifest]) -> Result<Sources<'a>, String> {
        let scoped = |id: &str| {
            repo.store
                .scoped(id)
                .map_err(|e| format!("{}: {e}", repo.store.locate(id)))
        };
        let mut holders = HashMap::new();
        for id in m.depends_on() {
            let Some(h) = complete.iter().find(|h| h.id == id) else {
                return Err(format!(
                    "backup {} references files stored in backup {id}, which is missing or incomplete: \
                     recover from another backup; `pitrkit backup --list` shows what there is",
                    m.id
                ));
            };
            holders.insert(id.clone(), (h.clone(), scoped(&id)?));
        }
        Ok(Sources {
            m,
            own: scoped(&m.id)?,
            holders,
        })
    }

    /// The stored file behind `f`.
    pub fn locate(&self, f: &FileEntry) -> Located<'_> {
        let (m, store) = match f.holder.as_ref().and_then(|h| self.holders.get(h)) {
            Some((h, store)) => (h, &**store),
            None => (self.m, &*self.own),
        };
        Located {
            store,
            stored: m.stored_name(&f.path),
            codec: m.compression,
            set: &m.id,
        }
    }

    /// The set's own storage.
    pub fn own(&self) -> &dyn Storage {
        &*self.own
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::manifest::tests::sample;
    use crate::config::BackupType;

    fn entry(path: &str, mtime: i64, holder: Option<&str>) -> FileEntry {
        FileEntry {
            path: path.into(),
            size: 8192,
            mtime,
            crc: 7,
            stored: 100,
            holder: holder.map(String::from),
        }
    }

    #[test]
    fn unchanged_files_are_referenced_in_the_set_that_stores_them() {
        // The base started at 1000 s; an older file it referenced from set F.
        let base = Manifest {
            id: "20261130T000000Z".into(),
            kind: BackupType::Incremental,
            start_time: 1_000_000_000 + 500_000,
            files: vec![
                entry("base/1/old", 900, None),
                entry("base/1/chained", 900, Some("20261129T000000Z")),
                entry("base/1/edge", 994, None),
                entry("base/1/inside", 995, None),
                entry("base/1/later", 1010, None),
                entry(PG_CONTROL, 900, None),
            ],
            ..sample()
        };
        let holders = [
            Manifest {
                id: "20261129T000000Z".into(),
                ..sample()
            },
            base.clone(),
        ];
        let b = Base::new(&base, &holders);
        let r = b.reference("base/1/old", 8192, 900).unwrap();
        assert_eq!(
            (r.holder.as_deref(), r.crc, r.stored),
            (Some("20261130T000000Z"), 7, 100)
        );
        // A reference points at the holder, never at the intermediate set.
        assert_eq!(
            b.reference("base/1/chained", 8192, 900).unwrap().holder.as_deref(),
            Some("20261129T000000Z")
        );
        // Changed size or mtime, or a file the base lacks: copied.
        assert!(b.reference("base/1/old", 16384, 900).is_none());
        assert!(b.reference("base/1/old", 8192, 901).is_none());
        assert!(b.reference("base/1/new", 8192, 900).is_none());
        // Within MTIME_SLACK_SECS of the base's start (1000.5 s), or later: copied.
        assert!(b.reference("base/1/edge", 8192, 1000 - MTIME_SLACK_SECS - 1).is_some());
        assert!(b.reference("base/1/inside", 8192, 1000 - MTIME_SLACK_SECS).is_none());
        assert!(b.reference("base/1/later", 8192, 1010).is_none());
        // pg_control always.
        assert!(b.reference(PG_CONTROL, 8192, 900).is_none());
        // The set holding it is no longer complete (its manifest lost): copied.
        let b = Base::new(&base, &holders[1..]);
        assert!(b.reference("base/1/chained", 8192, 900).is_none());
        assert!(b.reference("base/1/old", 8192, 900).is_some());
    }

    #[test]
    fn a_reference_is_read_in_its_holder_with_the_holder_codec() {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::open(&crate::config::backup::BackupDir::Dir(d.path().to_path_buf())).unwrap();
        let full = Manifest {
            id: "20261129T000000Z".into(),
            compression: Codec::Zstd,
            ..sample()
        };
        let inc = Manifest {
            id: "20261130T000000Z".into(),
            kind: BackupType::Incremental,
            compression: Codec::None,
            files: vec![entry("base/1/a", 1, Some(&full.id)), entry("base/1/b", 1, None)],
            ..sample()
        };
        let src = Sources::open(&repo, &inc, &[full.clone(), inc.clone()]).unwrap();
        let a = src.locate(&inc.files[0]);
        assert_eq!(
            (a.set, a.stored.as_str(), a.codec),
            (full.id.as_str(), "data/base/1/a.zst", Codec::Zstd)
        );
        assert!(a.store.location().ends_with(&full.id));
        let b = src.locate(&inc.files[1]);
        assert_eq!(
            (b.set, b.stored.as_str(), b.codec),
            (inc.id.as_str(), "data/base/1/b", Codec::None)
        );
        // The holder missing: an error naming both sets.
        let e = Sources::open(&repo, &inc, std::slice::from_ref(&inc)).err().unwrap();
        assert!(
            e.contains("backup 20261130T000000Z references files stored in backup 20261129T000000Z"),
            "{e}"
        );
    }

    #[test]
    fn the_base_is_the_newest_set_of_the_same_system() {
        let sets: Vec<Manifest> = [(1, "A"), (2, "B"), (1, "C"), (3, "D")]
            .iter()
            .map(|(sys, id)| Manifest {
                system_id: *sys,
                id: (*id).into(),
                ..sample()
            })
            .collect();
        assert_eq!(Base::newest(&sets, 1).unwrap().manifest.id, "C");
        assert!(Base::newest(&sets, 9).is_none());
    }
}
