//! Logging: `log` + `simplelog`, one line per event on stderr (PostgreSQL's
//! server log captures archive_command output) and optionally a log file
//! whose name may carry OmniPITR-style `^Y^m^d` date escapes (`%` belongs to
//! PostgreSQL in archive_command lines, hence `^`).
//!
//! Line format: `2026-11-21 05:10:00.123 cmd_archiver[4242] [INFO] message`.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::time::Instant;

use simplelog::{CombinedLogger, ConfigBuilder, LevelFilter, SharedLogger, WriteLogger};

/// Expands `^Y ^m ^d ^H ^M ^S` (and `^^` for a literal caret) with local time.
pub fn expand_date_escapes(pattern: &str, now: chrono::DateTime<chrono::Local>) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '^' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&now.format("%Y").to_string()),
            Some('m') => out.push_str(&now.format("%m").to_string()),
            Some('d') => out.push_str(&now.format("%d").to_string()),
            Some('H') => out.push_str(&now.format("%H").to_string()),
            Some('M') => out.push_str(&now.format("%M").to_string()),
            Some('S') => out.push_str(&now.format("%S").to_string()),
            Some('^') => out.push('^'),
            Some(other) => {
                out.push('^');
                out.push(other);
            }
            None => out.push('^'),
        }
    }
    out
}

/// Sets up the global logger. `program` is the name the user called us by
/// (e.g. `cmd_archiver`). A log file that cannot be opened is reported on
/// stderr and otherwise ignored: logging must never make archiving fail.
pub fn init(program: &str, debug: bool, logfile: Option<&str>) {
    let level = if debug { LevelFilter::Debug } else { LevelFilter::Info };
    let items = line_prefix_format(program, std::process::id());
    let mut builder = ConfigBuilder::new();
    builder
        .set_time_format_custom(items)
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off);
    // Fails only once threads exist; we are called first thing in main.
    let _ = builder.set_time_offset_to_local();
    let config = builder.build();

    let mut loggers: Vec<Box<dyn SharedLogger>> = vec![WriteLogger::new(level, config.clone(), std::io::stderr())];
    if let Some(pattern) = logfile {
        let path = PathBuf::from(expand_date_escapes(pattern, chrono::Local::now()));
        match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(f) => loggers.push(WriteLogger::new(level, config, f)),
            Err(e) => eprintln!(
                "{program}: cannot open logfile {}: {e}; logging to stderr only",
                path.display()
            ),
        }
    }
    let _ = CombinedLogger::init(loggers);
}

/// simplelog prints the time first; "program[pid]" goes right after it as a
/// literal part of the time format (built once per process, hence leaked).
fn line_prefix_format(program: &str, pid: u32) -> &'static [time::format_description::BorrowedFormatItem<'static>] {
    let fmt = format!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3] {}[[{pid}]",
        program.replace('[', "[[")
    );
    let fmt: &'static str = Box::leak(fmt.into_boxed_str());
    let items = time::format_description::parse_borrowed::<1>(fmt).expect("log time format is valid");
    Box::leak(items.into_boxed_slice())
}

/// Logs how long a step took, at debug level, when dropped (`debug: on`).
pub struct StepTimer {
    what: String,
    start: Instant,
}

impl StepTimer {
    pub fn new(what: impl Into<String>) -> Self {
        StepTimer {
            what: what.into(),
            start: Instant::now(),
        }
    }
}

impl Drop for StepTimer {
    fn drop(&mut self) {
        log::debug!(
            "{} took {:.1} ms",
            self.what,
            self.start.elapsed().as_secs_f64() * 1000.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn line_prefix_has_time_program_and_pid() {
        let items = line_prefix_format("cmd_[archiver]", 42);
        let t = time::macros::datetime!(2026-11-21 05:10:00.123 UTC);
        assert_eq!(t.format(items).unwrap(), "2026-11-21 05:10:00.123 cmd_[archiver][42]");
    }

    #[test]
    fn date_escapes() {
        let t = chrono::Local.with_ymd_and_hms(2026, 3, 7, 9, 5, 1).unwrap();
        assert_eq!(
            expand_date_escapes("/var/log/pitr-^Y-^m-^d_^H^M^S.log", t),
            "/var/log/pitr-2026-03-07_090501.log"
        );
        assert_eq!(expand_date_escapes("a^^b^x^", t), "a^b^x^");
    }
}
