"""2. Archive over ssh to the loopback sshd: rsync per segment (pitrtools),
one rsync of everything, and pitrkit's shipping modes, interleaved."""

import os
import shutil

from .. import contenders
from ..common import MiB, SEG, WAL_NAME, Failed, cores_busy, cpu_ticks, free_port, log, med, rotated, slug


def run(ctx):
    segs = ctx.wal.segs
    N = len(segs)
    R = ctx.s["reps"]
    cands = contenders.ssh(ctx.features, ctx.control_master_dir())
    res = {c[0]: {"kind": c[1], "lat": [], "rep_total": [], "rep_median": [], "errors": [], "spool": [],
                  "flush": []} for c in cands}
    dead_port = free_port()  # nothing listens there: ssh fails at once
    active = list(cands)
    for rep in range(R):
        if not active:
            break
        log(f"ssh shipping rep {rep + 1}/{R}")
        for name, kind, opts in rotated(active, rep):
            r = res[name]
            sl = slug(name, 40)
            base = ctx.r.fresh_dir("ship", sl, str(rep))
            remote = ctx.r.mkdir("ship", sl, str(rep), "remote")
            lats, total, err = one_rep(ctx, r, kind, opts, sl, rep, remote, dead_port)
            sfx = opts.get("suffix", "")
            got = [x for x in os.listdir(remote) if WAL_NAME.match(x.removesuffix(sfx)) and x.endswith(sfx)]
            if err is None and len(got) != N:
                err = f"remote has {len(got)} of {N} segments after the run"
            if err is None and not sfx:
                bad = [x for x in got if os.path.getsize(os.path.join(remote, x)) != SEG]
                if bad:
                    err = f"remote copies of wrong size: {bad[:3]}"
            if err is not None:
                r["errors"].append(err.strip()[-800:])
                r["na"] = "FAILED: " + err.strip()[-300:]
                active = [x for x in active if x[0] != name]
                continue
            r["lat"].extend(lats)
            r["rep_total"].append(total)
            r["rep_median"].append(med(lats))
            shutil.rmtree(base, ignore_errors=True)
    # Close the ssh control masters the ControlPersist contender started.
    ctx.close_control_masters()
    out = {"segments": N, "raw_bytes": ctx.wal.seg_bytes, "reps": R, "contenders": summary(ctx, cands, res)}
    out["rss"] = flush_rss(ctx, dead_port)
    out["steps"] = steps(ctx, dead_port)
    return out


def one_rep(ctx, r, kind, opts, sl, rep, remote, dead_port):
    """One repetition of one contender: (call latencies, total seconds, error or None)."""
    segs, N, pk = ctx.wal.segs, len(ctx.wal.segs), ctx.pk
    lats, total, err = [], 0.0, None
    if kind == "rsync":
        rsh = " ".join(pk.ssh_argv())
        for seg in segs:
            c = ctx.r.timed(["rsync", "-e", rsh, seg, f"{ctx.user}@127.0.0.1:{remote}/"])
            if c.rc != 0:
                err = c.err
                break
            lats.append(c.secs)
        total = sum(lats)
    elif kind == "rsync1":
        c0 = cpu_ticks()
        c = ctx.r.timed(["rsync", "-e", " ".join(pk.ssh_argv())] + segs + [f"{ctx.user}@127.0.0.1:{remote}/"])
        r.setdefault("busy", []).append(cores_busy(c0, cpu_ticks())[0])
        if c.rc != 0:
            err = c.err
        total = c.secs
    elif kind == "backlog":
        ini = contenders.ship_ini(ctx, sl, rep, "async", opts)
        pk.ok("archiver", "-C", ini, "-I")
        wal = ctx.r.mkdir("ship", sl, str(rep), "pg_wal")
        status = ctx.r.mkdir("ship", sl, str(rep), "pg_wal", "archive_status")
        for seg in segs:
            os.link(seg, os.path.join(wal, os.path.basename(seg)))
            open(os.path.join(status, os.path.basename(seg) + ".ready"), "w").close()
        for seg in segs:
            n = os.path.basename(seg)
            c = ctx.r.timed(pk.argv("archiver", "-C", ini, "-F", os.path.join(wal, n)))
            if c.rc != 0:
                err = c.err
                break
            os.rename(os.path.join(status, n + ".ready"), os.path.join(status, n + ".done"))
            lats.append(c.secs)
        total = sum(lats)
    elif kind in ("sync", "async"):
        ini = contenders.ship_ini(ctx, sl, rep, kind, opts)
        pk.ok("archiver", "-C", ini, "-I")
        for seg in segs:
            c = ctx.r.timed(pk.argv("archiver", "-C", ini, "-F", seg))
            if c.rc != 0:
                err = c.err
                break
            lats.append(c.secs)
        total = sum(lats)
        if kind == "async" and err is None:
            c = ctx.r.timed(pk.argv("archiver", "-C", ini, "--flush"))
            if c.rc != 0:
                err = c.err
            r["flush"].append(c.secs)
            total += c.secs
    else:  # batched: spool-only calls (slave in queue_wait back-off), then one --flush
        ini = contenders.ship_ini(ctx, sl, rep, "batched", opts)
        dead = contenders.ship_ini(ctx, sl, rep, "batched", opts, port=dead_port)
        pk.ok("archiver", "-C", ini, "-I")
        # Untimed priming call through an unreachable port: segment 0 is
        # spooled, the delivery fails, the slave enters queue_wait back-off.
        pk.ok("archiver", "-C", dead, "-F", segs[0])
        for seg in segs[1:]:
            c = ctx.r.timed(pk.argv("archiver", "-C", ini, "-F", seg))
            if c.rc != 0:
                err = c.err
                break
            lats.append(c.secs)
        queued = len([x for x in os.listdir(ctx.r.path("ship", sl, str(rep), "queue", "127.0.0.1"))
                      if WAL_NAME.match(x.removesuffix(opts.get("suffix", "")))])
        if err is None and queued != N:
            err = f"expected {N} queued files before --flush, found {queued} (calls shipped?)"
        if err is None:
            c0 = cpu_ticks()
            c = ctx.r.timed(pk.argv("archiver", "-C", ini, "--flush"))
            r.setdefault("busy", []).append(cores_busy(c0, cpu_ticks())[0])
            if c.rc != 0:
                err = c.err
            r["flush"].append(c.secs)
            r["spool"].append(med(lats))
            # N spool calls (the primed one at the median spool cost) + one flush.
            total = sum(lats) * N / (N - 1) + c.secs
    return lats, total, err


def summary(ctx, cands, res):
    N, nbytes = len(ctx.wal.segs), ctx.wal.seg_bytes
    ref = res[cands[0][0]]
    out = {}
    for name, kind, _ in cands:
        r = res[name]
        o = {"kind": kind}
        if "na" in r:
            o["na"] = r["na"]
        if r["rep_total"]:
            o["mb_s"] = med([nbytes / MiB / t for t in r["rep_total"]])
            o["per_segment_ms"] = med([t / N for t in r["rep_total"]]) * 1000
            o["median_call_ms"] = med(r["lat"]) * 1000 if r["lat"] else None
            if ref["rep_total"] and len(ref["rep_total"]) == len(r["rep_total"]):
                o["throughput_ratio"] = med([a / b for a, b in zip(ref["rep_total"], r["rep_total"])])
            if r["flush"]:
                o["flush_ms"] = med(r["flush"]) * 1000
            if r["spool"]:
                o["spool_call_ms"] = med(r["spool"]) * 1000
            if r.get("busy"):
                o["cpu_cores_busy"] = med(r["busy"])
        out[name] = o
    return out


def queue_everything(ctx, sl, dead_port, debug=False):
    """A batched archiver.ini whose queue holds every segment (spooled through an unreachable port)."""
    ctx.r.fresh_dir("ship", sl, "0")
    ctx.r.mkdir("ship", sl, "0", "remote")
    ini = contenders.ship_ini(ctx, sl, 0, "batched", {}, debug=debug)
    dead = contenders.ship_ini(ctx, sl, 0, "batched", {}, port=dead_port)
    ctx.pk.ok("archiver", "-C", ini, "-I")
    for seg in ctx.wal.segs:
        ctx.pk.ok("archiver", "-C", dead, "-F", seg)
    return ini


def flush_rss(ctx, dead_port):
    """Peak RSS of `--flush` shipping a queue of every segment (untimed run)."""
    try:
        ini = queue_everything(ctx, "rss", dead_port)
        rc, kb, hwm = ctx.r.rss(ctx.pk.argv("archiver", "-C", ini, "--flush"), sample_own=True)
        got = len([x for x in os.listdir(ctx.r.path("ship", "rss", "0", "remote")) if WAL_NAME.match(x)])
        shutil.rmtree(ctx.r.path("ship", "rss"), ignore_errors=True)
        return {"flush_files": len(ctx.wal.segs), "flush_rc": rc, "delivered": got, "flush_tree_max_rss_kb": kb,
                "flush_own_vmhwm_kb": hwm}
    except Failed as e:
        return {"error": str(e)[-500:]}


def steps(ctx, dead_port):
    """pitrkit's own step timings (PITRKIT_TIMINGS) of one sync call and one --flush,
    plus ssh/rsync reference timings; debug logs to evidence-ship-debug.txt."""
    pk, out, text = ctx.pk, {}, []
    try:
        ctx.r.fresh_dir("ship", "dbg", "0")
        ctx.r.mkdir("ship", "dbg", "0", "remote")
        ini = contenders.ship_ini(ctx, "dbg", 0, "sync", {}, debug=True)
        pk.ok("archiver", "-C", ini, "-I")
        tm = ctx.timings("ship-sync")
        c = ctx.r.timed(pk.argv("archiver", "-C", ini, "-F", ctx.wal.segs[0]), env_extra=tm.env())
        out["sync call"] = dict(tm.summary(), wall_ms=c.secs * 1000)
        text.append(f"=== pitrkit archiver -F (ship_mode: sync), {c.secs * 1000:.0f} ms wall ===\n{c.err}")
        ini = queue_everything(ctx, "dbg", dead_port, debug=True)
        tm = ctx.timings("ship-flush")
        c = ctx.r.timed(pk.argv("archiver", "-C", ini, "--flush"), env_extra=tm.env())
        out[f"--flush of {len(ctx.wal.segs)} queued"] = dict(tm.summary(), wall_ms=c.secs * 1000)
        text.append(f"=== pitrkit archiver --flush of {len(ctx.wal.segs)} queued segments, {c.secs * 1000:.0f} ms "
                    f"wall ===\n{c.err}")
        for label, argv in (("ssh true", pk.ssh_argv() + [f"{ctx.user}@127.0.0.1", "true"]),
                            ("one rsync of 1 segment",
                             ["rsync", "-e", " ".join(pk.ssh_argv()), ctx.wal.segs[0],
                              f"{ctx.user}@127.0.0.1:{ctx.r.path('ship', 'dbg', '0', 'remote')}/x"])):
            ts = [ctx.r.timed(argv).secs for _ in range(5)]
            text.append(f"=== {label}: median of 5 {med(ts) * 1000:.0f} ms ===")
        with open(ctx.r.path("evidence-ship-debug.txt"), "w") as fh:
            fh.write("\n".join(text) + "\n")
        shutil.rmtree(ctx.r.path("ship", "dbg"), ignore_errors=True)
    except Failed as e:
        log(f"ship step timings failed: {e}")
        out["error"] = str(e)[-500:]
    return out
