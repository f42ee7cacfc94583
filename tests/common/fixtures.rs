//! pitrkit-specific fixtures shared by the integration tests: notify hooks
//! that record their calls, and a master archiving through cmd_archiver.

use std::fs;
use std::path::{Path, PathBuf};

use std::process::Command;

use super::{describe_output, is_root, require_program, run_output, wal_keep_setting, PgCluster, Sshd, TestEnv};

/// A hook script that appends its arguments to a log file; returns (script, log).
pub fn recording_hook(env: &TestEnv, name: &str) -> (PathBuf, PathBuf) {
    let log = env.write(&format!("{name}.log"), "");
    let script = env.write(
        &format!("{name}.sh"),
        &format!("#!/bin/sh\necho \"$*\" >> {}\n", log.display()),
    );
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (script, log)
}

pub fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The `cmd_archiver` link next to the binary under test.
pub fn cmd_link(env: &TestEnv, name: &str) -> PathBuf {
    let link = env.path(&format!("bin/{name}"));
    if !link.exists() {
        std::os::unix::fs::symlink("pitrkit", &link).unwrap();
    }
    link
}

/// `base` with the `key: value` lines of `extra` added; a key `extra` sets
/// replaces the base's line (pitrkit refuses a key set twice).
pub fn merge_ini(base: &str, extra: &str) -> String {
    let key = |l: &str| {
        l.split_once([':', '='])
            .filter(|_| !l.starts_with([' ', '\t', ';', '#', '[']))
            .map(|(k, _)| k.trim().to_ascii_lowercase())
    };
    let replaced: Vec<String> = extra.lines().filter_map(key).collect();
    let mut out: String = base
        .lines()
        .filter(|l| !matches!(key(l), Some(k) if replaced.contains(&k)))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(extra);
    out.push('\n');
    out
}

/// An archiver config using only pitrtools 1.3 keys (plus `extra`, whose
/// keys replace the base's), shipping
/// to the private sshd's 127.0.0.1 into `remote`, hooks logging to `hooks`.
pub fn archiver_ini(env: &TestEnv, sshd: &Sshd, remote: &Path, hook: &Path, extra: &str) -> PathBuf {
    let text = format!(
        "[DEFAULT]
; online or offline
state: online
pgdata: {pgdata}
r_archivedir: {remote}
l_archivedir: {queue_root}
; the old explicit-path keys, with extra ssh options as pitrtools allowed
ssh: {ssh}
rsync_bin: {rsync}
rsync_flags: -z
rsync_version = 3
slaves: 127.0.0.1
user: {user}
ssh_timeout: 10
queue_wait: 0
notify_ok: {hook} ok
notify_warning:  {hook} warning
notify_critical: {hook} critical
debug: on
ssh_debug: off
",
        pgdata = env.path("master").display(),
        remote = remote.display(),
        queue_root = env.path("queue").display(),
        ssh = sshd.ssh_command_line(),
        rsync = require_program("rsync").display(),
        user = sshd.user,
        hook = hook.display(),
    );
    env.write("cmd_archiver.ini", &merge_ini(&text, extra))
}

/// A started master (datadir `master`) whose archive_command is cmd_archiver.
pub fn archiving_master(env: &TestEnv, ini: &Path, extra_conf: &str) -> PgCluster {
    let pg = PgCluster::init(
        env,
        "master",
        &format!(
            "archive_mode = on\narchive_command = '{} -C {} -F %p'\n\
             {}\narchive_timeout = 0\n{extra_conf}",
            cmd_link(env, "cmd_archiver").display(),
            ini.display(),
            wal_keep_setting(1024)
        ),
    );
    pg.start();
    pg
}

/// A started master (datadir `master`) archiving with `pitrkit archiver`
/// into the local archive `archive` (marked by -I), as backups need; the
/// archive's path.
pub fn master_with_local_archive(env: &TestEnv) -> (PgCluster, PathBuf) {
    let archive = env.mkdir("archive");
    let arch_ini = env.write(
        "archiver.ini",
        &format!(
            "pgdata: {}\nlocal_archivedirs: {}\n",
            env.path("master").display(),
            archive.display()
        ),
    );
    let master = PgCluster::init(
        env,
        "master",
        &format!(
            "archive_mode = on\narchive_command = '{} archiver -C {} -F %p'\n",
            env.bin.display(),
            arch_ini.display()
        ),
    );
    let o = run_output(env.pitrkit().args(["archiver", "-C"]).arg(&arch_ini).arg("-I"));
    assert!(o.status.success(), "{}", describe_output(&o));
    master.start();
    (master, archive)
}

/// A `noauto` line in /etc/fstab listing `mount_point` (so `-I`'s mount
/// guard expects a filesystem there that nothing mounts), removed again on
/// drop, a panicking test included. Held under a lock file: two tests never
/// rewrite /etc/fstab at once.
pub struct FstabEntry {
    line: String,
    _lock: nix::fcntl::Flock<fs::File>,
}

const FSTAB: &str = "/etc/fstab";

impl FstabEntry {
    pub fn add(mount_point: &Path) -> FstabEntry {
        assert!(super::is_root(), "the tests run as root (CI does)");
        let lock_path = std::env::temp_dir().join("pitrkit-tests-fstab.lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .unwrap();
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .unwrap();
        let mp = mount_point.display().to_string();
        assert!(!mp.contains(char::is_whitespace), "{mp}");
        let line = format!("none {mp} tmpfs noauto 0 0\n");
        let mut text = fs::read_to_string(FSTAB).unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&line);
        fs::write(FSTAB, text).unwrap();
        FstabEntry { line, _lock: lock }
    }
}

impl Drop for FstabEntry {
    fn drop(&mut self) {
        if let Ok(text) = fs::read_to_string(FSTAB) {
            let _ = fs::write(FSTAB, text.replacen(&self.line, "", 1));
        }
    }
}

/// A tmpfs mounted for one scenario (a full disk); unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        let mut c = privileged("mount");
        c.args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir);
        let out = run_output(&mut c);
        assert!(
            out.status.success(),
            "cannot mount a tmpfs on {} (the disk-full scenario needs root, or sudo without a password): {}",
            dir.display(),
            describe_output(&out)
        );
        Tmpfs(dir.to_path_buf())
    }

    pub fn free(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.0).expect("statvfs");
        s.blocks_available() as u64 * s.fragment_size() as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run_output(privileged("umount").arg("-l").arg(&self.0));
    }
}

fn privileged(program: &str) -> Command {
    if is_root() {
        Command::new(require_program(program))
    } else {
        let mut c = Command::new(require_program("sudo"));
        c.arg("-n").arg(require_program(program));
        c
    }
}
