//! `backup --verify [ID]`: every stored file re-read against the manifest,
//! and the WAL from each backup's start to the newest archived segment
//! checked for gaps, foreign segments and missing timeline history.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};

use anyhow::{bail, Result};

use super::incremental::Sources;
use super::manifest::Manifest;
use super::repo::Repository;
use crate::compress::Codec;
use crate::integrity::{sum_name, Sum, Summer};
use crate::layout::backup::WAL_DIR;
use crate::storage::{read_small, Listed, LocalDir, Storage};
use crate::wal::{self, WalName};

/// Sums what is written and keeps its first bytes (a segment's header).
#[derive(Default)]
struct Head {
    head: Vec<u8>,
    sum: Summer,
}

impl Write for Head {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = 64usize.saturating_sub(self.head.len()).min(buf.len());
        self.head.extend_from_slice(&buf[..room]);
        self.sum.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads a stored file through its codec (frame checksums) and, if plain,
/// checks its `.sum`; its content's sum and first bytes.
fn read_checked(s: &dyn Storage, stored: &str, codec: Codec) -> Result<(Sum, Vec<u8>), String> {
    let input = s
        .get(stored)
        .map_err(|e| format!("{}: cannot be read: {e}", s.locate(stored)))?;
    let mut h = Head::default();
    codec
        .decompress(input, &mut h)
        .map_err(|e| format!("{}: {e}", s.locate(stored)))?;
    let sum = h.sum.finish();
    if codec == Codec::None {
        if let Ok(Some(text)) = read_small(s, &sum_name(stored)) {
            match Sum::parse(&String::from_utf8_lossy(&text)) {
                Ok(want) if want == sum => {}
                Ok(want) => return Err(format!("{}: holds {sum}, its .sum says {want}", s.locate(stored))),
                Err(e) => return Err(format!("{}: {e}", s.locate(&sum_name(stored)))),
            }
        }
    }
    Ok((sum, h.head))
}

/// A segment's header names this system.
fn check_system(where_: &str, head: &[u8], system: u64) -> Option<String> {
    match wal::parse_header(head) {
        Some(h) if h.system_id == system => None,
        Some(h) => Some(format!(
            "{where_}: a segment of database system {}, not {system}: another cluster's WAL",
            h.system_id
        )),
        None => Some(format!("{where_}: no valid WAL page header")),
    }
}

/// Stored files already read (by location): their sum, or what is wrong.
/// A full set's file that many incrementals reference is read once.
type ReadCache = HashMap<String, Result<Sum, String>>;

/// The set's data files, those it stores and those it references in
/// another set (a problem there is the dependent set's too, naming both),
/// and its own WAL.
fn check_set(
    repo: &Repository,
    m: &Manifest,
    complete: &[Manifest],
    cache: &mut ReadCache,
    problems: &mut Vec<String>,
) -> Result<()> {
    let src = match Sources::open(repo, m, complete) {
        Ok(s) => s,
        Err(e) => {
            problems.push(e);
            return Ok(());
        }
    };
    for f in &m.files {
        let at = src.locate(f);
        let place = at.store.locate(&at.stored);
        let read = cache
            .entry(place.clone())
            .or_insert_with(|| read_checked(at.store, &at.stored, at.codec).map(|(sum, _)| sum));
        let whose = match &f.holder {
            Some(h) => format!("backup {} (file {} stored in backup {h})", m.id, f.path),
            None => format!("backup {}", m.id),
        };
        match read {
            Ok(sum) if sum.size == f.size && sum.crc == f.crc => {}
            Ok(sum) => problems.push(format!(
                "{whose}: {place} holds {sum}, the manifest says crc32c {:08x}, {} bytes",
                f.crc, f.size
            )),
            Err(e) => problems.push(format!("{whose}: {e}")),
        }
    }
    let wal_dir = src.own().scoped(WAL_DIR)?;
    for stored in &m.wal {
        let (codec, base) = Codec::detect(stored);
        match read_checked(&*wal_dir, stored, codec) {
            Ok((_, head)) if WalName::parse(base).is_ok_and(|w| w.is_segment_data()) => {
                problems.extend(check_system(
                    &format!("backup {}: {}", m.id, wal_dir.locate(stored)),
                    &head,
                    m.system_id,
                ));
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("backup {}: {e}", m.id)),
        }
    }
    Ok(())
}

/// The archive's segments: segment number → (timeline, stored name).
fn archived_segments(archive: &dyn Storage, seg_size: u64) -> Result<BTreeMap<u64, Vec<(u32, String)>>> {
    let mut out: BTreeMap<u64, Vec<(u32, String)>> = BTreeMap::new();
    for l in archive.list()? {
        let Listed::Name { name, dir: false } = l else { continue };
        let Ok(w) = WalName::parse(Codec::detect(&name).1) else {
            continue;
        };
        if w.is_segment_data() && !w.as_str().ends_with(".partial") {
            out.entry(w.segno(seg_size)).or_default().push((w.timeline, name));
        }
    }
    Ok(out)
}

/// The archive from the set's start to its newest segment; from the hold
/// (`hold`) for a set that starts before it: kept only for the files newer
/// sets reference in it, its WAL before the hold rightly expired (its own
/// WAL range is in the set, and recover never targets past its end).
fn check_archive(
    archive: &dyn Storage,
    m: &Manifest,
    hold: Option<&WalName>,
    checked: &mut HashSet<String>,
    problems: &mut Vec<String>,
) -> Result<()> {
    let segs = archived_segments(archive, m.segment_size)?;
    let first = (m.start_lsn / m.segment_size).max(hold.map_or(0, |h| h.segno(m.segment_size)));
    let Some(&last) = segs.keys().next_back() else {
        problems.push(format!(
            "archivedir {}: holds no WAL segment at all",
            archive.location()
        ));
        return Ok(());
    };
    for segno in first..=last.max(first) {
        let on_our_timelines: Vec<&(u32, String)> = segs
            .get(&segno)
            .map(|v| v.iter().filter(|(tl, _)| *tl >= m.timeline).collect())
            .unwrap_or_default();
        if on_our_timelines.is_empty() {
            problems.push(format!(
                "archivedir {}: segment {} is missing (backup {} needs every segment from {} (its start, or the backup hold) to the newest archived one)",
                archive.location(),
                wal::segment_name(m.timeline, segno, m.segment_size),
                m.id,
                wal::segment_name(m.timeline, first, m.segment_size)
            ));
        }
        for (tl, stored) in on_our_timelines {
            if *tl > m.timeline && archive.stat(&format!("{tl:08X}.history"))?.is_none() {
                problems.push(format!(
                    "archivedir {}: {stored} is on timeline {tl} but {tl:08X}.history is missing",
                    archive.location()
                ));
            }
            if !checked.insert(stored.clone()) {
                continue;
            }
            match read_checked(archive, stored, Codec::detect(stored).0) {
                Ok((_, head)) => problems.extend(check_system(&archive.locate(stored), &head, m.system_id)),
                Err(e) => problems.push(e),
            }
        }
    }
    Ok(())
}

/// Checks one set (`id`) or all complete sets; the problems found, each
/// naming the bad file or missing segment.
pub fn verify(repo: &Repository, archivedir: &std::path::Path, id: Option<&str>) -> Result<Vec<String>> {
    let sets = repo.complete()?;
    let chosen: Vec<&Manifest> = match id {
        Some(id) => match sets.iter().find(|m| m.id == id) {
            Some(m) => vec![m],
            None => bail!("there is no complete backup {id} in {}", repo.location()),
        },
        None => sets.iter().collect(),
    };
    let archive = LocalDir::new(archivedir);
    let mut problems = Vec::new();
    let mut checked = HashSet::new();
    let mut cache = ReadCache::new();
    let hold = crate::cleanup::read_mark(&archive, crate::layout::backup::HOLD_FILE);
    for m in chosen {
        check_set(repo, m, &sets, &mut cache, &mut problems)?;
        check_archive(&archive, m, hold.as_ref(), &mut checked, &mut problems)?;
    }
    Ok(problems)
}
