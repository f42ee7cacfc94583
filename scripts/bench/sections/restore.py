"""4. Restore: restore_command per segment (pgBackRest archive-get, pitrkit,
cp), then whole standby recoveries through each restore_command."""

import filecmp
import os
import shutil
import time

from .. import contenders
from ..common import SEG, WAL_NAME, Failed, MiB, free_port, log, lsn, med, rotated, summarize, wal_bytes


def run(ctx):
    w = ctx.wal
    arch = w.arch
    files = sorted(x for x in os.listdir(arch) if x >= w.start_file)
    zarch, zmade = zstd_archive(ctx, files)
    zsize, _, _ = wal_bytes(zarch)
    # pgBackRest repositories holding the same segments.
    repos = {}
    for ct, lvl in (("none", None), ("zst", 1)):
        repo = ctx.pgbr.fresh_repo(f"restore/pgbr-{ct}")
        for x in files:
            if WAL_NAME.match(x):
                ctx.pgbr.run("archive-push", os.path.join(arch, x), repo=repo, extra=ctx.pgbr.compress_args(ct, lvl))
        repos[ct] = repo
    ini_plain = ctx.r.write("restore/plain.ini", f"[DEFAULT]\narchivedir: {arch}\n")
    ini_zst = ctx.r.write("restore/zst.ini", f"[DEFAULT]\narchivedir: {zarch}\n")
    dest_dir = ctx.r.mkdir("restore", "dest")
    cands = contenders.restore(ctx, repos, arch, ini_plain, ini_zst)
    res = {c[0]: {"lat": [], "rep_total": [], "rep_median": [], "rss_kb": [], "errors": []} for c in cands}
    R = ctx.s["reps"]
    active = list(cands)
    for rep in range(R):
        if not active:
            break
        log(f"restore per segment rep {rep + 1}/{R}")
        for name, mk in rotated(active, rep):
            r = res[name]
            lats = []
            for seg in w.segs:
                n = os.path.basename(seg)
                d = os.path.join(dest_dir, "RECOVERYXLOG")
                c = ctx.r.timed(mk(n, d))
                if c.rc != 0 or not os.path.exists(d):
                    r["errors"].append(f"{n}: exit {c.rc}: {c.err.strip()[-400:]}")
                    break
                if rep == 0 and not filecmp.cmp(seg, d, shallow=False):
                    r["errors"].append(f"{n}: restored bytes differ")
                    break
                os.unlink(d)
                lats.append(c.secs)
            if len(lats) != len(w.segs):
                r["na"] = "FAILED: " + r["errors"][-1]
                active = [x for x in active if x[0] != name]
                continue
            r["lat"].extend(lats)
            r["rep_total"].append(sum(lats))
            r["rep_median"].append(med(lats))
    for name, mk in active:
        for seg in w.segs[:3]:
            d = os.path.join(dest_dir, "RECOVERYXLOG")
            rc, kb, _ = ctx.r.rss(mk(os.path.basename(seg), d))
            if rc == 0 and kb:
                res[name]["rss_kb"].append(kb)
            if os.path.exists(d):
                os.unlink(d)
    ref = res[cands[0][0]]
    out = {"segments": len(w.segs), "reps": R, "zstd_archive": {"made_by": zmade, "bytes": zsize},
           "per_segment": {}}
    for name, _ in cands:
        r = res[name]
        o = {}
        if "na" in r:
            o["na"] = r["na"]
        if r["lat"]:
            o.update(summarize(r, ref, w.seg_bytes))
            o["max_rss_kb"] = max(r["rss_kb"]) if r["rss_kb"] else None
        out["per_segment"][name] = o
    pb = res["pgbackrest archive-get (zst-1)"]
    pz = res["pitrkit restore (zstd)"]
    if pb["rep_median"] and pz["rep_median"] and len(pb["rep_median"]) == len(pz["rep_median"]):
        out["per_segment"]["pitrkit restore (zstd)"]["ratio_vs_pgbackrest_zst"] = med(
            [a / b for a, b in zip(pz["rep_median"], pb["rep_median"])])
    out["recovery"] = recovery(ctx, arch, zarch, ini_plain, ini_zst)
    out["steps"] = steps(ctx, arch, ini_plain, dest_dir)
    return out


def zstd_archive(ctx, files):
    """A zstd archive of the recovery range: pitrkit's own when it compresses, else the zstd CLI."""
    arch = ctx.wal.arch
    zarch = ctx.r.fresh_dir("arch_zst")
    if ctx.features["zstd"]["ok"]:
        ini = ctx.pk.archiver_ini("restore/zarch.ini", f"local_archivedirs: {zarch}\n" + ctx.features["zstd"]["lines"])
        ctx.pk.ok("archiver", "-C", ini, "-I")
        for x in files:
            ctx.pk.ok("archiver", "-C", ini, "-F", os.path.join(arch, x))
        return zarch, "pitrkit archiver (compression: zstd, level 1)"
    for x in files:
        ctx.r.run(["zstd", "-1", "-q", "--check", os.path.join(arch, x), "-o", os.path.join(zarch, x + ".zst")])
    return zarch, "zstd -1 CLI (pitrkit archiver has no compression in this build)"


def recovery(ctx, arch, zarch, ini_plain, ini_zst):
    w = ctx.wal
    cands = contenders.recovery(ctx, arch, zarch, ini_plain, ini_zst)
    R = ctx.s["recovery_reps"]
    times = {c[0]: [] for c in cands}
    errors = {}
    replay_bytes = lsn(w.final_lsn) - w.start_lsn
    active = list(cands)
    for rep in range(R):
        if not active:
            break
        log(f"standby recovery rep {rep + 1}/{R}")
        for name, cmd in rotated(active, rep):
            secs, err = recover_once(ctx, cmd, rep)
            if err is not None:
                errors[name] = err
                active = [x for x in active if x[0] != name]
                continue
            times[name].append(secs)
    shutil.rmtree(ctx.r.path("rec"), ignore_errors=True)
    out = {"reps": R, "replay_mb": replay_bytes / MiB, "contenders": {}}
    ref = times["cp"]
    for name, _ in cands:
        t = times[name]
        o = {}
        if name in errors:
            o["na"] = "FAILED: " + errors[name][-300:]
        if t:
            o["median_s"] = med(t)
            o["mb_s"] = replay_bytes / MiB / med(t)
            if len(ref) == len(t):
                o["ratio_vs_cp"] = med([a / b for a, b in zip(t, ref)])
        out["contenders"][name] = o
    return out


def recover_once(ctx, cmd, rep):
    """One recovery of the base backup through `cmd`: (seconds, None) or (None, error text)."""
    w, pg = ctx.wal, ctx.pg
    d = ctx.r.path("rec")
    if os.path.exists(d):
        shutil.rmtree(d)
    shutil.copytree(w.base, d, symlinks=True)
    os.chmod(d, 0o700)
    port = free_port()
    with open(os.path.join(d, "postgresql.conf"), "a") as fh:
        fh.write(f"\n# --- recovery bench ---\nport = {port}\narchive_mode = off\nhot_standby = off\n"
                 f"restore_command = '{cmd}'\nrecovery_target_timeline = 'current'\n")
    open(os.path.join(d, "recovery.signal"), "w").close()
    c = {"data": d, "port": port, "log": ctx.r.path(f"rec-{rep}.log")}
    if os.path.exists(c["log"]):
        os.unlink(c["log"])
    pg.adopt(c)
    # pg_ctl -w returns as soon as recovery starts (hot_standby = off), so
    # the end of recovery is watched in the server log instead: replay of
    # the whole archive, end of archive, promotion, ready for connections.
    t0 = time.perf_counter()
    r = ctx.r.run([f"{pg.pgbin}/pg_ctl", "-D", d, "-l", c["log"], "-W", "start"], check=False)
    secs, logtext = None, ""
    deadline = t0 + 1200
    while r.returncode == 0 and time.perf_counter() < deadline:
        logtext = open(c["log"]).read() if os.path.exists(c["log"]) else ""
        if "database system is ready to accept connections" in logtext:
            secs = time.perf_counter() - t0
            break
        if "database system is shut down" in logtext or " FATAL: " in logtext:
            break
        time.sleep(0.01)
    ok = secs is not None and f'restored log file "{w.last_file}" from archive' in logtext
    if ok:
        end = pg.psql(c, "SELECT pg_current_wal_lsn()")
        ok = lsn(end) >= lsn(w.final_lsn) - SEG
    pg.stop(c, "immediate")
    if not ok:
        return None, (r.stderr + "\n" + logtext)[-1500:]
    return secs, None


def steps(ctx, arch, ini_plain, dest_dir):
    """pitrkit's own step timings (PITRKIT_TIMINGS) of 5 plain restores, its debug log
    and syscall profile next to cp's (evidence-restore-debug.txt)."""
    out = {}
    try:
        dbg = ctx.r.write("restore/debug.ini", f"[DEFAULT]\narchivedir: {arch}\ndebug: on\n")
        d = os.path.join(dest_dir, "RECOVERYXLOG")
        tm = ctx.timings("restore")
        walls = []
        for seg in ctx.wal.segs[:5]:
            c = ctx.r.timed(ctx.pk.argv("restore", "-C", dbg, os.path.basename(seg), d), env_extra=tm.env())
            if c.rc != 0:
                raise Failed(f"pitrkit restore exited {c.rc}: {c.err.strip()[-500:]}")
            walls.append(c.secs)
            os.unlink(d)
        out["pitrkit restore (plain)"] = dict(tm.summary(), wall_ms=med(walls) * 1000)
        text = f"=== pitrkit restore (plain), {walls[-1] * 1000:.1f} ms wall ===\n{c.err}\n"
        if shutil.which("strace"):
            first = os.path.basename(ctx.wal.segs[0])
            for label, argv in (("pitrkit restore (plain)", ctx.pk.argv("restore", "-C", ini_plain, first, d)),
                                ("cp", ["cp", ctx.wal.segs[0], d])):
                ctx.r.run(["strace", "-f", "-c", "-o", ctx.r.path("restore", "strace.txt")] + argv, check=False)
                text += f"=== strace -c {label} ===\n" + open(ctx.r.path("restore", "strace.txt")).read()
                if os.path.exists(d):
                    os.unlink(d)
        with open(ctx.r.path("evidence-restore-debug.txt"), "w") as fh:
            fh.write(text)
    except (Failed, OSError) as e:
        log(f"restore step timings failed: {e}")
        out["error"] = str(e)[-500:]
    return out
