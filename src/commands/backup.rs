//! `pitrkit backup`: takes a backup of the local cluster and prints its ID;
//! with `--list`, the repository's sets.

use super::{current_user, early_error, refuse_root, EXIT_FAILED, EXIT_OK};
use crate::backup::take;
use crate::cli::BackupArgs;
use crate::config::BackupConfig;
use crate::logging;
use crate::notify::Level;

pub fn run(program: &str, args: BackupArgs) -> u8 {
    let cfg = match BackupConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => return early_error(program, "configuration error", &e),
    };
    if let Err(e) = refuse_root(program) {
        return early_error(program, "refused", &e);
    }
    logging::init(program, cfg.debug, cfg.pitrkit_logfile.as_deref());
    match take::run(&cfg, &current_user()) {
        Ok(report) => {
            cfg.notify.send(Level::Ok, &report.summary());
            println!("{}", report.manifest.id);
            EXIT_OK
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
