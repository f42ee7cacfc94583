#!/usr/bin/env bash
# Runs pitrkit's whole test suite: unit tests and the integration tests that
# drive a real PostgreSQL server, a private sshd on a loopback port and rsync.
# On a fresh Debian/Ubuntu machine it first installs what those need; a
# missing program is a test failure, never a silent skip.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/apt.sh
. scripts/lib/moto.sh
need=($(build_needs))
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# The TLS tests make their CA and certificates with the openssl CLI.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The object storage tests run moto_server (PyPI) from a virtualenv.
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
apt_install_missing test.sh "${need[@]}"
install_moto
if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo not found; install Rust first: https://rustup.rs (curl ... | sh), then re-run" >&2
    exit 2
fi

# PostgreSQL, sshd and rsync tests wait on I/O more than CPU: a few more
# threads than cores keeps the suite short without overloading 2 cores.
threads="${PITRKIT_TEST_THREADS:-3}"
cargo test --all-targets -- --test-threads="$threads" "$@"

# Arguments select tests: a developer's run, not the whole suite.
[ $# -eq 0 ] || exit 0

# The fault suite's short run (TESTING.md): kills, a full disk, sshd gone,
# concurrent calls; any loss or leftover fails CI.
scripts/faults.sh --short

# Every supported major end to end: the standby tests (-I, -B under load, -S,
# catch-up from the archive and by streaming, -F999, PITR, failure handling)
# and the backup tests on 12..18. The rest of the suite ran above on the system's major, which is
# skipped here.
system_major=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sed 's#.*/postgresql/\([0-9]*\)/bin#\1#' | sort -n | tail -1)
scripts/pg-versions.sh | while read -r major bindir; do
    [ "$major" = "$system_major" ] && continue
    echo "test.sh: PostgreSQL $major ($bindir)"
    PITRKIT_PG_BINDIR="$bindir" cargo test --test standby -- --test-threads="$threads"
    # Backups and recovery to a point in time on every major. The backup
    # from a standby builds its standby with the system's pg_basebackup,
    # which refuses newer servers: it runs on the system's major above.
    PITRKIT_PG_BINDIR="$bindir" cargo test --test backup -- --test-threads="$threads" \
        --skip backup_taken_on_a_standby
done
