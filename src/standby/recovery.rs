//! Writing recovery settings the way the server version expects them.
//!
//! 12+: `standby.signal` (standby) or `recovery.signal` (targeted recovery)
//! plus the settings in `postgresql.auto.conf`, inside a delimited pitrkit
//! block. `ALTER SYSTEM` rewrites that file and drops comments, so on every
//! write we also remove any stray line that sets a key we manage: the block
//! is found again however the file was edited. 11 and older: recovery.conf.

use std::fs;
use std::io;
use std::path::Path;

use crate::pg::version::PgVersion;

pub const BLOCK_BEGIN: &str = "# BEGIN pitrkit recovery settings (written by pitrkit standby; edits here are replaced)";
pub const BLOCK_END: &str = "# END pitrkit recovery settings";

/// Keys pitrkit owns while it manages recovery.
pub const MANAGED_KEYS: &[&str] = &[
    "restore_command",
    "archive_cleanup_command",
    "recovery_end_command",
    "primary_conninfo",
    "primary_slot_name",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "promote_trigger_file",
    "standby_mode",
    "trigger_file",
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoverySettings {
    pub restore_command: String,
    pub archive_cleanup_command: Option<String>,
    pub primary_conninfo: Option<String>,
    pub primary_slot_name: Option<String>,
    /// recovery_target_time, for point-in-time recovery.
    pub target_time: Option<String>,
    /// What to do at the target (promote for pitrtools' -F999 -R).
    pub target_action: Option<String>,
    /// A point-in-time recovery copy: `archive_mode = 'off'` in
    /// postgresql.auto.conf, outside our block so that it outlives the
    /// recovery; the DBA turns archiving on again deliberately.
    pub archiving_off: bool,
    /// pitrtools' `trigger_file`, on PostgreSQL 12-15 (before 16).
    pub promote_trigger_file: Option<String>,
}

/// Written above `archive_mode = 'off'` for a recovery copy.
pub const ARCHIVING_OFF_NOTE: &str =
    "# pitrkit -F999 -R: a point-in-time recovery copy does not archive into the shared archive. \
Check the recovered data, then: ALTER SYSTEM RESET archive_mode; and restart";

/// `existing` without any archive_mode setting (or our note), plus ours.
fn with_archiving_off(existing: &str) -> String {
    let mut out: String = existing
        .lines()
        .filter(|l| l.trim() != ARCHIVING_OFF_NOTE && !sets_key(l, "archive_mode"))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(ARCHIVING_OFF_NOTE);
    out.push_str("\narchive_mode = 'off'\n");
    out
}

/// A postgresql.conf string literal: `'` doubled and, since the server's
/// parser reads backslash escapes (`\n`, `\\`, ...), every `\` doubled too,
/// as ALTER SYSTEM writes them.
pub fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

impl RecoverySettings {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![("restore_command", self.restore_command.clone())];
        if let Some(c) = &self.archive_cleanup_command {
            v.push(("archive_cleanup_command", c.clone()));
        }
        if let Some(c) = &self.primary_conninfo {
            v.push(("primary_conninfo", c.clone()));
        }
        if let Some(s) = &self.primary_slot_name {
            v.push(("primary_slot_name", s.clone()));
        }
        if let Some(t) = &self.target_time {
            v.push(("recovery_target_time", t.clone()));
        }
        if let Some(a) = &self.target_action {
            v.push(("recovery_target_action", a.clone()));
        }
        if let Some(t) = &self.promote_trigger_file {
            v.push(("promote_trigger_file", t.clone()));
        }
        v.push(("recovery_target_timeline", "latest".into()));
        v
    }
}

fn sets_key(line: &str, k: &str) -> bool {
    line.trim_start().strip_prefix(k).is_some_and(|rest| {
        rest.trim_start().starts_with('=') || rest.starts_with([' ', '\t']) && !rest.trim().is_empty()
    })
}

fn sets_managed_key(line: &str) -> bool {
    MANAGED_KEYS.iter().any(|k| sets_key(line, k))
}

/// Removes our block and every line setting a managed key from `existing`.
pub fn strip_managed(existing: &str) -> String {
    let mut out = String::new();
    let mut in_block = false;
    for line in existing.lines() {
        if line.trim() == BLOCK_BEGIN {
            in_block = true;
            continue;
        }
        if line.trim() == BLOCK_END {
            in_block = false;
            continue;
        }
        if in_block || sets_managed_key(line) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Whether `text` (postgresql.auto.conf, or recovery.conf before 12) holds
/// the block `-S` writes: ours, for standby mode, without a recovery target.
pub fn has_standby_block(text: &str) -> bool {
    let mut block = None::<Vec<&str>>;
    for line in text.lines() {
        match line.trim() {
            BLOCK_BEGIN => block = Some(Vec::new()),
            BLOCK_END => break,
            _ => {
                if let Some(b) = block.as_mut() {
                    b.push(line)
                }
            }
        }
    }
    block.is_some_and(|b| {
        b.iter().any(|l| sets_key(l, "standby_mode")) || !b.iter().any(|l| sets_key(l, "recovery_target_time"))
    })
}

/// postgresql.auto.conf with our block (12+).
pub fn render_auto_conf(existing: &str, s: &RecoverySettings) -> String {
    let mut out = strip_managed(existing);
    if s.archiving_off {
        out = with_archiving_off(&out);
    }
    out.push_str(BLOCK_BEGIN);
    out.push('\n');
    for (k, v) in s.pairs() {
        out.push_str(&format!("{k} = {}\n", quote(&v)));
    }
    out.push_str(BLOCK_END);
    out.push('\n');
    out
}

/// recovery.conf (11 and older).
pub fn render_recovery_conf(s: &RecoverySettings, standby: bool) -> String {
    let mut out = format!("{BLOCK_BEGIN}\n");
    if standby {
        out.push_str("standby_mode = 'on'\n");
    }
    for (k, v) in s.pairs() {
        // Its name before PostgreSQL 12.
        let k = if k == "promote_trigger_file" { "trigger_file" } else { k };
        out.push_str(&format!("{k} = {}\n", quote(&v)));
    }
    out.push_str(BLOCK_END);
    out.push('\n');
    out
}

/// Which kind of recovery to set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Follow the master forever (standby.signal).
    Standby,
    /// Recover to a target, then act (recovery.signal).
    Targeted,
}

/// Writes the settings and signal files for `version` into `pgdata`
/// (`recovery_conf` overrides the recovery.conf path before 12).
pub fn write(
    pgdata: &Path,
    version: PgVersion,
    mode: Mode,
    s: &RecoverySettings,
    recovery_conf: Option<&Path>,
) -> io::Result<()> {
    let (standby_signal, recovery_signal) = (pgdata.join("standby.signal"), pgdata.join("recovery.signal"));
    if version.uses_signal_files() {
        let auto = pgdata.join("postgresql.auto.conf");
        let existing = fs::read_to_string(&auto).unwrap_or_default();
        write_atomic(&auto, &render_auto_conf(&existing, s))?;
        let (want, other) = match mode {
            Mode::Standby => (&standby_signal, &recovery_signal),
            Mode::Targeted => (&recovery_signal, &standby_signal),
        };
        remove_if_present(other)?;
        write_atomic(want, "")?;
        // A leftover recovery.conf stops PostgreSQL 12+ from starting.
        remove_if_present(&pgdata.join("recovery.conf"))?;
    } else {
        let path = recovery_conf
            .map(Path::to_path_buf)
            .unwrap_or_else(|| pgdata.join("recovery.conf"));
        write_atomic(&path, &render_recovery_conf(s, mode == Mode::Standby))?;
        if s.archiving_off {
            // Not a recovery.conf parameter: the server's own settings file (9.4+).
            let auto = pgdata.join("postgresql.auto.conf");
            let existing = fs::read_to_string(&auto).unwrap_or_default();
            write_atomic(&auto, &with_archiving_off(&existing))?;
        }
    }
    crate::fsutil::fsync_dir(pgdata)
}

/// Removes our settings and signal files (after promotion).
pub fn clear(pgdata: &Path) -> io::Result<()> {
    let auto = pgdata.join("postgresql.auto.conf");
    if let Ok(existing) = fs::read_to_string(&auto) {
        write_atomic(&auto, &strip_managed(&existing))?;
    }
    for f in ["standby.signal", "recovery.signal"] {
        remove_if_present(&pgdata.join(f))?;
    }
    Ok(())
}

fn remove_if_present(p: &Path) -> io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Replaces a small file atomically and durably (0600: it may hold conninfo).
pub fn write_atomic(path: &Path, contents: &str) -> io::Result<()> {
    crate::fsutil::write_durable(path, contents.as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RecoverySettings {
        RecoverySettings {
            restore_command: "/usr/bin/pitrkit restore -C /etc/s.ini %f %p".into(),
            archive_cleanup_command: Some("/usr/bin/pitrkit cleanup -C /etc/s.ini %r".into()),
            primary_conninfo: Some("host=m port=5432 user=rep passfile='/x/pitrkit.pgpass'".into()),
            ..Default::default()
        }
    }

    #[test]
    fn block_is_replaced_and_stray_settings_removed() {
        let existing = "# Do not edit this file manually!\nwork_mem = '8MB'\nprimary_conninfo = 'host=old'\nrestore_command='cp x'\n";
        let once = render_auto_conf(existing, &settings());
        assert!(once.contains("work_mem = '8MB'"));
        assert!(!once.contains("host=old") && !once.contains("cp x"));
        assert!(
            once.contains("passfile=''/x/pitrkit.pgpass''"),
            "single quotes doubled: {once}"
        );
        assert_eq!(once.matches("restore_command").count(), 1);
        // Idempotent, and survives ALTER SYSTEM dropping our comment lines.
        assert_eq!(render_auto_conf(&once, &settings()), once);
        let rewritten: String = once
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            render_auto_conf(&rewritten, &settings())
                .matches("restore_command")
                .count(),
            1
        );
        // Keys that merely start with a managed name are not ours.
        assert!(strip_managed("restore_command_timeout = 1\n").contains("restore_command_timeout"));
    }

    #[test]
    fn the_standby_block_is_told_from_a_recovery_one() {
        let standby = render_auto_conf("work_mem = '8MB'\n", &settings());
        assert!(has_standby_block(&standby));
        let mut s = settings();
        s.target_time = Some("2026-11-21 10:00:00+00".into());
        assert!(!has_standby_block(&render_auto_conf("", &s)));
        assert!(!has_standby_block("work_mem = '8MB'\n"));
        assert!(has_standby_block(&render_recovery_conf(&s, true)));
        assert!(!has_standby_block(&render_recovery_conf(&s, false)));
    }

    #[test]
    fn backslashes_are_doubled_like_alter_system_does() {
        assert_eq!(quote(r"a\b'c"), r"'a\\b''c'");
    }

    #[test]
    fn a_recovery_copy_turns_archiving_off_for_good() {
        let mut s = settings();
        s.archive_cleanup_command = None;
        s.archiving_off = true;
        let existing = "archive_mode = 'on'\nwork_mem = '8MB'\n";
        let once = render_auto_conf(existing, &s);
        assert_eq!(once.matches("archive_mode").count(), 2, "{once}"); // the note names it
        assert!(
            once.contains("archive_mode = 'off'") && !once.contains("'on'"),
            "{once}"
        );
        assert!(!once.contains("archive_cleanup_command"), "{once}");
        assert_eq!(render_auto_conf(&once, &s), once, "idempotent");
        // Clearing the recovery settings keeps archiving off.
        let cleared = strip_managed(&once);
        assert!(cleared.contains("archive_mode = 'off'") && !cleared.contains("restore_command"));
        // 11 and older: the setting goes to postgresql.auto.conf, not recovery.conf.
        let old = tempfile::tempdir().unwrap();
        write(old.path(), PgVersion(110000), Mode::Targeted, &s, None).unwrap();
        assert!(!fs::read_to_string(old.path().join("recovery.conf"))
            .unwrap()
            .contains("archive_mode"));
        assert!(fs::read_to_string(old.path().join("postgresql.auto.conf"))
            .unwrap()
            .contains("archive_mode = 'off'"));
    }

    #[test]
    fn pitr_target_and_old_versions() {
        let mut s = settings();
        s.target_time = Some("2026-11-21 10:00:00+00".into());
        s.target_action = Some("promote".into());
        let conf = render_recovery_conf(&s, false);
        assert!(conf.contains("recovery_target_time = '2026-11-21 10:00:00+00'"));
        assert!(conf.contains("recovery_target_action = 'promote'"));
        assert!(!conf.contains("standby_mode"));
        assert!(render_recovery_conf(&settings(), true).contains("standby_mode = 'on'"));
    }

    #[test]
    fn the_trigger_file_has_each_versions_name() {
        let mut s = settings();
        s.promote_trigger_file = Some("/var/lib/postgresql/cmd_end_recovery".into());
        let d = tempfile::tempdir().unwrap();
        write(d.path(), PgVersion(150000), Mode::Standby, &s, None).unwrap();
        let auto = fs::read_to_string(d.path().join("postgresql.auto.conf")).unwrap();
        assert!(
            auto.contains("promote_trigger_file = '/var/lib/postgresql/cmd_end_recovery'"),
            "{auto}"
        );
        let conf = render_recovery_conf(&s, true);
        assert!(
            conf.contains("\ntrigger_file = '/var/lib/postgresql/cmd_end_recovery'"),
            "{conf}"
        );
        assert!(!conf.contains("promote_trigger_file"), "{conf}");
    }

    #[test]
    fn signal_files_follow_the_mode() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("recovery.conf"), "x").unwrap();
        write(d.path(), PgVersion(150000), Mode::Standby, &settings(), None).unwrap();
        assert!(d.path().join("standby.signal").exists());
        assert!(
            !d.path().join("recovery.conf").exists(),
            "a recovery.conf stops 12+ from starting"
        );
        write(d.path(), PgVersion(150000), Mode::Targeted, &settings(), None).unwrap();
        assert!(d.path().join("recovery.signal").exists() && !d.path().join("standby.signal").exists());
        clear(d.path()).unwrap();
        assert!(!d.path().join("recovery.signal").exists());
        assert!(!fs::read_to_string(d.path().join("postgresql.auto.conf"))
            .unwrap()
            .contains("restore_command"));
        let old = tempfile::tempdir().unwrap();
        write(old.path(), PgVersion(110000), Mode::Standby, &settings(), None).unwrap();
        assert!(fs::read_to_string(old.path().join("recovery.conf"))
            .unwrap()
            .contains("standby_mode = 'on'"));
    }
}
