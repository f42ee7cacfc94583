//! Compress-only speed of pitrkit's codecs (in process, from the page cache
//! into a sink) against the C tools on the same WAL segment (`zstd -1`,
//! `lz4 -1`, `gzip -6`, process start included, output to /dev/null).
//!
//!   cargo bench --bench codec            # makes a segment with initdb + pgbench
//!   PITRKIT_BENCH_SEGMENT=/path/to/000000010000000000000042 cargo bench --bench codec

mod common;

use std::fs::File;
use std::io;

use pitrkit::compress::Codec;

fn main() {
    let inp = common::input();
    let (input, reps) = (inp.path.clone(), inp.reps);
    let raw = std::fs::metadata(&input).unwrap().len();
    println!("\ncompress-only, {} ({raw} bytes), median of {reps}\n", input.display());
    common::table_header();
    for (codec, level, label, cli) in [
        (Codec::Zstd, Some(1), "zstd-1", ["zstd", "-1", "-q", "-c"]),
        (Codec::Lz4, None, "lz4", ["lz4", "-1", "-q", "-c"]),
        (Codec::Gzip, Some(6), "gzip-6", ["gzip", "-6", "-c", "-n"]),
    ] {
        let mut written = 0;
        let d = common::time_it(reps, || {
            let f = File::open(&input).unwrap();
            written = codec.compress(f, io::sink(), level).unwrap().written;
        });
        common::report("codec", label, "pitrkit", raw, Some(written), d);
        if !common::bench_mode() {
            continue;
        }
        match common::time_program(reps, &cli, &input) {
            Some((d, size)) => common::report("codec", label, &cli.join(" "), raw, Some(size), d),
            None => println!(
                "| codec | {label} | {} | not installed (apt-get install zstd lz4 gzip) | | |",
                cli[0]
            ),
        }
    }
}
