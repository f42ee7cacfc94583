//! What restore reads from a segment's neighbours in the archive: the
//! timeline history that says which timelines its pages may carry, and the
//! other part of a record that crosses one of its boundaries.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use super::verify::{parse_history, read_sidecar};
use super::RestoreError;
use crate::compress::Codec;
use crate::integrity::Sum;
use crate::storage::Storage;
use crate::wal::{self, WalName};
use crate::walcheck::{self, ContinuedRecord, OpenRecord, WalSummary};

/// History files are a line per timeline: anything bigger is not one.
const MAX_HISTORY: usize = 1 << 20;

/// The history of `timeline` from the archive's `<timeline>.history`, for
/// checking page timelines; empty if the archive has none or it cannot be
/// read (its own restore says why).
pub fn load_history(archive: &dyn Storage, timeline: u32) -> Vec<(u32, u64)> {
    let name = WalName::parse(&format!("{timeline:08X}.history")).expect("a valid history name");
    let Some((stored, codec)) = archived(archive, &name) else {
        return Vec::new();
    };
    read_range(archive, &stored, codec, 0, MAX_HISTORY)
        .and_then(|data| parse_history(&name, &data))
        .unwrap_or_else(|why| {
            log::debug!("{}: {why}; page timelines checked without it", archive.locate(&stored));
            Vec::new()
        })
}

/// The stored name and form of `name`, if there is a readable one.
fn archived(archive: &dyn Storage, name: &WalName) -> Option<(String, Codec)> {
    match super::find(archive, name) {
        Ok(Some((stored, codec, _))) => Some((stored, codec)),
        _ => None,
    }
}

/// Up to `len` bytes of a stored file's content from offset `from`: only
/// as much read (or decompressed) as that takes.
fn read_range(archive: &dyn Storage, stored: &str, codec: Codec, from: u64, len: usize) -> Result<Vec<u8>, String> {
    let io = |e: io::Error| format!("cannot read it: {e}");
    if codec == Codec::None {
        let input = archive.get_from(stored, from).map_err(io)?;
        let mut buf = Vec::with_capacity(len.min(64 << 20));
        input.take(len as u64).read_to_end(&mut buf).map_err(io)?;
        return Ok(buf);
    }
    let input = archive.get(stored).map_err(io)?;
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

/// One segment whose records crossing its boundaries are checked.
struct Crossing<'a> {
    archive: &'a dyn Storage,
    archived_at: &'a str,
    name: &'a WalName,
    seg_size: u64,
    block: usize,
}

impl Crossing<'_> {
    fn fail(&self, other: &str, why: String) -> RestoreError {
        RestoreError::DamagedAcross {
            archived: PathBuf::from(self.archive.locate(self.archived_at)),
            other: PathBuf::from(self.archive.locate(other)),
            why,
        }
    }

    /// Whether neighbour `stored`, of which only `got` of the `need` bytes
    /// the check needs could be read, is passed over (logged): unless a
    /// stored checksum vouches it complete, it may still be being written.
    fn not_yet(&self, stored: &str, codec: Codec, got: usize, need: usize) -> bool {
        if got >= need || vouched_complete(self.archive, stored, codec) {
            return false;
        }
        log::info!(
            "{}: only {got} of the {need} bytes needed to check the record it shares with {}, and no stored checksum says the file is complete (still being archived?): checked when it is restored",
            self.archive.locate(stored),
            self.name
        );
        true
    }

    /// The record that starts in this segment and ends in the next.
    fn tail(&self, tail: &OpenRecord) -> Result<(), RestoreError> {
        let (name, seg_size) = (self.name, self.seg_size);
        let segno = name.segno(seg_size);
        let next = WalName::parse(&wal::segment_name(name.timeline, segno + 1, seg_size)).expect("a valid name");
        let Some((stored, codec)) = archived(self.archive, &next) else {
            log::debug!("{name}: {next} is not in the archive (yet): the record crossing into it is checked when it is restored");
            return Ok(());
        };
        let len = walcheck::tail_bytes(tail, self.block, seg_size);
        match read_range(self.archive, &stored, codec, 0, len) {
            Ok(bytes) if self.not_yet(&stored, codec, bytes.len(), len) => Ok(()),
            Ok(bytes) => {
                walcheck::check_tail(tail, &bytes, self.block, seg_size).map_err(|why| self.fail(&stored, why))
            }
            Err(why) => {
                log::warn!(
                    "{}: {why}; the record of {name} that continues in it is checked when it is restored",
                    self.archive.locate(&stored)
                );
                Ok(())
            }
        }
    }

    /// The record this segment finishes, begun in the previous one.
    fn head(&self, head: &ContinuedRecord, history: &[(u32, u64)]) -> Result<(), RestoreError> {
        let (name, seg_size) = (self.name, self.seg_size);
        let segno = name.segno(seg_size);
        let start = match head.start() {
            Some(start) if segno > 0 && start / seg_size == segno - 1 => start,
            _ => {
                log::debug!(
                    "{name}: starts inside a record that began more than a segment back: its CRC is not checked"
                );
                return Ok(());
            }
        };
        // The previous segment may be the parent timeline's (a timeline's
        // first segment continues its parent's WAL): the timeline whose WAL
        // holds the record's start, by the history; without one, only the
        // name's own.
        let tli = walcheck::timeline_of_point(history, name.timeline, start).0;
        let prev = WalName::parse(&wal::segment_name(tli, segno - 1, seg_size)).expect("a valid name");
        let Some((stored, codec)) = archived(self.archive, &prev) else {
            log::debug!("{name}: the segment before it is not in the archive: the record it finishes is checked when that one is restored");
            return Ok(());
        };
        let from = start % seg_size;
        let len = (seg_size - from) as usize;
        match read_range(self.archive, &stored, codec, from, len) {
            Ok(bytes) if self.not_yet(&stored, codec, bytes.len(), len) => Ok(()),
            Ok(bytes) => {
                walcheck::check_head(head, &bytes, self.block, seg_size).map_err(|why| self.fail(&stored, why))
            }
            Err(why) => {
                log::warn!(
                    "{}: {why}; the record that {name} finishes is checked when it is restored",
                    self.archive.locate(&stored)
                );
                Ok(())
            }
        }
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
    archive: &dyn Storage,
    archived_at: &str,
    name: &WalName,
    s: &WalSummary,
    history: &[(u32, u64)],
) -> Result<(), RestoreError> {
    let c = Crossing {
        archive,
        archived_at,
        name,
        seg_size: s.header.seg_size,
        block: s.header.block_size as usize,
    };
    if let Some(tail) = &s.open_tail {
        c.tail(tail)?;
    }
    if let Some(head) = &s.open_head {
        c.head(head, history)?;
    }
    Ok(())
}

/// Whether a stored checksum vouches that neighbour `stored` is whole as
/// archived: its `.sum` sidecar matches (plain), or every frame carries a
/// content checksum that verifies (compressed). Only then is a neighbour
/// too short for a shared record damage; otherwise it may still be being
/// written (an archive_command of plain `cp`), like one not there yet.
fn vouched_complete(archive: &dyn Storage, stored: &str, codec: Codec) -> bool {
    let Ok(input) = archive.get(stored) else {
        return false;
    };
    if codec != Codec::None {
        return codec.decompress(input, io::sink()).is_ok_and(|c| c.checksummed);
    }
    match read_sidecar(archive, stored) {
        Ok(Some(want)) => Sum::of_reader(input).is_ok_and(|got| got == want),
        _ => false,
    }
}
