"""Everything the sections share in the inner process: settings, the runner,
the clusters, the contenders' setup, the WAL set, notes; and its cleanup."""

import json
import os
import subprocess

from .clusters import Clusters
from .pgbackrest import PgBackRest
from .pitrkit import Pitrkit
from .runner import Runner
from .timings import Timings
from .walgen import make_segments


class Context:
    def __init__(self, work):
        self.work = work
        with open(os.path.join(work, "setup.json")) as f:
            self.setup = json.load(f)
        self.s = self.setup["settings"]
        self.user = self.setup["user"]
        self.r = Runner(work, self.user)
        self.pg = Clusters(self.r, self.setup["pgbin"])
        self.pk = Pitrkit(self.r, os.path.join(work, "bin", "pitrkit"), self.setup["ssh"], self.user)
        self.features = {}
        self.notes = []
        self.wal = None
        self.pgbr = None

    def detect_features(self):
        self.features = self.pk.detect_features(self.notes)
        return self.features

    def make_segments(self):
        self.wal = make_segments(self)
        self.pgbr = PgBackRest(self.r, self.wal.cluster, self.pg.sock)

    def timings(self, name):
        """A fresh PITRKIT_TIMINGS file in the work directory."""
        return Timings(self.r.path(f"timings-{name}.jsonl"))

    def control_master_dir(self):
        return self.r.mkdir("cm")

    def close_control_masters(self):
        cm = self.r.path("cm")
        if os.path.isdir(cm):
            for p in os.listdir(cm):
                subprocess.run(["ssh", "-o", f"ControlPath={cm}/{p}", "-O", "exit", "127.0.0.1"],
                               capture_output=True, env=self.r.env)

    def cleanup(self):
        self.pg.stop_all()
        self.close_control_masters()
