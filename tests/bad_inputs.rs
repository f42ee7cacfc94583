//! The bad-input catalogue: malformed configuration values, command lines and
//! archive files, each with the exact error a DBA sees and the exit status,
//! run against the real binary (as `pitrkit <sub>` and through the
//! `cmd_archiver` / `cmd_standby` links). No PostgreSQL or sshd is needed.
//!
//! Each group is one table; a run reports every mismatching case at once.
//! In expected text `$T` is the test directory and `$C` the case's
//! configuration file. Log lines lose their time stamp and pid:
//! `pitrkit[PID] [ERROR] ...`.
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;

use common::{fixtures, TestEnv};

/// The configuration a case runs with.
enum Config {
    /// No file written; the case names its own (or none).
    Absent,
    /// Appended to the group's base configuration (two lines, so the
    /// case's first line is line 3).
    Extra(&'static str),
    /// The whole file.
    Whole(&'static str),
    /// The whole file, as bytes.
    Bytes(&'static [u8]),
    /// The base configuration, readable by nobody.
    Unreadable,
}

/// An archive file the case creates at `$T/wal/<name>` before it runs.
enum WalFile {
    None,
    Bytes(&'static str, &'static [u8]),
    /// A segment with a long page header: (name, segment size in the
    /// header, page address in the header, file length).
    Segment(&'static str, u32, u64, usize),
}

#[derive(PartialEq)]
enum Match {
    /// The whole of stderr.
    Exact,
    /// stderr starts with the expected text. Used where the wording after
    /// the reason belongs to other modules (archive, restore) that may
    /// still change it; the prefix runs up to the reason.
    Prefix,
}

struct Case {
    name: &'static str,
    /// `archiver`, `standby`, `restore`, `cleanup` (as `pitrkit <sub>`) or a
    /// link name (`cmd_archiver`, `cmd_standby`).
    cmd: &'static str,
    config: Config,
    wal: WalFile,
    args: &'static [&'static str],
    exit: i32,
    stderr: &'static str,
    matching: Match,
}

const fn case(
    name: &'static str,
    cmd: &'static str,
    config: Config,
    args: &'static [&'static str],
    exit: i32,
    stderr: &'static str,
) -> Case {
    Case {
        name,
        cmd,
        config,
        wal: WalFile::None,
        args,
        exit,
        stderr,
        matching: Match::Exact,
    }
}

/// A case whose text comes from a module other branches may still reword
/// (restore, cleanup): only its start, up to the reason, must match.
const fn prefix(c: Case) -> Case {
    Case {
        matching: Match::Prefix,
        ..c
    }
}

const ARCHIVER_BASE: &str = "[DEFAULT]\nlocal_archivedirs: $T/arch\n";
const STANDBY_BASE: &str = "[DEFAULT]\narchivedir: $T/sarch\n";

/// Held while a group copies the binary into its test directory and while a
/// case spawns a process. Groups run in parallel, and a child forked while
/// another thread still holds the copy open for writing keeps that write
/// descriptor until it execs: running the copy then fails with "Text file
/// busy".
static SPAWN: Mutex<()> = Mutex::new(());

/// Removes what differs from run to run: the time stamp and pid of log lines.
fn normalize(stderr: &str, root: &Path) -> String {
    let root = root.display().to_string();
    stderr
        .lines()
        .map(|l| {
            let l = l.replace(&root, "$T");
            // "2026-11-30 05:27:39.439 pitrkit[23831] [ERROR] ..."
            let stamped = l.len() > 24
                && l.as_bytes()[..4].iter().all(u8::is_ascii_digit)
                && l.as_bytes()[4] == b'-'
                && l.as_bytes()[23] == b' ';
            if !stamped {
                return l;
            }
            let rest = &l[24..];
            match (rest.find('['), rest.find("] ")) {
                (Some(open), Some(close)) if open < close => {
                    format!("{}[PID]{}", &rest[..open], &rest[close + 1..])
                }
                _ => rest.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn segment(seg_size: u32, page_addr: u64, len: usize) -> Vec<u8> {
    let mut b = pitrkit::testsupport::wal::long_header(1, page_addr, 7, seg_size).to_vec();
    b.resize(len, 0);
    b
}

/// Runs every case of one group; panics listing every mismatch.
fn run_group(group: &str, base: &str, cases: &[Case]) {
    let env = {
        let _spawning = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        TestEnv::new(group, Path::new(env!("CARGO_BIN_EXE_pitrkit")))
    };
    let root = env.root.clone();
    let fill = |s: &str, conf: &Path| {
        s.replace("$T", &root.display().to_string())
            .replace("$C", &conf.display().to_string())
    };
    for d in ["arch", "sarch", "wal"] {
        env.mkdir(d);
    }
    // Marked as pitrkit archives (unclaimed), as `-I` leaves them.
    env.write("arch/.pitrkit-system-id", "");
    env.write("sarch/.pitrkit-system-id", "");
    env.write("sarch/00000002.history", "1\t0/3000000\tno recovery target\n");
    let mut names = std::collections::HashSet::new();
    let mut failures = Vec::new();
    for c in cases {
        assert!(names.insert(c.name), "case name {} used twice", c.name);
        let conf = env.path(&format!("{}.ini", c.name));
        match &c.config {
            Config::Absent => {}
            Config::Extra(text) => {
                env.write(&format!("{}.ini", c.name), &fill(&format!("{base}{text}"), &conf));
            }
            Config::Whole(text) => {
                env.write(&format!("{}.ini", c.name), &fill(text, &conf));
            }
            Config::Bytes(bytes) => {
                env.write(&format!("{}.ini", c.name), "");
                fs::write(&conf, bytes).unwrap();
            }
            Config::Unreadable => {
                env.write(&format!("{}.ini", c.name), &fill(base, &conf));
                fs::set_permissions(&conf, fs::Permissions::from_mode(0o000)).unwrap();
            }
        }
        match &c.wal {
            WalFile::None => {}
            WalFile::Bytes(name, bytes) => {
                let p = env.write(&format!("wal/{name}"), "");
                fs::write(p, bytes).unwrap();
            }
            WalFile::Segment(name, size, addr, len) => {
                let p = env.write(&format!("wal/{name}"), "");
                fs::write(p, segment(*size, *addr, *len)).unwrap();
            }
        }
        let mut cmd = match c.cmd {
            "cmd_archiver" | "cmd_standby" | "cmd_queue" => env.command(&fixtures::cmd_link(&env, c.cmd)),
            sub => {
                let mut cmd = env.pitrkit();
                cmd.arg(sub);
                cmd
            }
        };
        cmd.args(c.args.iter().map(|a| fill(a, &conf)));
        let out = {
            let _spawning = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        }
        .and_then(|child| child.wait_with_output())
        .unwrap_or_else(|e| panic!("cannot run case {}: {e}", c.name));
        let got = normalize(&String::from_utf8_lossy(&out.stderr), &root);
        let want = c.stderr;
        let text_ok = match c.matching {
            Match::Exact => got.trim_end() == want,
            Match::Prefix => got.starts_with(want),
        };
        let code = out.status.code().unwrap_or(-1);
        if !text_ok || code != c.exit {
            failures.push(format!(
                "--- {} ({} {}): exit {code} (want {})\n     got: {got:?}\n    want: {want:?}{}",
                c.name,
                c.cmd,
                c.args.join(" "),
                c.exit,
                if c.matching == Match::Prefix { " (prefix)" } else { "" }
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} {group} case(s) differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

const CHECK: &[&str] = &["-C", "$C"];

use Config::*;

#[test]
fn archiver_config_values() {
    run_group(
        "archiver_values",
        ARCHIVER_BASE,
        &[
            // Paths
            case("path_relative", "archiver", Extra("pgdata: data/main\n"), CHECK, 2, "pitrkit: configuration error: $T/path_relative.ini line 3: pgdata: 'data/main' is not an absolute path (it must start with '/') — write the full path, starting with '/'"),
            case("path_space", "archiver", Extra("slaves: sb\nr_archivedir: /r\nl_archivedir: /srv/my queue\n"), CHECK, 2, "pitrkit: configuration error: $T/path_space.ini line 5: l_archivedir: '/srv/my queue' contains white space — paths are handed to rsync and ssh, and a remote shell would split or expand these characters; use a path without them (a symlink can provide one)"),
            case("path_semicolon", "archiver", Extra("slaves: sb\nl_archivedir: /q\nr_archivedir: /srv/wal;reboot\n"), CHECK, 2, "pitrkit: configuration error: $T/path_semicolon.ini line 5: r_archivedir: '/srv/wal;reboot' contains ';', which a shell would interpret — paths are handed to rsync and ssh, and a remote shell would split or expand these characters; use a path without them (a symlink can provide one)"),
            case("path_dollar", "archiver", Extra("pgdata: /srv/$(id)\n"), CHECK, 2, "pitrkit: configuration error: $T/path_dollar.ini line 3: pgdata: '/srv/$(id)' contains '$', which a shell would interpret — paths are handed to rsync and ssh, and a remote shell would split or expand these characters; use a path without them (a symlink can provide one)"),
            case("path_backtick", "archiver", Extra("rsync_bin: /usr/bin/`id`\n"), CHECK, 2, "pitrkit: configuration error: $T/path_backtick.ini line 3: rsync_bin: '/usr/bin/`id`' contains '`', which a shell would interpret — paths are handed to rsync and ssh, and a remote shell would split or expand these characters; use a path without them (a symlink can provide one)"),
            case("path_glob", "archiver", Extra("ssh_identity: /home/*/id_rsa\n"), CHECK, 2, "pitrkit: configuration error: $T/path_glob.ini line 3: ssh_identity: '/home/*/id_rsa' contains '*', which a shell would interpret — paths are handed to rsync and ssh, and a remote shell would split or expand these characters; use a path without them (a symlink can provide one)"),
            case("path_newline", "archiver", Extra("pgdata: /srv/pg\n  /srv/other\n"), CHECK, 2, "pitrkit: configuration error: $T/path_newline.ini lines 3-4: pgdata: '/srv/pg\\n/srv/other' contains a line break — an indented line continues the value of the key above it (ConfigParser), so 'pgdata' runs on from line 3; remove the indentation if that line is a key of its own"),
            case("path_hash_comment", "archiver", Extra("pgdata: /srv/pg # main cluster\n"), CHECK, 2, "pitrkit: configuration error: $T/path_hash_comment.ini line 3: pgdata: '/srv/pg # main cluster' contains white space — '#' starts a comment only at the beginning of a line; after a value write ' ; comment'; paths are handed to rsync and ssh, and a remote shell would split or expand these characters; use a path without them (a symlink can provide one)"),
            case("paths_one_relative", "archiver", Extra("includepath: /usr/local/bin, bin\n"), CHECK, 2, "pitrkit: configuration error: $T/paths_one_relative.ini line 3: includepath: 'bin' is not an absolute path (it must start with '/') — write the full path, starting with '/'"),
            case("paths_entry_quoted", "archiver", Whole("[DEFAULT]\nlocal_archivedirs: $T/arch, '/mnt/nfs'\n"), CHECK, 2, "pitrkit: configuration error: $T/paths_entry_quoted.ini line 2: local_archivedirs: ''/mnt/nfs'' is not an absolute path (it must start with '/') — quotes are part of the value in these files (ConfigParser); remove them; write the full path, starting with '/'"),
            // Hosts
            case("host_option", "archiver", Extra("slaves: -oProxyCommand=sh\n"), CHECK, 2, "pitrkit: configuration error: $T/host_option.ini line 3: slaves: '-oProxyCommand=sh' starts with '-', so ssh and rsync would read it as an option"),
            case("host_semicolon", "archiver", Extra("slaves: db2;reboot\n"), CHECK, 2, "pitrkit: configuration error: $T/host_semicolon.ini line 3: slaves: 'db2;reboot' contains ';', which a shell would interpret"),
            case("host_user", "archiver", Extra("slaves: postgres@db2\n"), CHECK, 2, "pitrkit: configuration error: $T/host_user.ini line 3: slaves: 'postgres@db2' contains '@': put the ssh user in the 'user' key, not in the host"),
            case("host_twice", "archiver", Extra("slaves: db2, db3, db2\n"), CHECK, 2, "pitrkit: configuration error: $T/host_twice.ini line 3: slaves: 'db2' is listed twice — list each host once"),
            case("host_dot", "archiver", Extra("slaves: .spool\n"), CHECK, 2, "pitrkit: configuration error: $T/host_dot.ini line 3: slaves: '.spool' starts with '.': it names the slave's queue directory in l_archivedir, where pitrkit keeps its own dot-directories (.delivered, .spool)"),
            case("host_space", "archiver", Extra("slaves: db2 db3\n"), CHECK, 2, "pitrkit: configuration error: $T/host_space.ini line 3: slaves: 'db2 db3' contains white space — separate hosts with ','"),
            case("host_newline", "archiver", Extra("slaves: db2\n  db3\n"), CHECK, 2, "pitrkit: configuration error: $T/host_newline.ini lines 3-4: slaves: 'db2\\ndb3' contains a line break — an indented line continues the value of the key above it (ConfigParser), so 'slaves' runs on from line 3; remove the indentation if that line is a key of its own; separate hosts with ','"),
            case("slaves_without_queue", "archiver", Extra("slaves: db2\nr_archivedir: /r\n"), CHECK, 2, "pitrkit: configuration error: $T/slaves_without_queue.ini line 3: 'slaves' is set but 'l_archivedir' is not — add 'l_archivedir: /absolute/path' (the local queue directory on this master)"),
            case("no_destination", "archiver", Whole("[DEFAULT]\nslaves:\nlocal_archivedirs:\n"), CHECK, 2, "pitrkit: configuration error: $T/no_destination.ini: no destination configured: WAL would be archived nowhere — set 'slaves' (with l_archivedir and r_archivedir), 'local_archivedirs' and/or 'archive_urls'"),
            // Numbers
            case("seconds_unit", "archiver", Extra("ssh_timeout: 10s\n"), CHECK, 2, "pitrkit: configuration error: $T/seconds_unit.ini line 3: ssh_timeout must be a whole number of seconds, got '10s' — write digits only, without a unit, e.g. 30"),
            case("seconds_negative", "archiver", Extra("queue_wait: -5\n"), CHECK, 2, "pitrkit: configuration error: $T/seconds_negative.ini line 3: queue_wait must be a whole number of seconds, got '-5' — write digits only, without a unit, e.g. 30"),
            case("count_word", "archiver", Extra("max_queue_workers: four\n"), CHECK, 2, "pitrkit: configuration error: $T/count_word.ini line 3: max_queue_workers must be a whole number, got 'four' — write digits only, e.g. 4"),
            case("count_overflow", "archiver", Extra("lookahead: 99999999999999999999999\n"), CHECK, 2, "pitrkit: configuration error: $T/count_overflow.ini line 3: lookahead is too large, got '99999999999999999999999'"),
            case("port_range", "archiver", Extra("ssh_port: 70000\n"), CHECK, 2, "pitrkit: configuration error: $T/port_range.ini line 3: ssh_port must be 1..65535, got '70000'"),
            case("rsync_timeout_zero", "archiver", Extra("rsync_timeout: 0\n"), CHECK, 2, "pitrkit: configuration error: $T/rsync_timeout_zero.ini line 3: rsync_timeout must be at least 1 second(s), got '0' — rsync --timeout: seconds without I/O before a transfer is abandoned; also the limit for each remote command (sync, checks) once ssh is connected; at least 1"),
            case("notify_timeout_zero", "archiver", Extra("notify_timeout: 0\n"), CHECK, 2, "pitrkit: configuration error: $T/notify_timeout_zero.ini line 3: notify_timeout must be at least 1 second(s), got '0' — seconds a notify hook may run before it is killed (at least 1)"),
            case("max_queue_workers_zero", "archiver", Extra("max_queue_workers: 0\n"), CHECK, 2, "pitrkit: configuration error: $T/max_queue_workers_zero.ini line 3: max_queue_workers must be at least 1, got '0' — slaves shipped to in parallel (at least 1: with 0 nothing would ever be shipped)"),
            // An empty value is an absent line: the default, not 0 or ''.
            case("empty_defaults", "archiver", Extra("ssh_timeout:\nlookahead:\nmax_queue_workers:\nlock_timeout:\nqueue_wait:\nrsync_timeout:\nnotify_timeout:\n"), CHECK, 0, ""),
            case("empty_choices", "cmd_archiver", Extra("state:\nship_mode:\ncompression:\nslave_compression:\nstrict_host_key_checking:\nremote_fsync:\n"), CHECK, 0, ""),
            // remote_fsync: used to read as off, which sync mode refuses (and async mode obeyed).
            case("empty_remote_fsync", "archiver", Extra("slaves: db2\nl_archivedir: /q\nr_archivedir: /r\nship_mode: sync\nremote_fsync:\n"), CHECK, 0, ""),
            case("level_range", "archiver", Extra("compression: zstd\ncompression_level: 99\n"), CHECK, 2, "pitrkit: configuration error: $T/level_range.ini line 4: compression_level: zstd does not take compression level 99 (zstd levels are -131072..=22)"),
            case("level_without_codec", "archiver", Extra("compression_level: 5\n"), CHECK, 2, "pitrkit: configuration error: $T/level_without_codec.ini line 3: compression_level is set, but neither compression nor slave_compression takes a level — use compression: zstd or gzip, or remove compression_level"),
            // Booleans
            case("bool_word", "archiver", Extra("debug: maybe\n"), CHECK, 2, "pitrkit: configuration error: $T/bool_word.ini line 3: debug must be on or off, got 'maybe' — use on/off, yes/no, true/false or 1/0"),
            case("bool_enabled", "archiver", Extra("remote_fsync: enabled\n"), CHECK, 2, "pitrkit: configuration error: $T/bool_enabled.ini line 3: remote_fsync must be on or off, got 'enabled' — use on/off, yes/no, true/false or 1/0"),
            // Choices
            case("codec", "archiver", Extra("compression: bzip2\n"), CHECK, 2, "pitrkit: configuration error: $T/codec.ini line 3: compression must be one of none, zstd, lz4, gzip, got 'bzip2' — compress in process: archived WAL (archiver; file names get .lz4, .zst or .gz, restore reads them all) or each file of a backup set (backup)"),
            case("slave_codec", "archiver", Extra("slave_compression: xz\n"), CHECK, 2, "pitrkit: configuration error: $T/slave_codec.ini line 3: slave_compression must be one of same, none, zstd, lz4, gzip, got 'xz' — compression for what is shipped to slaves; 'same' uses 'compression'"),
            case("ship_mode", "archiver", Extra("ship_mode: semi-sync\n"), CHECK, 2, "pitrkit: configuration error: $T/ship_mode.ini line 3: ship_mode must be one of async, sync, got 'semi-sync' — async: succeed once spooled locally (pitrtools); sync: succeed only when every destination has the file (OmniPITR)"),
            case("state", "archiver", Extra("state: paused\n"), CHECK, 2, "pitrkit: configuration error: $T/state.ini line 3: state must be one of online, offline, got 'paused' — offline makes every archive call fail so PostgreSQL keeps its WAL (maintenance switch)"),
            case("host_key_checking", "archiver", Extra("strict_host_key_checking: ask\n"), CHECK, 2, "pitrkit: configuration error: $T/host_key_checking.ini line 3: strict_host_key_checking must be one of yes, accept-new, no, got 'ask' — ssh StrictHostKeyChecking; 'no' is insecure"),
            case("rsync_version", "archiver", Extra("rsync_version: 4\n"), CHECK, 0, "pitrkit: configuration warning: $T/rsync_version.ini line 3: 'rsync_version' is a pitrtools key pitrkit has no use for, ignored: cmd_archiver chose --remove-sent-files (2) or --remove-source-files (3) with it; pitrkit removes queued files itself once a slave has them durably, and uses no option rsync 2 lacks — delete the line once pitrtools no longer reads this file"),
            case("sync_without_fsync", "archiver", Extra("slaves: db2\nl_archivedir: /q\nr_archivedir: /r\nship_mode: sync\nremote_fsync: off\n"), CHECK, 2, "pitrkit: configuration error: $T/sync_without_fsync.ini line 7: ship_mode: sync with remote_fsync: off: sync mode promises PostgreSQL that every slave has the file durably, which only the remote sync guarantees — set remote_fsync: on, or ship_mode: async if losing the newest WAL on a slave crash is acceptable"),
            // Users and options
            case("user_option", "archiver", Extra("user: -oProxyCommand=sh\n"), CHECK, 2, "pitrkit: configuration error: $T/user_option.ini line 3: user: '-oProxyCommand=sh' starts with '-', so it would be read as an option"),
            case("user_space", "archiver", Extra("queue_user: post gres\n"), CHECK, 2, "pitrkit: configuration error: $T/user_space.ini line 3: queue_user: 'post gres' is not a valid user name (letters, digits, '_', '.', '-')"),
            case("rsync_flag_delete", "archiver", Extra("rsync_flags: -z --delete\n"), CHECK, 2, "pitrkit: configuration error: $T/rsync_flag_delete.ini line 3: rsync_flags: '--delete' is refused: it would delete archived WAL on the slave that is not in this queue; old WAL is removed by the standby's archive_cleanup_command (pitrkit cleanup) — remove it from rsync_flags"),
            case("rsync_flag_inplace", "cmd_archiver", Extra("rsync_flags: -az --inplace\n"), CHECK, 2, "cmd_archiver: configuration error: $T/rsync_flag_inplace.ini line 3: rsync_flags: '--inplace' is refused: rsync would write files under their real names before they are complete: a standby could restore half a WAL segment, or start from half-updated data files — remove it from rsync_flags"),
            case("rsync_flag_unknown", "archiver", Extra("rsync_flags: --max-delete=5\n"), CHECK, 2, "pitrkit: configuration error: $T/rsync_flag_unknown.ini line 3: rsync_flags: '--max-delete=5' is not an option pitrkit knows to be safe here — only options that change how bytes travel are handed to rsync: -z, --compress, --compress-level=N, --zl=N, --zc=NAME, --compress-choice=NAME, --bwlimit=RATE, -4, -6, --address=ADDR, --contimeout=N, --protocol=N, -c, --checksum, -W; -a, -v, -P, --partial and the like are accepted and have no effect; use the ssh_* keys for ssh settings"),
            case("rsync_flag_timeout_conflict", "archiver", Extra("rsync_flags: -z --timeout=30\nrsync_timeout: 60\n"), CHECK, 2, "pitrkit: configuration error: $T/rsync_flag_timeout_conflict.ini line 3: rsync_flags (line 3) says --timeout=30 but rsync_timeout (line 4) is 60 — keep one: set rsync_timeout and remove the option from rsync_flags"),
            case("rsync_flags_no_effect", "cmd_archiver", Extra("rsync_flags: -az --partial -e 'ssh -p 2222'\n"), CHECK, 0, "cmd_archiver: configuration warning: $T/rsync_flags_no_effect.ini line 3: rsync_flags: '-a (in -az)' has no effect in pitrkit: pitrkit sets the copy options it needs itself — remove it from rsync_flags\ncmd_archiver: configuration warning: $T/rsync_flags_no_effect.ini line 3: rsync_flags: '--partial' has no effect in pitrkit: pitrkit keeps no half-transferred file: an interrupted transfer starts again — remove it from rsync_flags\ncmd_archiver: configuration warning: $T/rsync_flags_no_effect.ini line 3: rsync_flags: '-e ssh -p 2222' is taken as ssh_port: 2222 (pitrkit runs ssh itself with its ssh_* settings; only a port (-p N) is taken over, as ssh_port) — write 'ssh_port: 2222' and remove it from rsync_flags"),
            case("rsync_flag_shell", "archiver", Extra("rsync_flags: -e;sh\n"), CHECK, 2, "pitrkit: configuration error: $T/rsync_flag_shell.ini line 3: rsync_flags: '-e ;sh' is refused: pitrkit runs ssh itself, and takes over only its port (-p N) — put ssh options in ssh_options, the key file in ssh_identity, the program in ssh"),
            case("ssh_option_no_value", "archiver", Extra("ssh_options: StrictHostKeyChecking\n"), CHECK, 2, "pitrkit: configuration error: $T/ssh_option_no_value.ini line 3: ssh_options: 'StrictHostKeyChecking' is not Key=Value — write ssh -o options as Key=Value words, e.g. 'ServerAliveInterval=15'"),
            case("ssh_legacy_relative", "archiver", Extra("ssh: ssh -p 2222\n"), CHECK, 2, "pitrkit: configuration error: $T/ssh_legacy_relative.ini line 3: ssh: 'ssh' is not an absolute path (it must start with '/') — write the full path, starting with '/'"),
            // Unknown keys
            case("unknown_close", "archiver", Extra("slave: db2\n"), CHECK, 2, "pitrkit: configuration error: $T/unknown_close.ini line 3: unknown key 'slave' — did you mean 'slaves'? (a misspelt key would silently keep its default, so keys this close to a known one are refused)"),
            case("unknown_ship_mdoe", "cmd_archiver", Extra("ship_mdoe: sync\n"), CHECK, 2, "cmd_archiver: configuration error: $T/unknown_ship_mdoe.ini line 3: unknown key 'ship_mdoe' — did you mean 'ship_mode'? (a misspelt key would silently keep its default, so keys this close to a known one are refused)"),
            case("unknown_far", "archiver", Extra("frobnicate: yes\n"), CHECK, 0, "pitrkit: configuration warning: $T/unknown_far.ini line 3: unknown key 'frobnicate' is ignored — check its spelling against the commented sample files in etc/, or delete the line"),
            case("status_warns", "cmd_archiver", Extra("timeout: 10\n"), &["-C", "$C", "--status"], 0, "cmd_archiver: configuration warning: $T/status_warns.ini line 3: 'timeout' is a pitrtools key pitrkit has no use for, ignored: an early cmd_archiver key that later versions read but never used; ssh_timeout (connecting) and rsync_timeout (transfers) are pitrkit's — delete the line once pitrtools no longer reads this file"),
            // cron runs --flush: its output is mailed every time.
            case("flush_quiet", "cmd_archiver", Extra("timeout: 10\n"), &["-C", "$C", "--flush"], 0, ""),
            case("helper_key", "cmd_archiver", Whole("[DEFAULT]\nbase: $T\nlocal_archivedirs: %(base)s/arch\n"), CHECK, 0, ""),
            case("legacy_keys", "cmd_archiver", Extra("pgcontroldata: /usr/lib/postgresql/15/bin/pg_controldata\ntimeout: 10\n"), CHECK, 0, "cmd_archiver: configuration warning: $T/legacy_keys.ini line 3: 'pgcontroldata' is a pitrtools key pitrkit has no use for, ignored: cmd_archiver's path of pg_controldata, read but never run (its one function was a stub); pitrkit reads global/pg_control itself — delete the line once pitrtools no longer reads this file\ncmd_archiver: configuration warning: $T/legacy_keys.ini line 4: 'timeout' is a pitrtools key pitrkit has no use for, ignored: an early cmd_archiver key that later versions read but never used; ssh_timeout (connecting) and rsync_timeout (transfers) are pitrkit's — delete the line once pitrtools no longer reads this file"),
            case("unknown_with_space", "cmd_archiver", Extra("ssh timeout: 10\n"), CHECK, 2, "cmd_archiver: configuration error: $T/unknown_with_space.ini line 3: unknown key 'ssh timeout' — did you mean 'ssh_timeout'? (a misspelt key would silently keep its default, so keys this close to a known one are refused)"),
        ],
    );
}

#[test]
fn standby_config_values() {
    run_group(
        "standby_values",
        STANDBY_BASE,
        &[
            prefix(case("archivedir_empty", "restore", Whole("[DEFAULT]\narchivedir:\n"), &["-C", "$C", "000000010000000000000001", "pg_wal/RECOVERYXLOG"], 200, "pitrkit[PID] [ERROR] restore of 000000010000000000000001 failed: configuration error: $T/archivedir_empty.ini: 'archivedir' is not set")),
            case("archivedir_relative", "restore", Whole("[DEFAULT]\narchivedir: archive\n"), &["-C", "$C", "000000010000000000000001", "pg_wal/RECOVERYXLOG"], 200, "pitrkit: configuration error: $T/archivedir_relative.ini line 2: archivedir: 'archive' is not an absolute path (it must start with '/') — write the full path, starting with '/'"),
            prefix(case("archivedir_unset_cleanup", "cleanup", Whole("[DEFAULT]\npgdata: /srv/pg\n"), &["-C", "$C", "000000010000000000000001"], 2, "pitrkit[PID] [ERROR] cleanup failed: configuration error: $T/archivedir_unset_cleanup.ini: 'archivedir' is not set")),
            case("master_host_option", "standby", Extra("master_public_ip: -oProxyCommand=sh\n"), CHECK, 2, "pitrkit: configuration error: $T/master_host_option.ini line 3: master_public_ip: '-oProxyCommand=sh' starts with '-', so ssh and rsync would read it as an option"),
            case("master_host_semicolon", "cmd_standby", Extra("master_public_ip: db1;id\n"), CHECK, 2, "cmd_standby: configuration error: $T/master_host_semicolon.ini line 3: master_public_ip: 'db1;id' contains ';', which a shell would interpret"),
            case("master_host_newline", "standby", Extra("master_public_ip: db1\n\tdb2\n"), CHECK, 2, "pitrkit: configuration error: $T/master_host_newline.ini lines 3-4: master_public_ip: 'db1\\ndb2' contains a line break — an indented line continues the value of the key above it (ConfigParser), so 'master_public_ip' runs on from line 3; remove the indentation if that line is a key of its own"),
            case("port_zero", "standby", Extra("port: 0\n"), CHECK, 2, "pitrkit: configuration error: $T/port_zero.ini line 3: port must be 1..65535, got '0'"),
            case("port_word", "standby", Extra("port: postgres\n"), CHECK, 2, "pitrkit: configuration error: $T/port_word.ini line 3: port must be a whole number, got 'postgres' — write digits only, e.g. 4"),
            case("restore_delay_unit", "restore", Extra("restore_delay: 1h\n"), &["-C", "$C", "000000010000000000000001", "pg_wal/RECOVERYXLOG"], 200, "pitrkit: configuration error: $T/restore_delay_unit.ini line 3: restore_delay must be a whole number of seconds, got '1h' — write digits only, without a unit, e.g. 30"),
            case("streaming_bool", "standby", Extra("use_streaming_replication: 2\n"), CHECK, 2, "pitrkit: configuration error: $T/streaming_bool.ini line 3: use_streaming_replication must be on or off, got '2' — use on/off, yes/no, true/false or 1/0"),
            case("sslmode", "standby", Extra("sslmode: required\n"), CHECK, 2, "pitrkit: configuration error: $T/sslmode.ini line 3: sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full, got 'required' — libpq sslmode for connections to the master"),
            // PostgreSQL runs cleanup and restore per segment into its log:
            // legacy and unknown keys print no warning there.
            case("cleanup_no_warnings", "cleanup", Extra("numarchives: 10\npg_standby: /usr/lib/postgresql/8.4/bin/pg_standby\nfrobnicate: 1\nrsync_flags: -avz\n"), &["-C", "$C", "000000010000000000000001"], 0, "pitrkit[PID] [INFO] removed 0 file(s), 0 bytes (0.0 MiB), older than 000000010000000000000001 from $T/sarch; kept 0 WAL, 1 history, 0 backup, 1 other file(s)"),
            prefix(case("restore_no_warnings", "restore", Extra("numarchives: 10\nr_psql: /usr/bin/psql\nfrobnicate: 1\n"), &["-C", "$C", "RECOVERYXLOG", "pg_wal/RECOVERYXLOG"], 200, "pitrkit[PID] [ERROR] restore of RECOVERYXLOG failed: 'RECOVERYXLOG' is not a WAL file name")),
            case("standby_warns", "cmd_standby", Extra("numarchives: 10\n"), &["-C", "$C", "-A", "stop_basebackup"], 0, "cmd_standby: configuration warning: $T/standby_warns.ini line 3: 'numarchives' is a pitrtools key pitrkit has no use for, ignored: cmd_standby's pg_standby -k for PostgreSQL 8.2; pitrkit cleanup (archive_cleanup_command) removes what %r no longer needs — delete the line once pitrtools no longer reads this file"),
            case("empty_defaults", "cleanup", Extra("wait_timeout:\nsslmode:\nport:\nrepl_db_user:\nmaster_user:\nuse_streaming_replication:\nssh_timeout:\nrestore_delay:\n"), &["-C", "$C", "000000010000000000000001"], 0, "pitrkit[PID] [INFO] removed 0 file(s), 0 bytes (0.0 MiB), older than 000000010000000000000001 from $T/sarch; kept 0 WAL, 1 history, 0 backup, 2 other file(s)"),
            case("pgversion_word", "standby", Extra("pgversion: fifteen\n"), CHECK, 2, "pitrkit: configuration error: $T/pgversion_word.ini line 3: pgversion must be a PostgreSQL major version like 15, got 'fifteen'"),
            case("slot_name", "standby", Extra("primary_slot_name: Standby-1\n"), CHECK, 2, "pitrkit: configuration error: $T/slot_name.ini line 3: primary_slot_name 'Standby-1' is not a valid slot name — slot names use lower-case letters, digits and '_' (at most 63)"),
            case("tablespace_pair", "standby", Extra("tablespace_map: /srv/ts1\n"), CHECK, 2, "pitrkit: configuration error: $T/tablespace_pair.ini line 3: tablespace_map: '/srv/ts1' is not old=new — write old=new pairs of absolute paths, comma-separated"),
            case("tablespace_relative", "standby", Extra("tablespace_map: /srv/ts1=ts1\n"), CHECK, 2, "pitrkit: configuration error: $T/tablespace_relative.ini line 3: tablespace_map: '/srv/ts1=ts1' ('ts1' is not an absolute path (it must start with '/')) — write old=new pairs of absolute paths, comma-separated"),
            case("repl_user_dollar", "standby", Extra("repl_db_user: $USER\n"), CHECK, 2, "pitrkit: configuration error: $T/repl_user_dollar.ini line 3: repl_db_user: '$USER' is not a valid user name (letters, digits, '_', '.', '-')"),
            case("unknown_standby_key", "cmd_standby", Extra("archive_dir: /srv/archive\n"), CHECK, 2, "cmd_standby: configuration error: $T/unknown_standby_key.ini line 3: unknown key 'archive_dir' — did you mean 'archivedir'? (a misspelt key would silently keep its default, so keys this close to a known one are refused)"),
            case("standby_rsync_flag_remove", "cmd_standby", Extra("rsync_flags: -z --remove-source-files\n"), CHECK, 2, "cmd_standby: configuration error: $T/standby_rsync_flag_remove.ini line 3: rsync_flags: '--remove-source-files' is refused: a base backup would delete the master's data files — remove it from rsync_flags"),
            case("pg_ctl_relative", "standby", Extra("pg_ctl: pg_ctl\n"), CHECK, 2, "pitrkit: configuration error: $T/pg_ctl_relative.ini line 3: pg_ctl: 'pg_ctl' is not an absolute path (it must start with '/') — write the full path, starting with '/'"),
            // SQL through ssh, and TLS (h9-net)
            case("sql_via_ssh", "standby", Extra("sql_via_ssh: maybe\n"), CHECK, 2, "pitrkit: configuration error: $T/sql_via_ssh.ini line 3: sql_via_ssh must be one of auto, on, off, got 'maybe' — pitrkit's SQL session through an ssh tunnel to the master (OpenSSH -L): on always; auto when the direct connection to master_public_ip:port cannot be made; off never. Streaming replication cannot use it"),
            case("master_local_ip_port", "standby", Extra("master_local_ip: 10.0.0.1:5432\n"), CHECK, 2, "pitrkit: configuration error: $T/master_local_ip_port.ini line 3: master_local_ip '10.0.0.1:5432' is not a host name or IP address — write the address the master's PostgreSQL listens on, as seen on the master, e.g. 127.0.0.1"),
            case("master_local_ip_option", "cmd_standby", Extra("master_local_ip: -oProxyCommand=sh\n"), CHECK, 2, "cmd_standby: configuration error: $T/master_local_ip_option.ini line 3: master_local_ip '-oProxyCommand=sh' is not a host name or IP address — write the address the master's PostgreSQL listens on, as seen on the master, e.g. 127.0.0.1"),
            case("master_socket_dir_colon", "standby", Extra("master_socket_dir: /run/pg:1\n"), CHECK, 2, "pitrkit: configuration error: $T/master_socket_dir_colon.ini line 3: master_socket_dir '/run/pg:1' contains ':', which ssh -L reads as a separator — use a path without ':' (a symlink can provide one)"),
            case("master_socket_dir_relative", "standby", Extra("master_socket_dir: run/postgresql\n"), CHECK, 2, "pitrkit: configuration error: $T/master_socket_dir_relative.ini line 3: master_socket_dir: 'run/postgresql' is not an absolute path (it must start with '/') — write the full path, starting with '/'"),
            case("sslrootcert_system_verify_ca", "standby", Extra("sslmode: verify-ca\nsslrootcert: system\n"), CHECK, 2, "pitrkit: configuration error: $T/sslrootcert_system_verify_ca.ini line 4: sslrootcert: system needs sslmode verify-full, not verify-ca — set sslmode: verify-full (any certificate from a public CA would pass verify-ca)"),
            case("sslrootcert_relative", "standby", Extra("sslrootcert: root.crt\n"), CHECK, 2, "pitrkit: configuration error: $T/sslrootcert_relative.ini line 3: sslrootcert: 'root.crt' is not an absolute path (it must start with '/') — write the full path, starting with '/'"),
            case("sslkey_space", "standby", Extra("sslkey: /etc/pitrkit/my key\n"), CHECK, 2, "pitrkit: configuration error: $T/sslkey_space.ini line 3: sslkey: '/etc/pitrkit/my key' contains white space — paths are handed to rsync and ssh, and a remote shell would split or expand these characters; use a path without them (a symlink can provide one)"),
            case("empty_connection_keys", "cleanup", Extra("sql_via_ssh:\nmaster_socket_dir:\nmaster_local_ip:\nsslrootcert:\nsslcert:\nsslkey:\nsslcrl:\n"), &["-C", "$C", "000000010000000000000001"], 0, "pitrkit[PID] [INFO] removed 0 file(s), 0 bytes (0.0 MiB), older than 000000010000000000000001 from $T/sarch; kept 0 WAL, 1 history, 0 backup, 2 other file(s)"), // and the %r recorded by the case above
            // Refused before any connection is attempted: no server needed.
            prefix(case("verify_full_missing_rootcert", "cmd_standby", Extra("pgdata: $T/wal\nmaster_public_ip: 127.0.0.1\nsslmode: verify-full\nsslrootcert: $T/root.crt\n"), &["-C", "$C", "-P"], 1, "cmd_standby[PID] [ERROR] ping (-P) failed: setting up TLS (sslmode verify-full) for postgres@127.0.0.1:5432/postgres failed: root certificate file $T/root.crt does not exist; sslmode verify-full checks the master's certificate against it: put the CA certificate there, point sslrootcert at it, or use sslmode require (encryption without verification)")),
        ],
    );
}

#[test]
fn ini_syntax() {
    run_group(
        "ini_syntax",
        ARCHIVER_BASE,
        &[
            case("duplicate_key", "archiver", Extra("state: online\ndebug: off\nSTATE: offline\n"), CHECK, 2, "pitrkit: configuration error: $T/duplicate_key.ini line 5: 'state' is set twice with different values: line 3 says 'online', line 5 says 'offline' — delete the line you do not mean (ConfigParser silently used the last one; pitrkit will not guess)"),
            case("duplicate_same_value", "archiver", Extra("state: online\nstate = online\n"), CHECK, 0, "pitrkit: configuration warning: $T/duplicate_same_value.ini line 4: 'state' is set twice, with the same value (lines 3 and 4) — delete one of the lines"),
            case("other_section", "archiver", Whole("[cmd_archiver]\nlocal_archivedirs: $T/arch\n"), CHECK, 2, "pitrkit: configuration error: $T/other_section.ini line 2: no key is set under [DEFAULT]: the keys are under [cmd_archiver], which is not read — pitrkit reads only [DEFAULT], as pitrtools did; rename the [cmd_archiver] header to [DEFAULT]"),
            case("second_section", "archiver", Extra("[standby]\npgdata: /srv/pg\nfrobnicate: 1\n"), CHECK, 0, "pitrkit: configuration warning: $T/second_section.ini line 4: 'pgdata' in section [standby] is not read: pitrkit reads only [DEFAULT], as pitrtools did — move it above the [standby] header (or under [DEFAULT]) if it is meant as 'pgdata'"),
            case("unclosed_section", "archiver", Whole("[DEFAULT\nlocal_archivedirs: $T/arch\n"), CHECK, 2, "pitrkit: configuration error: $T/unclosed_section.ini line 1: bad section header '[DEFAULT' — write the header as [DEFAULT]"),
            case("no_separator", "archiver", Extra("slaves db2\n"), CHECK, 2, "pitrkit: configuration error: $T/no_separator.ini line 3: 'slaves db2' is not a 'key: value' line — write 'key: value' or 'key = value'; comment lines start with '#' or ';'"),
            case("no_key", "archiver", Extra(": db2\n"), CHECK, 2, "pitrkit: configuration error: $T/no_key.ini line 3: a value without a key — write 'key: value' or 'key = value'"),
            case("indented_first_line", "archiver", Whole("[DEFAULT]\n  local_archivedirs: $T/arch\n"), CHECK, 2, "pitrkit: configuration error: $T/indented_first_line.ini line 2: indented line with no key above it to continue — an indented line continues the value of the key above (ConfigParser); remove the leading white space"),
            case("indented_key_continues", "archiver", Extra("state: online\n  debug: on\n"), CHECK, 2, "pitrkit: configuration error: $T/indented_key_continues.ini lines 3-4: state must be one of online, offline, got 'online\\ndebug: on' — an indented line continues the value of the key above it (ConfigParser), so 'state' runs on from line 3; remove the indentation if that line is a key of its own; offline makes every archive call fail so PostgreSQL keeps its WAL (maintenance switch)"),
            case("not_utf8", "archiver", Bytes(b"[DEFAULT]\nlocal_archivedirs: /srv/\xe9t\xe9\n"), CHECK, 2, "pitrkit: configuration error: $T/not_utf8.ini line 2: is not UTF-8 text — save the file as UTF-8 (or plain ASCII)"),
        ],
    );
}

#[test]
fn interpolation_and_secrets() {
    run_group(
        "interpolation",
        STANDBY_BASE,
        &[
            case("missing_reference", "standby", Extra("pgdata: %(base)s/main\n"), CHECK, 2, "pitrkit: configuration error: $T/missing_reference.ini line 3: 'pgdata' refers to %(base)s, which is not set in this file — set that key, or write %% for a literal percent sign"),
            case("reference_loop", "standby", Extra("a_dir: %(b_dir)s\nb_dir: %(a_dir)s\n"), CHECK, 2, "pitrkit: configuration error: $T/reference_loop.ini line 3: 'a_dir': %(name)s references nest more than 10 deep (a loop?) — a key must not refer to itself, directly or through other keys"),
            case("self_reference", "standby", Extra("pgdata: %(pgdata)s/x\n"), CHECK, 2, "pitrkit: configuration error: $T/self_reference.ini line 3: 'pgdata': %(name)s references nest more than 10 deep (a loop?) — a key must not refer to itself, directly or through other keys"),
            case("unterminated_reference", "standby", Extra("base: /srv\npgdata: %(base/main\n"), CHECK, 2, "pitrkit: configuration error: $T/unterminated_reference.ini line 4: 'pgdata' has an unterminated %(...)s reference — end each reference with ')s', or write %% for a literal percent sign"),
            case("lone_percent", "standby", Extra("base: /srv\npgdata: %(base)s/100%\n"), CHECK, 2, "pitrkit: configuration error: $T/lone_percent.ini line 4: 'pgdata' contains a lone '%' in a value that uses %(name)s references — write %% for a literal percent sign"),
            case("secret_missing_reference", "standby", Extra("master_password: Zq%(xy)sWv\n"), CHECK, 2, "pitrkit: configuration error: $T/secret_missing_reference.ini line 3: 'master_password' refers to a key that is not set in this file (the value is not shown: 'master_password' is a secret) — set that key, or write %% for a literal percent sign"),
            case("secret_unterminated", "restore", Extra("repl_db_password: Zq%(xy\n"), &["-C", "$C", "000000010000000000000001", "pg_wal/RECOVERYXLOG"], 200, "pitrkit: configuration error: $T/secret_unterminated.ini line 3: 'repl_db_password' has an unterminated %(...)s reference (the value is not shown: 'repl_db_password' is a secret) — end each reference with ')s', or write %% for a literal percent sign"),
            case("secret_line_without_colon", "standby", Extra("master_password Zq xy\n"), CHECK, 2, "pitrkit: configuration error: $T/secret_line_without_colon.ini line 3: this line (not shown: it mentions a password) is not a 'key: value' line — write 'key: value' or 'key = value'; comment lines start with '#' or ';'"),
            case("secret_in_host", "standby", Extra("master_password: Zq;xy\nmaster_public_ip: %(master_password)s\n"), CHECK, 2, "pitrkit: configuration error: $T/secret_in_host.ini line 4: master_public_ip: (value not shown: it includes secret key 'master_password') contains ';', which a shell would interpret"),
            case("secret_in_user", "standby", Extra("repl_db_password: Zq xy\nrepl_db_user: %(repl_db_password)s\n"), CHECK, 2, "pitrkit: configuration error: $T/secret_in_user.ini line 4: repl_db_user: (value not shown: it includes secret key 'repl_db_password') is not a valid user name (letters, digits, '_', '.', '-')"),
            case("secret_in_port", "standby", Extra("master_password: 99999\nport: %(master_password)s\n"), CHECK, 2, "pitrkit: configuration error: $T/secret_in_port.ini line 4: port must be 1..65535, got (value not shown: it includes secret key 'master_password')"),
            case("secret_through_key", "standby", Extra("master_password: Zq%(xy)s\na_dir: /srv/%(master_password)s\n"), CHECK, 2, "pitrkit: configuration error: $T/secret_through_key.ini line 4: 'a_dir' refers to a key that is not set in this file, inside the value of secret key 'master_password' (not shown) — set that key, or write %% for a literal percent sign"),
        ],
    );
}

#[test]
fn hooks() {
    run_group(
        "hooks",
        ARCHIVER_BASE,
        &[
            case("subshell", "archiver", Extra("notify_critical: (mail -s pitrkit dba)\n"), CHECK, 2, "pitrkit: configuration error: $T/subshell.ini line 3: notify_critical: '(mail -s pitrkit dba)' contains '(' or ')': pitrkit appends the message as an argument (sh -c '<hook> \"$@\"'), and '( ... ) \"$@\"' is a shell syntax error, so every notification would fail — a hook must be one command: a program and its arguments (VAR=value words before it are fine); put anything more complex in a script that takes the message as \"$1\", and name the script here"),
            case("or_true", "archiver", Extra("notify_warning: logger -t pitrkit || true\n"), CHECK, 2, "pitrkit: configuration error: $T/or_true.ini line 3: notify_warning: 'logger -t pitrkit || true' contains '||': pitrkit appends the message as an argument (sh -c '<hook> \"$@\"'), so the message would go to the command after '||' (not the first one), and a failing hook would be hidden — a hook must be one command: a program and its arguments (VAR=value words before it are fine); put anything more complex in a script that takes the message as \"$1\", and name the script here"),
            case("and_then", "archiver", Extra("notify_ok: logger -t pitrkit && mail -s ok dba\n"), CHECK, 2, "pitrkit: configuration error: $T/and_then.ini line 3: notify_ok: 'logger -t pitrkit && mail -s ok dba' runs several commands ('&&'): pitrkit appends the message as an argument (sh -c '<hook> \"$@\"'), so only the last command would get the message — a hook must be one command: a program and its arguments (VAR=value words before it are fine); put anything more complex in a script that takes the message as \"$1\", and name the script here"),
            case("background", "archiver", Extra("notify_ok: logger -t pitrkit &\n"), CHECK, 2, "pitrkit: configuration error: $T/background.ini line 3: notify_ok: 'logger -t pitrkit &' ends with '&': pitrkit appends the message as an argument (sh -c '<hook> \"$@\"'), so the message would be lost or run as a separate command — a hook must be one command: a program and its arguments (VAR=value words before it are fine); put anything more complex in a script that takes the message as \"$1\", and name the script here"),
            case("background_then", "archiver", Extra("notify_ok: logger -t pitrkit & mail dba\n"), CHECK, 2, "pitrkit: configuration error: $T/background_then.ini line 3: notify_ok: 'logger -t pitrkit & mail dba' contains '&': pitrkit appends the message as an argument (sh -c '<hook> \"$@\"'); the command before '&' would run in the background without the message, unwatched by notify_timeout — a hook must be one command: a program and its arguments (VAR=value words before it are fine); put anything more complex in a script that takes the message as \"$1\", and name the script here"),
            case("hash_comment", "archiver", Extra("notify_critical: /usr/local/bin/page-dba # night shift\n"), CHECK, 2, "pitrkit: configuration error: $T/hash_comment.ini line 3: notify_critical: '/usr/local/bin/page-dba # night shift' contains a '#' comment: pitrkit appends the message as an argument (sh -c '<hook> \"$@\"'), and the comment would swallow the message — '#' starts a comment only at the beginning of a line; after a value write ' ; comment'; a hook must be one command: a program and its arguments (VAR=value words before it are fine); put anything more complex in a script that takes the message as \"$1\", and name the script here"),
            case("trailing_semicolon", "archiver", Extra("notify_ok: logger -t pitrkit;\n"), CHECK, 2, "pitrkit: configuration error: $T/trailing_semicolon.ini line 3: notify_ok: 'logger -t pitrkit;' ends with ';': pitrkit appends the message as an argument (sh -c '<hook> \"$@\"'), so the message would be lost or run as a separate command — a hook must be one command: a program and its arguments (VAR=value words before it are fine); put anything more complex in a script that takes the message as \"$1\", and name the script here"),
            case("trailing_pipe", "archiver", Extra("notify_ok: mail -s pitrkit dba |\n"), CHECK, 2, "pitrkit: configuration error: $T/trailing_pipe.ini line 3: notify_ok: 'mail -s pitrkit dba |' ends with '|': pitrkit appends the message as an argument (sh -c '<hook> \"$@\"'), so the message would be lost or run as a separate command — a hook must be one command: a program and its arguments (VAR=value words before it are fine); put anything more complex in a script that takes the message as \"$1\", and name the script here"),
            case("pipeline", "archiver", Extra("notify_ok: cat | mail -s pitrkit dba\n"), CHECK, 2, "pitrkit: configuration error: $T/pipeline.ini line 3: notify_ok: 'cat | mail -s pitrkit dba' is a pipeline ('|'): pitrkit appends the message as an argument (sh -c '<hook> \"$@\"'), so the message would go to the last command of the pipeline, not the first — a hook must be one command: a program and its arguments (VAR=value words before it are fine); put anything more complex in a script that takes the message as \"$1\", and name the script here"),
            case("two_commands", "archiver", Extra("notify_ok: logger -t a; logger -t b\n"), CHECK, 2, "pitrkit: configuration error: $T/two_commands.ini line 3: notify_ok: 'logger -t a; logger -t b' runs several commands (';'): pitrkit appends the message as an argument (sh -c '<hook> \"$@\"'), so only the last command would get the message — a hook must be one command: a program and its arguments (VAR=value words before it are fine); put anything more complex in a script that takes the message as \"$1\", and name the script here"),
            case("continued_hook", "archiver", Extra("notify_ok: logger -t a\n  logger -t b\n"), CHECK, 2, "pitrkit: configuration error: $T/continued_hook.ini lines 3-4: notify_ok: 'logger -t a\\nlogger -t b' runs several commands ('a line break'): pitrkit appends the message as an argument (sh -c '<hook> \"$@\"'), so only the last command would get the message — an indented line continues the value of the key above it (ConfigParser), so 'notify_ok' runs on from line 3; remove the indentation if that line is a key of its own; a hook must be one command: a program and its arguments (VAR=value words before it are fine); put anything more complex in a script that takes the message as \"$1\", and name the script here"),
            case("only_assignment", "archiver", Extra("notify_ok: LEVEL=ok\n"), CHECK, 2, "pitrkit: configuration error: $T/only_assignment.ini line 3: notify_ok: 'LEVEL=ok' has no command, only variable assignments or redirections: pitrkit appends the message as an argument (sh -c '<hook> \"$@\"'), so the message itself would run as the command — a hook must be one command: a program and its arguments (VAR=value words before it are fine); put anything more complex in a script that takes the message as \"$1\", and name the script here"),
            case("unclosed_quote", "archiver", Extra("notify_ok: logger -t 'pitr kit\n"), CHECK, 2, "pitrkit: configuration error: $T/unclosed_quote.ini line 3: notify_ok: 'logger -t 'pitr kit' has an unclosed ''': pitrkit appends the message as an argument (sh -c '<hook> \"$@\"'), which the open quote or bracket would swallow (a syntax error) — a hook must be one command: a program and its arguments (VAR=value words before it are fine); put anything more complex in a script that takes the message as \"$1\", and name the script here"),
            case("compound", "archiver", Extra("notify_ok: if true; then logger x; fi\n"), CHECK, 2, "pitrkit: configuration error: $T/compound.ini line 3: notify_ok: 'if true; then logger x; fi' starts with the shell keyword 'if': pitrkit appends the message as an argument (sh -c '<hook> \"$@\"'), which after a compound command is a syntax error or lost — a hook must be one command: a program and its arguments (VAR=value words before it are fine); put anything more complex in a script that takes the message as \"$1\", and name the script here"),
            case("eval", "archiver", Extra("notify_ok: eval logger\n"), CHECK, 2, "pitrkit: configuration error: $T/eval.ini line 3: notify_ok: 'eval logger' starts with 'eval': pitrkit appends the message as an argument (sh -c '<hook> \"$@\"'), so the message text would be run as shell code — a hook must be one command: a program and its arguments (VAR=value words before it are fine); put anything more complex in a script that takes the message as \"$1\", and name the script here"),
            case("start_command_group", "standby", Whole("[DEFAULT]\nstart_command: { pg_ctlcluster 15 main start; }\n"), CHECK, 2, "pitrkit: configuration error: $T/start_command_group.ini line 2: start_command: '{ pg_ctlcluster 15 main start; }' starts with the shell keyword '{': pitrkit runs it as sh -c '<command> \"$@\"', which after a compound command is a syntax error — put the commands in a script and name the script here"),
            case("action_failover_subshell", "standby", Whole("[DEFAULT]\naction_failover: (cd /srv && ./promote-done)\n"), CHECK, 2, "pitrkit: configuration error: $T/action_failover_subshell.ini line 2: action_failover: '(cd /srv && ./promote-done)' contains '(' or ')': pitrkit runs it as sh -c '<command> \"$@\"', and '( ... ) \"$@\"' is a shell syntax error, so it would always fail — put the commands in a script and name the script here"),
        ],
    );
}

#[test]
fn command_lines() {
    run_group(
        "arguments",
        ARCHIVER_BASE,
        &[
            case("missing_config_archiver", "archiver", Absent, &[], 2, "pitrkit: configuration error: $T/cmd_archiver.ini: cannot read configuration file: No such file or directory (os error 2) — pass the configuration file with -C /path/to/file.ini (without -C, it is looked for in the current directory)"),
            case("missing_config_link", "cmd_standby", Absent, &["-P"], 2, "cmd_standby: configuration error: $T/cmd_standby.ini: cannot read configuration file: No such file or directory (os error 2) — pass the configuration file with -C /path/to/file.ini (without -C, it is looked for in the current directory)"),
            case("config_unreadable", "archiver", Unreadable, CHECK, 2, "pitrkit: configuration error: $T/config_unreadable.ini: cannot read configuration file: Permission denied (os error 13) — make it readable by the OS user pitrkit runs as (usually postgres), e.g. chgrp postgres and chmod 640"),
            case("config_is_directory", "cmd_archiver", Absent, &["-C", "$T/arch"], 2, "cmd_archiver: configuration error: $T/arch: is a directory, not a configuration file — pass the configuration file itself with -C, e.g. -C /etc/pitrkit/archiver.ini"),
            case("config_empty_name", "archiver", Absent, &["-C", ""], 2, "error: a value is required for '--config <CONFIG>' but none was supplied\n\nFor more information, try '--help'."),
            case("restore_config_missing", "restore", Absent, &["-C", "$T/nowhere.ini", "000000010000000000000001", "pg_wal/RECOVERYXLOG"], 200, "pitrkit: configuration error: $T/nowhere.ini: cannot read configuration file: No such file or directory (os error 2) — pass the configuration file with -C /path/to/file.ini (without -C, it is looked for in the current directory)"),
            case("restore_missing_dest", "restore", Extra(""), &["-C", "$C", "000000010000000000000001"], 200, "error: the following required arguments were not provided:\n  <DEST>\n\nUsage: pitrkit restore --config <CONFIG> <WAL> <DEST>\n\nFor more information, try '--help'."),
            prefix(case("restore_bad_name", "restore", Whole("[DEFAULT]\narchivedir: $T/sarch\n"), &["-C", "$C", "RECOVERYXLOG", "pg_wal/RECOVERYXLOG"], 200, "pitrkit[PID] [ERROR] restore of RECOVERYXLOG failed: 'RECOVERYXLOG' is not a WAL file name: the segment part is not 24 characters")),
            prefix(case("restore_name_with_slash", "restore", Whole("[DEFAULT]\narchivedir: $T/sarch\n"), &["-C", "$C", "../000000010000000000000001", "pg_wal/RECOVERYXLOG"], 200, "pitrkit[PID] [ERROR] restore of ../000000010000000000000001 failed: '../000000010000000000000001' is not a WAL file name: it contains '/'")),
            prefix(case("restore_dest_missing_dir", "restore", Whole("[DEFAULT]\narchivedir: $T/sarch\n"), &["-C", "$C", "00000002.history", "$T/nodir/RECOVERYHISTORY"], 200, "pitrkit[PID] [ERROR] restore of 00000002.history failed: cannot write $T/nodir/")),
            prefix(case("cleanup_bad_name", "cleanup", Whole("[DEFAULT]\narchivedir: $T/sarch\n"), &["-C", "$C", "%r"], 2, "pitrkit[PID] [ERROR] cleanup failed: %r '%r' is not a WAL segment name (24 hex digits)")),
            prefix(case("cleanup_history_name", "cleanup", Whole("[DEFAULT]\narchivedir: $T/sarch\n"), &["-C", "$C", "00000002.history"], 2, "pitrkit[PID] [ERROR] cleanup failed: %r '00000002.history' is not a WAL segment name (24 hex digits)")),
            case("cleanup_missing_name", "cleanup", Whole("[DEFAULT]\narchivedir: $T/sarch\n"), &["-C", "$C"], 2, "error: the following required arguments were not provided:\n  <OLDEST_KEPT>\n\nUsage: pitrkit cleanup --config <CONFIG> <OLDEST_KEPT>\n\nFor more information, try '--help'."),
            case("standby_failover_with_init", "cmd_standby", Whole("[DEFAULT]\narchivedir: $T/sarch\n"), &["-C", "$C", "-I", "-F999"], 2, "cmd_standby: usage: -F999 goes alone: give one of -F999 or -A per command; -I, -B, -S and -P may be combined and then run in that order; nothing was done"),
            case("standby_failover_and_action", "cmd_standby", Whole("[DEFAULT]\narchivedir: $T/sarch\n"), &["-C", "$C", "-A", "stop", "-F999"], 2, "cmd_standby: usage: -F999 goes alone: give one of -F999 or -A per command; -I, -B, -S and -P may be combined and then run in that order; nothing was done"),
            case("standby_action_with_start", "cmd_standby", Whole("[DEFAULT]\narchivedir: $T/sarch\n"), &["-C", "$C", "-S", "-A", "start"], 2, "cmd_standby: usage: -A goes alone: give one of -F999 or -A per command; -I, -B, -S and -P may be combined and then run in that order; nothing was done"),
            case("standby_failover_number", "cmd_standby", Whole("[DEFAULT]\narchivedir: $T/sarch\n"), &["-C", "$C", "-F", "998"], 2, "cmd_standby: usage: -F998 is not a failover: the failover flag is exactly -F999, a safety catch kept from pitrtools so that a stray -F cannot promote a standby; nothing was done"),
            case("standby_pitr_without_failover", "cmd_standby", Whole("[DEFAULT]\narchivedir: $T/sarch\n"), &["-C", "$C", "-R", "2026-11-30 05:00:00"], 2, "cmd_standby: usage: -R <timestamp> goes with -F999 (point-in-time recovery ends in a failover)"),
            case("standby_bad_action", "cmd_standby", Whole("[DEFAULT]\narchivedir: $T/sarch\n"), &["-C", "$C", "-A", "restart"], 2, "error: invalid value 'restart' for '--action <ACTION>'\n  [possible values: start, stop, stop_basebackup]\n\n  tip: a similar value exists: 'start'\n\nFor more information, try '--help'."),
            case("archiver_flush_with_file", "cmd_archiver", Extra(""), &["-C", "$C", "--flush", "-F", "pg_wal/000000010000000000000001"], 2, "error: the argument '--flush' cannot be used with '--file <WAL>'\n\nUsage: pitrkit archiver --config <CONFIG> --flush\n\nFor more information, try '--help'."),
            case("queue_runner", "archiver", Extra("queue_runner: sometimes\n"), CHECK, 2, "pitrkit: configuration error: $T/queue_runner.ini line 3: queue_runner must be one of auto, off, got 'sometimes' — auto: an async archive call that leaves files queued starts a detached queue runner (pitrkit queue, pitrtools' cmd_queue) that ships every queue_wait seconds until every queue is empty; off: never (run the queue service, or --flush from cron)"),
            case("queue_without_slaves", "cmd_queue", Extra(""), CHECK, 2, "cmd_queue: queue runner: $T/queue_without_slaves.ini configures no slaves: there is no queue to ship (set slaves, l_archivedir and r_archivedir)"),
            case("archiver_unknown_flag", "archiver", Extra(""), &["-C", "$C", "--frobnicate"], 2, "error: unexpected argument '--frobnicate' found\n\nUsage: pitrkit archiver --config <CONFIG>\n\nFor more information, try '--help'."),
        ],
    );
}

/// `archiver -F` with files that are not what their names say. The
/// configuration has no pgdata, so only the file itself is checked.
#[test]
fn archive_files() {
    const F: fn(&'static str, WalFile, &'static [&'static str], i32, &'static str) -> Case =
        |name, wal, args, exit, stderr| Case {
            name,
            cmd: "cmd_archiver",
            config: Extra(""),
            wal,
            args,
            exit,
            stderr,
            matching: Match::Prefix,
        };
    const MIB: u32 = 1 << 20;
    run_group(
        "archive_files",
        ARCHIVER_BASE,
        &[
            F("missing", WalFile::None, &["-C", "$C", "-F", "$T/wal/000000010000000000000009"], 1, "cmd_archiver[PID] [ERROR] archiving $T/wal/000000010000000000000009: $T/wal/000000010000000000000009: no such file"),
            F("empty", WalFile::Bytes("000000010000000000000001", b""), &["-C", "$C", "-F", "$T/wal/000000010000000000000001"], 1, "cmd_archiver[PID] [ERROR] archiving $T/wal/000000010000000000000001: $T/wal/000000010000000000000001: only 0 bytes, too short for a WAL segment"),
            F("too_short", WalFile::Bytes("000000010000000000000002", b"not a WAL segment\n"), &["-C", "$C", "-F", "$T/wal/000000010000000000000002"], 1, "cmd_archiver[PID] [ERROR] archiving $T/wal/000000010000000000000002: $T/wal/000000010000000000000002: only 18 bytes, too short for a WAL segment"),
            F("truncated", WalFile::Segment("000000010000000000000003", MIB, 3 << 20, 8192), &["-C", "$C", "-F", "$T/wal/000000010000000000000003"], 1, "cmd_archiver[PID] [ERROR] archiving $T/wal/000000010000000000000003: $T/wal/000000010000000000000003: file is 8192 bytes but its header says segments are 1048576 bytes"),
            F("renamed", WalFile::Segment("000000010000000000000004", MIB, 5 << 20, 1 << 20), &["-C", "$C", "-F", "$T/wal/000000010000000000000004"], 1, "cmd_archiver[PID] [ERROR] archiving $T/wal/000000010000000000000004: $T/wal/000000010000000000000004: header page address 0/500000 does not belong to segment 000000010000000000000004"),
            F("no_header", WalFile::Segment("000000010000000000000005", 0, 0, 1 << 20), &["-C", "$C", "-F", "$T/wal/000000010000000000000005"], 1, "cmd_archiver[PID] [ERROR] archiving $T/wal/000000010000000000000005: $T/wal/000000010000000000000005: header gives an impossible segment size 0"),
            F("impossible_size", WalFile::Segment("000000010000000000000006", 3 * MIB, (6 * 3) << 20, 3 << 20), &["-C", "$C", "-F", "$T/wal/000000010000000000000006"], 1, "cmd_archiver[PID] [ERROR] archiving $T/wal/000000010000000000000006: $T/wal/000000010000000000000006: header gives an impossible segment size 3145728"),
            F("name_not_wal", WalFile::Bytes("notes.txt", b"x"), &["-C", "$C", "-F", "$T/wal/notes.txt"], 1, "cmd_archiver[PID] [ERROR] archiving $T/wal/notes.txt: 'notes.txt' is not a WAL file name: the segment part is not 24 characters"),
            F("name_not_hex", WalFile::None, &["-C", "$C", "-F", "$T/wal/00000001000000000000000G"], 1, "cmd_archiver[PID] [ERROR] archiving $T/wal/00000001000000000000000G: '00000001000000000000000G' is not a WAL file name: it is not hexadecimal"),
            F("name_too_long", WalFile::None, &["-C", "$C", "-F", "$T/wal/0000000100000000000000010"], 1, "cmd_archiver[PID] [ERROR] archiving $T/wal/0000000100000000000000010: '0000000100000000000000010' is not a WAL file name: the segment part is not 24 characters"),
            F("name_timeline_zero", WalFile::None, &["-C", "$C", "-F", "$T/wal/000000000000000000000001"], 1, "cmd_archiver[PID] [ERROR] archiving $T/wal/000000000000000000000001: '000000000000000000000001' is not a WAL file name: timeline 0 does not exist"),
            F("name_bad_history", WalFile::None, &["-C", "$C", "-F", "$T/wal/0000002.history"], 1, "cmd_archiver[PID] [ERROR] archiving $T/wal/0000002.history: '0000002.history' is not a WAL file name: a history file is 8 hex digits + .history"),
            F("name_bad_backup", WalFile::None, &["-C", "$C", "-F", "$T/wal/000000010000000000000001.backup"], 1, "cmd_archiver[PID] [ERROR] archiving $T/wal/000000010000000000000001.backup: '000000010000000000000001.backup' is not a WAL file name: a backup file is <segment>.<offset>.backup"),
            F("relative_without_pgdata", WalFile::None, &["-C", "$C", "-F", "pg_wal/000000010000000000000001"], 1, "cmd_archiver[PID] [ERROR] archiving pg_wal/000000010000000000000001: pg_wal/000000010000000000000001: no such file"),
            // A damaged history file is refused before it is in the archive.
            F("history_garbage", WalFile::Bytes("00000003.history", b"\x00\xff garbage \x01\n"), &["-C", "$C", "-F", "$T/wal/00000003.history"], 1, "cmd_archiver[PID] [ERROR] archiving $T/wal/00000003.history: $T/wal/00000003.history: not a timeline history file as PostgreSQL writes it: not UTF-8 text"),
            F("history_truncated", WalFile::Bytes("00000003.history", b"1\t0/3000000\tno recovery target specified"), &["-C", "$C", "-F", "$T/wal/00000003.history"], 1, "cmd_archiver[PID] [ERROR] archiving $T/wal/00000003.history: $T/wal/00000003.history: not a timeline history file as PostgreSQL writes it: the last line has no newline (truncated?)"),
        ],
    );
}
