//! The durable place of one WAL segment (`fsutil::place_copy`: temp file,
//! copy, fsync, link, fsync of the directory) into an empty directory.
//!
//!   cargo bench --bench place
//!   PITRKIT_BENCH_SEGMENT=... PITRKIT_BENCH_DIR=/mnt/archive cargo bench --bench place
//!
//! PITRKIT_BENCH_DIR is the parent of the destination (default: the
//! segment's directory, i.e. the same filesystem: copy_file_range).

mod common;

use pitrkit::fsutil;

fn main() {
    let inp = common::input();
    let (input, reps) = (inp.path.clone(), inp.reps);
    let raw = std::fs::metadata(&input).unwrap().len();
    let parent = common::dest_parent(&input);
    let dest = tempfile::tempdir_in(&parent).unwrap();
    let name = input.file_name().unwrap().to_str().unwrap().to_string();
    println!(
        "\ndurable place of {} into {}, median of {reps}\n",
        input.display(),
        dest.path().display()
    );
    common::table_header();
    let mut times = Vec::with_capacity(reps);
    for _ in 0..=reps {
        // Each call places into an empty slot; removing the last copy is not timed.
        let _ = std::fs::remove_file(dest.path().join(&name));
        fsutil::fsync_dir(dest.path()).unwrap();
        let t = std::time::Instant::now();
        let placed = fsutil::place_copy(&input, dest.path(), &name, 0o600).unwrap();
        times.push(t.elapsed());
        assert_eq!(placed, fsutil::Placed::Created);
    }
    times.remove(0); // warm-up
    common::report("place", "place_copy", "pitrkit", raw, None, common::median(times));
}
