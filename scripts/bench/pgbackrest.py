"""pgBackRest as a contender: one configuration pointing at the generator
cluster, and a stanza-created repository template copied per destination."""

import os
import shutil


class PgBackRest:
    def __init__(self, runner, cluster, sock, home="pgbr", extra=""):
        """`home`: its directory in the work dir; `extra`: more [global] lines."""
        self.r = runner
        self.conf = runner.write(f"{home}/pgbackrest.conf", (
            "[global]\n"
            f"log-path={runner.mkdir(home, 'log')}\nlock-path={runner.mkdir(home, 'lock')}\n"
            f"spool-path={runner.mkdir(home, 'spool')}\nlog-level-console=warn\nlog-level-stderr=warn\n"
            "log-level-file=off\narchive-async=n\n" + extra +
            f"[bench]\npg1-path={cluster['data']}\npg1-port={cluster['port']}\npg1-socket-path={sock}\n"))
        self.template = runner.path(home, "template")
        self.run("stanza-create", repo=self.template)

    def argv(self, *args, repo, extra=()):
        return (["pgbackrest", f"--config={self.conf}", "--stanza=bench", f"--repo1-path={repo}"]
                + list(extra) + list(args))

    def run(self, *args, repo, extra=()):
        return self.r.run(self.argv(*args, repo=repo, extra=extra))

    def fresh_repo(self, rel):
        dst = self.r.path(rel)
        if os.path.exists(dst):
            shutil.rmtree(dst)
        shutil.copytree(self.template, dst, symlinks=True)
        return dst

    @staticmethod
    def compress_args(ct, lvl):
        return [f"--compress-type={ct}"] + ([f"--compress-level={lvl}"] if lvl is not None else [])
