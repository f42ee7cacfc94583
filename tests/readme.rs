//! The README's install commands run as written, into a scratch root.
//!
//! A DBA pastes them; a line that fails on a fresh machine (a missing
//! directory, a wrong path) is a bug in the product's documentation.
use std::fs;
use std::path::Path;
use std::process::Command;

/// The lines of the first ```sh block after `heading`.
fn sh_block(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has no '{heading}' section"));
    let rest = &readme[start..];
    let open = rest.find("```sh\n").expect("a ```sh block") + "```sh\n".len();
    let close = rest[open..].find("```").expect("the block ends");
    rest[open..open + close]
        .lines()
        .map(|l| l.split(" #").next().unwrap().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn install_commands_work_on_a_fresh_machine() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(manifest.join("README.md")).unwrap();
    let lines = sh_block(&readme, "## Install");
    assert_eq!(
        lines.first().map(String::as_str),
        Some("cargo build --release"),
        "the install block starts by building"
    );
    // A fresh Debian has /usr/local/bin and /usr/local/share, nothing of ours.
    let root = tempfile::tempdir().unwrap();
    for d in ["usr/local/bin", "usr/local/share"] {
        fs::create_dir_all(root.path().join(d)).unwrap();
    }
    let stage = tempfile::tempdir().unwrap();
    // The release build is the one line not re-run here (minutes on 2 cores):
    // the binary under test stands in for target/release/pitrkit.
    let release = stage.path().join("target/release");
    fs::create_dir_all(&release).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_pitrkit"), release.join("pitrkit")).unwrap();
    fs::create_dir_all(stage.path().join("scripts")).unwrap();
    fs::copy(
        manifest.join("scripts/nagios-passive-check"),
        stage.path().join("scripts/nagios-passive-check"),
    )
    .unwrap();
    let scratch = format!("{}/usr/local/", root.path().display());
    for line in &lines[1..] {
        let cmd = line
            .strip_prefix("sudo ")
            .unwrap_or(line)
            .replace("/usr/local/", &scratch);
        let out = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .current_dir(stage.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README install line failed: {line}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for link in ["cmd_archiver", "cmd_standby", "cmd_queue"] {
        let out = Command::new(root.path().join("usr/local/bin").join(link))
            .arg("--version")
            .output()
            .unwrap();
        assert!(out.status.success(), "{link} --version");
        assert!(String::from_utf8_lossy(&out.stdout).contains("0."), "{link} --version");
    }
    assert!(root
        .path()
        .join("usr/local/share/pitrkit/nagios-passive-check")
        .is_file());
}

/// The README's Layout section names every module and folder of the tree,
/// so a new one cannot go undocumented.
#[test]
fn layout_names_every_module() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(manifest.join("README.md")).unwrap();
    let start = readme.find("## Layout").expect("a Layout section");
    let block = &readme[start..];
    let block = &block[..block[4..].find("\n## ").map_or(block.len(), |i| i + 4)];
    let mut missing = Vec::new();
    for dir in [
        "src",
        "src/archive",
        "src/restore",
        "src/transport",
        "src/standby",
        "src/config",
        "src/pg",
    ] {
        for e in fs::read_dir(manifest.join(dir)).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".rs").unwrap_or(&name);
            if ["mod", "lib", "tests"].contains(&stem) {
                continue;
            }
            let top = dir == "src";
            let shown = if top {
                block.contains(&format!("src/{name}")) || block.contains(&format!("src/{stem}/"))
            } else {
                block.contains(stem)
            };
            if !shown {
                missing.push(format!("{dir}/{name}"));
            }
        }
    }
    for top in ["tests/", "benches/", "sql/", "etc/", "scripts/"] {
        if !block.contains(top) {
            missing.push(top.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "README's Layout section does not mention: {missing:?}"
    );
}

/// Issue 9: the migration table names every pitrtools key and flag, so a
/// pitrtools user finds each line of their files there. The keys are those
/// of pitrtools' own files (the how-to's two, stored in tests/pitrtools/),
/// of its reference documentation, and pitrkit's legacy table.
#[test]
fn the_migration_table_names_every_pitrtools_key_and_flag() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(manifest.join("README.md")).unwrap();
    let start = readme
        .find("### Every pitrtools flag and key")
        .expect("the migration table");
    let end = start + readme[start..].find("\n## ").expect("a section after it");
    let table = &readme[start..end];
    let mut keys: Vec<String> = Vec::new();
    for file in ["howto_cmd_archiver.ini", "howto_cmd_standby.ini"] {
        let text = fs::read_to_string(manifest.join("tests/pitrtools").join(file)).unwrap();
        for line in text.lines() {
            let line = line.trim_start_matches('#').trim_start();
            if let Some((key, _)) = line.split_once(':') {
                if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    keys.push(key.to_string());
                }
            }
        }
    }
    let reference = "state pgdata r_archivedir l_archivedir includepath rsync_flags rsync_version \
        slaves user ssh_timeout queue_user queue_wait max_queue_workers notify_ok notify_warning \
        notify_critical debug ssh_debug ssh rsync_bin pgversion use_streaming_replication \
        trigger_file repl_db_user repl_db_password sslmode port master_public_ip master_local_ip \
        rsync_threads archivedir pg_conf pg_hba_conf pg_conf_failover pg_hba_conf_failover \
        no_copy_conf recovery_conf logfile action_failover rsync pg_ctl pg_standby \
        pg_archivecleanup r_psql numarchives postgresql_conf postgresql_conf_failover";
    keys.extend(reference.split_whitespace().map(String::from));
    keys.extend(pitrkit::config::options::LEGACY_KEYS.iter().map(|l| l.name.to_string()));
    let flags = [
        "-C",
        "-F",
        "-I",
        "--version",
        "-d",
        "--daemon",
        "--dbinit",
        "-B",
        "-S",
        "--standby",
        "-F999",
        "-R",
        "-P",
        "-A",
    ];
    let missing: Vec<&str> = keys
        .iter()
        .map(String::as_str)
        .chain(flags)
        .filter(|k| {
            !table.contains(&format!("`{k}`"))
                && !table.contains(&format!("`{k} "))
                && !table.contains(&format!("{k}`"))
        })
        .collect();
    assert!(missing.is_empty(), "the migration table does not name: {missing:?}");
}

/// The README's quick start (`scripts/demo.sh` runs `pitrkit demo`, release
/// build) does the main job end to end: WAL archived with its checksums, a
/// backup, a table dropped after more rows arrived, and a recovery to the
/// moment before that brings every row back. Run here with the test build.
#[test]
fn the_quick_start_archives_backs_up_and_recovers_a_dropped_table() {
    let out = Command::new(env!("CARGO_BIN_EXE_pitrkit"))
        .args(["demo", "--segments", "2"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let shown = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{shown}");
    assert!(stdout.contains("every switched segment present: yes"), "{shown}");
    assert!(stdout.contains(".sum"), "{shown}");
    assert!(stdout.contains("6500 rows; then: DROP TABLE demo"), "{shown}");
    assert!(stdout.contains("with 6500 of 6500 rows: all back"), "{shown}");
}
