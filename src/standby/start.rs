//! `-S` (start as a standby), `-A start` and `-A stop`.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::recovery::{self, Mode, RecoverySettings};
use super::report::{Report, StandbyStarted};
use super::{Standby, INCOMPLETE_MARKER, PASSFILE};
use crate::fsutil;
use crate::layout::PROMOTING_FILE;
use crate::pg::master::pgpass_line;

/// Copies the configured postgresql.conf / pg_hba.conf (standby or failover
/// set) into pgdata, unless `no_copy_conf`. Returns the files to point the
/// server at with `-c config_file=` when `no_copy_conf` is on.
pub fn copy_config<'c>(sb: &'c Standby, failover: bool) -> Result<Option<(&'c Path, Option<&'c Path>)>> {
    let cfg = sb.cfg;
    let (conf, hba) = if failover {
        (cfg.pg_conf_failover.as_deref(), cfg.pg_hba_conf_failover.as_deref())
    } else {
        (cfg.pg_conf.as_deref(), cfg.pg_hba_conf.as_deref())
    };
    if cfg.no_copy_conf {
        return Ok(conf.map(|c| (c, hba)));
    }
    for (src, name) in [(conf, "postgresql.conf"), (hba, "pg_hba.conf")] {
        if let Some(src) = src {
            let text =
                fs::read_to_string(src).with_context(|| format!("reading {} (to install as {name})", src.display()))?;
            recovery::write_atomic(&sb.pgdata.join(name), &text)?;
            log::info!("installed {} as {name}", src.display());
        }
    }
    Ok(None)
}

/// A libpq conninfo value, quoted.
fn conninfo_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The TLS files the walreceiver uses too (libpq reads the same keys);
/// unset ones keep libpq's defaults in the server user's ~/.postgresql.
pub fn ssl_conninfo(ssl: &crate::config::SslFiles) -> String {
    let mut out = String::new();
    let paths = [
        ("sslrootcert", ssl.rootcert.clone()),
        ("sslcert", ssl.cert.as_ref().map(|p| p.display().to_string())),
        ("sslkey", ssl.key.as_ref().map(|p| p.display().to_string())),
        ("sslcrl", ssl.crl.as_ref().map(|p| p.display().to_string())),
    ];
    for (key, value) in paths {
        if let Some(v) = value {
            out.push_str(&format!(" {key}={}", conninfo_value(&v)));
        }
    }
    out
}

/// The settings a standby needs: restore from the archive through pitrkit,
/// clean the archive, and optionally stream from the master.
pub fn standby_settings(sb: &Standby) -> Result<RecoverySettings> {
    let cfg = sb.cfg;
    let mut s = RecoverySettings {
        restore_command: sb.own_command("restore", "%f %p")?,
        archive_cleanup_command: Some(sb.own_command("cleanup", "%r")?),
        ..Default::default()
    };
    if cfg.streaming {
        let host = cfg
            .master_host
            .clone()
            .context("use_streaming_replication needs master_public_ip")?;
        let app = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "pitrkit".into());
        let mut ci = format!(
            "host={} port={} user={} sslmode={} application_name={}",
            conninfo_value(&host),
            cfg.master_port,
            conninfo_value(&cfg.repl_db_user),
            cfg.sslmode,
            conninfo_value(&app)
        );
        ci.push_str(&ssl_conninfo(&cfg.ssl));
        if let Some(pw) = &cfg.repl_db_password {
            // Never put the password into postgresql.auto.conf (world-readable copies, backups).
            let pass = sb.pgdata.join(PASSFILE);
            recovery::write_atomic(&pass, &pgpass_line(&host, cfg.master_port, &cfg.repl_db_user, pw))?;
            ci.push_str(&format!(" passfile={}", conninfo_value(&pass.display().to_string())));
        }
        s.primary_conninfo = Some(ci);
        s.primary_slot_name = cfg.primary_slot_name.clone();
    }
    if let Some(t) = cfg
        .trigger_file
        .as_ref()
        .filter(|_| sb.version.has_promote_trigger_file())
    {
        s.promote_trigger_file = Some(t.display().to_string());
    }
    Ok(s)
}

/// pitrtools' `trigger_file` on a PostgreSQL that no longer has
/// promote_trigger_file: accepted (every pitrtools sample sets it), but it
/// promotes nothing, and the DBA must know before relying on it.
fn trigger_file_warning(sb: &Standby) -> Option<String> {
    let t = sb.cfg.trigger_file.as_ref()?;
    (!sb.version.has_promote_trigger_file()).then(|| {
        format!(
            "trigger_file {} has no effect on PostgreSQL {}: PostgreSQL 16 removed promote_trigger_file. \
             Fail over with `cmd_standby -C {} -F999`",
            t.display(),
            sb.version,
            sb.cfg.source.display()
        )
    })
}

pub fn refuse_incomplete(sb: &Standby) -> Result<()> {
    if sb.pgdata.join(INCOMPLETE_MARKER).exists() {
        bail!(
            "{} holds an unfinished base backup ({INCOMPLETE_MARKER}); starting it would give a corrupt database. Run `cmd_standby -C {} -B` again first",
            sb.pgdata.display(),
            sb.cfg.source.display()
        );
    }
    if !sb.pgdata.join("PG_VERSION").exists() {
        bail!(
            "{} is not a PostgreSQL data directory yet; take a base backup first (-B)",
            sb.pgdata.display()
        );
    }
    Ok(())
}

pub fn start_standby(sb: &Standby) -> Result<StandbyStarted> {
    refuse_incomplete(sb)?;
    if sb.cluster.is_running() {
        bail!(
            "PostgreSQL is already running on {}; stop it first (-A stop) to restart it as a standby",
            sb.pgdata.display()
        );
    }
    // The settings first: a path they cannot carry is refused before anything is written.
    let settings = standby_settings(sb)?;
    let warnings: Vec<String> = crate::pg::master::streaming_route_warning(sb.cfg)
        .into_iter()
        .chain(trigger_file_warning(sb))
        .collect();
    remove_stale_promoting(sb, "this server starts as a standby again")?;
    // From here on a real standby: -F999 -R keeps the "master alive" guard.
    super::spare::remove_mark(&sb.pgdata)?;
    let conf_files = copy_config(sb, false)?;
    recovery::write(
        &sb.pgdata,
        sb.version,
        Mode::Standby,
        &settings,
        sb.cfg.recovery_conf.as_deref(),
    )
    .with_context(|| format!("writing recovery settings into {}", sb.pgdata.display()))?;
    sb.start_server(conf_files)?;
    sb.wait_for_recovery_state(true)?;
    Ok(StandbyStarted {
        pgdata: sb.pgdata.clone(),
        version: sb.version.to_string(),
        archivedir: sb.cfg.archivedir.clone(),
        streaming: sb.cfg.streaming,
        warnings,
    })
}

/// Removes a marker left by a -F999 that was killed (the server is
/// stopped, so no promotion is under way): restore honours only a marker
/// naming the running postmaster, but it should not linger either.
fn remove_stale_promoting(sb: &Standby, next: &str) -> Result<()> {
    let promoting = sb.pgdata.join(PROMOTING_FILE);
    if promoting.exists() {
        log::warn!(
            "removing {}: a failover by pitrkit was interrupted here; {next}",
            promoting.display()
        );
        fsutil::remove_durable(&promoting).with_context(|| format!("removing {}", promoting.display()))?;
    }
    Ok(())
}

/// `-A start`: start the server as it is configured now.
pub fn action_start(sb: &Standby) -> Result<Report> {
    refuse_incomplete(sb)?;
    if !sb.cluster.is_running() {
        remove_stale_promoting(sb, "the server starts as it is configured")?;
    }
    let conf_files = if sb.cfg.no_copy_conf {
        copy_config(sb, false)?
    } else {
        None
    };
    sb.start_server(conf_files)?;
    Ok(Report::ServerStarted(sb.pgdata.clone()))
}

/// `-A stop`.
pub fn action_stop(sb: &Standby) -> Result<Report> {
    sb.stop_server()?;
    Ok(Report::ServerStopped(sb.pgdata.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_tls_files_reach_primary_conninfo() {
        let ssl = crate::config::SslFiles {
            rootcert: Some("/etc/pitrkit/ca's.crt".into()),
            cert: Some(PathBuf::from("/c.crt")),
            key: None,
            crl: Some(PathBuf::from("/r.crl")),
        };
        assert_eq!(
            ssl_conninfo(&ssl),
            r" sslrootcert='/etc/pitrkit/ca\'s.crt' sslcert='/c.crt' sslcrl='/r.crl'"
        );
        assert_eq!(ssl_conninfo(&Default::default()), "");
    }
}
