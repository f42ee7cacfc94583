//! Recovery targets: reading them, choosing the backup set that can reach
//! one, and refusing up front the targets no set or archive can reach.

use std::time::UNIX_EPOCH;

use anyhow::{bail, Result};

use super::manifest::{format_lsn, parse_lsn, Manifest};
use crate::compress::Codec;
use crate::storage::{Listed, Storage};
use crate::wal::WalName;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The text as given, and unix microseconds.
    Time(String, i64),
    Xid(String),
    Lsn(u64),
    Name(String),
    Immediate,
    /// A new standby (`--standby`): no target.
    Standby,
}

/// Unix microseconds of a PostgreSQL-style timestamp: `2026-11-30
/// 10:02:00[.123456][+00[:00]]` (a `T` may separate date and time); without
/// an offset, this host's local time.
pub fn parse_time(text: &str) -> Result<i64> {
    use chrono::{DateTime, Local, NaiveDateTime, TimeZone};
    let mut t = text.trim().to_string();
    if t.as_bytes().get(10) == Some(&b'T') {
        t.replace_range(10..11, " ");
    }
    let t = t
        .strip_suffix(" UTC")
        .or_else(|| t.strip_suffix('Z'))
        .map_or(t.clone(), |s| format!("{s}+00"));
    if let Ok(d) = DateTime::parse_from_str(&t, "%Y-%m-%d %H:%M:%S%.f%#z") {
        return Ok(d.timestamp_micros());
    }
    if let Ok(n) = NaiveDateTime::parse_from_str(&t, "%Y-%m-%d %H:%M:%S%.f") {
        if let Some(d) = Local.from_local_datetime(&n).earliest() {
            return Ok(d.timestamp_micros());
        }
    }
    bail!("cannot read the time '{text}': write it as PostgreSQL does, e.g. '2026-11-30 10:02:00+00'")
}

pub fn parse_target_lsn(text: &str) -> Result<u64> {
    parse_lsn(text)
        .ok_or_else(|| anyhow::anyhow!("cannot read the LSN '{text}': write it as PostgreSQL does, e.g. 0/5000028"))
}

fn time_text(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        .unwrap_or_default()
}

/// What the repository offers, for messages.
fn available(sets: &[Manifest]) -> String {
    if sets.is_empty() {
        return "there is no complete backup".into();
    }
    let list: Vec<String> = sets
        .iter()
        .map(|m| {
            format!(
                "{} (ends at {}, LSN {})",
                m.id,
                time_text(m.stop_time),
                format_lsn(m.stop_lsn)
            )
        })
        .collect();
    format!("complete backups: {}", list.join(", "))
}

/// The set to restore for `target` (sets oldest first), and a note when
/// the choice is a guess.
pub fn choose(sets: &[Manifest], target: &Target, id: Option<&str>) -> Result<(Manifest, Option<String>)> {
    let reaches = |m: &Manifest| match target {
        Target::Time(_, t) => m.stop_time < *t,
        Target::Lsn(l) => m.stop_lsn <= *l,
        _ => true,
    };
    if let Some(id) = id {
        let Some(m) = sets.iter().find(|m| m.id == id) else {
            bail!("there is no complete backup {id}; {}", available(sets));
        };
        if !reaches(m) {
            bail!(
                "backup {id} ends after the target, so recovery cannot stop there; {}",
                available(sets)
            );
        }
        return Ok((m.clone(), None));
    }
    match target {
        Target::Time(text, _) => match sets.iter().rev().find(|m| reaches(m)) {
            Some(m) => Ok((m.clone(), None)),
            None => bail!("the target time {text} is before the end of every backup, so no backup can recover to it; {}", available(sets)),
        },
        Target::Lsn(l) => match sets.iter().rev().find(|m| reaches(m)) {
            Some(m) => Ok((m.clone(), None)),
            None => bail!(
                "the target LSN {} is before the end of every backup, so no backup can recover to it; {}",
                format_lsn(*l),
                available(sets)
            ),
        },
        Target::Xid(_) | Target::Name(_) => match sets.first() {
            Some(m) => Ok((
                m.clone(),
                Some(format!(
                    "a transaction ID or restore point cannot be placed in time: using the oldest backup, {} (choose another with --backup)",
                    m.id
                )),
            )),
            None => bail!("{}", available(sets)),
        },
        Target::Immediate | Target::Standby => match sets.last() {
            Some(m) => Ok((m.clone(), None)),
            None => bail!("{}", available(sets)),
        },
    }
}

/// Is `m`'s start at or after the archive's hold (`held`)? Before it, the
/// archive may have lost the WAL after the set's end: expiry holds WAL only
/// from the oldest backup retention keeps, not from a set kept only for the
/// files an incremental references in it (see `expire`).
fn held(m: &Manifest, held: &WalName) -> bool {
    held.segno(m.segment_size) <= m.start_lsn / m.segment_size
}

/// [`choose`], but by itself it chooses only among sets the archive's WAL
/// still continues from (at or after the hold, when there is one); a
/// target only an older set could reach is refused, saying why.
pub fn choose_held(
    sets: &[Manifest],
    target: &Target,
    id: Option<&str>,
    hold: Option<&WalName>,
) -> Result<(Manifest, Option<String>)> {
    let Some(hold) = hold else {
        return choose(sets, target, id);
    };
    let below: Vec<Manifest> = sets.iter().filter(|m| !held(m, hold)).cloned().collect();
    let below_ids: Vec<&str> = below.iter().map(|m| m.id.as_str()).collect();
    if id.is_some() {
        let (m, note) = choose(sets, target, id)?;
        let note = match target {
            Target::Immediate | Target::Standby => note,
            _ if below_ids.contains(&m.id.as_str()) => Some(format!(
                "backup {} starts before the archive's hold ({}): archivedir may no longer hold the WAL after its end, \
                 so recovery may end before the target",
                m.id,
                hold.as_str()
            )),
            _ => note,
        };
        return Ok((m, note));
    }
    let usable: Vec<Manifest> = sets.iter().filter(|m| held(m, hold)).cloned().collect();
    match choose(&usable, target, None) {
        Err(_) if !below.is_empty() && choose(&below, target, None).is_ok() => bail!(
            "only backup(s) {} could reach this target, and they are kept only for the files newer incremental backups \
             reference in them: archivedir keeps WAL only from the hold at {} (the oldest backup retention keeps), so \
             recovery from them would end before the target. Choose a later target, or recover one to its end point \
             (--backup ID --immediate)",
            below_ids.join(", "),
            hold.as_str()
        ),
        chosen => chosen,
    }
}

/// Refuses a time or LSN past the end of the archive (the newest segment
/// on the set's timeline or a later one): recovery would end before it.
pub fn check_archive_end(archive: &dyn Storage, set: &Manifest, target: &Target) -> Result<()> {
    let mut newest: Option<(String, u64)> = None;
    for l in archive.list()? {
        let Listed::Name { name, dir: false } = l else { continue };
        let Ok(w) = WalName::parse(Codec::detect(&name).1) else {
            continue;
        };
        if !w.is_segment_data() || w.timeline < set.timeline {
            continue;
        }
        let end = (w.segno(set.segment_size) + 1) * set.segment_size;
        if newest.as_ref().map_or(true, |(_, e)| end > *e) {
            newest = Some((name, end));
        }
    }
    let Some((name, end)) = newest else { return Ok(()) };
    match target {
        Target::Lsn(l) if *l > end => bail!(
            "the target LSN {} is past the end of the archive (the newest segment, {name}, ends at {}): recovery would end before it. \
             Wait until the WAL is archived, or choose an earlier target",
            format_lsn(*l),
            format_lsn(end)
        ),
        Target::Time(text, t) => {
            let archived = archive
                .stat(&name)?
                .and_then(|e| e.modified)
                .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
                .map_or(i64::MAX, |d| d.as_micros() as i64);
            if *t > archived {
                bail!(
                    "the target time {text} is after the newest archived segment ({name}, archived at {}): the WAL up to it is not archived yet, \
                     so recovery would end before it. Wait until it is (pg_switch_wal() on the master), or choose an earlier target",
                    time_text(archived)
                );
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::manifest::tests::sample;

    #[test]
    fn times_as_postgresql_prints_them() {
        let want = parse_time("2026-11-30 10:02:00+00").unwrap();
        for t in [
            "2026-11-30 10:02:00.000+00",
            "2026-11-30T10:02:00Z",
            "2026-11-30 12:02:00+02:00",
            "2026-11-30 10:02:00 UTC",
        ] {
            assert_eq!(parse_time(t).unwrap(), want, "{t}");
        }
        assert_eq!(parse_time("2026-11-30 10:02:00.5+00").unwrap(), want + 500_000);
        assert!(parse_time("yesterday").unwrap_err().to_string().contains("e.g."));
    }

    #[test]
    fn the_newest_backup_before_the_target() {
        let mut a = sample();
        a.id = "A".into();
        let mut b = sample();
        b.id = "B".into();
        b.stop_time += 60_000_000;
        b.stop_lsn += 0x100_0000;
        let sets = vec![a.clone(), b.clone()];
        let pick = |t: Target| choose(&sets, &t, None).map(|(m, _)| m.id);
        assert_eq!(pick(Target::Time("t".into(), a.stop_time + 1)).unwrap(), "A");
        assert_eq!(pick(Target::Time("t".into(), b.stop_time + 1)).unwrap(), "B");
        assert_eq!(pick(Target::Lsn(b.stop_lsn)).unwrap(), "B");
        assert_eq!(pick(Target::Name("x".into())).unwrap(), "A");
        assert_eq!(pick(Target::Immediate).unwrap(), "B");
        let e = pick(Target::Time("then".into(), a.stop_time)).unwrap_err().to_string();
        assert!(
            e.contains("before the end of every backup") && e.contains("complete backups: A"),
            "{e}"
        );
        assert!(choose(&sets, &Target::Time("t".into(), a.stop_time + 1), Some("B")).is_err());
        assert!(choose(&sets, &Target::Immediate, Some("C"))
            .unwrap_err()
            .to_string()
            .contains("no complete backup C"));
    }

    #[test]
    fn sets_before_the_hold_are_not_chosen_by_themselves() {
        // A (kept for an incremental's files) starts at segment 2, B at 5; the hold is at 5.
        let a = Manifest {
            id: "A".into(),
            start_lsn: 2 << 24,
            ..sample()
        };
        let b = Manifest {
            id: "B".into(),
            start_lsn: 5 << 24,
            stop_time: a.stop_time + 60_000_000,
            stop_lsn: a.stop_lsn + (3 << 24),
            ..sample()
        };
        let sets = vec![a.clone(), b.clone()];
        let hold = WalName::parse("000000010000000000000005").unwrap();
        let pick = |t: Target, id: Option<&str>| choose_held(&sets, &t, id, Some(&hold));
        let between = Target::Time("then".into(), a.stop_time + 1);
        let e = pick(between.clone(), None).unwrap_err().to_string();
        assert!(
            e.contains("only backup(s) A could reach") && e.contains("000000010000000000000005"),
            "{e}"
        );
        assert_eq!(choose_held(&sets, &between, None, None).unwrap().0.id, "A");
        assert_eq!(pick(Target::Name("x".into()), None).unwrap().0.id, "B");
        assert_eq!(pick(Target::Time("t".into(), b.stop_time + 1), None).unwrap().0.id, "B");
        // Asked for by ID: allowed, with a warning unless only its end point is wanted.
        assert!(pick(between, Some("A"))
            .unwrap()
            .1
            .unwrap()
            .contains("before the archive's hold"));
        assert_eq!(pick(Target::Immediate, Some("A")).unwrap(), (a, None));
    }
}
