"""Throw-away PostgreSQL clusters in the work directory (same settings as the
test harness's PgCluster: trust auth, no TCP, a private socket directory)."""

import os

from .common import free_port


class Clusters:
    def __init__(self, runner, pgbin):
        self.r = runner
        self.pgbin = pgbin
        self.sock = runner.mkdir("sock")
        self.running = []

    def initdb(self, name, conf):
        data = self.r.path(name)
        self.r.run([f"{self.pgbin}/initdb", "-D", data, "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"])
        port = free_port()
        with open(os.path.join(data, "postgresql.conf"), "a") as f:
            f.write(f"\n# --- pitrkit bench ---\nlisten_addresses = ''\nport = {port}\n"
                    f"unix_socket_directories = '{self.sock}'\nlog_line_prefix = '%m [%p] '\n"
                    f"shared_buffers = '256MB'\n{conf}\n")
        return {"data": data, "port": port, "log": self.r.path(name + ".log")}

    def start(self, c, timeout=600):
        self.running.append(c)
        self.r.run([f"{self.pgbin}/pg_ctl", "-D", c["data"], "-l", c["log"], "-w", "-t", str(timeout), "start"],
                   timeout=timeout + 30)

    def adopt(self, c):
        """A cluster started by other means (pg_ctl -W): stopped by stop_all()."""
        self.running.append(c)

    def stop(self, c, mode="fast"):
        if os.path.exists(os.path.join(c["data"], "postmaster.pid")):
            self.r.run([f"{self.pgbin}/pg_ctl", "-D", c["data"], "-m", mode, "-w", "-t", "120", "stop"], check=False)
        if c in self.running:
            self.running.remove(c)

    def stop_all(self):
        for c in list(self.running):
            try:
                self.stop(c, "immediate")
            except Exception:  # noqa: BLE001
                pass

    def psql(self, c, sql, db="postgres"):
        r = self.r.run([f"{self.pgbin}/psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.sock,
                        "-p", str(c["port"]), "-d", db, "-c", sql])
        return r.stdout.strip()

    def pgbench(self, c, *args, timeout=3600):
        return self.r.run([f"{self.pgbin}/pgbench", "-h", self.sock, "-p", str(c["port"])] + list(args) + ["postgres"],
                          timeout=timeout)

    def pgbench_argv(self, c, *args):
        return [f"{self.pgbin}/pgbench", "-h", self.sock, "-p", str(c["port"])] + list(args) + ["postgres"]
