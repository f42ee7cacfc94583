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
    // The S3 client's HTTP stack logs every connection at debug level;
    // object_store's own lines (each retry, at info) are kept.
    for noisy in ["hyper", "reqwest", "rustls", "h2", "tower"] {
        builder.add_filter_ignore_str(noisy);
    }
    // Fails only once threads exist; we are called first thing in main.
    let _ = builder.set_time_offset_to_local();
    let config = builder.build();

    let mut loggers: Vec<Box<dyn SharedLogger>> = vec![WriteLogger::new(level, config.clone(), std::io::stderr())];
    if let Some(pattern) = logfile {
        match DatedLog::open(program, pattern) {
            Ok(f) => loggers.push(WriteLogger::new(level, config, f)),
            Err((path, e)) => eprintln!(
                "{program}: cannot open logfile {}: {e}; logging to stderr only",
                path.display()
            ),
        }
    }
    let _ = CombinedLogger::init(loggers);
}

/// The log file, named again from its pattern at every write, so that a
/// process living past midnight (the queue runner, a long `-B`) moves to the
/// next `^Y^m^d` file as a new short-lived call would.
struct DatedLog {
    program: String,
    pattern: String,
    /// What the pattern named at the last check, and the file written to
    /// (the same unless the newer one could not be opened).
    named: PathBuf,
    path: PathBuf,
    file: std::fs::File,
    /// simplelog writes a line in pieces; only switch files between lines.
    at_line_start: bool,
}

impl DatedLog {
    fn open(program: &str, pattern: &str) -> Result<Self, (PathBuf, std::io::Error)> {
        let path = PathBuf::from(expand_date_escapes(pattern, chrono::Local::now()));
        let file = append_to(&path).map_err(|e| (path.clone(), e))?;
        Ok(DatedLog {
            program: program.to_string(),
            pattern: pattern.to_string(),
            named: path.clone(),
            path,
            file,
            at_line_start: true,
        })
    }

    /// Moves to the file the pattern names now; on failure keeps the old one
    /// (a log line in yesterday's file beats a lost one) and says so once.
    fn follow_the_date(&mut self) {
        let now = PathBuf::from(expand_date_escapes(&self.pattern, chrono::Local::now()));
        if now == self.named {
            return;
        }
        match append_to(&now) {
            Ok(f) => {
                self.file = f;
                self.path = now.clone();
            }
            Err(e) => eprintln!(
                "{}: cannot open logfile {}: {e}; still writing to {}",
                self.program,
                now.display(),
                self.path.display()
            ),
        }
        self.named = now;
    }
}

fn append_to(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl std::io::Write for DatedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.at_line_start {
            self.follow_the_date();
        }
        let n = self.file.write(buf)?;
        self.at_line_start = buf[..n].ends_with(b"\n");
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
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

/// Names a file that receives one JSON line per finished [`StepTimer`]
/// (`{"pid":..,"step":"..","detail":"..","ms":..}`), for scripts/bench.
/// Unset or empty: nothing is opened or written.
pub const TIMINGS_ENV: &str = "PITRKIT_TIMINGS";

/// Times a step; when dropped, logs how long it took at debug level
/// (`debug: on`) and appends it to the [`TIMINGS_ENV`] file if that is set.
pub struct StepTimer {
    /// Stable id for machines; `None`: derived from `detail` when needed.
    step: Option<&'static str>,
    /// What the debug log line says, e.g. "durable copy of X to /dir".
    detail: String,
    start: Instant,
}

impl StepTimer {
    /// A step with a stable id (`"durable copy"`) that scripts can key on,
    /// and the human text of the debug line (`"durable copy of X to /dir"`).
    pub fn step(step: &'static str, detail: impl Into<String>) -> Self {
        StepTimer {
            step: Some(step),
            detail: detail.into(),
            start: Instant::now(),
        }
    }

    /// A free-form label; its machine id is [`step_id`] of the label.
    pub fn new(label: impl Into<String>) -> Self {
        StepTimer {
            step: None,
            detail: label.into(),
            start: Instant::now(),
        }
    }

    fn json_line(&self, pid: u32, ms: f64) -> String {
        let step = match self.step {
            Some(s) => s.to_string(),
            None => step_id(&self.detail),
        };
        format!(
            "{{\"pid\":{pid},\"step\":{},\"detail\":{},\"ms\":{ms:.3}}}\n",
            json_string(&step),
            json_string(&self.detail)
        )
    }
}

impl Drop for StepTimer {
    fn drop(&mut self) {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        log::debug!("{} took {ms:.1} ms", self.detail);
        if let Some(path) = timings_file(std::env::var_os(TIMINGS_ENV)) {
            // Timings are a diagnostic: failing to write them must never fail the step.
            if let Err(e) = append_line(&path, &self.json_line(std::process::id(), ms)) {
                log::debug!("cannot append to {TIMINGS_ENV} file {}: {e}", path.display());
            }
        }
    }
}

fn timings_file(var: Option<std::ffi::OsString>) -> Option<PathBuf> {
    var.filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// One write(2) on an O_APPEND descriptor: lines of concurrent processes
/// (PostgreSQL runs several archive calls at once) never interleave.
fn append_line(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    append_to(path)?.write_all(line.as_bytes())
}

/// The stable id of a free-form label: its leading words up to the first
/// that carries data rather than naming the step. A word names the step if
/// it is lower-case letters, digits and '-' with at least one letter and is
/// not a connective (of, to, for, ...). So "durable copy of X to /dir" is
/// "durable copy", "lz4 compression of X" is "lz4 compression", "shipping 3
/// file(s) to s1" is "shipping", "init (-I)" is "init". Prefer
/// [`StepTimer::step`]: rewording a label would change a derived id.
pub fn step_id(label: &str) -> String {
    const CONNECTIVES: [&str; 10] = ["of", "to", "for", "before", "from", "in", "into", "on", "at", "with"];
    let names_step = |w: &&str| {
        w.bytes().any(|b| b.is_ascii_lowercase())
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !CONNECTIVES.contains(w)
    };
    let id: Vec<&str> = label.split_whitespace().take_while(names_step).collect();
    if id.is_empty() {
        "step".to_string()
    } else {
        id.join(" ")
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A process outliving its file's date moves to the new file, and never
    /// splits a line between two files.
    #[test]
    fn a_long_lived_log_follows_the_date_between_lines() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let pattern = format!("{}/log-^H^M^S", dir.path().display());
        let mut log = DatedLog::open("t", &pattern).map_err(|(_, e)| e).unwrap();
        log.write_all(b"first ").unwrap();
        log.write_all(b"line\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        log.write_all(b"second ").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        log.write_all(b"line\n").unwrap();
        let mut files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        files.sort();
        assert_eq!(files, ["first line\n", "second line\n"]);
    }

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

    #[test]
    fn timing_json_line() {
        let t = StepTimer::step("durable copy", "durable copy of \"a\\b\"\nto /d\u{1}");
        assert_eq!(
            t.json_line(42, 12.34567),
            "{\"pid\":42,\"step\":\"durable copy\",\"detail\":\"durable copy of \\\"a\\\\b\\\"\\nto /d\\u0001\",\"ms\":12.346}\n"
        );
        let t = StepTimer::new("zstd compression of 000000010000000000000001");
        assert!(t
            .json_line(1, 0.0)
            .starts_with("{\"pid\":1,\"step\":\"zstd compression\",\"detail\":\"zstd compression of 0000"));
    }

    /// The labels pitrkit's call sites pass to `StepTimer::new` today.
    #[test]
    fn step_ids_of_the_existing_labels() {
        for (label, id) in [
            ("shipping 3 file(s) to standby1", "shipping"),
            ("checking the header of 000000010000000000000001", "checking the header"),
            ("durable copy of 000000010000000000000001 to /a/b", "durable copy"),
            ("lz4 compression of 00000001000000000000000A", "lz4 compression"),
            ("spooling 000000010000000000000001 for 2 slave(s)", "spooling"),
            ("restore of 000000010000000000000001", "restore"),
            ("cleanup before 000000010000000000000001", "cleanup"),
            (
                "archive call for /var/lib/pg_wal/000000010000000000000001",
                "archive call",
            ),
            ("init (-I)", "init"),
            ("base backup (-B)", "base backup"),
            ("failover (-F999)", "failover"),
            ("start standby (-S)", "start standby"),
            ("ping (-P)", "ping"),
            ("start (-A start)", "start"),
            ("stop (-A stop)", "stop"),
            ("PITR", "step"),
        ] {
            assert_eq!(step_id(label), id, "label {label:?}");
        }
    }

    #[test]
    fn timings_file_only_from_a_non_empty_variable() {
        assert_eq!(timings_file(None), None);
        assert_eq!(timings_file(Some("".into())), None);
        assert_eq!(timings_file(Some("/x/t".into())), Some(PathBuf::from("/x/t")));
    }

    /// Run by `timings_written_only_when_the_variable_is_set` in a child
    /// process (the environment is process-wide); on its own it times two
    /// steps, which writes nothing unless PITRKIT_TIMINGS is set.
    #[test]
    fn timings_child() {
        drop(StepTimer::step("durable copy", "durable copy of A to /d"));
        drop(StepTimer::new("restore of B"));
    }

    #[test]
    fn timings_written_only_when_the_variable_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("timings.jsonl");
        let child = |set: bool| {
            let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
            cmd.args(["--exact", "logging::tests::timings_child", "--test-threads=1"])
                .current_dir(dir.path())
                .env_remove(TIMINGS_ENV);
            if set {
                cmd.env(TIMINGS_ENV, &file);
            }
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            out
        };
        child(false);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "written without {TIMINGS_ENV}"
        );
        let out = child(true);
        child(true);
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].contains("\"step\":\"durable copy\",\"detail\":\"durable copy of A to /d\""));
        assert!(lines[1].contains("\"step\":\"restore\",\"detail\":\"restore of B\""));
        assert!(
            lines.iter().all(|l| l.starts_with("{\"pid\":") && l.ends_with('}')),
            "{text}"
        );
        // The filter matched: the child really ran the steps.
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    }
}
