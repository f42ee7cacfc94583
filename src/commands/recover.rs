//! `pitrkit recover`: restores a backup into a new data directory, ready
//! for point-in-time recovery (and starts it with `--start`); with the
//! hidden `--restore-wal %f %p`, the recovered server's restore_command.

use crate::config::ConfigFile;
use std::path::PathBuf;
use std::time::Duration;

use super::{early_error, print_warnings, refuse_root, EXIT_FAILED, EXIT_OK};
use crate::backup::recover::{self, Request};
use crate::backup::target::{parse_target_lsn, parse_time, Target};
use crate::cli::{RecoverArgs, RecoveryTarget};
use crate::config::BackupConfig;
use crate::logging;
use crate::restore::{RestoreOutcome, EXIT_FATAL};

pub fn run(program: &str, args: RecoverArgs) -> u8 {
    let restore_command = !args.restore_wal.is_empty();
    let cfg = match BackupConfig::load_with_warnings(&args.config) {
        // Never as the recovered server's restore_command (its log).
        Ok((c, warnings)) => {
            if !restore_command {
                print_warnings(program, &warnings);
            }
            c
        }
        Err(e) if restore_command => {
            eprintln!("{program}: configuration error: {e}");
            return EXIT_FATAL;
        }
        Err(e) => return early_error(program, "configuration error", &e),
    };
    logging::init(program, cfg.debug, cfg.pitrkit_logfile.as_deref());
    if restore_command {
        return restore_wal(&cfg, &args);
    }
    if let Err(e) = refuse_root(program) {
        return early_error(program, "refused", &e);
    }
    let req = match request(&args) {
        Ok(r) => r,
        Err(e) => return early_error(program, "usage error", &format!("{e:#}")),
    };
    let done = recover::run(&cfg, &req).and_then(|r| {
        if let Some(note) = &r.note {
            log::warn!("{note}");
        }
        log::info!("backup {} restored into {}", r.manifest.id, r.dir.display());
        if args.start {
            let log = recover::start(&r.manifest, &r.dir, &cfg.includepath, Duration::from_secs(3600))?;
            log::info!(
                "the recovered server reached its target and runs (log: {})",
                log.display()
            );
        }
        Ok(r)
    });
    match done {
        Ok(r) => {
            println!("{}", r.manifest.id);
            EXIT_OK
        }
        Err(e) => {
            log::error!("recover failed: {e:#}");
            EXIT_FAILED
        }
    }
}

fn target(t: &RecoveryTarget) -> anyhow::Result<Target> {
    Ok(if let Some(time) = &t.target_time {
        Target::Time(time.clone(), parse_time(time)?)
    } else if let Some(x) = &t.target_xid {
        Target::Xid(x.clone())
    } else if let Some(l) = &t.target_lsn {
        Target::Lsn(parse_target_lsn(l)?)
    } else if let Some(n) = &t.target_name {
        Target::Name(n.clone())
    } else if t.immediate {
        Target::Immediate
    } else if t.standby {
        Target::Standby
    } else {
        anyhow::bail!(
            "give one recovery target: --target-time, --target-xid, --target-lsn, --target-name or --immediate (or --standby)"
        )
    })
}

fn request(args: &RecoverArgs) -> anyhow::Result<Request> {
    let mut map = Vec::new();
    for pair in &args.tablespace_map {
        let Some((old, new)) = pair.split_once('=') else {
            anyhow::bail!("--tablespace-map {pair}: write OLD=NEW (absolute paths)");
        };
        map.push((PathBuf::from(old), PathBuf::from(new)));
    }
    Ok(Request {
        to: args.to.clone().unwrap_or_default(),
        target: target(&args.target)?,
        backup: args.backup.clone(),
        tablespace_map: map,
        port: args.port,
        keep_archiving: args.keep_archiving,
        program: std::env::current_exe()?,
    })
}

/// restore_command: 0 restored, 1 in neither place, 200 anything else.
fn restore_wal(cfg: &BackupConfig, args: &RecoverArgs) -> u8 {
    let (Some(id), [wanted, dest]) = (&args.backup, args.restore_wal.as_slice()) else {
        return EXIT_FATAL;
    };
    match recover::restore_wal(cfg, id, wanted, std::path::Path::new(dest)) {
        Ok(RestoreOutcome::Restored { archived, .. }) => {
            log::debug!("restored {wanted} from {}", archived.display());
            0
        }
        Ok(other) => other.exit_code(),
        Err(e) => {
            log::error!("restore of {wanted} failed: {e}");
            EXIT_FATAL
        }
    }
}
