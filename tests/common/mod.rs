//! Integration-test harness for pitrkit: throwaway directories, real PostgreSQL
//! clusters and a private sshd, all owned by one "test user".
//!
//! PostgreSQL refuses to run as root, so when the tests run as root (CI) every
//! program that touches a cluster (initdb, pg_ctl, psql, the binary under test,
//! ssh/rsync clients) runs as `postgres` via `runuser`, and every path lives
//! under /tmp where that user can reach it. As a non-root user everything runs
//! directly as that user.
//!
//! Nothing here skips: a missing program is a panic that says what to install.
//! Set PITRKIT_KEEP_TEST_DIRS=1 to keep the test directories for post-mortems,
//! PITRKIT_PG_BINDIR=/path/to/bin to pick a specific PostgreSQL version.
#![allow(dead_code)]

pub mod fixtures;
pub mod moto;

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Programs
// ---------------------------------------------------------------------------

/// Debian package that provides `name`, for panic messages.
fn install_hint(name: &str) -> String {
    let pkg = match name {
        "sshd" => "openssh-server",
        "ssh" | "ssh-keygen" | "scp" | "sftp" => "openssh-client",
        "rsync" => "rsync",
        "runuser" => "util-linux",
        "id" | "cp" | "true" => "coreutils",
        "psql" | "pg_basebackup" | "pg_receivewal" | "pg_isready" | "pg_dump" | "pg_dumpall" | "pg_restore"
        | "pg_recvlogical" => "postgresql-client (or postgresql-client-<ver>)",
        "initdb" | "pg_ctl" | "postgres" | "pg_controldata" | "pg_waldump" | "pg_archivecleanup" | "pg_rewind"
        | "pg_resetwal" | "pg_config" => "postgresql (or postgresql-<ver>)",
        _ => return format!("install the package that provides it (`apt-file search bin/{name}`)"),
    };
    format!("run `apt-get install -y {pkg}`")
}

fn is_executable_file(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// PostgreSQL bin dirs under /usr/lib/postgresql, highest version first.
fn debian_pg_bindirs() -> Vec<PathBuf> {
    let mut found: Vec<((u32, u32), PathBuf)> = Vec::new();
    if let Ok(rd) = fs::read_dir("/usr/lib/postgresql") {
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // "15" or old-style "9.6"; numeric sort so that 10 > 9.6.
            let mut parts = name.split('.').map(|s| s.parse::<u32>());
            let key = match (parts.next(), parts.next()) {
                (Some(Ok(major)), None) => (major, 0),
                (Some(Ok(major)), Some(Ok(minor))) => (major, minor),
                _ => continue,
            };
            let bin = entry.path().join("bin");
            if bin.is_dir() {
                found.push((key, bin));
            }
        }
    }
    found.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    found.into_iter().map(|(_, p)| p).collect()
}

/// Absolute path of `name`, searching PATH, the sbin dirs and PostgreSQL bin dirs.
/// Panics with an install hint if it is missing: tests never skip silently.
pub fn require_program(name: &str) -> PathBuf {
    if name.contains('/') {
        let p = PathBuf::from(name);
        assert!(
            is_executable_file(&p),
            "required program {name} is missing; {}",
            install_hint(name)
        );
        return p;
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs.extend(debian_pg_bindirs());
    dirs.into_iter()
        // Relative PATH entries would make the result depend on the cwd (and sshd needs an absolute path).
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| is_executable_file(p))
        .unwrap_or_else(|| {
            panic!(
                "required program `{name}` not found in PATH, /usr/sbin or /usr/lib/postgresql/*/bin; {}",
                install_hint(name)
            )
        })
}

/// Bin dir of the highest installed PostgreSQL (override: PITRKIT_PG_BINDIR).
pub fn pg_bindir() -> PathBuf {
    static BINDIR: OnceLock<PathBuf> = OnceLock::new();
    BINDIR
        .get_or_init(|| {
            if let Some(dir) = std::env::var_os("PITRKIT_PG_BINDIR") {
                let dir = PathBuf::from(dir);
                assert!(
                    is_executable_file(&dir.join("initdb")),
                    "PITRKIT_PG_BINDIR={} has no initdb",
                    dir.display()
                );
                return dir;
            }
            if let Some(dir) = debian_pg_bindirs()
                .into_iter()
                .find(|d| is_executable_file(&d.join("initdb")))
            {
                return dir;
            }
            // Non-Debian layouts: trust pg_config, then PATH. pg_config alone (libpq-dev) is not enough.
            if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
                let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                if out.status.success() && is_executable_file(&dir.join("initdb")) {
                    return dir;
                }
            }
            if let Some(p) = std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("initdb"))
                    .find(|p| is_executable_file(p))
            }) {
                return p.parent().unwrap().to_path_buf();
            }
            panic!(
                "no PostgreSQL server found (no initdb under /usr/lib/postgresql/*/bin, pg_config --bindir or PATH); \
                 run `apt-get install -y postgresql`"
            )
        })
        .clone()
}

/// Major version of the server programs under test (`pg_ctl --version` in pg_bindir()).
pub fn server_major() -> u32 {
    static MAJOR: OnceLock<u32> = OnceLock::new();
    *MAJOR.get_or_init(|| {
        let v = run_ok(Command::new(pg_program("pg_ctl")).arg("--version"));
        // "pg_ctl (PostgreSQL) 12.22"
        v.split_whitespace()
            .nth(2)
            .and_then(|x| x.split('.').next())
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the major version from '{v}'"))
    })
}

/// `wal_keep_size` (13+) or its predecessor, keeping about `mb` MiB of WAL.
pub fn wal_keep_setting(mb: u32) -> String {
    if server_major() >= 13 {
        format!("wal_keep_size = '{mb}MB'")
    } else {
        format!("wal_keep_segments = {}", mb.div_ceil(16))
    }
}

/// A PostgreSQL client program (psql, pgbench, pg_basebackup) from the
/// system's newest PostgreSQL, whatever server major PITRKIT_PG_BINDIR
/// selects: the per-major server packages ship no clients, and psql and
/// pgbench talk to every major from 12 on.
pub fn client_program(name: &str) -> PathBuf {
    let dirs = debian_pg_bindirs();
    dirs.iter()
        .map(|d| d.join(name))
        .chain(std::iter::once(pg_bindir().join(name)))
        .find(|p| is_executable_file(p))
        .unwrap_or_else(|| {
            panic!(
                "{name} not found under /usr/lib/postgresql/*/bin; {}",
                install_hint(name)
            )
        })
}

/// A program from pg_bindir() (not Debian's /usr/bin wrapper), panicking with a hint if absent.
pub fn pg_program(name: &str) -> PathBuf {
    let p = pg_bindir().join(name);
    assert!(
        is_executable_file(&p),
        "{} is missing; {}",
        p.display(),
        install_hint(name)
    );
    p
}

/// Runs `cmd`, panics with its stdout/stderr unless it exits 0, returns trimmed stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run_output(cmd);
    if !out.status.success() {
        panic!("command failed ({}): {:?}\n{}", out.status, cmd, describe_output(&out));
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `cmd` to completion with captured output (stdin closed); panics only if it cannot start.
pub fn run_output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// "stdout: ...\nstderr: ..." for panic messages.
pub fn describe_output(out: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// Polls `cond` every 50ms until it is true (returns true) or `timeout` passes (returns false).
/// Asserts that the program's standard error (or output) says `text`,
/// showing everything it printed otherwise.
pub fn assert_says(out: &Output, text: &str) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains(text), "expected {text:?} in:\n{}", describe_output(out));
}

pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(50));
    }
}

/// Last `lines` lines of a (log) file, for panic messages.
pub fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago. Never hands out the same
/// port twice per process, so parallel tests don't race each other for it.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let mut used = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !used.contains(&port) {
            used.push(port);
            return port;
        }
    }
}

/// True if `pid` exists and is not a zombie (daemonized postmasters are not our children).
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3 is the state; comm (field 2) may contain spaces, so split after its ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn port_accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

// ---------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------

struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

fn id_query(args: &[&str]) -> String {
    let id = require_program("id");
    run_ok(Command::new(id).args(args))
}

fn euid() -> u32 {
    static EUID: OnceLock<u32> = OnceLock::new();
    // `id -u` avoids unsafe FFI (geteuid) and any extra crate.
    *EUID.get_or_init(|| id_query(&["-u"]).parse().expect("numeric uid"))
}

/// SIGKILLs every descendant of `pid` (found through /proc; sshd's
/// per-connection children start new sessions, so a process-group kill
/// would miss them).
pub fn kill_descendants(pid: u32) {
    let parent_of = |p: u32| -> Option<u32> {
        let stat = fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        // The command name may contain spaces; fields resume after the last ')'.
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    let all: Vec<u32> = fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        let children: Vec<u32> = all
            .iter()
            .copied()
            .filter(|&c| parent_of(c) == Some(p) && !tree.contains(&c))
            .collect();
        tree.extend(children);
        i += 1;
    }
    for &p in tree.iter().skip(1) {
        // Already gone is fine: no noise from kill(1) about it.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), nix::sys::signal::Signal::SIGKILL);
    }
}

pub fn is_root() -> bool {
    euid() == 0
}

/// `postgres` when running as root (PostgreSQL refuses root), else the current user.
fn test_user() -> &'static TestUser {
    static USER: OnceLock<TestUser> = OnceLock::new();
    USER.get_or_init(|| {
        if is_root() {
            let ok = Command::new(require_program("id")).args(["-u", "postgres"]).output();
            assert!(
                matches!(&ok, Ok(o) if o.status.success()),
                "running as root but there is no `postgres` OS user to run PostgreSQL as; \
                 run `apt-get install -y postgresql` (it creates the user)"
            );
            TestUser {
                name: "postgres".into(),
                uid: id_query(&["-u", "postgres"]).parse().unwrap(),
                gid: id_query(&["-g", "postgres"]).parse().unwrap(),
            }
        } else {
            TestUser {
                name: id_query(&["-un"]),
                uid: euid(),
                gid: id_query(&["-g"]).parse().unwrap(),
            }
        }
    })
}

// ---------------------------------------------------------------------------
// TestEnv
// ---------------------------------------------------------------------------

/// Owns the directory; shared by TestEnv clones, PgCluster and Sshd so the
/// directory outlives every server that lives in it, whatever the drop order.
struct EnvDir {
    root: PathBuf,
}

impl Drop for EnvDir {
    fn drop(&mut self) {
        if std::env::var_os("PITRKIT_KEEP_TEST_DIRS").is_some() {
            eprintln!("PITRKIT_KEEP_TEST_DIRS: keeping {}", self.root.display());
        } else if let Err(e) = fs::remove_dir_all(&self.root) {
            eprintln!("warning: could not remove {}: {e}", self.root.display());
        }
    }
}

/// One copy of the binary under test per test process, made by the first
/// TestEnv before any test runs a program, readable and executable by the
/// test user; every TestEnv links to it.
fn shared_copy(binary_under_test: &Path, env: &TestEnv) -> PathBuf {
    static SHARED: OnceLock<PathBuf> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("pitrkit-test-bin-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir(&dir).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
            let bin = dir.join("pitrkit");
            fs::copy(binary_under_test, &bin)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", binary_under_test.display(), bin.display()));
            fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
            env.chown(&bin);
            remove_stale_copies();
            bin
        })
        .clone()
}

/// Shared copies of test processes that are gone.
fn remove_stale_copies() {
    let Ok(rd) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("pitrkit-test-bin-")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !process_alive(pid) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// A fresh directory under /tmp plus the means to run programs as the test user.
/// Cloning is cheap; the directory is removed when the last clone (and every
/// PgCluster/Sshd made from it) is dropped.
#[derive(Clone)]
pub struct TestEnv {
    pub root: PathBuf,
    pub run_as: Option<String>,
    pub bin: PathBuf,
    home: PathBuf,
    dir: Arc<EnvDir>,
}

impl TestEnv {
    pub fn new(name: &str, binary_under_test: &Path) -> TestEnv {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        assert!(
            is_executable_file(binary_under_test),
            "binary under test {} does not exist or is not executable",
            binary_under_test.display()
        );
        // Keep the name short and shell/conf-safe: it ends up in socket paths (max ~107 bytes).
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(32)
            .collect();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // Always /tmp: the test user (postgres) can't reach /root or the cargo target dir.
        let root = PathBuf::from(format!("/tmp/pitrkit-test-{clean}-{}-{n}", std::process::id()));
        if root.exists() {
            // Left over from an earlier run whose pid got reused.
            fs::remove_dir_all(&root).unwrap_or_else(|e| panic!("remove stale {}: {e}", root.display()));
        }
        fs::create_dir(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();

        let run_as = if is_root() {
            require_program("runuser");
            Some(test_user().name.clone())
        } else {
            None
        };
        let mut env = TestEnv {
            bin: root.join("bin").join("pitrkit"),
            home: root.join("home"),
            dir: Arc::new(EnvDir { root: root.clone() }),
            root,
            run_as,
        };
        env.chown(&env.root.clone());
        env.home = env.mkdir("home");
        env.mkdir("bin");
        let shared = shared_copy(binary_under_test, &env);
        // A hard link, not a copy: no file open for writing that a process
        // forked meanwhile by another test could inherit, which made exec
        // fail now and then with "Text file busy".
        fs::hard_link(&shared, &env.bin)
            .or_else(|_| fs::copy(&shared, &env.bin).map(drop))
            .unwrap_or_else(|e| panic!("link {} to {}: {e}", shared.display(), env.bin.display()));
        env
    }

    /// root/rel (rel must be relative).
    pub fn path(&self, rel: &str) -> PathBuf {
        assert!(
            !Path::new(rel).is_absolute(),
            "TestEnv::path wants a relative path, got {rel}"
        );
        self.root.join(rel)
    }

    /// mkdir -p root/rel; every created component is owned by the test user.
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let target = self.path(rel);
        fs::create_dir_all(&target).unwrap_or_else(|e| panic!("mkdir {}: {e}", target.display()));
        let mut cur = self.root.clone();
        for comp in Path::new(rel).components() {
            if let Component::Normal(c) = comp {
                cur.push(c);
                chown_one(&cur, self.run_as.is_some());
            }
        }
        target
    }

    /// Writes root/rel (creating parents), owned by the test user.
    pub fn write(&self, rel: &str, contents: &str) -> PathBuf {
        let target = self.path(rel);
        if let Some(parent) = Path::new(rel).parent().filter(|p| !p.as_os_str().is_empty()) {
            self.mkdir(parent.to_str().unwrap());
        }
        fs::write(&target, contents).unwrap_or_else(|e| panic!("write {}: {e}", target.display()));
        chown_one(&target, self.run_as.is_some());
        target
    }

    /// Recursive chown (not following symlinks) to the test user when root; no-op otherwise.
    pub fn chown(&self, path: &Path) {
        if self.run_as.is_none() {
            return;
        }
        chown_one(path, true);
        if fs::symlink_metadata(path).map(|m| m.is_dir()).unwrap_or(false) {
            for entry in fs::read_dir(path).unwrap_or_else(|e| panic!("read_dir {}: {e}", path.display())) {
                self.chown(&entry.unwrap().path());
            }
        }
    }

    /// "postgres" when root, else the current user's name.
    pub fn user_name(&self) -> String {
        test_user().name.clone()
    }

    /// A Command running `program` as the test user, with a clean environment:
    /// PATH (and RUST_BACKTRACE/RUST_LOG) passed through, HOME inside root,
    /// LANG=C, USER/LOGNAME of the test user, cwd = root.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new(require_program("runuser"));
                // -p: without it runuser resets HOME to the account's real home (/var/lib/postgresql).
                c.arg("-p").arg("-u").arg(user).arg("--").arg(program);
                c
            }
            None => Command::new(program),
        };
        // Clear the env so stray PG*/SSH_* variables of the developer can't leak into tests.
        cmd.env_clear();
        cmd.env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        );
        for var in ["RUST_BACKTRACE", "RUST_LOG"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        let user = self.user_name();
        cmd.env("HOME", &self.home)
            .env("LANG", "C")
            .env("USER", &user)
            .env("LOGNAME", &user)
            // The caller's cwd (e.g. /root/...) may be unreadable for postgres.
            .current_dir(&self.root);
        cmd
    }

    /// command(&self.bin).
    pub fn pitrkit(&self) -> Command {
        self.command(&self.bin)
    }
}

fn chown_one(path: &Path, as_root: bool) {
    if !as_root {
        return;
    }
    let u = test_user();
    std::os::unix::fs::lchown(path, Some(u.uid), Some(u.gid))
        .unwrap_or_else(|e| panic!("chown {} to {}: {e}", path.display(), u.name));
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

/// A PostgreSQL cluster in env.path(name), reachable only through its own unix socket dir.
pub struct PgCluster {
    pub datadir: PathBuf,
    pub port: u16,
    pub socket_dir: PathBuf,
    pub bindir: PathBuf,
    pub log: PathBuf,
    env: TestEnv,
}

/// What lines 1, 4 and 5 of a running server's postmaster.pid say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostmasterPid {
    pub pid: u32,
    pub port: u16,
    pub socket_dir: PathBuf,
}

/// Parses datadir/postmaster.pid (None if absent or still being written).
pub fn read_postmaster_pid(datadir: &Path) -> Option<PostmasterPid> {
    let text = fs::read_to_string(datadir.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    Some(PostmasterPid {
        pid: lines.first()?.trim().parse().ok()?,
        port: lines.get(3)?.trim().parse().ok()?,
        socket_dir: PathBuf::from(lines.get(4)?.trim()),
    })
}

impl PgCluster {
    /// initdb into env.path(name) and configure a private port/socket dir, then `extra_conf`.
    pub fn init(env: &TestEnv, name: &str, extra_conf: &str) -> PgCluster {
        Self::init_with_args(env, name, extra_conf, &[])
    }

    /// Like init, with extra initdb arguments (e.g. "--wal-segsize=1", "--data-checksums").
    pub fn init_with_args(env: &TestEnv, name: &str, extra_conf: &str, initdb_args: &[&str]) -> PgCluster {
        let datadir = env.path(name);
        assert!(!datadir.exists(), "{} already exists", datadir.display());
        let mut initdb = env.command(&pg_program("initdb"));
        initdb
            .arg("-D")
            .arg(&datadir)
            .args(["-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"])
            .args(initdb_args);
        run_ok(&mut initdb);
        Self::adopt(env, name, extra_conf)
    }

    /// Takes over an existing, stopped datadir at env.path(name) (e.g. made by
    /// pg_basebackup or by pitrkit): gives it a fresh port and socket dir, then
    /// appends `extra_conf`. The copied primary settings are overridden because
    /// later lines in postgresql.conf win.
    pub fn adopt(env: &TestEnv, name: &str, extra_conf: &str) -> PgCluster {
        let datadir = env.path(name);
        let conf_path = datadir.join("postgresql.conf");
        assert!(
            conf_path.is_file(),
            "{} is not a PostgreSQL data directory",
            datadir.display()
        );
        let port = free_port();
        let socket_dir = env.mkdir(&format!("{name}.sock"));
        let sock_len = socket_dir.join(format!(".s.PGSQL.{port}")).as_os_str().len();
        assert!(
            sock_len <= 107,
            "socket path too long ({sock_len} bytes); use a shorter test/cluster name"
        );
        // listen_addresses='' keeps the server off TCP so parallel tests can't
        // collide on ports; extra_conf comes last so a test can override anything.
        let conf = format!(
            "\n# --- pitrkit test harness ---\n\
             listen_addresses = ''\n\
             port = {port}\n\
             unix_socket_directories = '{}'\n\
             log_line_prefix = '%m [%p] '\n\
             {extra_conf}\n",
            socket_dir.display()
        );
        fs::OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .unwrap_or_else(|e| panic!("append to {}: {e}", conf_path.display()));
        PgCluster {
            log: env.path(&format!("{name}.log")),
            bindir: pg_bindir(),
            datadir,
            port,
            socket_dir,
            env: env.clone(),
        }
    }

    /// "host=<socket dir> port=<port> dbname=postgres" for libpq-style configs.
    pub fn conninfo(&self) -> String {
        format!("host={} port={} dbname=postgres", self.socket_dir.display(), self.port)
    }

    /// pg_ctl -w start; panics with the tail of the server log on failure.
    pub fn start(&self) {
        let out = run_output(
            self.env
                .command(&self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(&self.datadir)
                .arg("-l")
                .arg(&self.log)
                .args(["-w", "-t", "60", "start"]),
        );
        if !out.status.success() {
            panic!(
                "pg_ctl start failed for {} ({})\n{}\n--- tail of {} ---\n{}",
                self.datadir.display(),
                out.status,
                describe_output(&out),
                self.log.display(),
                tail(&self.log, 40)
            );
        }
    }

    /// pg_ctl -m fast stop; does nothing if the server isn't running.
    pub fn stop(&self) {
        if !self.is_running() {
            return;
        }
        let out = run_output(
            self.env
                .command(&self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(&self.datadir)
                .args(["-m", "fast", "-w", "-t", "60", "stop"]),
        );
        if !out.status.success() && self.is_running() {
            panic!(
                "pg_ctl stop failed for {}\n{}",
                self.datadir.display(),
                describe_output(&out)
            );
        }
    }

    /// True while postmaster.pid exists (pg_ctl removes it on clean shutdown).
    pub fn is_running(&self) -> bool {
        self.datadir.join("postmaster.pid").exists()
    }

    /// Runs `sql` with psql as the test user; panics with stderr on error.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("psql failed on port {}: {sql}\n{e}", self.port))
    }

    /// Runs `sql` with psql (-X -At, ON_ERROR_STOP); Ok(trimmed stdout) or Err(stderr).
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let out = run_output(
            self.env
                .command(&client_program("psql"))
                .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
                .arg(&self.socket_dir)
                .args(["-p", &self.port.to_string(), "-d", "postgres", "-c", sql]),
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Writes a row (so the segment isn't empty and the switch really happens),
    /// then pg_switch_wal(); returns the name of the segment that was closed.
    pub fn switch_wal(&self) -> String {
        self.psql(
            "CREATE TABLE IF NOT EXISTS pitrkit_harness_wal (id serial, at timestamptz DEFAULT now()); \
             INSERT INTO pitrkit_harness_wal DEFAULT VALUES",
        );
        // pg_walfile_name maps the returned (segment-end) LSN to the segment it ends.
        self.psql("SELECT pg_walfile_name(pg_switch_wal())")
    }

    /// Waits until pg_stat_archiver reports `walfile` (or a later name) archived.
    pub fn wait_archived(&self, walfile: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            match self.try_psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") {
                // The archiver works in name order, except that .history files jump the queue.
                Ok(last) => !last.is_empty() && !last.ends_with(".history") && last.as_str() >= walfile,
                Err(_) => false,
            }
        })
    }

    /// Waits until `walfile` is archived; else fails the test with `why`
    /// and the end of the server log (where the archiver's errors are).
    #[track_caller]
    pub fn assert_archived(&self, walfile: &str, timeout: Duration, why: &str) {
        assert!(
            self.wait_archived(walfile, timeout),
            "{walfile} not archived within {}s{}{why}; server log:\n{}",
            timeout.as_secs(),
            if why.is_empty() { "" } else { ": " },
            tail(&self.log, 30)
        );
    }

    /// (archived_count, failed_count) from pg_stat_archiver.
    pub fn archiver_counts(&self) -> (i64, i64) {
        let row = self.psql("SELECT archived_count, failed_count FROM pg_stat_archiver");
        let (a, f) = row
            .split_once('|')
            .unwrap_or_else(|| panic!("unexpected pg_stat_archiver row: {row}"));
        (a.parse().unwrap(), f.parse().unwrap())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Immediate: fastest, and a panicking test must not leave a postmaster behind.
        if self.is_running() {
            let _ = self
                .env
                .command(&self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(&self.datadir)
                .args(["-m", "immediate", "-w", "stop"])
                .stdin(Stdio::null())
                .output();
        }
    }
}

// ---------------------------------------------------------------------------
// sshd
// ---------------------------------------------------------------------------

/// A private sshd on 127.0.0.1 that accepts exactly one key, for the test user only.
pub struct Sshd {
    pub port: u16,
    pub user: String,
    pub identity: PathBuf,
    pub known_hosts: PathBuf,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    sshd: PathBuf,
    child: Option<Child>,
    env: TestEnv,
}

impl Sshd {
    pub fn start(env: &TestEnv) -> Sshd {
        // sshd re-execs itself, so it must be started by absolute path.
        let sshd = require_program("sshd");
        let keygen = require_program("ssh-keygen");
        require_program("ssh");
        let root = env.run_as.is_some();
        if root {
            // Privilege separation dir; normally created by the systemd unit, absent in containers.
            fs::create_dir_all("/run/sshd").expect("create /run/sshd");
            fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755)).unwrap();
        }

        let mut n = 0;
        let rel = loop {
            let rel = if n == 0 { "ssh".to_string() } else { format!("ssh-{n}") };
            if !env.path(&rel).exists() {
                break rel;
            }
            n += 1;
        };
        let dir = env.mkdir(&rel);
        let host_key = dir.join("host_ed25519_key");
        let identity = dir.join("id_ed25519");
        // Host key as ourselves (root when root: sshd wants its keys private to itself).
        run_ok(
            Command::new(&keygen)
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "pitrkit-test-host", "-f"])
                .arg(&host_key),
        );
        // Client key as the test user, so ssh accepts its owner and 0600 mode.
        run_ok(
            env.command(&keygen)
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "pitrkit-test-client", "-f"])
                .arg(&identity),
        );

        let pubkey = fs::read_to_string(identity.with_extension("pub")).expect("read client public key");
        let authorized_keys = env.write(&format!("{rel}/authorized_keys"), &pubkey);
        let port = free_port();
        let host_pub = fs::read_to_string(host_key.with_extension("pub")).expect("read host public key");
        let known_hosts = env.write(
            &format!("{rel}/known_hosts"),
            &format!("[127.0.0.1]:{port} {}", host_pub.trim()),
        );
        let user = env.user_name();

        // UsePAM: as root the test user is `postgres`, whose password is locked ('!');
        // without PAM sshd rejects even key logins to locked accounts. A non-root sshd
        // can't use PAM (or read /etc/shadow), and only logs in its own user anyway.
        let base = format!(
            "ListenAddress 127.0.0.1\n\
             Port {port}\n\
             HostKey {host_key}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {authorized_keys}\n\
             StrictModes no\n\
             UsePAM {use_pam}\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             PermitRootLogin no\n\
             AllowUsers {user}\n\
             UseDNS no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             X11Forwarding no\n\
             MaxStartups 100:30:200\n\
             MaxSessions 50\n\
             Subsystem sftp internal-sftp\n\
             LogLevel VERBOSE\n",
            host_key = host_key.display(),
            pid = dir.join("sshd.pid").display(),
            authorized_keys = authorized_keys.display(),
            use_pam = if root { "yes" } else { "no" },
        );
        let config = dir.join("sshd_config");
        // OpenSSH >= 9.8 penalises sources with failed/aborted logins, which would make
        // "ssh must fail now" tests flaky; older sshd rejects the keyword, so probe with -t.
        fs::write(&config, format!("{base}PerSourcePenalties no\n")).unwrap();
        if !run_output(Command::new(&sshd).arg("-t").arg("-f").arg(&config))
            .status
            .success()
        {
            fs::write(&config, &base).unwrap();
            run_ok(Command::new(&sshd).arg("-t").arg("-f").arg(&config));
        }

        let mut s = Sshd {
            port,
            user,
            identity,
            known_hosts,
            log: dir.join("sshd.log"),
            config,
            dir,
            sshd,
            child: None,
            env: env.clone(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "sshd already running");
        let log_offset = fs::metadata(&self.log).map(|m| m.len() as usize).unwrap_or(0);
        // Early errors (before -E takes effect) go to stderr; keep them in a file.
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("sshd.stderr"))
            .unwrap();
        let child = Command::new(&self.sshd)
            .arg("-D")
            .arg("-f")
            .arg(&self.config)
            .arg("-E")
            .arg(&self.log)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().unwrap())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.sshd.display()));
        self.child = Some(child);

        // Wait for *our* sshd: its log line proves the bind succeeded (a mere TCP
        // connect could reach some other process that grabbed the port).
        let listening = format!("Server listening on 127.0.0.1 port {}", self.port);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("sshd exited early ({status})\n{}", self.diagnostics());
            }
            let log = fs::read(&self.log).unwrap_or_default();
            let new = String::from_utf8_lossy(log.get(log_offset..).unwrap_or(&[]));
            if new.contains(&listening) && port_accepts(self.port) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "sshd did not start listening on port {}\n{}",
                    self.port,
                    self.diagnostics()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- tail of {} ---\n{}\n--- sshd stderr ---\n{}",
            self.log.display(),
            tail(&self.log, 30),
            tail(&self.dir.join("sshd.stderr"), 30)
        )
    }

    /// Kills sshd; afterwards the port refuses connections (sessions already open keep running).
    /// Stops sshd *and every connection it serves*: killing only the
    /// listener would leave established sessions (and ssh connection
    /// multiplexing) alive, and the "slave" would not really be down.
    pub fn stop(&mut self) {
        self.kill_server();
        assert!(
            wait_until(Duration::from_secs(5), || !port_accepts(self.port)),
            "port {} still accepts connections after stopping sshd",
            self.port
        );
    }

    /// Kills sshd and every session it serves.
    fn kill_server(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Freeze the listener first: a session it accepts while its
            // children are being killed would outlive the "stopped" sshd.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGSTOP,
            );
            kill_descendants(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts sshd again on the same port with the same keys.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Pid of the listening sshd, if started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// ssh options for logging in as the test user. `-F none` keeps the user's and
    /// system ssh_config (ControlMaster, SendEnv, ...) out of the tests.
    pub fn client_args(&self) -> Vec<String> {
        vec![
            "-F".into(),
            "none".into(),
            "-p".into(),
            self.port.to_string(),
            "-i".into(),
            self.identity.display().to_string(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "ConnectTimeout=10".into(),
        ]
    }

    /// "user@127.0.0.1".
    pub fn destination(&self) -> String {
        format!("{}@127.0.0.1", self.user)
    }

    /// "ssh <client_args>" as one string, for rsync -e / pitrkit config. Panics if
    /// any argument contains whitespace (the string is split on it, unquoted).
    pub fn ssh_command_line(&self) -> String {
        let ssh = require_program("ssh");
        let mut parts = vec![ssh.display().to_string()];
        parts.extend(self.client_args());
        for p in &parts {
            assert!(!p.contains(char::is_whitespace), "ssh argument with whitespace: {p:?}");
        }
        parts.join(" ")
    }

    /// `ssh <client_args> user@127.0.0.1 <remote_command>` as the test user.
    pub fn ssh(&self, remote_command: &str) -> Command {
        let mut cmd = self.env.command(&require_program("ssh"));
        cmd.args(self.client_args()).arg(self.destination()).arg(remote_command);
        cmd
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill_server();
    }
}
