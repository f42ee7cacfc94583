//! A backup set's manifest: what the set holds and where it starts and
//! stops. Text, one `key: value` line each, so a DBA can read it:
//!
//! ```text
//! pitrkit-backup-manifest: 2
//! id: 20261130T101500Z
//! type: incremental                     (or full)
//! depends_on: 20261129T101500Z          (incremental: the sets its references name)
//! system_id: 7442296127650218392
//! pg_version: 170006
//! timeline: 1
//! segment_size: 16777216
//! start_lsn: 0/2000028
//! stop_lsn: 0/2000138
//! start_time: 1764497700123456          (unix microseconds)
//! stop_time: 1764497703654321
//! compression: zstd
//! tablespace: 16385 /srv/ts1            (oid, location)
//! dir: pg_wal                           (a directory, possibly empty)
//! file: 8192 1764497600 1a2b3c4d 2011 base/1/1259
//!                                       (size, mtime, CRC-32C, stored size, path)
//! ref: 20261129T101500Z 8192 1764411200 1a2b3c4d 2011 base/1/1249
//!                                       (a file stored in that set, not this one:
//!                                        holder, then as `file:`, copied from it)
//! wal: 000000010000000000000002.zst     (a stored WAL file of the set)
//! ```
//!
//! Paths come last on their line, so they may hold spaces; never a line break.
//! A reference always names the set that stores the bytes (never one that
//! references them in turn), so restoring follows one hop, never a chain.
//!
//! Versions: 1 (before incremental backups: `type: full`, no `ref:` nor
//! `depends_on:`) is still read; 2 is written. An older pitrkit refuses 2
//! rather than misreading a reference as a stored file.

use std::fmt::Write as _;

use crate::compress::Codec;
use crate::config::options::Choice;
use crate::config::BackupType;

/// The first line, before the version.
const FORMAT_PREFIX: &str = "pitrkit-backup-manifest: ";
/// The version written; [`READABLE`] lists those read.
pub const FORMAT_VERSION: u32 = 2;
const READABLE: &[u32] = &[1, 2];

/// One file of the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    /// Unix seconds.
    pub mtime: i64,
    pub crc: u32,
    /// Bytes in the repository (in the holder's, for a reference).
    pub stored: u64,
    /// `Some(ID)`: the file is not stored in this set but in set ID.
    pub holder: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub id: String,
    pub kind: BackupType,
    pub system_id: u64,
    pub pg_version: u32,
    pub timeline: u32,
    pub segment_size: u64,
    pub start_lsn: u64,
    pub stop_lsn: u64,
    /// Unix microseconds.
    pub start_time: i64,
    pub stop_time: i64,
    pub compression: Codec,
    pub tablespaces: Vec<(u32, String)>,
    pub dirs: Vec<String>,
    pub files: Vec<FileEntry>,
    pub wal: Vec<String>,
}

/// "0/2000028" → 0x2000028.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

impl Manifest {
    /// The name of the set's stored file for data file `path`.
    pub fn stored_name(&self, path: &str) -> String {
        format!(
            "{}/{path}{}",
            crate::layout::backup::DATA_DIR,
            self.compression.suffix()
        )
    }

    /// Bytes of the original files.
    pub fn original_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Bytes of the data files this set stores itself (not its references).
    pub fn stored_size(&self) -> u64 {
        self.files.iter().filter(|f| f.holder.is_none()).map(|f| f.stored).sum()
    }

    /// The sets whose stored files this one references, sorted.
    pub fn depends_on(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.files.iter().filter_map(|f| f.holder.clone()).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    pub fn render(&self) -> String {
        let mut s = format!(
            "{FORMAT_PREFIX}{FORMAT_VERSION}\nid: {}\ntype: {}\n",
            self.id, self.kind
        );
        if self.kind == BackupType::Incremental {
            let _ = writeln!(s, "depends_on: {}", self.depends_on().join(" "));
        }
        let _ = write!(
            s,
            "system_id: {}\npg_version: {}\ntimeline: {}\nsegment_size: {}\nstart_lsn: {}\nstop_lsn: {}\n\
             start_time: {}\nstop_time: {}\ncompression: {}\n",
            self.system_id,
            self.pg_version,
            self.timeline,
            self.segment_size,
            format_lsn(self.start_lsn),
            format_lsn(self.stop_lsn),
            self.start_time,
            self.stop_time,
            self.compression.name()
        );
        for (oid, path) in &self.tablespaces {
            let _ = writeln!(s, "tablespace: {oid} {path}");
        }
        for d in &self.dirs {
            let _ = writeln!(s, "dir: {d}");
        }
        for f in &self.files {
            if let Some(h) = &f.holder {
                let _ = write!(s, "ref: {h} ");
            } else {
                s.push_str("file: ");
            }
            let _ = writeln!(s, "{} {} {:08x} {} {}", f.size, f.mtime, f.crc, f.stored, f.path);
        }
        for w in &self.wal {
            let _ = writeln!(s, "wal: {w}");
        }
        s
    }

    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut lines = text.lines().enumerate();
        let mut depends_on = None;
        let version = lines
            .next()
            .and_then(|(_, l)| l.strip_prefix(FORMAT_PREFIX))
            .map(|v| v.parse::<u32>().ok().filter(|v| READABLE.contains(v)));
        match version {
            Some(Some(_)) => {}
            Some(None) => {
                return Err(format!(
                    "a pitrkit backup manifest of a version this pitrkit cannot read (it reads {READABLE:?}): \
                     use the pitrkit that wrote it, or a newer one"
                ))
            }
            None => {
                return Err(format!(
                    "not a pitrkit backup manifest (first line {:?})",
                    text.lines().next().unwrap_or("")
                ))
            }
        }
        let mut m = Manifest {
            id: String::new(),
            kind: BackupType::Full,
            system_id: 0,
            pg_version: 0,
            timeline: 0,
            segment_size: 0,
            start_lsn: 0,
            stop_lsn: 0,
            start_time: 0,
            stop_time: 0,
            compression: Codec::None,
            tablespaces: Vec::new(),
            dirs: Vec::new(),
            files: Vec::new(),
            wal: Vec::new(),
        };
        for (i, line) in lines {
            let bad = || format!("line {}: cannot read {line:?}", i + 1);
            let (key, value) = line.split_once(": ").or_else(|| line.split_once(':')).ok_or_else(bad)?;
            if key == "depends_on" {
                depends_on = Some(value.split_whitespace().map(String::from).collect::<Vec<_>>());
                continue;
            }
            m.set(key, value).ok_or_else(bad)?;
        }
        // Written from the references: a mismatch is a damaged manifest.
        if depends_on.unwrap_or_default() != m.depends_on() {
            return Err("damaged manifest: its depends_on line does not match its ref lines".into());
        }
        if m.id.is_empty() || m.segment_size == 0 || m.stop_lsn == 0 {
            return Err("incomplete manifest: no id, segment size or stop LSN".into());
        }
        Ok(m)
    }

    /// Applies one line; `None` if it does not parse.
    fn set(&mut self, key: &str, v: &str) -> Option<()> {
        match key {
            "id" => self.id = v.to_string(),
            "type" => self.kind = BackupType::all().into_iter().find(|t| t.name() == v)?,
            "system_id" => self.system_id = v.parse().ok()?,
            "pg_version" => self.pg_version = v.parse().ok()?,
            "timeline" => self.timeline = v.parse().ok()?,
            "segment_size" => self.segment_size = v.parse().ok()?,
            "start_lsn" => self.start_lsn = parse_lsn(v)?,
            "stop_lsn" => self.stop_lsn = parse_lsn(v)?,
            "start_time" => self.start_time = v.parse().ok()?,
            "stop_time" => self.stop_time = v.parse().ok()?,
            "compression" => self.compression = Codec::parse(v).ok()?,
            "tablespace" => {
                let (oid, path) = v.split_once(' ')?;
                self.tablespaces.push((oid.parse().ok()?, path.to_string()));
            }
            "dir" => self.dirs.push(v.to_string()),
            "file" => self.files.push(parse_file(v, None)?),
            "ref" => {
                let (holder, rest) = v.split_once(' ')?;
                if !super::repo::is_id(holder) {
                    return None;
                }
                self.files.push(parse_file(rest, Some(holder.to_string()))?);
            }
            "wal" => self.wal.push(v.to_string()),
            _ => return None,
        }
        Some(())
    }
}

fn parse_file(v: &str, holder: Option<String>) -> Option<FileEntry> {
    let mut w = v.splitn(5, ' ');
    let size = w.next()?.parse().ok()?;
    let mtime = w.next()?.parse().ok()?;
    let crc = w.next()?;
    if crc.len() != 8 {
        return None;
    }
    let crc = u32::from_str_radix(crc, 16).ok()?;
    let stored = w.next()?.parse().ok()?;
    let path = w.next()?.to_string();
    Some(FileEntry {
        path,
        size,
        mtime,
        crc,
        stored,
        holder,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample() -> Manifest {
        Manifest {
            id: "20261130T101500Z".into(),
            kind: BackupType::Full,
            system_id: 7442296127650218392,
            pg_version: 170006,
            timeline: 1,
            segment_size: 16 << 20,
            start_lsn: 0x2000028,
            stop_lsn: 0x1_0200_0138,
            start_time: 1_764_497_700_123_456,
            stop_time: 1_764_497_703_654_321,
            compression: Codec::Zstd,
            tablespaces: vec![(16385, "/srv/ts 1".into())],
            dirs: vec!["pg_wal".into()],
            files: vec![FileEntry {
                path: "base/1/my file".into(),
                size: 8192,
                mtime: 1_764_497_600,
                crc: 0x1a2b3c4d,
                stored: 2011,
                holder: None,
            }],
            wal: vec!["000000010000000000000002.zst".into()],
        }
    }

    #[test]
    fn renders_and_parses_back() {
        let m = sample();
        let text = m.render();
        assert!(text.contains("stop_lsn: 1/2000138\n"), "{text}");
        assert!(
            text.contains("file: 8192 1764497600 1a2b3c4d 2011 base/1/my file\n"),
            "{text}"
        );
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        assert_eq!(m.stored_name("base/1/1259"), "data/base/1/1259.zst");
        assert!(Manifest::parse("something else\n").is_err());
        assert!(Manifest::parse(&format!("{text}file: x\n"))
            .unwrap_err()
            .contains("cannot read"));
        assert_eq!(parse_lsn("0/2000028"), Some(0x2000028));
    }

    #[test]
    fn incremental_references_and_version_1() {
        let mut m = sample();
        m.kind = BackupType::Incremental;
        m.files.push(FileEntry {
            path: "base/1/1249".into(),
            holder: Some("20261129T101500Z".into()),
            ..m.files[0].clone()
        });
        let text = m.render();
        assert!(
            text.starts_with("pitrkit-backup-manifest: 2\nid: 20261130T101500Z\ntype: incremental\n"),
            "{text}"
        );
        assert!(text.contains("depends_on: 20261129T101500Z\n"), "{text}");
        assert!(
            text.contains("ref: 20261129T101500Z 8192 1764497600 1a2b3c4d 2011 base/1/1249\n"),
            "{text}"
        );
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        assert_eq!(m.depends_on(), ["20261129T101500Z"]);
        // Only what the set stores itself counts.
        assert_eq!(m.stored_size(), 2011);
        assert_eq!(m.original_size(), 2 * 8192);
        let tampered = text.replace("depends_on: 20261129T101500Z", "depends_on: ");
        assert!(Manifest::parse(&tampered).unwrap_err().contains("depends_on"));
        // A set written before incremental backups (version 1) still reads.
        let v1 = sample()
            .render()
            .replace("pitrkit-backup-manifest: 2", "pitrkit-backup-manifest: 1");
        assert_eq!(Manifest::parse(&v1).unwrap(), sample());
        assert!(Manifest::parse(&v1.replace("manifest: 1", "manifest: 3"))
            .unwrap_err()
            .contains("cannot read"));
    }
}
