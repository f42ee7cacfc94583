"""Running programs in the work directory: checked runs, timed runs, peak RSS."""

import os
import shutil
import subprocess
import tempfile
import time

from .common import Failed


class Call:
    __slots__ = ("secs", "rc", "rss_kb", "err")

    def __init__(self, secs, rc, rss_kb, err):
        self.secs, self.rc, self.rss_kb, self.err = secs, rc, rss_kb, err


class Runner:
    def __init__(self, work, user):
        self.work = work
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": os.path.join(work, "home"),
            "LANG": "C",
            "USER": user,
            "LOGNAME": user,
        }

    # -- paths -------------------------------------------------------------
    def path(self, *rel):
        return os.path.join(self.work, *rel)

    def mkdir(self, *rel):
        p = self.path(*rel)
        os.makedirs(p, exist_ok=True)
        return p

    def fresh_dir(self, *rel):
        p = self.path(*rel)
        if os.path.exists(p):
            shutil.rmtree(p)
        os.makedirs(p)
        return p

    def write(self, rel, text):
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
        return p

    # -- processes -----------------------------------------------------------
    def run(self, argv, check=True, timeout=1800, env_extra=None):
        env = dict(self.env, **(env_extra or {}))
        r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=self.work,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise Failed(f"{' '.join(argv)} exited {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        return r

    def timed(self, argv, env_extra=None):
        """Runs argv once: wall time from fork until reaped, exit status, stderr."""
        env = dict(self.env, **(env_extra or {}))
        errf = tempfile.TemporaryFile(dir=self.work)
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf,
                             env=env, cwd=self.work)
        p.wait()
        secs = time.perf_counter() - t0
        errf.seek(0)
        err = errf.read().decode(errors="replace")
        errf.close()
        return Call(secs, p.returncode, None, err)

    def rss(self, argv, sample_own=False):
        """Peak RSS in KB of argv, untimed, measured by /usr/bin/time -f %M (the
        largest of the process and its children; ru_maxrss of a child forked from
        this Python process would include Python's own pages from before exec).
        With sample_own, argv's own VmHWM is also polled from /proc.
        Returns (exit status, tree max KB, own VmHWM KB or None)."""
        out = os.path.join(self.work, ".rss")
        p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", out] + argv, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env, cwd=self.work)
        hwm = None
        if sample_own:
            hwm = 0
            child = None
            while p.poll() is None:
                try:
                    if child is None:
                        kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
                        child = kids[0] if kids else None
                    if child:
                        for line in open(f"/proc/{child}/status"):
                            if line.startswith("VmHWM:"):
                                hwm = max(hwm, int(line.split()[1]))
                except (OSError, IndexError):
                    pass
                time.sleep(0.001)
        p.wait()
        try:
            kb = int(open(out).read().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            kb = None
        return p.returncode, kb, hwm
