//! TLS for pitrkit's own SQL connection to the master, with libpq's rules
//! (OpenSSL underneath, like libpq, so a certificate libpq accepts is
//! accepted here and one it refuses is refused):
//!
//! - `disable`: plain text.
//! - `allow`, `prefer`: TLS if the server offers it, else plain text; the
//!   caller retries in plain text if the TLS handshake fails.
//! - `require`: TLS, without checking the certificate, unless a root
//!   certificate file exists: then, as in libpq, like `verify-ca`.
//! - `verify-ca`: the server certificate must chain to `sslrootcert`.
//! - `verify-full`: also its name (SAN, else CN) must match the host name
//!   pitrkit was told (`master_public_ip`), whatever address the TCP
//!   connection goes to (through the ssh tunnel: 127.0.0.1).

use std::path::{Path, PathBuf};

use openssl::ssl::{SslConnector, SslConnectorBuilder, SslFiletype, SslMethod, SslVerifyMode};
use openssl::x509::store::X509Lookup;
use openssl::x509::verify::X509VerifyFlags;
use postgres_openssl::MakeTlsConnector;

pub use crate::config::SslFiles;
use crate::config::SslMode;

/// libpq's default directory for the files: `~/.postgresql`.
fn default_dir() -> Option<PathBuf> {
    super::master::home_dir().map(|h| h.join(".postgresql"))
}

/// A configured file, else libpq's default in `~/.postgresql` if it exists
/// (libpq uses a default file only when it is there).
fn file_or_default(configured: Option<&Path>, default_name: &str) -> Option<(PathBuf, bool)> {
    match configured {
        Some(p) => Some((p.to_path_buf(), true)),
        None => default_dir()
            .map(|d| d.join(default_name))
            .filter(|p| p.exists())
            .map(|p| (p, false)),
    }
}

/// libpq refuses a client key others can read: 0600 or less when the
/// current user owns it, 0640 or less when root does (a key managed by the
/// system and shared with a group).
pub fn check_key_permissions(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("client key file {}: {e}", path.display()))?;
    let mode = meta.mode() & 0o777;
    let ok = if meta.uid() == 0 {
        mode & 0o037 == 0
    } else {
        mode & 0o077 == 0
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "client key file {} has group or world access (mode {mode:04o}); it must be u=rw (0600) or less if owned \
             by the current user, or u=rw,g=r (0640) or less if owned by root: chmod 0600 {}",
            path.display(),
            path.display()
        ))
    }
}

/// Formats an OpenSSL error as "`what`: error", for `map_err`.
fn ossl(what: impl Into<String>) -> impl FnOnce(openssl::error::ErrorStack) -> String {
    let what = what.into();
    move |e| format!("{what}: {e}")
}

/// The connector for `sslmode`, or `None` for `disable`. Errors name the file
/// and what to do, before any connection is attempted.
pub fn connector(sslmode: SslMode, files: &SslFiles) -> Result<Option<MakeTlsConnector>, String> {
    if sslmode == SslMode::Disable {
        return Ok(None);
    }
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(ossl("setting up TLS"))?;
    let verify = load_root_certificates(&mut b, sslmode, files)?;
    if verify {
        b.set_verify(SslVerifyMode::PEER);
        load_crl(&mut b, files)?;
    } else {
        b.set_verify(SslVerifyMode::NONE);
    }
    load_client_certificate(&mut b, files)?;

    let mut c = MakeTlsConnector::new(b.build());
    let check_name = sslmode == SslMode::VerifyFull;
    c.set_callback(move |conf, _domain| {
        conf.set_verify_hostname(check_name);
        Ok(())
    });
    Ok(Some(c))
}

/// Loads the trusted certificates; true when there are some, so the server's
/// certificate is checked. A missing file is an error only for the modes
/// that verify.
fn load_root_certificates(b: &mut SslConnectorBuilder, sslmode: SslMode, files: &SslFiles) -> Result<bool, String> {
    let configured = match files.rootcert.as_deref() {
        Some("system") => {
            b.set_default_verify_paths()
                .map_err(ossl("loading the system's CA certificates"))?;
            return Ok(true);
        }
        configured => configured,
    };
    let verify_mode = sslmode.verifies();
    match file_or_default(configured.map(Path::new), "root.crt") {
        Some((path, _)) if path.exists() => {
            b.set_ca_file(&path)
                .map_err(ossl(format!("reading the root certificate file {}", path.display())))?;
            Ok(true)
        }
        Some((path, _)) if verify_mode => Err(format!(
            "root certificate file {} does not exist; sslmode {sslmode} checks the master's certificate \
             against it: put the CA certificate there, point sslrootcert at it, or use sslmode require \
             (encryption without verification)",
            path.display()
        )),
        None if verify_mode => {
            let default = default_dir()
                .map(|d| d.join("root.crt").display().to_string())
                .unwrap_or_else(|| "~/.postgresql/root.crt".into());
            Err(format!(
                "root certificate file {default} does not exist; sslmode {sslmode} checks the master's \
                 certificate against it: put the CA certificate there, set sslrootcert, or use sslmode \
                 require (encryption without verification)"
            ))
        }
        _ => Ok(false),
    }
}

/// Checks the server certificate against the revocation list, if there is
/// one; a configured one must exist.
fn load_crl(b: &mut SslConnectorBuilder, files: &SslFiles) -> Result<(), String> {
    let Some((crl, configured)) = file_or_default(files.crl.as_deref(), "root.crl") else {
        return Ok(());
    };
    if !crl.exists() {
        if configured {
            return Err(format!(
                "certificate revocation list {} (sslcrl) does not exist",
                crl.display()
            ));
        }
        return Ok(());
    }
    let store = b.cert_store_mut();
    let lookup = store
        .add_lookup(X509Lookup::file())
        .map_err(ossl("setting up the CRL check"))?;
    lookup.load_crl_file(&crl, SslFiletype::PEM).map_err(ossl(format!(
        "reading the certificate revocation list {}",
        crl.display()
    )))?;
    store
        .set_flags(X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL)
        .map_err(ossl("setting up the CRL check"))
}

/// The client certificate and its key, for masters that authenticate by
/// certificate.
fn load_client_certificate(b: &mut SslConnectorBuilder, files: &SslFiles) -> Result<(), String> {
    let Some((cert, configured)) = file_or_default(files.cert.as_deref(), "postgresql.crt") else {
        return Ok(());
    };
    if !cert.exists() {
        return Err(format!(
            "client certificate file {} (sslcert{}) does not exist",
            cert.display(),
            if configured { "" } else { "'s default" }
        ));
    }
    let key = files
        .key
        .clone()
        .or_else(|| default_dir().map(|d| d.join("postgresql.key")))
        .ok_or("no home directory to find the client key postgresql.key in; set sslkey")?;
    check_key_permissions(&key)?;
    b.set_certificate_chain_file(&cert)
        .map_err(ossl(format!("reading the client certificate {}", cert.display())))?;
    b.set_private_key_file(&key, SslFiletype::PEM)
        .map_err(ossl(format!("reading the client key {}", key.display())))?;
    b.check_private_key().map_err(ossl(format!(
        "the client key {} does not belong to the certificate {}",
        key.display(),
        cert.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_client_key_others_can_read_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("k.key");
        std::fs::write(&key, "x").unwrap();
        for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false)] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = check_key_permissions(&key);
            // As root (CI), a file root owns may be 0640.
            let ok = ok || (mode == 0o640 && nix::unistd::geteuid().is_root());
            assert_eq!(r.is_ok(), ok, "{mode:o}: {r:?}");
            if let Err(e) = r {
                assert!(e.contains("group or world access") && e.contains("chmod 0600"), "{e}");
            }
        }
    }

    #[test]
    fn the_connector_refuses_a_client_key_others_can_read() {
        let d = tempfile::tempdir().unwrap();
        let (cert, key) = (d.path().join("c.crt"), d.path().join("c.key"));
        std::fs::write(&cert, "x").unwrap();
        std::fs::write(&key, "x").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let files = SslFiles {
            cert: Some(cert),
            key: Some(key),
            ..Default::default()
        };
        let e = connector(SslMode::Require, &files).err().unwrap();
        assert!(e.contains("group or world access"), "{e}");
        // A certificate without its key file is named too.
        let files = SslFiles {
            cert: Some(d.path().join("missing.crt")),
            ..Default::default()
        };
        assert!(connector(SslMode::Require, &files)
            .err()
            .unwrap()
            .contains("missing.crt"));
    }

    #[test]
    fn verification_needs_a_root_certificate() {
        let files = SslFiles {
            rootcert: Some("/nonexistent/root.crt".into()),
            ..Default::default()
        };
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let e = connector(mode, &files).err().unwrap();
            assert!(e.contains("/nonexistent/root.crt does not exist"), "{e}");
        }
        // require without the file encrypts without verification, as libpq does.
        assert!(connector(SslMode::Require, &files).unwrap().is_some());
        assert!(connector(SslMode::Disable, &files).unwrap().is_none());
    }
}
