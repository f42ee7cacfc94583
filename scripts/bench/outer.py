"""The outer process (root or not): work directory, sshd, the inner process
run as the postgres user, the Rust micro-benchmarks, results, cleanup."""

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from . import micro
from .common import log, pg_bindir, settings
from .machine import machine
from .procs import kill_leftovers, other_bench_runs
from .sshd import start_sshd

PACKAGE = os.path.dirname(os.path.abspath(__file__))


def chown_tree(path, uid, gid):
    os.lchown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            os.lchown(os.path.join(root, n), uid, gid)


def bench_user():
    """PostgreSQL and pitrkit refuse root: as root, everything measured runs as postgres."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        sys.exit("bench: running as root but there is no postgres OS user (apt-get install postgresql)")


def wait_for_other_runs():
    # Two runs at once on 2 cores would measure each other: wait for the other one.
    deadline = time.time() + int(os.environ.get("BENCH_WAIT", "1800"))
    while other_bench_runs():
        if time.time() > deadline:
            sys.exit("bench: another benchmark run is still going on this machine; try again later")
        log(f"another benchmark run is in progress (pid {other_bench_runs()}); waiting for it to finish")
        time.sleep(20)


def run_inner(work, pw, as_root):
    """The measuring process, as the bench user, from a copy of this package in the
    work directory (the checkout, e.g. under /root, may be unreadable for postgres)."""
    argv = ["python3", os.path.join(work, "bin", "bench"), "--inner", work]
    env = {k: v for k, v in os.environ.items() if k.startswith("BENCH_") or k == "PITRKIT_PG_BINDIR"}
    env.update({"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C", "HOME": os.path.join(work, "home"),
                "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    if as_root:
        argv = ["runuser", "-u", pw.pw_name, "--"] + argv
    return subprocess.Popen(argv, env=env, cwd=work)


def publish(work, out, quick, t_start):
    """Copies the inner run's results (plus runtime and end load) to `out` and prints the report."""
    res_json = os.path.join(work, "results.json")
    res_md = os.path.join(work, "results.md")
    if not os.path.exists(res_json):
        log("the inner run wrote no results")
        return
    os.makedirs(out, exist_ok=True)
    with open(res_json) as f:
        res = json.load(f)
    res["runtime_seconds"] = round(time.time() - t_start, 1)
    res.setdefault("machine", {})["loadavg_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    res["command"] = " ".join(["scripts/bench.sh"] + (["--quick"] if quick else []))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(out, "machine.json"), "w") as f:
        json.dump(res.get("machine", {}), f, indent=1)
    md = open(res_md).read() if os.path.exists(res_md) else ""
    md += (f"\nTotal runtime: {res['runtime_seconds']:.0f} s ({res['command']}); load average at the end "
           f"{res['machine']['loadavg_at_end']} (a busy machine shows here: other sessions share it).\n")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(md)
    for name in os.listdir(work):
        if name.startswith("evidence-"):
            shutil.copy(os.path.join(work, name), os.path.join(out, name))
    print(md)
    log(f"results: {out}/results.json, {out}/results.md, {out}/machine.json")


def outer(args):
    as_root = os.geteuid() == 0
    pw = bench_user()
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        sys.exit(f"bench: {binary} is not an executable (run scripts/bench.sh, which builds it)")
    repo = os.path.dirname(os.path.dirname(PACKAGE))
    out = os.environ.get("BENCH_OUT", "/tmp/pitrkit-bench")
    s = settings(args.quick)
    wait_for_other_runs()
    work = tempfile.mkdtemp(prefix="pitrkit-bench-work.", dir=os.environ.get("BENCH_TMP", "/tmp"))
    os.chmod(work, 0o755)
    pgbin = pg_bindir()
    sshd = None
    sshinfo = {}
    inner_proc = None
    t_start = time.time()

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    rc = 1
    try:
        os.makedirs(os.path.join(work, "bin"))
        shutil.copy(binary, os.path.join(work, "bin", "pitrkit"))
        shutil.copytree(PACKAGE, os.path.join(work, "bin", "bench"), ignore=shutil.ignore_patterns("__pycache__"))
        os.makedirs(os.path.join(work, "home"))
        if as_root:
            chown_tree(work, pw.pw_uid, pw.pw_gid)
        sshd, sshinfo = start_sshd(work, pw.pw_name, pw.pw_uid, pw.pw_gid, as_root)
        mach = machine(repo, binary, work)
        setup = {"settings": s, "ssh": sshinfo, "pgbin": pgbin, "machine": mach, "user": pw.pw_name,
                 "binary_source": binary}
        with open(os.path.join(work, "setup.json"), "w") as f:
            json.dump(setup, f, indent=1)
        if as_root:
            chown_tree(os.path.join(work, "setup.json"), pw.pw_uid, pw.pw_gid)
        log(f"work dir {work}; sshd on 127.0.0.1:{sshinfo['port']}; sections {','.join(s['sections'])}")
        inner_proc = run_inner(work, pw, as_root)
        rc = inner_proc.wait()
        inner_proc = None
        if "micro" in s["sections"]:
            # After the inner run (nothing else measuring), on one of its real segments.
            if micro.run(repo, work, s["micro_reps"]) is False:
                rc = rc or 1
        publish(work, out, args.quick, t_start)
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    finally:
        if inner_proc is not None and inner_proc.poll() is None:
            inner_proc.terminate()
            try:
                inner_proc.wait(60)
            except subprocess.TimeoutExpired:
                inner_proc.kill()
        kill_leftovers(work, pw.pw_uid, pgbin, as_root, sshd.pid if sshd is not None else None,
                       sshinfo["port"] if sshd is not None else None)
        if sshd is not None:
            sshd.kill()
            sshd.wait()
        if os.environ.get("BENCH_KEEP"):
            log(f"BENCH_KEEP: keeping {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        log(f"done in {time.time() - t_start:.0f} s")
    return rc
