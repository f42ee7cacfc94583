//! A backup set's manifest: what the set holds and where it starts and
//! stops. Text, one `key: value` line each, so a DBA can read it:
//!
//! ```text
//! pitrkit-backup-manifest: 1
//! id: 20261130T101500Z
//! type: full
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
//! wal: 000000010000000000000002.zst     (a stored WAL file of the set)
//! ```
//!
//! Paths come last on their line, so they may hold spaces; never a line break.

use std::fmt::Write as _;

use crate::compress::Codec;

pub const FORMAT_LINE: &str = "pitrkit-backup-manifest: 1";

/// One file of the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    /// Unix seconds.
    pub mtime: i64,
    pub crc: u32,
    /// Bytes in the repository.
    pub stored: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub id: String,
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

    /// Bytes of the stored data files.
    pub fn stored_size(&self) -> u64 {
        self.files.iter().map(|f| f.stored).sum()
    }

    pub fn render(&self) -> String {
        let mut s = format!("{FORMAT_LINE}\nid: {}\ntype: full\n", self.id);
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
            let _ = writeln!(s, "file: {} {} {:08x} {} {}", f.size, f.mtime, f.crc, f.stored, f.path);
        }
        for w in &self.wal {
            let _ = writeln!(s, "wal: {w}");
        }
        s
    }

    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, FORMAT_LINE)) => {}
            other => {
                return Err(format!(
                    "not a pitrkit backup manifest (first line {:?})",
                    other.map(|(_, l)| l).unwrap_or("")
                ))
            }
        }
        let mut m = Manifest {
            id: String::new(),
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
            let (key, value) = line.split_once(": ").ok_or_else(bad)?;
            m.set(key, value).ok_or_else(bad)?;
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
            "type" if v == "full" => {}
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
            "file" => self.files.push(parse_file(v)?),
            "wal" => self.wal.push(v.to_string()),
            _ => return None,
        }
        Some(())
    }
}

fn parse_file(v: &str) -> Option<FileEntry> {
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
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample() -> Manifest {
        Manifest {
            id: "20261130T101500Z".into(),
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
}
