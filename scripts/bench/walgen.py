"""Real WAL for every contender: a throw-away cluster, pgbench -i, a base
backup, then pgbench until there are enough 16 MiB segments. The segments
are copied out of its archive so every contender archives the same bytes."""

import os
import re
import shutil
import time

from .common import SEG, WAL_NAME, Failed, log, lsn


class WalSet:
    """The benchmark segments and the recovery range around them."""

    def __init__(self):
        self.segs = []          # absolute paths of the benchmark segment set
        self.seg_bytes = 0
        self.arch = None        # the generator's archive (plain copies)
        self.base = None        # pg_basebackup -X none of the generator
        self.start_file = None  # first segment the base backup needs
        self.start_lsn = None
        self.final_lsn = None
        self.last_file = None
        self.cluster = None


def make_segments(ctx):
    s, r, pg = ctx.s, ctx.r, ctx.pg
    n = s["segments"]
    w = WalSet()
    log(f"generating real WAL: pgbench -i -s {s['gen_scale']}, base backup, pgbench until {n} segments")
    w.arch = arch = r.mkdir("walarch")
    # pitrkit restore reads this archive too, and answers "not in the archive"
    # (the end of a recovery) only from a marked one: mark it as -I would
    # (empty: unclaimed).
    open(os.path.join(arch, ".pitrkit-system-id"), "w").close()
    g = pg.initdb("gen", "archive_mode = on\n"
                  f"archive_command = 'test ! -f {arch}/%f && cp %p {arch}/%f'\n"
                  "max_wal_size = '2GB'\nsynchronous_commit = off\nwal_keep_size = '4GB'\n")
    w.cluster = g
    pg.start(g)
    pg.pgbench(g, "-i", "-q", "-s", str(s["gen_scale"]))
    w.base = base = r.path("gen_base")
    r.run([f"{pg.pgbin}/pg_basebackup", "-h", pg.sock, "-p", str(g["port"]), "-D", base, "-X", "none",
           "--checkpoint=fast", "--no-sync"])
    label = open(os.path.join(base, "backup_label")).read()
    w.start_file = re.search(r"START WAL LOCATION: \S+ \(file ([0-9A-F]{24})\)", label).group(1)
    w.start_lsn = lsn(re.search(r"START WAL LOCATION: (\S+)", label).group(1))
    while lsn(pg.psql(g, "SELECT pg_current_wal_lsn()")) - w.start_lsn < (n + 1) * SEG:
        pg.pgbench(g, "-n", "-c", "2", "-j", "2", "-T", "5")
    last = pg.psql(g, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    pg.psql(g, "SELECT pg_switch_wal()")
    w.final_lsn = pg.psql(g, "SELECT pg_current_wal_lsn()")
    w.last_file = last
    deadline = time.time() + 300
    while not os.path.exists(os.path.join(arch, last)):
        if time.time() > deadline:
            raise Failed(f"gen cluster did not archive {last}")
        time.sleep(0.2)
    names = sorted(x for x in os.listdir(arch) if WAL_NAME.match(x) and x >= w.start_file)
    segdir = r.mkdir("segs")
    for name in names[:n]:
        shutil.copy(os.path.join(arch, name), os.path.join(segdir, name))
        w.segs.append(os.path.join(segdir, name))
    w.seg_bytes = sum(os.path.getsize(p) for p in w.segs)
    log(f"{len(w.segs)} segments {os.path.basename(w.segs[0])}..{os.path.basename(w.segs[-1])}; "
        f"recovery archive {len(names)} segments up to {last}")
    return w
