//! The SQL session with the master: one real connection (the `postgres`
//! crate), kept open for a whole base backup, because a non-exclusive backup
//! lives exactly as long as the session that started it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::version::PgVersion;
use super::PgError;
use crate::config::StandbyConfig;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct MasterTarget {
    pub host: String,
    pub port: u16,
    pub db: String,
    pub user: String,
    pub password: Option<String>,
    pub sslmode: String,
    pub connect_timeout: Duration,
}

impl MasterTarget {
    pub fn from_standby(cfg: &StandbyConfig) -> Result<Self, crate::config::ConfigError> {
        let host = cfg.required_master_host()?;
        Ok(MasterTarget {
            host,
            port: cfg.master_port,
            db: cfg.master_db.clone(),
            user: cfg.master_user.clone(),
            password: cfg.master_password.clone(),
            sslmode: cfg.sslmode.to_string(),
            connect_timeout: if cfg.ssh.connect_timeout.is_zero() {
                Duration::from_secs(30)
            } else {
                cfg.ssh.connect_timeout
            },
        })
    }

    pub fn describe(&self) -> String {
        format!("{}@{}:{}/{}", self.user, self.host, self.port, self.db)
    }

    pub fn connect(&self, application_name: &str) -> Result<postgres::Client, PgError> {
        let mut c = postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.db)
            .application_name(application_name)
            .connect_timeout(self.connect_timeout)
            // A base backup session idles for the whole copy: keep NAT/firewalls from dropping it.
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        match self.sslmode.as_str() {
            "disable" => c.ssl_mode(postgres::config::SslMode::Disable),
            "allow" | "prefer" => c.ssl_mode(postgres::config::SslMode::Prefer),
            other => {
                return Err(PgError::Command {
                    what: format!("connecting to {}", self.describe()),
                    detail: format!(
                        "sslmode '{other}' needs TLS, which pitrkit's own SQL connection does not support yet; \
                         use sslmode: prefer or disable for it over a trusted network (streaming replication \
                         still uses '{other}', since PostgreSQL's libpq makes that connection)"
                    ),
                })
            }
        };
        let password = self
            .password
            .clone()
            .or_else(|| pgpass_lookup(&self.host, self.port, &self.db, &self.user));
        if let Some(p) = password {
            c.password(p);
        }
        c.connect(postgres::NoTls).map_err(|source| PgError::Connect {
            target: self.describe(),
            hint: format!(
                "check that PostgreSQL on {} listens on port {} (listen_addresses), that pg_hba.conf admits user {} \
                 from this host, and that the password is in master_password, ~/.pgpass or PGPASSFILE",
                self.host, self.port, self.user
            ),
            source,
        })
    }
}

/// A tablespace as the master reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tablespace {
    pub oid: u32,
    pub name: String,
    pub location: PathBuf,
}

/// What pg_backup_stop returned: written into the copy byte for byte.
#[derive(Debug, Clone)]
pub struct BackupStop {
    pub lsn: String,
    pub labelfile: String,
    pub spcmapfile: String,
}

/// An open session with the master.
pub struct Master {
    client: postgres::Client,
    pub version: PgVersion,
    /// The SECURITY DEFINER helpers from sql/pitrkit_helpers.sql are installed.
    pub helpers: bool,
}

impl Master {
    pub fn open(target: &MasterTarget, application_name: &str) -> Result<Master, PgError> {
        let mut client = target.connect(application_name)?;
        let num: String = client
            .query_one("SELECT current_setting('server_version_num')", &[])?
            .get(0);
        let version = PgVersion(num.parse().unwrap_or(0));
        // Nothing may cut this session short while a backup is running.
        let mut set = String::from(
            "SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0;",
        );
        if version.has_idle_session_timeout() {
            set.push_str(" SET idle_session_timeout = 0;");
        }
        client.batch_execute(&set)?;
        let helpers: bool = client
            .query_one(
                "SELECT to_regprocedure('pitrkit.backup_start(text,boolean)') IS NOT NULL",
                &[],
            )?
            .get(0);
        Ok(Master {
            client,
            version,
            helpers,
        })
    }

    pub fn version_string(&mut self) -> Result<String, PgError> {
        Ok(self.client.query_one("SELECT version()", &[])?.get(0))
    }

    pub fn in_recovery(&mut self) -> Result<bool, PgError> {
        Ok(self.client.query_one("SELECT pg_is_in_recovery()", &[])?.get(0))
    }

    pub fn data_directory(&mut self) -> Result<PathBuf, PgError> {
        let sql = if self.helpers {
            "SELECT pitrkit.data_directory()"
        } else {
            "SELECT current_setting('data_directory')"
        };
        let dir: String = self
            .client
            .query_one(sql, &[])
            .map_err(|e| self.privilege_hint(e, "read data_directory"))?
            .get(0);
        Ok(PathBuf::from(dir))
    }

    pub fn tablespaces(&mut self) -> Result<Vec<Tablespace>, PgError> {
        let sql = if self.helpers {
            "SELECT oid::int8, name::text, location FROM pitrkit.tablespaces()"
        } else {
            "SELECT oid::int8, spcname::text, pg_tablespace_location(oid) FROM pg_tablespace \
             WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid"
        };
        let rows = self.client.query(sql, &[])?;
        Ok(rows
            .iter()
            .map(|r| Tablespace {
                oid: r.get::<_, i64>(0) as u32,
                name: r.get(1),
                location: PathBuf::from(r.get::<_, String>(2)),
            })
            .collect())
    }

    /// The master's database system identifier (`pg_control_system()`, 9.6+),
    /// the first field of its `global/pg_control`.
    pub fn system_identifier(&mut self) -> Result<u64, PgError> {
        let id: String = self
            .client
            .query_one("SELECT system_identifier::text FROM pg_control_system()", &[])
            .map_err(|e| self.privilege_hint(e, "read the system identifier"))?
            .get(0);
        // A bigint in SQL, an unsigned 64-bit number in pg_control.
        id.parse::<u64>()
            .or_else(|_| id.parse::<i64>().map(|v| v as u64))
            .map_err(|_| PgError::Command {
                what: "reading the master's system identifier".into(),
                detail: format!("pg_control_system() returned '{id}'"),
            })
    }

    pub fn database_oids(&mut self) -> Result<Vec<u32>, PgError> {
        let rows = self
            .client
            .query("SELECT oid::int8 FROM pg_database ORDER BY oid", &[])?;
        Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u32).collect())
    }

    /// Approximate size of everything a base backup copies.
    pub fn total_size(&mut self) -> Result<u64, PgError> {
        let n: i64 = self
            .client
            .query_one(
                "SELECT coalesce(sum(pg_database_size(oid)), 0)::int8 FROM pg_database WHERE datallowconn",
                &[],
            )?
            .get(0);
        Ok(n.max(0) as u64)
    }

    pub fn backup_start(&mut self, label: &str) -> Result<String, PgError> {
        let sql = if self.helpers {
            "SELECT pitrkit.backup_start($1, true)::text"
        } else {
            self.version.backup_start_sql()
        };
        let lsn: String = self
            .client
            .query_one(sql, &[&label])
            .map_err(|e| self.privilege_hint(e, "start a backup"))?
            .get(0);
        Ok(lsn)
    }

    pub fn backup_stop(&mut self) -> Result<BackupStop, PgError> {
        let sql = if self.helpers {
            "SELECT lsn::text, labelfile, spcmapfile FROM pitrkit.backup_stop()"
        } else {
            self.version.backup_stop_sql()
        };
        let row = self
            .client
            .query_one(sql, &[])
            .map_err(|e| self.privilege_hint(e, "stop the backup"))?;
        Ok(BackupStop {
            lsn: row.get(0),
            labelfile: row.get(1),
            spcmapfile: row.get::<_, Option<String>>(2).unwrap_or_default(),
        })
    }

    fn privilege_hint(&self, e: postgres::Error, what: &str) -> PgError {
        let denied = e
            .as_db_error()
            .is_some_and(|d| d.code() == &postgres::error::SqlState::INSUFFICIENT_PRIVILEGE);
        if denied && !self.helpers {
            PgError::Command {
                what: format!("trying to {what} on the master"),
                detail: format!(
                    "{e}: install sql/pitrkit_helpers.sql on the master and GRANT EXECUTE on its functions to \
                     this role (README: 'A backup role'), or use a superuser as master_user"
                ),
            }
        } else {
            PgError::Query(e)
        }
    }
}

/// libpq's password file lookup (`PGPASSFILE`, else `~/.pgpass`), which the
/// `postgres` crate does not do. Like libpq, a file readable by group or
/// others is ignored with a warning.
pub fn pgpass_lookup(host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let path = match std::env::var_os("PGPASSFILE") {
        Some(p) => PathBuf::from(p),
        None => home_dir()?.join(".pgpass"),
    };
    let text = read_private(&path)?;
    pgpass_match(&text, host, port, db, user)
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from).or_else(|| {
        nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.dir)
    })
}

fn read_private(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        log::warn!(
            "password file {} is readable by others and is ignored; chmod 0600 it",
            path.display()
        );
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// The first matching `host:port:database:user:password` line.
pub fn pgpass_match(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() < 5 {
            continue;
        }
        let want = [host, port.as_str(), db, user];
        if fields[..4].iter().zip(want).all(|(f, w)| f == "*" || f == w) {
            return Some(fields[4].clone());
        }
    }
    None
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().unwrap().push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

/// A line for a passfile, with libpq's escapes.
pub fn pgpass_line(host: &str, port: u16, user: &str, password: &str) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    format!("{}:{port}:*:{}:{}\n", esc(host), esc(user), esc(password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_rules() {
        let text = "# comment\nother:5432:*:u:no\ndb1:5432:*:rep:s\\:ecret\\\\x\n*:*:*:*:fallback\n";
        assert_eq!(
            pgpass_match(text, "db1", 5432, "postgres", "rep").as_deref(),
            Some("s:ecret\\x")
        );
        assert_eq!(pgpass_match(text, "db2", 5433, "x", "y").as_deref(), Some("fallback"));
        assert_eq!(
            pgpass_match("db1:5432:*:rep:pw\n", "db1", 5433, "postgres", "rep"),
            None
        );
        let line = pgpass_line("h", 5432, "u", "a:b\\c");
        assert_eq!(pgpass_match(&line, "h", 5432, "any", "u").as_deref(), Some("a:b\\c"));
    }
}
