//! `pitrkit cleanup`: PostgreSQL's archive_cleanup_command. PostgreSQL only
//! logs a warning when it fails, so the log lines here are what a DBA sees.

use super::{early_error, EXIT_ERROR, EXIT_FAILED, EXIT_OK};
use crate::cleanup::{self, CleanupOutcome};
use crate::cli::CleanupArgs;
use crate::config::StandbyConfig;
use crate::logging;

pub fn run(program: &str, args: CleanupArgs) -> u8 {
    let cfg = match StandbyConfig::load_for_wal_calls(&args.config) {
        Ok(c) => c,
        Err(e) => return early_error(program, "configuration error", &e),
    };
    logging::init(program, cfg.debug, cfg.pitrkit_logfile.as_deref());
    let _t = logging::StepTimer::step("cleanup", format!("cleanup before {}", args.oldest_kept));
    match cleanup::cleanup(&cfg, &args.oldest_kept, args.dry_run) {
        Ok(CleanupOutcome::Paused { pause_file }) => {
            log::info!(
                "cleanup paused: {} exists; nothing removed (remove that file to resume)",
                pause_file.display()
            );
            EXIT_OK
        }
        Ok(CleanupOutcome::Done(report)) => {
            for p in &report.problems {
                log::error!("{p}");
            }
            if args.dry_run {
                println!("{}", report.summary());
            } else {
                log::info!("{}", report.summary());
            }
            if report.problems.is_empty() {
                EXIT_OK
            } else {
                EXIT_FAILED
            }
        }
        Err(e) => {
            log::error!("cleanup failed: {e}");
            // 2 for a mistake in the configuration or command line, 1 otherwise.
            if e.is_usage() {
                EXIT_ERROR
            } else {
                EXIT_FAILED
            }
        }
    }
}
