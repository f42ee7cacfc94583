"""1. Archive to a local directory: one call per segment, every contender
(floors, pitrkit per codec, pgBackRest per codec) interleaved per repetition."""

import os
import shutil

from .. import contenders
from ..common import Failed, log, med, rotated, slug, summarize, wal_bytes


def run(ctx):
    f, segs = ctx.features, ctx.wal.segs
    cands = contenders.LOCAL
    res = {c[0]: {"kind": c[1], "lat": [], "rep_total": [], "rep_median": [], "rss_kb": [], "errors": []}
           for c in cands}
    for name, kind, arg in cands:
        if kind == "pitrkit" and not f[arg]["ok"]:
            res[name]["na"] = f"n/a (not in this build: {f[arg]['why']})"
    active = [c for c in cands if "na" not in res[c[0]]]
    R = ctx.s["reps"]
    for rep in range(R):
        if not active:
            break
        log(f"local archive rep {rep + 1}/{R}")
        for name, kind, arg in rotated(active, rep):
            r = res[name]
            sl = slug(name)
            dest, mk = contenders.local_command(ctx, kind, arg, sl, str(rep))
            lats = []
            for seg in segs:
                c = ctx.r.timed(mk(seg))
                if c.rc != 0:
                    r["errors"].append(f"{os.path.basename(seg)}: exit {c.rc}: {c.err.strip()[-500:]}")
                    break
                lats.append(c.secs)
            if len(lats) != len(segs):
                r["na"] = "FAILED: " + r["errors"][-1]
                active = [x for x in active if x[0] != name]
                continue
            r["lat"].extend(lats)
            r["rep_total"].append(sum(lats))
            r["rep_median"].append(med(lats))
            size, suffixes, count = wal_bytes(dest)
            r["size"], r["suffixes"], r["files"] = size, suffixes, count
            shutil.rmtree(dest if kind != "pgbr" else ctx.r.path("local", sl, str(rep)), ignore_errors=True)
    peak_rss(ctx, active, res)
    out = {"segments": len(segs), "raw_bytes": ctx.wal.seg_bytes, "reps": R, "contenders": {}}
    ref = res[cands[0][0]]
    for name, kind, _ in cands:
        r = res[name]
        o = {"kind": kind}
        if "na" in r:
            o["na"] = r["na"]
        if r["lat"]:
            o.update(summarize(r, ref, ctx.wal.seg_bytes))
            o["size_bytes"] = r.get("size")
            o["size_ratio"] = r["size"] / ctx.wal.seg_bytes if r.get("size") else None
            o["suffixes"] = r.get("suffixes")
            o["max_rss_kb"] = max(r["rss_kb"]) if r["rss_kb"] else None
            o["median_rss_kb"] = med(r["rss_kb"]) if r["rss_kb"] else None
        out["contenders"][name] = o
    out["pairs"] = pairs(res)
    out["own"] = own(res)
    out["steps"] = steps(ctx)
    return out


def peak_rss(ctx, active, res):
    """An untimed pass of 3 calls per contender under /usr/bin/time."""
    for name, kind, arg in active:
        sl = slug(name)
        _, mk = contenders.local_command(ctx, kind, arg, sl, "rss")
        for seg in ctx.wal.segs[:3]:
            rc, kb, _ = ctx.r.rss(mk(seg))
            if rc == 0 and kb:
                res[name]["rss_kb"].append(kb)
        shutil.rmtree(ctx.r.path("local", sl), ignore_errors=True)


def pairs(res):
    """pitrkit vs pgBackRest at the same settings, paired per repetition."""
    out = {}
    for pk, pb in contenders.LOCAL_PAIRS:
        a, b = res[pk], res[pb]
        if a["rep_median"] and b["rep_median"] and len(a["rep_median"]) == len(b["rep_median"]):
            out[pk] = {
                "vs": pb,
                "speedup": med([y / x for x, y in zip(a["rep_median"], b["rep_median"])]),
                "size_vs": (a["size"] / b["size"]) if a.get("size") and b.get("size") else None,
            }
    return out


def own(res):
    """Each compressed pitrkit call against pitrkit's own uncompressed call, and
    against the faster durable-copy floor (the moonshot: zstd at most 1.2x the
    uncompressed floor), paired per repetition."""
    base = res.get("pitrkit none", {}).get("rep_median")
    floors = [r["rep_median"] for n, r in res.items() if r["kind"] == "floor" and r["rep_median"]]
    out = {}
    for name, r in res.items():
        a = r["rep_median"]
        if r["kind"] != "pitrkit" or name == "pitrkit none" or not a or not base or len(a) != len(base):
            continue
        o = {"vs_none": med([x / y for x, y in zip(a, base)]),
             "extra_ms": med([(x - y) * 1000 for x, y in zip(a, base)])}
        # The stricter (faster) floor: the larger of the paired ratios.
        vs_floor = [med([x / y for x, y in zip(a, f)]) for f in floors if len(f) == len(a)]
        o["vs_floor"] = max(vs_floor) if vs_floor else None
        out[name] = o
    return out


def steps(ctx):
    """An untimed pass per codec: pitrkit's own step timings (PITRKIT_TIMINGS) over
    5 archive calls, and what the C tools take on the same segments. The debug
    log of the last call goes to evidence-local-debug.txt, for humans."""
    f = ctx.features
    segs = ctx.wal.segs[:5]
    out, text = {}, []
    try:
        for codec, cli in contenders.CODEC_CLIS:
            if not f[codec]["ok"]:
                continue
            dest = ctx.r.fresh_dir("local", "evidence", codec)
            ini = ctx.pk.archiver_ini(f"local/evidence-{codec}.ini",
                                      f"local_archivedirs: {dest}\n" + f[codec]["lines"], debug=True)
            ctx.pk.ok("archiver", "-C", ini, "-I")
            tm = ctx.timings(f"local-{codec}")
            walls, clis, last = [], [], ""
            for seg in segs:
                c = ctx.r.timed(ctx.pk.argv("archiver", "-C", ini, "-F", seg), env_extra=tm.env())
                if c.rc != 0:
                    raise Failed(f"pitrkit archiver ({codec}) exited {c.rc}: {c.err.strip()[-500:]}")
                walls.append(c.secs)
                last = c.err
                if cli and shutil.which(cli[0]):
                    clis.append(ctx.r.timed(["sh", "-c", '"$@" >/dev/null', "sh"] + cli + [seg]).secs)
            o = tm.summary()
            o["wall_ms"] = med(walls) * 1000
            if clis:
                o["cli"] = " ".join(cli)
                o["cli_ms"] = med(clis) * 1000
            out[codec] = o
            text.append(f"=== pitrkit archiver, local, {codec}: median wall {o['wall_ms']:.1f} ms over {len(segs)} "
                        f"segments; steps (PITRKIT_TIMINGS) {o['steps']} ===\n(debug output of the last call)\n{last}")
        with open(ctx.r.path("evidence-local-debug.txt"), "w") as fh:
            fh.write("\n".join(text) + "\n")
    except (Failed, OSError) as e:
        log(f"local step timings failed: {e}")
        out["error"] = str(e)[-500:]
    shutil.rmtree(ctx.r.path("local", "evidence"), ignore_errors=True)
    return out
