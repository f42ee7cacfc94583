//! Large files to S3 in parts (backup sets): a multipart upload with a
//! configured part size and parts uploaded in parallel.
//!
//! S3 keeps the parts of an upload that was never completed or aborted
//! (billed, invisible to a listing of objects), and object_store cannot list
//! in-progress uploads. So each upload id is recorded durably (an object
//! under the repository's [`UPLOADS_DIR`], naming the key and the id) before
//! its first part, and removed once the upload is completed or aborted; a
//! record left by a killed backup lets the next `--expire` (or backup) abort
//! the upload by id ([`S3Store::abort_recorded_uploads`]).
//!
//! Success is S3's acknowledgement of CompleteMultipartUpload. That call is
//! not a conditional create; it need not be: only a backup writes the files
//! of its own fresh set, under the repository lock.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::try_join_all;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::{MultipartId, ObjectStore, PutPayload};

use super::{short, S3Store};
use crate::fsutil::{PlaceError, Placed};
use crate::layout::backup::UPLOADS_DIR;
use crate::storage::Storage;

/// How large files are uploaded, and where their upload ids are recorded.
#[derive(Debug, Clone)]
pub struct Uploads {
    /// Bytes per part but the last (S3: at least 5 MiB).
    pub part_size: usize,
    /// Parts in flight at once.
    pub concurrency: usize,
    /// The key prefix of the records (the repository's [`UPLOADS_DIR`]).
    records: String,
}

impl S3Store {
    /// This store (a repository) uploads files larger than `part_size` in
    /// parts, `concurrency` at a time, recording each upload under its
    /// [`UPLOADS_DIR`]; its scopes (the sets) inherit this.
    pub fn with_multipart(mut self, part_size: usize, concurrency: usize) -> S3Store {
        self.uploads = Some(Uploads {
            part_size: part_size.max(1),
            concurrency: concurrency.max(1),
            records: self.key(UPLOADS_DIR).to_string(),
        });
        self
    }

    /// Stores what `write` writes as `name`: in parts when it is larger than
    /// one part, else as one conditional create.
    pub(super) fn put_in_parts(
        &self,
        u: &Uploads,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<Placed, PlaceError> {
        let mut w = PartWriter {
            store: self,
            u,
            name,
            key: self.key(name),
            buf: Vec::with_capacity(u.part_size),
            pending: Vec::new(),
            upload: None,
            parts: Vec::new(),
        };
        let written = write(&mut w).and_then(|()| w.flush_buffered());
        match (written, w.upload.take()) {
            (Err(e), None) => Err(self.place_err(name, "write", e)),
            (Ok(()), None) => self.create(name, std::mem::take(&mut w.buf)),
            (Ok(()), Some(up)) => w.complete(&up).map(|()| Placed::Created).map_err(|e| {
                self.abort_and_forget(&w.key, &up);
                self.place_err(name, "complete the multipart upload of", e)
            }),
            (Err(e), Some(up)) => {
                self.abort_and_forget(&w.key, &up);
                Err(self.place_err(name, "upload", e))
            }
        }
    }

    /// Aborts `up` and removes its record; a failure is logged (the record
    /// stays, so the next `--expire` tries again).
    fn abort_and_forget(&self, key: &Key, up: &Upload) {
        let aborted = self.rt.block_on(self.client.abort_multipart(key, &up.id));
        match aborted {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => self.forget(up),
            Err(e) => log::warn!(
                "cannot abort the multipart upload of {key} (endpoint {}): {}; the next backup --expire tries again",
                self.endpoint,
                short(&e)
            ),
        }
    }

    fn forget(&self, up: &Upload) {
        if let Err(e) = self.rt.block_on(self.client.delete(&up.record)) {
            log::warn!(
                "cannot remove the upload record {} (endpoint {}): {}",
                up.record,
                self.endpoint,
                short(&e)
            );
        }
    }

    /// Starts an upload of `key` and records its id durably (before any part).
    fn start_upload(&self, u: &Uploads, key: &Key) -> io::Result<Upload> {
        let id = self
            .rt
            .block_on(self.client.create_multipart(key))
            .map_err(|e| self.error("cannot start a multipart upload of", self.relative(key.as_ref()), e))?;
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let record = Key::from(format!("{}/{stamp}-{}", u.records, std::process::id()));
        let body = format!("key: {key}\nupload_id: {id}\n");
        let stored = self
            .rt
            .block_on(self.client.put(&record, PutPayload::from(body.into_bytes())));
        if let Err(e) = stored {
            let _ = self.rt.block_on(self.client.abort_multipart(key, &id));
            return Err(self.error(
                "cannot record the multipart upload in",
                self.relative(record.as_ref()),
                e,
            ));
        }
        Ok(Upload { id, record })
    }

    /// Aborts every upload recorded in this repository (a killed backup's)
    /// and removes the records, in batches; how many. Call under the
    /// repository lock: a running backup's uploads are recorded there too.
    pub fn abort_recorded_uploads(&self) -> io::Result<usize> {
        let records = self.list_tree(UPLOADS_DIR)?;
        let mut done = Vec::new();
        for name in records {
            let text = String::from_utf8_lossy(&self.get_all(&name)?).into_owned();
            let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
            let (Some(key), Some(id)) = (field("key: "), field("upload_id: ")) else {
                log::warn!(
                    "{} is not an upload record (key:, upload_id:); left alone",
                    self.locate(&name)
                );
                continue;
            };
            match self
                .rt
                .block_on(self.client.abort_multipart(&Key::from(key), &id.to_string()))
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    log::info!(
                        "aborted the orphaned multipart upload of s3://{}/{key} (a killed backup's)",
                        self.url.bucket
                    );
                    done.push(name);
                }
                Err(e) => return Err(self.error("cannot abort the multipart upload recorded in", &name, e)),
            }
        }
        for r in self.delete_many(&done) {
            r?;
        }
        Ok(done.len())
    }
}

/// An upload in progress: its id and its record's key.
struct Upload {
    id: MultipartId,
    record: Key,
}

/// Collects what is written into parts; sends `concurrency` parts at a time.
struct PartWriter<'a> {
    store: &'a S3Store,
    u: &'a Uploads,
    name: &'a str,
    key: Key,
    buf: Vec<u8>,
    pending: Vec<Vec<u8>>,
    upload: Option<Upload>,
    parts: Vec<PartId>,
}

impl PartWriter<'_> {
    /// Sends the pending parts (starting the upload first if needed).
    fn send_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.upload.is_none() {
            self.upload = Some(self.store.start_upload(self.u, &self.key)?);
        }
        let id = &self.upload.as_ref().expect("started above").id;
        let first = self.parts.len();
        let client = &self.store.client;
        let key = &self.key;
        let sends = self
            .pending
            .drain(..)
            .enumerate()
            .map(|(i, p)| client.put_part(key, id, first + i, PutPayload::from(p)));
        let sent = self
            .store
            .rt
            .block_on(try_join_all(sends))
            .map_err(|e| self.store.error("cannot upload a part of", self.name, e))?;
        self.parts.extend(sent);
        Ok(())
    }

    /// After the last write: what is buffered becomes the last part, unless
    /// the whole file fits in one (then it is stored as one object).
    fn flush_buffered(&mut self) -> io::Result<()> {
        if self.upload.is_none() && self.pending.is_empty() {
            return Ok(());
        }
        if !self.buf.is_empty() {
            self.pending.push(std::mem::take(&mut self.buf));
        }
        self.send_pending()
    }

    fn complete(&mut self, up: &Upload) -> io::Result<()> {
        let parts = std::mem::take(&mut self.parts);
        self.store
            .rt
            .block_on(self.store.client.complete_multipart(&self.key, &up.id, parts))
            .map_err(|e| {
                self.store
                    .error("cannot complete the multipart upload of", self.name, e)
            })?;
        self.store.forget(up);
        Ok(())
    }
}

impl Write for PartWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.u.part_size - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.u.part_size {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(self.u.part_size));
            self.pending.push(full);
            if self.pending.len() >= self.u.concurrency {
                self.send_pending()?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
