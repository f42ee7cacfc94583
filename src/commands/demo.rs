//! `pitrkit demo`: the quick start. A throw-away cluster whose
//! archive_command is `cmd_archiver` (through the multi-call link, exactly as
//! a pitrtools user would configure it), WAL generated with pg_switch_wal(),
//! and a listing of what arrived where.

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

fn demo(args: &DemoArgs) -> anyhow::Result<bool> {
    use anyhow::Context;
    let bindir = tools::postgres_bindirs().into_iter().next().ok_or_else(|| {
        anyhow::anyhow!(
            "PostgreSQL server programs (initdb, pg_ctl, postgres) not found in /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin or PATH.\n  \
             Install them: apt-get install postgresql (Debian/Ubuntu) or dnf install postgresql-server (RHEL/Fedora), then run the demo again"
        )
    })?;
    // PostgreSQL refuses to run as root, and so does the archiver.
    let run_as = if nix::unistd::geteuid().is_root() {
        if nix::unistd::User::from_name("postgres")?.is_none() {
            anyhow::bail!("running as root, but there is no 'postgres' OS user to run the cluster as; run the demo as an ordinary user");
        }
        Some("postgres".to_string())
    } else {
        None
    };
    let user = run_as.clone().unwrap_or_else(super::current_user);
    let tmp = tempfile::Builder::new()
        .prefix("pitrkit-demo-")
        .tempdir_in("/tmp")
        .context("creating the demo directory")?;
    let root = tmp.path().to_path_buf();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
    chown_to(&root, run_as.as_deref())?;

    // The binary must be executable by the cluster's OS user (it may live under /root).
    let bin = root.join("bin");
    fs::create_dir(&bin)?;
    let exe = bin.join("pitrkit");
    fs::copy(std::env::current_exe()?, &exe).context("copying the pitrkit binary into the demo directory")?;
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755))?;
    std::os::unix::fs::symlink("pitrkit", bin.join("cmd_archiver"))?;

    let archive = root.join("archive");
    let data = root.join("data");
    let config = root.join("cmd_archiver.ini");
    fs::create_dir(&archive)?;
    fs::set_permissions(&archive, fs::Permissions::from_mode(0o700))?;
    chown_to(&archive, run_as.as_deref())?;
    fs::write(
        &config,
        format!(
            "; pitrkit demo archiver configuration (pitrtools cmd_archiver.ini format)\n\
             [DEFAULT]\n\
             state: online\n\
             pgdata: {}\n\
             ; a local (or NFS) archive: every segment is fsync'd there before PostgreSQL hears 'done'\n\
             local_archivedirs: {}\n\
             notify_critical: echo CRITICAL\n\
             debug: off\n",
            data.display(),
            archive.display()
        ),
    )?;
    chown_to(&config, run_as.as_deref())?;

    let cluster = LocalCluster {
        bindir: bindir.clone(),
        datadir: data.clone(),
        run_as: run_as.clone(),
    };
    println!(
        "pitrkit demo: PostgreSQL from {} as OS user '{user}' in {}",
        bindir.display(),
        root.display()
    );
    cluster.initdb(&["-U", &user]).context("initdb")?;
    // What `cmd_archiver -I` does: mark the archive directory as this cluster's
    // (archive calls refuse a directory that was never initialized).
    let cfg = crate::config::ArchiverConfig::load(&config).context("loading the demo configuration")?;
    for check in crate::archive::init(&cfg) {
        if let Some(problem) = check.problem {
            anyhow::bail!("initializing the archive ({}): {problem}", check.what);
        }
    }
    chown_to(&archive.join(crate::archive::SYSTEM_ID_FILE), run_as.as_deref())?;
    let archive_command = format!("{} -C {} -F %p", bin.join("cmd_archiver").display(), config.display());
    let mut conf = fs::OpenOptions::new().append(true).open(data.join("postgresql.conf"))?;
    use std::io::Write;
    writeln!(
        conf,
        "\n# pitrkit demo\nlisten_addresses = ''\nport = 5432\nunix_socket_directories = '{}'\n\
         wal_level = replica\narchive_mode = on\narchive_command = '{archive_command}'\n",
        root.display()
    )?;
    let log = root.join("postgres.log");
    cluster
        .start(Some(&log), None, Duration::from_secs(60))
        .context("starting the demo cluster")?;
    let _running = Running(cluster);
    println!("archive_command = '{archive_command}'");

    let conninfo = format!("host={} port=5432 user={user} dbname=postgres", root.display());
    let mut client = pg::connect(
        &conninfo,
        &root.display().to_string(),
        "see the server log in the demo directory",
    )?;
    client.batch_execute("CREATE TABLE demo(id serial, payload text)")?;
    let mut switched = Vec::new();
    let started = Instant::now();
    for i in 0..args.segments {
        client.execute(
            "INSERT INTO demo(payload) SELECT repeat(md5(g::text), 20) FROM generate_series(1, 2000) g",
            &[],
        )?;
        let row = client.query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])?;
        let name: String = row.get(0);
        println!("  segment {}/{}: switched {name}", i + 1, args.segments);
        switched.push(name);
    }
    let last = switched.last().cloned().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (archived, failed) = loop {
        let row = client.query_one(
            "SELECT coalesce(last_archived_wal, ''), archived_count, failed_count FROM pg_stat_archiver",
            &[],
        )?;
        let (lw, a, f): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
        if lw.as_str() >= last.as_str() || Instant::now() > deadline {
            break (a, f);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let elapsed = started.elapsed();

    let mut files: Vec<(String, u64)> = fs::read_dir(&archive)?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            (!n.starts_with('.')).then(|| (n, e.metadata().map(|m| m.len()).unwrap_or(0)))
        })
        .collect();
    files.sort();
    println!("\nArchived to {}:", archive.display());
    for (n, size) in &files {
        println!("  {n}  {:>6.1} MiB", *size as f64 / 1048576.0);
    }
    let all_there = switched.iter().all(|s| files.iter().any(|(n, _)| n == s));
    println!(
        "\n{} file(s) archived in {:.1}s (pg_stat_archiver: archived_count={archived}, failed_count={failed}); every switched segment present: {}",
        files.len(),
        elapsed.as_secs_f64(),
        if all_there { "yes" } else { "NO" }
    );
    if args.keep {
        let kept: PathBuf = tmp.keep();
        println!(
            "Kept {} (cluster stopped). Server log: {}",
            kept.display(),
            log.display()
        );
    } else {
        println!("Removing {} (use --keep to look around).", root.display());
    }
    Ok(all_there && failed == 0)
}
