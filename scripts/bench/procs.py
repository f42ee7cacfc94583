"""Finding this run's leftover processes (and other runs of the benchmark)."""

import os
import pwd
import signal
import subprocess


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
        if work in cmdline_of(pid):
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
            # "bench.py --inner": a run of the single-file benchmark of older checkouts.
            if ("bench --inner" in cmd or "bench.py --inner" in cmd) and "pitrkit-bench-work." in cmd:
                found.append(int(pid))
    return found
