//! The commented sample files in etc/ are the configuration reference: they
//! must load, and must mention every key pitrkit defines.
use pitrkit::config::ConfigFile;
use std::path::Path;

use pitrkit::config::options::{all_defs, OptDef, Options, ARCHIVER_OPTIONS, BACKUP_OPTIONS, STANDBY_OPTIONS};
use pitrkit::config::{ArchiverConfig, BackupConfig, IniFile, StandbyConfig};

fn mentions(text: &str, key: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start_matches(';').trim_start();
        l.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with([':', '=']))
    })
}

#[test]
fn archiver_sample_loads_and_documents_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/archiver.ini");
    let (cfg, warnings) = ArchiverConfig::load_with_warnings(&path).unwrap();
    assert_eq!(cfg.slaves(), ["standby1"]);
    // The reference sets no key pitrkit would warn about.
    assert!(warnings.is_empty(), "{warnings:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    for d in all_defs(ARCHIVER_OPTIONS) {
        assert!(
            mentions(&text, d.name),
            "etc/archiver.ini does not mention '{}'",
            d.name
        );
    }
}

#[test]
fn standby_sample_loads_and_documents_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/standby.ini");
    let file = IniFile::load(&path).unwrap();
    let warnings = Options::new(&file, STANDBY_OPTIONS).unwrap().into_warnings();
    assert!(warnings.is_empty(), "{warnings:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    for d in all_defs(STANDBY_OPTIONS) {
        assert!(mentions(&text, d.name), "etc/standby.ini does not mention '{}'", d.name);
    }
}

#[test]
fn backup_sample_loads_and_documents_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/backup.ini");
    let cfg = BackupConfig::load(&path).unwrap();
    assert!(cfg.standby.is_none(), "read as a backup.ini");
    let text = std::fs::read_to_string(&path).unwrap();
    for d in all_defs(BACKUP_OPTIONS) {
        assert!(mentions(&text, d.name), "etc/backup.ini does not mention '{}'", d.name);
    }
}

/// The values a sample gives `key` (set or commented out).
fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start_matches(';').trim_start();
            let rest = l.strip_prefix(key)?.trim_start();
            rest.strip_prefix([':', '=']).map(str::trim)
        })
        .collect()
}

/// Where a sample shows a key that has a default, it shows the default (or
/// a spelling of it), unless the key is listed as a deliberate example.
fn sample_shows_defaults(
    sample: &str,
    defs: &'static [&'static [OptDef]],
    base: &str,
    same: impl Fn(&str, &str) -> bool,
    examples: &[&str],
) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(sample)).unwrap();
    for d in all_defs(defs).filter(|d| d.default.is_some() && !examples.contains(&d.name)) {
        for v in values(&text, d.name) {
            assert!(
                same(base, &format!("{}: {v}\n", d.name)),
                "{sample} shows {}: {v}, but its default is {:?}",
                d.name,
                d.default.unwrap()
            );
        }
    }
}

#[test]
fn samples_show_the_table_defaults() {
    fn archiver(text: &str) -> Option<ArchiverConfig> {
        ArchiverConfig::from_ini(&IniFile::parse(Path::new("a.ini"), text).unwrap()).ok()
    }
    fn standby(text: &str) -> Option<StandbyConfig> {
        StandbyConfig::from_ini(&IniFile::parse(Path::new("s.ini"), text).unwrap()).ok()
    }
    let base = "local_archivedirs: /a\n";
    sample_shows_defaults(
        "etc/archiver.ini",
        ARCHIVER_OPTIONS,
        base,
        |b, line| archiver(&format!("{b}{line}")).is_some_and(|c| Some(c) == archiver(b)),
        &[],
    );
    sample_shows_defaults(
        "etc/standby.ini",
        STANDBY_OPTIONS,
        "",
        |b, line| standby(&format!("{b}{line}")).is_some_and(|c| Some(c) == standby(b)),
        // pitrtools' sample waited 30 seconds for ssh.
        &["ssh_timeout"],
    );
}

#[test]
fn shipped_nagios_hook_writes_one_passive_check_line() {
    let d = tempfile::tempdir().unwrap();
    let cmd_file = d.path().join("nagios.cmd");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/nagios-passive-check");
    let hook = format!(
        "NAGIOS_CMD_FILE={} NAGIOS_HOST=db1 {} 2",
        cmd_file.display(),
        script.display()
    );
    let outcome = pitrkit::notify::run_hook(
        &hook,
        &["slave sb1: 70 files queued; see\nlog"],
        &[],
        std::time::Duration::from_secs(10),
    );
    assert!(outcome.succeeded(), "{outcome:?}");
    let line = std::fs::read_to_string(&cmd_file).unwrap();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.ends_with("] PROCESS_SERVICE_CHECK_RESULT;db1;pitrkit;2;slave sb1: 70 files queued, see log\n"),
        "{line}"
    );
}
