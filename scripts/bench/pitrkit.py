"""pitrkit as a contender: its configuration files, the ssh settings it ships
with, and which features this build has (probed, so an older build still runs)."""

import re

from .common import log


class Pitrkit:
    def __init__(self, runner, binary, ssh, user):
        self.r = runner
        self.bin = binary
        self.ssh = ssh
        self.user = user

    def ok(self, *args, env_extra=None):
        return self.r.run([self.bin] + list(args), env_extra=env_extra)

    def argv(self, *args):
        return [self.bin] + list(args)

    def archiver_ini(self, rel, body, debug=False):
        return self.r.write(rel, "[DEFAULT]\nnotify_ok:\nnotify_warning:\nnotify_critical:\n"
                            f"debug: {'on' if debug else 'off'}\n" + body)

    def ssh_ini_lines(self):
        return (f"user: {self.user}\nssh_port: {self.ssh['port']}\nssh_identity: {self.ssh['identity']}\n"
                f"ssh_options: UserKnownHostsFile={self.ssh['known_hosts']} GlobalKnownHostsFile=/dev/null "
                f"IdentitiesOnly=yes\nstrict_host_key_checking: yes\nssh_timeout: 10\n")

    def ssh_argv(self, extra=()):
        return (["ssh", "-p", str(self.ssh["port"]), "-i", self.ssh["identity"],
                 "-o", f"UserKnownHostsFile={self.ssh['known_hosts']}", "-o", "GlobalKnownHostsFile=/dev/null",
                 "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
                + list(extra))

    def probe(self, lines):
        """Does this build accept these archiver.ini lines? (exit 0 'Config OK')."""
        ini = self.archiver_ini("probe/probe.ini", f"local_archivedirs: {self.r.path('probe', 'dest')}\n" + lines)
        r = self.r.run([self.bin, "archiver", "-C", ini], check=False)
        if r.returncode == 0:
            return True, ""
        msg = (r.stderr or r.stdout).strip()
        m = re.search(r"unknown key '[^']*'", msg)
        return False, m.group(0) if m else (msg.splitlines()[-1] if msg else f"exit {r.returncode}")

    def detect_features(self, notes):
        f = {}
        for codec, level in (("lz4", None), ("zstd", 1), ("gzip", 6)):
            lines = f"compression: {codec}\n" + (f"compression_level: {level}\n" if level is not None else "")
            ok, why = self.probe(lines)
            if not ok and level is not None and "compression_level" in why:
                ok2, _ = self.probe(f"compression: {codec}\n")
                if ok2:
                    notes.append(f"compression_level is not accepted; {codec} runs at pitrkit's default level")
                    lines = f"compression: {codec}\n"
                    ok, why = True, ""
            f[codec] = {"ok": ok, "why": why, "lines": lines}
        f["none"] = {"ok": True, "why": "", "lines": ""}
        ok_none, _ = self.probe("compression: none\n")
        if ok_none:
            f["none"]["lines"] = "compression: none\n"
        ok, why = self.probe("ssh_control_persist: 60\n")
        f["ssh_control_persist"] = {"ok": ok, "why": why}
        ok, why = self.probe("lookahead: 16\n")
        f["lookahead"] = {"ok": ok, "why": why}
        # restore_prefetch lives in standby.ini: an unknown key is a configuration error (exit 200).
        ini = self.r.write("probe/standby.ini",
                           f"[DEFAULT]\narchivedir: {self.r.mkdir('probe', 'arch')}\nrestore_prefetch: 4\n")
        r = self.r.run([self.bin, "restore", "-C", ini, "000000010000000000000001", self.r.path("probe", "x")],
                       check=False)
        f["restore_prefetch"] = {"ok": "unknown key" not in (r.stderr + r.stdout),
                                 "why": (re.search(r"unknown key '[^']*'", r.stderr) or [""])[0]}
        log("features: " + ", ".join(f"{k}={'yes' if v['ok'] else 'no'}" for k, v in f.items()))
        return f
