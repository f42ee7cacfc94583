#!/usr/bin/env bash
# pitrkit's fault suite (issue 7): SIGKILLs at random points of archive, ship
# and restore calls and of the queue runner, a full destination disk (a 20 MB
# tmpfs), sshd killed mid-transfer, and concurrent calls, against a real PostgreSQL's WAL, a
# private sshd on loopback and real rsync. Every figure it prints (segments
# lost, corrupt, half-visible, leftover temporary files, stuck calls, wrong
# exit statuses) must be 0; any other value fails the run with a line naming
# the scenario and the figure. See TESTING.md.
#
#   scripts/faults.sh --short     20 trials per scenario (~1.5 min on 2 cores);
#                                 the last step of scripts/test.sh
#   scripts/faults.sh             full run: 300 per kill scenario, 100 for the others
#   scripts/faults.sh --trials N [--only archive-kill,ship-kill] [--seed S]
#                     [--binary /path/to/pitrkit]   (another build, e.g. a merge candidate)
#
# Results: a markdown table on stdout, and results.jsonl (one JSON object per
# scenario) and results.md in ${FAULTS_OUT:-target/faults}. As root (CI) it
# mounts the tmpfs itself; otherwise it needs sudo without a password.
# Programs it needs are those of scripts/test.sh, which installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "faults.sh: cargo not found; install Rust first: https://rustup.rs, then re-run" >&2
    exit 2
fi
args=("$@")
case " ${args[*]-} " in
    *" --short "* | *" --full "* | *" --trials "*) ;;
    *) args=(--full "${args[@]}") ;;
esac
export FAULTS_OUT="${FAULTS_OUT:-$PWD/target/faults}"
mkdir -p "$FAULTS_OUT"
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
    pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
    echo "postgresql: $("${PITRKIT_PG_BINDIR:-$pgbin}/postgres" --version 2>/dev/null || echo unknown)"
    echo "rsync: $(rsync --version 2>/dev/null | head -1)"
    echo "ssh: $(ssh -V 2>&1)"
    echo "args: ${args[*]}"
} | tee "$FAULTS_OUT/machine.txt"
# Its own main (harness = false), built like the other tests (debug profile).
exec cargo test --quiet --test faults -- "${args[@]}"
