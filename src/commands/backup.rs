//! `pitrkit backup`: takes a backup of the local cluster and prints its ID;
//! with `--list`, the repository's sets.

use super::{current_user, early_error, print_warnings, refuse_root, EXIT_FAILED, EXIT_OK};
use crate::backup::repo::Repository;
use crate::backup::{catalog, expire, take, verify};
use crate::cli::BackupArgs;
use crate::config::ConfigFile;
use crate::config::{BackupConfig, BackupType};
use crate::logging;
use crate::notify::Level;

pub fn run(program: &str, args: BackupArgs) -> u8 {
    let cfg = match BackupConfig::load_with_warnings(&args.config) {
        Ok((c, warnings)) => {
            // Not on the backup itself or --expire: cron mails their output.
            if args.list || args.verify.is_some() {
                print_warnings(program, &warnings);
            }
            c
        }
        Err(e) => return early_error(program, "configuration error", &e),
    };
    if let Err(e) = refuse_root(program) {
        return early_error(program, "refused", &e);
    }
    logging::init(program, cfg.debug, cfg.pitrkit_logfile.as_deref());
    if args.list {
        return list(&cfg, args.json);
    }
    if let Some(id) = &args.verify {
        return verify(&cfg, Some(id.as_str()).filter(|i| !i.is_empty()));
    }
    if args.expire {
        return expire(&cfg);
    }
    // The flag wins over the key.
    let kind = if args.incremental {
        BackupType::Incremental
    } else {
        cfg.backup_type
    };
    match take::run(&cfg, &current_user(), kind) {
        Ok(report) => {
            cfg.notify.send(Level::Ok, &report.summary());
            println!("{}", report.manifest.id);
            expire(&cfg)
        }
        Err(e) => {
            cfg.notify.send(
                Level::Critical,
                &format!("backup of {} failed: {e:#}", cfg.pgdata.display()),
            );
            EXIT_FAILED
        }
    }
}

fn list(cfg: &BackupConfig, json: bool) -> u8 {
    match Repository::open(&cfg.backup_dir).and_then(|r| catalog::catalog(&r)) {
        Ok(c) => {
            print!("{}", if json { c.json() } else { c.text() });
            EXIT_OK
        }
        Err(e) => {
            log::error!("listing backups failed: {e:#}");
            EXIT_FAILED
        }
    }
}

fn verify(cfg: &BackupConfig, id: Option<&str>) -> u8 {
    match Repository::open(&cfg.backup_dir).and_then(|r| verify::verify(&r, &cfg.archivedir, id)) {
        Ok(problems) if problems.is_empty() => {
            println!("verify: every stored file matches its manifest and the archive's WAL is continuous");
            EXIT_OK
        }
        Ok(problems) => {
            for p in &problems {
                println!("BAD: {p}");
            }
            cfg.notify.send(
                Level::Critical,
                &format!(
                    "backup --verify found {} problem(s) in {}: {}",
                    problems.len(),
                    cfg.backup_dir,
                    problems[0]
                ),
            );
            EXIT_FAILED
        }
        Err(e) => {
            cfg.notify
                .send(Level::Critical, &format!("backup --verify failed: {e:#}"));
            EXIT_FAILED
        }
    }
}

fn expire(cfg: &BackupConfig) -> u8 {
    match expire::run(cfg) {
        Ok(r) => {
            log::info!("{}", r.summary());
            EXIT_OK
        }
        Err(e) => {
            cfg.notify.send(
                Level::Critical,
                &format!("backup --expire in {} failed: {e:#}", cfg.backup_dir),
            );
            EXIT_FAILED
        }
    }
}
