"""The private sshd on 127.0.0.1 that the ssh and base-backup sections ship to.

Its sshd_config is the test harness's (tests/common/mod.rs, `Sshd::start`)
line for line, except `LogLevel INFO` (the tests want VERBOSE for their
diagnostics). The harness itself is Rust, owned by a test's lifetime and
runs its clients through runuser, so the bench cannot call it; keep the
two configurations in step by hand.
"""

import os
import shutil
import subprocess
import time

from .common import free_port


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
    # UsePAM as root: Debian's postgres account is locked, and without PAM sshd
    # rejects even key logins to locked accounts.
    base = (
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {host_key}\nPidFile {d}/sshd.pid\n"
        f"AuthorizedKeysFile {ak}\nStrictModes no\nUsePAM {'yes' if as_root else 'no'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        f"PermitRootLogin no\nAllowUsers {user}\nUseDNS no\nPrintMotd no\nPrintLastLog no\n"
        "X11Forwarding no\nMaxStartups 100:30:200\nMaxSessions 50\nSubsystem sftp internal-sftp\nLogLevel INFO\n"
    )
    # OpenSSH >= 9.8 penalises sources with failed logins; older sshd rejects the keyword.
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
