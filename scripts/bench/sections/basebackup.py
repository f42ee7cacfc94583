"""5. Base backup: pitrkit -B (fresh, and the re-sync of an unchanged copy)
against pg_basebackup -X none, alternating which goes first."""

import os
import shutil

from .. import contenders
from ..common import MiB, cores_busy, cpu_ticks, du, log, med

FRESH, RESYNC, PGBB = contenders.BASEBACKUP


def run(ctx):
    pg, scale = ctx.pg, ctx.s["bb_scale"]
    c = pg.initdb("bbm", "listen_addresses = '127.0.0.1'\narchive_mode = off\nmax_wal_size = '4GB'\n")
    with open(os.path.join(c["data"], "pg_hba.conf"), "a") as fh:
        fh.write("host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n")
    pg.start(c)
    log(f"base backup: pgbench -i -s {scale}")
    pg.pgbench(c, "-i", "-q", "-s", str(scale))
    pg.psql(c, "CHECKPOINT")
    db_bytes = int(pg.psql(c, "SELECT sum(pg_database_size(oid)) FROM pg_database"))
    archivedir = ctx.r.mkdir("bb", "archive")

    def standby_ini(pgdata, cipher=None):
        ssh = ctx.pk.ssh_ini_lines()
        if cipher:
            ssh = ssh.replace("IdentitiesOnly=yes\n", f"IdentitiesOnly=yes Ciphers={cipher}\n")
        return ctx.r.write("bb/standby.ini", (
            "[DEFAULT]\npgversion: 15\nuse_streaming_replication: no\n"
            f"port: {c['port']}\nmaster_public_ip: 127.0.0.1\nmaster_user: {ctx.user}\nmaster_db: postgres\n"
            f"master_pgdata: {c['data']}\n" + ssh +
            f"rsync_threads: {ctx.s['rsync_threads']}\narchivedir: {archivedir}\npgdata: {pgdata}\n"
            "notify_ok:\nnotify_warning:\nnotify_critical:\nwait_timeout: 600\ndebug: on\n"))

    R = ctx.s["bb_reps"]
    ciphers = [(contenders.bb_cipher(x), contenders.bb_transport(x), x) for x in contenders.BB_CIPHERS]
    t = {name: [] for name in contenders.BASEBACKUP + tuple(n for cc in ciphers for n in cc[:2])}
    busy = {k: [] for k in t}
    errors, sizes, evidence = {}, {}, None
    # pitrkit's own step timings of every -B: one JSON line per step, nothing measurable.
    tm_fresh, tm_resync = ctx.timings("bb-fresh"), ctx.timings("bb-resync")
    for rep in range(R):
        log(f"base backup rep {rep + 1}/{R}")
        order = ["pitrkit", "pgbb"] if rep % 2 == 0 else ["pgbb", "pitrkit"]
        for who in order:
            d = ctx.r.path("bb", "copy")
            if os.path.exists(d):
                shutil.rmtree(d)
            if who == "pitrkit" and FRESH not in errors:
                ini = standby_ini(d)
                ctx.pk.ok("standby", "-C", ini, "-I")
                c0 = cpu_ticks()
                a = ctx.r.timed(ctx.pk.argv("standby", "-C", ini, "-B"), env_extra=tm_fresh.env())
                busy[FRESH].append(cores_busy(c0, cpu_ticks()))
                if a.rc != 0:
                    errors[FRESH] = a.err[-1500:]
                    continue
                b = ctx.r.timed(ctx.pk.argv("standby", "-C", ini, "-B"), env_extra=tm_resync.env())
                if b.rc != 0:
                    errors[RESYNC] = b.err[-1500:]
                else:
                    t[RESYNC].append(b.secs)
                t[FRESH].append(a.secs)
                sizes["pitrkit"] = du(d)
                evidence = {"fresh_stderr": a.err[-6000:], "resync_stderr": b.err[-6000:]}
            elif who == "pgbb":
                c0 = cpu_ticks()
                a = ctx.r.timed([f"{pg.pgbin}/pg_basebackup", "-h", "127.0.0.1", "-p", str(c["port"]),
                                 "-U", ctx.user, "-D", d, "-X", "none", "--checkpoint=fast"])
                busy[PGBB].append(cores_busy(c0, cpu_ticks()))
                if a.rc != 0:
                    errors[PGBB] = a.err[-1500:]
                    continue
                t[PGBB].append(a.secs)
                sizes["pg_basebackup"] = du(d)
        for name, transport, cipher in ciphers[rep % len(ciphers):] + ciphers[:rep % len(ciphers)]:
            d = ctx.r.path("bb", "copy")
            shutil.rmtree(d, ignore_errors=True)
            if name not in errors:
                ini = standby_ini(d, cipher)
                ctx.pk.ok("standby", "-C", ini, "-I")
                c0 = cpu_ticks()
                a = ctx.r.timed(ctx.pk.argv("standby", "-C", ini, "-B"))
                busy[name].append(cores_busy(c0, cpu_ticks()))
                if a.rc != 0:
                    errors[name] = a.err[-1500:]
                else:
                    t[name].append(a.secs)
            if transport not in errors:
                c0 = cpu_ticks()
                a = ctx.r.timed(ctx.pk.ssh_argv(["-c", cipher]) + [
                    f"{ctx.user}@127.0.0.1", "tar", "-C", c["data"], "--exclude=./pg_wal", "-cf", "-", "."])
                busy[transport].append(cores_busy(c0, cpu_ticks()))
                if a.rc != 0:
                    errors[transport] = a.err[-1500:]
                else:
                    t[transport].append(a.secs)
    shutil.rmtree(ctx.r.path("bb", "copy"), ignore_errors=True)
    if evidence:
        with open(ctx.r.path("evidence-basebackup-debug.txt"), "w") as fh:
            fh.write("=== pitrkit standby -B (fresh), debug: on, last repetition ===\n" + evidence["fresh_stderr"]
                     + "\n=== pitrkit standby -B (re-sync) ===\n" + evidence["resync_stderr"])
    pg.stop(c, "fast")
    shutil.rmtree(c["data"], ignore_errors=True)
    out = {"scale": scale, "db_bytes": db_bytes, "reps": R, "copy_bytes": sizes, "contenders": {},
           "steps": {FRESH: tm_fresh.summary(), RESYNC: tm_resync.summary()}}
    ref, fresh = t[PGBB], t[FRESH]
    for name, xs in t.items():
        o = {}
        if name in errors:
            o["na"] = "FAILED: " + errors[name][-400:]
        if xs:
            o["median_s"] = med(xs)
            o["mb_s"] = db_bytes / MiB / med(xs)
            if len(ref) == len(xs):
                o["ratio_vs_pg_basebackup"] = med([a / b for a, b in zip(xs, ref)])
            if busy[name]:
                o["cpu_cores_busy"] = med([b[0] for b in busy[name]])
                o["iowait_cores"] = med([b[1] for b in busy[name]])
            if name == RESYNC and len(fresh) == len(xs):
                o["fraction_of_fresh"] = med([a / b for a, b in zip(xs, fresh)])
        out["contenders"][name] = o
    return out
