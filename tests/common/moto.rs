//! A real S3 server for the object storage tests: `moto_server` (PyPI
//! `moto[server]`, installed into a virtualenv by scripts/test.sh), one
//! process per test on a free loopback port, with the test's own bucket.
//!
//! moto keeps its data in memory, so "server gone" is SIGSTOP / SIGCONT
//! ([`Moto::freeze`], [`Moto::thaw`]), never a restart. It checks
//! credentials only in IAM mode ([`Moto::start_with_iam`]:
//! `INITIAL_NO_AUTH_ACTION_COUNT`, the first N requests unauthenticated).
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::{free_port, port_accepts, require_program, tail, TestEnv};

/// Where scripts/test.sh (scripts/lib/moto.sh) installs moto.
pub const DEFAULT_VENV: &str = "/opt/pitrkit-moto";

/// Any key pair works while moto does not check keys.
pub const TEST_KEY_ID: &str = "AKIAPITRKITTEST00001";
pub const TEST_SECRET: &str = "pitrkit-test-secret-never-printed";

/// The moto_server program: PITRKIT_MOTO_SERVER, else the virtualenv
/// scripts/test.sh makes (PITRKIT_MOTO_VENV, default /opt/pitrkit-moto),
/// else PATH. Missing is a failure, never a skip.
pub fn moto_server_program() -> PathBuf {
    if let Some(p) = std::env::var_os("PITRKIT_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let venvs = match std::env::var("PITRKIT_MOTO_VENV") {
        Ok(v) => vec![v],
        Err(_) => vec![DEFAULT_VENV.into(), format!("{home}/.cache/pitrkit/moto")],
    };
    if let Some(p) = venvs
        .iter()
        .map(|v| Path::new(v).join("bin/moto_server"))
        .find(|p| p.exists())
    {
        return p;
    }
    let venv = &venvs[0];
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|d| d.join("moto_server"))
        .find(|p| p.is_file());
    match found {
        Some(p) => p,
        None => panic!(
            "moto_server not found in {venv}/bin or PATH: run scripts/test.sh once (it installs it), or \
             `python3 -m venv {venv} && {venv}/bin/pip install 'moto[server]'`"
        ),
    }
}

/// One running moto_server with one bucket.
pub struct Moto {
    pub port: u16,
    pub bucket: String,
    /// Keys that work (IAM mode: the user's; else any).
    pub key_id: String,
    pub secret: String,
    pub log: PathBuf,
    child: Option<Child>,
    frozen: bool,
}

impl Moto {
    /// A server that accepts any keys, with bucket `bucket`.
    pub fn start(env: &TestEnv, bucket: &str) -> Moto {
        let m = Moto::spawn(env, bucket, None);
        m.create_bucket();
        m
    }

    /// A server in IAM mode: a bucket, a user with keys and an s3:* policy,
    /// made with the first (unauthenticated) requests; every later request
    /// must be signed with those keys.
    pub fn start_with_iam(env: &TestEnv, bucket: &str) -> Moto {
        let mut m = Moto::spawn(env, bucket, Some(4));
        m.create_bucket();
        let user = "pitrkit";
        m.iam(&format!("Action=CreateUser&UserName={user}"));
        let keys = m.iam(&format!("Action=CreateAccessKey&UserName={user}"));
        let field = |tag: &str| {
            let open = format!("<{tag}>");
            let start = keys.find(&open).unwrap_or_else(|| panic!("no {tag} in: {keys}")) + open.len();
            keys[start..start + keys[start..].find('<').unwrap()].to_string()
        };
        m.key_id = field("AccessKeyId");
        m.secret = field("SecretAccessKey");
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
        m.iam(&format!(
            "Action=PutUserPolicy&UserName={user}&PolicyName=s3&PolicyDocument={}",
            urlencode(policy)
        ));
        m
    }

    fn spawn(env: &TestEnv, bucket: &str, no_auth_actions: Option<u32>) -> Moto {
        let program = moto_server_program();
        require_program("kill");
        let port = free_port();
        let dir = env.mkdir(&format!("moto-{port}"));
        let log = dir.join("moto.log");
        let out = fs::File::create(&log).unwrap();
        let mut cmd = Command::new(&program);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
        if let Some(n) = no_auth_actions {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let mut m = Moto {
            port,
            bucket: bucket.to_string(),
            key_id: TEST_KEY_ID.into(),
            secret: TEST_SECRET.into(),
            log,
            child: Some(child),
            frozen: false,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !port_accepts(port) {
            if let Some(st) = m.child.as_mut().unwrap().try_wait().unwrap() {
                m.child = None;
                panic!("moto_server exited early ({st}):\n{}", tail(&m.log, 30));
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port} within 60 s:\n{}",
                tail(&m.log, 30)
            );
            sleep(Duration::from_millis(100));
        }
        m
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("moto_server runs").id()
    }

    /// The archive URL for `prefix` in this test's bucket.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The INI lines that reach this server (path style, plain HTTP).
    pub fn ini_lines(&self, credentials_file: &Path) -> String {
        format!(
            "s3_endpoint: {}\ns3_region: us-east-1\ns3_path_style: on\ns3_allow_http: on\ns3_timeout: 3\ns3_credentials_file: {}\n",
            self.endpoint(),
            credentials_file.display()
        )
    }

    /// A 0600 credentials file with `secret`, owned by the test user.
    pub fn credentials_file(&self, env: &TestEnv, rel: &str, secret: &str) -> PathBuf {
        let p = env.write(
            rel,
            &format!(
                "[default]\naws_access_key_id = {}\naws_secret_access_key = {secret}\n",
                self.key_id
            ),
        );
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        p
    }

    /// SIGSTOP: the server still accepts connections (the kernel does) but
    /// answers nothing, as a hung or unreachable server.
    pub fn freeze(&mut self) {
        self.signal("-STOP");
        self.frozen = true;
    }

    pub fn thaw(&mut self) {
        self.signal("-CONT");
        self.frozen = false;
    }

    fn signal(&self, sig: &str) {
        let st = Command::new(require_program("kill"))
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill {sig} moto_server");
    }

    fn create_bucket(&self) {
        let (status, body) = self.http("PUT", &format!("/{}", self.bucket), b"", "");
        assert!(
            status == 200,
            "create bucket {}: HTTP {status}: {}",
            self.bucket,
            show(&body)
        );
    }

    /// Every key under `prefix` (unauthenticated: not in IAM mode).
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let (status, body) = self.http("GET", &format!("/{}?list-type=2&prefix={prefix}", self.bucket), b"", "");
        let body = show(&body);
        assert!(status == 200, "list {prefix}: HTTP {status}: {body}");
        body.split("<Key>")
            .skip(1)
            .filter_map(|k| k.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect()
    }

    /// The keys of the multipart uploads in progress (ListMultipartUploads):
    /// what a killed upload leaves behind, invisible to a listing of objects.
    pub fn uploads(&self) -> Vec<String> {
        let (status, body) = self.http("GET", &format!("/{}?uploads", self.bucket), b"", "");
        let body = show(&body);
        assert!(status == 200, "list multipart uploads: HTTP {status}: {body}");
        body.split("<Upload>")
            .skip(1)
            .filter_map(|u| {
                u.split_once("<Key>")?
                    .1
                    .split_once("</Key>")
                    .map(|(k, _)| k.to_string())
            })
            .collect()
    }

    /// Writes an object behind pitrkit's back (unconditionally).
    pub fn put_object(&self, key: &str, data: &[u8]) {
        let (status, body) = self.http("PUT", &format!("/{}/{key}", self.bucket), data, "");
        assert!(status == 200, "put {key}: HTTP {status}: {}", show(&body));
    }

    pub fn delete_object(&self, key: &str) {
        let (status, body) = self.http("DELETE", &format!("/{}/{key}", self.bucket), b"", "");
        assert!(status == 204, "delete {key}: HTTP {status}: {}", show(&body));
    }

    pub fn get_object(&self, key: &str) -> Vec<u8> {
        let (status, body) = self.http("GET", &format!("/{}/{key}", self.bucket), b"", "");
        assert!(status == 200, "get {key}: HTTP {status}: {}", show(&body));
        body
    }

    /// An unauthenticated IAM query call (counted among the first requests).
    fn iam(&self, query: &str) -> String {
        let body = format!("{query}&Version=2010-05-08");
        // moto's server picks the IAM backend by the signing scope of the
        // Authorization header; an unsigned one with that scope is enough
        // while INITIAL_NO_AUTH_ACTION_COUNT lasts.
        let auth = "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0";
        let (status, text) = self.http("POST", "/", body.as_bytes(), auth);
        let text = show(&text);
        assert!(status == 200, "IAM {query}: HTTP {status}: {text}");
        text
    }

    /// One plain HTTP/1.1 request; (status, body).
    fn http(&self, method: &str, path: &str, body: &[u8], auth: &str) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.port,
            body.len()
        );
        if method == "POST" {
            req += "Content-Type: application/x-www-form-urlencoded\r\n";
        }
        // moto reads an unsigned GET as anonymous (403 on a private
        // bucket); outside IAM mode it checks no signature.
        let auth = match auth {
            "" => "AWS4-HMAC-SHA256 Credential=AKIAPITRKITTEST00001/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
            a => a,
        };
        req += &format!("Authorization: {auth}\r\n");
        req += "\r\n";
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let split = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(resp.len());
        let head = String::from_utf8_lossy(&resp[..split]).to_string();
        let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        assert!(
            !head.to_ascii_lowercase().contains("transfer-encoding: chunked"),
            "moto answered chunked: {head}"
        );
        (status, resp.get(split + 4..).unwrap_or_default().to_vec())
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Drop for Moto {
    fn drop(&mut self) {
        if self.frozen {
            self.thaw();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
