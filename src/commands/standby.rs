//! `pitrkit standby` / `cmd_standby`.

use super::{early_error, print_warnings, refuse_root, EXIT_ERROR, EXIT_FAILED, EXIT_OK};
use crate::cli::{StandbyAction, StandbyArgs};
use crate::config::ConfigFile;
use crate::config::StandbyConfig;
use crate::logging;
use crate::standby::report::{InitReport, PingReport, Report, StandbyStarted};
use crate::standby::{basebackup, failover, init, ping, start, Standby};

/// One standby action, run if its flag was given.
type Action<'a> = dyn Fn() -> anyhow::Result<Report> + 'a;

pub fn run(program: &str, args: StandbyArgs) -> u8 {
    let cfg = match StandbyConfig::load_with_warnings(&args.config) {
        Ok((c, warnings)) => {
            print_warnings(program, &warnings);
            c
        }
        Err(e) => return early_error(program, "configuration error", &e),
    };
    if let Err(msg) = check_usage(&args) {
        return early_error(program, "usage", &msg);
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
    run_actions(&sb, &args)
}

/// Flag combinations refused before anything is done.
fn check_usage(args: &StandbyArgs) -> Result<(), String> {
    if let Some(v) = &args.failover {
        if v != "999" {
            return Err(format!(
                "-F{v} is not a failover: the failover flag is exactly -F999, a safety catch \
                 kept from pitrtools so that a stray -F cannot promote a standby; nothing was done"
            ));
        }
    }
    if args.recover_to_time.is_some() && args.failover.is_none() {
        return Err("-R <timestamp> goes with -F999 (point-in-time recovery ends in a failover)".into());
    }
    // -I, -B, -S and -P build on each other and run in that order; a
    // failover or an -A action changes the server's state and goes alone
    // (pitrtools silently ran only the first flag by its precedence).
    let building = [args.init, args.basebackup, args.start_standby, args.ping];
    let alone = [(args.failover.is_some(), "-F999"), (args.action.is_some(), "-A")];
    let given: Vec<&str> = alone.iter().filter(|(on, _)| *on).map(|(_, f)| *f).collect();
    if let Some(first) = given.first() {
        if given.len() > 1 || building.iter().any(|b| *b) {
            return Err(format!(
                "{first} goes alone: give one of -F999 or -A per command; -I, -B, -S and -P may be combined \
                 and then run in that order; nothing was done"
            ));
        }
    }
    Ok(())
}

/// Runs each action whose flag was given, in a fixed order, and prints its
/// report; stops at the first that fails.
fn run_actions(sb: &Standby, args: &StandbyArgs) -> u8 {
    let steps: [(bool, &str, &Action); 7] = [
        (args.init, "init (-I)", &|| init::run(sb).map(Report::Init)),
        (args.basebackup, "base backup (-B)", &|| {
            basebackup::run(sb).map(Report::BaseBackup)
        }),
        (args.start_standby, "start standby (-S)", &|| {
            start::start_standby(sb).map(Report::StandbyStarted)
        }),
        (args.failover.is_some(), "failover (-F999)", &|| {
            failover::run(sb, args.force, args.recover_to_time.as_deref()).map(Report::Failover)
        }),
        (args.ping, "ping (-P)", &|| ping::run(sb).map(Report::Ping)),
        (args.action == Some(StandbyAction::Start), "start (-A start)", &|| {
            start::action_start(sb)
        }),
        (args.action == Some(StandbyAction::Stop), "stop (-A stop)", &|| {
            start::action_stop(sb)
        }),
    ];
    let mut did = false;
    for (_, name, f) in steps.into_iter().filter(|(enabled, _, _)| *enabled) {
        did = true;
        let _t = logging::StepTimer::new(name.to_string());
        match f() {
            Ok(report) => {
                // Warnings go to the log (stderr, pitrkit_logfile) as well as the DBA's eye.
                for w in warnings(&report) {
                    log::warn!("{w}");
                }
                print!("{}", render(&report))
            }
            Err(e) => {
                log::error!("{name} failed: {e:#}");
                return EXIT_FAILED;
            }
        }
    }
    if !did {
        println!("Config OK: {}", sb.cfg.source.display());
    }
    EXIT_OK
}

/// What a report says is wrong though the action succeeded.
fn warnings(report: &Report) -> &[String] {
    match report {
        Report::StandbyStarted(r) => &r.warnings,
        _ => &[],
    }
}

/// A report as the lines a DBA reads on the terminal.
fn render(report: &Report) -> String {
    match report {
        Report::Init(r) => render_init(r),
        Report::BaseBackup(r) => format!("{}\n", r.summary()),
        Report::StandbyStarted(r) => render_standby(r),
        Report::Failover(r) => r
            .notes()
            .iter()
            .fold(format!("{}\n", r.summary()), |out, n| out + &format!("  {n}\n")),
        Report::Ping(r) => render_ping(r),
        Report::ServerStarted(pgdata) => format!("PostgreSQL started on {}\n", pgdata.display()),
        Report::ServerStopped(pgdata) => format!("PostgreSQL stopped on {}\n", pgdata.display()),
    }
}

fn render_init(r: &InitReport) -> String {
    let mut out = String::new();
    for (what, dir) in &r.created {
        out += &format!("  ok  {what}: {}\n", dir.display());
    }
    out += &format!("  ok  archivedir {}: {}\n", r.archivedir.display(), r.mark);
    out + "Standby is ready for a base backup (-B).\n"
}

fn render_standby(r: &StandbyStarted) -> String {
    format!(
        "standby running on {} (PostgreSQL {}), in recovery: restoring WAL from {}{}\n",
        r.pgdata.display(),
        r.version,
        r.archivedir
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "?".into()),
        if r.streaming {
            " and streaming from the master"
        } else {
            ""
        }
    )
}

fn render_ping(r: &PingReport) -> String {
    let mut out = format!("master {}: {}\n", r.master, r.version);
    out += &format!("  route: {}\n", r.route);
    out += &match &r.tls {
        Some(v) => format!("  TLS: {v} (sslmode {})\n", r.sslmode),
        None => format!("  TLS: off (sslmode {})\n", r.sslmode),
    };
    out += &format!(
        "  role: {}\n",
        if r.in_recovery {
            "in recovery (this is a standby, not a master)"
        } else {
            "primary (accepting writes)"
        }
    );
    out += &format!(
        "  helper functions (sql/pitrkit_helpers.sql): {}\n",
        if r.helpers {
            "installed"
        } else {
            "not installed (built-in functions will be used)"
        }
    );
    out += &match &r.data_directory {
        Ok(d) => format!("  data directory: {}\n", d.display()),
        Err(e) => format!("  data directory: not readable by {}: {e}\n", r.user),
    };
    if let Some((master, standby)) = &r.major_mismatch {
        out += &format!(
            "  WARNING: the master runs PostgreSQL {master} but this standby's binaries are {standby}: a base backup cannot work\n"
        );
    }
    out
}
