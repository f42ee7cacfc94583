//! The codec settings pitrkit chose, against the alternatives, compress-only
//! on one segment from the page cache into a sink (issue 13's "look at lz4
//! and zstd settings"): lz4 frame block size and block linking, zstd with
//! the content size pledged, in one call on the whole segment, and the
//! read buffer size; plus what reading and checksumming alone cost.
//!
//!   cargo bench --bench settings
//!   PITRKIT_BENCH_SEGMENT=/path/to/000000010000000000000042 cargo bench --bench settings

mod common;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::time::Duration;

use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};

/// Feeds the whole file to `w` in reads of `chunk` bytes; returns the bytes read.
fn pump(path: &std::path::Path, chunk: usize, w: &mut impl Write) -> u64 {
    let mut f = File::open(path).unwrap();
    let mut buf = vec![0u8; chunk];
    let mut total = 0;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return total;
        }
        w.write_all(&buf[..n]).unwrap();
        total += n as u64;
    }
}

/// Counts what goes through.
struct Count(u64);
impl Write for Count {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// This thread's CPU time: on a machine shared with other work, a steadier
/// measure of a compressor than wall time (nothing here waits for I/O: the
/// segment is in the page cache and the output goes nowhere).
fn cpu_now() -> Duration {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Median CPU time of `reps` runs of `f`, after one warm-up run.
fn time_cpu(reps: usize, mut f: impl FnMut()) -> Duration {
    f();
    common::median(
        (0..reps)
            .map(|_| {
                let t = cpu_now();
                f();
                cpu_now() - t
            })
            .collect(),
    )
}

fn main() {
    let inp = common::input();
    let (input, reps) = (inp.path.clone(), inp.reps);
    let raw = fs::metadata(&input).unwrap().len();
    println!(
        "\ncodec settings, compress-only, {} ({raw} bytes), median CPU time of {reps}\n",
        input.display()
    );
    common::table_header();
    let d = time_cpu(reps, || {
        pump(&input, 256 << 10, &mut io::sink());
    });
    common::report("settings", "read only, 256 KiB reads", "-", raw, None, d);
    let d = time_cpu(reps, || {
        pitrkit::integrity::Sum::of_file(&input).unwrap();
    });
    common::report("settings", "CRC-32C of the segment (a .sum)", "-", raw, None, d);
    for (bs, label) in [
        (BlockSize::Max64KB, "64 KiB"),
        (BlockSize::Max256KB, "256 KiB"),
        (BlockSize::Max1MB, "1 MiB"),
        (BlockSize::Max4MB, "4 MiB"),
    ] {
        for mode in [BlockMode::Independent, BlockMode::Linked] {
            let mut size = 0;
            let d = time_cpu(reps, || {
                let info = FrameInfo::new().block_size(bs).block_mode(mode).content_checksum(true);
                let mut enc = FrameEncoder::with_frame_info(info, Count(0));
                pump(&input, 256 << 10, &mut enc);
                size = enc.finish().unwrap().0;
            });
            let what = format!("lz4 frame, {label} blocks, {mode:?}, content checksum");
            common::report("settings", &what, "lz4_flex", raw, Some(size), d);
        }
    }
    for (chunk, pledge) in [(256 << 10, false), (1 << 20, false), (256 << 10, true)] {
        let mut size = 0;
        let d = time_cpu(reps, || {
            let mut enc = zstd::stream::write::Encoder::new(Count(0), 1).unwrap();
            enc.include_checksum(true).unwrap();
            if pledge {
                enc.set_pledged_src_size(Some(raw)).unwrap();
            }
            pump(&input, chunk, &mut enc);
            size = enc.finish().unwrap().0;
        });
        let what = format!(
            "zstd-1 stream, {} KiB reads{}",
            chunk >> 10,
            if pledge { ", size pledged" } else { "" }
        );
        common::report("settings", &what, "zstd", raw, Some(size), d);
    }
    let mut size = 0;
    let d = time_cpu(reps, || {
        let data = fs::read(&input).unwrap();
        let mut c = zstd::bulk::Compressor::new(1).unwrap();
        c.include_checksum(true).unwrap();
        size = c.compress(&data).unwrap().len() as u64;
    });
    common::report(
        "settings",
        "zstd-1 in one call on the whole segment in memory",
        "zstd",
        raw,
        Some(size),
        d,
    );
}
