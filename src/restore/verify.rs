//! The checks restore makes while it copies: the `.sum` sidecar of a plain
//! file, the page headers of every segment, the full WAL check of a segment
//! without a stored checksum (and of a record it shares with a neighbour),
//! and the contents of a timeline history file. See `crate::layout` for the
//! stored forms and `crate::walcheck` for the WAL check.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::compress::Codec;
use crate::integrity::{self, Sum, Summer};
use crate::wal::{self, WalName};
use crate::walcheck::{self, WalCheck, WalCheckError, WalSummary};

use super::RestoreError;

type Verdict = Option<Result<WalSummary, WalCheckError>>;

/// Passes the restored bytes on to the output while summing them (CRC-32C),
/// checking a segment's page headers and, if asked, walking its records:
/// one pass over the data.
pub struct Tee<W: Write> {
    out: W,
    sum: Summer,
    pages: Option<WalCheck>,
    walk: Option<WalCheck>,
}

impl<W: Write> Tee<W> {
    /// `history`: the name's timeline history, see [`load_history`].
    pub fn new(out: W, name: &WalName, walk: bool, expected_sysid: Option<u64>, history: &[(u32, u64)]) -> Tee<W> {
        let segment = name.is_segment_data();
        Tee {
            out,
            sum: Summer::default(),
            pages: segment.then(|| WalCheck::headers_only(name, expected_sysid).with_history(history)),
            walk: (segment && walk).then(|| WalCheck::new(name, expected_sysid).with_history(history)),
        }
    }

    /// Flushes the output; the sum of everything written, the page headers'
    /// verdict and the WAL walk's.
    pub fn finish(mut self) -> io::Result<(W, Sum, Verdict, Verdict)> {
        self.out.flush()?;
        Ok((
            self.out,
            self.sum.finish(),
            self.pages.map(WalCheck::finish),
            self.walk.map(WalCheck::finish),
        ))
    }
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.out.write_all(data)?;
        self.sum.update(data);
        if let Some(p) = &mut self.pages {
            p.update(data);
        }
        if let Some(w) = &mut self.walk {
            w.update(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

pub enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies all of `input` into `out`; errors say which side failed.
pub fn copy(mut input: File, out: &mut impl Write) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
}

/// The stored checksum of plain `archived` (its `.sum` sidecar), if it has one.
pub fn read_sidecar(archived: &Path) -> Result<Option<Sum>, String> {
    let path = Path::new(&integrity::sum_name(&archived.display().to_string())).to_path_buf();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read its checksum file {}: {e}", path.display())),
    };
    Sum::parse(&text).map(Some).map_err(|e| {
        format!(
            "its checksum file {} is damaged ({e}); if the WAL file itself is intact, move the checksum file aside and restore checks every record instead",
            path.display()
        )
    })
}

/// A timeline history file as PostgreSQL writes it: UTF-8 text, each line
/// blank, a `#` comment, or `<parent tli>\t<switch LSN X/X>\t<reason>`,
/// parent timelines strictly increasing and below the file's own timeline,
/// and a final newline (so a truncated file is caught). Switch points may
/// go back (see [`walcheck::timeline_of_point`]).
///
/// Not checked: that the last entry is the timeline just below the file's.
/// PostgreSQL names the new timeline one above the newest it finds, and the
/// parent is the timeline recovery followed, so a point-in-time recovery
/// onto an older timeline writes e.g. `3.history` ending with timeline 1.
/// A file cut at a line boundary is caught later, if at all, by the page
/// timelines of the segments ([`WalCheck::with_history`]).
pub fn check_history(name: &WalName, data: &[u8]) -> Result<(), String> {
    parse_history(name, data).map(drop)
}

/// The entries of a history file: (parent timeline, switch point), oldest first.
pub fn parse_history(name: &WalName, data: &[u8]) -> Result<Vec<(u32, u64)>, String> {
    let text = std::str::from_utf8(data).map_err(|e| format!("not UTF-8 text ({e})"))?;
    if text.is_empty() {
        return Err("the file is empty".into());
    }
    if !text.ends_with('\n') {
        return Err("the last line has no newline (truncated?)".into());
    }
    let own = name.timeline;
    let mut entries: Vec<(u32, u64)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let bad = |why: String| format!("line {}: {why}: {:?}", i + 1, line.chars().take(80).collect::<String>());
        let mut f = line.splitn(3, '\t');
        let (Some(tli), Some(lsn), Some(_reason)) = (f.next(), f.next(), f.next()) else {
            return Err(bad("not '<timeline>\\t<LSN>\\t<reason>'".into()));
        };
        let tli: u32 = tli
            .trim()
            .parse()
            .map_err(|_| bad("the timeline is not a number".into()))?;
        let lsn = parse_lsn(lsn.trim()).ok_or_else(|| bad("the switch point is not an LSN like 0/3000000".into()))?;
        if tli == 0 || tli >= own {
            return Err(bad(format!(
                "timeline {tli} must be between 1 and {} (the file's own timeline is {own})",
                own - 1
            )));
        }
        if let Some(&(t, _)) = entries.last() {
            // A switch point may go back: a point-in-time recovery that
            // stops on an older timeline before a newer one's switch (with
            // recovery_target_timeline 'latest') writes such a file.
            if tli <= t {
                return Err(bad(format!("timeline {tli} does not follow timeline {t}")));
            }
        }
        entries.push((tli, lsn));
    }
    if entries.is_empty() {
        return Err("no timeline entry".into());
    }
    Ok(entries)
}

/// History files are a line per timeline: anything bigger is not one.
const MAX_HISTORY: usize = 1 << 20;

/// The history of `timeline` from the archive's `<timeline>.history`, for
/// checking page timelines; empty if the archive has none or it cannot be
/// read (its own restore says why).
pub fn load_history(dir: &Path, timeline: u32) -> Vec<(u32, u64)> {
    let name = WalName::parse(&format!("{timeline:08X}.history")).expect("a valid history name");
    let Some((path, codec)) = archived(dir, &name) else {
        return Vec::new();
    };
    read_range(&path, codec, 0, MAX_HISTORY)
        .and_then(|data| parse_history(&name, &data))
        .unwrap_or_else(|why| {
            log::debug!("{}: {why}; page timelines checked without it", path.display());
            Vec::new()
        })
}

/// The archived file for `name`, if there is a readable one.
fn archived(dir: &Path, name: &WalName) -> Option<(PathBuf, Codec)> {
    match super::find(dir, name) {
        Ok(Some((path, codec, _))) => Some((path, codec)),
        _ => None,
    }
}

/// Up to `len` bytes of an archived file's content from offset `from`:
/// only as much read (or decompressed) as that takes.
fn read_range(path: &Path, codec: Codec, from: u64, len: usize) -> Result<Vec<u8>, String> {
    let io = |e: io::Error| format!("cannot read it: {e}");
    let mut input = File::open(path).map_err(io)?;
    if codec == Codec::None {
        input.seek(SeekFrom::Start(from)).map_err(io)?;
        let mut buf = Vec::with_capacity(len.min(64 << 20));
        input.take(len as u64).read_to_end(&mut buf).map_err(io)?;
        return Ok(buf);
    }
    let mut w = Window {
        skip: from,
        want: len,
        buf: Vec::new(),
    };
    match codec.decompress(input, &mut w) {
        Ok(_) => Ok(w.buf),
        Err(_) if w.buf.len() == len => Ok(w.buf),
        Err(e) => Err(e.to_string()),
    }
}

/// Keeps bytes `skip..skip + want` of what is written, then refuses more,
/// which stops the decompression there.
struct Window {
    skip: u64,
    want: usize,
    buf: Vec<u8>,
}

impl Write for Window {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() == self.want {
            return Err(io::Error::other("read enough"));
        }
        let skip = self.skip.min(data.len() as u64) as usize;
        self.skip -= skip as u64;
        let take = (data.len() - skip).min(self.want - self.buf.len());
        self.buf.extend_from_slice(&data[skip..skip + take]);
        Ok(skip + take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Checks the CRC of a record that crosses a boundary of `name` (a segment
/// without a stored checksum whose walk passed), with its other part read
/// from the neighbouring segment in the archive: only that part, never the
/// whole neighbour. A neighbour not in the archive (yet) cannot help: the
/// record is then checked when the neighbour is restored, which PostgreSQL
/// asks for next (or just did) to replay it. A record that begins more
/// than one segment back (bigger than a segment) is not checked. Nor is a
/// neighbour shorter than the check needs, unless a stored checksum vouches
/// that it is complete ([`vouched_complete`]). `history`:
/// the name's timeline history ([`load_history`]).
pub fn check_crossing(
    dir: &Path,
    archived_at: &Path,
    name: &WalName,
    s: &WalSummary,
    history: &[(u32, u64)],
) -> Result<(), RestoreError> {
    let (seg_size, block) = (s.header.seg_size, s.header.block_size as usize);
    let segno = name.segno(seg_size);
    let fail = |other: &Path, why: String| RestoreError::DamagedAcross {
        archived: archived_at.to_path_buf(),
        other: other.to_path_buf(),
        why,
    };
    if let Some(tail) = &s.open_tail {
        let next = WalName::parse(&wal::segment_name(name.timeline, segno + 1, seg_size)).expect("a valid name");
        let need = walcheck::tail_bytes(tail, block, seg_size);
        match archived(dir, &next) {
            Some((path, codec)) => match read_range(&path, codec, 0, need) {
                Ok(bytes) if bytes.len() < need && !vouched_complete(&path, codec) => {
                    log::info!("{}: {}", path.display(), not_yet(bytes.len(), need, name))
                }
                Ok(bytes) => walcheck::check_tail(tail, &bytes, block, seg_size).map_err(|why| fail(&path, why))?,
                Err(why) => log::warn!(
                    "{}: {why}; the record of {name} that continues in it is checked when it is restored",
                    path.display()
                ),
            },
            None => log::debug!("{name}: {next} is not in the archive (yet): the record crossing into it is checked when it is restored"),
        }
    }
    if let Some(head) = &s.open_head {
        match head.start() {
            Some(start) if segno > 0 && start / seg_size == segno - 1 => {
                // The previous segment may be the parent timeline's (a
                // timeline's first segment continues its parent's WAL): the
                // timeline whose WAL holds the record's start, by the
                // history; without one, only the name's own.
                let tli = walcheck::timeline_of_point(history, name.timeline, start).0;
                let prev = WalName::parse(&wal::segment_name(tli, segno - 1, seg_size)).expect("a valid name");
                match archived(dir, &prev) {
                    Some((path, codec)) => {
                        let from = start % seg_size;
                        let need = (seg_size - from) as usize;
                        match read_range(&path, codec, from, need) {
                            Ok(bytes) if bytes.len() < need && !vouched_complete(&path, codec) => {
                                log::info!("{}: {}", path.display(), not_yet(bytes.len(), need, name))
                            }
                            Ok(bytes) => {
                                walcheck::check_head(head, &bytes, block, seg_size).map_err(|why| fail(&path, why))?
                            }
                            Err(why) => log::warn!(
                                "{}: {why}; the record that {name} finishes is checked when it is restored",
                                path.display()
                            ),
                        }
                    }
                    None => log::debug!("{name}: the segment before it is not in the archive: the record it finishes is checked when that one is restored"),
                }
            }
            _ => log::debug!(
                "{name}: starts inside a record that began more than a segment back: its CRC is not checked"
            ),
        }
    }
    Ok(())
}

/// Why a neighbour shorter than the check needs is passed over.
fn not_yet(got: usize, need: usize, name: &WalName) -> String {
    format!(
        "only {got} of the {need} bytes needed to check the record it shares with {name}, and no stored checksum says the file is complete (still being archived?): checked when it is restored"
    )
}

/// Whether a stored checksum vouches that the neighbour at `path` is whole
/// as archived: its `.sum` sidecar matches (plain), or every frame carries
/// a content checksum that verifies (compressed). Only then is a neighbour
/// too short for a shared record damage; otherwise it may still be being
/// written (an archive_command of plain `cp`), like one not there yet.
fn vouched_complete(path: &Path, codec: Codec) -> bool {
    let Ok(input) = File::open(path) else {
        return false;
    };
    if codec != Codec::None {
        return codec.decompress(input, io::sink()).is_ok_and(|c| c.checksummed);
    }
    match read_sidecar(path) {
        Ok(Some(want)) => Sum::of_reader(input).is_ok_and(|got| got == want),
        _ => false,
    }
}

fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    let ok = |p: &str| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok(hi) || !ok(lo) {
        return None;
    }
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL 15 wrote this 00000003.history itself (review 2, s1.sh):
    /// a point-in-time recovery of a timeline 1 backup to a time before
    /// timeline 2's switch, recovery_target_timeline 'latest' (the default,
    /// and -F999 -R's): writeTimeLineHistory copies 2.history and appends
    /// the parent's line with the end of recovery, before the old switch.
    #[test]
    fn a_history_postgresql_writes_with_a_switch_point_going_back_is_valid() {
        let n3 = WalName::parse("00000003.history").unwrap();
        let real = "1\t0/14000A0\tno recovery target specified\n\n2\t0/1300000\tbefore 2026-11-30 06:29:15.81585+00\n";
        assert_eq!(
            parse_history(&n3, real.as_bytes()).unwrap(),
            [(1, 0x140_00A0), (2, 0x130_0000)]
        );
    }

    #[test]
    fn history_files_are_checked() {
        let n3 = WalName::parse("00000003.history").unwrap();
        let good = "1\t0/3000000\tno recovery target specified\n\n# note\n2\t0/5000100\tat restore point \"x\"\n";
        check_history(&n3, good.as_bytes()).unwrap();
        for (bad, why) in [
            ("", "empty"),
            ("1\t0/3000000\tno recovery", "newline"),
            ("1\t0/3000000\n", "<timeline>"),
            ("x\t0/3000000\tr\n", "not a number"),
            ("1\t3000000\tr\n", "LSN"),
            ("3\t0/3000000\tr\n", "between 1 and 2"),
            ("2\t0/3000000\tr\n1\t0/4000000\tr\n", "does not follow"),
            ("# only a comment\n", "no timeline entry"),
        ] {
            let e = check_history(&n3, bad.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let e = check_history(&n3, &[0xFF, 0xFE, 0x00, b'\n']).unwrap_err();
        assert!(e.contains("UTF-8"), "{e}");
        // Point-in-time recovery onto timeline 1 while timeline 2 exists:
        // PostgreSQL names the new timeline 3, its parent 1. Valid.
        check_history(&n3, b"1\t0/3000000\tbefore 2026-11-21 10:00:00+00\n").unwrap();
        assert_eq!(
            parse_history(&n3, good.as_bytes()).unwrap(),
            [(1, 0x300_0000), (2, 0x500_0100)]
        );
    }
}
