//! Object storage locations (`s3://bucket/prefix`) and the `s3_*` keys,
//! checked before anything is written.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::ini::ConfigError;
use super::options::{Choice, Options};

/// An `s3://bucket/prefix` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix.as_str() {
            "" => write!(f, "s3://{}", self.bucket),
            p => write!(f, "s3://{}/{p}", self.bucket),
        }
    }
}

/// Does `v` name an object storage location (rather than a directory)?
pub fn is_url(v: &str) -> bool {
    v.starts_with("s3://")
}

impl S3Url {
    /// Parses `s3://bucket[/prefix]`; the reason if it is not one.
    pub fn parse(v: &str) -> Result<S3Url, String> {
        let rest = v.strip_prefix("s3://").ok_or("is not an s3://bucket/prefix URL")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket)?;
        let prefix = prefix.trim_matches('/');
        if let Some(bad) = prefix.split('/').find(|s| matches!(*s, "" | "." | "..")) {
            if !prefix.is_empty() {
                return Err(format!(
                    "has a prefix with a '{bad}' component: each part between '/' must be a plain name"
                ));
            }
        }
        if let Some(c) = prefix
            .chars()
            .find(|c| c.is_control() || matches!(c, '\\' | '{' | '}' | '^' | '`'))
        {
            return Err(format!(
                "has a prefix with the character {c:?}, which S3 keys should not hold"
            ));
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

/// S3's bucket naming rules (general purpose buckets).
fn check_bucket(b: &str) -> Result<(), String> {
    let why = if !(3..=63).contains(&b.len()) {
        "a bucket name is 3 to 63 characters long"
    } else if !b
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
    {
        "a bucket name holds only lowercase letters, digits, '-' and '.'"
    } else if !b.starts_with(|c: char| c.is_ascii_alphanumeric()) || !b.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        "a bucket name begins and ends with a letter or digit"
    } else if b.contains("..") {
        "a bucket name has no two adjacent periods"
    } else if b.parse::<std::net::Ipv4Addr>().is_ok() {
        "a bucket name is not an IP address"
    } else {
        return Ok(());
    };
    Err(format!("has the bucket name '{b}': {why}"))
}

super::choices::choice_enum! {
    /// `s3_storage_class`: the storage class of every object written.
    StorageClass {
        Standard = "standard",
        StandardIa = "standard_ia",
        OnezoneIa = "onezone_ia",
        IntelligentTiering = "intelligent_tiering",
        GlacierIr = "glacier_ir",
        /// Not readable at once: refused for WAL.
        Glacier = "glacier",
        /// Not readable at once: refused for WAL.
        DeepArchive = "deep_archive",
    }
}

impl StorageClass {
    /// The x-amz-storage-class value.
    pub fn header(self) -> String {
        self.name().to_ascii_uppercase()
    }

    /// Objects of this class must be restored (hours) before they can be read.
    pub fn archived(self) -> bool {
        matches!(self, StorageClass::Glacier | StorageClass::DeepArchive)
    }
}

super::choices::choice_enum! {
    /// `s3_sse`: server-side encryption of every object written.
    Sse {
        /// The bucket's default.
        Default = "default",
        /// SSE-S3 (AES256).
        Aes256 = "aes256",
        /// SSE-KMS, with `s3_sse_kms_key_id` (or the account's aws/s3 key).
        Kms = "aws:kms",
    }
}

/// The `s3_*` keys: how to reach the object store. Credentials are not
/// here: they come from the environment or a credentials file when a store
/// is opened (`storage::s3`), never from the INI file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    pub allow_http: bool,
    pub storage_class: Option<StorageClass>,
    pub sse: Sse,
    pub sse_kms_key_id: Option<String>,
    pub credentials_file: Option<PathBuf>,
    /// Per request; retries are bounded by a few of these.
    pub timeout: Duration,
    /// The INI file, for messages.
    pub config: PathBuf,
}

/// One object storage location with the settings to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub url: S3Url,
    pub settings: S3Settings,
}

impl S3Settings {
    /// The `s3_*` keys of a file that names an s3:// location.
    pub fn from_options(o: &Options) -> Result<S3Settings, ConfigError> {
        let endpoint = o.opt_text("s3_endpoint");
        let allow_http = o.bool("s3_allow_http")?;
        if let Some(e) = &endpoint {
            check_endpoint(e, allow_http)
                .map_err(|why| o.file().error("s3_endpoint", format!("s3_endpoint: '{e}' {why}")))?;
        }
        let sse = o.choice("s3_sse")?;
        let sse_kms_key_id = o.opt_text("s3_sse_kms_key_id");
        if sse_kms_key_id.is_some() && sse != Sse::Kms {
            return Err(o
                .file()
                .error(
                    "s3_sse_kms_key_id",
                    "s3_sse_kms_key_id is set but s3_sse is not aws:kms",
                )
                .hint("set 's3_sse: aws:kms', or remove s3_sse_kms_key_id"));
        }
        if let Some(r) = o.opt_text("s3_region") {
            if !r.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
                return Err(o.file().error(
                    "s3_region",
                    format!("s3_region: '{r}' is not a region name (e.g. eu-west-1)"),
                ));
            }
        }
        if let Some(k) = &sse_kms_key_id {
            if k.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(o.file().error(
                    "s3_sse_kms_key_id",
                    "s3_sse_kms_key_id holds white space; give the key id or ARN",
                ));
            }
        }
        Ok(S3Settings {
            endpoint,
            region: o.opt_text("s3_region"),
            path_style: o.bool("s3_path_style")?,
            allow_http,
            storage_class: match o.is_set("s3_storage_class") {
                false => None,
                true => Some(o.choice("s3_storage_class")?),
            },
            sse,
            sse_kms_key_id,
            credentials_file: o.opt_path("s3_credentials_file")?,
            timeout: o.seconds("s3_timeout")?,
            config: o.file().path.clone(),
        })
    }

    /// Refuses a storage class WAL cannot live in: restore must read a
    /// segment at once, and a GLACIER or DEEP_ARCHIVE object must first be
    /// restored (minutes to hours).
    pub fn check_for_wal(&self, o: &Options) -> Result<(), ConfigError> {
        match self.storage_class {
            Some(c) if c.archived() => Err(o
                .file()
                .error(
                    "s3_storage_class",
                    format!(
                        "s3_storage_class: {} cannot hold WAL: restore_command must read a segment at once, and an object in {} must first be restored, which takes minutes to hours; recovery would stop at the first segment",
                        c.name(),
                        c.header()
                    ),
                )
                .hint("use standard, standard_ia, intelligent_tiering or glacier_ir (instant retrieval), or move old WAL with a bucket lifecycle rule")),
            _ => Ok(()),
        }
    }

    /// The warning `s3_allow_http` earns.
    pub fn http_warning(&self) -> Option<String> {
        let e = self.endpoint.as_deref().filter(|e| e.starts_with("http://"))?;
        Some(format!(
            "s3_endpoint {e} is plain HTTP (s3_allow_http: on): requests and WAL travel unencrypted; use this only for a test server"
        ))
    }
}

/// `s3_endpoint` must be an http(s) URL with a host; plain http only with
/// `s3_allow_http`.
fn check_endpoint(e: &str, allow_http: bool) -> Result<(), String> {
    let rest = if let Some(r) = e.strip_prefix("https://") {
        r
    } else if let Some(r) = e.strip_prefix("http://") {
        if !allow_http {
            return Err("is plain HTTP; set s3_allow_http: on to allow it (test servers only)".into());
        }
        r
    } else {
        return Err("is not an http:// or https:// URL".into());
    };
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || matches!(c, '@' | '?' | '#')) {
        return Err("has no host name (or credentials in it, which belong in the credentials file)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn urls_keep_s3_rules() {
        let u = S3Url::parse("s3://wal-archive.example/pg/main/").unwrap();
        assert_eq!(
            (u.bucket.as_str(), u.prefix.as_str()),
            ("wal-archive.example", "pg/main")
        );
        assert_eq!(u.to_string(), "s3://wal-archive.example/pg/main");
        assert_eq!(S3Url::parse("s3://abc").unwrap().prefix, "");
        for (bad, why) in [
            ("s3://ab/x", "3 to 63"),
            ("s3://Bucket/x", "lowercase"),
            ("s3://-abc/x", "begins and ends"),
            ("s3://a..b/x", "adjacent"),
            ("s3://192.168.1.1/x", "IP address"),
            ("s3://abc/x/../y", "'..'"),
            ("s3://abc/x//y", "''"),
            ("s3://abc/x\ny", "character"),
            ("/srv/arch", "s3://"),
        ] {
            let e = S3Url::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    fn archiver(text: &str) -> Result<crate::config::ArchiverConfig, ConfigError> {
        use crate::config::ConfigFile;
        crate::config::ArchiverConfig::from_ini(&crate::config::IniFile::parse(Path::new("a.ini"), text).unwrap())
    }

    #[test]
    fn archive_urls_and_the_s3_keys_are_checked_before_use() {
        let c = archiver("archive_urls: s3://wal-a/main, s3://wal-b/x/y\ts3://wal-c\ns3_storage_class: standard_ia\ns3_sse: aws:kms\ns3_sse_kms_key_id: k1\n").unwrap();
        let urls: Vec<String> = c.archive_urls.iter().map(|l| l.url.to_string()).collect();
        assert_eq!(urls, ["s3://wal-a/main", "s3://wal-b/x/y", "s3://wal-c"]);
        let s = &c.archive_urls[0].settings;
        assert_eq!(
            (s.storage_class, s.sse, s.sse_kms_key_id.as_deref()),
            (Some(StorageClass::StandardIa), Sse::Kms, Some("k1"))
        );
        assert_eq!(s.timeout, Duration::from_secs(30));
        // Only archive_urls is a destination: enough on its own.
        for (bad, says) in [
            (
                "archive_urls: s3://wal-a/main\ns3_storage_class: glacier\n",
                "cannot hold WAL",
            ),
            (
                "archive_urls: s3://wal-a/main\ns3_storage_class: deep_archive\n",
                "minutes to hours",
            ),
            ("archive_urls: s3://wal-a/x/../y\n", "'..'"),
            ("archive_urls: /srv/arch\n", "s3://bucket/prefix"),
            ("archive_urls: s3://wal-a/m s3://wal-a/m\n", "listed twice"),
            (
                "archive_urls: s3://wal-a/m\ns3_endpoint: http://127.0.0.1:9000\n",
                "s3_allow_http",
            ),
            ("archive_urls: s3://wal-a/m\ns3_endpoint: minio:9000\n", "not an http"),
            (
                "archive_urls: s3://wal-a/m\ns3_sse_kms_key_id: k\n",
                "s3_sse is not aws:kms",
            ),
            ("archive_urls: s3://wal-a/m\ns3_timeout: 0\n", "at least 1"),
        ] {
            let e = archiver(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_standby_archivedir_may_be_an_s3_url() {
        use crate::config::{ConfigFile, IniFile, StandbyConfig};
        let load = |t: &str| StandbyConfig::from_ini(&IniFile::parse(Path::new("s.ini"), t).unwrap());
        let c = load("archivedir: s3://wal-a/main\ns3_path_style: on\n").unwrap();
        assert_eq!(c.archivedir, None);
        let loc = c.archive_s3.as_ref().unwrap();
        assert_eq!(
            (loc.url.to_string(), loc.settings.path_style),
            ("s3://wal-a/main".into(), true)
        );
        let e = c.required_archivedir("a base backup").unwrap_err().to_string();
        assert!(
            e.contains("archivedir is s3://wal-a/main") && e.contains("local directory"),
            "{e}"
        );
        assert!(load("archivedir: s3://WAL/main\n").is_err());
        assert!(load("archivedir: relative/dir\n").is_err());
    }

    #[test]
    fn endpoints_are_urls_and_http_needs_the_switch() {
        assert!(check_endpoint("https://s3.example.com", false).is_ok());
        assert!(check_endpoint("http://127.0.0.1:9000", true).is_ok());
        assert!(check_endpoint("http://127.0.0.1:9000", false)
            .unwrap_err()
            .contains("s3_allow_http"));
        assert!(check_endpoint("s3.example.com", true).is_err());
        assert!(check_endpoint("https://key:secret@host", true).is_err());
        assert_eq!(StorageClass::DeepArchive.header(), "DEEP_ARCHIVE");
    }
}
