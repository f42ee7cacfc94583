"""Constants, settings and small helpers shared by every module."""

import os
import re
import socket
import statistics
import sys
import time

MiB = 1024 * 1024
SEG = 16 * MiB
WAL_NAME = re.compile(r"^[0-9A-F]{24}$")
ALL_SECTIONS = ["local", "ssh", "restore", "sustained", "basebackup", "s3", "backup", "micro"]


class Failed(Exception):
    """A setup or measurement step failed; the message says which command and why."""


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def settings(quick):
    def e(name, full, q, conv=int):
        v = os.environ.get(name)
        return conv(v) if v not in (None, "") else (q if quick else full)

    s = dict(
        quick=quick,
        segments=e("BENCH_SEGMENTS", 16, 5),
        reps=e("BENCH_REPS", 5, 5),
        gen_scale=e("BENCH_GEN_SCALE", 10, 10),
        recovery_reps=e("BENCH_RECOVERY_REPS", 5, 5),
        sustained_secs=e("BENCH_SUSTAINED_SECS", 60, 10),
        sustained_scale=e("BENCH_SUSTAINED_SCALE", 30, 5),
        sustained_clients=e("BENCH_SUSTAINED_CLIENTS", 2, 2),
        bb_scale=e("BENCH_BB_SCALE", 70, 5),
        bb_reps=e("BENCH_BB_REPS", 5, 5),
        rsync_threads=e("BENCH_RSYNC_THREADS", 1, 1),
        backup_scale=e("BENCH_BACKUP_SCALE", 70, 5),
        backup_reps=e("BENCH_BACKUP_REPS", 5, 5),
        backup_pgbr_level=e("BENCH_BACKUP_PGBR_LEVEL", 1, 1),
        micro_reps=e("BENCH_MICRO_REPS", 10, 5),
        sections=[x.strip() for x in e("BENCH_SECTIONS", ",".join(ALL_SECTIONS), ",".join(ALL_SECTIONS), str).split(",") if x.strip()],
    )
    bad = [x for x in s["sections"] if x not in ALL_SECTIONS]
    if bad:
        sys.exit(f"bench: unknown BENCH_SECTIONS entries {bad}; use {','.join(ALL_SECTIONS)}")
    if s["reps"] < 5 or s["recovery_reps"] < 5 or s["bb_reps"] < 5 or s["backup_reps"] < 5:
        log("WARNING: fewer than 5 repetitions; medians and ratios are not trustworthy")
    if s["segments"] < 4:
        sys.exit("bench: BENCH_SEGMENTS must be at least 4")
    return s


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def slug(name, limit=None):
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return s[:limit] if limit else s


def rotated(items, rep):
    """The contenders of repetition `rep`, the starting one rotated."""
    k = rep % len(items)
    return items[k:] + items[:k]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir():
    if os.environ.get("PITRKIT_PG_BINDIR"):
        return os.environ["PITRKIT_PG_BINDIR"]
    cands = []
    for d in os.listdir("/usr/lib/postgresql") if os.path.isdir("/usr/lib/postgresql") else []:
        if d.isdigit() and os.path.exists(f"/usr/lib/postgresql/{d}/bin/initdb"):
            cands.append(int(d))
    if not cands:
        sys.exit("bench: no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql)")
    return f"/usr/lib/postgresql/{max(cands)}/bin"


def lsn(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def cpu_ticks():
    """(busy, iowait, total) jiffies of all CPUs from /proc/stat."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle, iowait = f[3], f[4]
    total = sum(f[:8])
    return total - idle - iowait, iowait, total


def cores_busy(before, after):
    """CPU cores kept busy (user+system) between two cpu_ticks() snapshots, and iowait in cores."""
    ncpu = os.cpu_count() or 1
    dt = max(1, after[2] - before[2])
    return (after[0] - before[0]) / dt * ncpu, (after[1] - before[1]) / dt * ncpu


def summarize(r, ref, nbytes):
    """Median latency, throughput and the ratio to `ref`, paired per repetition."""
    o = {
        "median_ms": med(r["lat"]) * 1000,
        "p90_ms": sorted(r["lat"])[int(0.9 * (len(r["lat"]) - 1))] * 1000,
        "rep_median_ms": [x * 1000 for x in r["rep_median"]],
        "mb_s": med([nbytes / MiB / t for t in r["rep_total"]]),
    }
    if ref is not None and ref["rep_median"] and len(ref["rep_median"]) == len(r["rep_median"]):
        o["ratio"] = med([x / y for x, y in zip(r["rep_median"], ref["rep_median"])])
    return o


def wal_bytes(d):
    """Total size and suffixes of archived WAL files under d (recursive; temp files skipped)."""
    total, suffixes, count = 0, set(), 0
    for root, _, files in os.walk(d):
        for n in files:
            if re.match(r"^[0-9A-F]{24}", n) and not n.startswith("."):
                total += os.path.getsize(os.path.join(root, n))
                count += 1
                suffixes.add(re.sub(r"^[0-9A-F]{24}(-[0-9a-f]{40})?", "", n) or "(plain)")
    return total, sorted(suffixes), count


def du(d):
    total = 0
    for root, _, files in os.walk(d):
        for n in files:
            try:
                total += os.lstat(os.path.join(root, n)).st_size
            except OSError:
                pass
    return total
