"""The inner process (the postgres user): features, WAL, every section, results."""

import json
import os
import signal
import subprocess
import time
import traceback

from .common import Failed, log
from .context import Context
from .report import report
from .sections import SECTIONS


def inner(work):
    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    ctx = Context(work)
    results = {"settings": ctx.s, "machine": ctx.setup["machine"], "sections": {}, "errors": {}}
    try:
        results["features"] = ctx.detect_features()
        if any(x in ctx.s["sections"] for x in ("local", "ssh", "restore", "s3", "micro")):
            t = time.time()
            ctx.make_segments()
            results["generation_s"] = round(time.time() - t, 1)
            results["segments"] = ctx.wal.segs
        for name, fn in SECTIONS:
            if name not in ctx.s["sections"]:
                continue
            t = time.time()
            try:
                results["sections"][name] = fn(ctx)
                results["sections"][name]["section_s"] = round(time.time() - t, 1)
            except (Failed, OSError, subprocess.SubprocessError, ValueError, AttributeError, KeyError) as e:
                log(f"section {name} failed: {e}")
                results["errors"][name] = traceback.format_exc()[-3000:]
            log(f"section {name}: {time.time() - t:.0f} s")
    except KeyboardInterrupt:
        results["errors"]["interrupted"] = "interrupted"
        raise
    except Failed as e:
        results["errors"]["setup"] = str(e)[-3000:]
        log(f"setup failed: {e}")
    finally:
        ctx.cleanup()
        results["notes"] = ctx.notes
        with open(os.path.join(work, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(work, "results.md"), "w") as f:
            f.write(report(results))
    return 0 if not results["errors"] else 1
