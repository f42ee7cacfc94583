//! `pitrkit archiver` / `cmd_archiver`.

use crate::config::ConfigFile;
use std::path::Path;

use super::{early_error, print_warnings, refuse_root, EXIT_ERROR, EXIT_FAILED, EXIT_OK};
use crate::archive::{self, state::Event};
use crate::cli::ArchiverArgs;
use crate::config::ArchiverConfig;
use crate::logging;

pub fn run(program: &str, args: ArchiverArgs) -> u8 {
    let cfg = match ArchiverConfig::load_with_warnings(&args.config) {
        Ok((c, warnings)) => {
            // -C checks, -I and --status; never archive_command (-F) or a
            // cron --flush.
            if args.file.is_none() && !args.flush {
                print_warnings(program, &warnings);
            }
            c
        }
        Err(e) => return early_error(program, "configuration error", &e),
    };
    logging::init(program, cfg.debug, cfg.logfile.as_deref());
    if let Err(msg) = refuse_root(program).and_then(|()| check_queue_user(&cfg)) {
        log::error!("{msg}");
        return EXIT_ERROR;
    }
    if args.init {
        return init(&cfg);
    }
    if args.flush {
        return flush(&cfg);
    }
    if args.status {
        for line in archive::status(&cfg) {
            println!("{line}");
        }
        return EXIT_OK;
    }
    match args.file {
        Some(file) => archive_one(&cfg, &file),
        None => {
            println!("Config OK: {}", cfg.source.display());
            EXIT_OK
        }
    }
}

/// pitrtools refused to run as anyone but queue_user.
pub(super) fn check_queue_user(cfg: &ArchiverConfig) -> Result<(), String> {
    let Some(q) = &cfg.queue_user else {
        return Ok(());
    };
    let me = super::current_user();
    if &me != q {
        return Err(format!(
            "{}: queue_user is '{q}' but the archiver runs as '{me}'; run it as {q} or change queue_user",
            cfg.source.display()
        ));
    }
    Ok(())
}

/// archive_command: one `-F` file.
fn archive_one(cfg: &ArchiverConfig, file: &Path) -> u8 {
    let _t = logging::StepTimer::step("archive call", format!("archive call for {}", file.display()));
    match archive::archive_file(cfg, file) {
        Ok(r) if r.by_lookahead => {
            log::info!("archived {}: already done by an earlier call's look-ahead", r.wal);
            EXIT_OK
        }
        Ok(r) => {
            log::info!("{}", archived_line(&r));
            EXIT_OK
        }
        // Already logged and notified by archive_file.
        Err(_) => EXIT_FAILED,
    }
}

/// "archived X and N more ready file(s) by look-ahead: 1 local archive(s), spooled for a [a: delivered]".
fn archived_line(r: &archive::ArchiveReport) -> String {
    let shipped = r
        .slaves
        .iter()
        .map(|(s, e)| match e {
            Event::Delivered { depth: 0, .. } => format!("{s}: delivered"),
            Event::Delivered { depth, .. } | Event::Skipped { depth } => format!("{s}: {depth} queued"),
            Event::Failed { depth, .. } => format!("{s}: failed, {depth} queued"),
        })
        .collect::<Vec<_>>();
    format!(
        "archived {}{}: {} local archive(s){}{}",
        r.wal,
        if r.lookahead > 0 {
            format!(" and {} more ready file(s) by look-ahead", r.lookahead)
        } else {
            String::new()
        },
        r.local.len(),
        if r.spooled.is_empty() {
            String::new()
        } else {
            format!(", spooled for {}", r.spooled.join(","))
        },
        if shipped.is_empty() {
            String::new()
        } else {
            format!(" [{}]", shipped.join("; "))
        }
    )
}

fn init(cfg: &ArchiverConfig) -> u8 {
    println!("Initializing queues and checking slaves for {}", cfg.source.display());
    let checks = archive::init(cfg);
    let mut ok = true;
    for c in &checks {
        match &c.problem {
            None => println!("  ok      {}", c.what),
            Some(p) => {
                ok = false;
                println!("  FAILED  {}\n          {}", c.what, p.replace('\n', "\n          "));
            }
        }
    }
    if ok {
        println!("Archiver is ready.");
        EXIT_OK
    } else {
        println!("Fix the problems above and run -I again.");
        EXIT_FAILED
    }
}

fn flush(cfg: &ArchiverConfig) -> u8 {
    let (all_empty, results) = archive::flush(cfg);
    for (slave, e) in &results {
        match e {
            Event::Delivered { delivered, depth } => println!("{slave}: delivered {delivered}, {depth} still queued"),
            Event::Failed { error, depth } => println!("{slave}: FAILED, {depth} queued: {error}"),
            Event::Skipped { depth } => println!("{slave}: busy (lock_timeout), {depth} queued"),
        }
    }
    if all_empty {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}
