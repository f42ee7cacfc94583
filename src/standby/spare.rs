//! Spares: telling a recovery copy from a real standby, and where in time a
//! copy already is.
//!
//! `-F999 -R` on a real standby while its master runs would make a second
//! master of the copy production fails over to, so the "master alive" guard
//! stays for it. A spare is different: a `-B` copy that never ran as a
//! standby since, kept ready for point-in-time recovery while production
//! runs. A copy counts as a spare only when everything says so: the
//! [`SPARE_FILE`] mark (`-B` writes it, `-S` removes it), its
//! `backup_label` (PostgreSQL consumes it on the first start), no
//! postmaster.pid, no standby.signal and no pitrkit standby settings.
//! Anything else keeps the guard.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};

use super::recovery;
use super::Standby;
use crate::compress::Codec;
use crate::fsutil;
use crate::layout::SPARE_FILE;
use crate::pg::ControlData;
use crate::storage::local::LocalDir;
use crate::storage::{Entry, Kind, Storage};

/// What the [`SPARE_FILE`] mark records about the base backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpareMark {
    pub stop_lsn: String,
    /// The master's clock just after pg_backup_stop returned.
    pub stopped_at: DateTime<Utc>,
}

impl SpareMark {
    fn render(&self) -> String {
        format!(
            "stop_lsn: {}\nstopped_at: {}\n\
             # written by cmd_standby -B: this copy has not run as a standby since its base backup,\n\
             # so cmd_standby -F999 -R may recover it while the master runs. -S removes this file.\n",
            self.stop_lsn,
            self.stopped_at.to_rfc3339_opts(SecondsFormat::Micros, true)
        )
    }

    fn parse(text: &str) -> Option<SpareMark> {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
        };
        Some(SpareMark {
            stop_lsn: field("stop_lsn")?.to_string(),
            stopped_at: DateTime::parse_from_rfc3339(field("stopped_at")?).ok()?.to_utc(),
        })
    }
}

/// Marks `pgdata` as a spare (end of `-B`).
pub fn write_mark(pgdata: &Path, mark: &SpareMark) -> Result<()> {
    let path = pgdata.join(SPARE_FILE);
    fsutil::write_durable(&path, mark.render().as_bytes(), 0o600).with_context(|| format!("writing {}", path.display()))
}

/// `pgdata` is no spare any more (`-B` starting, `-S`, a promotion).
pub fn remove_mark(pgdata: &Path) -> Result<()> {
    let path = pgdata.join(SPARE_FILE);
    fsutil::remove_durable(&path).with_context(|| format!("removing {}", path.display()))
}

/// The mark, if `pgdata` is a spare; otherwise why it is not one.
pub fn classify(sb: &Standby) -> Result<std::result::Result<SpareMark, String>> {
    let pgdata = &sb.pgdata;
    let has = |name: &str| pgdata.join(name).exists();
    if has("postmaster.pid") {
        return Ok(Err(
            "postmaster.pid is present: it has been started since its base backup".into(),
        ));
    }
    if has("standby.signal") {
        return Ok(Err("standby.signal is present: it is set up as a standby (-S)".into()));
    }
    if let Some(file) = standby_settings_file(sb) {
        return Ok(Err(format!("{} holds pitrkit's standby settings (-S)", file.display())));
    }
    let mark = match fs::read_to_string(pgdata.join(SPARE_FILE)) {
        Ok(text) => SpareMark::parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err(format!(
                "it has no {SPARE_FILE} mark: it ran as a standby (-S) since its last base backup (-B), \
                 or that backup was taken by an older pitrkit"
            )))
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", pgdata.join(SPARE_FILE).display())),
    };
    let Some(mark) = mark else {
        return Ok(Err(format!("its {SPARE_FILE} mark cannot be read")));
    };
    if !has("backup_label") {
        let state = sb.cluster.control_data().map(|c| c.state().to_string());
        return Ok(Err(format!(
            "it has been started since its base backup (backup_label is gone; pg_control says \"{}\")",
            state.unwrap_or_else(|e| format!("unreadable: {e}"))
        )));
    }
    Ok(Ok(mark))
}

/// The recovery settings file holding a standby block written by `-S`, if any.
fn standby_settings_file(sb: &Standby) -> Option<std::path::PathBuf> {
    let auto = sb.pgdata.join("postgresql.auto.conf");
    if fs::read_to_string(&auto).is_ok_and(|t| recovery::has_standby_block(&t)) {
        return Some(auto);
    }
    let conf = sb
        .cfg
        .recovery_conf
        .clone()
        .unwrap_or_else(|| sb.pgdata.join("recovery.conf"));
    fs::read_to_string(&conf)
        .is_ok_and(|t| recovery::has_standby_block(&t))
        .then_some(conf)
}

/// Refuses a copy whose base backup starts in a segment the archive no
/// longer holds (a standby's archive_cleanup_command on the same archive
/// removes what that standby has replayed): PostgreSQL would stop at once
/// with "could not locate required checkpoint record". An archive that is
/// not there or not marked is left to restore's own rules.
pub fn refuse_missing_start(sb: &Standby) -> Result<()> {
    let Some(seg) = fs::read_to_string(sb.pgdata.join("backup_label"))
        .ok()
        .and_then(|label| start_segment(&label))
    else {
        return Ok(());
    };
    let dir = sb
        .cfg
        .required_archivedir("the directory the archiver ships WAL to; recovery reads it")?;
    let archive = LocalDir::new(&dir);
    if archive.available().is_err() || !matches!(archive.read_mark(), Ok(Some(_))) {
        return Ok(());
    }
    let held = Codec::ALL.iter().any(|c| {
        matches!(
            archive.stat(&format!("{seg}{}", c.suffix())),
            Ok(Some(Entry {
                kind: Kind::File | Kind::LinkToFile,
                ..
            }))
        )
    });
    if !held {
        anyhow::bail!(
            "cannot recover {}: the archive {} no longer holds {seg}, the first WAL segment its base backup needs \
             (backup_label, START WAL LOCATION); nothing was changed. A standby's archive_cleanup_command removes \
             the WAL it has replayed from its archivedir: give spares an archive that no standby cleans, then take -B again",
            sb.pgdata.display(),
            dir.display()
        );
    }
    Ok(())
}

/// The segment named in backup_label's `START WAL LOCATION: 0/2000028 (file X)`.
fn start_segment(label: &str) -> Option<String> {
    let line = label.lines().find(|l| l.starts_with("START WAL LOCATION:"))?;
    let file = line.split_once("(file ")?.1.strip_suffix(')')?;
    (file.len() == 24 && file.chars().all(|c| c.is_ascii_hexdigit())).then(|| file.to_string())
}

/// Refuses, before anything is touched, a target the copy is already past:
/// recovery only moves forward, and PostgreSQL would otherwise stop at the
/// first commit after its starting point (a later state than asked) or
/// fail with "requested recovery stop point is before consistent recovery
/// point" after consuming the copy.
pub fn refuse_past_target(sb: &Standby, target: &str) -> Result<()> {
    let t = DateTime::parse_from_str(target, "%Y-%m-%d %H:%M:%S%.f%:z")
        .with_context(|| format!("reading back the recovery target '{target}'"))?;
    let control = sb.cluster.control_data().unwrap_or_else(|e| {
        log::warn!("cannot tell from pg_control how far the copy is ({e}); PostgreSQL will check the target");
        ControlData {
            state: "unknown".into(),
            checkpoint_time: None,
        }
    });
    let backup = fs::read_to_string(sb.pgdata.join(SPARE_FILE))
        .ok()
        .and_then(|m| SpareMark::parse(&m))
        .filter(|_| sb.pgdata.join("backup_label").exists());
    let Some(why) = past_target(t, control.checkpoint_time(), backup.as_ref(), control.state()) else {
        return Ok(());
    };
    anyhow::bail!(
        "cannot recover {} to {target}: {why}. Recovery only moves forward, so this copy can never show the database \
         as it was at {target}; nothing was changed. Point-in-time recovery needs a copy from before the target: \
         a backup taken before it (pitrkit recover -C backup.ini --to NEW_DIR --target-time '{target}', see the \
         README's \"Backups and point-in-time recovery\"), or a spare data directory whose base backup \
         (cmd_standby -B) ended before {target} (-B into a spare directory that never runs -S; then -F999 -R there \
         while production keeps running)",
        sb.pgdata.display()
    )
}

/// Why a copy at `checkpoint` (pg_control) or at the end of `backup` is past `t`.
fn past_target(
    t: DateTime<FixedOffset>,
    checkpoint: Option<DateTime<Utc>>,
    backup: Option<&SpareMark>,
    state: &str,
) -> Option<String> {
    let show = |d: DateTime<Utc>| d.format("%Y-%m-%d %H:%M:%S%.f UTC").to_string();
    if let Some(b) = backup.filter(|b| b.stopped_at > t) {
        return Some(format!(
            "its base backup (-B) ended at {} (LSN {}, the master's clock), and a copy is consistent only from the end of its backup",
            show(b.stopped_at),
            b.stop_lsn
        ));
    }
    // pg_control keeps whole seconds: later than t even truncated is surely past it.
    checkpoint.filter(|c| *c > t).map(|c| {
        format!(
            "it already holds the database as of {} or later (pg_control: latest checkpoint at that time, state \"{state}\")",
            show(c)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    #[test]
    fn the_backup_start_segment_is_read_from_backup_label() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\n";
        assert_eq!(start_segment(label).as_deref(), Some("000000010000000000000002"));
        assert_eq!(start_segment("START WAL LOCATION: 0/2000028 (file x)\n"), None);
        assert_eq!(start_segment("LABEL: y\n"), None);
    }

    #[test]
    fn the_mark_round_trips() {
        let m = SpareMark {
            stop_lsn: "0/3000100".into(),
            stopped_at: t("2026-11-30T07:53:03.123456Z").to_utc(),
        };
        assert_eq!(SpareMark::parse(&m.render()), Some(m));
        assert_eq!(SpareMark::parse("stop_lsn: 0/1\n"), None);
    }

    #[test]
    fn pg_control_is_read_where_postgresql_12_to_18_keep_it() {
        let mut b = vec![0u8; 512];
        b[8..12].copy_from_slice(&1700u32.to_le_bytes());
        b[16..20].copy_from_slice(&2u32.to_le_bytes());
        b[104..112].copy_from_slice(&1_796_027_459i64.to_le_bytes());
        let c = ControlData::from_bytes(&b).unwrap();
        assert_eq!(c.state(), "shut down in recovery");
        assert_eq!(c.checkpoint_time(), Some(t("2026-11-30T08:30:59Z").to_utc()));
        b[8..12].copy_from_slice(&1900u32.to_le_bytes());
        assert!(ControlData::from_bytes(&b).unwrap_err().contains("1900"));
        assert!(ControlData::from_bytes(&b[..10]).is_err());
    }

    #[test]
    fn a_copy_past_the_target_is_explained() {
        let mark = SpareMark {
            stop_lsn: "0/5000028".into(),
            stopped_at: t("2026-11-30T10:00:05Z").to_utc(),
        };
        let why = past_target(t("2026-11-30T10:00:04+00:00"), None, Some(&mark), "in production").unwrap();
        assert!(
            why.contains("base backup (-B) ended at 2026-11-30 10:00:05 UTC") && why.contains("0/5000028"),
            "{why}"
        );
        // Another zone, same instant order.
        assert!(past_target(t("2026-11-30T11:00:06+01:00"), None, Some(&mark), "x").is_none());
        let cp = Some(t("2026-11-30T10:00:07Z").to_utc());
        let why = past_target(t("2026-11-30T10:00:06.5+00:00"), cp, None, "shut down in recovery").unwrap();
        assert!(
            why.contains("2026-11-30 10:00:07 UTC") && why.contains("shut down in recovery"),
            "{why}"
        );
        // Whole seconds: a checkpoint in the target's own second is not proof.
        assert!(past_target(t("2026-11-30T10:00:07.5+00:00"), cp, None, "x").is_none());
    }
}
