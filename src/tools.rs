//! Finding the external programs we drive: rsync, ssh, PostgreSQL's binaries.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{name} not found (searched {searched}); {install}")]
pub struct NotFound {
    pub name: String,
    pub searched: String,
    pub install: String,
}

/// Debian/Ubuntu package that ships a program, for the error message.
fn package_hint(name: &str) -> String {
    let pkg = match name {
        "rsync" => "rsync",
        "ssh" => "openssh-client",
        "sshd" => "openssh-server",
        "pg_ctl" | "initdb" | "postgres" | "pg_controldata" => "postgresql",
        "psql" | "pg_basebackup" => "postgresql-client",
        _ => return format!("install {name} or add its directory to 'includepath'"),
    };
    format!("install it (apt-get install {pkg}) or add its directory to 'includepath'")
}

/// Resolves a program: an explicit path from the config wins (it must be
/// executable); otherwise `includepath` directories, then PATH.
pub fn find_program(name: &str, explicit: Option<&Path>, includepath: &[PathBuf]) -> Result<PathBuf, NotFound> {
    if let Some(p) = explicit {
        if is_executable(p) {
            return Ok(p.to_path_buf());
        }
        return Err(NotFound {
            name: name.into(),
            searched: p.display().to_string(),
            install: format!(
                "the configured path is not an executable file; fix it or remove the key to search PATH ({})",
                package_hint(name)
            ),
        });
    }
    let mut dirs: Vec<PathBuf> = includepath.to_vec();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let joined = std::env::join_paths(&dirs).unwrap_or_default();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    which::which_in(name, Some(&joined), cwd).map_err(|_| NotFound {
        name: name.into(),
        searched: if dirs.is_empty() {
            "an empty PATH".into()
        } else {
            joined.to_string_lossy().into_owned()
        },
        install: package_hint(name),
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// PostgreSQL server binary directories, newest major version first: Debian's
/// `/usr/lib/postgresql/<ver>/bin`, PGDG RPM's `/usr/pgsql-<ver>/bin`, then
/// wherever `pg_ctl` on PATH lives.
pub fn postgres_bindirs() -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    let mut scan = |parent: &str, prefix: &str| {
        let Ok(rd) = std::fs::read_dir(parent) else { return };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(ver) = name.strip_prefix(prefix) else { continue };
            let Some(major) = ver.split('.').next().and_then(|v| v.parse::<u32>().ok()) else {
                continue;
            };
            let bin = e.path().join("bin");
            if bin.join("pg_ctl").exists() {
                found.push((major, bin));
            }
        }
    };
    scan("/usr/lib/postgresql", "");
    scan("/usr", "pgsql-");
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    let mut out: Vec<PathBuf> = found.into_iter().map(|(_, p)| p).collect();
    if let Some(dir) = which::which("pg_ctl")
        .ok()
        .and_then(|p| p.canonicalize().ok())
        .and_then(|c| c.parent().map(Path::to_path_buf))
    {
        if !out.contains(&dir) {
            out.push(dir);
        }
    }
    out
}

/// A command that runs `program` as `user` through `runuser` (we are root
/// and PostgreSQL refuses to run as root), or directly when `user` is None.
pub fn command_as(program: &Path, user: Option<&str>) -> std::process::Command {
    match user {
        Some(u) => {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", u, "--"]).arg(program);
            c
        }
        None => std::process::Command::new(program),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_must_be_executable() {
        assert!(find_program("sh", Some(Path::new("/bin/sh")), &[]).is_ok());
        let e = find_program("rsync", Some(Path::new("/nonexistent/rsync")), &[]).unwrap_err();
        assert!(e.to_string().contains("apt-get install rsync"), "{e}");
    }

    #[test]
    fn includepath_is_searched_first() {
        let d = tempfile::tempdir().unwrap();
        let fake = d.path().join("rsync");
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_program("rsync", None, &[d.path().to_path_buf()]).unwrap(), fake);
        let e = find_program("no-such-program-xyz", None, &[]).unwrap_err();
        assert!(e.to_string().contains("includepath"), "{e}");
    }
}
