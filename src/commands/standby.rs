//! `pitrkit standby` / `cmd_standby`.

use super::{early_error, refuse_root, EXIT_ERROR, EXIT_FAILED, EXIT_OK};
use crate::cli::{StandbyAction, StandbyArgs};
use crate::config::StandbyConfig;
use crate::logging;
use crate::standby::{basebackup, failover, init, ping, start, Standby};

/// One standby action, run if its flag was given.
type Action<'a> = dyn Fn() -> anyhow::Result<()> + 'a;

pub fn run(program: &str, args: StandbyArgs) -> u8 {
    let cfg = match StandbyConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => return early_error(program, "configuration error", &e),
    };
    if let Some(v) = &args.failover {
        if v != "999" {
            return early_error(
                program,
                "usage",
                &format!(
                    "-F{v} is not a failover: the failover flag is exactly -F999, a safety catch \
                     kept from pitrtools so that a stray -F cannot promote a standby; nothing was done"
                ),
            );
        }
    }
    if args.recover_to_time.is_some() && args.failover.is_none() {
        return early_error(
            program,
            "usage",
            &"-R <timestamp> goes with -F999 (point-in-time recovery ends in a failover)",
        );
    }
    logging::init(program, cfg.debug, cfg.pitrkit_logfile.as_deref());
    if let Err(msg) = refuse_root(program) {
        log::error!("{msg}");
        return EXIT_ERROR;
    }
    if args.action == Some(StandbyAction::StopBasebackup) {
        println!(
            "Nothing to stop: pitrkit takes non-exclusive base backups (the only kind PostgreSQL 15+ has), \
             and a backup ends when the session that started it closes; an interrupted -B has already ended it."
        );
        return EXIT_OK;
    }
    let sb = match Standby::new(&cfg) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e:#}");
            return EXIT_ERROR;
        }
    };
    let mut did = false;
    let mut step = |enabled: bool, name: &str, f: &dyn Fn() -> anyhow::Result<()>| -> Option<u8> {
        if !enabled {
            return None;
        }
        did = true;
        let _t = logging::StepTimer::new(name.to_string());
        match f() {
            Ok(()) => None,
            Err(e) => {
                log::error!("{name} failed: {e:#}");
                Some(EXIT_FAILED)
            }
        }
    };
    let steps: [(bool, &str, &Action); 7] = [
        (args.init, "init (-I)", &|| init::run(&sb)),
        (args.basebackup, "base backup (-B)", &|| basebackup::run(&sb)),
        (args.start_standby, "start standby (-S)", &|| start::start_standby(&sb)),
        (args.failover.is_some(), "failover (-F999)", &|| {
            failover::run(&sb, args.force, args.recover_to_time.as_deref())
        }),
        (args.ping, "ping (-P)", &|| ping::run(&sb)),
        (args.action == Some(StandbyAction::Start), "start (-A start)", &|| {
            start::action_start(&sb)
        }),
        (args.action == Some(StandbyAction::Stop), "stop (-A stop)", &|| {
            start::action_stop(&sb)
        }),
    ];
    for (enabled, name, f) in steps {
        if let Some(code) = step(enabled, name, f) {
            return code;
        }
    }
    if !did {
        println!("Config OK: {}", cfg.source.display());
    }
    EXIT_OK
}
