//! The standby against real components: a master archiving through
//! cmd_archiver over a private sshd, and cmd_standby -I / -B / -S / -F999 / -R
//! building, starting, promoting and recovering a second cluster.
mod common;

use common::fixtures;
use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

struct Pair {
    env: TestEnv,
    sshd: Sshd,
    master: PgCluster,
    ini: PathBuf,
    hooks: PathBuf,
    /// The standby's data directory, port and socket directory.
    pgdata: PathBuf,
    port: u16,
    sock: PathBuf,
    failover_marker: PathBuf,
    ts_master: PathBuf,
    ts_standby: PathBuf,
}

impl Pair {
    /// A master with a tablespace, archiving to the standby's archivedir over
    /// ssh, and a standby.ini for a second cluster on this host.
    fn new(name: &str, standby_extra: &str) -> Pair {
        Pair::with_master(name, |_| "listen_addresses = '127.0.0.1'\n".into(), standby_extra)
    }

    /// Like `new`, with the master's own settings from `master_conf`, which
    /// may first put files (certificates) into the environment.
    fn with_master(name: &str, master_conf: impl FnOnce(&TestEnv) -> String, standby_extra: &str) -> Pair {
        let env = TestEnv::new(name, Path::new(env!("CARGO_BIN_EXE_pitrkit")));
        let sshd = Sshd::start(&env);
        let archive = env.mkdir("standby_archive");
        let (hook, hooks) = fixtures::recording_hook(&env, "hooks");
        let archiver_ini = fixtures::archiver_ini(&env, &sshd, &archive, &hook, "");
        let init = run_output(
            env.command(&fixtures::cmd_link(&env, "cmd_archiver"))
                .arg("-C")
                .arg(&archiver_ini)
                .arg("-I"),
        );
        assert!(init.status.success(), "{}", describe_output(&init));
        let master = fixtures::archiving_master(&env, &archiver_ini, &master_conf(&env));
        let ts_master = env.mkdir("ts_master");
        master.psql(&format!("CREATE TABLESPACE ts1 LOCATION '{}'", ts_master.display()));
        // A non-superuser backup role using the SECURITY DEFINER helpers.
        let helpers = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/pitrkit_helpers.sql");
        master.psql(&fs::read_to_string(helpers).unwrap());
        master.psql(
            "CREATE ROLE pitrkit_backup LOGIN; GRANT USAGE ON SCHEMA pitrkit TO pitrkit_backup; \
             GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pitrkit TO pitrkit_backup",
        );

        let port = free_port();
        let sock = env.mkdir("standby_sock");
        let conf = |extra: &str| {
            format!(
                "port = {port}\nlisten_addresses = ''\nunix_socket_directories = '{}'\nhot_standby = on\n\
                 shared_buffers = '16MB'\narchive_mode = off\n{extra}",
                sock.display()
            )
        };
        let pg_conf = env.write("standby.conf", &conf(""));
        let failover_conf = env.write("failover.conf", &conf("work_mem = '7MB'\n"));
        let hba = env.write("pg_hba.conf", "local all all trust\nhost all all 127.0.0.1/32 trust\n");
        let failover_marker = env.path("failover_happened");
        let action = env.write(
            "failover.sh",
            &format!(
                "#!/bin/sh\necho \"$PITRKIT_EVENT $PGDATA\" > {}\n",
                failover_marker.display()
            ),
        );
        fs::set_permissions(&action, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let ts_standby = env.path("ts_standby");
        let pgdata = env.path("standby_data");
        let major = fs::read_to_string(master.datadir.join("PG_VERSION"))
            .unwrap()
            .trim()
            .to_string();
        let text = format!(
            "[DEFAULT]
pgversion: {major}
includepath: {bindir}
use_streaming_replication: no
port: {mport}
master_public_ip: 127.0.0.1
master_user: pitrkit_backup
master_db: postgres
master_pgdata: {mdata}
master_socket_dir: {msock}
user: {user}
ssh: {ssh}
ssh_timeout: 10
rsync_threads: 2
archivedir: {archive}
pgdata: {pgdata}
pg_conf: {pg_conf}
pg_hba_conf: {hba}
pg_conf_failover: {failover_conf}
pg_hba_conf_failover: {hba}
tablespace_map: {ts_master}={ts_standby}
logfile: {log}
notify_ok: {hook} ok
notify_warning: {hook} warning
notify_critical: {hook} critical
action_failover: {action}
wait_timeout: 120
debug: on
",
            bindir = pg_bindir().display(),
            mport = master.port,
            mdata = master.datadir.display(),
            msock = master.socket_dir.display(),
            user = sshd.user,
            ssh = sshd.ssh_command_line(),
            archive = archive.display(),
            pgdata = pgdata.display(),
            pg_conf = pg_conf.display(),
            hba = hba.display(),
            failover_conf = failover_conf.display(),
            ts_master = ts_master.display(),
            ts_standby = ts_standby.display(),
            log = env.path("standby.log").display(),
            hook = hook.display(),
            action = action.display(),
        );
        let ini = env.write("cmd_standby.ini", &fixtures::merge_ini(&text, standby_extra));
        Pair {
            env,
            sshd,
            master,
            ini,
            hooks,
            pgdata,
            port,
            sock,
            failover_marker,
            ts_master,
            ts_standby,
        }
    }

    fn standby(&self, args: &[&str]) -> std::process::Output {
        let mut c = self.env.command(&fixtures::cmd_link(&self.env, "cmd_standby"));
        c.arg("-C").arg(&self.ini).args(args);
        run_output(&mut c)
    }

    fn standby_ok(&self, args: &[&str]) -> String {
        let out = self.standby(args);
        assert!(
            out.status.success(),
            "cmd_standby {args:?} failed:\n{}\nstandby server log:\n{}",
            describe_output(&out),
            tail(&self.env.path("standby.log"), 30)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs cmd_standby expecting exit 1 and each of `says` in what it printed.
    fn refused(&self, args: &[&str], says: &[&str]) {
        let out = self.standby(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", describe_output(&out));
        for text in says {
            assert_says(&out, text);
        }
    }

    fn standby_psql(&self, sql: &str) -> Result<String, String> {
        let out = run_output(
            self.env
                .command(&client_program("psql"))
                .args(["-X", "-At", "-h"])
                .arg(&self.sock)
                .args(["-p", &self.port.to_string(), "-d", "postgres", "-c", sql]),
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Commits a little, switches and waits until the archive has it.
    fn ship_everything(&self) {
        let seg = self.master.switch_wal();
        assert!(
            self.master.wait_archived(&seg, WAIT),
            "master did not archive {seg}:\n{}",
            tail(&self.master.log, 30)
        );
    }

    fn hook_lines(&self) -> Vec<String> {
        fixtures::lines(&self.hooks)
    }

    /// Asserts that a `level` notification saying `text` was sent.
    fn assert_notified(&self, level: &str, text: &str) {
        let lines = self.hook_lines();
        assert!(
            lines.iter().any(|l| l.starts_with(level) && l.contains(text)),
            "no {level} notification with {text:?}: {lines:?}"
        );
    }

    fn archive(&self) -> PathBuf {
        self.env.path("standby_archive")
    }

    /// Names in the standby's archive directory, sorted.
    fn archived(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.archive())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Switches WAL and waits until the closed segment is in the standby's
    /// archive (shipping is asynchronous); returns its name.
    fn ship_and_wait(&self) -> String {
        let seg = self.master.switch_wal();
        assert!(
            wait_until(WAIT, || self.archived().iter().any(|n| n.starts_with(&seg))),
            "{seg} did not reach {}: {:?}\n{}",
            self.archive().display(),
            self.archived(),
            tail(&self.master.log, 30)
        );
        seg
    }

    fn count(&self, table: &str) -> String {
        self.standby_psql(&format!("SELECT count(*) FROM {table}")).unwrap()
    }
}

/// md5 of every row of `table`, in a stable order.
const CHECKSUM: &str = "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} t";

fn checksum(sql: impl Fn(&str) -> String, table: &str) -> String {
    sql(&CHECKSUM.replace("{}", table))
}

#[test]
fn base_backup_standby_catches_up_and_fails_over() {
    let p = Pair::new("sb_e2e", "restore_prefetch: 4");
    // Before the base backup: a point the standby will have replayed past.
    let early = p.master.psql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));
    let pgbench = client_program("pgbench");
    let bench = |args: &[&str]| {
        let mut c = p.env.command(&pgbench);
        c.arg("-h")
            .arg(&p.master.socket_dir)
            .args(["-p", &p.master.port.to_string()])
            .args(args)
            .arg("postgres");
        c
    };
    run_ok(&mut bench(&["-i", "-s", "2", "-q"]));
    p.master.psql("CREATE TABLE in_ts (id int, v text) TABLESPACE ts1; INSERT INTO in_ts SELECT g, md5(g::text) FROM generate_series(1, 5000) g");

    let out = p.standby_ok(&["-P"]);
    assert!(
        out.contains("primary (accepting writes)") && out.contains("installed"),
        "{out}"
    );
    let out = p.standby_ok(&["-I"]);
    assert!(out.contains("Standby is ready"), "{out}");
    assert!(p.pgdata.is_dir() && p.ts_standby.is_dir());

    // The copy runs while pgbench writes: a hot, non-exclusive backup.
    let mut load = bench(&["-T", "6", "-c", "2", "-n"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = p.standby_ok(&["-B"]);
    assert!(out.contains("base backup of 127.0.0.1"), "{out}");
    assert!(load.wait().unwrap().success());
    let label = fs::read_to_string(p.pgdata.join("backup_label")).unwrap();
    assert!(
        label.contains("START WAL LOCATION") && label.contains("pitrkit base backup"),
        "{label}"
    );
    let map = fs::read_to_string(p.pgdata.join("tablespace_map")).unwrap();
    assert!(
        map.contains(&p.ts_standby.display().to_string()) && !map.contains(&p.ts_master.display().to_string()),
        "{map}"
    );
    assert!(!p.pgdata.join("PITRKIT_BACKUP_INCOMPLETE").exists());
    assert!(
        !p.pgdata.join("postmaster.pid").exists(),
        "postmaster.pid must not be copied"
    );
    assert_eq!(
        fs::read_dir(p.pgdata.join("pg_wal"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .count(),
        0,
        "pg_wal contents must not be copied"
    );
    p.assert_notified("ok", "base backup");

    assert!(p.pgdata.join("pitrkit.spare").exists(), "-B marks a spare");
    let out = p.standby_ok(&["-S"]);
    assert!(out.contains("in recovery"), "{out}");
    assert!(p.pgdata.join("standby.signal").exists());
    assert!(!p.pgdata.join("pitrkit.spare").exists(), "-S: no spare any more");
    let auto = fs::read_to_string(p.pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains("restore_command = '") && auto.contains(" restore -C "),
        "{auto}"
    );
    assert_eq!(p.standby_psql("SELECT pg_is_in_recovery()").unwrap(), "t");

    // More writes on the master, shipped through the archive only.
    p.master
        .psql("INSERT INTO in_ts SELECT g, 'late' FROM generate_series(5001, 6000) g");
    let target_lsn = p.master.psql("SELECT pg_current_wal_lsn()");
    p.ship_everything();
    assert!(
        wait_until(WAIT, || p
            .standby_psql(&format!("SELECT pg_last_wal_replay_lsn() >= '{target_lsn}'"))
            .is_ok_and(|v| v == "t")),
        "standby did not reach {target_lsn}; its log:\n{}",
        tail(&p.env.path("standby.log"), 40)
    );
    for table in [
        "pgbench_accounts",
        "pgbench_branches",
        "pgbench_tellers",
        "pgbench_history",
        "in_ts",
    ] {
        let m = checksum(|s| p.master.psql(s), table);
        let s = checksum(|s| p.standby_psql(s).unwrap(), table);
        assert_eq!(m, s, "table {table} differs between master and standby");
    }

    // Failover is refused while the master lives...
    let out = p.standby(&["-F999"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert_says(&out, "refusing to fail over");
    assert_eq!(p.standby_psql("SELECT pg_is_in_recovery()").unwrap(), "t");
    // ...and so is -F999 -R on this stopped real standby, which is no
    // spare; a target it has replayed past is explained. Nothing changes.
    p.standby_ok(&["-A", "stop"]);
    let auto = fs::read_to_string(p.pgdata.join("postgresql.auto.conf")).unwrap();
    let now = p.master.psql("SELECT clock_timestamp()");
    p.refused(
        &["-F999", "-R", &now],
        &["refusing to fail over", "not a spare (standby.signal is present"],
    );
    p.refused(
        &["-F999", "-R", &early],
        &["cannot recover", "already holds the database as of"],
    );
    assert!(p.pgdata.join("standby.signal").exists() && !p.pgdata.join("recovery.signal").exists());
    assert_eq!(fs::read_to_string(p.pgdata.join("postgresql.auto.conf")).unwrap(), auto);
    p.standby_ok(&["-S"]);

    // ...and done once it is gone, but not with a failover file missing:
    // refused before anything changes, the standby still in recovery.
    p.master.stop();
    for (name, extra, named) in [
        (
            "no_failover_conf",
            "pg_conf_failover: /nonexistent/failover.conf",
            "/nonexistent/failover.conf",
        ),
        (
            "no_failover_action",
            "action_failover: /nonexistent/promoted.sh",
            "/nonexistent/promoted.sh",
        ),
    ] {
        let out = p.standby_with(&p.variant(name, extra), &["-F999"]);
        assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("refusing to fail over") && err.contains(named), "{err}");
        assert_eq!(p.standby_psql("SELECT pg_is_in_recovery()").unwrap(), "t");
        assert!(!p.pgdata.join("pitrkit.promoting").exists());
    }
    let out = p.standby_ok(&["-F999"]);
    assert!(out.contains("failover complete"), "{out}");
    assert_eq!(p.standby_psql("SELECT pg_is_in_recovery()").unwrap(), "f");
    p.standby_psql("CREATE TABLE after_failover(id int); INSERT INTO after_failover VALUES (1)")
        .unwrap();
    assert_eq!(
        p.standby_psql("SHOW work_mem").unwrap(),
        "7MB",
        "pg_conf_failover must be in effect"
    );
    let marker = fs::read_to_string(&p.failover_marker).expect("action_failover must run");
    assert!(marker.starts_with("failover "), "{marker}");
    p.assert_notified("ok", "failover complete");
    let _ = p.standby(&["-A", "stop"]);
    drop(p.sshd);
}

/// Names in `after` that are not in `before`, and the other way round.
fn listing_diff(before: &[String], after: &[String]) -> (Vec<String>, Vec<String>) {
    let added = after.iter().filter(|n| !before.contains(n)).cloned().collect();
    let removed = before.iter().filter(|n| !after.contains(n)).cloned().collect();
    (added, removed)
}

#[test]
fn a_spare_recovers_to_a_point_in_time_while_the_master_runs() {
    let p = Pair::new("sb_pitr", "restore_prefetch: 4");
    // A failover configuration that archives into the shared archive and
    // cleans it, with frequent restartpoints (which run the cleanup): a
    // recovery copy must do neither.
    let cleanup_ran = p.env.path("cleanup_ran");
    let mut failover_conf = fs::read_to_string(p.env.path("failover.conf")).unwrap();
    failover_conf.push_str(&format!(
        "archive_mode = on\narchive_command = 'cp %p {}/%f'\narchive_cleanup_command = 'touch {}'\n\
         log_checkpoints = on\nmin_wal_size = '32MB'\nmax_wal_size = '32MB'\n",
        p.archive().display(),
        cleanup_ran.display()
    ));
    p.env.write("failover.conf", &failover_conf);
    let before_backup = p.master.psql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));
    p.standby_ok(&["-I"]);
    p.standby_ok(&["-B"]);
    assert!(p.pgdata.join("pitrkit.spare").exists(), "-B marks a spare");
    p.master.psql("CREATE TABLE batches (id int, batch int)");
    p.master
        .psql("INSERT INTO batches SELECT g, 1 FROM generate_series(1, 100) g");
    for _ in 0..3 {
        p.master.psql("CHECKPOINT");
        p.master.switch_wal();
    }
    std::thread::sleep(Duration::from_millis(1100));
    let target = p.master.psql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));
    p.master
        .psql("INSERT INTO batches SELECT g, 2 FROM generate_series(101, 200) g");
    p.ship_and_wait();

    // Bad timestamps are refused before anything is touched.
    for bad in ["yesterday", "2026-02-30 10:00:00", "2999-01-01 00:00:00+00"] {
        let out = p.standby(&["-F999", "-R", bad]);
        assert_eq!(out.status.code(), Some(1), "{bad}: {}", describe_output(&out));
    }
    let out = p.standby(&["-R", &target]);
    assert_eq!(out.status.code(), Some(2), "-R needs -F999: {}", describe_output(&out));
    // A target before the spare's backup ended cannot be reached: explained, nothing changed.
    let auto_conf = || fs::read_to_string(p.pgdata.join("postgresql.auto.conf")).unwrap();
    let auto_before = auto_conf();
    p.refused(
        &["-F999", "-R", &before_backup],
        &["cannot recover", "base backup (-B) ended at", "nothing was changed"],
    );
    assert!(p.pgdata.join("backup_label").exists() && p.pgdata.join("pitrkit.spare").exists());
    assert!(!p.pgdata.join("recovery.signal").exists());
    assert_eq!(auto_conf(), auto_before);
    assert!(
        p.standby_psql("SELECT 1").is_err(),
        "the spare must not have been started"
    );
    // An archive that lost the backup's first segment (a standby's cleanup
    // on the same archive) is refused up front too.
    let label = fs::read_to_string(p.pgdata.join("backup_label")).unwrap();
    let first = label.split("(file ").nth(1).unwrap()[..24].to_string();
    let aside = p.env.mkdir("aside");
    // No shipping round may still be delivering it (it would ship it again).
    let queue = p.env.path("queue/127.0.0.1");
    assert!(
        wait_until(WAIT, || fs::read_dir(&queue)
            .unwrap()
            .flatten()
            .all(|e| e.file_name().to_string_lossy().starts_with('.'))),
        "the master's queue did not drain"
    );
    let moved: Vec<String> = p.archived().into_iter().filter(|n| n.starts_with(&first)).collect();
    assert!(!moved.is_empty(), "{first} not in {:?}", p.archived());
    for n in &moved {
        fs::rename(p.archive().join(n), aside.join(n)).unwrap();
    }
    p.refused(&["-F999", "-R", &target], &[&format!("no longer holds {first}")]);
    assert!(p.pgdata.join("backup_label").exists() && !p.pgdata.join("recovery.signal").exists());
    assert_eq!(auto_conf(), auto_before);
    for n in &moved {
        fs::rename(aside.join(n), p.archive().join(n)).unwrap();
    }

    // The spare recovers while the master runs.
    let before = p.archived();
    let out = p.standby_ok(&["-F999", "-R", &target]);
    assert!(
        out.contains("point-in-time recovery") && out.contains("beside the live master"),
        "{out}"
    );
    assert!(out.contains("action_failover did not run"), "{out}");
    assert!(p.master.is_running(), "the master was never touched");
    assert_eq!(
        p.standby_psql("SELECT count(*) FROM batches WHERE batch = 1").unwrap(),
        "100"
    );
    assert_eq!(
        p.standby_psql("SELECT count(*) FROM batches WHERE batch = 2").unwrap(),
        "0",
        "rows committed after the target must be absent"
    );
    assert_eq!(p.standby_psql("SELECT pg_is_in_recovery()").unwrap(), "f");
    assert!(!p.pgdata.join("recovery.signal").exists() && !p.pgdata.join("pitrkit.spare").exists());
    // What the recovery ran with (the server keeps it until a reload).
    assert_eq!(p.standby_psql("SHOW archive_cleanup_command").unwrap(), "");
    assert_eq!(p.standby_psql("SHOW archive_mode").unwrap(), "off");
    let auto = auto_conf();
    assert!(
        auto.contains("archive_mode = 'off'") && auto.contains("ALTER SYSTEM RESET archive_mode"),
        "archiving stays off after the recovery settings are gone:\n{auto}"
    );
    let server_log = fs::read_to_string(p.env.path("standby.log")).unwrap();
    assert!(
        server_log.contains("restartpoint complete"),
        "no restartpoint ran, so the cleanup check below proves nothing:\n{}",
        tail(&p.env.path("standby.log"), 40)
    );
    assert!(
        !cleanup_ran.exists(),
        "an archive_cleanup_command ran during the recovery"
    );
    assert!(!p.failover_marker.exists(), "action_failover ran beside a live master");
    p.assert_notified("ok", "point-in-time recovery");

    // The copy writes; the master writes and archives on: the archive gets
    // the master's timeline only, and loses nothing.
    p.standby_psql("CREATE TABLE after_pitr AS SELECT 1 AS x").unwrap();
    p.standby_psql("SELECT pg_switch_wal()").unwrap();
    p.master
        .psql("INSERT INTO batches SELECT g, 3 FROM generate_series(201, 300) g");
    p.ship_and_wait();
    std::thread::sleep(Duration::from_secs(2));
    let (added, removed) = listing_diff(&before, &p.archived());
    assert!(removed.is_empty(), "removed from the shared archive: {removed:?}");
    assert!(
        !added.is_empty()
            && added
                .iter()
                .all(|n| n.starts_with("00000001") && !n.contains(".history")),
        "only the master's timeline may arrive: {added:?}"
    );
    assert_eq!(p.master.psql("SELECT count(*) FROM batches"), "300");
    assert_eq!(p.master.psql("SELECT pg_is_in_recovery()"), "f");
    let spool = p.pgdata.join("pg_wal/.pitrkit-prefetch");
    let leftovers: Vec<_> = fs::read_dir(&spool)
        .map(|rd| rd.flatten().map(|e| e.file_name()).filter(|n| n != ".lock").collect())
        .unwrap_or_default();
    assert!(
        leftovers.iter().all(|n| n.to_string_lossy().starts_with("00000001")),
        "only old-timeline leftovers may remain: {leftovers:?}"
    );
    let _ = p.standby(&["-A", "stop"]);
}

#[test]
fn failures_are_stopped_cleanly_and_reported() {
    let mut p = Pair::new("sb_fail", "");
    p.standby_ok(&["-I"]);

    // The master's ssh is unreachable during -B: backup stopped, copy marked, clear error.
    p.sshd.stop();
    let out = p.standby(&["-B"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("backup was stopped on the master") && stderr.contains("-B` again"),
        "{stderr}"
    );
    assert!(p.pgdata.join("PITRKIT_BACKUP_INCOMPLETE").exists());
    // The backend ends when it notices the closed connection: give it a moment.
    let sessions = || {
        p.master
            .psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pitrkit basebackup'")
    };
    wait_until(Duration::from_secs(10), || sessions() == "0");
    assert_eq!(sessions(), "0", "the backup session must be gone");
    let out = p.standby(&["-S"]);
    assert_eq!(out.status.code(), Some(1));
    assert_says(&out, "unfinished base backup");

    // Rerun works once ssh is back.
    p.sshd.restart();
    p.standby_ok(&["-B"]);
    assert!(!p.pgdata.join("PITRKIT_BACKUP_INCOMPLETE").exists());

    // action_failover failing: promotion happens, but the run fails loudly.
    let failing = p.env.write("failing_action.sh", "#!/bin/sh\nexit 3\n");
    fs::set_permissions(&failing, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let text = fs::read_to_string(&p.ini).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("action_failover:") {
                format!("action_failover: {}", failing.display())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    p.env.write("cmd_standby.ini", &text);
    p.ship_everything();
    p.master.stop();
    let out = p.standby(&["-F999"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert_says(&out, "action_failover");
    p.assert_notified("critical", "action_failover");
    assert_eq!(
        p.standby_psql("SELECT pg_is_in_recovery()").unwrap(),
        "f",
        "the promotion itself succeeded"
    );
    let _ = p.standby(&["-A", "stop"]);
}

#[test]
fn bad_standby_configs_are_refused_with_the_reason() {
    let env = TestEnv::new("sb_badcfg", Path::new(env!("CARGO_BIN_EXE_pitrkit")));
    let pgdata = env.mkdir("data");
    let major: u32 = fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
                .max()
        })
        .unwrap_or_else(|| {
            let v = run_ok(std::process::Command::new(pg_program("pg_ctl")).arg("--version"));
            v.split_whitespace()
                .nth(2)
                .unwrap()
                .split('.')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        });
    let cases: Vec<(String, &str, i32)> = vec![
        (
            format!("pgversion: {}\npgdata: {}\n", major - 1, pgdata.display()),
            "pgversion is",
            2,
        ),
        ("pgversion: fifteen\n".into(), "major version like 15", 2),
        ("master_public_ip: db1;reboot\n".into(), "shell would interpret", 2),
        ("tablespace_map: /a\n".into(), "old=new", 2),
        ("sslmode: maybe\n".into(), "sslmode must be one of", 2),
        ("unknown_key: 1\n".into(), "unknown key 'unknown_key'", 2),
        (
            "pgdata: /data/pg\narchivedir: /data/pg/archive\n".into(),
            "archivedir /data/pg/archive is inside pgdata /data/pg",
            2,
        ),
    ];
    for (i, (text, expected, code)) in cases.iter().enumerate() {
        let ini = env.write(&format!("s{i}.ini"), text);
        let out = run_output(env.pitrkit().args(["standby", "-C"]).arg(&ini).arg("-P"));
        assert_eq!(out.status.code(), Some(*code), "case {i}: {}", describe_output(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(expected),
            "case {i}: want {expected:?}: {}",
            describe_output(&out)
        );
    }
    let ini = env.write("ok.ini", &format!("pgdata: {}\n", pgdata.display()));
    let out = run_output(
        env.pitrkit()
            .args(["standby", "-C"])
            .arg(&ini)
            .args(["-A", "stop_basebackup"]),
    );
    assert!(out.status.success());
    assert_says(&out, "non-exclusive");
}

#[test]
fn streaming_standby_follows_without_waiting_for_the_archive() {
    let p = Pair::new(
        "sb_stream",
        "use_streaming_replication: yes\nrepl_db_user: repl\nrepl_db_password: s3cr:et\nsslmode: disable\n",
    );
    p.master.psql("CREATE ROLE repl REPLICATION LOGIN PASSWORD 's3cr:et'");
    p.standby_ok(&["-I"]);
    p.standby_ok(&["-B"]);
    let out = p.standby_ok(&["-S"]);
    assert!(out.contains("streaming from the master"), "{out}");
    let auto = fs::read_to_string(p.pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains("primary_conninfo = '") && !auto.contains("s3cr"),
        "the password must not be in postgresql.auto.conf:\n{auto}"
    );
    let passfile = p.pgdata.join("pitrkit.pgpass");
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&passfile).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "passfile must be private");

    // No WAL switch: only streaming can bring this row over quickly.
    p.master
        .psql("CREATE TABLE streamed (v text); INSERT INTO streamed VALUES ('live')");
    assert!(
        wait_until(Duration::from_secs(30), || p
            .standby_psql("SELECT v FROM streamed")
            .is_ok_and(|v| v == "live")),
        "standby did not stream the row; its log:\n{}",
        tail(&p.env.path("standby.log"), 30)
    );
    assert_eq!(
        p.master
            .psql("SELECT count(*) FROM pg_stat_replication WHERE usename = 'repl'"),
        "1"
    );

    // pitrtools' trigger_file: promotes on 12-15 (promote_trigger_file);
    // 16 removed it, and -S says so instead of failing silently later.
    let trigger = p.env.path("cmd_end_recovery");
    let ini = p.variant("trigger", &format!("trigger_file: {}", trigger.display()));
    let _ = p.standby(&["-A", "stop"]);
    let out = p.standby_with(&ini, &["-S"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    if server_major() < 16 {
        fs::write(&trigger, "").unwrap();
        p.env.chown(&trigger);
        assert!(
            wait_until(Duration::from_secs(60), || p
                .standby_psql("SELECT pg_is_in_recovery()")
                .is_ok_and(|v| v == "f")),
            "touching trigger_file did not promote; its log:\n{}",
            tail(&p.env.path("standby.log"), 30)
        );
    } else {
        assert_says(&out, "has no effect on PostgreSQL");
        assert_eq!(p.standby_psql("SELECT pg_is_in_recovery()").unwrap(), "t");
    }
    let _ = p.standby(&["-A", "stop"]);
}

#[test]
fn a_config_path_with_shell_characters_restores_and_fails_over() {
    let mut p = Pair::new("sb_quote", "");
    // Each of ' ( ) % ; and the space broke the unquoted restore_command.
    let dir = p.env.mkdir("it's (a) 100% dir; x");
    let ini = dir.join("standby.ini");
    fs::copy(&p.ini, &ini).unwrap();
    p.env.chown(&ini);
    p.ini = ini;
    p.master
        .psql("CREATE TABLE quoted (id int); INSERT INTO quoted SELECT generate_series(1, 1000)");
    p.standby_ok(&["-I"]);
    p.standby_ok(&["-B"]);
    p.standby_ok(&["-S"]);
    let auto = fs::read_to_string(p.pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains(r"it''\\''''s (a) 100%% dir; x/standby.ini'' %f %p'"),
        "{auto}"
    );

    // Rows that reach the standby only through restore_command.
    p.master.psql("INSERT INTO quoted SELECT generate_series(1001, 2000)");
    let lsn = p.master.psql("SELECT pg_current_wal_lsn()");
    p.ship_everything();
    assert!(
        wait_until(WAIT, || p
            .standby_psql(&format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'"))
            .is_ok_and(|v| v == "t")),
        "the standby did not restore up to {lsn}; its log:\n{}",
        tail(&p.env.path("standby.log"), 30)
    );
    p.master.stop();
    let out = p.standby_ok(&["-F999"]);
    assert!(out.contains("failover complete"), "{out}");
    assert_eq!(p.count("quoted"), "2000");
    let _ = p.standby(&["-A", "stop"]);
}

#[test]
fn a_delayed_standby_fails_over_with_every_archived_segment() {
    let p = Pair::new("sb_delay", "restore_delay: 3600");
    p.master
        .psql("CREATE TABLE delayed (id int); INSERT INTO delayed SELECT generate_series(1, 100)");
    p.standby_ok(&["-I"]);
    p.standby_ok(&["-B"]);
    // The base backup's WAL is made old enough for the standby to open;
    // what the master writes from now on is held back by restore_delay.
    p.ship_and_wait();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    for name in p.archived() {
        let f = fs::File::options().write(true).open(p.archive().join(name)).unwrap();
        f.set_modified(two_hours_ago).unwrap();
    }
    // Left by a -F999 that was killed: -S must not start a standby that ignores its delay.
    let marker = p.pgdata.join("pitrkit.promoting");
    p.env.write("standby_data/pitrkit.promoting", "stale\n");
    p.standby_ok(&["-S"]);
    assert!(!marker.exists(), "-S must remove a stale promotion marker");

    p.master.psql("INSERT INTO delayed SELECT generate_series(101, 1100)");
    p.ship_and_wait();
    // Standby mode asks the archive again every 5 s (wal_retrieve_retry_interval).
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(p.count("delayed"), "100", "restore_delay must hold the new rows back");

    p.master.stop();
    let out = p.standby_ok(&["-F999"]);
    assert!(out.contains("failover complete"), "{out}");
    assert_eq!(p.standby_psql("SELECT pg_is_in_recovery()").unwrap(), "f");
    assert_eq!(
        p.count("delayed"),
        "1100",
        "a failover must replay every archived segment, delayed or not"
    );
    assert!(!marker.exists(), "-F999 removes its marker once read-write");
    p.standby_ok(&["-A", "stop"]);
    // -A start (like a restart by systemd) removes one left by a killed -F999 too.
    p.env.write("standby_data/pitrkit.promoting", "stale\n");
    p.standby_ok(&["-A", "start"]);
    assert!(!marker.exists(), "-A start must remove a stale promotion marker");
    let _ = p.standby(&["-A", "stop"]);
}

#[test]
fn base_backup_refuses_directories_it_does_not_own() {
    let p = Pair::new("sb_bdir", "");
    let notes = p.env.write("standby_data/notes.txt", "my notes\n");
    let out = p.standby(&["-B"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a PostgreSQL data directory")
            && stderr.contains("notes.txt (1 entry)")
            && stderr.contains("point it in"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(&notes).unwrap(), "my notes\n");
    assert!(!p.pgdata.join("PITRKIT_BACKUP_INCOMPLETE").exists(), "nothing written");

    // A data directory of another database system.
    fs::remove_dir_all(&p.pgdata).unwrap();
    let other = PgCluster::init(&p.env, "standby_data", "");
    let out = p.standby(&["-B"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert_says(&out, "of another database system");
    assert!(other.datadir.join("global/pg_control").exists() && other.datadir.join("base").is_dir());
    assert!(!p.pgdata.join("PITRKIT_BACKUP_INCOMPLETE").exists(), "nothing written");
    drop(other);

    // A tablespace directory holding someone's files.
    fs::remove_dir_all(&p.pgdata).unwrap();
    p.standby_ok(&["-I"]);
    let ts_notes = p.env.write("ts_standby/keep.txt", "mine\n");
    let out = p.standby(&["-B"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert_says(&out, "tablespace directory");
    assert!(ts_notes.exists());

    // Emptied: the copy is made, and made again over itself (same system).
    fs::remove_file(&ts_notes).unwrap();
    p.standby_ok(&["-B"]);
    p.standby_ok(&["-B"]);
    assert!(p.pgdata.join("global/pg_control").exists());
}
/// Swaps the standby's archivedir for an empty, unmarked directory (what an
/// unmounted NFS share looks like), or back.
fn unmount_archive(p: &Pair, unmounted: bool) {
    let dir = p.env.path("standby_archive");
    let real = p.env.path("standby_archive.real");
    if unmounted {
        fs::rename(&dir, &real).unwrap();
        p.env.mkdir("standby_archive");
    } else {
        fs::remove_dir(&dir).unwrap();
        fs::rename(&real, &dir).unwrap();
    }
}

#[test]
fn an_unmounted_archive_never_ends_recovery() {
    let p = Pair::new("sb_unmounted", "");
    p.standby_ok(&["-I"]);
    p.standby_ok(&["-B"]);
    p.master.psql("CREATE TABLE batches (id int, batch int)");
    p.master
        .psql("INSERT INTO batches SELECT g, 1 FROM generate_series(1, 100) g");
    p.ship_everything();
    p.standby_ok(&["-S"]);
    assert!(
        wait_until(WAIT, || p
            .standby_psql("SELECT count(*) FROM batches")
            .is_ok_and(|c| c == "100")),
        "standby did not replay batch 1:\n{}",
        tail(&p.env.path("standby.log"), 30)
    );

    // Standby mode: the share goes away. PostgreSQL keeps asking every 5 s;
    // restore answers "not found" (the standby keeps waiting, promotes
    // nothing) and sends one critical notification, not one per call.
    unmount_archive(&p, true);
    let alerts = || -> Vec<String> {
        p.hook_lines()
            .into_iter()
            .filter(|l| l.starts_with("critical") && l.contains("promotes nothing"))
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(30), || !alerts().is_empty()),
        "{:?}",
        p.hook_lines()
    );
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(alerts().len(), 1, "{:?}", alerts());
    assert_eq!(p.standby_psql("SELECT pg_is_in_recovery()").unwrap(), "t");
    unmount_archive(&p, false);
    let _ = p.standby(&["-A", "stop"]);

    // Batch 2 reaches the archive while the standby is down; then the share
    // goes away again and the stopped standby is failed over (archive
    // recovery). "Not found" would end recovery at batch 1 and promote
    // without batch 2: restore exits 200 instead, and nothing is promoted.
    p.master
        .psql("INSERT INTO batches SELECT g, 2 FROM generate_series(101, 200) g");
    p.ship_everything();
    p.master.stop();
    unmount_archive(&p, true);
    let out = p.standby(&["-F999"]);
    assert_ne!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert!(
        fs::read_to_string(p.env.path("standby.log"))
            .unwrap()
            .contains("has no .pitrkit-system-id mark"),
        "{}",
        tail(&p.env.path("standby.log"), 30)
    );
    assert!(
        p.standby_psql("SELECT pg_is_in_recovery()").is_err(),
        "nothing may run promoted"
    );

    // Mounted again: the failover replays everything.
    unmount_archive(&p, false);
    p.standby_ok(&["-F999"]);
    assert_eq!(p.standby_psql("SELECT count(*) FROM batches").unwrap(), "200");
    assert_eq!(p.standby_psql("SELECT pg_is_in_recovery()").unwrap(), "f");
    let _ = p.standby(&["-A", "stop"]);
}

impl Pair {
    /// The standby's configuration with `extra`'s keys replacing its own, as `<name>.ini`.
    fn variant(&self, name: &str, extra: &str) -> PathBuf {
        let base = fs::read_to_string(&self.ini).unwrap();
        self.env
            .write(&format!("{name}.ini"), &fixtures::merge_ini(&base, extra))
    }

    fn standby_with(&self, ini: &Path, args: &[&str]) -> std::process::Output {
        let mut c = self.env.command(&fixtures::cmd_link(&self.env, "cmd_standby"));
        c.arg("-C").arg(ini).args(args);
        run_output(&mut c)
    }

    /// ssh tunnel processes (ssh -N -L) to this pair's sshd still alive.
    fn tunnels_left(&self) -> Vec<String> {
        self.tunnel_pids().into_iter().map(|(_, c)| c).collect()
    }

    fn tunnel_pids(&self) -> Vec<(u32, String)> {
        let port = format!("\0-p\0{}\0", self.sshd.port);
        fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                Some((
                    pid,
                    String::from_utf8_lossy(&fs::read(e.path().join("cmdline")).ok()?).into_owned(),
                ))
            })
            .filter(|(pid, c)| {
                process_alive(*pid)
                    && c.contains("ExitOnForwardFailure=yes")
                    && c.contains("\0-N\0")
                    && c.contains(&port)
            })
            .map(|(pid, c)| (pid, c.replace('\0', " ")))
            .collect()
    }
}

/// Only ssh reaches the master, whose PostgreSQL listens on no TCP address
/// (`listen_addresses = ''`, the harness's default): with sql_via_ssh
/// auto, -P, -I and -B go through an ssh tunnel to its unix socket, and no
/// ssh process is left behind.
#[test]
fn sql_goes_through_ssh_to_a_master_listening_on_no_tcp_address() {
    let p = Pair::with_master("sb_tunnel", |_| String::new(), "");
    assert_eq!(p.master.psql("SHOW listen_addresses"), "");

    let out = p.standby_ok(&["-P"]);
    let sock = p.master.socket_dir.join(format!(".s.PGSQL.{}", p.master.port));
    assert!(
        out.contains(&format!(
            "route: through ssh to 127.0.0.1, then the unix socket {} on the master",
            sock.display()
        )) && out.contains("primary (accepting writes)"),
        "{out}"
    );
    assert_eq!(p.tunnels_left(), Vec::<String>::new());
    p.standby_ok(&["-I"]);
    p.standby_ok(&["-B"]);
    assert!(p.pgdata.join("backup_label").is_file());
    assert_eq!(p.tunnels_left(), Vec::<String>::new());

    // Without the tunnel: the reason, and the way out.
    let off = p.variant("off", "sql_via_ssh: off");
    let out = p.standby_with(&off, &["-P"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("set sql_via_ssh: on"), "{err}");

    // A socket directory where the master has none: both routes named.
    let wrong = p.variant("wrong", "sql_via_ssh: on\nmaster_socket_dir: /nonexistent");
    let out = p.standby_with(&wrong, &["-P"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("127.0.0.1:")
            && err.contains("/nonexistent/.s.PGSQL.")
            && err.contains("master_socket_dir"),
        "{err}"
    );
    assert_eq!(p.tunnels_left(), Vec::<String>::new());

    // Streaming cannot use the tunnel: -S says so, and the standby still
    // starts, replaying from the archive.
    let streaming = p.variant("streaming", "use_streaming_replication: on\nsql_via_ssh: on");
    let out = p.standby_with(&streaming, &["-S"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot use pitrkit's ssh tunnel"), "{err}");
    let _ = p.standby(&["-A", "stop"]);

    // The master is alive though its port answers nobody: with
    // master_pgdata unset (it is optional), the ssh route is what tells.
    let text = fs::read_to_string(&p.ini).unwrap();
    let no_pgdata: String = text
        .lines()
        .filter(|l| !l.starts_with("master_pgdata:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let no_pgdata = p.env.write("no_master_pgdata.ini", &no_pgdata);
    let out = p.standby_with(&no_pgdata, &["-F999"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert_says(&out, "PostgreSQL answers through ssh to 127.0.0.1");
    // A server that refuses the login answers too.
    let refused_login = p.env.write(
        "refused_login.ini",
        &fixtures::merge_ini(&fs::read_to_string(&no_pgdata).unwrap(), "master_user: nosuchrole"),
    );
    let out = p.standby_with(&refused_login, &["-F999"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert_says(&out, "PostgreSQL answers through ssh to 127.0.0.1");
    assert!(p.pgdata.join("standby.signal").exists() && !p.pgdata.join("recovery.signal").exists());
    assert!(!p.failover_marker.exists(), "action_failover ran");

    // pitrkit killed in the middle of -B: its tunnel goes with it.
    let on = p.variant("on", "sql_via_ssh: on");
    let mut c = p.env.command(&fixtures::cmd_link(&p.env, "cmd_standby"));
    let mut b = c
        .arg("-C")
        .arg(&on)
        .arg("-B")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut tunnel = None;
    assert!(wait_until(WAIT, || {
        tunnel = p.tunnel_pids().first().map(|(pid, _)| *pid);
        tunnel.is_some()
    }));
    let ppid = fs::read_to_string(format!("/proc/{}/stat", tunnel.unwrap())).unwrap();
    let ppid = ppid
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    run_ok(Command::new("kill").args(["-KILL", &ppid]));
    let _ = b.wait();
    assert!(
        wait_until(Duration::from_secs(10), || p.tunnels_left().is_empty()),
        "{:?}",
        p.tunnels_left()
    );
}

/// A CA and a server certificate for `localhost` only (no IP address),
/// made with the openssl CLI; returns the master's ssl settings.
fn tls_master_conf(env: &TestEnv) -> String {
    let openssl = require_program("openssl");
    let dir = env.mkdir("tls");
    let run = |args: &[&str]| run_ok(Command::new(&openssl).current_dir(&dir).args(args));
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for ca in ["ca", "other_ca"] {
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        let subj = format!("/CN=pitrkit test {ca}");
        let (key, crt) = (format!("{ca}.key"), format!("{ca}.crt"));
        a.extend(["-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subj]);
        run(&a);
    }
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=pitrkit-master",
    ]);
    run(&a);
    fs::write(dir.join("san.cnf"), "subjectAltName = DNS:localhost\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
    ]);
    env.chown(&dir);
    // PostgreSQL refuses a key others can read.
    fs::set_permissions(dir.join("server.key"), fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "listen_addresses = '127.0.0.1'\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
        dir.join("server.crt").display(),
        dir.join("server.key").display()
    )
}

/// sslmode verify-full: -P and -B check the master's certificate against
/// sslrootcert and its name against master_public_ip, directly and through
/// the ssh tunnel (where the TCP connection goes to 127.0.0.1, but the name
/// checked is still the configured one). A wrong CA or a name the
/// certificate does not carry is refused with the reason.
#[test]
fn tls_verify_full_checks_the_ca_and_the_configured_name() {
    let ca = |env: &TestEnv, name: &str| env.path(&format!("tls/{name}.crt")).display().to_string();
    let p = Pair::with_master("sb_tls", tls_master_conf, "");
    // The master's name is "localhost" (the certificate's only name); ssh
    // must know its host key under that name too.
    let mut kh = fs::read_to_string(&p.sshd.known_hosts).unwrap();
    let key = kh.split_once(' ').unwrap().1.to_string();
    kh.push_str(&format!("\n[localhost]:{} {key}\n", p.sshd.port));
    fs::write(&p.sshd.known_hosts, kh).unwrap();
    let tls = |mode: &str, root: &str, host: &str, via_ssh: &str| {
        format!(
            "sslmode: {mode}\nsslrootcert: {}\nmaster_public_ip: {host}\nsql_via_ssh: {via_ssh}",
            ca(&p.env, root)
        )
    };

    let direct = p.variant("direct", &tls("verify-full", "ca", "localhost", "off"));
    let out = p.standby_with(&direct, &["-P"]);
    let text = describe_output(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("route: direct") && text.contains("TLS: TLSv1."), "{text}");

    let tunnel = p.variant("tunnel", &tls("verify-full", "ca", "localhost", "on"));
    let out = p.standby_with(&tunnel, &["-P"]);
    let text = describe_output(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "route: through ssh to localhost, then 127.0.0.1:{}",
            p.master.port
        )) && text.contains("TLS: TLSv1."),
        "{text}"
    );
    for args in [["-I"], ["-B"]] {
        let out = p.standby_with(&tunnel, &args);
        assert!(out.status.success(), "{args:?}: {}", describe_output(&out));
    }
    assert!(p.pgdata.join("backup_label").is_file());
    assert_eq!(p.tunnels_left(), Vec::<String>::new());

    // Streaming (libpq in the walreceiver) gets the same TLS settings
    // through primary_conninfo, and checks the master as strictly.
    p.master.psql("CREATE ROLE repl REPLICATION LOGIN");
    let streaming = p.variant(
        "streaming",
        &format!(
            "{}\nuse_streaming_replication: on\nrepl_db_user: repl",
            tls("verify-full", "ca", "localhost", "auto")
        ),
    );
    let out = p.standby_with(&streaming, &["-S"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    // The master's port answers: no warning about the tunnel.
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("ssh tunnel"),
        "{}",
        describe_output(&out)
    );
    let auto = fs::read_to_string(p.pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains(&format!("sslrootcert=''{}''", ca(&p.env, "ca"))),
        "{auto}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || p.master.psql(
            "SELECT count(*) FROM pg_stat_replication JOIN pg_stat_ssl USING (pid) WHERE ssl AND usename = 'repl'"
        ) == "1"),
        "the standby did not stream over TLS; its log:\n{}",
        tail(&p.env.path("standby.log"), 30)
    );
    let _ = p.standby(&["-A", "stop"]);

    // sql_via_ssh auto tunnels only when there is no route: a server that
    // answers with an error (here: no such role) is not retried through ssh.
    let no_role = p.variant(
        "no_role",
        &format!(
            "{}\nmaster_user: nobody_here",
            tls("verify-full", "ca", "localhost", "auto")
        ),
    );
    let out = p.standby_with(&no_role, &["-P"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("\"nobody_here\" does not exist") && !err.contains("through ssh"),
        "{err}"
    );

    // A certificate from another CA.
    let other = p.variant("other_ca", &tls("verify-full", "other_ca", "localhost", "off"));
    let out = p.standby_with(&other, &["-P"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("certificate verify failed") && err.contains("sslrootcert holds the CA"),
        "{err}"
    );

    // The right CA, but a name the certificate does not carry.
    let by_ip = p.variant("by_ip", &tls("verify-full", "ca", "127.0.0.1", "off"));
    let out = p.standby_with(&by_ip, &["-P"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("certificate verify failed") && err.contains("names 127.0.0.1"),
        "{err}"
    );
    // verify-ca does not check the name.
    let ca_only = p.variant("ca_only", &tls("verify-ca", "ca", "127.0.0.1", "off"));
    let out = p.standby_with(&ca_only, &["-P"]);
    assert!(out.status.success(), "{}", describe_output(&out));
}

/// `cmd_standby -I` never creates or marks an archivedir that /etc/fstab
/// lists as a mount point while nothing is mounted there: restore would
/// answer "not found" from the bare directory.
#[test]
fn init_refuses_an_unmounted_archivedir() {
    let p = Pair::new("sb_mount", "");
    let share = p.env.path("share");
    let text = fs::read_to_string(&p.ini).unwrap();
    fs::write(
        &p.ini,
        fixtures::merge_ini(&text, &format!("archivedir: {}", share.display())),
    )
    .unwrap();
    let _entry = fixtures::FstabEntry::add(&share);
    let out = p.standby(&["-I"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("should be on the filesystem mounted at {}", share.display()))
            && stderr.contains("Mount it, then run -I again"),
        "{stderr}"
    );
    assert!(!share.exists() && !p.pgdata.exists(), "nothing created");
}
