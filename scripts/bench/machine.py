"""What the run was measured on: hardware, versions, commit, load."""

import os
import platform
import re
import subprocess
import time

from .common import pg_bindir


def first_line(argv, stderr=False):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        text = (r.stderr if stderr else r.stdout) or r.stdout or r.stderr
        return text.strip().splitlines()[0] if text.strip() else ""
    except Exception as e:  # noqa: BLE001
        return f"({e})"


def machine(repo, binary, work):
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    fs = first_line(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", work])
    osrel = ""
    try:
        osrel = re.search(r'PRETTY_NAME="([^"]*)"', open("/etc/os-release").read()).group(1)
    except Exception:  # noqa: BLE001
        pass
    commit = first_line(["git", "-C", repo, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                           capture_output=True, text=True).stdout.strip()
    bindir = pg_bindir()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "os": osrel,
        "cpu": cpu,
        "work_fs": fs,
        "postgresql": first_line([f"{bindir}/postgres", "--version"]),
        "pgbackrest": first_line(["pgbackrest", "version"]),
        "rsync": first_line(["rsync", "--version"]),
        "ssh": first_line(["ssh", "-V"], stderr=True),
        "python": platform.python_version(),
        "pitrkit": first_line([binary, "--version"]),
        "pitrkit_commit": commit + (" (+uncommitted changes in src)" if dirty else ""),
        "loadavg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
