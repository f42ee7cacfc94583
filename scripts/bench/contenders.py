"""Who is compared with whom, and the exact command line of each contender.
The sections decide how often and in which order they run."""

import os

# (name, kind, arg) of the local-archive section. The first one is the reference.
# The floor of issue 4: dd conv=fsync, mv, sync DIR. With dd's default 512-byte
# blocks the floor itself would be syscall-bound (~3x slower on this class of
# machine), so it copies in 1 MiB blocks. "cp floor" is the same with coreutils
# cp (copy_file_range, as pitrkit's std::fs::copy).
LOCAL = (
    [("floor: dd bs=1M conv=fsync + mv + sync dir", "floor", "dd"),
     ("cp floor: cp + sync file + mv + sync dir", "floor", "cp")]
    + [(f"pitrkit {label}", "pitrkit", codec)
       for codec, label in (("none", "none"), ("lz4", "lz4"), ("zstd", "zstd-1"), ("gzip", "gzip-6"))]
    + [(f"pgbackrest {label}", "pgbr", (ct, lvl))
       for ct, lvl, label in (("none", None, "none"), ("lz4", None, "lz4"), ("zst", 1, "zst-1"), ("gz", 6, "gz-6"))]
)

# pitrkit against pgBackRest at the same settings.
LOCAL_PAIRS = (("pitrkit lz4", "pgbackrest lz4"), ("pitrkit zstd-1", "pgbackrest zst-1"),
               ("pitrkit gzip-6", "pgbackrest gz-6"), ("pitrkit none", "pgbackrest none"))

# pitrkit's codecs next to the C tools (liblz4, libzstd, zlib) on the same segments.
CODEC_CLIS = (("none", None), ("lz4", ["lz4", "-1", "-q", "-c"]),
              ("zstd", ["zstd", "-1", "-q", "--check", "-c"]), ("gzip", ["gzip", "-6", "-c"]))


def local_command(ctx, kind, arg, slug, rep):
    """A fresh destination and the per-segment command line archiving into it."""
    r = ctx.r
    if kind == "floor":
        dest = r.fresh_dir("local", slug, rep)
        script = ('dd if="$1" of="$2/.tmp" bs=1M conv=fsync status=none' if arg == "dd"
                  else 'cp "$1" "$2/.tmp" && sync "$2/.tmp"') + ' && mv "$2/.tmp" "$2/$3" && sync "$2"'
        return dest, lambda seg: ["sh", "-c", script, "sh", seg, dest, os.path.basename(seg)]
    if kind == "pitrkit":
        dest = r.fresh_dir("local", slug, rep)
        ini = ctx.pk.archiver_ini(f"local/{slug}-{rep}.ini",
                                  f"local_archivedirs: {dest}\n" + ctx.features[arg]["lines"])
        ctx.pk.ok("archiver", "-C", ini, "-I")
        return dest, lambda seg: ctx.pk.argv("archiver", "-C", ini, "-F", seg)
    ct, lvl = arg
    dest = ctx.pgbr.fresh_repo(f"local/{slug}/{rep}")
    extra = ctx.pgbr.compress_args(ct, lvl)
    return dest, lambda seg: ctx.pgbr.argv("archive-push", seg, repo=dest, extra=extra)


def ssh(features, cm_dir):
    """(name, kind, options) of the ssh-shipping section; the first one is the reference."""
    cm_opts = f"ControlMaster=auto ControlPath={cm_dir}/%C ControlPersist=60"
    contenders = [
        ("rsync per segment (pitrtools)", "rsync", {}),
        ("one rsync of all N segments (bound for batching)", "rsync1", {}),
        ("pitrkit sync (inline ship per call)", "sync", {}),
        ("pitrkit async calls + --flush", "async", {}),
    ]
    if features["lookahead"]["ok"]:
        # What PostgreSQL does when it has a backlog: N .ready files, one call each,
        # .ready renamed to .done after every success. Look-ahead batches them.
        contenders.append(("pitrkit async, PostgreSQL backlog of N .ready (lookahead)", "backlog", {}))
    contenders.append(("pitrkit spool-only calls + one --flush (batched)", "batched", {}))
    if features["ssh_control_persist"]["ok"]:
        contenders.append(("pitrkit sync, ssh_control_persist: 0 (new connection per call)", "sync",
                           {"lines": "ssh_control_persist: 0\n"}))
    else:
        contenders.append(("pitrkit sync + ssh ControlPersist (via ssh_options)", "sync", {"ssh_extra": cm_opts}))
    if features["lz4"]["ok"]:
        # Shipping is CPU-bound on small machines (ssh cipher + rsync): fewer bytes
        # on the wire is what batching alone cannot give.
        contenders.append(("pitrkit batched + slave_compression: lz4", "batched",
                           {"lines": "ssh_control_persist: 60\nslave_compression: lz4\n", "suffix": ".lz4"}))
    return contenders


def ship_ini(ctx, slug, rep, mode, opts, port=None, debug=False):
    """archiver.ini shipping to the loopback sshd (`port`: an unreachable one instead)."""
    ssh_lines = ctx.pk.ssh_ini_lines()
    if port is not None:
        ssh_lines = ssh_lines.replace(f"ssh_port: {ctx.pk.ssh['port']}", f"ssh_port: {port}")
    if opts.get("ssh_extra"):
        ssh_lines = ssh_lines.replace("IdentitiesOnly=yes", "IdentitiesOnly=yes " + opts["ssh_extra"])
    path = ctx.r.path
    body = (f"slaves: 127.0.0.1\nl_archivedir: {path('ship', slug, str(rep), 'queue')}\n"
            f"r_archivedir: {path('ship', slug, str(rep), 'remote')}\nship_mode: {mode}\n"
            f"queue_wait: {3600 if mode == 'batched' else 0}\n" + ssh_lines + opts.get("lines", ""))
    body = body.replace("ship_mode: batched", "ship_mode: async")
    return ctx.pk.archiver_ini(f"ship/{slug}-{rep}{'-dead' if port else ''}.ini", body, debug=debug)


def restore(ctx, repos, arch, ini_plain, ini_zst):
    """(name, argv(wal name, destination)) of the per-segment restore section; first: reference."""
    pk, pgbr = ctx.pk, ctx.pgbr
    return [
        ("pgbackrest archive-get (none)", lambda n, d: pgbr.argv("archive-get", n, d, repo=repos["none"])),
        ("pgbackrest archive-get (zst-1)", lambda n, d: pgbr.argv("archive-get", n, d, repo=repos["zst"])),
        ("pitrkit restore (plain)", lambda n, d: pk.argv("restore", "-C", ini_plain, n, d)),
        ("pitrkit restore (zstd)", lambda n, d: pk.argv("restore", "-C", ini_zst, n, d)),
        ("cp (plain)", lambda n, d: ["cp", os.path.join(arch, n), d]),
    ]


def recovery(ctx, arch, zarch, ini_plain, ini_zst):
    """(name, restore_command) of the standby-recovery section; the first one is the reference."""
    b = ctx.pk.bin
    contenders = [
        ("cp", f"cp {arch}/%f %p"),
        ("pitrkit restore (plain)", f"{b} restore -C {ini_plain} %f %p"),
        ("pitrkit restore (zstd)", f"{b} restore -C {ini_zst} %f %p"),
    ]
    if ctx.features.get("restore_prefetch", {}).get("ok"):
        ini_pf = ctx.r.write("restore/zst-prefetch.ini", f"[DEFAULT]\narchivedir: {zarch}\nrestore_prefetch: 8\n")
        contenders.append(("pitrkit restore (zstd, restore_prefetch: 8)", f"{b} restore -C {ini_pf} %f %p"))
    return contenders


BASEBACKUP = ("pitrkit -B (fresh)", "pitrkit -B (re-sync, unchanged)", "pg_basebackup -X none")

# The OpenSSH ciphers measured for -B (issue 13): -B with each one forced through
# ssh_options, and the ssh transport alone with it (the master's data directory as
# a tar stream through ssh into /dev/null: no rsync, no writing), the ceiling.
BB_CIPHERS = ("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes128-ctr")


def bb_cipher(c):
    return f"pitrkit -B, ssh_options: Ciphers={c}"


def bb_transport(c):
    return f"ssh transport alone, {c} (remote tar > /dev/null)"
