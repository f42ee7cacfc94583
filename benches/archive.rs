//! The whole archive call in process (`pitrkit::archive::archive_file`: the
//! header check, the archive mark, compression, the durable placement) of
//! one WAL segment into an empty local archive directory, per codec. With
//! `codec` (compress-only) and `place` (the durable copy alone) it shows
//! where the time of an archive call goes; process start is not included.
//!
//!   cargo bench --bench archive
//!   PITRKIT_BENCH_SEGMENT=... PITRKIT_BENCH_DIR=/mnt/archive cargo bench --bench archive

mod common;

use pitrkit::config::ConfigFile;
use std::path::Path;

use pitrkit::config::{ArchiverConfig, IniFile};

fn main() {
    let inp = common::input();
    // The archiver checks the page header, which the smoke pass's input lacks:
    // a synthetic segment (1 MiB, valid header) stands in under `cargo test`.
    let smoke = (!common::bench_mode()).then(|| {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("000000010000000000000001");
        std::fs::write(&p, pitrkit::testsupport::wal::segment("000000010000000000000001", 42)).unwrap();
        (d, p)
    });
    let input = smoke.as_ref().map_or(inp.path.clone(), |(_, p)| p.clone());
    let reps = inp.reps;
    let raw = std::fs::metadata(&input).unwrap().len();
    let parent = common::dest_parent(&input);
    let name = input.file_name().unwrap().to_str().unwrap().to_string();
    let wal = pitrkit::wal::WalName::parse(&name).unwrap();
    let system = pitrkit::wal::check_segment_file(&input, &wal).unwrap().system_id;
    println!(
        "\nwhole archive call (in process) of {} into {}, median of {reps}\n",
        input.display(),
        parent.display()
    );
    common::table_header();
    for (lines, label) in [
        ("compression: none\n", "none"),
        ("compression: lz4\n", "lz4"),
        ("compression: zstd\ncompression_level: 1\n", "zstd-1"),
    ] {
        let mut size = 0;
        let mut times = Vec::with_capacity(reps);
        for _ in 0..=reps {
            // Each call archives into a fresh, marked directory; making it is not timed.
            let dest = tempfile::tempdir_in(&parent).unwrap();
            pitrkit::archive::sysid::write(dest.path(), Some(system)).unwrap();
            let cfg = config(dest.path(), lines);
            let t = std::time::Instant::now();
            let report = pitrkit::archive::archive_file(&cfg, &input).unwrap();
            times.push(t.elapsed());
            assert_eq!(report.local.len(), 1);
            size = archived_bytes(dest.path());
        }
        times.remove(0); // warm-up
        common::report("archive", label, "pitrkit", raw, Some(size), common::median(times));
    }
}

fn config(dir: &Path, lines: &str) -> ArchiverConfig {
    let text = format!(
        "local_archivedirs: {}\nnotify_ok:\nnotify_warning:\nnotify_critical:\n{lines}",
        dir.display()
    );
    ArchiverConfig::from_ini(&IniFile::parse(&dir.join("bench.ini"), &text).unwrap()).unwrap()
}

/// The archived file's size (its sidecar and the mark aside).
fn archived_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| {
            !e.file_name().to_string_lossy().ends_with(".sum") && !e.file_name().to_string_lossy().ends_with(".ini")
        })
        .map(|e| e.metadata().unwrap().len())
        .sum()
}
