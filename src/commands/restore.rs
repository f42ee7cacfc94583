//! `pitrkit restore`: PostgreSQL's restore_command (see `crate::restore` for
//! why every failure exits with 200 and only "not found" with 1).

use crate::cli::RestoreArgs;
use crate::config::StandbyConfig;
use crate::logging;
use crate::restore::{self, RestoreOutcome, EXIT_FATAL};

pub fn run(program: &str, args: RestoreArgs) -> u8 {
    never_panics(program, || run_inner(program, args))
}

/// Runs `f`; a panic exits [`EXIT_FATAL`], never Rust's 101: PostgreSQL
/// takes any status up to 125 other than 0 for "not found" and would end
/// recovery early.
fn never_panics(program: &str, f: impl FnOnce() -> u8) -> u8 {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(code) => code,
        Err(_) => {
            // The panic message is already on stderr (the default hook).
            eprintln!("{program}: restore failed on an internal error (a bug in pitrkit; please report it with the message above); exiting {EXIT_FATAL} so that recovery stops instead of taking it for \"not found\"");
            EXIT_FATAL
        }
    }
}

fn run_inner(program: &str, args: RestoreArgs) -> u8 {
    // Even a bad configuration must not look like "not in the archive".
    let cfg = match StandbyConfig::load_for_wal_calls(&args.config) {
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
    let _t = logging::StepTimer::step("restore", format!("restore of {}", args.wal));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_exits_fatal_not_101() {
        assert_eq!(never_panics("restore", || 1), 1);
        assert_eq!(never_panics("restore", || panic!("a bug")), EXIT_FATAL);
        // A panicking thread the command waits for, too.
        let code = never_panics("restore", || {
            std::thread::scope(|s| {
                s.spawn(|| panic!("a bug in a worker"));
            });
            0
        });
        assert_eq!(code, EXIT_FATAL);
    }
}
