//! WAL file names and arithmetic.
//!
//! A segment is named TTTTTTTTXXXXXXXXYYYYYYYY: timeline, "log" id and segment
//! within the log, in hex. There are `0x1_0000_0000 / segment_size` segments
//! per log id, so the segment size (1 MiB..1 GiB since PostgreSQL 11) must be
//! known to do arithmetic; it is read from each segment's long page header
//! rather than assumed.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalKind {
    /// A complete segment.
    Segment,
    /// The last, incomplete segment of an old timeline (written at promotion).
    Partial,
    /// A timeline history file.
    History,
    /// A backup history file (`<segment>.<offset>.backup`).
    Backup,
}

/// A parsed WAL-related file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WalName {
    pub kind: WalKind,
    pub timeline: u32,
    /// Log id and segment-in-log (zero for history files).
    pub log: u32,
    pub seg: u32,
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{name}' is not a WAL file name: {why} (expected a 24-hex-digit segment name, optionally ending in .partial, a <segment>.<offset>.backup file or a <timeline>.history file)")]
pub struct BadWalName {
    pub name: String,
    pub why: &'static str,
}

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(s, 16).ok())
        .flatten()
}

impl WalName {
    pub fn parse(name: &str) -> Result<WalName, BadWalName> {
        let bad = |why| BadWalName {
            name: name.to_string(),
            why,
        };
        if name.contains('/') {
            return Err(bad("it contains '/'"));
        }
        if let Some(tli) = name.strip_suffix(".history") {
            let timeline = hex8(tli).ok_or_else(|| bad("a history file is 8 hex digits + .history"))?;
            return Ok(WalName {
                kind: WalKind::History,
                timeline,
                log: 0,
                seg: 0,
                name: name.to_string(),
            });
        }
        let (base, kind) = if let Some(b) = name.strip_suffix(".partial") {
            (b, WalKind::Partial)
        } else if let Some(b) = name.strip_suffix(".backup") {
            let (seg, offset) = b
                .split_once('.')
                .ok_or_else(|| bad("a backup file is <segment>.<offset>.backup"))?;
            hex8(offset).ok_or_else(|| bad("the backup offset is not 8 hex digits"))?;
            (seg, WalKind::Backup)
        } else {
            (name, WalKind::Segment)
        };
        if base.len() != 24 {
            return Err(bad("the segment part is not 24 characters"));
        }
        let (t, l, s) = (hex8(&base[..8]), hex8(&base[8..16]), hex8(&base[16..]));
        match (t, l, s) {
            (Some(timeline), Some(log), Some(seg)) => {
                if timeline == 0 {
                    return Err(bad("timeline 0 does not exist"));
                }
                Ok(WalName {
                    kind,
                    timeline,
                    log,
                    seg,
                    name: name.to_string(),
                })
            }
            _ => Err(bad("it is not hexadecimal")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Absolute segment number, given the segment size.
    pub fn segno(&self, seg_size: u64) -> u64 {
        self.log as u64 * segments_per_log(seg_size) + self.seg as u64
    }

    /// Does this kind carry a WAL segment's bytes (and so a page header)?
    pub fn is_segment_data(&self) -> bool {
        matches!(self.kind, WalKind::Segment | WalKind::Partial)
    }
}

impl fmt::Display for WalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

pub fn segments_per_log(seg_size: u64) -> u64 {
    0x1_0000_0000 / seg_size
}

/// The name of segment `segno` on `timeline`.
pub fn segment_name(timeline: u32, segno: u64, seg_size: u64) -> String {
    let per = segments_per_log(seg_size);
    format!("{:08X}{:08X}{:08X}", timeline, segno / per, segno % per)
}

/// Is `size` a segment size PostgreSQL allows (a power of two, 1 MiB..1 GiB)?
pub fn valid_segment_size(size: u64) -> bool {
    size.is_power_of_two() && (1 << 20..=1 << 30).contains(&size)
}

/// Facts read from a segment's first (long) page header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub timeline: u32,
    pub page_addr: u64,
    pub system_id: u64,
    pub seg_size: u64,
    pub block_size: u32,
}

const XLP_LONG_HEADER: u16 = 0x0002;

/// Parses the long page header at the start of every segment
/// (XLogLongPageHeaderData: stable layout since PostgreSQL 9.x).
pub fn parse_header(buf: &[u8]) -> Option<SegmentHeader> {
    if buf.len() < 40 {
        return None;
    }
    let u16le = |o: usize| u16::from_le_bytes([buf[o], buf[o + 1]]);
    let u32le = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().unwrap());
    let u64le = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().unwrap());
    let info = u16le(2);
    if info & XLP_LONG_HEADER == 0 {
        return None;
    }
    Some(SegmentHeader {
        timeline: u32le(4),
        page_addr: u64le(8),
        system_id: u64le(24),
        seg_size: u32le(32) as u64,
        block_size: u32le(36),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SegmentCheckError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {problem}; refusing to archive it (is it really a WAL segment of this cluster?)")]
    Invalid { path: String, problem: SegmentProblem },
}

/// What is wrong with a file that should be the segment its name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentProblem {
    TooShort {
        len: u64,
    },
    NoHeader,
    ImpossibleSize {
        seg_size: u64,
    },
    WrongSize {
        len: u64,
        seg_size: u64,
    },
    WrongAddress {
        page_addr: u64,
        segment: String,
    },
    /// The header's timeline is above the name's.
    TimelineAbove {
        header: u32,
        named: u32,
        segment: String,
    },
    /// A later page header is wrong (the page check's offset and reason).
    Page {
        offset: u64,
        why: String,
    },
}

impl SegmentProblem {
    /// The problem in words; `subject` names what was checked ("file").
    pub fn render(&self, subject: &str) -> String {
        match self {
            SegmentProblem::TooShort { len } => format!("only {len} bytes, too short for a WAL segment"),
            SegmentProblem::NoHeader => "no WAL long page header at the start".into(),
            SegmentProblem::ImpossibleSize { seg_size } => {
                format!("header gives an impossible segment size {seg_size}")
            }
            SegmentProblem::WrongSize { len, seg_size } => {
                format!("{subject} is {len} bytes but its header says segments are {seg_size} bytes")
            }
            SegmentProblem::WrongAddress { page_addr, segment } => format!(
                "header page address {:X}/{:X} does not belong to segment {segment}",
                page_addr >> 32,
                page_addr & 0xFFFF_FFFF
            ),
            SegmentProblem::TimelineAbove { header, named, segment } => {
                format!("header timeline {header} is above the timeline {named} in the name {segment}")
            }
            SegmentProblem::Page { offset, why } => format!("at byte {offset} of the segment: {why}"),
        }
    }
}

impl std::fmt::Display for SegmentProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render("file"))
    }
}

/// Checks that `path` holds the segment its name says: a valid long header,
/// the file size equal to the header's segment size, the header's page
/// address equal to the start of the named segment, and its timeline not
/// above the name's (a segment may begin with its parent timeline's pages,
/// never with a newer one's). Catches truncated copies and files renamed by
/// hand before they reach an archive.
pub fn check_segment_file(path: &Path, name: &WalName) -> Result<SegmentHeader, SegmentCheckError> {
    let p = path.display().to_string();
    let io = |source| SegmentCheckError::Io {
        path: p.clone(),
        source,
    };
    let invalid = |problem| SegmentCheckError::Invalid {
        path: p.clone(),
        problem,
    };
    let mut f = File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut buf = [0u8; 40];
    f.read_exact(&mut buf)
        .map_err(|_| invalid(SegmentProblem::TooShort { len }))?;
    let h = parse_header(&buf).ok_or_else(|| invalid(SegmentProblem::NoHeader))?;
    if !valid_segment_size(h.seg_size) {
        return Err(invalid(SegmentProblem::ImpossibleSize { seg_size: h.seg_size }));
    }
    if len != h.seg_size {
        return Err(invalid(SegmentProblem::WrongSize {
            len,
            seg_size: h.seg_size,
        }));
    }
    if h.timeline > name.timeline {
        return Err(invalid(SegmentProblem::TimelineAbove {
            header: h.timeline,
            named: name.timeline,
            segment: name.as_str().to_string(),
        }));
    }
    let expected = name.segno(h.seg_size) * h.seg_size;
    if h.page_addr != expected {
        return Err(invalid(SegmentProblem::WrongAddress {
            page_addr: h.page_addr,
            segment: name.as_str().to_string(),
        }));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let s = WalName::parse("000000010000000A000000FF").unwrap();
        assert_eq!((s.kind, s.timeline, s.log, s.seg), (WalKind::Segment, 1, 10, 255));
        assert_eq!(WalName::parse("00000002.history").unwrap().kind, WalKind::History);
        assert_eq!(WalName::parse("00000002.history").unwrap().timeline, 2);
        assert_eq!(
            WalName::parse("000000010000000000000002.00000028.backup").unwrap().kind,
            WalKind::Backup
        );
        assert_eq!(
            WalName::parse("000000010000000000000002.partial").unwrap().kind,
            WalKind::Partial
        );
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "00000001000000000000000",
            "0000000100000000000000001",
            "00000001000000000000000G",
            "000000000000000000000001",
            "../00000001000000000000001",
            "postmaster.pid",
            "00000001.history.tmp",
            "000000010000000000000002.backup",
            "000000010000000000000002.zzzzzzzz.backup",
        ] {
            assert!(WalName::parse(bad).is_err(), "{bad:?} accepted");
        }
        let e = WalName::parse("pg_control").unwrap_err().to_string();
        assert!(e.contains("not a WAL file name"), "{e}");
    }

    #[test]
    fn arithmetic_depends_on_segment_size() {
        let n = WalName::parse("000000010000000100000002").unwrap();
        assert_eq!(n.segno(16 << 20), 256 + 2);
        assert_eq!(n.segno(64 << 20), 64 + 2);
        assert_eq!(n.segno(1 << 30), 4 + 2);
        assert_eq!(segment_name(1, 258, 16 << 20), "000000010000000100000002");
        assert_eq!(segment_name(3, 66, 64 << 20), "000000030000000100000002");
        assert!(valid_segment_size(16 << 20) && valid_segment_size(1 << 20));
        assert!(!valid_segment_size(3 << 20) && !valid_segment_size(2 << 30));
    }

    fn header(seg_size: u32, page_addr: u64) -> Vec<u8> {
        let mut b = vec![0u8; 40];
        b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        b[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[8..16].copy_from_slice(&page_addr.to_le_bytes());
        b[24..32].copy_from_slice(&7u64.to_le_bytes());
        b[32..36].copy_from_slice(&seg_size.to_le_bytes());
        b[36..40].copy_from_slice(&8192u32.to_le_bytes());
        b
    }

    #[test]
    fn segment_file_checks() {
        let d = tempfile::tempdir().unwrap();
        let size = 1u64 << 20;
        let name = WalName::parse("000000010000000000000003").unwrap();
        let p = d.path().join(name.as_str());
        let mut data = header(size as u32, 3 * size);
        data.resize(size as usize, 0);
        std::fs::write(&p, &data).unwrap();
        let h = check_segment_file(&p, &name).unwrap();
        assert_eq!((h.seg_size, h.system_id), (size, 7));

        // Wrong segment (file renamed by hand).
        let other = WalName::parse("000000010000000000000004").unwrap();
        let e = check_segment_file(&p, &other).unwrap_err().to_string();
        assert!(e.contains("does not belong"), "{e}");

        // A newer timeline's segment under an older timeline's name; the
        // other way round is how a timeline's first segment begins.
        let mut tl2 = data.clone();
        tl2[4..8].copy_from_slice(&2u32.to_le_bytes());
        std::fs::write(&p, &tl2).unwrap();
        let e = check_segment_file(&p, &name).unwrap_err().to_string();
        assert!(e.contains("header timeline 2 is above the timeline 1"), "{e}");
        check_segment_file(&p, &WalName::parse("000000030000000000000003").unwrap()).unwrap();

        // Truncated copy.
        std::fs::write(&p, &data[..4096]).unwrap();
        let e = check_segment_file(&p, &name).unwrap_err().to_string();
        assert!(e.contains("4096 bytes"), "{e}");

        // Not WAL at all.
        std::fs::write(&p, vec![0u8; size as usize]).unwrap();
        assert!(check_segment_file(&p, &name).is_err());
    }
}
