//! S3-compatible object storage as [`Storage`]: a prefix in a bucket, on
//! the `object_store` crate (SigV4, retries, connection pool; no
//! hand-written protocol code).
//!
//! How the storage rules hold on S3:
//! - never replace: every write of a stored name is a conditional create
//!   (`PutMode::Create`, `If-None-Match: *`); a 412 is judged by content
//!   (the same bytes are [`Placed::AlreadyPresent`], others a conflict);
//! - durable: S3 stores an object durably before it acknowledges the PUT,
//!   and the payload's SHA-256 is signed (SigV4), so the server refuses a
//!   body damaged on the way; success is that acknowledgement;
//! - checksums: the same `X.sum` sidecar objects as in a directory (see
//!   [`crate::layout`]), so restore, cleanup and shipping read one format
//!   wherever the archive is, and a copy made with any S3 tool keeps them
//!   (object metadata is lost by some copy tools, and cannot be listed);
//! - only [`Kind::File`]: S3 has no links.
//!
//! The trait is synchronous: each store owns a small current-thread tokio
//! runtime and blocks on it; one client per store (shared by its scopes)
//! reuses connections across the files of one call.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::path::Path as Key;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, PutMode, PutOptions,
    PutPayload, RetryConfig,
};

use super::{Entry, Kind, Listed, Storage};
use crate::config::s3::{S3Location, S3Settings, S3Url, Sse};
use crate::fsutil::{Fill, PlaceError, Placed};
use crate::layout::{CREATE_PROBE_FILE, SYSTEM_ID_FILE};

mod credentials;
mod multipart;

pub use multipart::Uploads;

/// Creates (not replaces) of one object are tried this often on a
/// transport error or timeout; a create that did reach the server before
/// is then a 412 with the same bytes, which counts as stored.
const CREATE_ATTEMPTS: u32 = 3;

/// An `s3://bucket/prefix` archive or repository.
#[derive(Clone)]
pub struct S3Store {
    rt: Arc<tokio::runtime::Runtime>,
    client: Arc<AmazonS3>,
    url: S3Url,
    /// The endpoint and where the credentials came from, for messages.
    endpoint: String,
    creds: String,
    attributes: Attributes,
    /// A backup repository's multipart settings (`None`: one PUT per file).
    uploads: Option<Uploads>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Store({} at {})", self.url, self.endpoint)
    }
}

impl S3Store {
    /// A client for `loc` (nothing is sent yet). The reason if the settings
    /// or the credentials cannot make one. One per location per process:
    /// the files of one call (a look-ahead batch) share its connections.
    pub fn open(loc: &S3Location) -> Result<S3Store, String> {
        static OPEN: Mutex<Vec<(S3Location, S3Store)>> = Mutex::new(Vec::new());
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, s)) = open.iter().find(|(l, _)| l == loc) {
            return Ok(s.clone());
        }
        let s = S3Store::connect(loc)?;
        open.push((loc.clone(), s.clone()));
        Ok(s)
    }

    fn connect(loc: &S3Location) -> Result<S3Store, String> {
        let s = &loc.settings;
        let bucket = &loc.url.bucket;
        let region = s
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()))
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok().filter(|r| !r.is_empty()))
            .unwrap_or_else(|| "us-east-1".into());
        let b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(&region)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(s.allow_http)
                    .with_timeout(s.timeout)
                    .with_connect_timeout(s.timeout.min(Duration::from_secs(10))),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(200),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: 3,
                retry_timeout: s.timeout * 3,
            });
        let (b, endpoint) = with_endpoint(b, s, bucket, &region);
        let b = with_sse(b, s);
        let (b, creds) = credentials::apply(b, s.credentials_file.as_deref())?;
        let client = b
            .build()
            .map_err(|e| format!("cannot set up the S3 client for {} at {endpoint}: {e}", loc.url))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the S3 client's runtime: {e}"))?;
        let mut attributes = Attributes::new();
        if let Some(c) = s.storage_class {
            attributes.insert(Attribute::StorageClass, c.header().into());
        }
        Ok(S3Store {
            rt: Arc::new(rt),
            client: Arc::new(client),
            url: loc.url.clone(),
            endpoint,
            creds,
            attributes,
            uploads: None,
        })
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn key(&self, name: &str) -> Key {
        match self.url.prefix.as_str() {
            "" => Key::from(name),
            p => Key::from(format!("{p}/{name}")),
        }
    }

    /// `name` relative to this store's prefix.
    fn relative<'k>(&self, key: &'k str) -> &'k str {
        match self.url.prefix.as_str() {
            "" => key,
            p => key.strip_prefix(p).map(|k| k.trim_start_matches('/')).unwrap_or(key),
        }
    }

    /// A failed request as an error a DBA can act on: which object, which
    /// endpoint and bucket, and for a refusal, where the credentials came from.
    fn error(&self, what: &str, name: &str, e: object_store::Error) -> io::Error {
        use object_store::Error as E;
        let kind = match &e {
            E::NotFound { .. } => io::ErrorKind::NotFound,
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::Other,
        };
        let advice = match kind {
            io::ErrorKind::PermissionDenied => format!(
                "; the server refused the credentials ({}): check the access key, the secret and the bucket policy",
                self.creds
            ),
            io::ErrorKind::NotFound => String::new(),
            _ => format!(
                "; is the S3 server at {} reachable and bucket {} there?",
                self.endpoint, self.url.bucket
            ),
        };
        io::Error::new(
            kind,
            format!(
                "{what} {} (endpoint {}, bucket {}): {}{advice}",
                self.locate(name),
                self.endpoint,
                self.url.bucket,
                short(&e)
            ),
        )
    }

    fn head(&self, name: &str) -> io::Result<Option<object_store::ObjectMeta>> {
        match self.rt.block_on(self.client.head(&self.key(name))) {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("cannot look up", name, e)),
        }
    }

    fn get_all(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.get(name)?.read_to_end(&mut buf)?;
        Ok(buf)
    }

    /// Conditional create of `name` with `data`; an object already there is
    /// judged by its bytes. Transport errors are retried (bounded, logged).
    fn create(&self, name: &str, data: Vec<u8>) -> Result<Placed, PlaceError> {
        let key = self.key(name);
        // Shared, not copied: the payload of every attempt and the comparison.
        let data = bytes::Bytes::from(data);
        let payload = PutPayload::from(data.clone());
        let mut attempt = 1;
        loop {
            let opts = PutOptions {
                mode: PutMode::Create,
                attributes: self.attributes.clone(),
                ..Default::default()
            };
            match self.rt.block_on(self.client.put_opts(&key, payload.clone(), opts)) {
                Ok(_) => return Ok(Placed::Created),
                Err(object_store::Error::AlreadyExists { .. }) => return self.judge_existing(name, &data),
                Err(e @ object_store::Error::Generic { .. }) if attempt < CREATE_ATTEMPTS => {
                    let wait = Duration::from_secs(1 << (attempt - 1));
                    log::warn!(
                        "storing {} (endpoint {}): {}; trying again in {}s (attempt {} of {CREATE_ATTEMPTS})",
                        self.locate(name),
                        self.endpoint,
                        short(&e),
                        wait.as_secs(),
                        attempt + 1
                    );
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err(e) => return Err(self.place_err(name, "store", self.error("cannot store", name, e))),
            }
        }
    }

    /// The server has an object under `name`: the same bytes are success,
    /// anything else a conflict (it is never replaced).
    fn judge_existing(&self, name: &str, ours: &[u8]) -> Result<Placed, PlaceError> {
        let theirs = self
            .get_all(name)
            .map_err(|e| self.place_err(name, "compare with existing object", e))?;
        if theirs == ours {
            return Ok(Placed::AlreadyPresent);
        }
        Err(PlaceError::Conflict {
            path: PathBuf::from(self.locate(name)),
            existing: Some(theirs.len() as u64),
            ours: ours.len() as u64,
            compressed: false,
        })
    }

    fn place_err(&self, name: &str, op: &'static str, source: io::Error) -> PlaceError {
        PlaceError::Io {
            path: PathBuf::from(self.locate(name)),
            op,
            source,
        }
    }

    /// `-I`'s proof that the endpoint honours a conditional create: a
    /// second create of the same probe object must be refused (412).
    /// Without it, "never overwrite" would silently not hold.
    pub fn prove_conditional_create(&self) -> Result<(), String> {
        let key = self.key(CREATE_PROBE_FILE);
        let put = |data: &'static [u8]| {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            self.rt
                .block_on(self.client.put_opts(&key, PutPayload::from_static(data), opts))
        };
        let cleanup = || {
            let _ = self.rt.block_on(self.client.delete(&key));
        };
        cleanup();
        if let Err(e) = put(b"first\n") {
            return Err(self.error("cannot store", CREATE_PROBE_FILE, e).to_string());
        }
        let second = put(b"second\n");
        cleanup();
        match second {
            Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Ok(_) => Err(format!(
                "the S3 endpoint {} replaced an existing object on a conditional create (If-None-Match: *) instead of refusing it with 412: on this server pitrkit could overwrite archived WAL, so it refuses to archive there; use a server that supports conditional writes (AWS S3, MinIO, Ceph RGW 18+, moto)",
                self.endpoint
            )),
            Err(e) => Err(self.error("cannot test a conditional create at", CREATE_PROBE_FILE, e).to_string()),
        }
    }

    /// Every object under directory `prefix` of this store.
    fn list_metas(&self, prefix: &str) -> io::Result<Vec<object_store::ObjectMeta>> {
        let start = self.key(prefix.trim_matches('/'));
        let start = (!start.as_ref().is_empty()).then_some(start);
        self.rt
            .block_on(self.client.list(start.as_ref()).try_collect())
            .map_err(|e| self.error("cannot list", prefix, e))
    }

    /// Removes many names, in batches (S3's multi-object delete: up to
    /// 1000 per request); one result per name, in order.
    fn delete_batch(&self, names: &[String]) -> Vec<io::Result<bool>> {
        let keys: Vec<object_store::Result<Key>> = names.iter().map(|n| Ok(self.key(n))).collect();
        let results: Vec<object_store::Result<Key>> = self.rt.block_on(
            self.client
                .delete_stream(futures_util::stream::iter(keys).boxed())
                .collect::<Vec<_>>(),
        );
        if results.len() != names.len() {
            // A failed batch request yields one error for all its names.
            let why = results.into_iter().find_map(Result::err).map(|e| short(&e));
            let why = why.unwrap_or_else(|| "the server answered for fewer objects than asked".into());
            return names
                .iter()
                .map(|n| {
                    Err(io::Error::other(format!(
                        "cannot delete {} (endpoint {}): {why}",
                        self.locate(n),
                        self.endpoint
                    )))
                })
                .collect();
        }
        names
            .iter()
            .zip(results)
            .map(|(n, r)| match r {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(self.error("cannot delete", n, e)),
            })
            .collect()
    }
}

/// Where requests go: virtual-hosted style wants the bucket's own host
/// (object_store takes a custom endpoint as it is). Returns the endpoint.
fn with_endpoint(b: AmazonS3Builder, s: &S3Settings, bucket: &str, region: &str) -> (AmazonS3Builder, String) {
    match &s.endpoint {
        Some(e) if !s.path_style => {
            let (scheme, host) = e.split_once("://").unwrap_or(("https", e));
            let endpoint = format!("{scheme}://{bucket}.{}", host.trim_end_matches('/'));
            let b = b.with_virtual_hosted_style_request(true).with_endpoint(&endpoint);
            (b, endpoint)
        }
        Some(e) => {
            let endpoint = e.trim_end_matches('/').to_string();
            (b.with_endpoint(&endpoint), endpoint)
        }
        None => (
            b.with_virtual_hosted_style_request(!s.path_style),
            format!("https://s3.{region}.amazonaws.com"),
        ),
    }
}

/// `s3_sse`: server-side encryption headers on every object written.
fn with_sse(b: AmazonS3Builder, s: &S3Settings) -> AmazonS3Builder {
    let sse = config_key("aws_server_side_encryption");
    match (s.sse, &s.sse_kms_key_id) {
        (Sse::Default, _) => b,
        (Sse::Aes256, _) => b.with_config(sse, "AES256"),
        (Sse::Kms, None) => b.with_config(sse, "aws:kms"),
        (Sse::Kms, Some(k)) => b
            .with_config(sse, "aws:kms")
            .with_config(config_key("aws_sse_kms_key_id"), k),
    }
}

/// An object_store setting by its documented name (the encryption keys'
/// enum is not exported).
fn config_key(name: &str) -> AmazonS3ConfigKey {
    name.parse().expect("object_store documents this key")
}

/// An object_store error in one line (its source chain, without the
/// request's URL, which the message names already).
fn short(e: &object_store::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s = format!("{s}: {t}");
        }
        src = x.source();
    }
    s = s.replace('\n', " ");
    // An S3 error document: its code and message say it all.
    if let (Some(at), Some(code)) = (s.find("<?xml"), between(&s, "<Code>", "</Code>")) {
        let message = between(&s, "<Message>", "</Message>").unwrap_or_default();
        s = format!("{}{code}: {message}", &s[..at]);
    }
    s
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    Some(&s[start..start + s[start..].find(close)?])
}

/// An object's body, read as it arrives.
struct Body {
    rt: Arc<tokio::runtime::Runtime>,
    stream: futures_util::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    chunk: bytes::Bytes,
    name: String,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rt.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(c)) => self.chunk = c,
                Some(Err(e)) => return Err(io::Error::other(format!("reading {}: {}", self.name, short(&e)))),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

impl Storage for S3Store {
    fn location(&self) -> String {
        self.url.to_string()
    }

    fn locate(&self, name: &str) -> String {
        match name {
            "" => self.url.to_string(),
            n => format!("{}/{n}", self.url),
        }
    }

    fn available(&self) -> Result<(), String> {
        // One cheap request that needs the bucket and the credentials.
        self.head(SYSTEM_ID_FILE).map(|_| ()).map_err(|e| e.to_string())
    }

    fn put_if_absent(&self, src: &Path, name: &str) -> Result<Placed, PlaceError> {
        let data = std::fs::read(src).map_err(|source| PlaceError::Io {
            path: src.to_path_buf(),
            op: "read",
            source,
        })?;
        self.create(name, data)
    }

    fn put_made_if_absent(&self, name: &str, fill: &mut Fill) -> Result<Placed, PlaceError> {
        let mut data = Vec::new();
        fill(&mut data)?;
        self.create(name, data)
    }

    fn put_bytes_if_absent(&self, name: &str, data: &[u8]) -> Result<Placed, PlaceError> {
        self.create(name, data.to_vec())
    }

    fn confirm(&self, _name: &str) -> Result<Placed, PlaceError> {
        // An object S3 lists was acknowledged, hence durable.
        Ok(Placed::AlreadyPresent)
    }

    fn get(&self, name: &str) -> io::Result<Box<dyn Read + Send>> {
        self.get_from(name, 0)
    }

    fn get_from(&self, name: &str, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        let opts = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            ..Default::default()
        };
        let r = self
            .rt
            .block_on(self.client.get_opts(&self.key(name), opts))
            .map_err(|e| self.error("cannot read", name, e))?;
        Ok(Box::new(Body {
            rt: self.rt.clone(),
            stream: r.into_stream(),
            chunk: bytes::Bytes::new(),
            name: self.locate(name),
        }))
    }

    fn stat(&self, name: &str) -> io::Result<Option<Entry>> {
        Ok(self.head(name)?.map(|m| Entry {
            kind: Kind::File,
            size: m.size,
            modified: Some(m.last_modified.into()),
            version: format!(
                "{} {} {}",
                m.e_tag.as_deref().unwrap_or("-"),
                m.size,
                m.last_modified.timestamp_nanos_opt().unwrap_or(0)
            ),
        }))
    }

    fn list(&self) -> io::Result<Vec<Listed>> {
        let prefix = (!self.url.prefix.is_empty()).then(|| Key::from(self.url.prefix.as_str()));
        let r = self
            .rt
            .block_on(self.client.list_with_delimiter(prefix.as_ref()))
            .map_err(|e| self.error("cannot list", "", e))?;
        let mut out: Vec<Listed> = r
            .objects
            .iter()
            .map(|m| Listed::Name {
                name: self.relative(m.location.as_ref()).to_string(),
                dir: false,
            })
            .collect();
        out.extend(r.common_prefixes.iter().map(|p| Listed::Name {
            name: self.relative(p.as_ref()).to_string(),
            dir: true,
        }));
        Ok(out)
    }

    fn delete(&self, name: &str) -> io::Result<bool> {
        // S3 answers a delete of nothing with success too: ask first.
        if self.head(name)?.is_none() {
            return Ok(false);
        }
        self.rt
            .block_on(self.client.delete(&self.key(name)))
            .map_err(|e| self.error("cannot delete", name, e))?;
        Ok(true)
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn delete_many(&self, names: &[String]) -> Vec<io::Result<bool>> {
        self.delete_batch(names)
    }

    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let payload = PutPayload::from(data.to_vec());
        self.rt
            .block_on(self.client.put(&self.key(name), payload))
            .map(|_| ())
            .map_err(|e| self.error("cannot store", name, e))
    }

    fn delete_durable(&self, name: &str) -> io::Result<()> {
        self.delete(name).map(|_| ())
    }

    fn read_mark(&self) -> io::Result<Option<String>> {
        match self.get_all(SYSTEM_ID_FILE) {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_mark(&self, content: &str) -> io::Result<()> {
        // Replaced as a whole: an S3 PUT is atomic.
        self.replace(SYSTEM_ID_FILE, content.as_bytes())
    }

    fn put_stream(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<Placed, PlaceError> {
        let mut data = Vec::new();
        write(&mut data).map_err(|e| self.place_err(name, "write", e))?;
        self.create(name, data)
    }

    fn put_stream_deferred(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<Placed, PlaceError> {
        match &self.uploads {
            Some(u) => self.put_in_parts(u, name, write),
            None => self.put_stream(name, write),
        }
    }

    fn reclaim(&self) -> io::Result<usize> {
        match &self.uploads {
            Some(_) => self.abort_recorded_uploads(),
            None => Ok(0),
        }
    }

    fn list_tree(&self, prefix: &str) -> io::Result<Vec<String>> {
        let mut out: Vec<String> = self
            .list_metas(prefix)?
            .iter()
            .map(|m| self.relative(m.location.as_ref()).to_string())
            .collect();
        out.sort();
        Ok(out)
    }

    fn tree_size(&self, prefix: &str) -> io::Result<u64> {
        Ok(self.list_metas(prefix)?.iter().map(|m| m.size).sum())
    }

    fn delete_tree(&self, prefix: &str) -> io::Result<()> {
        let names = self.list_tree(prefix)?;
        self.delete_batch(&names)
            .into_iter()
            .collect::<io::Result<Vec<bool>>>()
            .map(drop)
    }

    fn scoped(&self, prefix: &str) -> io::Result<Box<dyn Storage>> {
        let mut s = self.clone();
        let p = prefix.trim_matches('/');
        s.url.prefix = match self.url.prefix.as_str() {
            "" => p.to_string(),
            base => format!("{base}/{p}"),
        };
        Ok(Box::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_error_document_is_shown_as_its_code_and_message() {
        let e = object_store::Error::Generic {
            store: "S3",
            source: "403 Forbidden: <?xml version=\"1.0\"?>\n<Error><Code>SignatureDoesNotMatch</Code><Message>Check your key.</Message><RequestId>R</RequestId></Error>".into(),
        };
        let s = short(&e);
        assert!(
            s.ends_with("403 Forbidden: SignatureDoesNotMatch: Check your key."),
            "{s}"
        );
        assert!(!s.contains("RequestId"), "{s}");
    }
}
