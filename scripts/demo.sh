#!/usr/bin/env bash
# Quick start: builds pitrkit and runs `pitrkit demo`, a throw-away PostgreSQL
# cluster whose archive_command is cmd_archiver, archiving into a local
# directory. Installs PostgreSQL first when it is missing (Debian/Ubuntu).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "demo.sh: installing postgresql" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
exec cargo run --quiet --release -- demo "$@"
