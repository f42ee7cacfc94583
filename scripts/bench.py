#!/usr/bin/env python3
"""pitrkit benchmark suite (issue 4). Run it through scripts/bench.sh.

Compares, in ONE run and interleaved (round-robin over the contenders in every
repetition, starting contender rotated), pitrkit against:
  1. local archive:  a bare durable copy (dd conv=fsync + mv + sync DIR: the
                     floor) and `pgbackrest archive-push` (none/lz4/zst/gz);
  2. ssh shipping:   one `rsync -e ssh` per segment (pitrtools' way);
  3. sustained load: PostgreSQL archiving through pitrkit under pgbench;
  4. restore:        `pgbackrest archive-get` and `cp`, per segment and as
                     the restore_command of a recovering standby;
  5. base backup:    `pg_basebackup -X none --checkpoint=fast`, and the
                     re-sync of an unchanged copy;
  6. peak RSS of one archive call and of `--flush`.
Every input is real WAL made by pgbench in a throw-away cluster.

Structure: as root, the outer process makes the work directory (owned by
postgres), starts a private sshd on 127.0.0.1 and runs the inner process as
`postgres` (PostgreSQL and pitrkit refuse root), so no timed call goes through
runuser. The outer process always cleans up: it stops whatever postmaster,
sshd or ssh control master is left in the work directory and removes it.

Settings (environment, full / --quick defaults):
  BENCH_SEGMENTS        WAL segments per set                  16 / 5
  BENCH_REPS            repetitions (interleaved)              5 / 5
  BENCH_GEN_SCALE       pgbench scale of the WAL generator     10 / 10
  BENCH_RECOVERY_REPS   standby recoveries per contender       5 / 5
  BENCH_SUSTAINED_SECS  pgbench -T under archive_command       60 / 10
  BENCH_SUSTAINED_SCALE pgbench scale for the sustained test   30 / 5
  BENCH_SUSTAINED_CLIENTS pgbench -c                            2 / 2
  BENCH_BB_SCALE        pgbench scale of the base backup db    70 / 5
  BENCH_BB_REPS         base backup repetitions                 5 / 5
  BENCH_RSYNC_THREADS   standby.ini rsync_threads for -B        1 / 1
  BENCH_SECTIONS        comma list: local,ssh,restore,sustained,basebackup
  BENCH_OUT             results directory        /tmp/pitrkit-bench
  BENCH_TMP             parent of the work directory          /tmp
  BENCH_KEEP=1          keep the work directory (post-mortems)
  BENCH_WAIT            seconds to wait for another run to finish  1800
"""

import argparse
import filecmp
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

MiB = 1024 * 1024
SEG = 16 * MiB
WAL_NAME = re.compile(r"^[0-9A-F]{24}$")
ALL_SECTIONS = ["local", "ssh", "restore", "sustained", "basebackup"]


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def settings(quick):
    def e(name, full, q, conv=int):
        v = os.environ.get(name)
        return conv(v) if v not in (None, "") else (q if quick else full)

    s = dict(
        quick=quick,
        segments=e("BENCH_SEGMENTS", 16, 5),
        reps=e("BENCH_REPS", 5, 5),
        gen_scale=e("BENCH_GEN_SCALE", 10, 10),
        recovery_reps=e("BENCH_RECOVERY_REPS", 5, 5),
        sustained_secs=e("BENCH_SUSTAINED_SECS", 60, 10),
        sustained_scale=e("BENCH_SUSTAINED_SCALE", 30, 5),
        sustained_clients=e("BENCH_SUSTAINED_CLIENTS", 2, 2),
        bb_scale=e("BENCH_BB_SCALE", 70, 5),
        bb_reps=e("BENCH_BB_REPS", 5, 5),
        rsync_threads=e("BENCH_RSYNC_THREADS", 1, 1),
        sections=[x.strip() for x in e("BENCH_SECTIONS", ",".join(ALL_SECTIONS), ",".join(ALL_SECTIONS), str).split(",") if x.strip()],
    )
    bad = [x for x in s["sections"] if x not in ALL_SECTIONS]
    if bad:
        sys.exit(f"bench: unknown BENCH_SECTIONS entries {bad}; use {','.join(ALL_SECTIONS)}")
    if s["reps"] < 5 or s["recovery_reps"] < 5 or s["bb_reps"] < 5:
        log("WARNING: fewer than 5 repetitions; medians and ratios are not trustworthy")
    if s["segments"] < 4:
        sys.exit("bench: BENCH_SEGMENTS must be at least 4")
    return s


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir():
    if os.environ.get("PITRKIT_PG_BINDIR"):
        return os.environ["PITRKIT_PG_BINDIR"]
    cands = []
    for d in os.listdir("/usr/lib/postgresql") if os.path.isdir("/usr/lib/postgresql") else []:
        if d.isdigit() and os.path.exists(f"/usr/lib/postgresql/{d}/bin/initdb"):
            cands.append(int(d))
    if not cands:
        sys.exit("bench: no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql)")
    return f"/usr/lib/postgresql/{max(cands)}/bin"


def first_line(argv, stderr=False):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        text = (r.stderr if stderr else r.stdout) or r.stdout or r.stderr
        return text.strip().splitlines()[0] if text.strip() else ""
    except Exception as e:  # noqa: BLE001
        return f"({e})"


def machine(repo, binary, work):
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    fs = first_line(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", work])
    osrel = ""
    try:
        osrel = re.search(r'PRETTY_NAME="([^"]*)"', open("/etc/os-release").read()).group(1)
    except Exception:  # noqa: BLE001
        pass
    commit = first_line(["git", "-C", repo, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                           capture_output=True, text=True).stdout.strip()
    bindir = pg_bindir()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "os": osrel,
        "cpu": cpu,
        "work_fs": fs,
        "postgresql": first_line([f"{bindir}/postgres", "--version"]),
        "pgbackrest": first_line(["pgbackrest", "version"]),
        "rsync": first_line(["rsync", "--version"]),
        "ssh": first_line(["ssh", "-V"], stderr=True),
        "python": platform.python_version(),
        "pitrkit": first_line([binary, "--version"]),
        "pitrkit_commit": commit + (" (+uncommitted changes in src)" if dirty else ""),
        "loadavg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# ---------------------------------------------------------------------------
# Outer process (root or not): work dir, sshd, inner process, cleanup
# ---------------------------------------------------------------------------

def chown_tree(path, uid, gid):
    os.lchown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            os.lchown(os.path.join(root, n), uid, gid)


def start_sshd(work, user, uid, gid, as_root):
    d = os.path.join(work, "ssh")
    os.makedirs(d, exist_ok=True)
    host_key = os.path.join(d, "host_ed25519_key")
    ident = os.path.join(d, "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench-host", "-f", host_key], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench-client", "-f", ident], check=True)
    port = free_port()
    with open(host_key + ".pub") as f:
        host_pub = f.read().strip()
    kh = os.path.join(d, "known_hosts")
    with open(kh, "w") as f:
        f.write(f"[127.0.0.1]:{port} {host_pub}\n")
    ak = os.path.join(d, "authorized_keys")
    shutil.copy(ident + ".pub", ak)
    if as_root:
        os.makedirs("/run/sshd", exist_ok=True)
        os.chmod("/run/sshd", 0o755)
        for p in (ident, ident + ".pub", kh, ak):
            os.chown(p, uid, gid)
    cfg = os.path.join(d, "sshd_config")
    base = (
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {host_key}\nPidFile {d}/sshd.pid\n"
        f"AuthorizedKeysFile {ak}\nStrictModes no\nUsePAM {'yes' if as_root else 'no'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        f"PermitRootLogin no\nAllowUsers {user}\nUseDNS no\nPrintMotd no\nPrintLastLog no\n"
        "X11Forwarding no\nMaxStartups 100:30:200\nMaxSessions 50\nSubsystem sftp internal-sftp\nLogLevel INFO\n"
    )
    with open(cfg, "w") as f:
        f.write(base + "PerSourcePenalties no\n")
    if subprocess.run(["/usr/sbin/sshd", "-t", "-f", cfg], capture_output=True).returncode != 0:
        with open(cfg, "w") as f:
            f.write(base)
        subprocess.run(["/usr/sbin/sshd", "-t", "-f", cfg], check=True)
    slog = os.path.join(d, "sshd.log")
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", cfg, "-E", slog], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "sshd.stderr"), "w"))
    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited early: {open(os.path.join(d, 'sshd.stderr')).read()}")
        if os.path.exists(slog) and f"Server listening on 127.0.0.1 port {port}" in open(slog).read():
            break
        time.sleep(0.05)
    else:
        raise RuntimeError("sshd did not start listening")
    return proc, {"port": port, "identity": ident, "known_hosts": kh, "user": user, "dir": d}


def ppid_of(pid):
    try:
        stat = open(f"/proc/{pid}/stat").read()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def cmdline_of(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def tcp_inodes_to(port):
    """Socket inodes of TCP connections to 127.0.0.1:port (from /proc/net/tcp)."""
    inodes = set()
    try:
        for line in open("/proc/net/tcp").readlines()[1:]:
            f = line.split()
            if f[2] == f"0100007F:{port:04X}":
                inodes.add(f[9])
    except (OSError, IndexError):
        pass
    return inodes


def kill_leftovers(work, uid, pgbin, as_root, sshd_pid=None, sshd_port=None):
    """Stop every postmaster and kill every process whose command line names the work dir,
    every ssh session of our sshd, and every ssh client still connected to our sshd (the
    ControlMaster processes of pitrkit's ssh_control_persist, which rename themselves to
    'ssh: <socket> [mux]'). Other runs' processes on the same machine are left alone."""
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    ours = tcp_inodes_to(sshd_port) if sshd_port else set()
    for pid in pids:
        hit = sshd_pid is not None and ppid_of(pid) == sshd_pid
        if not hit and ours and cmdline_of(pid).startswith("ssh"):
            try:
                hit = any(os.readlink(f"/proc/{pid}/fd/{fd}") in {f"socket:[{i}]" for i in ours}
                          for fd in os.listdir(f"/proc/{pid}/fd"))
            except OSError:
                hit = False
        if hit:
            try:
                os.kill(int(pid), signal.SIGTERM)
            except OSError:
                pass
    for root, dirs, files in os.walk(work):
        if "postmaster.pid" in files:
            argv = [f"{pgbin}/pg_ctl", "-D", root, "-m", "immediate", "-w", "-t", "30", "stop"]
            if as_root:
                argv = ["runuser", "-u", pwd.getpwuid(uid).pw_name, "--"] + argv
            subprocess.run(argv, capture_output=True)
        # Don't descend into big data directories needlessly.
        dirs[:] = [x for x in dirs if x not in ("base", "pg_wal", "global", "segs", "walarch")]
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if work in cmd:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


def other_bench_runs():
    """Pids of another run of this benchmark on the machine (its inner process)."""
    me = str(os.getpid())
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and pid != me:
            cmd = cmdline_of(pid)
            if "bench.py --inner" in cmd and "pitrkit-bench-work." in cmd:
                found.append(int(pid))
    return found


def outer(args):
    as_root = os.geteuid() == 0
    if as_root:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            sys.exit("bench: running as root but there is no postgres OS user (apt-get install postgresql)")
    else:
        pw = pwd.getpwuid(os.geteuid())
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        sys.exit(f"bench: {binary} is not an executable (run scripts/bench.sh, which builds it)")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = os.environ.get("BENCH_OUT", "/tmp/pitrkit-bench")
    s = settings(args.quick)
    # Two runs at once on 2 cores would measure each other: wait for the other one.
    deadline = time.time() + int(os.environ.get("BENCH_WAIT", "1800"))
    while other_bench_runs():
        if time.time() > deadline:
            sys.exit("bench: another benchmark run is still going on this machine; try again later")
        log(f"another benchmark run is in progress (pid {other_bench_runs()}); waiting for it to finish")
        time.sleep(20)
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
        shutil.copy(os.path.abspath(__file__), os.path.join(work, "bin", "bench.py"))
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
        argv = ["python3", os.path.join(work, "bin", "bench.py"), "--inner", work]
        env = {k: v for k, v in os.environ.items() if k.startswith("BENCH_") or k == "PITRKIT_PG_BINDIR"}
        env.update({"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C", "HOME": os.path.join(work, "home"),
                    "PYTHONUNBUFFERED": "1"})
        if as_root:
            argv = ["runuser", "-u", pw.pw_name, "--"] + argv
        inner_proc = subprocess.Popen(argv, env=env, cwd=work)
        rc = inner_proc.wait()
        inner_proc = None
        res_json = os.path.join(work, "results.json")
        res_md = os.path.join(work, "results.md")
        if os.path.exists(res_json):
            os.makedirs(out, exist_ok=True)
            with open(res_json) as f:
                res = json.load(f)
            res["runtime_seconds"] = round(time.time() - t_start, 1)
            res.setdefault("machine", {})["loadavg_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
            res["command"] = " ".join(["scripts/bench.sh"] + (["--quick"] if args.quick else []))
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
        else:
            log("the inner run wrote no results")
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


# ---------------------------------------------------------------------------
# Inner process (the postgres user): everything measured
# ---------------------------------------------------------------------------

class Call:
    __slots__ = ("secs", "rc", "rss_kb", "err")

    def __init__(self, secs, rc, rss_kb, err):
        self.secs, self.rc, self.rss_kb, self.err = secs, rc, rss_kb, err


class Failed(Exception):
    pass


def cpu_ticks():
    """(busy, iowait, total) jiffies of all CPUs from /proc/stat."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle, iowait = f[3], f[4]
    total = sum(f[:8])
    return total - idle - iowait, iowait, total


def cores_busy(before, after):
    """CPU cores kept busy (user+system) between two cpu_ticks() snapshots, and iowait in cores."""
    ncpu = os.cpu_count() or 1
    dt = max(1, after[2] - before[2])
    return (after[0] - before[0]) / dt * ncpu, (after[1] - before[1]) / dt * ncpu


class Bench:
    def __init__(self, work):
        self.work = work
        with open(os.path.join(work, "setup.json")) as f:
            self.setup = json.load(f)
        self.s = self.setup["settings"]
        self.pgbin = self.setup["pgbin"]
        self.bin = os.path.join(work, "bin", "pitrkit")
        self.ssh = self.setup["ssh"]
        self.user = self.setup["user"]
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": os.path.join(work, "home"),
            "LANG": "C",
            "USER": self.user,
            "LOGNAME": self.user,
        }
        self.sock = self.mkdir("sock")
        self.clusters = []
        self.control_paths = []
        self.features = {}
        self.notes = []
        self.segs = []  # absolute paths of the benchmark segment set
        self.seg_bytes = 0

    # -- helpers -----------------------------------------------------------
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

    def run(self, argv, check=True, timeout=1800, env_extra=None):
        env = dict(self.env, **(env_extra or {}))
        r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=self.work,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise Failed(f"{' '.join(argv)} exited {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        return r

    def timed(self, argv):
        """Runs argv once: wall time from fork until reaped, exit status, stderr."""
        errf = tempfile.TemporaryFile(dir=self.work)
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf,
                             env=self.env, cwd=self.work)
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

    def pitrkit_ok(self, *args):
        return self.run([self.bin] + list(args))

    # -- PostgreSQL ----------------------------------------------------------
    def initdb(self, name, conf):
        data = self.path(name)
        self.run([f"{self.pgbin}/initdb", "-D", data, "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"])
        port = free_port()
        with open(os.path.join(data, "postgresql.conf"), "a") as f:
            f.write(f"\n# --- pitrkit bench ---\nlisten_addresses = ''\nport = {port}\n"
                    f"unix_socket_directories = '{self.sock}'\nlog_line_prefix = '%m [%p] '\n"
                    f"shared_buffers = '256MB'\n{conf}\n")
        return {"data": data, "port": port, "log": self.path(name + ".log")}

    def pg_start(self, c, timeout=600):
        self.clusters.append(c)
        self.run([f"{self.pgbin}/pg_ctl", "-D", c["data"], "-l", c["log"], "-w", "-t", str(timeout), "start"],
                 timeout=timeout + 30)

    def pg_stop(self, c, mode="fast"):
        if os.path.exists(os.path.join(c["data"], "postmaster.pid")):
            self.run([f"{self.pgbin}/pg_ctl", "-D", c["data"], "-m", mode, "-w", "-t", "120", "stop"], check=False)
        if c in self.clusters:
            self.clusters.remove(c)

    def psql(self, c, sql, db="postgres"):
        r = self.run([f"{self.pgbin}/psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.sock,
                      "-p", str(c["port"]), "-d", db, "-c", sql])
        return r.stdout.strip()

    def pgbench(self, c, *args, timeout=3600):
        return self.run([f"{self.pgbin}/pgbench", "-h", self.sock, "-p", str(c["port"])] + list(args) + ["postgres"],
                        timeout=timeout)

    @staticmethod
    def lsn(text):
        hi, lo = text.split("/")
        return (int(hi, 16) << 32) | int(lo, 16)

    # -- pitrkit configuration ---------------------------------------------
    def ssh_ini_lines(self):
        return (f"user: {self.user}\nssh_port: {self.ssh['port']}\nssh_identity: {self.ssh['identity']}\n"
                f"ssh_options: UserKnownHostsFile={self.ssh['known_hosts']} GlobalKnownHostsFile=/dev/null "
                f"IdentitiesOnly=yes\nstrict_host_key_checking: yes\nssh_timeout: 10\n")

    def ssh_argv(self, extra=()):
        return (["ssh", "-p", str(self.ssh["port"]), "-i", self.ssh["identity"],
                 "-o", f"UserKnownHostsFile={self.ssh['known_hosts']}", "-o", "GlobalKnownHostsFile=/dev/null",
                 "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
                + list(extra))

    def archiver_ini(self, rel, body):
        return self.write(rel, "[DEFAULT]\nnotify_ok:\nnotify_warning:\nnotify_critical:\ndebug: off\n" + body)

    def probe(self, lines):
        """Does this build accept these archiver.ini lines? (exit 0 'Config OK')."""
        ini = self.archiver_ini("probe/probe.ini", f"local_archivedirs: {self.path('probe', 'dest')}\n" + lines)
        r = self.run([self.bin, "archiver", "-C", ini], check=False)
        if r.returncode == 0:
            return True, ""
        msg = (r.stderr or r.stdout).strip()
        m = re.search(r"unknown key '[^']*'", msg)
        return False, m.group(0) if m else (msg.splitlines()[-1] if msg else f"exit {r.returncode}")

    def detect_features(self):
        f = {}
        for codec, level in (("lz4", None), ("zstd", 1), ("gzip", 6)):
            lines = f"compression: {codec}\n" + (f"compression_level: {level}\n" if level is not None else "")
            ok, why = self.probe(lines)
            if not ok and level is not None and "compression_level" in why:
                ok2, why2 = self.probe(f"compression: {codec}\n")
                if ok2:
                    self.notes.append(f"compression_level is not accepted; {codec} runs at pitrkit's default level")
                    lines = f"compression: {codec}\n"
                    ok, why = True, ""
            f[codec] = {"ok": ok, "why": why, "lines": lines}
        f["none"] = {"ok": True, "why": "", "lines": ""}
        ok_none, why_none = self.probe("compression: none\n")
        if ok_none:
            f["none"]["lines"] = "compression: none\n"
        ok, why = self.probe("ssh_control_persist: 60\n")
        f["ssh_control_persist"] = {"ok": ok, "why": why}
        ok, why = self.probe("lookahead: 16\n")
        f["lookahead"] = {"ok": ok, "why": why}
        # restore_prefetch lives in standby.ini: an unknown key is a configuration error (exit 200).
        ini = self.write("probe/standby.ini", f"[DEFAULT]\narchivedir: {self.mkdir('probe', 'arch')}\nrestore_prefetch: 4\n")
        r = self.run([self.bin, "restore", "-C", ini, "000000010000000000000001", self.path("probe", "x")], check=False)
        f["restore_prefetch"] = {"ok": "unknown key" not in (r.stderr + r.stdout),
                                 "why": (re.search(r"unknown key '[^']*'", r.stderr) or [""])[0]}
        self.features = f
        log("features: " + ", ".join(f"{k}={'yes' if v['ok'] else 'no'}" for k, v in f.items()))
        return f

    # -- WAL generation ------------------------------------------------------
    def make_segments(self):
        n = self.s["segments"]
        log(f"generating real WAL: pgbench -i -s {self.s['gen_scale']}, base backup, pgbench until {n} segments")
        arch = self.mkdir("walarch")
        g = self.initdb("gen", "archive_mode = on\n"
                        f"archive_command = 'test ! -f {arch}/%f && cp %p {arch}/%f'\n"
                        "max_wal_size = '2GB'\nsynchronous_commit = off\nwal_keep_size = '4GB'\n")
        self.gen = g
        self.pg_start(g)
        self.pgbench(g, "-i", "-q", "-s", str(self.s["gen_scale"]))
        base = self.path("gen_base")
        self.run([f"{self.pgbin}/pg_basebackup", "-h", self.sock, "-p", str(g["port"]), "-D", base, "-X", "none",
                  "--checkpoint=fast", "--no-sync"])
        label = open(os.path.join(base, "backup_label")).read()
        start_file = re.search(r"START WAL LOCATION: \S+ \(file ([0-9A-F]{24})\)", label).group(1)
        start_lsn = self.lsn(re.search(r"START WAL LOCATION: (\S+)", label).group(1))
        self.gen_base, self.gen_start_file = base, start_file
        while self.lsn(self.psql(g, "SELECT pg_current_wal_lsn()")) - start_lsn < (n + 1) * SEG:
            self.pgbench(g, "-n", "-c", "2", "-j", "2", "-T", "5")
        last = self.psql(g, "SELECT pg_walfile_name(pg_current_wal_lsn())")
        self.psql(g, "SELECT pg_switch_wal()")
        self.gen_final_lsn = self.psql(g, "SELECT pg_current_wal_lsn()")
        self.gen_last_file = last
        deadline = time.time() + 300
        while not os.path.exists(os.path.join(arch, last)):
            if time.time() > deadline:
                raise Failed(f"gen cluster did not archive {last}")
            time.sleep(0.2)
        names = sorted(x for x in os.listdir(arch) if WAL_NAME.match(x) and x >= start_file)
        segdir = self.mkdir("segs")
        for name in names[:n]:
            shutil.copy(os.path.join(arch, name), os.path.join(segdir, name))
            self.segs.append(os.path.join(segdir, name))
        self.seg_bytes = sum(os.path.getsize(p) for p in self.segs)
        self.recovery_files = [x for x in os.listdir(arch) if x >= start_file]
        log(f"{len(self.segs)} segments {os.path.basename(self.segs[0])}..{os.path.basename(self.segs[-1])}; "
            f"recovery archive {len(names)} segments up to {last}")
        self.pgbr_conf = self.write("pgbr/pgbackrest.conf", (
            "[global]\n"
            f"log-path={self.mkdir('pgbr', 'log')}\nlock-path={self.mkdir('pgbr', 'lock')}\n"
            f"spool-path={self.mkdir('pgbr', 'spool')}\nlog-level-console=warn\nlog-level-stderr=warn\n"
            "log-level-file=off\narchive-async=n\n"
            f"[bench]\npg1-path={g['data']}\npg1-port={g['port']}\npg1-socket-path={self.sock}\n"))
        tmpl = self.path("pgbr", "template")
        self.pgbr("stanza-create", repo=tmpl)
        self.pgbr_template = tmpl

    def pgbr(self, *args, repo, extra=()):
        return self.run(self.pgbr_argv(*args, repo=repo, extra=extra))

    def pgbr_argv(self, *args, repo, extra=()):
        return (["pgbackrest", f"--config={self.pgbr_conf}", "--stanza=bench", f"--repo1-path={repo}"]
                + list(extra) + list(args))

    def fresh_pgbr_repo(self, rel):
        dst = self.path(rel)
        if os.path.exists(dst):
            shutil.rmtree(dst)
        shutil.copytree(self.pgbr_template, dst, symlinks=True)
        return dst

    @staticmethod
    def wal_bytes(d):
        """Total size and suffixes of archived WAL files under d (recursive; temp files skipped)."""
        total, suffixes, count = 0, set(), 0
        for root, _, files in os.walk(d):
            for n in files:
                if re.match(r"^[0-9A-F]{24}", n) and not n.startswith("."):
                    total += os.path.getsize(os.path.join(root, n))
                    count += 1
                    suffixes.add(re.sub(r"^[0-9A-F]{24}(-[0-9a-f]{40})?", "", n) or "(plain)")
        return total, sorted(suffixes), count

    # -- 1. local archive ------------------------------------------------------
    def bench_local(self):
        f = self.features
        # The floor of the issue: dd conv=fsync, mv, sync DIR. With dd's default
        # 512-byte blocks the floor itself would be syscall-bound (~3x slower on
        # this class of machine), so it copies in 1 MiB blocks. "cp floor" is the
        # same with coreutils cp (copy_file_range, as pitrkit's std::fs::copy).
        contenders = [("floor: dd bs=1M conv=fsync + mv + sync dir", "floor", "dd"),
                      ("cp floor: cp + sync file + mv + sync dir", "floor", "cp")]
        for codec, label in (("none", "none"), ("lz4", "lz4"), ("zstd", "zstd-1"), ("gzip", "gzip-6")):
            contenders.append((f"pitrkit {label}", "pitrkit", codec))
        for ct, lvl, label in (("none", None, "none"), ("lz4", None, "lz4"), ("zst", 1, "zst-1"), ("gz", 6, "gz-6")):
            contenders.append((f"pgbackrest {label}", "pgbr", (ct, lvl)))
        res = {c[0]: {"kind": c[1], "lat": [], "rep_total": [], "rep_median": [], "rss_kb": [], "errors": []}
               for c in contenders}
        for name, kind, arg in contenders:
            if kind == "pitrkit" and not f[arg]["ok"]:
                res[name]["na"] = f"n/a (not in this build: {f[arg]['why']})"
        active = [c for c in contenders if "na" not in res[c[0]]]
        R = self.s["reps"]
        for rep in range(R):
            if not active:
                break
            order = active[rep % len(active):] + active[:rep % len(active)]
            log(f"local archive rep {rep + 1}/{R}")
            for name, kind, arg in order:
                r = res[name]
                slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
                dest, mk = self.local_command(kind, arg, slug, str(rep))
                lats = []
                for seg in self.segs:
                    c = self.timed(mk(seg))
                    if c.rc != 0:
                        r["errors"].append(f"{os.path.basename(seg)}: exit {c.rc}: {c.err.strip()[-500:]}")
                        break
                    lats.append(c.secs)
                if len(lats) != len(self.segs):
                    r["na"] = "FAILED: " + r["errors"][-1]
                    active = [x for x in active if x[0] != name]
                    continue
                r["lat"].extend(lats)
                r["rep_total"].append(sum(lats))
                r["rep_median"].append(med(lats))
                size, suffixes, count = self.wal_bytes(dest)
                r["size"], r["suffixes"], r["files"] = size, suffixes, count
                shutil.rmtree(dest if kind != "pgbr" else self.path("local", slug, str(rep)), ignore_errors=True)
        # Peak RSS: an untimed pass of 3 calls per contender under /usr/bin/time.
        for name, kind, arg in active:
            slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
            dest, mk = self.local_command(kind, arg, slug, "rss")
            for seg in self.segs[:3]:
                rc, kb, _ = self.rss(mk(seg))
                if rc == 0 and kb:
                    res[name]["rss_kb"].append(kb)
            shutil.rmtree(self.path("local", slug), ignore_errors=True)
        self.local_evidence()
        ref = res[contenders[0][0]]
        out = {"segments": len(self.segs), "raw_bytes": self.seg_bytes, "reps": R, "contenders": {}}
        for name, kind, arg in contenders:
            r = res[name]
            o = {"kind": kind}
            if "na" in r:
                o["na"] = r["na"]
            if r["lat"]:
                o.update(self.summarize(r, ref, self.seg_bytes))
                o["size_bytes"] = r.get("size")
                o["size_ratio"] = r["size"] / self.seg_bytes if r.get("size") else None
                o["suffixes"] = r.get("suffixes")
                o["max_rss_kb"] = max(r["rss_kb"]) if r["rss_kb"] else None
                o["median_rss_kb"] = med(r["rss_kb"]) if r["rss_kb"] else None
            out["contenders"][name] = o
        # pitrkit vs pgbackrest at the same settings, paired per repetition.
        pairs = {}
        for pk, pb in (("pitrkit lz4", "pgbackrest lz4"), ("pitrkit zstd-1", "pgbackrest zst-1"),
                       ("pitrkit gzip-6", "pgbackrest gz-6"), ("pitrkit none", "pgbackrest none")):
            a, b = res[pk], res[pb]
            if a["rep_median"] and b["rep_median"] and len(a["rep_median"]) == len(b["rep_median"]):
                pairs[pk] = {
                    "vs": pb,
                    "speedup": med([y / x for x, y in zip(a["rep_median"], b["rep_median"])]),
                    "size_vs": (a["size"] / b["size"]) if a.get("size") and b.get("size") else None,
                }
        out["pairs"] = pairs
        return out

    def local_evidence(self):
        """pitrkit's step timings (debug: on) for local archive calls per codec, and what
        the C reference tools (liblz4, libzstd, zlib CLIs) take on the SAME segments."""
        f = self.features
        segs = self.segs[:5]
        text = []
        try:
            for codec, cli in (("none", None), ("lz4", ["lz4", "-1", "-q", "-c"]),
                               ("zstd", ["zstd", "-1", "-q", "--check", "-c"]), ("gzip", ["gzip", "-6", "-c"])):
                if not f[codec]["ok"]:
                    continue
                dest = self.fresh_dir("local", "evidence", codec)
                ini = self.archiver_ini(f"local/evidence-{codec}.ini",
                                        f"local_archivedirs: {dest}\n" + f[codec]["lines"])
                body = open(ini).read().replace("debug: off", "debug: on")
                open(ini, "w").write(body)
                self.pitrkit_ok("archiver", "-C", ini, "-I")
                walls, steps, clis, last = [], [], [], ""
                for seg in segs:
                    c = self.timed([self.bin, "archiver", "-C", ini, "-F", seg])
                    walls.append(c.secs)
                    last = c.err
                    m = re.search(r"compression of \S+ took ([0-9.]+) ms", c.err)
                    if m:
                        steps.append(float(m.group(1)))
                    if cli and shutil.which(cli[0]):
                        clis.append(self.timed(["sh", "-c", '"$@" >/dev/null', "sh"] + cli + [seg]).secs)
                line = f"=== pitrkit archiver, local, {codec}: median wall {med(walls) * 1000:.1f} ms over {len(segs)} segments"
                if steps:
                    line += f"; pitrkit's compression step {med(steps):.1f} ms"
                if clis:
                    line += f"; `{' '.join(cli)}` on the same segments {med(clis) * 1000:.1f} ms (whole process)"
                text.append(line + f" ===\n(debug output of the last call)\n{last}")
            with open(self.path("evidence-local-debug.txt"), "w") as fh:
                fh.write("\n".join(text) + "\n")
        except (Failed, OSError) as e:
            log(f"local evidence failed: {e}")
        shutil.rmtree(self.path("local", "evidence"), ignore_errors=True)

    def local_command(self, kind, arg, slug, rep):
        """A fresh destination and the per-segment command line archiving into it."""
        f = self.features
        if kind == "floor":
            dest = self.fresh_dir("local", slug, rep)
            script = ('dd if="$1" of="$2/.tmp" bs=1M conv=fsync status=none' if arg == "dd"
                      else 'cp "$1" "$2/.tmp" && sync "$2/.tmp"') + ' && mv "$2/.tmp" "$2/$3" && sync "$2"'
            return dest, lambda seg: ["sh", "-c", script, "sh", seg, dest, os.path.basename(seg)]
        if kind == "pitrkit":
            dest = self.fresh_dir("local", slug, rep)
            ini = self.archiver_ini(f"local/{slug}-{rep}.ini", f"local_archivedirs: {dest}\n" + f[arg]["lines"])
            self.pitrkit_ok("archiver", "-C", ini, "-I")
            return dest, lambda seg: [self.bin, "archiver", "-C", ini, "-F", seg]
        ct, lvl = arg
        dest = self.fresh_pgbr_repo(f"local/{slug}/{rep}")
        extra = [f"--compress-type={ct}"] + ([f"--compress-level={lvl}"] if lvl is not None else [])
        return dest, lambda seg: self.pgbr_argv("archive-push", seg, repo=dest, extra=extra)

    @staticmethod
    def summarize(r, ref, nbytes):
        """Median latency, throughput and the ratio to `ref`, paired per repetition."""
        o = {
            "median_ms": med(r["lat"]) * 1000,
            "p90_ms": sorted(r["lat"])[int(0.9 * (len(r["lat"]) - 1))] * 1000,
            "rep_median_ms": [x * 1000 for x in r["rep_median"]],
            "mb_s": med([nbytes / MiB / t for t in r["rep_total"]]),
        }
        if ref is not None and ref["rep_median"] and len(ref["rep_median"]) == len(r["rep_median"]):
            o["ratio"] = med([x / y for x, y in zip(r["rep_median"], ref["rep_median"])])
        return o

    # -- 2. ssh shipping ---------------------------------------------------------
    def bench_ssh(self):
        f = self.features
        N = len(self.segs)
        R = self.s["reps"]
        cm_dir = self.mkdir("cm")
        cm_opts = f"ControlMaster=auto ControlPath={cm_dir}/%C ControlPersist=60"
        contenders = [
            ("rsync per segment (pitrtools)", "rsync", {}),
            ("one rsync of all N segments (bound for batching)", "rsync1", {}),
            ("pitrkit sync (inline ship per call)", "sync", {}),
            ("pitrkit async calls + --flush", "async", {}),
        ]
        if f["lookahead"]["ok"]:
            # What PostgreSQL does when it has a backlog: N .ready files, one call each,
            # .ready renamed to .done after every success. Look-ahead batches them.
            contenders.append(("pitrkit async, PostgreSQL backlog of N .ready (lookahead)", "backlog", {}))
        contenders.append(("pitrkit spool-only calls + one --flush (batched)", "batched", {}))
        if f["ssh_control_persist"]["ok"]:
            contenders.append(("pitrkit sync, ssh_control_persist: 0 (new connection per call)", "sync",
                               {"lines": "ssh_control_persist: 0\n"}))
        else:
            contenders.append(("pitrkit sync + ssh ControlPersist (via ssh_options)", "sync", {"ssh_extra": cm_opts}))
        if f["lz4"]["ok"]:
            # Shipping is CPU-bound on small machines (ssh cipher + rsync): fewer bytes
            # on the wire is what batching alone cannot give.
            contenders.append(("pitrkit batched + slave_compression: lz4", "batched",
                               {"lines": "ssh_control_persist: 60\nslave_compression: lz4\n", "suffix": ".lz4"}))
        res = {c[0]: {"kind": c[1], "lat": [], "rep_total": [], "rep_median": [], "errors": [], "spool": [],
                      "flush": []} for c in contenders}
        dead_port = free_port()  # nothing listens there: ssh fails at once

        def ini_for(slug, rep, mode, opts, port=None):
            ssh_lines = self.ssh_ini_lines()
            if port is not None:
                ssh_lines = ssh_lines.replace(f"ssh_port: {self.ssh['port']}", f"ssh_port: {port}")
            if opts.get("ssh_extra"):
                ssh_lines = ssh_lines.replace("IdentitiesOnly=yes", "IdentitiesOnly=yes " + opts["ssh_extra"])
            body = (f"slaves: 127.0.0.1\nl_archivedir: {self.path('ship', slug, str(rep), 'queue')}\n"
                    f"r_archivedir: {self.path('ship', slug, str(rep), 'remote')}\nship_mode: {mode}\n"
                    f"queue_wait: {3600 if mode == 'batched' else 0}\n" + ssh_lines + opts.get("lines", ""))
            body = body.replace("ship_mode: batched", "ship_mode: async")
            return self.archiver_ini(f"ship/{slug}-{rep}{'-dead' if port else ''}.ini", body)

        active = list(contenders)
        for rep in range(R):
            if not active:
                break
            order = active[rep % len(active):] + active[:rep % len(active)]
            log(f"ssh shipping rep {rep + 1}/{R}")
            for name, kind, opts in order:
                r = res[name]
                slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
                base = self.fresh_dir("ship", slug, str(rep))
                remote = self.mkdir("ship", slug, str(rep), "remote")
                lats, total, err = [], 0.0, None
                if kind == "rsync":
                    rsh = " ".join(self.ssh_argv())
                    for seg in self.segs:
                        c = self.timed(["rsync", "-e", rsh, seg, f"{self.user}@127.0.0.1:{remote}/"])
                        if c.rc != 0:
                            err = c.err
                            break
                        lats.append(c.secs)
                    total = sum(lats)
                elif kind == "rsync1":
                    c0 = cpu_ticks()
                    c = self.timed(["rsync", "-e", " ".join(self.ssh_argv())] + self.segs
                                   + [f"{self.user}@127.0.0.1:{remote}/"])
                    r.setdefault("busy", []).append(cores_busy(c0, cpu_ticks())[0])
                    if c.rc != 0:
                        err = c.err
                    total = c.secs
                elif kind == "backlog":
                    ini = ini_for(slug, rep, "async", opts)
                    self.pitrkit_ok("archiver", "-C", ini, "-I")
                    wal = self.mkdir("ship", slug, str(rep), "pg_wal")
                    status = self.mkdir("ship", slug, str(rep), "pg_wal", "archive_status")
                    for seg in self.segs:
                        os.link(seg, os.path.join(wal, os.path.basename(seg)))
                        open(os.path.join(status, os.path.basename(seg) + ".ready"), "w").close()
                    for seg in self.segs:
                        n = os.path.basename(seg)
                        c = self.timed([self.bin, "archiver", "-C", ini, "-F", os.path.join(wal, n)])
                        if c.rc != 0:
                            err = c.err
                            break
                        os.rename(os.path.join(status, n + ".ready"), os.path.join(status, n + ".done"))
                        lats.append(c.secs)
                    total = sum(lats)
                elif kind in ("sync", "async"):
                    ini = ini_for(slug, rep, kind, opts)
                    self.pitrkit_ok("archiver", "-C", ini, "-I")
                    for seg in self.segs:
                        c = self.timed([self.bin, "archiver", "-C", ini, "-F", seg])
                        if c.rc != 0:
                            err = c.err
                            break
                        lats.append(c.secs)
                    total = sum(lats)
                    if kind == "async" and err is None:
                        c = self.timed([self.bin, "archiver", "-C", ini, "--flush"])
                        if c.rc != 0:
                            err = c.err
                        r["flush"].append(c.secs)
                        total += c.secs
                else:  # batched: spool-only calls (slave in queue_wait back-off), then one --flush
                    ini = ini_for(slug, rep, "batched", opts)
                    dead = ini_for(slug, rep, "batched", opts, port=dead_port)
                    self.pitrkit_ok("archiver", "-C", ini, "-I")
                    # Untimed priming call through an unreachable port: segment 0 is
                    # spooled, the delivery fails, the slave enters queue_wait back-off.
                    self.pitrkit_ok("archiver", "-C", dead, "-F", self.segs[0])
                    for seg in self.segs[1:]:
                        c = self.timed([self.bin, "archiver", "-C", ini, "-F", seg])
                        if c.rc != 0:
                            err = c.err
                            break
                        lats.append(c.secs)
                    queued = len([x for x in os.listdir(self.path("ship", slug, str(rep), "queue", "127.0.0.1"))
                                  if WAL_NAME.match(x.removesuffix(opts.get("suffix", "")))])
                    if err is None and queued != N:
                        err = f"expected {N} queued files before --flush, found {queued} (calls shipped?)"
                    if err is None:
                        c0 = cpu_ticks()
                        c = self.timed([self.bin, "archiver", "-C", ini, "--flush"])
                        r.setdefault("busy", []).append(cores_busy(c0, cpu_ticks())[0])
                        if c.rc != 0:
                            err = c.err
                        r["flush"].append(c.secs)
                        r["spool"].append(med(lats))
                        # N spool calls (the primed one at the median spool cost) + one flush.
                        total = sum(lats) * N / (N - 1) + c.secs
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
        for p in os.listdir(cm_dir):
            self.run(["ssh", "-o", f"ControlPath={cm_dir}/{p}", "-O", "exit", "127.0.0.1"], check=False)
        ref = res[contenders[0][0]]
        out = {"segments": N, "raw_bytes": self.seg_bytes, "reps": R, "contenders": {}}
        for name, kind, opts in contenders:
            r = res[name]
            o = {"kind": kind}
            if "na" in r:
                o["na"] = r["na"]
            if r["rep_total"]:
                o["mb_s"] = med([self.seg_bytes / MiB / t for t in r["rep_total"]])
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
            out["contenders"][name] = o
        out["rss"] = self.flush_rss(ini_for, dead_port)
        self.ship_evidence(ini_for, dead_port)
        return out

    def ship_evidence(self, ini_for, dead_port):
        """pitrkit's own step timings (debug: on) for one sync call and one --flush."""
        try:
            text = []
            self.fresh_dir("ship", "dbg", "0")
            self.mkdir("ship", "dbg", "0", "remote")
            ini = ini_for("dbg", 0, "sync", {})
            body = open(ini).read().replace("debug: off", "debug: on")
            open(ini, "w").write(body)
            self.pitrkit_ok("archiver", "-C", ini, "-I")
            c = self.timed([self.bin, "archiver", "-C", ini, "-F", self.segs[0]])
            text.append(f"=== pitrkit archiver -F (ship_mode: sync), {c.secs * 1000:.0f} ms wall ===\n{c.err}")
            self.fresh_dir("ship", "dbg", "0")
            self.mkdir("ship", "dbg", "0", "remote")
            ini = ini_for("dbg", 0, "batched", {})
            body = open(ini).read().replace("debug: off", "debug: on")
            open(ini, "w").write(body)
            dead = ini_for("dbg", 0, "batched", {}, port=dead_port)
            self.pitrkit_ok("archiver", "-C", ini, "-I")
            for seg in self.segs:
                self.pitrkit_ok("archiver", "-C", dead, "-F", seg)
            c = self.timed([self.bin, "archiver", "-C", ini, "--flush"])
            text.append(f"=== pitrkit archiver --flush of {len(self.segs)} queued segments, {c.secs * 1000:.0f} ms wall ===\n"
                        f"{c.err}")
            for label, argv in (("ssh true", self.ssh_argv() + [f"{self.user}@127.0.0.1", "true"]),
                                ("one rsync of 1 segment", ["rsync", "-e", " ".join(self.ssh_argv()), self.segs[0],
                                                            f"{self.user}@127.0.0.1:{self.path('ship', 'dbg', '0', 'remote')}/x"])):
                ts = [self.timed(argv).secs for _ in range(5)]
                text.append(f"=== {label}: median of 5 {med(ts) * 1000:.0f} ms ===")
            with open(self.path("evidence-ship-debug.txt"), "w") as fh:
                fh.write("\n".join(text) + "\n")
            shutil.rmtree(self.path("ship", "dbg"), ignore_errors=True)
        except Failed as e:
            log(f"ship evidence failed: {e}")

    def flush_rss(self, ini_for, dead_port):
        """Peak RSS of `--flush` shipping a queue of every segment (untimed run)."""
        try:
            ini = ini_for("rss", 0, "batched", {})
            dead = ini_for("rss", 0, "batched", {}, port=dead_port)
            self.fresh_dir("ship", "rss", "0")
            self.mkdir("ship", "rss", "0", "remote")
            self.pitrkit_ok("archiver", "-C", ini, "-I")
            for seg in self.segs:
                self.pitrkit_ok("archiver", "-C", dead, "-F", seg)
            rc, kb, hwm = self.rss([self.bin, "archiver", "-C", ini, "--flush"], sample_own=True)
            got = len([x for x in os.listdir(self.path("ship", "rss", "0", "remote")) if WAL_NAME.match(x)])
            shutil.rmtree(self.path("ship", "rss"), ignore_errors=True)
            return {"flush_files": len(self.segs), "flush_rc": rc, "delivered": got, "flush_tree_max_rss_kb": kb,
                    "flush_own_vmhwm_kb": hwm}
        except Failed as e:
            return {"error": str(e)[-500:]}

    # -- 4. restore --------------------------------------------------------------
    def bench_restore(self):
        f = self.features
        arch = self.path("walarch")
        # zstd archive of the recovery range: pitrkit's own when it compresses, else the zstd CLI.
        zarch = self.fresh_dir("arch_zst")
        files = sorted(x for x in os.listdir(arch) if x >= self.gen_start_file)
        if f["zstd"]["ok"]:
            ini = self.archiver_ini("restore/zarch.ini", f"local_archivedirs: {zarch}\n" + f["zstd"]["lines"])
            self.pitrkit_ok("archiver", "-C", ini, "-I")
            for x in files:
                self.pitrkit_ok("archiver", "-C", ini, "-F", os.path.join(arch, x))
            zmade = "pitrkit archiver (compression: zstd, level 1)"
        else:
            for x in files:
                self.run(["zstd", "-1", "-q", "--check", os.path.join(arch, x), "-o", os.path.join(zarch, x + ".zst")])
            zmade = "zstd -1 CLI (pitrkit archiver has no compression in this build)"
        zsize, zsuf, _ = self.wal_bytes(zarch)
        # pgBackRest repositories holding the same segments.
        repos = {}
        for ct, lvl in (("none", None), ("zst", 1)):
            repo = self.fresh_pgbr_repo(f"restore/pgbr-{ct}")
            extra = [f"--compress-type={ct}"] + ([f"--compress-level={lvl}"] if lvl else [])
            for x in files:
                if WAL_NAME.match(x):
                    self.pgbr("archive-push", os.path.join(arch, x), repo=repo, extra=extra)
            repos[ct] = repo
        ini_plain = self.write("restore/plain.ini", f"[DEFAULT]\narchivedir: {arch}\n")
        ini_zst = self.write("restore/zst.ini", f"[DEFAULT]\narchivedir: {zarch}\n")
        dest_dir = self.mkdir("restore", "dest")
        contenders = [
            ("pgbackrest archive-get (none)", lambda n, d: self.pgbr_argv("archive-get", n, d, repo=repos["none"])),
            ("pgbackrest archive-get (zst-1)", lambda n, d: self.pgbr_argv("archive-get", n, d, repo=repos["zst"])),
            ("pitrkit restore (plain)", lambda n, d: [self.bin, "restore", "-C", ini_plain, n, d]),
            ("pitrkit restore (zstd)", lambda n, d: [self.bin, "restore", "-C", ini_zst, n, d]),
            ("cp (plain)", lambda n, d: ["cp", os.path.join(arch, n), d]),
        ]
        res = {c[0]: {"lat": [], "rep_total": [], "rep_median": [], "rss_kb": [], "errors": []} for c in contenders}
        R = self.s["reps"]
        active = list(contenders)
        for rep in range(R):
            if not active:
                break
            log(f"restore per segment rep {rep + 1}/{R}")
            order = active[rep % len(active):] + active[:rep % len(active)]
            for name, mk in order:
                r = res[name]
                lats = []
                for seg in self.segs:
                    n = os.path.basename(seg)
                    d = os.path.join(dest_dir, "RECOVERYXLOG")
                    c = self.timed(mk(n, d))
                    if c.rc != 0 or not os.path.exists(d):
                        r["errors"].append(f"{n}: exit {c.rc}: {c.err.strip()[-400:]}")
                        break
                    if rep == 0 and not filecmp.cmp(seg, d, shallow=False):
                        r["errors"].append(f"{n}: restored bytes differ")
                        break
                    os.unlink(d)
                    lats.append(c.secs)
                if len(lats) != len(self.segs):
                    r["na"] = "FAILED: " + r["errors"][-1]
                    active = [x for x in active if x[0] != name]
                    continue
                r["lat"].extend(lats)
                r["rep_total"].append(sum(lats))
                r["rep_median"].append(med(lats))
        for name, mk in active:
            for seg in self.segs[:3]:
                d = os.path.join(dest_dir, "RECOVERYXLOG")
                rc, kb, _ = self.rss(mk(os.path.basename(seg), d))
                if rc == 0 and kb:
                    res[name]["rss_kb"].append(kb)
                if os.path.exists(d):
                    os.unlink(d)
        ref = res[contenders[0][0]]
        out = {"segments": len(self.segs), "reps": R, "zstd_archive": {"made_by": zmade, "bytes": zsize},
               "per_segment": {}}
        for name, _ in contenders:
            r = res[name]
            o = {}
            if "na" in r:
                o["na"] = r["na"]
            if r["lat"]:
                o.update(self.summarize(r, ref, self.seg_bytes))
                o["max_rss_kb"] = max(r["rss_kb"]) if r["rss_kb"] else None
            out["per_segment"][name] = o
        pb = res["pgbackrest archive-get (zst-1)"]
        pz = res["pitrkit restore (zstd)"]
        if pb["rep_median"] and pz["rep_median"] and len(pb["rep_median"]) == len(pz["rep_median"]):
            out["per_segment"]["pitrkit restore (zstd)"]["ratio_vs_pgbackrest_zst"] = med(
                [a / b for a, b in zip(pz["rep_median"], pb["rep_median"])])
        out["recovery"] = self.bench_recovery(arch, zarch, ini_plain, ini_zst)
        # pitrkit's own timing (debug: on) and syscall profile of one restore.
        try:
            dbg = self.write("restore/debug.ini", f"[DEFAULT]\narchivedir: {arch}\ndebug: on\n")
            d = os.path.join(dest_dir, "RECOVERYXLOG")
            c = self.timed([self.bin, "restore", "-C", dbg, os.path.basename(self.segs[0]), d])
            text = f"=== pitrkit restore (plain), {c.secs * 1000:.1f} ms wall ===\n{c.err}\n"
            os.unlink(d)
            if shutil.which("strace"):
                for label, argv in (("pitrkit restore (plain)", [self.bin, "restore", "-C", ini_plain,
                                                               os.path.basename(self.segs[0]), d]),
                                    ("cp", ["cp", self.segs[0], d])):
                    r = self.run(["strace", "-f", "-c", "-o", self.path("restore", "strace.txt")] + argv, check=False)
                    text += f"=== strace -c {label} ===\n" + open(self.path("restore", "strace.txt")).read()
                    if os.path.exists(d):
                        os.unlink(d)
            with open(self.path("evidence-restore-debug.txt"), "w") as fh:
                fh.write(text)
        except (Failed, OSError) as e:
            log(f"restore evidence failed: {e}")
        return out

    def bench_recovery(self, arch, zarch, ini_plain, ini_zst):
        contenders = [
            ("cp", f"cp {arch}/%f %p"),
            ("pitrkit restore (plain)", f"{self.bin} restore -C {ini_plain} %f %p"),
            ("pitrkit restore (zstd)", f"{self.bin} restore -C {ini_zst} %f %p"),
        ]
        if self.features.get("restore_prefetch", {}).get("ok"):
            ini_pf = self.write("restore/zst-prefetch.ini", f"[DEFAULT]\narchivedir: {zarch}\nrestore_prefetch: 8\n")
            contenders.append(("pitrkit restore (zstd, restore_prefetch: 8)", f"{self.bin} restore -C {ini_pf} %f %p"))
        R = self.s["recovery_reps"]
        times = {c[0]: [] for c in contenders}
        errors = {}
        replay_bytes = self.lsn(self.gen_final_lsn) - self.lsn(
            re.search(r"START WAL LOCATION: (\S+)", open(os.path.join(self.gen_base, "backup_label")).read()).group(1))
        active = list(contenders)
        for rep in range(R):
            if not active:
                break
            log(f"standby recovery rep {rep + 1}/{R}")
            order = active[rep % len(active):] + active[:rep % len(active)]
            for name, cmd in order:
                d = self.path("rec")
                if os.path.exists(d):
                    shutil.rmtree(d)
                shutil.copytree(self.gen_base, d, symlinks=True)
                os.chmod(d, 0o700)
                port = free_port()
                with open(os.path.join(d, "postgresql.conf"), "a") as fh:
                    fh.write(f"\n# --- recovery bench ---\nport = {port}\narchive_mode = off\nhot_standby = off\n"
                             f"restore_command = '{cmd}'\nrecovery_target_timeline = 'current'\n")
                open(os.path.join(d, "recovery.signal"), "w").close()
                c = {"data": d, "port": port, "log": self.path(f"rec-{rep}.log")}
                if os.path.exists(c["log"]):
                    os.unlink(c["log"])
                self.clusters.append(c)
                # pg_ctl -w returns as soon as recovery starts (hot_standby = off), so
                # the end of recovery is watched in the server log instead: replay of
                # the whole archive, end of archive, promotion, ready for connections.
                t0 = time.perf_counter()
                r = self.run([f"{self.pgbin}/pg_ctl", "-D", d, "-l", c["log"], "-W", "start"], check=False)
                secs, logtext = None, ""
                deadline = t0 + 1200
                while r.returncode == 0 and time.perf_counter() < deadline:
                    logtext = open(c["log"]).read() if os.path.exists(c["log"]) else ""
                    if "database system is ready to accept connections" in logtext:
                        secs = time.perf_counter() - t0
                        break
                    if "database system is shut down" in logtext or " FATAL: " in logtext:
                        break
                    time.sleep(0.01)
                ok = secs is not None and f'restored log file "{self.gen_last_file}" from archive' in logtext
                if ok:
                    end = self.psql(c, "SELECT pg_current_wal_lsn()")
                    ok = self.lsn(end) >= self.lsn(self.gen_final_lsn) - SEG
                self.pg_stop(c, "immediate")
                if not ok:
                    errors[name] = (r.stderr + "\n" + logtext)[-1500:]
                    active = [x for x in active if x[0] != name]
                    continue
                times[name].append(secs)
        shutil.rmtree(self.path("rec"), ignore_errors=True)
        out = {"reps": R, "replay_mb": replay_bytes / MiB, "contenders": {}}
        ref = times["cp"]
        for name, _ in contenders:
            t = times[name]
            o = {}
            if name in errors:
                o["na"] = "FAILED: " + errors[name][-300:]
            if t:
                o["median_s"] = med(t)
                o["mb_s"] = replay_bytes / MiB / med(t)
                if len(ref) == len(t):
                    o["ratio_vs_cp"] = med([a / b for a, b in zip(t, ref)])
            out["contenders"][name] = o
        return out

    # -- 3. sustained ----------------------------------------------------------
    def bench_sustained(self):
        f = self.features
        codec = "zstd" if f["zstd"]["ok"] else "none"
        archive = self.mkdir("sus_archive")
        ini = self.archiver_ini("susconf/archiver.ini", f"pgdata: {self.path('sus')}\nlocal_archivedirs: {archive}\n"
                                + f[codec]["lines"])
        self.pitrkit_ok("archiver", "-C", ini, "-I")
        c = self.initdb("sus", "archive_mode = on\n"
                        f"archive_command = '{self.bin} archiver -C {ini} -F %p'\n"
                        "max_wal_size = '4GB'\nsynchronous_commit = off\ncheckpoint_timeout = '30s'\n")
        self.pg_start(c)
        log(f"sustained: pgbench -i -s {self.s['sustained_scale']}")
        self.pgbench(c, "-i", "-q", "-s", str(self.s["sustained_scale"]))
        # Full-page images after every checkpoint are most of a busy server's WAL.
        self.psql(c, "CHECKPOINT")
        ready_dir = os.path.join(c["data"], "pg_wal", "archive_status")

        def ready():
            return len([x for x in os.listdir(ready_dir) if x.endswith(".ready")])

        def sample():
            row = self.psql(c, "SELECT pg_current_wal_lsn(), archived_count, failed_count, "
                               "coalesce(last_archived_wal, '') FROM pg_stat_archiver")
            lsn, arch, failed, last = row.split("|")
            return {"t": time.perf_counter(), "lsn": self.lsn(lsn), "archived": int(arch), "failed": int(failed),
                    "ready": ready()}

        deadline = time.time() + 600
        while ready() > 0 and time.time() < deadline:
            time.sleep(0.5)
        secs, clients = self.s["sustained_secs"], self.s["sustained_clients"]
        log(f"sustained: pgbench -c {clients} -T {secs} (synchronous_commit=off) with archive_command = pitrkit "
            f"({codec})")
        p = subprocess.Popen([f"{self.pgbin}/pgbench", "-h", self.sock, "-p", str(c["port"]), "-n", "-c", str(clients),
                              "-j", str(clients), "-T", str(secs), "postgres"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env=self.env, cwd=self.work, text=True)
        samples = [sample()]
        while p.poll() is None:
            time.sleep(max(0.0, 1.0 - (time.perf_counter() - samples[-1]["t"])))
            samples.append(sample())
        pgbench_out = p.stdout.read()
        end_run = samples[-1]
        # Drain: how long until every .ready file is archived.
        drain_deadline = time.time() + 600
        while samples[-1]["ready"] > 0 and time.time() < drain_deadline:
            time.sleep(0.5)
            samples.append(sample())
        t0 = samples[0]
        window = end_run["t"] - t0["t"]
        gen_mb = (end_run["lsn"] - t0["lsn"]) / MiB
        arch_mb = (end_run["archived"] - t0["archived"]) * SEG / MiB
        tps = re.search(r"tps = ([0-9.]+)", pgbench_out)
        out = {
            "codec": codec,
            "secs": round(window, 1),
            "clients": clients,
            "scale": self.s["sustained_scale"],
            "tps": float(tps.group(1)) if tps else None,
            "wal_generated_mb_s": gen_mb / window,
            "archived_mb_s": arch_mb / window,
            "max_ready": max(s["ready"] for s in samples),
            "ready_at_end_of_load": end_run["ready"],
            "drain_s": samples[-1]["t"] - end_run["t"],
            "failed": samples[-1]["failed"] - t0["failed"],
            "archived_segments": samples[-1]["archived"] - t0["archived"],
            "archive_bytes": self.wal_bytes(archive)[0],
            "ready_series": [s["ready"] for s in samples],
        }
        self.pg_stop(c, "immediate")
        shutil.rmtree(c["data"], ignore_errors=True)
        shutil.rmtree(archive, ignore_errors=True)
        return out

    # -- 5. base backup ----------------------------------------------------------
    def bench_basebackup(self):
        scale = self.s["bb_scale"]
        c = self.initdb("bbm", "listen_addresses = '127.0.0.1'\narchive_mode = off\nmax_wal_size = '4GB'\n")
        with open(os.path.join(c["data"], "pg_hba.conf"), "a") as fh:
            fh.write("host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n")
        self.pg_start(c)
        log(f"base backup: pgbench -i -s {scale}")
        self.pgbench(c, "-i", "-q", "-s", str(scale))
        self.psql(c, "CHECKPOINT")
        db_bytes = int(self.psql(c, "SELECT sum(pg_database_size(oid)) FROM pg_database"))
        archivedir = self.mkdir("bb", "archive")
        sock = self.mkdir("bb", "sock")

        def standby_ini(pgdata):
            return self.write("bb/standby.ini", (
                "[DEFAULT]\npgversion: 15\nuse_streaming_replication: no\n"
                f"port: {c['port']}\nmaster_public_ip: 127.0.0.1\nmaster_user: {self.user}\nmaster_db: postgres\n"
                f"master_pgdata: {c['data']}\n" + self.ssh_ini_lines() +
                f"rsync_threads: {self.s['rsync_threads']}\narchivedir: {archivedir}\npgdata: {pgdata}\n"
                "notify_ok:\nnotify_warning:\nnotify_critical:\nwait_timeout: 600\ndebug: on\n"))

        R = self.s["bb_reps"]
        t = {"pitrkit -B (fresh)": [], "pitrkit -B (re-sync, unchanged)": [], "pg_basebackup -X none": []}
        busy = {k: [] for k in t}
        errors = {}
        sizes = {}
        evidence = None
        for rep in range(R):
            log(f"base backup rep {rep + 1}/{R}")
            order = ["pitrkit", "pgbb"] if rep % 2 == 0 else ["pgbb", "pitrkit"]
            for who in order:
                d = self.path("bb", "copy")
                if os.path.exists(d):
                    shutil.rmtree(d)
                if who == "pitrkit" and "pitrkit -B (fresh)" not in errors:
                    ini = standby_ini(d)
                    self.pitrkit_ok("standby", "-C", ini, "-I")
                    c0 = cpu_ticks()
                    a = self.timed([self.bin, "standby", "-C", ini, "-B"])
                    busy["pitrkit -B (fresh)"].append(cores_busy(c0, cpu_ticks()))
                    if a.rc != 0:
                        errors["pitrkit -B (fresh)"] = a.err[-1500:]
                        continue
                    b = self.timed([self.bin, "standby", "-C", ini, "-B"])
                    if b.rc != 0:
                        errors["pitrkit -B (re-sync, unchanged)"] = b.err[-1500:]
                    else:
                        t["pitrkit -B (re-sync, unchanged)"].append(b.secs)
                    t["pitrkit -B (fresh)"].append(a.secs)
                    sizes["pitrkit"] = self.du(d)
                    evidence = {"fresh_stderr": a.err[-6000:], "resync_stderr": b.err[-6000:]}
                elif who == "pgbb":
                    c0 = cpu_ticks()
                    a = self.timed([f"{self.pgbin}/pg_basebackup", "-h", "127.0.0.1", "-p", str(c["port"]),
                                    "-U", self.user, "-D", d, "-X", "none", "--checkpoint=fast"])
                    busy["pg_basebackup -X none"].append(cores_busy(c0, cpu_ticks()))
                    if a.rc != 0:
                        errors["pg_basebackup -X none"] = a.err[-1500:]
                        continue
                    t["pg_basebackup -X none"].append(a.secs)
                    sizes["pg_basebackup"] = self.du(d)
        shutil.rmtree(self.path("bb", "copy"), ignore_errors=True)
        if evidence:
            with open(self.path("evidence-basebackup-debug.txt"), "w") as fh:
                fh.write("=== pitrkit standby -B (fresh), debug: on, last repetition ===\n" + evidence["fresh_stderr"]
                         + "\n=== pitrkit standby -B (re-sync) ===\n" + evidence["resync_stderr"])
        self.pg_stop(c, "fast")
        shutil.rmtree(c["data"], ignore_errors=True)
        out = {"scale": scale, "db_bytes": db_bytes, "reps": R, "copy_bytes": sizes, "contenders": {}}
        ref = t["pg_basebackup -X none"]
        fresh = t["pitrkit -B (fresh)"]
        for name, xs in t.items():
            o = {}
            if name in errors:
                o["na"] = "FAILED: " + errors[name][-400:]
            if xs:
                o["median_s"] = med(xs)
                o["mb_s"] = db_bytes / MiB / med(xs)
                if len(ref) == len(xs):
                    o["ratio_vs_pg_basebackup"] = med([a / b for a, b in zip(xs, ref)])
                if busy[name]:
                    o["cpu_cores_busy"] = med([b[0] for b in busy[name]])
                    o["iowait_cores"] = med([b[1] for b in busy[name]])
                if name.endswith("unchanged)") and len(fresh) == len(xs):
                    o["fraction_of_fresh"] = med([a / b for a, b in zip(xs, fresh)])
            out["contenders"][name] = o
        return out

    @staticmethod
    def du(d):
        total = 0
        for root, _, files in os.walk(d):
            for n in files:
                try:
                    total += os.lstat(os.path.join(root, n)).st_size
                except OSError:
                    pass
        return total

    # -- cleanup -----------------------------------------------------------------
    def cleanup(self):
        for c in list(self.clusters):
            try:
                self.pg_stop(c, "immediate")
            except Exception:  # noqa: BLE001
                pass
        cm = self.path("cm")
        if os.path.isdir(cm):
            for p in os.listdir(cm):
                subprocess.run(["ssh", "-o", f"ControlPath={cm}/{p}", "-O", "exit", "127.0.0.1"],
                               capture_output=True, env=self.env)


def inner(work):
    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    b = Bench(work)
    results = {"settings": b.s, "machine": b.setup["machine"], "sections": {}, "errors": {}}
    try:
        b.detect_features()
        results["features"] = b.features
        need_segs = any(x in b.s["sections"] for x in ("local", "ssh", "restore"))
        if need_segs:
            t = time.time()
            b.make_segments()
            results["generation_s"] = round(time.time() - t, 1)
        for name, fn in (("local", b.bench_local), ("ssh", b.bench_ssh), ("restore", b.bench_restore),
                         ("sustained", b.bench_sustained), ("basebackup", b.bench_basebackup)):
            if name not in b.s["sections"]:
                continue
            t = time.time()
            try:
                results["sections"][name] = fn()
                results["sections"][name]["section_s"] = round(time.time() - t, 1)
            except (Failed, OSError, subprocess.SubprocessError, ValueError, AttributeError) as e:
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
        b.cleanup()
        results["notes"] = b.notes
        with open(os.path.join(work, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(work, "results.md"), "w") as f:
            f.write(report(results))
    return 0 if not results["errors"] else 1


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

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

    loc = sec.get("local")
    if loc:
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
        if loc.get("pairs"):
            L.append("| pitrkit vs pgBackRest, same settings | speed-up per segment | size pitrkit/pgBackRest |")
            L.append("|---|---:|---:|")
            for pk, p in loc["pairs"].items():
                L.append(f"| {pk} vs {p['vs']} | {p['speedup']:.2f}x | {fmt(p['size_vs'], '.3f')} |")
            L.append("")
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

    ssh = sec.get("ssh")
    if ssh:
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

    sus = sec.get("sustained")
    if sus:
        L.append(f"### 3. Sustained: archive_command = pitrkit ({sus['codec']}) under pgbench -c {sus['clients']} "
                 f"for {sus['secs']:.0f} s (scale {sus['scale']}, synchronous_commit=off, checkpoint_timeout=30s)\n")
        L.append("| WAL generated | WAL archived | tps | max .ready backlog | .ready at end of load | drain time | failed calls |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|")
        L.append(f"| {sus['wal_generated_mb_s']:.1f} MB/s | {sus['archived_mb_s']:.1f} MB/s | {fmt(sus['tps'], '.0f')} | "
                 f"{sus['max_ready']} | {sus['ready_at_end_of_load']} | {sus['drain_s']:.1f} s | {sus['failed']} |")
        L.append("")

    rst = sec.get("restore")
    if rst:
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

    bb = sec.get("basebackup")
    if bb:
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

    if loc:
        for pk in ("pitrkit none", "pitrkit zstd-1"):
            o = loc["contenders"].get(pk, {})
            if o.get("max_rss_kb"):
                targets.append((f"one archive call ({pk[8:]}) peak RSS under 20 MB", f"{o['max_rss_kb'] / 1024:.1f} MB",
                                o["max_rss_kb"] / 1024 < 20))
            else:
                targets.append((f"one archive call ({pk[8:]}) peak RSS under 20 MB", o.get("na", "not measured"), None))

    if targets:
        L.append("### Targets (issue 4)\n")
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, ~3 minutes")
    ap.add_argument("--binary", default="target/release/pitrkit", help="the pitrkit binary to benchmark")
    ap.add_argument("--inner", metavar="WORKDIR", help=argparse.SUPPRESS)
    ap.add_argument("--report", metavar="RESULTS_JSON", help="only print the report of an earlier results.json")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            print(report(json.load(f)))
        return 0
    if args.inner:
        return inner(args.inner)
    return outer(args)


if __name__ == "__main__":
    sys.exit(main())
