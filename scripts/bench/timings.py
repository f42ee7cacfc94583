"""pitrkit's own step timings, machine-readable: with PITRKIT_TIMINGS=<file>
every pitrkit process appends one JSON object per finished step,
{"pid": 4242, "step": "durable copy", "detail": "durable copy of X to /dir", "ms": 12.345}
(src/logging.rs, StepTimer). `step` is a stable id; `detail` is the text of
the debug log line, for humans only. The bench never parses pitrkit's log."""

import json
import os

from .common import med

ENV = "PITRKIT_TIMINGS"


class Timings:
    """One timings file, started empty."""

    def __init__(self, path):
        self.path = path
        if os.path.exists(path):
            os.unlink(path)

    def env(self):
        """The environment a pitrkit call needs to write here."""
        return {ENV: self.path}

    def records(self):
        """The records written so far, and how many lines were not JSON objects."""
        recs, bad = [], 0
        if not os.path.exists(self.path):
            return recs, bad
        with open(self.path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    if not isinstance(rec, dict) or not {"pid", "step", "ms"} <= rec.keys():
                        raise ValueError(line)
                    recs.append(rec)
                except ValueError:
                    bad += 1
        return recs, bad

    def summary(self):
        """{"calls": processes seen, "malformed": lines, "steps": {step: {n, median_ms, max_ms}}}."""
        recs, bad = self.records()
        by = {}
        for r in recs:
            by.setdefault(r["step"], []).append(float(r["ms"]))
        return {
            "calls": len({r["pid"] for r in recs}),
            "malformed": bad,
            "steps": {k: {"n": len(v), "median_ms": med(v), "max_ms": max(v)} for k, v in sorted(by.items())},
        }
