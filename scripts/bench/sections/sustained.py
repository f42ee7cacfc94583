"""3. Sustained: PostgreSQL archiving through pitrkit under pgbench; does the
.ready backlog stay bounded, and how long does it take to drain?"""

import os
import re
import shutil
import subprocess
import time

from ..common import SEG, MiB, lsn, log, wal_bytes


def run(ctx):
    f, pg, s = ctx.features, ctx.pg, ctx.s
    codec = "zstd" if f["zstd"]["ok"] else "none"
    archive = ctx.r.mkdir("sus_archive")
    ini = ctx.pk.archiver_ini("susconf/archiver.ini", f"pgdata: {ctx.r.path('sus')}\nlocal_archivedirs: {archive}\n"
                              + f[codec]["lines"])
    ctx.pk.ok("archiver", "-C", ini, "-I")
    c = pg.initdb("sus", "archive_mode = on\n"
                  f"archive_command = '{ctx.pk.bin} archiver -C {ini} -F %p'\n"
                  "max_wal_size = '4GB'\nsynchronous_commit = off\ncheckpoint_timeout = '30s'\n")
    pg.start(c)
    log(f"sustained: pgbench -i -s {s['sustained_scale']}")
    pg.pgbench(c, "-i", "-q", "-s", str(s["sustained_scale"]))
    # Full-page images after every checkpoint are most of a busy server's WAL.
    pg.psql(c, "CHECKPOINT")
    ready_dir = os.path.join(c["data"], "pg_wal", "archive_status")

    def ready():
        return len([x for x in os.listdir(ready_dir) if x.endswith(".ready")])

    def sample():
        row = pg.psql(c, "SELECT pg_current_wal_lsn(), archived_count, failed_count, "
                         "coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        at, arch, failed, _ = row.split("|")
        return {"t": time.perf_counter(), "lsn": lsn(at), "archived": int(arch), "failed": int(failed),
                "ready": ready()}

    deadline = time.time() + 600
    while ready() > 0 and time.time() < deadline:
        time.sleep(0.5)
    secs, clients = s["sustained_secs"], s["sustained_clients"]
    log(f"sustained: pgbench -c {clients} -T {secs} (synchronous_commit=off) with archive_command = pitrkit "
        f"({codec})")
    p = subprocess.Popen(pg.pgbench_argv(c, "-n", "-c", str(clients), "-j", str(clients), "-T", str(secs)),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ctx.r.env, cwd=ctx.work, text=True)
    samples = [sample()]
    while p.poll() is None:
        time.sleep(max(0.0, 1.0 - (time.perf_counter() - samples[-1]["t"])))
        samples.append(sample())
    pgbench_out = p.stdout.read()
    end_run = samples[-1]
    # Drain: how long until every .ready file is archived.
    drain_deadline = time.time() + 600
    while samples[-1]["ready"] > 0 and time.time() < drain_deadline:
        time.sleep(0.5)
        samples.append(sample())
    t0 = samples[0]
    window = end_run["t"] - t0["t"]
    gen_mb = (end_run["lsn"] - t0["lsn"]) / MiB
    arch_mb = (end_run["archived"] - t0["archived"]) * SEG / MiB
    tps = re.search(r"tps = ([0-9.]+)", pgbench_out)
    out = {
        "codec": codec,
        "secs": round(window, 1),
        "clients": clients,
        "scale": s["sustained_scale"],
        "tps": float(tps.group(1)) if tps else None,
        "wal_generated_mb_s": gen_mb / window,
        "archived_mb_s": arch_mb / window,
        "max_ready": max(x["ready"] for x in samples),
        "ready_at_end_of_load": end_run["ready"],
        "drain_s": samples[-1]["t"] - end_run["t"],
        "failed": samples[-1]["failed"] - t0["failed"],
        "archived_segments": samples[-1]["archived"] - t0["archived"],
        "archive_bytes": wal_bytes(archive)[0],
        "ready_series": [x["ready"] for x in samples],
    }
    pg.stop(c, "immediate")
    shutil.rmtree(c["data"], ignore_errors=True)
    shutil.rmtree(archive, ignore_errors=True)
    return out
