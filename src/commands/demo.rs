//! `pitrkit demo`: the quick start. A throw-away cluster whose
//! archive_command is `cmd_archiver` (through the multi-call link, exactly as
//! a pitrtools user would configure it), WAL generated with pg_switch_wal(),
//! a listing of what arrived where; then `pitrkit backup`, a dropped table,
//! and `pitrkit recover` to the moment before, with the rows counted.

use crate::config::ConfigFile;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{EXIT_ERROR, EXIT_FAILED, EXIT_OK};
use crate::cli::DemoArgs;
use crate::pg::{self, LocalCluster};
use crate::tools;

pub fn run(program: &str, args: DemoArgs) -> u8 {
    crate::logging::init(program, false, None);
    match demo(&args) {
        Ok(true) => EXIT_OK,
        Ok(false) => EXIT_FAILED,
        Err(e) => {
            eprintln!("{program} demo: {e:#}");
            EXIT_ERROR
        }
    }
}

/// Stops the demo cluster however the demo ends.
struct Running(LocalCluster);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.stop("fast");
    }
}

fn chown_to(path: &Path, user: Option<&str>) -> anyhow::Result<()> {
    if let Some(u) = user {
        let pw = nix::unistd::User::from_name(u)?.ok_or_else(|| anyhow::anyhow!("no OS user '{u}'"))?;
        nix::unistd::chown(path, Some(pw.uid), Some(pw.gid))?;
    }
    Ok(())
}

/// The demo's directory and what lives in it.
struct Demo {
    tmp: tempfile::TempDir,
    root: PathBuf,
    bin: PathBuf,
    archive: PathBuf,
    data: PathBuf,
    config: PathBuf,
    /// The OS user the cluster and the archiver run as, when we are root.
    run_as: Option<String>,
    /// The database user (the OS user's name).
    user: String,
}

fn demo(args: &DemoArgs) -> anyhow::Result<bool> {
    use anyhow::Context;
    let bindir = server_bindir()?;
    let d = Demo::create()?;
    let cluster = LocalCluster {
        bindir: bindir.clone(),
        datadir: d.data.clone(),
        run_as: d.run_as.clone(),
    };
    println!(
        "pitrkit demo: PostgreSQL from {} as OS user '{}' in {}",
        bindir.display(),
        d.user,
        d.root.display()
    );
    cluster.initdb(&["-U", &d.user]).context("initdb")?;
    d.init_archive()?;
    let archive_command = d.configure_cluster()?;
    let log = d.root.join("postgres.log");
    cluster
        .start(Some(&log), None, Duration::from_secs(60))
        .context("starting the demo cluster")?;
    let running = Running(cluster);
    println!("archive_command = '{archive_command}'");

    let mut client = d.connect()?;
    let started = Instant::now();
    let switched = switch_segments(&mut client, args.segments)?;
    let (archived, failed) = wait_archived(&mut client, switched.last().cloned().unwrap_or_default())?;
    let elapsed = started.elapsed();

    let files = d.list_archive()?;
    let all_there = switched.iter().all(|s| files.iter().any(|(n, _)| n == s));
    println!(
        "\n{} WAL file(s) archived in {:.1}s (pg_stat_archiver: archived_count={archived}, failed_count={failed}); every switched segment present: {}",
        files.len(),
        elapsed.as_secs_f64(),
        if all_there { "yes" } else { "NO" }
    );
    let recovered = pitr(&d, &mut client, &bindir)?;
    // Stopped before its directory goes.
    drop(running);
    d.finish(args.keep, &log);
    Ok(all_there && failed == 0 && recovered)
}

/// The rest of the main job: a backup, a table lost after it, and a
/// recovery to the moment before the loss, run as a DBA would run them
/// (`pitrkit backup`, `pitrkit recover`) with a `backup.ini`.
fn pitr(d: &Demo, client: &mut postgres::Client, bindir: &Path) -> anyhow::Result<bool> {
    use anyhow::Context;
    let ini = d.write_backup_config(bindir)?;
    println!("\nBacking up: pitrkit backup -C {}", ini.display());
    let id = d.pitrkit(&["backup", "-C"], &ini, &[])?;
    println!("  backup {}", id.trim());
    // Rows the backup does not hold: recovery must replay them from the archive.
    client.execute(
        "INSERT INTO demo(payload) SELECT 'after the backup ' || g FROM generate_series(1, 2500) g",
        &[],
    )?;
    let rows: i64 = client.query_one("SELECT count(*) FROM demo", &[])?.get(0);
    // The moment before the loss, on the server's clock, as recover reads it.
    let before: String = client
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
            &[],
        )?
        .get(0);
    std::thread::sleep(Duration::from_millis(50));
    client.batch_execute("DROP TABLE demo")?;
    let last: String = client.query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])?.get(0);
    wait_archived(client, last)?;
    println!("  2,500 rows inserted after the backup; at {before} table demo had {rows} rows; then: DROP TABLE demo (archived)");
    let to = d.root.join("recovered");
    println!(
        "Recovering to {before}: pitrkit recover -C {} --to {} --target-time '{before}' --start --port 5433",
        ini.display(),
        to.display()
    );
    let to_arg = to.display().to_string();
    d.pitrkit(
        &["recover", "-C"],
        &ini,
        &["--to", &to_arg, "--target-time", &before, "--start", "--port", "5433"],
    )?;
    let recovered = Running(LocalCluster {
        bindir: bindir.to_path_buf(),
        datadir: to,
        run_as: d.run_as.clone(),
    });
    let back: i64 = d
        .connect_port(5433)?
        .query_one("SELECT count(*) FROM demo", &[])
        .context("counting the rows in the recovered copy")?
        .get(0);
    println!(
        "  the recovered copy has table demo with {back} of {rows} rows: {}",
        if back == rows { "all back" } else { "NOT all back" }
    );
    drop(recovered);
    Ok(back == rows)
}

/// The first PostgreSQL server installation found.
fn server_bindir() -> anyhow::Result<PathBuf> {
    tools::postgres_bindirs().into_iter().next().ok_or_else(|| {
        anyhow::anyhow!(
            "PostgreSQL server programs (initdb, pg_ctl, postgres) not found in /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin or PATH.\n  \
             Install them: apt-get install postgresql (Debian/Ubuntu) or dnf install postgresql-server (RHEL/Fedora), then run the demo again"
        )
    })
}

/// PostgreSQL refuses to run as root, and so does the archiver: as root,
/// the demo runs as postgres.
fn run_as() -> anyhow::Result<Option<String>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    if nix::unistd::User::from_name("postgres")?.is_none() {
        anyhow::bail!("running as root, but there is no 'postgres' OS user to run the cluster as; run the demo as an ordinary user");
    }
    Ok(Some("postgres".to_string()))
}

impl Demo {
    /// A fresh directory with the binary, the archive and the configuration.
    fn create() -> anyhow::Result<Demo> {
        use anyhow::Context;
        let run_as = run_as()?;
        let user = run_as.clone().unwrap_or_else(super::current_user);
        let tmp = tempfile::Builder::new()
            .prefix("pitrkit-demo-")
            .tempdir_in("/tmp")
            .context("creating the demo directory")?;
        let root = tmp.path().to_path_buf();
        let d = Demo {
            bin: root.join("bin"),
            archive: root.join("archive"),
            data: root.join("data"),
            config: root.join("cmd_archiver.ini"),
            root,
            tmp,
            run_as,
            user,
        };
        fs::set_permissions(&d.root, fs::Permissions::from_mode(0o755))?;
        d.chown(&d.root)?;
        d.install_binary()?;
        fs::create_dir(&d.archive)?;
        fs::set_permissions(&d.archive, fs::Permissions::from_mode(0o700))?;
        d.chown(&d.archive)?;
        d.write_config()?;
        Ok(d)
    }

    fn chown(&self, path: &Path) -> anyhow::Result<()> {
        chown_to(path, self.run_as.as_deref())
    }

    /// The binary must be executable by the cluster's OS user (it may live under /root).
    fn install_binary(&self) -> anyhow::Result<()> {
        use anyhow::Context;
        fs::create_dir(&self.bin)?;
        let exe = self.bin.join("pitrkit");
        fs::copy(std::env::current_exe()?, &exe).context("copying the pitrkit binary into the demo directory")?;
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755))?;
        std::os::unix::fs::symlink("pitrkit", self.bin.join("cmd_archiver"))?;
        Ok(())
    }

    fn write_config(&self) -> anyhow::Result<()> {
        fs::write(
            &self.config,
            format!(
                "; pitrkit demo archiver configuration (pitrtools cmd_archiver.ini format)\n\
                 [DEFAULT]\n\
                 state: online\n\
                 pgdata: {}\n\
                 ; a local (or NFS) archive: every segment is fsync'd there before PostgreSQL hears 'done'\n\
                 local_archivedirs: {}\n\
                 notify_critical: echo CRITICAL\n\
                 debug: off\n",
                self.data.display(),
                self.archive.display()
            ),
        )?;
        self.chown(&self.config)
    }

    /// A backup.ini for this cluster: the archive the demo fills, a
    /// repository beside it.
    fn write_backup_config(&self, bindir: &Path) -> anyhow::Result<PathBuf> {
        let ini = self.root.join("backup.ini");
        let repo = self.root.join("backups");
        fs::create_dir(&repo)?;
        self.chown(&repo)?;
        fs::write(
            &ini,
            format!(
                "; pitrkit demo backup configuration\n[DEFAULT]\npgdata: {}\nport: 5432\nsocket_dir: {}\n\
                 archivedir: {}\nbackup_dir: {}\ncompression: zstd\nkeep_backups: 2\nincludepath: {}\n",
                self.data.display(),
                self.root.display(),
                self.archive.display(),
                repo.display(),
                bindir.display()
            ),
        )?;
        self.chown(&ini)?;
        Ok(ini)
    }

    /// Runs the demo's pitrkit as the cluster's OS user; its standard output.
    fn pitrkit(&self, sub: &[&str], ini: &Path, rest: &[&str]) -> anyhow::Result<String> {
        let out = tools::command_as(&self.bin.join("pitrkit"), self.run_as.as_deref())
            .args(sub)
            .arg(ini)
            .args(rest)
            .stdin(std::process::Stdio::null())
            .output()?;
        if !out.status.success() {
            anyhow::bail!(
                "pitrkit {} failed ({}):\n{}{}",
                sub[0],
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// What `cmd_archiver -I` does: mark the archive directory as this
    /// cluster's (archive calls refuse a directory that was never initialized).
    fn init_archive(&self) -> anyhow::Result<()> {
        use anyhow::Context;
        let cfg = crate::config::ArchiverConfig::load(&self.config).context("loading the demo configuration")?;
        for check in crate::archive::init(&cfg) {
            if let Some(problem) = check.problem {
                anyhow::bail!("initializing the archive ({}): {problem}", check.what);
            }
        }
        self.chown(&self.archive.join(crate::archive::SYSTEM_ID_FILE))
    }

    /// Archiving through `cmd_archiver`, on a socket in the demo directory.
    fn configure_cluster(&self) -> anyhow::Result<String> {
        use std::io::Write;
        let archive_command = format!(
            "{} -C {} -F %p",
            self.bin.join("cmd_archiver").display(),
            self.config.display()
        );
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))?;
        writeln!(
            conf,
            "\n# pitrkit demo\nlisten_addresses = ''\nport = 5432\nunix_socket_directories = '{}'\n\
             wal_level = replica\narchive_mode = on\narchive_command = '{archive_command}'\n",
            self.root.display()
        )?;
        Ok(archive_command)
    }

    fn connect(&self) -> anyhow::Result<postgres::Client> {
        self.connect_port(5432)
    }

    fn connect_port(&self, port: u16) -> anyhow::Result<postgres::Client> {
        let conninfo = format!(
            "host={} port={port} user={} dbname=postgres",
            self.root.display(),
            self.user
        );
        Ok(pg::connect(
            &conninfo,
            &self.root.display().to_string(),
            "see the server log in the demo directory",
        )?)
    }

    /// The archived WAL files and their sizes, listed (a plain file's
    /// `.sum` checksum sidecar is shown beside it, not counted as WAL).
    fn list_archive(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let names: Vec<String> = fs::read_dir(&self.archive)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        let mut files: Vec<(String, u64)> = names
            .iter()
            .filter(|n| !n.ends_with(crate::layout::SUM_SUFFIX))
            .map(|n| {
                (
                    n.clone(),
                    fs::metadata(self.archive.join(n)).map(|m| m.len()).unwrap_or(0),
                )
            })
            .collect();
        files.sort();
        println!("\nArchived to {}:", self.archive.display());
        for (n, size) in &files {
            let sum = crate::integrity::sum_name(n);
            let checked = if names.contains(&sum) {
                format!("  + {sum}")
            } else {
                String::new()
            };
            println!("  {n}  {:>6.1} MiB{checked}", *size as f64 / 1048576.0);
        }
        Ok(files)
    }

    /// Keeps the directory, or says it goes (when `self` is dropped).
    fn finish(self, keep: bool, log: &Path) {
        if keep {
            let kept: PathBuf = self.tmp.keep();
            println!(
                "Kept {} (cluster stopped). Server log: {}",
                kept.display(),
                log.display()
            );
        } else {
            println!("Removing {} (use --keep to look around).", self.root.display());
        }
    }
}

/// Writes some rows and switches to a new segment, `segments` times.
fn switch_segments(client: &mut postgres::Client, segments: u32) -> anyhow::Result<Vec<String>> {
    client.batch_execute("CREATE TABLE demo(id serial, payload text)")?;
    let mut switched = Vec::new();
    for i in 0..segments {
        client.execute(
            "INSERT INTO demo(payload) SELECT repeat(md5(g::text), 20) FROM generate_series(1, 2000) g",
            &[],
        )?;
        let row = client.query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])?;
        let name: String = row.get(0);
        println!("  segment {}/{segments}: switched {name}", i + 1);
        switched.push(name);
    }
    Ok(switched)
}

/// Waits (up to a minute) until `last` is archived; pg_stat_archiver's counts.
fn wait_archived(client: &mut postgres::Client, last: String) -> anyhow::Result<(i64, i64)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = client.query_one(
            "SELECT coalesce(last_archived_wal, ''), archived_count, failed_count FROM pg_stat_archiver",
            &[],
        )?;
        let (lw, a, f): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
        if lw.as_str() >= last.as_str() || Instant::now() > deadline {
            return Ok((a, f));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
