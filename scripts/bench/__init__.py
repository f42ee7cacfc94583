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
  6. object storage: pitrkit archive_urls, pgbackrest archive-push repo1-type=s3
                     and one plain PUT per segment against a local moto_server
                     (TLS), and backup throughput to S3 (sections/s3.py);
  7. backup:         `pitrkit backup` (full, zstd) against `pgbackrest backup
                     --type=full` (zst, process-max = cores, archive-copy=y),
                     the incremental of the unchanged database against the
                     full, `pitrkit recover --immediate` against `pgbackrest
                     restore` (files only), and the size of both backups;
  8. micro:          the Rust micro-benchmarks in benches/ (codecs against
                     the C tools, durable place) on one of the real segments;
  and the peak RSS of one archive call and of `--flush`.
Every input is real WAL made by pgbench in a throw-away cluster. pitrkit's
own step timings come from PITRKIT_TIMINGS (one JSON line per step), never
from its log text.

Structure: as root, the outer process makes the work directory (owned by
postgres), starts a private sshd on 127.0.0.1 and runs the inner process as
`postgres` (PostgreSQL and pitrkit refuse root), so no timed call goes through
runuser. The outer process always cleans up: it stops whatever postmaster,
sshd or ssh control master is left in the work directory and removes it.

Modules: cli (arguments), outer (work dir, sshd, inner process, cleanup),
sshd, procs (leftover processes), machine; inner (the driver), context (what
sections share), runner (running and timing programs), clusters (PostgreSQL),
walgen (the WAL set), pitrkit and pgbackrest (contender setup), contenders
(who is compared, with which command line), timings (PITRKIT_TIMINGS),
sections/* (one per section), micro (cargo bench), report (markdown).

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
  BENCH_BACKUP_SCALE    pgbench scale of the backup database   70 / 5
  BENCH_BACKUP_REPS     backup repetitions (alternating)        5 / 5
  BENCH_BACKUP_PGBR_LEVEL pgBackRest's zst compress-level       1 / 1
  BENCH_NO_INCREMENTAL=1 skip `backup --incremental` (builds without it);
                        without it a build lacking the flag shows FAILED
  BENCH_MICRO_REPS      repetitions of each micro-benchmark    10 / 5
  BENCH_SECTIONS        comma list: local,ssh,restore,sustained,basebackup,s3,backup,micro
  BENCH_OUT             results directory        /tmp/pitrkit-bench
  BENCH_TMP             parent of the work directory          /tmp
  BENCH_KEEP=1          keep the work directory (post-mortems)
  BENCH_WAIT            seconds to wait for another run to finish  1800
"""
