"""The markdown report of a results.json: one table per section, pitrkit's
own step timings (from PITRKIT_TIMINGS), the micro-benchmarks, the targets."""

import os
import statistics

from .common import MiB
from .sections import s3 as s3_section


def fmt(x, spec=".1f", dash="–"):
    return dash if x is None else format(x, spec)


def verdict(ok):
    return "n/a" if ok is None else ("**met**" if ok else "**MISSED**")


def report(res):
    L = []
    m = res.get("machine", {})
    s = res.get("settings", {})
    L.append(f"## pitrkit benchmark — {m.get('date', '')}\n")
    L.append(f"{m.get('pitrkit', '')} (commit {m.get('pitrkit_commit', '')}); "
             f"{m.get('nproc')} cores ({m.get('cpu')}), {m.get('memory')} RAM, {m.get('os')}, kernel {m.get('kernel')}, "
             f"work dir on {m.get('work_fs')}, load average at start {m.get('loadavg_at_start')}; {m.get('postgresql')}, {m.get('pgbackrest')}, {m.get('rsync')}, "
             f"{m.get('ssh')}.\n")
    L.append(f"Settings: {s.get('segments')} real 16 MiB segments from pgbench, {s.get('reps')} interleaved "
             f"repetitions{' (--quick)' if s.get('quick') else ''}. Ratios are medians of per-repetition ratios "
             "(each repetition runs every contender back to back), so they hold even when absolute times drift.\n")
    targets = []
    sec = res.get("sections", {})

    L += local_report(sec.get("local"), targets)
    L += ssh_report(sec.get("ssh"), targets)
    L += sustained_report(sec.get("sustained"), targets)
    L += restore_report(sec.get("restore"), targets)
    L += basebackup_report(sec.get("basebackup"), targets)
    L += s3_section.report(sec.get("s3"))
    rss_targets(sec.get("local"), targets)
    L += steps_report(sec)
    L += micro_report(sec.get("micro"))
    L += backup_report(sec.get("backup"), targets)

    if targets:
        L.append("### Targets (issues 4, 10, 13)\n")
        L.append("| target | measured | result |")
        L.append("|---|---|---|")
        for t, v, ok in targets:
            L.append(f"| {t} | {v} | {verdict(ok)} |")
        L.append("")
    if res.get("notes"):
        L.append("Notes: " + "; ".join(res["notes"]) + "\n")
    if res.get("errors"):
        L.append("### Errors\n")
        for k, v in res["errors"].items():
            L.append(f"- {k}: `{v.strip().splitlines()[-1] if v.strip() else v}`")
        L.append("")
    return "\n".join(L) + "\n"


def table(head, rows):
    """A markdown table, the first column left-aligned, the others right; none without rows."""
    if not rows:
        return []
    return ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)] + \
        ["| " + " | ".join(r) + " |" for r in rows] + [""]


def local_report(loc, targets):
    """1. Archive to a local directory; its targets."""
    if not loc:
        return []
    L = []
    L.append(f"### 1. Archive to a local directory (one call per segment, {loc['segments']} segments × "
             f"{loc['reps']} reps, {loc['raw_bytes'] / MiB:.0f} MiB raw)\n")
    L.append("| contender | median ms/segment | p90 ms | MB/s | time ratio vs floor | size of set | size/raw | max RSS |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, o in loc["contenders"].items():
        if "median_ms" not in o:
            L.append(f"| {name} | {o.get('na', '–')} | | | | | | |")
            continue
        L.append(f"| {name} | {o['median_ms']:.1f} | {o['p90_ms']:.1f} | {o['mb_s']:.0f} | "
                 f"{fmt(o.get('ratio'), '.2f')}x | {o['size_bytes'] / MiB:.1f} MiB | {o['size_ratio']:.3f} | "
                 f"{fmt(o.get('max_rss_kb') and o['max_rss_kb'] / 1024)} MB |")
    L.append("")
    L += table(("pitrkit vs pgBackRest, same settings", "speed-up per segment", "size pitrkit/pgBackRest"),
               [(f"{pk} vs {p['vs']}", f"{p['speedup']:.2f}x", fmt(p['size_vs'], '.3f'))
                for pk, p in (loc.get("pairs") or {}).items()])
    L += table(("pitrkit compressed call", "time vs pitrkit none", "extra ms per segment", "time vs the faster floor"),
               [(pk, f"{o['vs_none']:.2f}x", f"{o['extra_ms']:+.1f}", f"{fmt(o.get('vs_floor'), '.2f')}x")
                for pk, o in (loc.get("own") or {}).items()])
    # The verdict uses the stricter (faster) of the two floors, paired per repetition.
    none = loc["contenders"].get("pitrkit none", {})
    floors = [o for n, o in loc["contenders"].items() if o.get("kind") == "floor" and o.get("rep_median_ms")]
    worst = None
    for fo in floors:
        if none.get("rep_median_ms") and len(fo["rep_median_ms"]) == len(none["rep_median_ms"]):
            r_ = statistics.median([a / b for a, b in zip(none["rep_median_ms"], fo["rep_median_ms"])])
            worst = r_ if worst is None else max(worst, r_)
    targets.append(("uncompressed local archive within 1.1x of the floor (the faster of the two floors)",
                    f"{fmt(worst, '.2f')}x", None if worst is None else worst <= 1.1))
    for pk in ("pitrkit zstd-1", "pitrkit lz4"):
        p = loc.get("pairs", {}).get(pk)
        na = loc["contenders"].get(pk, {}).get("na")
        if p:
            ok = p["speedup"] >= 1.5 and p["size_vs"] is not None and p["size_vs"] <= 1.05
            targets.append((f"{pk[8:]}: ≥1.5x faster than pgBackRest per segment, size within 5%",
                            f"{p['speedup']:.2f}x, size {p['size_vs']:.3f}", ok))
        else:
            targets.append((f"{pk[8:]}: ≥1.5x faster than pgBackRest per segment, size within 5%",
                            na or "not measured", False if na and "not in this build" in na else None))
    z = loc.get("own", {}).get("pitrkit zstd-1", {})
    targets.append(("moonshot (issue 13): zstd-1 call at most 1.2x the uncompressed durable-copy floor",
                    f"{fmt(z.get('vs_floor'), '.2f')}x", None if z.get("vs_floor") is None else z["vs_floor"] <= 1.2))
    return L


def ssh_report(ssh, targets):
    """2. Archive over ssh; the batching targets."""
    if not ssh:
        return []
    L = []
    L.append(f"### 2. Archive over ssh to a loopback sshd ({ssh['segments']} segments × {ssh['reps']} reps)\n")
    L.append("| contender | per segment ms (total/N) | median call ms | MB/s | throughput vs rsync baseline |")
    L.append("|---|---:|---:|---:|---:|")
    for name, o in ssh["contenders"].items():
        if "mb_s" not in o:
            L.append(f"| {name} | {o.get('na', '–')} | | | |")
            continue
        extra = ""
        if "cpu_cores_busy" in o:
            extra = f" ({o['cpu_cores_busy']:.2f} of {os.cpu_count()} cores busy during the transfer)"
        if "flush_ms" in o:
            extra = f" (flush {o['flush_ms']:.0f} ms" + (f", spool call {o['spool_call_ms']:.1f} ms" if "spool_call_ms" in o else "") + (f", {o['cpu_cores_busy']:.2f} cores busy during flush" if "cpu_cores_busy" in o else "") + ")"
        L.append(f"| {name} | {o['per_segment_ms']:.1f}{extra} | {fmt(o.get('median_call_ms'))} | {o['mb_s']:.1f} | "
                 f"{fmt(o.get('throughput_ratio'), '.2f')}x |")
    L.append("")
    rss = ssh.get("rss", {})
    if "flush_own_vmhwm_kb" in rss:
        L.append(f"`--flush` of a {rss['flush_files']}-segment queue: pitrkit's own peak RSS "
                 f"{rss['flush_own_vmhwm_kb'] / 1024:.1f} MB (VmHWM), with its rsync/ssh children "
                 f"{rss['flush_tree_max_rss_kb'] / 1024:.1f} MB (largest process, /usr/bin/time %M).\n")
    blg = ssh["contenders"].get("pitrkit async, PostgreSQL backlog of N .ready (lookahead)", {})
    if blg:
        targets.append(("batched ssh shipping ≥5x one rsync per segment: PostgreSQL backlog, lookahead (as built)",
                        f"{fmt(blg.get('throughput_ratio'), '.2f')}x",
                        None if blg.get("throughput_ratio") is None else blg["throughput_ratio"] >= 5))
    asy = ssh["contenders"].get("pitrkit async calls + --flush", {})
    bat = ssh["contenders"].get("pitrkit spool-only calls + one --flush (batched)", {})
    targets.append(("  same, async calls + --flush without a backlog (one segment per call)",
                    f"{fmt(asy.get('throughput_ratio'), '.2f')}x",
                    None if asy.get("throughput_ratio") is None else asy["throughput_ratio"] >= 5))
    targets.append(("  same, spool-only calls + one --flush (what batching can give)",
                    f"{fmt(bat.get('throughput_ratio'), '.2f')}x",
                    None if bat.get("throughput_ratio") is None else bat["throughput_ratio"] >= 5))
    blz = ssh["contenders"].get("pitrkit batched + slave_compression: lz4", {})
    if blz:
        targets.append(("  same, batched with slave_compression: lz4 (WAL MB/s delivered)",
                        f"{fmt(blz.get('throughput_ratio'), '.2f')}x",
                        None if blz.get("throughput_ratio") is None else blz["throughput_ratio"] >= 5))
    return L


def sustained_report(sus, targets):
    """3. Sustained archiving under pgbench."""
    if not sus:
        return []
    L = []
    L.append(f"### 3. Sustained: archive_command = pitrkit ({sus['codec']}) under pgbench -c {sus['clients']} "
             f"for {sus['secs']:.0f} s (scale {sus['scale']}, synchronous_commit=off, checkpoint_timeout=30s)\n")
    L.append("| WAL generated | WAL archived | tps | max .ready backlog | .ready at end of load | drain time | failed calls |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|")
    L.append(f"| {sus['wal_generated_mb_s']:.1f} MB/s | {sus['archived_mb_s']:.1f} MB/s | {fmt(sus['tps'], '.0f')} | "
             f"{sus['max_ready']} | {sus['ready_at_end_of_load']} | {sus['drain_s']:.1f} s | {sus['failed']} |")
    L.append("")
    return L


def restore_report(rst, targets):
    """4. Restore per segment and standby recovery; its targets."""
    if not rst:
        return []
    L = []
    L.append(f"### 4. Restore (restore_command, one call per segment, {rst['segments']} segments × {rst['reps']} reps)\n")
    L.append(f"zstd archive made by {rst['zstd_archive']['made_by']}.\n")
    L.append("| contender | median ms/segment | p90 ms | MB/s | time ratio vs pgbackrest archive-get (none) | max RSS |")
    L.append("|---|---:|---:|---:|---:|---:|")
    for name, o in rst["per_segment"].items():
        if "median_ms" not in o:
            L.append(f"| {name} | {o.get('na', '–')} | | | | |")
            continue
        L.append(f"| {name} | {o['median_ms']:.1f} | {o['p90_ms']:.1f} | {o['mb_s']:.0f} | {fmt(o.get('ratio'), '.2f')}x | "
                 f"{fmt(o.get('max_rss_kb') and o['max_rss_kb'] / 1024)} MB |")
    L.append("")
    rec = rst.get("recovery", {})
    if rec:
        L.append(f"Recovery of a base backup replaying {rec['replay_mb']:.0f} MiB of WAL from the archive "
                 f"(recovery.signal; from pg_ctl start until the server log says it is ready for connections after the end of the archive; {rec['reps']} reps):\n")
        L.append("| restore_command | median s | replay MB/s | ratio vs cp |")
        L.append("|---|---:|---:|---:|")
        for name, o in rec["contenders"].items():
            if "median_s" not in o:
                L.append(f"| {name} | {o.get('na', '–')} | | |")
                continue
            L.append(f"| {name} | {o['median_s']:.2f} | {o['mb_s']:.0f} | {fmt(o.get('ratio_vs_cp'), '.2f')}x |")
        L.append("")
    pp = rst["per_segment"].get("pitrkit restore (plain)", {})
    pz = rst["per_segment"].get("pitrkit restore (zstd)", {})
    if pp.get("ratio") is not None:
        targets.append(("restore ≥2x faster per segment than pgbackrest archive-get (plain vs none)",
                        f"{1 / pp['ratio']:.2f}x", 1 / pp["ratio"] >= 2))
    if pz.get("ratio_vs_pgbackrest_zst") is not None:
        targets.append(("  same, zstd vs zst-1", f"{1 / pz['ratio_vs_pgbackrest_zst']:.2f}x",
                        1 / pz["ratio_vs_pgbackrest_zst"] >= 2))
    return L


def basebackup_report(bb, targets):
    """5. Base backup; its targets."""
    if not bb:
        return []
    L = []
    L.append(f"### 5. Base backup (pgbench scale {bb['scale']}, {bb['db_bytes'] / MiB:.0f} MiB of databases, "
             f"{bb['reps']} reps)\n")
    L.append("| contender | median s | MB/s | ratio vs pg_basebackup | fraction of a fresh -B | CPU cores busy (of "
             f"{os.cpu_count()}) |")
    L.append("|---|---:|---:|---:|---:|---:|")
    for name, o in bb["contenders"].items():
        if "median_s" not in o:
            L.append(f"| {name} | {o.get('na', '–')} | | | | |")
            continue
        L.append(f"| {name} | {o['median_s']:.2f} | {o['mb_s']:.0f} | {fmt(o.get('ratio_vs_pg_basebackup'), '.2f')}x | "
                 f"{fmt(o.get('fraction_of_fresh'), '.3f')} | {fmt(o.get('cpu_cores_busy'), '.2f')} |")
    L.append("")
    fr = bb["contenders"].get("pitrkit -B (fresh)", {})
    rs = bb["contenders"].get("pitrkit -B (re-sync, unchanged)", {})
    targets.append(("base backup within 1.2x of pg_basebackup", f"{fmt(fr.get('ratio_vs_pg_basebackup'), '.2f')}x",
                    None if fr.get("ratio_vs_pg_basebackup") is None else fr["ratio_vs_pg_basebackup"] <= 1.2))
    targets.append(("re-sync of an unchanged copy under 0.1x of a fresh copy", f"{fmt(rs.get('fraction_of_fresh'), '.3f')}",
                    None if rs.get("fraction_of_fresh") is None else rs["fraction_of_fresh"] < 0.1))
    return L


def backup_report(bk, targets):
    """7. Backup and recover against pgBackRest (issue 10); its targets."""
    if not bk:
        return []
    L = [f"### 7. Backup and recover against pgBackRest (pgbench scale {bk['scale']}, {bk['db_bytes'] / MiB:.0f} MiB "
         f"of databases, {bk['reps']} reps, alternating which side goes first)\n",
         f"pitrkit `backup` with `compression: zstd` at its default level; pgBackRest `backup --type=full "
         f"--start-fast --archive-copy --process-max={bk['cores']}` with compress-type=zst, "
         f"compress-level={bk['pgbr_level']}. Recover and restore write the files of that backup into an empty "
         "directory (`recover --immediate`, `restore --type=immediate`); neither server is started, so "
         "PostgreSQL's replay is not in either time. Spread: fastest and slowest repetition.\n",
         "| contender | median s | spread s | MB/s | ratio | CPU cores busy (of " f"{bk['cores']}) |",
         "|---|---:|---:|---:|---:|---:|"]
    for name, o in bk["contenders"].items():
        if "median_s" not in o:
            L.append(f"| {name} | {o.get('na', '–')} | | | | |")
            continue
        ratio = (f"{o['ratio_vs_pgbackrest']:.2f}x pgBackRest" if o.get("ratio_vs_pgbackrest") is not None
                 else f"{o['fraction_of_full']:.3f} of the full" if o.get("fraction_of_full") is not None else "–")
        L.append(f"| {name} | {o['median_s']:.2f} | {o['min_s']:.2f}–{o['max_s']:.2f} | {o['mb_s']:.0f} | {ratio} | "
                 f"{fmt(o.get('cpu_cores_busy'), '.2f')} |")
    L.append("")
    L += table(("stored", "MiB"), [(k, f"{v / MiB:.2f}") for k, v in bk.get("sizes", {}).items()])
    c = bk["contenders"]

    def target(text, o, key, limit):
        v = (o or {}).get(key)
        targets.append((text, fmt(v, ".2f" if key != "fraction_of_full" else ".3f") + ("x" if v is not None else
                       " " + (o or {}).get("na", "not measured")[:80]), None if v is None else v <= limit))

    target("backup (full, zstd) at most 1.0x pgBackRest backup --type=full", c.get("pitrkit backup (full, zstd)"),
           "ratio_vs_pgbackrest", 1.0)
    target("incremental backup of the unchanged database at most 0.1x the full",
           c.get("pitrkit backup --incremental (unchanged)"), "fraction_of_full", 0.1)
    target("recover (file restore) at most 1.0x pgBackRest restore",
           c.get("pitrkit recover --immediate (files only)"), "ratio_vs_pgbackrest", 1.0)
    r = bk.get("size_ratio")
    targets.append(("backup set size within 5% of pgBackRest's backup (archive-copy=y)", fmt(r, ".3f"),
                    None if r is None else abs(r - 1) <= 0.05))
    return L


def rss_targets(loc, targets):
    """The peak-RSS targets of one archive call."""
    if not loc:
        return
    for pk in ("pitrkit none", "pitrkit zstd-1"):
        o = loc["contenders"].get(pk, {})
        if o.get("max_rss_kb"):
            targets.append((f"one archive call ({pk[8:]}) peak RSS under 20 MB", f"{o['max_rss_kb'] / 1024:.1f} MB",
                            o["max_rss_kb"] / 1024 < 20))
        else:
            targets.append((f"one archive call ({pk[8:]}) peak RSS under 20 MB", o.get("na", "not measured"), None))


def step_ms(o, suffix):
    """Median ms of the step whose id is `suffix` or ends with ' ' + suffix (e.g. 'zstd compression')."""
    for k, v in (o or {}).get("steps", {}).items():
        if k == suffix or k.endswith(" " + suffix):
            return v["median_ms"]
    return None


def steps_report(sec):
    """pitrkit's own step timings, read from the PITRKIT_TIMINGS JSON lines of untimed passes."""
    L = []
    loc = (sec.get("local") or {}).get("steps") or {}
    codecs = [c for c in ("none", "lz4", "zstd", "gzip") if c in loc]
    if codecs:
        L.append("### pitrkit's own steps (PITRKIT_TIMINGS)\n")
        n = loc[codecs[0]].get("calls")
        L.append(f"Local archive, an untimed pass of {n} calls per codec with `debug: on`; medians. "
                 "\"archive call\" is the whole call inside the process; the C tool is the whole process on the "
                 "same segments. Compression runs inside the durable copy of the first destination.\n")
        L.append("| codec | wall ms | archive call ms | header check ms | compression ms | durable copy ms | "
                 "C tool ms | archive call minus uncompressed |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        base = step_ms(loc.get("none"), "archive call")
        for c in codecs:
            o = loc[c]
            call = step_ms(o, "archive call")
            extra = call - base if call is not None and base is not None and c != "none" else None
            L.append(f"| {c} | {fmt(o.get('wall_ms'))} | {fmt(call)} | {fmt(step_ms(o, 'checking the header'))} | "
                     f"{fmt(step_ms(o, 'compression'))} | {fmt(step_ms(o, 'durable copy'))} | "
                     f"{fmt(o.get('cli_ms'))}{' (' + o['cli'] + ')' if o.get('cli') else ''} | "
                     f"{fmt(extra, '+.1f')} |")
        L.append("")
    rows = []
    for name in ("ssh", "restore", "basebackup", "backup"):
        for who, o in ((sec.get(name) or {}).get("steps") or {}).items():
            if who == "error":
                rows.append(f"| {name} | step timings failed: {o} | | | |")
                continue
            for step, v in o.get("steps", {}).items():
                rows.append(f"| {name} | {who} | {step} | {v['n']} | {v['median_ms']:.1f} |")
            if o.get("malformed"):
                rows.append(f"| {name} | {who} | {o['malformed']} malformed lines | | |")
    if "error" in loc:
        rows.insert(0, f"| local | step timings failed: {loc['error']} | | | |")
    if rows:
        if not codecs:
            L.append("### pitrkit's own steps (PITRKIT_TIMINGS)\n")
        L.append("| section | calls | step | times | median ms |")
        L.append("|---|---|---|---:|---:|")
        L += rows
        L.append("")
    return L


def micro_report(mic):
    """The Rust micro-benchmarks (benches/), compress-only and durable place."""
    if not mic:
        return []
    L = [f"### 6. Micro-benchmarks (`cargo bench`, segment {mic['segment']}, median of {mic['reps']})\n",
         "Compress-only: pitrkit in process from the page cache into a sink; the C tools as whole processes "
         "writing to /dev/null. Place: `fsutil::place_copy` into an empty directory on the same filesystem.\n",
         "| bench | what | by | median ms | MB/s | size/raw |", "|---|---|---|---:|---:|---:|"]
    for r in mic["rows"]:
        L.append(f"| {r['bench']} | {r['what']} | {r['by']} | {r['ms']:.2f} | {r['mb_s']:.0f} | "
                 f"{fmt(r.get('size_ratio'), '.3f')} |")
    L.append("")
    return L
