"""pgBackRest as a contender: one configuration pointing at the generator
cluster, and a stanza-created repository template copied per destination."""

import os
import shutil


class PgBackRest:
    def __init__(self, runner, cluster, sock):
        self.r = runner
        self.conf = runner.write("pgbr/pgbackrest.conf", (
            "[global]\n"
            f"log-path={runner.mkdir('pgbr', 'log')}\nlock-path={runner.mkdir('pgbr', 'lock')}\n"
            f"spool-path={runner.mkdir('pgbr', 'spool')}\nlog-level-console=warn\nlog-level-stderr=warn\n"
            "log-level-file=off\narchive-async=n\n"
            f"[bench]\npg1-path={cluster['data']}\npg1-port={cluster['port']}\npg1-socket-path={sock}\n"))
        self.template = runner.path("pgbr", "template")
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
