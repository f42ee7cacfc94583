//! The WAL a backup needs, from its start to its stop segment, copied from
//! `archivedir` into the set as it is stored there (compressed form, or
//! plain file with its `.sum`), with the timeline history files, so a set
//! is self-contained for recovery to its end point.

use std::io;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::compress::Codec;
use crate::integrity::sum_name;
use crate::storage::{Kind, Listed, Storage};
use crate::wal::{self, WalName};

/// The stored name of `name` in `archive` (plain first, then compressed).
pub fn stored_form(archive: &dyn Storage, name: &str) -> io::Result<Option<String>> {
    for codec in Codec::ALL {
        let stored = format!("{name}{}", codec.suffix());
        if let Some(e) = archive.stat(&stored)? {
            if matches!(e.kind, Kind::File | Kind::LinkToFile) {
                return Ok(Some(stored));
            }
        }
    }
    Ok(None)
}

/// The segment names from `start` to `stop` (inclusive) on `timeline`.
pub fn range(timeline: u32, start_lsn: u64, stop_lsn: u64, seg_size: u64) -> Vec<String> {
    let first = start_lsn / seg_size;
    // The stop LSN ends the backup: the segment holding the byte before it.
    let last = stop_lsn.saturating_sub(1) / seg_size;
    (first..=last.max(first))
        .map(|n| wal::segment_name(timeline, n, seg_size))
        .collect()
}

/// Waits until `name` is in `archive`, calling `nudge` once at the start
/// (a master's pg_switch_wal() for a standby's backup).
pub fn wait_for(archive: &dyn Storage, name: &str, timeout: Duration, nudge: &mut dyn FnMut()) -> Result<()> {
    let started = Instant::now();
    nudge();
    loop {
        if stored_form(archive, name)?.is_some() {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            bail!(
                "the backup's last WAL segment {name} did not reach archivedir {} within backup_wal_timeout ({} s). \
                 Check the archiving to that directory (pg_stat_archiver on the master, the archiver's queues), \
                 or raise backup_wal_timeout; on a standby, configure the master (master_public_ip) so the backup \
                 can ask it for pg_switch_wal()",
                archive.location(),
                timeout.as_secs()
            );
        }
        // Often: a backup's own wait (pg_backup_stop does not wait for the archive).
        sleep(Duration::from_millis(50));
    }
}

/// Copies one stored file as it is.
fn copy_one(from: &dyn Storage, to: &dyn Storage, stored: &str) -> Result<()> {
    let mut input = from
        .get(stored)
        .with_context(|| format!("reading {}", from.locate(stored)))?;
    to.put_stream_deferred(stored, &mut |w| io::copy(&mut input, w).map(drop))
        .with_context(|| format!("copying {} into the backup set", from.locate(stored)))?;
    Ok(())
}

/// Copies `segments` and every history file up to `timeline` from
/// `archive` into `set_wal`; returns the stored names.
pub fn copy(archive: &dyn Storage, set_wal: &dyn Storage, segments: &[String], timeline: u32) -> Result<Vec<String>> {
    let mut copied = Vec::new();
    let mut names: Vec<String> = archive
        .list()
        .with_context(|| format!("listing archivedir {}", archive.location()))?
        .into_iter()
        .filter_map(|l| match l {
            Listed::Name { name, dir: false } => Some(name),
            _ => None,
        })
        .filter(|n| WalName::parse(n).is_ok_and(|w| w.as_str().ends_with(".history") && w.timeline <= timeline))
        .collect();
    names.sort();
    names.extend(segments.iter().cloned());
    for name in &names {
        let Some(stored) = stored_form(archive, name)? else {
            bail!(
                "{name} is not in archivedir {}: the backup needs it (its WAL range). Was it removed by a cleanup? \
                 Take a new backup",
                archive.location()
            );
        };
        copy_one(archive, set_wal, &stored)?;
        if Codec::detect(&stored).0 == Codec::None && archive.stat(&sum_name(&stored))?.is_some() {
            copy_one(archive, set_wal, &sum_name(&stored))?;
        }
        copied.push(stored);
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_ends_with_the_segment_before_the_stop_lsn() {
        let seg = 16 << 20;
        assert_eq!(
            range(1, 0x2000028, 0x2000138, seg),
            vec!["000000010000000000000002".to_string()]
        );
        // A stop exactly at a segment boundary needs nothing of the next segment.
        assert_eq!(range(2, 0x2000028, 0x4000000, seg).len(), 2);
        assert_eq!(range(2, 0x2000028, 0x4000000, seg)[1], "000000020000000000000003");
    }
}
