//! pitrtools habits that must keep working with pitrkit: files and command
//! lines as pitrtools users have them.
mod common;

use common::fixtures;
use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// pitrtools' own cmd_standby.ini.sample leaves `logfile:` commented out.
/// pg_ctl then hands its stdout/stderr to the postmaster; read through a
/// pipe (cron, ssh, a wrapper script) pitrkit used to wait for EOF forever.
#[test]
fn start_without_logfile_returns_when_output_is_a_pipe() {
    let env = TestEnv::new("compat_nolog", std::path::Path::new(env!("CARGO_BIN_EXE_pitrkit")));
    let cluster = PgCluster::init(&env, "data", "");
    let major = std::fs::read_to_string(cluster.datadir.join("PG_VERSION")).unwrap();
    let ini = env.write(
        "cmd_standby.ini",
        &format!(
            "[DEFAULT]
pgversion: {major}
master_public_ip: 127.0.0.1
user: postgres
archivedir: {archive}
pgdata: {pgdata}
;logfile: /var/log/postgresql/postgresql.log
",
            major = major.trim(),
            archive = env.mkdir("archive").display(),
            pgdata = cluster.datadir.display(),
        ),
    );
    let mut child = env
        .command(&fixtures::cmd_link(&env, "cmd_standby"))
        .arg("-C")
        .arg(&ini)
        .args(["-A", "start"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes to EOF the way a caller does: EOF comes only when no
    // process holds them any more.
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let (mut o, mut e) = (String::new(), String::new());
        use std::io::Read;
        let _ = out.read_to_string(&mut o);
        let _ = err.read_to_string(&mut e);
        (o, e)
    });
    let start = Instant::now();
    let finished = wait_until(Duration::from_secs(60), || reader.is_finished());
    if !finished {
        let _ = child.kill();
        cluster.stop();
        panic!("cmd_standby -A start without logfile still holds its output open after 60 s");
    }
    let status = child.wait().unwrap();
    let (o, e) = reader.join().unwrap();
    assert!(status.success(), "{status}\nstdout:\n{o}\nstderr:\n{e}");
    assert!(cluster.is_running(), "server not running after -A start");
    assert!(
        cluster.datadir.join("pitrkit-server.log").is_file(),
        "the server's output must go somewhere a DBA finds it"
    );
    assert!(cluster.psql("SELECT 1").contains('1'));
    eprintln!("-A start returned in {:?}", start.elapsed());
    cluster.stop();
}
