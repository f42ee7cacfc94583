#!/usr/bin/env bash
# Quick start: builds pitrkit and runs `pitrkit demo`, a throw-away PostgreSQL
# cluster whose archive_command is cmd_archiver, archiving into a local
# directory. Installs PostgreSQL and OpenSSL's headers first when they are
# missing (Debian/Ubuntu).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/apt.sh
need=($(build_needs))
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    need+=(postgresql)
fi
apt_install_missing demo.sh "${need[@]}"
exec cargo run --quiet --release -- demo "$@"
