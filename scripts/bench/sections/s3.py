"""6. Object storage (issue 11), against one local moto_server behind socat
(TLS with a certificate for 127.0.0.1 from a throw-away CA made here):
  - per-segment archive: the floor (one plain PUT per segment: curl
    --aws-sigv4), pitrkit `archive_urls`, and `pgbackrest archive-push` with
    repo1-type=s3, interleaved per repetition, ratios paired per repetition;
  - backup throughput: `pitrkit backup` of the generator cluster into an
    s3:// backup_dir, in MB/s of the data directory's size.
All three speak HTTPS to the same server: pitrkit trusts the certificate
through SSL_CERT_FILE (rustls-native-certs), curl with --cacert; pgBackRest
with repo1-storage-verify-tls=n (2.45 matches the host only against DNS
names, not the IP subjectAltName).  moto answers slower than AWS S3 and keeps every
object in memory: the absolute figures say little, the ratios are the point."""

import glob
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time

from ..common import Failed, log, med, rotated, summarize

KEY, SECRET, REGION, BUCKET = "AKIAPITRKITBENCH0001", "pitrkit-bench-secret", "us-east-1", "pitrkit-bench"
CANDS = (("floor: one PUT per segment (curl --aws-sigv4)", "floor"),
         ("pitrkit archive_urls", "pitrkit"),
         ("pgbackrest archive-push repo1-type=s3", "pgbr"))


def moto_argv():
    """moto_server, and the environment it needs. The virtualenv's own
    interpreter may be out of this user's reach (a venv made from root's
    pyenv): then this interpreter runs moto from the venv's site-packages."""
    venv = os.environ.get("PITRKIT_MOTO_VENV") or "/opt/pitrkit-moto"
    prog = os.path.join(venv, "bin", "moto_server")
    if os.access(prog, os.X_OK) and os.access(os.path.join(venv, "bin", "python3"), os.X_OK):
        return [prog], {}
    sp = glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))
    if sp:
        return [sys.executable, "-c", "import sys; from moto.server import main; sys.exit(main())"], {"PYTHONPATH": sp[0]}
    if shutil.which("moto_server"):
        return [shutil.which("moto_server")], {}
    raise Failed(f"moto_server not found in {venv} or PATH (scripts/lib/moto.sh installs it)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    """moto_server on a free loopback port, TLS with our own certificate."""

    def __init__(self, r):
        self.r = r
        d = r.mkdir("s3")
        # A CA (trusted by the clients) and the server's certificate it signs:
        # rustls refuses a CA certificate used as the server's own.
        self.cert, cakey = os.path.join(d, "ca.pem"), os.path.join(d, "ca.key")
        key, csr, leaf = (os.path.join(d, n) for n in ("key.pem", "server.csr", "server.pem"))
        r.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=bench CA",
               "-keyout", cakey, "-out", self.cert])
        r.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", key,
               "-out", csr])
        ext = r.write("s3/ext.cnf", "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n")
        r.run(["openssl", "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", cakey, "-CAcreateserial",
               "-days", "2", "-extfile", ext, "-out", leaf])
        # moto's server (werkzeug) ends a TLS connection without close_notify,
        # which pgBackRest (OpenSSL 3) takes for an error ("unexpected eof"):
        # so moto speaks plain HTTP behind socat, which terminates TLS for
        # every contender alike.
        backend, self.port = free_port(), free_port()
        self.log = open(os.path.join(d, "moto.log"), "w")
        argv, env = moto_argv()
        self.procs = [subprocess.Popen(argv + ["-H", "127.0.0.1", "-p", str(backend)], stdout=self.log,
                                       stderr=self.log, stdin=subprocess.DEVNULL, env=dict(os.environ, **env))]
        if not shutil.which("socat"):
            raise Failed("socat not found (apt-get install socat): the TLS end of the S3 server")
        self.procs.append(subprocess.Popen(
            ["socat", f"OPENSSL-LISTEN:{self.port},bind=127.0.0.1,reuseaddr,fork,cert={leaf},key={key},verify=0",
             f"TCP:127.0.0.1:{backend}"], stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL))
        self.endpoint = f"https://127.0.0.1:{self.port}"
        deadline = time.time() + 60
        while self.request("PUT", f"/{BUCKET}") != 200:
            if time.time() > deadline or any(p.poll() is not None for p in self.procs):
                raise Failed(f"moto_server behind socat did not answer on {self.endpoint}")
            time.sleep(0.2)

    def request(self, method, path):
        """One request (moto outside IAM mode checks no signature); the status or None."""
        try:
            c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30,
                                            context=ssl.create_default_context(cafile=self.cert))
            c.request(method, path, headers={"Authorization": f"AWS4-HMAC-SHA256 Credential={KEY}/20260101/"
                                             f"{REGION}/s3/aws4_request, SignedHeaders=host, Signature=0"})
            return c.getresponse().status
        except OSError:
            return None

    def stop(self):
        for p in self.procs:
            p.terminate()
            p.wait()
        self.log.close()


def setup(ctx, moto):
    """Each contender's per-segment command line for repetition `rep`."""
    r = ctx.r
    creds = r.write("s3/credentials", f"[default]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n")
    os.chmod(creds, 0o600)
    s3_lines = (f"s3_endpoint: {moto.endpoint}\ns3_region: {REGION}\ns3_path_style: on\n"
                f"s3_credentials_file: {creds}\n")
    env = {"SSL_CERT_FILE": moto.cert}
    g = ctx.wal.cluster
    pgbr_conf = r.write("s3/pgbackrest.conf", (
        "[global]\n"
        f"log-path={r.mkdir('s3', 'pgbr-log')}\nlock-path={r.mkdir('s3', 'pgbr-lock')}\n"
        f"spool-path={r.mkdir('s3', 'pgbr-spool')}\nlog-level-console=warn\nlog-level-stderr=warn\n"
        "log-level-file=off\narchive-async=n\ncompress-type=none\n"
        f"repo1-type=s3\nrepo1-s3-bucket={BUCKET}\nrepo1-s3-endpoint=127.0.0.1\nrepo1-storage-port={moto.port}\n"
        f"repo1-s3-region={REGION}\nrepo1-s3-uri-style=path\nrepo1-s3-key={KEY}\nrepo1-s3-key-secret={SECRET}\n"
        # pgBackRest 2.45 matches the host only against DNS names, never an
        # IP subjectAltName: the certificate cannot be checked at 127.0.0.1.
        "repo1-storage-verify-tls=n\n"
        f"[bench]\npg1-path={g['data']}\npg1-port={g['port']}\npg1-socket-path={ctx.pg.sock}\n"))
    os.chmod(pgbr_conf, 0o600)

    def commands(rep):
        pre = f"rep{rep}"
        ini = ctx.pk.archiver_ini(f"s3/archiver-{rep}.ini", f"archive_urls: s3://{BUCKET}/{pre}/pitrkit\n"
                                  "compression: none\n" + s3_lines)
        ctx.pk.ok("archiver", "-C", ini, "-I", env_extra=env)
        pgbr = ["pgbackrest", f"--config={pgbr_conf}", "--stanza=bench", f"--repo1-path=/{pre}/pgbr"]
        r.run(pgbr + ["stanza-create"])
        url = f"{moto.endpoint}/{BUCKET}/{pre}/floor/"
        return {
            "floor": lambda seg: ["curl", "-sSf", "--cacert", moto.cert, "--aws-sigv4", f"aws:amz:{REGION}:s3",
                                  "--user", f"{KEY}:{SECRET}", "-T", seg, url + os.path.basename(seg)],
            "pitrkit": lambda seg: ctx.pk.argv("archiver", "-C", ini, "-F", seg),
            "pgbr": lambda seg: pgbr + ["archive-push", seg],
        }

    return commands, env, s3_lines


def run(ctx):
    moto = Moto(ctx.r)
    try:
        return measure(ctx, moto)
    finally:
        moto.stop()
        shutil.rmtree(ctx.r.path("s3"), ignore_errors=True)


def measure(ctx, moto):
    segs, R = ctx.wal.segs, ctx.s["reps"]
    commands, env, s3_lines = setup(ctx, moto)
    res = {k: {"lat": [], "rep_total": [], "rep_median": [], "errors": []} for _, k in CANDS}
    active = [k for _, k in CANDS]
    for rep in range(R):
        log(f"s3 archive rep {rep + 1}/{R}")
        try:
            cmds = commands(rep)
        except Failed as e:
            raise Failed(f"s3 setup (rep {rep + 1}): {e}")
        for kind in rotated(list(active), rep):
            lats = []
            for seg in segs:
                c = ctx.r.timed(cmds[kind](seg), env_extra=env)
                if c.rc != 0:
                    res[kind]["errors"].append(f"{os.path.basename(seg)}: exit {c.rc}: {c.err.strip()[-500:]}")
                    break
                lats.append(c.secs)
            if len(lats) != len(segs):
                res[kind]["na"] = "FAILED: " + res[kind]["errors"][-1]
                active.remove(kind)
                continue
            res[kind]["lat"].extend(lats)
            res[kind]["rep_total"].append(sum(lats))
            res[kind]["rep_median"].append(med(lats))
    out = {"segments": len(segs), "reps": R, "endpoint": "moto_server behind socat (TLS), 127.0.0.1", "contenders": {}}
    ref = res["floor"]
    for name, kind in CANDS:
        r = res[kind]
        o = {"kind": kind}
        if "na" in r:
            o["na"] = r["na"]
        if r["lat"]:
            o.update(summarize(r, ref if ref["lat"] else None, ctx.wal.seg_bytes))
        out["contenders"][name] = o
    a, b = res["pitrkit"]["rep_median"], res["pgbr"]["rep_median"]
    if a and len(a) == len(b):
        out["pitrkit_vs_pgbackrest"] = med([y / x for x, y in zip(a, b)])
    out["backup"] = backup(ctx, env, s3_lines)
    return out


def backup(ctx, env, s3_lines):
    """`pitrkit backup` of the generator cluster into s3://, timed once per
    repetition (each into its own prefix); MB/s of the data directory."""
    g, r = ctx.wal.cluster, ctx.r
    secs, size = [], None
    for rep in range(min(ctx.s["reps"], 3)):
        ini = r.write(f"s3/backup-{rep}.ini", (
            f"[DEFAULT]\npgdata: {g['data']}\nport: {g['port']}\nsocket_dir: {ctx.pg.sock}\n"
            f"archivedir: {ctx.wal.arch}\nbackup_dir: s3://{BUCKET}/backup{rep}\ncompression: none\n"
            "notify_ok:\nnotify_warning:\nnotify_critical:\n" + s3_lines))
        # One archive holds WAL for one repository: each repetition's fresh
        # prefix would be refused while the previous one's hold stands.
        hold = os.path.join(ctx.wal.arch, ".pitrkit-backup-hold")
        if os.path.exists(hold):
            os.remove(hold)
        c = r.timed(ctx.pk.argv("backup", "-C", ini), env_extra=env)
        if c.rc != 0:
            return {"na": f"FAILED: exit {c.rc}: {c.err.strip()[-500:]}"}
        secs.append(c.secs)
        if size is None:
            # The bytes the backup read (its manifest), not du of pgdata: pg_wal is not copied.
            listed = json.loads(r.run(ctx.pk.argv("backup", "-C", ini, "--list", "--json"),
                                      env_extra=env).stdout)
            size = listed["backups"][0]["size_original"]
    return {"seconds": secs, "bytes": size, "mb_s": med([size / 1e6 / s for s in secs])}


def report(sec):
    """The section's markdown (report.py appends it)."""
    if not sec:
        return []
    L = [f"### Object storage: archive to S3 ({sec['segments']} segments x {sec['reps']} reps, "
         f"{sec['endpoint']})\n", "| contender | median ms | p90 ms | MB/s | x floor |", "|---|---:|---:|---:|---:|"]
    for name, o in sec["contenders"].items():
        if "na" in o:
            L.append(f"| {name} | {o['na'][:200]} | | | |")
            continue
        L.append(f"| {name} | {o['median_ms']:.1f} | {o['p90_ms']:.1f} | {o['mb_s']:.1f} | "
                 f"{o.get('ratio', float('nan')):.2f} |")
    L.append("")
    if sec.get("pitrkit_vs_pgbackrest"):
        L.append(f"pitrkit archive_urls is {sec['pitrkit_vs_pgbackrest']:.2f}x as fast as pgBackRest "
                 "archive-push to the same server (paired per repetition).\n")
    b = sec.get("backup", {})
    if "na" in b:
        L.append(f"Backup to S3: {b['na']}\n")
    elif b:
        L.append(f"Backup to S3: {b['bytes'] / 1e6:.0f} MB data directory in "
                 f"{', '.join(f'{s:.1f}' for s in b['seconds'])} s: {b['mb_s']:.1f} MB/s (median).\n")
    return L
