//! `-F999` (failover) and `-F999 -R <timestamp>` (point-in-time recovery).
//!
//! A failover promotes this standby; doing it while the master still runs
//! makes two masters, so it is refused unless the master is confirmed gone
//! (its port does not answer, nor does PostgreSQL through ssh, and, where
//! master_pgdata is set, no postmaster runs in its data directory), or `--force` says otherwise, loudly.
//!
//! `-F999 -R` on a spare (`spare.rs`: a base backup that never ran as a
//! standby) is a recovery copy, not production's failover: it may run
//! beside a live master, with archiving off and no archive_cleanup_command,
//! and then it does not run `action_failover`.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Local, NaiveDateTime, TimeZone};

use super::recovery::{self, Mode};
use super::report::FailoverReport;
use super::spare;
use super::start::{copy_config, refuse_incomplete, standby_settings};
use super::Standby;
use crate::fsutil;
use crate::layout::PROMOTING_FILE;
use crate::notify::{self, HookOutcome, Level};
use crate::pg::master::MasterTarget;
use crate::transport::ssh::shell_quote;

/// Validates a recovery target time and returns it with an explicit UTC
/// offset, so PostgreSQL's TimeZone setting cannot shift it.
pub fn parse_target_time(s: &str, now: DateTime<Local>) -> Result<String> {
    let t = s.trim();
    let with_zone = [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f %#z",
    ];
    let naive = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M"];
    let normalized = t.replace(" UTC", "+00:00").replace('Z', "+00:00");
    let parsed: Option<DateTime<chrono::FixedOffset>> = with_zone
        .iter()
        .find_map(|f| DateTime::parse_from_str(&normalized, f).ok())
        .or_else(|| {
            naive
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
                .and_then(|n| Local.from_local_datetime(&n).single().map(|d| d.fixed_offset()))
        });
    let Some(dt) = parsed else {
        bail!("'{s}' is not a timestamp pitrkit understands; use e.g. '2026-11-21 10:00:00' (local time) or '2026-11-21 10:00:00+00'");
    };
    if dt > now {
        bail!(
            "recovery target '{s}' is in the future ({}); recovery would end before reaching it",
            dt.format("%Y-%m-%d %H:%M:%S%:z")
        );
    }
    Ok(dt.format("%Y-%m-%d %H:%M:%S%.f%:z").to_string())
}

/// Why we believe the master is alive, if we do.
fn master_alive(sb: &Standby) -> Option<String> {
    let cfg = sb.cfg;
    let host = cfg.master_host.as_deref()?;
    let timeout = cfg
        .ssh
        .connect_timeout
        .min(Duration::from_secs(5))
        .max(Duration::from_secs(1));
    if let Ok(addrs) = (host, cfg.master_port).to_socket_addrs() {
        for a in addrs {
            if TcpStream::connect_timeout(&a, timeout).is_ok() {
                return Some(format!("{host}:{} accepts connections", cfg.master_port));
            }
        }
    }
    if let Some(why) = answers_through_ssh(sb) {
        return Some(why);
    }
    let pgdata = cfg.master_pgdata.as_ref()?;
    let pidfile = shell_quote(&pgdata.join("postmaster.pid").display().to_string());
    let script = format!("test -f {pidfile} && kill -0 \"$(head -n 1 {pidfile})\" 2>/dev/null");
    let out = cfg
        .ssh
        .script(host, &script)
        .ok()?
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    match out.status.code() {
        Some(0) => Some(format!(
            "a postmaster is running in {}:{} (postmaster.pid)",
            host,
            pgdata.display()
        )),
        // 255: ssh itself failed; the host is down or unreachable, which is what a failover expects.
        _ => None,
    }
}

/// Whether PostgreSQL answers through ssh (the route of sql_via_ssh): a
/// master whose port only the master itself reaches (listen_addresses = '',
/// a firewall) is alive too, and master_pgdata, the other proof, is optional.
fn answers_through_ssh(sb: &Standby) -> Option<String> {
    let target = MasterTarget::from_standby(sb.cfg).ok()?;
    target.answers_through_ssh().then(|| {
        format!(
            "PostgreSQL answers through ssh to {} ({})",
            target.host,
            target.describe()
        )
    })
}

pub fn run(sb: &Standby, force: bool, target_time: Option<&str>) -> Result<FailoverReport> {
    let cfg = sb.cfg;
    let target = target_time.map(|t| parse_target_time(t, Local::now())).transpose()?;
    if target.is_some() || !sb.cluster.is_running() {
        // Recovery settings will be written: refuse paths they cannot carry
        // before the first change.
        sb.own_command("restore", "%f %p")?;
    }
    if let Some(t) = &target {
        check_recovery_copy(sb, t)?;
    }
    check_failover_files(sb)?;
    let beside_live_master = refuse_two_masters(sb, force, target.is_some())?;

    // While this file exists restore serves what restore_delay holds back:
    // PostgreSQL ends recovery on the first "not found" once promotion is
    // asked for, so a held-back segment would be lost to the new master.
    // It stays if we fail before read-write (the promotion may still run).
    // It names the running postmaster (restore honours it only for that
    // one); a stopped server recovers without standby.signal, undelayed.
    let promoting = sb.pgdata.join(PROMOTING_FILE);
    match &target {
        None => {
            if sb.cluster.is_running() {
                let pm = super::promoting::Postmaster::of(&sb.pgdata).with_context(|| {
                    format!(
                        "PostgreSQL runs on {}, but its postmaster.pid names no pid and start time",
                        sb.pgdata.display()
                    )
                })?;
                super::promoting::write(&sb.pgdata, &pm)
                    .with_context(|| format!("writing {} before promoting", promoting.display()))?;
            }
            promote(sb)?
        }
        Some(t) => archive_recovery(sb, Some(t), sb.cfg.has_failover_conf())?,
    }
    sb.wait_for_recovery_state(false)?;
    recovery::clear(&sb.pgdata).context("removing recovery settings after promotion")?;
    spare::remove_mark(&sb.pgdata)?;

    // A recovery copy beside a live master is not production's failover:
    // action_failover (moving an address, repointing clients) would steal
    // production's clients.
    let hook_failed = match &beside_live_master {
        None => run_action_failover(sb),
        Some(_) => None,
    };
    // Read-write now, whatever the hook did: nothing is restored any more.
    fsutil::remove_durable(&promoting).with_context(|| format!("removing {}", promoting.display()))?;
    if let Some((action, outcome)) = hook_failed {
        let msg = format!(
            "failover of {} done, but action_failover '{action}' failed ({outcome:?}); finish its work by hand",
            sb.pgdata.display()
        );
        cfg.notify.send(Level::Critical, &msg);
        bail!(msg);
    }
    let report = FailoverReport {
        pgdata: sb.pgdata.clone(),
        target: target.map(|t| t.to_string()),
        beside_live_master,
        action_failover: cfg.action_failover.is_some(),
    };
    cfg.notify.send(Level::Ok, &report.summary());
    Ok(report)
}

/// What `-R` needs of the copy, checked before anything changes: a
/// finished, stopped copy that is not already past the target.
fn check_recovery_copy(sb: &Standby, target: &str) -> Result<()> {
    refuse_incomplete(sb)?;
    spare::refuse_past_target(sb, target)?;
    spare::refuse_missing_start(sb)?;
    if sb.cluster.is_running() {
        bail!(
            "PostgreSQL is running on {}; point-in-time recovery needs a stopped copy taken before the target: \
             stop it (-A stop), take a fresh base backup (-B), then run -F999 -R again",
            sb.pgdata.display()
        );
    }
    Ok(())
}

/// Everything the failover will need after the promotion, checked before
/// it: a promoted server whose failover configuration then cannot be
/// installed is half a failover, the worst state to leave at 3 a.m.
fn check_failover_files(sb: &Standby) -> Result<()> {
    let cfg = sb.cfg;
    let files = [
        ("pg_conf_failover", cfg.pg_conf_failover.as_deref()),
        ("pg_hba_conf_failover", cfg.pg_hba_conf_failover.as_deref()),
    ];
    for (key, path) in files {
        let Some(path) = path else { continue };
        std::fs::File::open(path)
            .and_then(|f| f.metadata())
            .and_then(|m| {
                if m.is_file() {
                    Ok(())
                } else {
                    Err(std::io::Error::other("not a regular file"))
                }
            })
            .with_context(|| {
                format!(
                    "refusing to fail over: {key} {} cannot be read; nothing was changed. Fix the file or the key in {}, then run -F999 again",
                    path.display(),
                    cfg.source.display()
                )
            })?;
    }
    if let Some(action) = cfg.action_failover.as_deref() {
        // Only a program named by path can be checked; a bare name is
        // found through PATH by the shell when it runs.
        let program = action.split_whitespace().next().unwrap_or("");
        if program.contains('/') && !is_executable(std::path::Path::new(program)) {
            bail!(
                "refusing to fail over: action_failover program {program} is missing or not executable; nothing was changed. \
                 Fix it or the key in {}, then run -F999 again",
                cfg.source.display()
            );
        }
    }
    Ok(())
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A live master and a promoted standby would be two masters: refused
/// unless forced (then reported as critical), or unless `pitr` runs on a
/// spare, which never was production's standby. Returns why the master
/// seems alive when a spare recovers beside it.
fn refuse_two_masters(sb: &Standby, force: bool, pitr: bool) -> Result<Option<String>> {
    let Some(why) = master_alive(sb) else {
        return Ok(None);
    };
    let not_spare = match pitr.then(|| spare::classify(sb)).transpose()? {
        Some(Ok(_)) => {
            log::info!(
                "{} is a spare (a base backup that never ran as a standby): recovering it while the master is alive ({why})",
                sb.pgdata.display()
            );
            return Ok(Some(why));
        }
        Some(Err(reason)) => format!(
            " This copy is not a spare ({reason}), so it may be the standby production fails over to. \
             Point-in-time recovery while production runs needs a spare: a data directory whose base backup (-B) \
             was taken before the target and that never ran -S."
        ),
        None => String::new(),
    };
    if !force {
        bail!(
            "refusing to fail over: the master is alive ({why}). Promoting now would give two masters.{not_spare} \
             Nothing was changed. Stop the master first, or, if you are certain it is fenced, add --force"
        );
    }
    sb.cfg.notify.send(
        Level::Critical,
        &format!(
            "FORCED failover of {} although the master seems alive ({why})",
            sb.pgdata.display()
        ),
    );
    Ok(None)
}

/// Runs action_failover, if set; the command and its outcome if it failed.
fn run_action_failover<'a>(sb: &Standby<'a>) -> Option<(&'a str, HookOutcome)> {
    let action = sb.cfg.action_failover.as_deref()?;
    let outcome = notify::run_hook(
        action,
        &[],
        &[
            ("PITRKIT_EVENT", "failover"),
            ("PGDATA", &sb.pgdata.display().to_string()),
        ],
        sb.cfg.wait_timeout,
    );
    (outcome != HookOutcome::Exited(0)).then_some((action, outcome))
}

/// Promotes a running standby, or recovers a stopped one to the end of the
/// archive and then promotes; then installs the failover configuration.
fn promote(sb: &Standby) -> Result<()> {
    let failover_conf = sb.cfg.has_failover_conf();
    if sb.cluster.is_running() {
        // Promotion first replays whatever WAL the archive already holds.
        sb.cluster.promote(sb.cfg.wait_timeout)?;
        sb.wait_for_recovery_state(false)?;
        if failover_conf {
            let files = copy_config(sb, true)?;
            sb.stop_server()?;
            sb.start_server(files)?;
        }
    } else {
        // recovery.signal without a target: replay the whole archive, then promote.
        archive_recovery(sb, None, failover_conf)?;
    }
    Ok(())
}

/// Starts a stopped copy in archive recovery (recovery.signal): replay the
/// archive up to `target` (or its end), then promote. No streaming: a
/// failover or PITR must not follow the old master.
fn archive_recovery(sb: &Standby, target: Option<&str>, failover_conf: bool) -> Result<()> {
    refuse_incomplete(sb)?;
    let mut s = standby_settings(sb)?;
    s.primary_conninfo = None;
    s.primary_slot_name = None;
    if target.is_some() {
        // A recovery copy shares the archive with standbys and older copies
        // that still need its WAL: it neither cleans the archive (PostgreSQL
        // runs archive_cleanup_command at restartpoints, in archive recovery
        // too) nor archives its new timeline into it. Explicitly empty: a
        // copied postgresql.conf may set one.
        s.archive_cleanup_command = Some(String::new());
        s.archiving_off = true;
    }
    s.target_time = target.map(str::to_string);
    s.target_action = Some("promote".into());
    recovery::write(
        &sb.pgdata,
        sb.version,
        Mode::Targeted,
        &s,
        sb.cfg.recovery_conf.as_deref(),
    )?;
    let files = copy_config(sb, failover_conf)?;
    sb.start_server(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Local> {
        Local.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
    }

    #[test]
    fn target_times() {
        assert_eq!(
            parse_target_time("2026-11-21 10:00:00+00", now()).unwrap(),
            "2026-11-21 10:00:00+00:00"
        );
        assert_eq!(
            parse_target_time("2026-11-21T10:00:00.5Z", now()).unwrap(),
            "2026-11-21 10:00:00.500+00:00"
        );
        assert_eq!(
            parse_target_time("2026-11-21 10:00:00 UTC", now()).unwrap(),
            "2026-11-21 10:00:00+00:00"
        );
        assert!(parse_target_time("2026-11-21 10:00:00", now()).is_ok());
        assert!(parse_target_time("yesterday", now())
            .unwrap_err()
            .to_string()
            .contains("not a timestamp"));
        assert!(parse_target_time("2026-13-01 00:00:00", now()).is_err());
        assert!(parse_target_time("2027-01-01 00:00:00+00", now())
            .unwrap_err()
            .to_string()
            .contains("future"));
    }
}
