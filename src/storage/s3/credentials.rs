//! Where an S3 client's credentials come from, in this order:
//! `s3_credentials_file` (AWS shared-credentials format, mode 0600), the
//! AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY variables, the shared
//! credentials file (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`,
//! profile `AWS_PROFILE` or `default`), else the instance or container role
//! (object_store's own chain). Never the INI file or the command line, and
//! no message here ever holds a secret.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use object_store::aws::AmazonS3Builder;

/// A profile's keys.
struct Keys {
    id: String,
    secret: String,
    token: Option<String>,
}

/// Never the secret, whoever prints it.
impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys {{ id: {}, .. }}", self.id)
    }
}

/// Sets the credentials on `b`; also says where they came from (for
/// messages: a path or a variable name, never a key).
pub(super) fn apply(b: AmazonS3Builder, file: Option<&Path>) -> Result<(AmazonS3Builder, String), String> {
    if let Some(f) = file {
        check_private(f)?;
        let keys = read_profile(f, "default")?
            .ok_or_else(|| format!("s3_credentials_file {}: has no [default] profile", f.display()))?;
        return Ok((with_keys(b, keys), format!("from s3_credentials_file {}", f.display())));
    }
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
        // AmazonS3Builder::from_env has read them.
        return Ok((b, "from the AWS_ACCESS_KEY_ID variable".into()));
    }
    let shared = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")));
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    if let Some(f) = shared.filter(|f| f.exists()) {
        let keys = read_profile(&f, &profile)?
            .ok_or_else(|| format!("{}: has no [{profile}] profile (AWS_PROFILE)", f.display()))?;
        return Ok((with_keys(b, keys), format!("from {} profile {profile}", f.display())));
    }
    Ok((
        b,
        "from the instance or container role: no AWS_* variables, no credentials file".into(),
    ))
}

fn with_keys(b: AmazonS3Builder, k: Keys) -> AmazonS3Builder {
    let b = b.with_access_key_id(k.id).with_secret_access_key(k.secret);
    match k.token {
        Some(t) => b.with_token(t),
        None => b,
    }
}

/// A credentials file others can read is refused: its secret would be theirs.
fn check_private(f: &Path) -> Result<(), String> {
    let m = std::fs::metadata(f).map_err(|e| format!("s3_credentials_file {}: {e}", f.display()))?;
    let mode = m.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "s3_credentials_file {} is mode {mode:04o}: others could read the secret key; run chmod 600 {}",
            f.display(),
            f.display()
        ));
    }
    Ok(())
}

/// The keys of `[profile]` in an AWS shared-credentials file; `None` if the
/// profile is not there.
fn read_profile(f: &Path, profile: &str) -> Result<Option<Keys>, String> {
    let text = std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
    parse_profile(&text, profile).map_err(|why| format!("{}: {why}", f.display()))
}

fn parse_profile(text: &str, profile: &str) -> Result<Option<Keys>, String> {
    let (mut section, mut found) = (String::new(), false);
    let (mut id, mut secret, mut token) = (None, None, None);
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.trim().to_string();
            found |= section == profile;
            continue;
        }
        if section != profile {
            continue;
        }
        // Never echo the line: it may hold a secret.
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected 'key = value'", n + 1))?;
        let v = Some(v.trim().to_string()).filter(|v| !v.is_empty());
        match k.trim() {
            "aws_access_key_id" => id = v,
            "aws_secret_access_key" => secret = v,
            "aws_session_token" => token = v,
            _ => {}
        }
    }
    if !found {
        return Ok(None);
    }
    match (id, secret) {
        (Some(id), Some(secret)) => Ok(Some(Keys { id, secret, token })),
        _ => Err(format!(
            "profile [{profile}] needs both aws_access_key_id and aws_secret_access_key"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_profile_and_never_shows_a_secret() {
        let text = "# c\n[other]\naws_access_key_id = X\n[default]\naws_access_key_id = AKID\naws_secret_access_key = s3cr3t\n";
        let k = parse_profile(text, "default").unwrap().unwrap();
        assert_eq!((k.id.as_str(), k.secret.as_str(), k.token), ("AKID", "s3cr3t", None));
        assert!(parse_profile(text, "nope").unwrap().is_none());
        let e = parse_profile("[default]\naws_secret_access_key s3cr3t\n", "default").unwrap_err();
        assert!(!e.contains("s3cr3t") && e.contains("line 2"), "{e}");
        let e = parse_profile("[default]\naws_secret_access_key = s3cr3t\n", "default").unwrap_err();
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn a_credentials_file_others_can_read_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("creds");
        std::fs::write(&f, "[default]\naws_access_key_id = A\naws_secret_access_key = B\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = apply(AmazonS3Builder::new(), Some(&f)).err().unwrap();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (_, from) = apply(AmazonS3Builder::new(), Some(&f)).unwrap();
        assert!(from.contains("s3_credentials_file"), "{from}");
    }
}
