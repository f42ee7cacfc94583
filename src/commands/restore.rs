//! `pitrkit restore`: PostgreSQL's restore_command (see `crate::restore` for
//! why every failure exits with 200 and only "not found" with 1).

use crate::cli::RestoreArgs;
use crate::config::StandbyConfig;
use crate::logging;
use crate::restore::{self, RestoreOutcome, EXIT_FATAL};

pub fn run(program: &str, args: RestoreArgs) -> u8 {
    // Even a bad configuration must not look like "not in the archive".
    let cfg = match StandbyConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{program}: configuration error: {e}");
            return EXIT_FATAL;
        }
    };
    logging::init(program, cfg.debug, cfg.pitrkit_logfile.as_deref());
    if let Some(seg_size) = args.prefetch_after {
        return match crate::wal::WalName::parse(&args.wal) {
            Ok(served) if crate::wal::valid_segment_size(seg_size) => {
                match restore::prefetch::run_worker(&cfg, &served, seg_size, &args.dest) {
                    Ok(n) => log::debug!("prefetched {n} segment(s) after {}", args.wal),
                    Err(e) => log::debug!("prefetch after {} stopped: {e}", args.wal),
                }
                0
            }
            _ => 2,
        };
    }
    let _t = logging::StepTimer::new(format!("restore of {}", args.wal));
    match restore::restore(&cfg, &args.wal, &args.dest) {
        Ok(out) => {
            restore::start_prefetch(&cfg, &args.wal, &out, &args.dest);
            // PostgreSQL logs every restored file itself; ours adds where from.
            if let RestoreOutcome::Restored { archived, codec, bytes } = &out {
                log::debug!(
                    "restored {} from {} ({codec}, {bytes} bytes) to {}",
                    args.wal,
                    archived.display(),
                    args.dest.display()
                );
            }
            out.exit_code()
        }
        Err(e) => {
            log::error!("restore of {} failed: {e}", args.wal);
            EXIT_FATAL
        }
    }
}
