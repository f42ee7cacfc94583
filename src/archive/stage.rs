//! The push path's checks and local writes: a segment's origin, the
//! archive mark of each directory, one compressed copy per codec, and the
//! durable no-clobber placement in each local archive.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::{sidecar, spool, sysid, ArchiveError, ArchiveReport};
use crate::compress::{self, Codec};
use crate::config::ArchiverConfig;
use crate::fsutil::{self, PlaceError, Placed};
use crate::integrity::Sum;
use crate::logging::StepTimer;
use crate::storage::{Kind, LocalDir, Storage};
use crate::wal::{self, WalKind, WalName};

/// Checks one file and makes it durable at every local destination and in
/// the queues of `targets`. Returns the name it has in the queues and its size.
pub(super) fn stage(
    cfg: &ArchiverConfig,
    cluster: Option<u64>,
    src: &Path,
    name: &WalName,
    targets: &[&String],
    report: &mut ArchiveReport,
) -> Result<(String, u64), ArchiveError> {
    let file_name = name.as_str().to_string();
    let system_id = check_origin(cfg, cluster, src, name)?;
    let mut w = Writes {
        payloads: Payloads {
            raw: src,
            wal: &file_name,
            level: cfg.compression_level,
            made: Vec::new(),
        },
        sum: None,
    };
    for dir in &cfg.local_archivedirs {
        let placed = w.place_local(cfg, dir, system_id)?;
        report.local.push((dir.clone(), placed));
    }
    let Some(sh) = &cfg.shipping else {
        return Ok((file_name, 0));
    };
    let ldir = sh.queue_root.as_path();
    if !ldir.is_dir() {
        return Err(ArchiveError::NoDirectory {
            dir: ldir.to_path_buf(),
            why: "l_archivedir, the local queue root",
        });
    }
    check_system_id(cfg, &LocalDir::new(ldir), system_id, &file_name)?;
    let (payload, queued_name) = w.payloads.get(cfg.slave_codec, ldir)?;
    let sum = match cfg.slave_codec {
        Codec::None => Some(w.plain_sum(ldir)?),
        _ => None,
    };
    report.spooled = spool::spool(sh, cfg.lock_timeout, &payload, &queued_name, sum.as_ref(), targets)?;
    let size = fs::metadata(&payload).map(|m| m.len()).unwrap_or(0);
    Ok((queued_name, size))
}

/// A segment's header is checked, and its system must be this cluster's.
/// Returns the segment's system identifier (none for other WAL files).
fn check_origin(
    cfg: &ArchiverConfig,
    cluster: Option<u64>,
    src: &Path,
    name: &WalName,
) -> Result<Option<u64>, ArchiveError> {
    if name.kind == WalKind::History {
        // Small: read whole. Restore refuses a damaged one; refuse it here
        // first, before it is in the archive.
        let data = fs::read(src).map_err(|e| ArchiveError::BadHistory {
            path: src.to_path_buf(),
            why: format!("cannot read it ({e})"),
        })?;
        crate::walcheck::check_history(name, &data).map_err(|why| ArchiveError::BadHistory {
            path: src.to_path_buf(),
            why,
        })?;
        return Ok(None);
    }
    if !name.is_segment_data() {
        return Ok(None);
    }
    let segment = {
        let _t = StepTimer::step("checking the header", format!("checking the header of {name}"));
        wal::check_segment_file(src, name)?.system_id
    };
    match cluster {
        Some(cluster) if segment != cluster => Err(ArchiveError::ForeignSegment {
            wal: name.to_string(),
            segment,
            cluster,
            pgdata: cfg.pgdata.clone().unwrap_or_default(),
            config: cfg.source.display().to_string(),
        }),
        _ => Ok(Some(segment)),
    }
}

/// One file's writes: its payloads, and the checksum every plain copy's
/// `.sum` sidecar records, taken once.
struct Writes<'a> {
    payloads: Payloads<'a>,
    sum: Option<Sum>,
}

impl Writes<'_> {
    fn plain_sum(&mut self, dest: &Path) -> Result<Sum, ArchiveError> {
        if let Some(s) = self.sum {
            return Ok(s);
        }
        let src = self.payloads.raw;
        let s = Sum::of_file(src).map_err(|source| ArchiveError::Place {
            wal: self.payloads.wal.to_string(),
            dest: dest.display().to_string(),
            source: PlaceError::Io {
                path: src.to_path_buf(),
                op: "checksum",
                source,
            },
        })?;
        self.sum = Some(s);
        Ok(s)
    }

    /// Makes the file durable in one local archive directory.
    fn place_local(
        &mut self,
        cfg: &ArchiverConfig,
        dir: &Path,
        system_id: Option<u64>,
    ) -> Result<Placed, ArchiveError> {
        let file_name = self.payloads.wal.to_string();
        let _t = StepTimer::step(
            "durable copy",
            format!("durable copy of {file_name} to {}", dir.display()),
        );
        if !dir.is_dir() {
            return Err(ArchiveError::NoDirectory {
                dir: dir.to_path_buf(),
                why: "a local_archivedirs entry; is the NFS share mounted?",
            });
        }
        let archive = LocalDir::new(dir);
        check_system_id(cfg, &archive, system_id, &file_name)?;
        let place_err = |source| ArchiveError::Place {
            wal: file_name.clone(),
            dest: dir.display().to_string(),
            source,
        };
        let (payload, payload_name) = self.payloads.get(cfg.local_codec, dir)?;
        if cfg.local_codec == Codec::None {
            let s = self.plain_sum(dir)?;
            sidecar::place(&archive, &file_name, &s).map_err(place_err)?;
        }
        let placed =
            place_payload(&archive, self.payloads.raw, &file_name, &payload, &payload_name).map_err(place_err)?;
        log::debug!("{payload_name}: {placed:?} in {}", dir.display());
        Ok(placed)
    }
}

/// What destinations receive: the WAL itself, or a compressed copy made once
/// per codec and shared by every destination that wants that codec.
struct Payloads<'a> {
    raw: &'a Path,
    wal: &'a str,
    level: Option<i32>,
    made: Vec<(Codec, tempfile::TempPath, nix::fcntl::Flock<fs::File>)>,
}

impl Payloads<'_> {
    /// The file to place and the name it gets (the codec's suffix added).
    /// `scratch` is a directory on the destination's filesystem.
    fn get(&mut self, codec: Codec, scratch: &Path) -> Result<(PathBuf, String), ArchiveError> {
        let name = format!("{}{}", self.wal, codec.suffix());
        if codec == Codec::None {
            return Ok((self.raw.to_path_buf(), name));
        }
        if let Some((_, p, _)) = self.made.iter().find(|(c, _, _)| *c == codec) {
            return Ok((p.to_path_buf(), name));
        }
        let _t = StepTimer::step("compression", format!("{codec} compression of {}", self.wal));
        let io = |e: std::io::Error| ArchiveError::Place {
            wal: self.wal.to_string(),
            dest: scratch.display().to_string(),
            source: PlaceError::Io {
                path: scratch.to_path_buf(),
                op: "compress",
                source: e,
            },
        };
        let tmp = tempfile::Builder::new()
            .prefix(fsutil::COMPRESS_TEMP_PREFIX)
            .tempfile_in(scratch)
            .map_err(io)?;
        // Held until the copy is dropped: a reclaimer must not take it for a dead writer's.
        let lock = tmp.as_file().try_clone().map_err(io).and_then(|f| {
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| io(e.into()))
        })?;
        let input = fs::File::open(self.raw).map_err(io)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
        codec
            .compress(input, &mut out, self.level)
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        std::io::Write::flush(&mut out).map_err(io)?;
        drop(out);
        let path = tmp.into_temp_path();
        let p = path.to_path_buf();
        self.made.push((codec, path, lock));
        Ok((p, name))
    }
}

/// Places a payload in `archive` unless the WAL is already there in any
/// form, judged by content (decompressed): a change of codec or of
/// compressor build never turns a re-archive into a conflict, nor into a
/// second copy under another suffix.
fn place_payload(
    archive: &dyn Storage,
    raw: &Path,
    wal: &str,
    payload: &Path,
    payload_name: &str,
) -> Result<Placed, PlaceError> {
    for codec in Codec::ALL {
        let stored = format!("{wal}{}", codec.suffix());
        let path = PathBuf::from(archive.locate(&stored));
        let io = |op| {
            let path = path.clone();
            move |source| PlaceError::Io { path, op, source }
        };
        // A symlink (even to this very segment) or other non-regular file is
        // a conflict, never followed nor taken for a copy.
        let entry = match archive.stat(&stored).map_err(io("stat"))? {
            None => continue,
            Some(e) => e,
        };
        let kind = match entry.kind {
            Kind::File => None,
            Kind::LinkToFile | Kind::DanglingLink => Some("symbolic link"),
            Kind::Other(k) => Some(k),
        };
        if let Some(kind) = kind {
            return Err(PlaceError::NotRegular { path, kind });
        }
        let existing = || archive.get(&stored).map_err(io("open existing file"));
        let ours = fs::metadata(raw).map(|m| m.len()).unwrap_or(0);
        let compare = io("compare with existing file");
        let same = if codec == Codec::None {
            ours == entry.size
                && fsutil::same_bytes(File::open(raw).map_err(io("open"))?, existing()?).map_err(compare)?
        } else {
            compress::same_content_of(existing()?, codec, raw).map_err(compare)?
        };
        if same {
            return archive.confirm(&stored);
        }
        // Sizes of like with like: the existing copy's content, decompressed.
        let theirs = if codec == Codec::None {
            Some(entry.size)
        } else {
            codec.decompress(existing()?, std::io::sink()).ok().map(|c| c.written)
        };
        return Err(PlaceError::Conflict {
            path,
            existing: theirs,
            ours,
            compressed: codec != Codec::None,
        });
    }
    archive.put_if_absent(payload, payload_name)
}

/// Refuses a directory `-I` never prepared (an unmounted share looks just
/// like an empty directory), and mixing two database systems' WAL in one
/// directory; claims an unclaimed directory for our system, durably.
pub(super) fn check_system_id(
    cfg: &ArchiverConfig,
    archive: &dyn Storage,
    ours: Option<u64>,
    wal: &str,
) -> Result<(), ArchiveError> {
    let dir = &PathBuf::from(archive.location());
    let config = cfg.source.display().to_string();
    let file_err = |source| ArchiveError::SystemIdFile {
        dir: dir.to_path_buf(),
        config: config.clone(),
        source,
    };
    let mismatch = |archive| ArchiveError::SystemIdMismatch {
        dir: dir.to_path_buf(),
        archive,
        ours: ours.unwrap_or(0),
        wal: wal.to_string(),
    };
    match sysid::read_from(archive).map_err(file_err)? {
        sysid::Recorded::Missing => Err(ArchiveError::NotInitialized {
            dir: dir.to_path_buf(),
            config: config.clone(),
        }),
        sysid::Recorded::System(archive) if ours.is_some_and(|o| o != archive) => Err(mismatch(archive)),
        sysid::Recorded::System(_) => Ok(()),
        sysid::Recorded::Unclaimed => {
            let Some(o) = ours else { return Ok(()) };
            sysid::write_to(archive, Some(o)).map_err(file_err)?;
            log::info!("{} claimed for database system {o}", dir.display());
            // Another process may have claimed it at the same moment.
            match sysid::read_from(archive).map_err(file_err)? {
                sysid::Recorded::System(a) if a != o => Err(mismatch(a)),
                _ => Ok(()),
            }
        }
    }
}
