//! Shared by the micro-benchmarks: the WAL segment they measure, timing and
//! output. They are plain `harness = false` mains (criterion would add a
//! plotting and statistics stack to build on 2 shared cores for five numbers).
//!
//! `cargo bench` passes `--bench`; without it (`cargo test --all-targets`
//! runs bench targets once as tests) each bench only runs a smoke pass on a
//! small synthetic input, so the suite never starts a server or times things.
#![allow(dead_code)]

// The integration-test harness: the same initdb/pg_ctl/runuser setup as the tests.
#[path = "../../tests/common/mod.rs"]
mod harness;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const SEGMENT_ENV: &str = "PITRKIT_BENCH_SEGMENT";

/// True under `cargo bench`, false when `cargo test` runs the target.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Repetitions per measurement (PITRKIT_BENCH_REPS, default 10).
pub fn reps() -> usize {
    std::env::var("PITRKIT_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(10)
}

/// A real 16 MiB WAL segment: $PITRKIT_BENCH_SEGMENT, or one made here with
/// initdb + pgbench through the test harness (kept until the value is dropped).
pub struct Segment {
    pub path: PathBuf,
    _env: Option<harness::TestEnv>,
}

impl Segment {
    pub fn get() -> Segment {
        if let Some(p) = std::env::var_os(SEGMENT_ENV).filter(|v| !v.is_empty()) {
            let path = PathBuf::from(p);
            assert!(path.is_file(), "{SEGMENT_ENV}={} is not a file", path.display());
            return Segment { path, _env: None };
        }
        eprintln!("making a WAL segment with initdb + pgbench (set {SEGMENT_ENV} to use one of yours)");
        let env = harness::TestEnv::new("bench-segment", Path::new(env!("CARGO_BIN_EXE_pitrkit")));
        let pg = harness::PgCluster::init(&env, "gen", "max_wal_size = '1GB'\nsynchronous_commit = off\n");
        pg.start();
        let pgbench = |args: &[&str]| {
            let port = pg.port.to_string();
            let mut cmd = env.command(&harness::client_program("pgbench"));
            cmd.arg("-h")
                .arg(&pg.socket_dir)
                .args(["-p", &port])
                .args(args)
                .arg("postgres");
            harness::run_ok(&mut cmd);
        };
        pgbench(&["-i", "-q", "-s", "5"]);
        // Full-page images after a checkpoint, then OLTP records: what a busy server archives.
        pg.psql("CHECKPOINT");
        pgbench(&["-n", "-c", "2", "-j", "2", "-T", "6"]);
        let current = pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
        let wal = pg.datadir.join("pg_wal");
        let mut done: Vec<String> = fs::read_dir(&wal)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()) && *n < current)
            .collect();
        done.sort();
        let name = done.pop().expect("pgbench wrote at least one full segment");
        let path = env.path(&name);
        fs::copy(wal.join(&name), &path).unwrap();
        pg.stop();
        Segment { path, _env: Some(env) }
    }
}

/// What a micro-benchmark works on: the real segment under `cargo bench`,
/// a small smoke input (one repetition) under `cargo test`.
pub struct Input {
    pub path: PathBuf,
    pub reps: usize,
    _keep: (Option<Segment>, Option<tempfile::TempDir>),
}

pub fn input() -> Input {
    if bench_mode() {
        let seg = Segment::get();
        Input {
            path: seg.path.clone(),
            reps: reps(),
            _keep: (Some(seg), None),
        }
    } else {
        let dir = tempfile::tempdir().unwrap();
        Input {
            path: smoke_input(dir.path()),
            reps: 1,
            _keep: (None, Some(dir)),
        }
    }
}

/// 256 KiB of WAL-like data (records with repeating headers and varied payload)
/// for the smoke pass under `cargo test`.
pub fn smoke_input(dir: &Path) -> PathBuf {
    let mut data = Vec::with_capacity(256 << 10);
    let mut x: u32 = 12345;
    while data.len() < 256 << 10 {
        data.extend_from_slice(b"\x93\xd1\x05\x00\x01\x00\x00\x00");
        for _ in 0..56 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            data.push((x >> 24) as u8 & 0x3f);
        }
    }
    let p = dir.join("000000010000000000000001");
    fs::write(&p, data).unwrap();
    p
}

/// Where destinations go: $PITRKIT_BENCH_DIR, or the segment's directory
/// (the same filesystem: copy_file_range).
pub fn dest_parent(input: &Path) -> PathBuf {
    std::env::var_os("PITRKIT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| input.parent().unwrap().to_path_buf())
}

pub fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// Median wall time of `reps` runs of `f` (one untimed warm-up run first).
pub fn time_it(reps: usize, mut f: impl FnMut()) -> Duration {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

pub fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

/// Median wall time of a program reading `input` and writing to /dev/null
/// (process start included), and the size of its output (one untimed run).
pub fn time_program(reps: usize, argv: &[&str], input: &Path) -> Option<(Duration, u64)> {
    let run = |out: std::process::Stdio| {
        Command::new(argv[0])
            .args(&argv[1..])
            .arg(input)
            .stdout(out)
            .stderr(std::process::Stdio::null())
            .output()
    };
    let size = match run(std::process::Stdio::piped()) {
        Ok(o) if o.status.success() => o.stdout.len() as u64,
        _ => return None,
    };
    let d = time_it(reps, || {
        let null = fs::File::create("/dev/null").unwrap();
        assert!(run(null.into()).unwrap().status.success());
    });
    Some((d, size))
}

/// One result: a line of the table on stdout and, with PITRKIT_BENCH_JSON set,
/// one JSON line appended to that file (scripts/bench reads it).
pub fn report(bench: &str, what: &str, by: &str, input: u64, output: Option<u64>, d: Duration) {
    let ratio = output.map(|o| format!("{:.3}", o as f64 / input as f64));
    println!(
        "| {bench} | {what} | {by} | {:.2} | {:.0} | {} |",
        d.as_secs_f64() * 1000.0,
        mb_s(input, d),
        ratio.as_deref().unwrap_or("–")
    );
    if let Some(file) = std::env::var_os("PITRKIT_BENCH_JSON").filter(|v| !v.is_empty()) {
        let line = format!(
            "{{\"bench\":\"{bench}\",\"what\":\"{what}\",\"by\":\"{by}\",\"ms\":{:.3},\"mb_s\":{:.1},\"size_ratio\":{}}}\n",
            d.as_secs_f64() * 1000.0,
            mb_s(input, d),
            ratio.as_deref().unwrap_or("null")
        );
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .unwrap_or_else(|e| panic!("append to {}: {e}", PathBuf::from(&file).display()));
    }
}

pub fn table_header() {
    println!("| bench | what | by | median ms | MB/s (of input) | size/raw |");
    println!("|---|---|---|---:|---:|---:|");
}
