//! The SQL session with the master: one real connection (the `postgres`
//! crate), kept open for a whole base backup, because a non-exclusive backup
//! lives exactly as long as the session that started it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use postgres::config::SslMode as PgSslMode;

use super::tls::{self, SslFiles};
use super::version::PgVersion;
use super::PgError;
use crate::config::SshSettings;
use crate::config::{SqlViaSsh, SslMode, StandbyConfig};
use crate::transport::tunnel::{Forward, Local, Remote, Tunnel};

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct MasterTarget {
    pub host: String,
    pub port: u16,
    pub db: String,
    pub user: String,
    pub password: Option<String>,
    pub sslmode: SslMode,
    pub ssl: SslFiles,
    pub connect_timeout: Duration,
    pub via_ssh: SqlViaSsh,
    /// `master_local_ip` when set.
    pub local_ip: Option<String>,
    pub socket_dir: PathBuf,
    pub ssh: SshSettings,
}

/// How the session reached the master, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Direct,
    /// Through ssh to `host`, then to `remote` on the master.
    Ssh {
        host: String,
        remote: Remote,
    },
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Direct => f.write_str("direct TCP connection"),
            Route::Ssh { host, remote } => write!(f, "through ssh to {host}, then {remote} on the master"),
        }
    }
}

/// A connection, with the tunnel it runs through (dropped after it).
pub struct Connection {
    pub client: postgres::Client,
    pub route: Route,
    pub tunnel: Option<Tunnel>,
}

/// The direct connection could not be made at all (refused, timed out,
/// unreachable), as opposed to a server that answered with an error
/// (authentication, pg_hba.conf, TLS): only the first is worth a tunnel.
fn no_route(e: &postgres::Error) -> bool {
    e.as_db_error().is_none() && e.to_string().starts_with("error connecting to server")
}

/// A tunnel's forward reached nothing on the master: ssh accepted the
/// connection and closed it when the master refused the forward.
fn forward_failed(e: &postgres::Error) -> bool {
    let m = e.to_string();
    e.as_db_error().is_none()
        && (m.starts_with("error communicating with the server")
            || m.starts_with("connection closed")
            || m.starts_with("error connecting to server"))
}

fn is_tls_error(e: &postgres::Error) -> bool {
    e.to_string().starts_with("error performing TLS handshake")
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
            sslmode: cfg.sslmode,
            ssl: cfg.ssl.clone(),
            connect_timeout: if cfg.ssh.connect_timeout.is_zero() {
                Duration::from_secs(30)
            } else {
                cfg.ssh.connect_timeout
            },
            via_ssh: cfg.sql_via_ssh,
            local_ip: cfg.master_local_ip.clone(),
            socket_dir: cfg.master_socket_dir.clone(),
            ssh: cfg.ssh.clone(),
        })
    }

    pub fn describe(&self) -> String {
        format!("{}@{}:{}/{}", self.user, self.host, self.port, self.db)
    }

    fn base_config(&self, application_name: &str) -> postgres::Config {
        let mut c = postgres::Config::new();
        c.user(&self.user)
            .dbname(&self.db)
            .application_name(application_name)
            .connect_timeout(self.connect_timeout)
            // A base backup session idles for the whole copy: keep NAT/firewalls from dropping it.
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        // Looked up by the name the user configured, as libpq does with host=.
        let password = self
            .password
            .clone()
            .or_else(|| pgpass_lookup(&self.host, self.port, &self.db, &self.user));
        if let Some(p) = password {
            c.password(p);
        }
        c
    }

    /// Connects over TCP with `sslmode`'s TLS rules: TLS verification is
    /// always against `self.host`, even when `addr` (the tunnel's local end)
    /// is where the TCP connection goes.
    fn connect_tcp(
        &self,
        mut c: postgres::Config,
        addr: Option<std::net::IpAddr>,
    ) -> Result<postgres::Client, PgError> {
        let tls = tls::connector(self.sslmode, &self.ssl).map_err(|detail| PgError::Command {
            what: format!("setting up TLS (sslmode {}) for {}", self.sslmode, self.describe()),
            detail,
        })?;
        c.host(&self.host);
        if let Some(a) = addr {
            c.hostaddr(a);
        }
        let Some(tls) = tls else {
            c.ssl_mode(PgSslMode::Disable);
            return c.connect(postgres::NoTls).map_err(PgError::from);
        };
        c.ssl_mode(if self.sslmode.requires_tls() {
            PgSslMode::Require
        } else {
            PgSslMode::Prefer
        });
        match c.connect(tls) {
            // libpq's prefer/allow: a failed TLS handshake is retried in plain text.
            Err(e) if is_tls_error(&e) && !self.sslmode.requires_tls() => {
                log::info!(
                    "TLS with {} failed ({e}); sslmode {} allows plain text, retrying without TLS",
                    self.describe(),
                    self.sslmode
                );
                c.ssl_mode(PgSslMode::Disable);
                c.connect(postgres::NoTls).map_err(PgError::from)
            }
            r => r.map_err(PgError::from),
        }
    }

    fn direct(&self, application_name: &str) -> Result<postgres::Client, PgError> {
        let mut c = self.base_config(application_name);
        c.port(self.port);
        self.connect_tcp(c, None)
    }

    /// Where the tunnel may end on the master, in order: `master_local_ip`
    /// if set; else 127.0.0.1 (what pitrtools' psql used), then the unix
    /// socket for a master that listens on no TCP address.
    pub fn tunnel_remotes(&self) -> Vec<Remote> {
        let tcp = |host: &str| Remote::Tcp {
            host: host.to_string(),
            port: self.port,
        };
        match &self.local_ip {
            Some(ip) => vec![tcp(ip)],
            None => vec![
                tcp("127.0.0.1"),
                Remote::Unix(self.socket_dir.join(format!(".s.PGSQL.{}", self.port))),
            ],
        }
    }

    /// Connects through an ssh tunnel, trying its forwards in order: the
    /// next one only when the master did not answer on this one.
    fn tunneled(&self, application_name: &str) -> Result<(postgres::Client, Route, Tunnel), PgError> {
        let tunnel = self.open_tunnel()?;
        let mut failures = Vec::new();
        for (i, f) in tunnel.forwards.iter().enumerate() {
            let e = match self.connect_forward(application_name, f) {
                Ok(client) => {
                    let route = Route::Ssh {
                        host: self.host.clone(),
                        remote: f.remote.clone(),
                    };
                    log::info!("connected to {} {route}", self.describe());
                    return Ok((client, route, tunnel));
                }
                Err(PgError::Query(e)) => e,
                Err(other) => return Err(other),
            };
            if is_tls_error(&e) {
                return Err(self.tls_failure(&e));
            }
            match tunnel.forwards.get(i + 1) {
                Some(next) if forward_failed(&e) => {
                    log::info!("through ssh, {} did not answer ({e}); trying {}", f.remote, next.remote);
                    failures.push(format!("{}: {e}", f.remote));
                }
                _ => {
                    failures.push(format!("{}: {e}", f.remote));
                    return Err(self.tunnel_failure(&failures, &e, &tunnel));
                }
            }
        }
        unreachable!("a tunnel has at least one forward")
    }

    /// Whether PostgreSQL answers at a place the ssh tunnel reaches on the
    /// master (the failover's "is the master alive?"): a session, or a
    /// refusal from the server itself (login, pg_hba.conf, TLS), is an
    /// answer; ssh failing, or a forward that reaches nothing, is not.
    pub fn answers_through_ssh(&self) -> bool {
        let Ok(tunnel) = self.open_tunnel() else {
            return false;
        };
        tunnel
            .forwards
            .iter()
            .any(|f| match self.connect_forward("pitrkit failover check", f) {
                Ok(_) => true,
                Err(PgError::Query(e)) => !forward_failed(&e),
                Err(_) => false,
            })
    }

    /// The ssh tunnel for `tunneled`, with one forward per place the master
    /// may listen (TCP local ends where TLS is required).
    fn open_tunnel(&self) -> Result<Tunnel, PgError> {
        let tls_wanted = self.sslmode.requires_tls();
        let remotes: Vec<(Remote, bool)> = self
            .tunnel_remotes()
            .into_iter()
            .map(|r| {
                let tcp = tls_wanted && matches!(r, Remote::Tcp { .. });
                (r, tcp)
            })
            .collect();
        let wait = self.connect_timeout + Duration::from_secs(20);
        Tunnel::open(&self.ssh, &self.host, &remotes, wait).map_err(|detail| PgError::Command {
            what: format!("opening an ssh tunnel to {} for the SQL session", self.host),
            detail: format!(
                "{detail}\n  what to do: check that `ssh {}` works as this user (the same ssh settings as rsync), \
                 and that the master's sshd allows TCP forwarding (AllowTcpForwarding, AllowStreamLocalForwarding)",
                self.host
            ),
        })
    }

    /// One attempt through one forward of the tunnel.
    fn connect_forward(&self, application_name: &str, f: &Forward) -> Result<postgres::Client, PgError> {
        let mut c = self.base_config(application_name);
        match &f.local {
            Local::Tcp(port) => {
                c.port(*port);
                self.connect_tcp(c, Some(std::net::Ipv4Addr::LOCALHOST.into()))
            }
            Local::Unix { dir, port } => {
                if self.sslmode.requires_tls() {
                    // PostgreSQL offers no TLS on unix sockets, and libpq
                    // ignores sslmode there; ssh encrypts this route.
                    log::info!(
                        "sslmode {}: the master's unix socket offers no TLS; the session is encrypted and the \
                         master authenticated by ssh instead (its host key)",
                        self.sslmode
                    );
                }
                c.host_path(dir).port(*port).ssl_mode(PgSslMode::Disable);
                c.connect(postgres::NoTls).map_err(PgError::from)
            }
        }
    }

    /// The error once every forward was tried: what each said, what ssh
    /// said, and what to fix (where the master listens, or its pg_hba.conf).
    fn tunnel_failure(&self, failures: &[String], last: &postgres::Error, tunnel: &Tunnel) -> PgError {
        let tried = failures.join("; ");
        let ssh_said = tunnel.messages();
        PgError::Command {
            what: format!("connecting to {} through ssh to {}", self.describe(), self.host),
            detail: format!(
                "{tried} (ssh: {ssh_said})\n  what to do: {}",
                if forward_failed(last) {
                    format!(
                        "check that PostgreSQL runs on the master and listens where pitrkit looks: \
                         set master_local_ip to the address it listens on (as seen on the master), or \
                         master_socket_dir to its unix_socket_directories (now {})",
                        self.socket_dir.display()
                    )
                } else {
                    format!(
                        "check that pg_hba.conf on the master admits user {} from the master itself \
                         (host 127.0.0.1 or local), and that the password is in master_password, \
                         ~/.pgpass or PGPASSFILE",
                        self.user
                    )
                }
            ),
        }
    }

    /// Connects directly, through ssh, or directly and then through ssh
    /// when the direct route is closed (`sql_via_ssh`).
    pub fn connect(&self, application_name: &str) -> Result<Connection, PgError> {
        let through_ssh = |direct_error: Option<postgres::Error>| {
            self.tunneled(application_name)
                .map(|(client, route, tunnel)| Connection {
                    client,
                    route,
                    tunnel: Some(tunnel),
                })
                .map_err(|e| match direct_error {
                    None => e,
                    Some(d) => PgError::Command {
                        what: format!("connecting to {}", self.describe()),
                        detail: format!(
                            "the direct connection failed ({d}), and so did the ssh route: {e}\n  what to do: \
                             open port {} on {} to this host, or fix the ssh route",
                            self.port, self.host
                        ),
                    },
                })
        };
        let direct = |client| Connection {
            client,
            route: Route::Direct,
            tunnel: None,
        };
        match self.via_ssh {
            SqlViaSsh::On => through_ssh(None),
            SqlViaSsh::Off => self
                .direct(application_name)
                .map(direct)
                .map_err(|e| self.connect_hint(e)),
            SqlViaSsh::Auto => match self.direct(application_name) {
                Ok(c) => Ok(direct(c)),
                Err(PgError::Query(e)) if no_route(&e) => {
                    log::info!(
                        "no direct connection to PostgreSQL on {}:{} ({e}); trying through ssh (sql_via_ssh: auto)",
                        self.host,
                        self.port
                    );
                    through_ssh(Some(e))
                }
                Err(e) => Err(self.connect_hint(e)),
            },
        }
    }

    fn connect_hint(&self, e: PgError) -> PgError {
        let PgError::Query(source) = e else { return e };
        if is_tls_error(&source) {
            return self.tls_failure(&source);
        }
        let hint = if source.as_db_error().is_some() {
            // The server answered: the route is fine, the login is not.
            format!(
                "check that role {} and database {} exist on the master, that its pg_hba.conf admits them \
                 from this host, and that the password is in master_password, ~/.pgpass or PGPASSFILE",
                self.user, self.db
            )
        } else {
            format!(
                "check that PostgreSQL on {} listens on port {} (listen_addresses) and that a firewall lets this \
                 host through; if only ssh reaches the master, set sql_via_ssh: on (or auto)",
                self.host, self.port
            )
        };
        PgError::Connect {
            target: self.describe(),
            hint,
            source,
        }
    }

    /// A failed TLS handshake, with OpenSSL's verdict (the last part of its
    /// message, e.g. "unable to get local issuer certificate", "hostname
    /// mismatch") instead of its whole error stack.
    fn tls_failure(&self, e: &postgres::Error) -> PgError {
        let inner = std::error::Error::source(e).map(|c| c.to_string()).unwrap_or_default();
        let verdict = inner.rsplit(": ").next().unwrap_or_default().trim().to_string();
        let (detail, hint) = if inner.contains("certificate verify failed") {
            (
                format!("certificate verify failed: {verdict}"),
                format!(
                    "check that sslrootcert holds the CA that signed the master's certificate{}",
                    if self.sslmode == SslMode::VerifyFull {
                        format!(" and that the certificate names {} (subjectAltName)", self.host)
                    } else {
                        String::new()
                    }
                ),
            )
        } else if inner.contains("does not support TLS") {
            (
                "the master does not offer TLS".to_string(),
                format!(
                    "turn ssl on in the master's postgresql.conf, or lower sslmode (now {})",
                    self.sslmode
                ),
            )
        } else {
            (
                inner.clone(),
                "check the master's ssl settings and this host's OpenSSL".to_string(),
            )
        };
        PgError::Command {
            what: format!(
                "TLS with {} (sslmode {}, sslrootcert {})",
                self.describe(),
                self.sslmode,
                self.ssl.rootcert.as_deref().unwrap_or("~/.postgresql/root.crt")
            ),
            detail: format!("{detail}\n  what to do: {hint}"),
        }
    }
}

/// A warning for `-S`: the walreceiver connects by itself and cannot use
/// pitrkit's ssh tunnel.
pub fn streaming_route_warning(cfg: &StandbyConfig) -> Option<String> {
    if !cfg.streaming {
        return None;
    }
    let host = cfg.master_host.as_deref()?;
    let why = match cfg.sql_via_ssh {
        SqlViaSsh::On => "sql_via_ssh is on".to_string(),
        SqlViaSsh::Auto => {
            use std::net::ToSocketAddrs;
            let timeout = Duration::from_secs(3);
            let reachable = (host, cfg.master_port)
                .to_socket_addrs()
                .is_ok_and(|mut addrs| addrs.any(|a| std::net::TcpStream::connect_timeout(&a, timeout).is_ok()));
            if reachable {
                return None;
            }
            format!("{host}:{} does not accept connections from here", cfg.master_port)
        }
        SqlViaSsh::Off => return None,
    };
    Some(format!(
        "use_streaming_replication is on but {why}: streaming replication connects directly to {host}:{} \
         (PostgreSQL's walreceiver cannot use pitrkit's ssh tunnel), so this standby will replay only archived WAL \
         until that port is reachable; open it, or set use_streaming_replication: off",
        cfg.master_port
    ))
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
    pub route: Route,
    // After `client`: fields drop in order, so the session closes before its tunnel.
    _tunnel: Option<Tunnel>,
}

impl Master {
    pub fn open(target: &MasterTarget, application_name: &str) -> Result<Master, PgError> {
        let Connection { client, route, tunnel } = target.connect(application_name)?;
        Master::session(client, route, tunnel)
    }

    /// A session with the server on this host, through its unix socket in
    /// `socket_dir` (a backup of the local cluster, master or standby).
    pub fn open_local(socket_dir: &Path, port: u16, user: &str, application_name: &str) -> Result<Master, PgError> {
        let mut c = postgres::Config::new();
        c.host_path(socket_dir)
            .port(port)
            .user(user)
            .dbname("postgres")
            .application_name(application_name)
            .connect_timeout(Duration::from_secs(30));
        let client = c.connect(postgres::NoTls).map_err(|source| PgError::Connect {
            target: format!(
                "local server on port {port} (socket directory {})",
                socket_dir.display()
            ),
            hint: format!(
                "check that PostgreSQL runs with that port and unix_socket_directories, and that pg_hba.conf admits \
                 local connections by role {user}"
            ),
            source,
        })?;
        Master::session(client, Route::Direct, None)
    }

    /// Makes `client` a session no timeout cuts short, and learns the server.
    fn session(mut client: postgres::Client, route: Route, tunnel: Option<Tunnel>) -> Result<Master, PgError> {
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
            route,
            _tunnel: tunnel,
        })
    }

    /// "TLSv1.3" when the session is encrypted with TLS, else `None`.
    pub fn tls_version(&mut self) -> Result<Option<String>, PgError> {
        Ok(self
            .client
            .query_opt(
                "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl",
                &[],
            )?
            .map(|r| r.get(0)))
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

    /// The WAL segment size in bytes.
    pub fn wal_segment_size(&mut self) -> Result<u64, PgError> {
        let v: String = self
            .client
            .query_one("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'", &[])?
            .get(0);
        v.parse().map_err(|_| PgError::Command {
            what: "reading wal_segment_size".into(),
            detail: format!("pg_settings says '{v}'"),
        })
    }

    /// The timeline of the latest checkpoint (restartpoint on a standby).
    pub fn checkpoint_timeline(&mut self) -> Result<u32, PgError> {
        let tl: i32 = self
            .client
            .query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])?
            .get(0);
        Ok(tl as u32)
    }

    /// Closes the current WAL segment (the master, for a standby's backup).
    pub fn switch_wal(&mut self) -> Result<String, PgError> {
        Ok(self.client.query_one("SELECT pg_switch_wal()::text", &[])?.get(0))
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

    /// Stops the backup; `wait_for_archive`: see `PgVersion::backup_stop_sql`
    /// (the helper function of sql/ always waits).
    pub fn backup_stop(&mut self, wait_for_archive: bool) -> Result<BackupStop, PgError> {
        let sql = if self.helpers {
            "SELECT lsn::text, labelfile, spcmapfile FROM pitrkit.backup_stop()"
        } else {
            self.version.backup_stop_sql(wait_for_archive)
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

    /// The master's clock, for times compared with its commit timestamps.
    pub fn clock(&mut self) -> Result<chrono::DateTime<chrono::Utc>, PgError> {
        let micros: i64 = self
            .client
            .query_one("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8", &[])?
            .get(0);
        Ok(chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default())
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

pub(crate) fn home_dir() -> Option<PathBuf> {
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
    use crate::config::ConfigFile;

    #[test]
    fn the_tunnel_ends_at_master_local_ip_else_loopback_then_the_socket() {
        let load = |text: &str| {
            let f = crate::config::IniFile::parse(Path::new("s.ini"), text).unwrap();
            MasterTarget::from_standby(&StandbyConfig::from_ini(&f).unwrap()).unwrap()
        };
        let t = load("master_public_ip: db1\nport: 5433\nmaster_socket_dir: /run/pg\n");
        assert_eq!(
            t.tunnel_remotes(),
            vec![
                Remote::Tcp {
                    host: "127.0.0.1".into(),
                    port: 5433
                },
                Remote::Unix(PathBuf::from("/run/pg/.s.PGSQL.5433"))
            ]
        );
        let t = load("master_public_ip: db1\nmaster_local_ip: 10.1.1.1\n");
        assert_eq!(
            t.tunnel_remotes(),
            vec![Remote::Tcp {
                host: "10.1.1.1".into(),
                port: 5432
            }]
        );
    }

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
