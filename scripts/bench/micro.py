"""6. The Rust micro-benchmarks (benches/: codec, place, archive, settings), run by the outer
process with cargo after the inner run, on one of its real WAL segments.
Each bench appends JSON lines to $PITRKIT_BENCH_JSON; they land in
results.json under sections.micro and in the report."""

import json
import os
import subprocess
import time

from .common import log
from .report import report


def run(repo, work, reps):
    """Runs `cargo bench` and adds its results to the inner run's results.
    Returns False if it failed, None if there was nothing to run it on."""
    res_json = os.path.join(work, "results.json")
    if not os.path.exists(res_json):
        return None
    with open(res_json) as f:
        res = json.load(f)
    segs = res.get("segments") or []
    ok = True
    if not segs:
        res["errors"]["micro"] = "no WAL segment to measure (segment generation failed)"
        ok = False
    else:
        # The last of the set: full of pgbench traffic (the first one can be mostly
        # the zeros after the base backup's WAL switch).
        seg = segs[-1]
        out = os.path.join(work, "micro.jsonl")
        env = dict(os.environ, PITRKIT_BENCH_SEGMENT=seg, PITRKIT_BENCH_JSON=out,
                   PITRKIT_BENCH_REPS=str(reps))
        benches = ["--bench", "codec", "--bench", "place", "--bench", "archive", "--bench", "settings"]
        log(f"micro-benchmarks: cargo bench {' '.join(benches)} on {os.path.basename(seg)}")
        t = time.time()
        r = subprocess.run(["cargo", "bench", "--quiet"] + benches, cwd=repo, env=env,
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        rows = [json.loads(x) for x in open(out)] if os.path.exists(out) else []
        res["sections"]["micro"] = {"segment": os.path.basename(seg), "reps": reps, "rows": rows,
                                    "section_s": round(time.time() - t, 1)}
        if r.returncode != 0:
            res["errors"]["micro"] = f"cargo bench exited {r.returncode}: {r.stderr[-2000:]}"
            ok = False
    with open(res_json, "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(work, "results.md"), "w") as f:
        f.write(report(res))
    return ok
