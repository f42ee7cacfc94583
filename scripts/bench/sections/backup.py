"""7. Backup and recover (issue 10): `pitrkit backup` (full, zstd at pitrkit's
default level) against `pgbackrest backup --type=full` (zst at the same level,
process-max = cores, archive-copy=y, start-fast), the incremental of the
unchanged database against the full, `pitrkit recover --immediate` against
`pgbackrest restore` (the file restore only: neither server is started), and
the size of each backup in its repository.

One cluster (pgbench -i -s BENCH_BACKUP_SCALE), archiving every segment to
both sides through one archive_command, so both backups find their WAL.
Each repetition runs both sides back to back, the first one alternating
(A B, B A, ...); ratios are medians of the per-repetition ratios."""

import json
import os
import shutil
import time

from ..common import MiB, cores_busy, cpu_ticks, du, log, med
from ..pgbackrest import PgBackRest

PK_FULL, PK_INCR, PGBR_FULL = "pitrkit backup (full, zstd)", "pitrkit backup --incremental (unchanged)", \
    "pgbackrest backup --type=full (zst)"
PK_RECOVER, PGBR_RESTORE = "pitrkit recover --immediate (files only)", "pgbackrest restore (files only)"
NAMES = (PK_FULL, PK_INCR, PGBR_FULL, PK_RECOVER, PGBR_RESTORE)


def setup(ctx):
    """The cluster, filled with archiving off (1 GB of initial WAL would only
    time the archivers), then restarted archiving to both repositories."""
    pg, scale = ctx.pg, ctx.s["backup_scale"]
    # autovacuum off: "the unchanged database" of the incremental stays unchanged.
    c = pg.initdb("bkdb", "archive_mode = off\nmax_wal_size = '4GB'\nautovacuum = off\n")
    pg.start(c)
    log(f"backup: pgbench -i -s {scale}")
    pg.pgbench(c, "-i", "-q", "-s", str(scale))
    pg.psql(c, "CHECKPOINT")
    loaded = time.time()
    pg.stop(c)
    archive = ctx.r.mkdir("bk", "archive")
    zstd = ctx.features["zstd"]["lines"] if ctx.features["zstd"]["ok"] else ""
    arch_ini = ctx.pk.archiver_ini("bk/archiver.ini", f"local_archivedirs: {archive}\n" + zstd)
    ctx.pk.ok("archiver", "-C", arch_ini, "-I")
    # pgBackRest's configuration and repository paths, for the archive_command before its stanza exists.
    pgbr_conf, pgbr_repo = ctx.r.path("bkpgbr", "pgbackrest.conf"), ctx.r.path("bkpgbr", "template")
    with open(os.path.join(c["data"], "postgresql.conf"), "a") as fh:
        fh.write("archive_mode = on\n"
                 f"archive_command = '{ctx.pk.bin} archiver -C {arch_ini} -F %p && "
                 f"pgbackrest --config={pgbr_conf} --stanza=bench --repo1-path={pgbr_repo} archive-push %p'\n")
    pg.start(c)
    pgbr = PgBackRest(ctx.r, c, pg.sock, home="bkpgbr", extra=(
        f"repo1-retention-full=9999\ncompress-type=zst\ncompress-level={ctx.s['backup_pgbr_level']}\n"))
    assert (pgbr.conf, pgbr.template) == (pgbr_conf, pgbr_repo)
    pgbr.run("check", repo=pgbr.template)
    # An incremental copies again whatever changed within a few seconds (5) of its
    # base's start: let the freshly loaded files age past that, as any real database's have.
    time.sleep(max(0.0, loaded + 10 - time.time()))
    ini = ctx.r.write("bk/backup.ini", (
        "[DEFAULT]\nnotify_ok:\nnotify_warning:\nnotify_critical:\ndebug: off\n"
        f"pgdata: {c['data']}\nport: {c['port']}\nsocket_dir: {pg.sock}\narchivedir: {archive}\n"
        f"backup_dir: {ctx.r.path('bk', 'repo')}\ncompression: zstd\n"))
    return c, pgbr, ini


def pgbr_label(ctx, pgbr):
    r = pgbr.run("info", "--output=json", repo=pgbr.template)
    return json.loads(r.stdout)[0]["backup"][-1]["label"]


def run(ctx):
    c, pgbr, ini = setup(ctx)
    db_bytes = int(ctx.pg.psql(c, "SELECT sum(pg_database_size(oid)) FROM pg_database"))
    ncpu = os.cpu_count() or 1
    R = ctx.s["backup_reps"]
    no_incr = os.environ.get("BENCH_NO_INCREMENTAL") == "1"
    t = {n: [] for n in NAMES}
    busy = {n: [] for n in NAMES}
    errors, sizes = {}, {}
    if no_incr:
        errors[PK_INCR] = "skipped: BENCH_NO_INCREMENTAL=1"
    tm = ctx.timings("backup")

    def timed(name, argv, env_extra=None):
        c0 = cpu_ticks()
        a = ctx.r.timed(argv, env_extra=env_extra)
        busy[name].append(cores_busy(c0, cpu_ticks()))
        if a.rc != 0:
            errors[name] = f"exit {a.rc}: " + a.err[-1500:]
            return False
        t[name].append(a.secs)
        return True

    def pitrkit_side():
        repo = ctx.r.path("bk", "repo")
        shutil.rmtree(repo, ignore_errors=True)
        if PK_FULL in errors or not timed(PK_FULL, ctx.pk.argv("backup", "-C", ini), tm.env()):
            return
        ids = sorted(x for x in os.listdir(repo) if x.endswith("Z"))
        sizes["pitrkit set (data + WAL)"] = du(os.path.join(repo, ids[-1]))
        sizes["pitrkit set WAL"] = du(os.path.join(repo, ids[-1], "wal"))
        if PK_INCR not in errors:
            # Set IDs are UTC seconds: not the second of the full (a wait no real schedule meets).
            time.sleep(1.1)
            timed(PK_INCR, ctx.pk.argv("backup", "-C", ini, "--incremental"), tm.env())

    def pgbr_side():
        if PGBR_FULL in errors:
            return
        if timed(PGBR_FULL, pgbr.argv("backup", "--type=full", "--start-fast", "--archive-copy",
                                      f"--process-max={ncpu}", repo=pgbr.template)):
            label = pgbr_label(ctx, pgbr)
            bdir = os.path.join(pgbr.template, "backup", "bench", label)
            sizes["pgbackrest backup (data + archive-copy WAL)"] = du(bdir)
            sizes["pgbackrest backup WAL"] = du(os.path.join(bdir, "pg_data", "pg_wal"))
            sizes["_pgbr_label"] = label

    def recover_pitrkit():
        d = ctx.r.path("bk", "restored")
        shutil.rmtree(d, ignore_errors=True)
        if PK_RECOVER not in errors and "pitrkit set (data + WAL)" in sizes:
            timed(PK_RECOVER, ctx.pk.argv("recover", "-C", ini, "--immediate", "--to", d), tm.env())
        shutil.rmtree(d, ignore_errors=True)

    def recover_pgbr():
        d = ctx.r.path("bk", "restored")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d, mode=0o700)
        if PGBR_RESTORE not in errors and "_pgbr_label" in sizes:
            timed(PGBR_RESTORE, pgbr.argv("restore", f"--set={sizes['_pgbr_label']}", f"--pg1-path={d}",
                                          "--type=immediate", f"--process-max={ncpu}", repo=pgbr.template))
        shutil.rmtree(d, ignore_errors=True)

    for rep in range(R):
        log(f"backup rep {rep + 1}/{R}")
        first = rep % 2 == 0
        for side in ((pitrkit_side, pgbr_side) if first else (pgbr_side, pitrkit_side)):
            side()
        for side in ((recover_pitrkit, recover_pgbr) if first else (recover_pgbr, recover_pitrkit)):
            side()
    ctx.pg.stop(c, "fast")
    if not os.environ.get("BENCH_KEEP"):
        for p in (c["data"], ctx.r.path("bk"), ctx.r.path("bkpgbr")):
            shutil.rmtree(p, ignore_errors=True)
    return summarize(ctx, t, busy, errors, sizes, db_bytes, R, tm)


def paired(xs, ys):
    return med([a / b for a, b in zip(xs, ys)]) if xs and len(xs) == len(ys) else None


def summarize(ctx, t, busy, errors, sizes, db_bytes, R, tm):
    out = {"scale": ctx.s["backup_scale"], "db_bytes": db_bytes, "reps": R, "cores": os.cpu_count(),
           "pgbr_level": ctx.s["backup_pgbr_level"], "sizes": {k: v for k, v in sizes.items() if k[0] != "_"},
           "contenders": {}, "steps": {"pitrkit backup/recover": tm.summary()}}
    refs = {PK_FULL: t[PGBR_FULL], PK_RECOVER: t[PGBR_RESTORE]}
    for name, xs in t.items():
        o = {}
        if name in errors:
            o["na"] = ("FAILED: " if not errors[name].startswith("skipped") else "") + errors[name][-400:]
        if xs:
            o.update(median_s=med(xs), min_s=min(xs), max_s=max(xs), times_s=xs, mb_s=db_bytes / MiB / med(xs))
            if name in refs:
                o["ratio_vs_pgbackrest"] = paired(xs, refs[name])
            if name == PK_INCR:
                o["fraction_of_full"] = paired(xs, t[PK_FULL])
            if busy[name]:
                o["cpu_cores_busy"] = med([b[0] for b in busy[name]])
        out["contenders"][name] = o
    pk, pb = sizes.get("pitrkit set (data + WAL)"), sizes.get("pgbackrest backup (data + archive-copy WAL)")
    out["size_ratio"] = pk / pb if pk and pb else None
    return out
