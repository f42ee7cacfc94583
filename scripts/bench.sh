#!/usr/bin/env bash
# pitrkit benchmark suite (issue 4): pitrkit against the floor (a bare durable
# copy), pgBackRest and pitrtools-style rsync, on real WAL made by pgbench.
# NOT part of the test suite: run it by hand. See BENCHMARKS.md.
#
#   scripts/bench.sh            full run (~10 min on 2 cores)
#   scripts/bench.sh --quick    smaller sizes (~3 min)
#   BENCH_SECTIONS=backup scripts/bench.sh
#                               only the backup/recover comparison with
#                               pgBackRest (issue 10; ~5 min at 1 GB)
#
# BENCH_NO_INCREMENTAL=1 skips the `pitrkit backup --incremental` step (for a
# build without the flag); it is the only way to skip it: otherwise a build
# without the flag shows that step as FAILED in the report.
#
# Sizes and repetitions: BENCH_* environment variables (see scripts/bench/__init__.py
# or BENCHMARKS.md). Results: a markdown table on stdout, and results.json,
# results.md and machine.json in ${BENCH_OUT:-/tmp/pitrkit-bench}.
#
# On a fresh Debian/Ubuntu machine it installs what it needs with apt
# (postgresql, pgbackrest, rsync, openssh, time, zstd), then builds pitrkit
# with `cargo build --release` and benchmarks that binary.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v pgbackrest >/dev/null 2>&1 || need+=(pgbackrest)
[ -x /usr/bin/time ] || need+=(time)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v lz4 >/dev/null 2>&1 || need+=(lz4)
command -v socat >/dev/null 2>&1 || need+=(socat)  # the s3 section's TLS end
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "bench.sh: installing ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "bench.sh: cargo not found; install Rust first: https://rustup.rs, then re-run" >&2
    exit 2
fi

. scripts/lib/moto.sh && install_moto >&2  # the S3 server of the s3 section
echo "bench.sh: cargo build --release" >&2
cargo build --release --quiet
echo "bench.sh: cargo bench --no-run (the micro-benchmarks)" >&2
cargo bench --no-run --quiet
exec python3 scripts/bench --binary "$PWD/target/release/pitrkit" "$@"
