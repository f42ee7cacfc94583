#!/usr/bin/env bash
# Runs pitrkit's whole test suite: unit tests and the integration tests that
# drive a real PostgreSQL server, a private sshd on a loopback port and rsync.
# On a fresh Debian/Ubuntu machine it first installs what those need; a
# missing program is a test failure, never a silent skip.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "test.sh: installing ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo not found; install Rust first: https://rustup.rs (curl ... | sh), then re-run" >&2
    exit 2
fi

# PostgreSQL, sshd and rsync tests wait on I/O more than CPU: a few more
# threads than cores keeps the suite short without overloading 2 cores.
cargo test --all-targets -- --test-threads="${PITRKIT_TEST_THREADS:-3}" "$@"
# Last: the fault suite's short run (TESTING.md), so a regression fails CI.
exec scripts/faults.sh --short
