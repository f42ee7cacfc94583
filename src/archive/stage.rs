//! The push path's checks and local writes: a segment's origin, the
//! archive mark of each directory, one compressed copy per codec, and the
//! durable no-clobber placement in each local archive.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::{sidecar, spool, sysid, ArchiveError, ArchiveReport};
use crate::compress::{self, Codec, CodecError};
use crate::config::s3::S3Location;
use crate::config::ArchiverConfig;
use crate::fsutil::{self, Bytes, PlaceError, Placed};
use crate::integrity::Sum;
use crate::logging::StepTimer;
use crate::storage::{Kind, LocalDir, S3Store, Storage};
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
            in_memory: Vec::new(),
        },
        sum: None,
    };
    for dir in &cfg.local_archivedirs {
        let placed = w.place_local(cfg, dir, system_id)?;
        report.local.push((dir.clone(), placed));
    }
    for loc in &cfg.archive_urls {
        let placed = w.place_s3(cfg, loc, system_id)?;
        report.local.push((PathBuf::from(loc.url.to_string()), placed));
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
    let codec = cfg.slave_codec;
    let queued_name = w.payloads.name(codec);
    let sum = match codec {
        Codec::None => Some(w.plain_sum(ldir)?),
        _ => None,
    };
    let mut size = 0;
    let made = w.payloads.copy_of(codec).map(Path::to_path_buf);
    let mut fill = w.payloads.compressor(codec, ldir, &mut size);
    let bytes = match &made {
        Some(p) => Bytes::File(p),
        None => Bytes::Made(&mut fill),
    };
    report.spooled = spool::spool(sh, cfg.lock_timeout, bytes, &queued_name, sum.as_ref(), targets)?;
    drop(fill);
    if let Some(p) = &made {
        size = fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    }
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
        self.place_checked(cfg, &archive, true)
    }

    /// The sidecar (plain form), then the file unless a form of it is
    /// there: in an archive whose mark was checked. `local`: later
    /// destinations may copy from what is written here.
    fn place_checked(
        &mut self,
        cfg: &ArchiverConfig,
        archive: &dyn Storage,
        local: bool,
    ) -> Result<Placed, ArchiveError> {
        let (file_name, dest) = (self.payloads.wal.to_string(), archive.location());
        let place_err = |source| ArchiveError::Place {
            wal: file_name.clone(),
            dest: dest.clone(),
            source,
        };
        let codec = cfg.local_codec;
        if codec == Codec::None {
            let s = self.plain_sum(Path::new(&dest))?;
            sidecar::place(archive, &file_name, &s).map_err(place_err)?;
        }
        let placed = match stored_copy(archive, self.payloads.raw, &file_name).map_err(place_err)? {
            Some(placed) => placed,
            None if local => self.payloads.put(archive, codec, Path::new(&dest)).map_err(place_err)?,
            None => self.payloads.put_remote(archive, codec).map_err(place_err)?,
        };
        log::debug!("{}: {placed:?} in {dest}", self.payloads.name(codec));
        Ok(placed)
    }
}

impl Writes<'_> {
    /// Stores the file in one `archive_urls` prefix: the same forms, checks
    /// and sidecar as a local archive, each object a conditional create.
    fn place_s3(
        &mut self,
        cfg: &ArchiverConfig,
        loc: &S3Location,
        system_id: Option<u64>,
    ) -> Result<Placed, ArchiveError> {
        let file_name = self.payloads.wal.to_string();
        let url = loc.url.to_string();
        let _t = StepTimer::step("object store", format!("storing {file_name} in {url}"));
        let unreachable = |why| ArchiveError::ObjectStore { url: url.clone(), why };
        let store = S3Store::open(loc).map_err(unreachable)?;
        // A failed request is not a damaged mark: say what failed where.
        check_system_id(cfg, &store, system_id, &file_name).map_err(|e| match e {
            ArchiveError::SystemIdFile { source, .. } if source.kind() != std::io::ErrorKind::InvalidData => {
                unreachable(source.to_string())
            }
            e => e,
        })?;
        self.place_checked(cfg, &store, false)
    }
}

/// What destinations receive: the WAL itself, or a compressed form made
/// once per codec, straight into the first destination that wants it while
/// the segment is read (no scratch copy); every later destination gets a
/// copy of that finished, durable file (`copy_file_range`, a reflink where
/// the filesystem can).
struct Payloads<'a> {
    raw: &'a Path,
    wal: &'a str,
    level: Option<i32>,
    /// The first durable copy of each compressed form made so far.
    made: Vec<(Codec, PathBuf)>,
    /// Compressed forms made for object storage, when no local copy was.
    in_memory: Vec<(Codec, Vec<u8>)>,
}

impl<'a> Payloads<'a> {
    /// The name `codec`'s form gets (the codec's suffix added).
    fn name(&self, codec: Codec) -> String {
        format!("{}{}", self.wal, codec.suffix())
    }

    /// A file holding `codec`'s form already: the segment itself, or the
    /// copy made for an earlier destination.
    fn copy_of(&self, codec: Codec) -> Option<&Path> {
        if codec == Codec::None {
            return Some(self.raw);
        }
        self.made.iter().find(|(c, _)| *c == codec).map(|(_, p)| p.as_path())
    }

    /// Places `codec`'s form in `archive` (`dir` names it in messages).
    fn put(&mut self, archive: &dyn Storage, codec: Codec, dir: &Path) -> Result<Placed, PlaceError> {
        let name = self.name(codec);
        if let Some(src) = self.copy_of(codec) {
            return archive.put_if_absent(src, &name);
        }
        let mut size = 0;
        let placed = archive.put_made_if_absent(&name, &mut self.compressor(codec, dir, &mut size))?;
        // Identical bytes even if another writer linked the name first.
        self.made.push((codec, PathBuf::from(archive.locate(&name))));
        Ok(placed)
    }

    /// Places `codec`'s form in an object store: from a file that holds it
    /// already, else compressed once into memory for every such store.
    fn put_remote(&mut self, archive: &dyn Storage, codec: Codec) -> Result<Placed, PlaceError> {
        let name = self.name(codec);
        if let Some(src) = self.copy_of(codec) {
            return archive.put_if_absent(src, &name);
        }
        if let Some((_, data)) = self.in_memory.iter().find(|(c, _)| *c == codec) {
            return archive.put_bytes_if_absent(&name, data);
        }
        let (mut data, mut size) = (Vec::new(), 0);
        let dest = PathBuf::from(archive.location());
        (self.compressor(codec, &dest, &mut size))(&mut data)?;
        let placed = archive.put_bytes_if_absent(&name, &data);
        self.in_memory.push((codec, data));
        placed
    }

    /// Writes `codec`'s form of the segment into a placement's temporary
    /// file, reading the segment once; `size` gets the bytes written.
    fn compressor<'s>(
        &self,
        codec: Codec,
        dest: &'s Path,
        size: &'s mut u64,
    ) -> impl FnMut(&mut dyn std::io::Write) -> Result<(), PlaceError> + 's
    where
        'a: 's,
    {
        let (raw, wal, level) = (self.raw, self.wal, self.level);
        move |out| {
            let _t = StepTimer::step("compression", format!("{codec} compression of {wal}"));
            let io = |path: &Path, op| {
                let path = path.to_path_buf();
                move |source| PlaceError::Io { path, op, source }
            };
            let input = File::open(raw).map_err(io(raw, "open"))?;
            let counts = codec.compress(input, out, level).map_err(|e| match e {
                CodecError::Read(e) => io(raw, "read")(e),
                CodecError::Write(e) => io(dest, "write compressed copy")(e),
                e => io(raw, "compress")(std::io::Error::other(e.to_string())),
            })?;
            *size = counts.written;
            Ok(())
        }
    }
}

/// The WAL already stored in `archive` in any form, judged by content
/// (decompressed): a change of codec or of compressor build never turns a
/// re-archive into a conflict, nor into a second copy under another suffix.
/// `None`: no form is there, place one.
fn stored_copy(archive: &dyn Storage, raw: &Path, wal: &str) -> Result<Option<Placed>, PlaceError> {
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
            return archive.confirm(&stored).map(Some);
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
    Ok(None)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigFile;
    use crate::config::IniFile;
    use crate::testsupport::wal;

    const SYSID: u64 = 7_300_000_000_000_000_013;
    const NAME: &str = "000000010000000000000003";

    /// Bytes this thread passed to write(2) and copy_file_range(2) so far
    /// (the kernel's per-task I/O accounting; other test threads do not count).
    fn written_by_this_thread() -> u64 {
        let io = fs::read_to_string("/proc/thread-self/io").unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("wchar:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// A segment of ours with enough noise to compress to a sizeable file.
    fn segment(dir: &Path) -> PathBuf {
        let mut data = wal::segment(NAME, SYSID);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for b in data[64..].iter_mut().step_by(3) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let p = dir.join(NAME);
        fs::write(&p, data).unwrap();
        p
    }

    /// `lines` with every named directory made and marked as this system's.
    fn setup(dir: &Path, lines: &str, dirs: &[&str]) -> ArchiverConfig {
        for d in dirs {
            fs::create_dir_all(dir.join(d)).unwrap();
            if !d.contains('/') {
                sysid::write(&dir.join(d), Some(SYSID)).unwrap();
            }
        }
        let text = lines.replace("$D", &dir.display().to_string());
        ArchiverConfig::from_ini(&IniFile::parse(&dir.join("a.ini"), &text).unwrap()).unwrap()
    }

    /// Calls [`stage`] and returns the bytes it wrote.
    fn stage_counting(cfg: &ArchiverConfig, src: &Path, targets: &[&String]) -> u64 {
        let before = written_by_this_thread();
        let mut report = ArchiveReport::default();
        stage(
            cfg,
            Some(SYSID),
            src,
            &WalName::parse(NAME).unwrap(),
            targets,
            &mut report,
        )
        .unwrap();
        written_by_this_thread() - before
    }

    fn no_temp_files(dirs: &[PathBuf]) {
        for d in dirs {
            for e in fs::read_dir(d).unwrap() {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                assert!(!fsutil::is_temp_name(&n), "{n} left in {}", d.display());
            }
        }
    }

    #[test]
    fn each_compressed_form_is_written_once_then_copied() {
        let d = tempfile::tempdir().unwrap();
        let src = segment(d.path());
        let cfg = setup(
            d.path(),
            "local_archivedirs: $D/a, $D/b\ncompression: zstd\nslaves: s1\nl_archivedir: $D/q\n\
             r_archivedir: /r\nslave_compression: zstd\n",
            &["a", "b", "q", "q/s1"],
        );
        let s1 = "s1".to_string();
        let written = stage_counting(&cfg, &src, &[&s1]);
        let zst = format!("{NAME}.zst");
        let first = fs::read(d.path().join("a").join(&zst)).unwrap();
        let size = first.len() as u64;
        assert!(size > 100_000, "{size}: the test needs a sizeable compressed form");
        // Made in a, copied into b and into the spool (then linked into the queue):
        // a scratch copy first would make it four.
        assert!(
            (3 * size..3 * size + 4096).contains(&written),
            "{written} bytes written for three copies of {size}"
        );
        for copy in [d.path().join("b").join(&zst), d.path().join("q/s1").join(&zst)] {
            assert_eq!(fs::read(&copy).unwrap(), first, "{}", copy.display());
        }
        let mut plain = Vec::new();
        Codec::Zstd.decompress(&first[..], &mut plain).unwrap();
        assert!(plain == fs::read(&src).unwrap());
        no_temp_files(&["a", "b", "q", "q/.spool"].map(|x| d.path().join(x)));
        // Archiving it again finds it in both archives, compressing it once
        // more only for the spool (which links it into the queue, where it is).
        assert!(stage_counting(&cfg, &src, &[&s1]) < size + 4096);
    }

    #[test]
    fn a_slave_only_codec_is_made_in_the_spool_itself() {
        let d = tempfile::tempdir().unwrap();
        let src = segment(d.path());
        let cfg = setup(
            d.path(),
            "slaves: s1, s2\nl_archivedir: $D/q\nr_archivedir: /r\nslave_compression: lz4\n",
            &["q", "q/s1", "q/s2"],
        );
        let (s1, s2) = ("s1".to_string(), "s2".to_string());
        let written = stage_counting(&cfg, &src, &[&s1, &s2]);
        let lz4 = format!("{NAME}.lz4");
        let queued = fs::read(d.path().join("q/s1").join(&lz4)).unwrap();
        let size = queued.len() as u64;
        assert!(size > 100_000, "{size}");
        assert!(written < size + 4096, "{written} bytes written for one copy of {size}");
        assert_eq!(fs::read(d.path().join("q/s2").join(&lz4)).unwrap(), queued);
        let mut plain = Vec::new();
        Codec::Lz4.decompress(&queued[..], &mut plain).unwrap();
        assert!(plain == fs::read(&src).unwrap());
        no_temp_files(&["q", "q/.spool"].map(|x| d.path().join(x)));
    }
}
