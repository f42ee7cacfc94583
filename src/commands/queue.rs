//! `pitrkit queue` / `cmd_queue`: the queue runner (see `archive::runner`).

use super::archiver::check_queue_user;
use super::{early_error, print_warnings, refuse_root, EXIT_ERROR, EXIT_OK};
use crate::archive::runner::{self, Detached, End, Runner};
use crate::cli::QueueArgs;
use crate::config::ArchiverConfig;
use crate::config::ConfigFile;
use crate::logging;

pub fn run(program: &str, args: QueueArgs) -> u8 {
    // Absolute: the daemon works in / and reloads the file when it changes.
    let path = match std::path::absolute(&args.config) {
        Ok(p) => p,
        Err(e) => {
            return early_error(
                program,
                "configuration error",
                &format!("{}: {e}", args.config.display()),
            )
        }
    };
    let cfg = match ArchiverConfig::load_with_warnings(&path) {
        Ok((c, warnings)) => {
            // A runner started by hand or by systemd; not the one an
            // archive call starts (its streams go nowhere anyway).
            if !args.until_empty {
                print_warnings(program, &warnings);
            }
            c
        }
        Err(e) => return early_error(program, "configuration error", &e),
    };
    // Checked before detaching, so that whoever started it sees why not.
    if let Err(msg) = refuse_root(program).and_then(|()| check_queue_user(&cfg)) {
        eprintln!("{program}: {msg}");
        return EXIT_ERROR;
    }
    let lock = match runner::acquire(&cfg) {
        Ok(Ok(l)) => l,
        Ok(Err(pid)) => {
            let pid = pid.map_or(String::new(), |p| format!(", pid {p}"));
            println!(
                "{program}: a queue runner is already running for {}{pid}; nothing to do",
                cfg.source.display()
            );
            return EXIT_OK;
        }
        Err(e) => return early_error(program, "queue runner", &e),
    };
    if args.daemon {
        match daemonize(program) {
            Ok(Detached::Daemon) => {}
            Ok(Detached::Caller) => {
                // The daemon holds the lock now (same open file): the
                // caller must not empty the pid file on its way out.
                std::mem::forget(lock);
                return EXIT_OK;
            }
            Err(code) => return code,
        }
    }
    logging::init(program, cfg.debug, cfg.logfile.as_deref());
    // Only now: the pid of the process that runs (a daemon's changed twice).
    if let Err(e) = lock.record_pid() {
        log::warn!("cannot write this runner's pid into its lock file: {e}");
    }
    let stop = match runner::stop_on_signals() {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install the signal handlers: {e}");
            return EXIT_ERROR;
        }
    };
    log::info!(
        "queue runner started for {} ({}, rounds every queue_wait = {}s while files wait)",
        cfg.source.display(),
        if args.until_empty {
            "until every queue is empty"
        } else {
            "until stopped"
        },
        cfg.queue_wait.as_secs()
    );
    let r = Runner {
        until_empty: args.until_empty,
        stop,
    };
    match r.run(cfg, lock) {
        Ok(End::Empty) => {
            log::info!("every queue is empty; the queue runner exits");
            EXIT_OK
        }
        Ok(End::Stopped) => {
            log::info!("the queue runner stops (signal), between deliveries");
            EXIT_OK
        }
        Err(e) => {
            log::error!("{e}");
            EXIT_ERROR
        }
    }
}

fn daemonize(program: &str) -> Result<Detached, u8> {
    runner::detach().map_err(|e| early_error(program, "cannot detach the queue runner", &e))
}
