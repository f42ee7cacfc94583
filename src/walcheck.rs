//! The full check of a WAL segment that has no stored checksum (an archive
//! filled by pitrtools or an older pitrkit, or a compressed frame made
//! without one): every page header up to the end of valid WAL (magic,
//! flags, timeline, page address, and on the first page the system
//! identifier, segment and block size), and the CRC-32C of every record that
//! lies wholly inside the segment.
//!
//! It is fed the bytes as they are copied ([`WalCheck::update`]), so the
//! check costs no second read. Record format (PostgreSQL 9.5 and later):
//! XLogRecord header of 24 bytes (xl_tot_len u32, xl_xid u32, xl_prev u64,
//! xl_info u8, xl_rmid u8, 2 pad, xl_crc u32), records MAXALIGNed (8), the
//! CRC taken over the bytes after the header and then over the header's first
//! 20 bytes. A record may cross page boundaries (its header too); each page
//! it continues on says so (XLP_FIRST_IS_CONTRECORD, xlp_rem_len).
//!
//! Where valid WAL ends: a complete segment ends only with the segment or
//! after an XLOG_SWITCH record; anything that PostgreSQL would take for the
//! end of WAL before that (a zero length, a bad page header, a record whose
//! CRC fails) is damage, because recovery would stop there and end early.
//! The bytes after a switch record are never read by recovery and are not
//! checked. A `.partial` segment (the old timeline's last one) may end
//! anywhere: there the first invalid thing is the end of WAL, as for
//! PostgreSQL. A record that starts before the segment or runs past its end
//! cannot be checked whole: its bytes inside are accounted for, not summed.
//! WAL older than PostgreSQL 9.5 (another record format) gets its first
//! page header checked only.

use std::fmt;

use crate::wal::{self, SegmentHeader, WalKind, WalName};

pub(crate) const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
pub(crate) const XLP_LONG_HEADER: u16 = 0x0002;
const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
const XLP_ALL_FLAGS: u16 = 0x000F;
pub(crate) const SHORT_HEADER: usize = 24;
pub(crate) const LONG_HEADER: usize = 40;
pub(crate) const RECORD_HEADER: usize = 24;
pub(crate) const RM_XLOG_ID: u8 = 0;
pub(crate) const XLOG_SWITCH: u8 = 0x40;
/// PostgreSQL never writes a record larger than this (XLogRecordMaxSize).
const MAX_RECORD: u32 = 1020 * 1024 * 1024;
/// XLOG_PAGE_MAGIC of PostgreSQL 9.5, which introduced this record format;
/// older WAL gets its page headers checked only.
const FIRST_MAGIC_WITH_THIS_FORMAT: u16 = 0xD087;

pub(crate) fn maxalign(n: usize) -> usize {
    (n + 7) & !7
}

/// Why a segment failed the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalCheckError {
    /// Byte offset in the segment.
    pub offset: u64,
    pub why: String,
}

impl fmt::Display for WalCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {} of the segment: {}", self.offset, self.why)
    }
}

impl std::error::Error for WalCheckError {}

/// What a successful check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalSummary {
    pub header: SegmentHeader,
    /// Records whose CRC-32C was checked.
    pub records: u64,
    /// Where valid WAL ends inside the segment (after a switch record, or in
    /// a `.partial`), if it does not run to the end.
    pub end: Option<u64>,
}

/// A record being read: `got` of its `tot_len` bytes seen so far.
#[derive(Debug, Clone)]
struct Record {
    start: u64,
    tot_len: u32,
    got: u32,
    header: [u8; RECORD_HEADER],
    crc: u32,
    /// False for a record that started before this segment: not summed.
    whole: bool,
}

/// The streaming checker; see the module documentation.
pub struct WalCheck {
    name: WalName,
    timeline: u32,
    partial: bool,
    expected_sysid: Option<u64>,
    seg_start: u64,
    page: Vec<u8>,
    block: usize,
    pages: u64,
    header: Option<SegmentHeader>,
    magic: u16,
    last_tli: u32,
    rec: Option<Record>,
    /// Start of the last complete record, for xl_prev (unknown at first).
    prev: Option<u64>,
    records: u64,
    end: Option<u64>,
    error: Option<WalCheckError>,
    total: u64,
}

impl WalCheck {
    /// A checker for the segment (or `.partial`) `name`; `expected_sysid`
    /// is the database system it must belong to, when known.
    pub fn new(name: &WalName, expected_sysid: Option<u64>) -> WalCheck {
        WalCheck {
            name: name.clone(),
            timeline: name.timeline,
            partial: name.kind == WalKind::Partial,
            expected_sysid,
            seg_start: 0,
            page: Vec::with_capacity(LONG_HEADER),
            block: 0,
            pages: 0,
            header: None,
            magic: 0,
            last_tli: 0,
            rec: None,
            prev: None,
            records: 0,
            end: None,
            error: None,
            total: 0,
        }
    }

    /// Feeds the next bytes of the segment.
    pub fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        while !data.is_empty() && self.error.is_none() {
            let want = if self.block == 0 { LONG_HEADER } else { self.block };
            let n = (want - self.page.len()).min(data.len());
            self.page.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.page.len() < want {
                break;
            }
            if self.block == 0 {
                if let Err(e) = self.first_header() {
                    self.error = Some(e);
                }
                continue;
            }
            let page = std::mem::take(&mut self.page);
            if let Err(e) = self.check_page(&page) {
                self.error = Some(e);
            }
            self.page = page;
            self.page.clear();
            self.pages += 1;
        }
    }

    /// The verdict, once every byte was fed.
    pub fn finish(self) -> Result<WalSummary, WalCheckError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let Some(header) = self.header else {
            return Err(WalCheckError {
                offset: 0,
                why: format!("only {} bytes, too short for a WAL segment", self.total),
            });
        };
        if self.total != header.seg_size {
            return Err(WalCheckError {
                offset: self.total,
                why: format!(
                    "{} bytes, but its header says segments are {} bytes (truncated?)",
                    self.total, header.seg_size
                ),
            });
        }
        Ok(WalSummary {
            header,
            records: self.records,
            end: self.end,
        })
    }

    fn err(&self, offset: u64, why: String) -> WalCheckError {
        WalCheckError { offset, why }
    }

    /// The long header tells the block and segment size.
    fn first_header(&mut self) -> Result<(), WalCheckError> {
        let h = wal::parse_header(&self.page).ok_or_else(|| {
            self.err(
                0,
                "no WAL long page header at the start (is it a WAL segment at all?)".into(),
            )
        })?;
        if !wal::valid_segment_size(h.seg_size) {
            return Err(self.err(32, format!("header gives an impossible segment size {}", h.seg_size)));
        }
        let b = h.block_size as usize;
        if !b.is_power_of_two() || !(1024..=65536).contains(&b) || b as u64 > h.seg_size {
            return Err(self.err(36, format!("header gives an impossible block size {b}")));
        }
        if let Some(want) = self.expected_sysid {
            if h.system_id != want {
                return Err(self.err(
                    24,
                    format!(
                        "it belongs to database system {}, not to this cluster's system {want}",
                        h.system_id
                    ),
                ));
            }
        }
        self.seg_start = self.name.segno(h.seg_size) * h.seg_size;
        self.magic = u16::from_le_bytes([self.page[0], self.page[1]]);
        self.block = b;
        self.header = Some(h);
        self.page.reserve(b);
        Ok(())
    }

    /// End of valid WAL at `offset`: fine in a `.partial`, damage otherwise.
    fn ends(&mut self, offset: u64, why: String) -> Result<(), WalCheckError> {
        if self.partial && offset >= self.block as u64 {
            self.end = Some(offset);
            self.rec = None;
            Ok(())
        } else {
            Err(self.err(
                offset,
                format!("{why}; recovery would take this for the end of WAL inside a complete segment and stop early"),
            ))
        }
    }

    fn check_page(&mut self, page: &[u8]) -> Result<(), WalCheckError> {
        if self.end.is_some() {
            return Ok(()); // never read by recovery
        }
        let off = self.pages * self.block as u64;
        if off > 0 && self.magic < FIRST_MAGIC_WITH_THIS_FORMAT {
            return Ok(());
        }
        let u16le = |o: usize| u16::from_le_bytes([page[o], page[o + 1]]);
        let u32le = |o: usize| u32::from_le_bytes(page[o..o + 4].try_into().unwrap());
        let u64le = |o: usize| u64::from_le_bytes(page[o..o + 8].try_into().unwrap());
        let (magic, info, tli, addr, rem_len) = (u16le(0), u16le(2), u32le(4), u64le(8), u32le(16));
        let want_addr = self.seg_start + off;
        if magic != self.magic {
            return self.ends(
                off,
                format!(
                    "page magic {magic:04X} differs from the first page's {:04X}",
                    self.magic
                ),
            );
        }
        if addr != want_addr {
            return self.ends(
                off,
                format!(
                    "page address {:X}/{:X} where {:X}/{:X} belongs",
                    addr >> 32,
                    addr & 0xFFFF_FFFF,
                    want_addr >> 32,
                    want_addr & 0xFFFF_FFFF
                ),
            );
        }
        if info & !XLP_ALL_FLAGS != 0 || ((info & XLP_LONG_HEADER != 0) != (off == 0)) {
            return self.ends(off, format!("invalid page flags {info:04X}"));
        }
        if tli < self.last_tli || tli > self.timeline {
            return self.ends(
                off + 4,
                format!(
                    "page timeline {tli} out of sequence (previous page {}, file timeline {})",
                    self.last_tli, self.timeline
                ),
            );
        }
        self.last_tli = tli;
        if self.magic < FIRST_MAGIC_WITH_THIS_FORMAT {
            return Ok(());
        }
        let mut pos = if off == 0 { LONG_HEADER } else { SHORT_HEADER };

        // What continues from the previous page (or segment).
        match self.rec.take() {
            Some(rec) if info & XLP_FIRST_IS_CONTRECORD != 0 => {
                if rem_len != rec.tot_len - rec.got {
                    return self.ends(
                        off + 16,
                        format!(
                            "page says {rem_len} bytes of a record continue here, but the record at {} has {} left",
                            rec.start,
                            rec.tot_len - rec.got
                        ),
                    );
                }
                self.rec = Some(rec);
            }
            Some(rec) if info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 => {
                // Crash recovery abandoned this record (PostgreSQL 15+): the
                // page starts afresh, and xl_prev points before the abandoned record.
                let _ = rec;
                self.prev = None;
            }
            Some(rec) => {
                return self.ends(
                    off,
                    format!(
                        "the record at byte {} continues on this page, but the page does not say so",
                        rec.start - self.seg_start
                    ),
                )
            }
            None if off == 0 && info & XLP_FIRST_IS_CONTRECORD != 0 => {
                // Started in the previous segment: count its bytes, sum nothing.
                self.rec = Some(Record {
                    start: self.seg_start,
                    tot_len: rem_len,
                    got: 0,
                    header: [0; RECORD_HEADER],
                    crc: 0,
                    whole: false,
                });
            }
            None => {}
        }

        while pos < self.block {
            if self.rec.is_none() {
                let lsn = self.seg_start + off + pos as u64;
                let tot_len = u32le(pos);
                if tot_len == 0 {
                    return self.ends(off + pos as u64, "a zero record length".into());
                }
                if (tot_len as usize) < RECORD_HEADER || tot_len > MAX_RECORD {
                    return self.ends(off + pos as u64, format!("invalid record length {tot_len}"));
                }
                self.rec = Some(Record {
                    start: lsn,
                    tot_len,
                    got: 0,
                    header: [0; RECORD_HEADER],
                    crc: 0,
                    whole: true,
                });
            }
            let rec = self.rec.as_mut().expect("set above");
            let n = ((rec.tot_len - rec.got) as usize).min(self.block - pos);
            let bytes = &page[pos..pos + n];
            if rec.whole {
                let mut data = bytes;
                let hdr_left = RECORD_HEADER.saturating_sub(rec.got as usize);
                if hdr_left > 0 {
                    let h = hdr_left.min(data.len());
                    let at = rec.got as usize;
                    rec.header[at..at + h].copy_from_slice(&data[..h]);
                    data = &data[h..];
                }
                rec.crc = crc32c::crc32c_append(rec.crc, data);
            }
            rec.got += n as u32;
            pos += n;
            if rec.got < rec.tot_len {
                break; // continues on the next page
            }
            let rec = self.rec.take().expect("present");
            pos = maxalign(pos);
            if !rec.whole {
                continue;
            }
            let at = rec.start - self.seg_start;
            let h = &rec.header;
            let stored = u32::from_le_bytes(h[20..24].try_into().unwrap());
            let crc = crc32c::crc32c_append(rec.crc, &h[..20]);
            if crc != stored {
                return self.ends(
                    at,
                    format!(
                        "record of {} bytes fails its CRC-32C (stored {stored:08x}, computed {crc:08x}): the data is damaged",
                        rec.tot_len
                    ),
                );
            }
            let xl_prev = u64::from_le_bytes(h[8..16].try_into().unwrap());
            if let Some(p) = self.prev {
                if xl_prev != p {
                    return self.ends(
                        at,
                        format!("record's back link xl_prev {xl_prev:X} does not point at the previous record {p:X}"),
                    );
                }
            }
            self.prev = Some(rec.start);
            self.records += 1;
            let (xl_info, xl_rmid) = (h[16], h[17]);
            if xl_rmid == RM_XLOG_ID && xl_info & 0xF0 == XLOG_SWITCH {
                // The rest of the segment is never read by recovery.
                self.end = Some(at + rec.tot_len as u64);
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Checks a whole segment in memory (tests and small callers).
pub fn check_bytes(name: &WalName, data: &[u8], expected_sysid: Option<u64>) -> Result<WalSummary, WalCheckError> {
    let mut c = WalCheck::new(name, expected_sysid);
    c.update(data);
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testsupport::wal::{Builder, SEG};

    const BLCKSZ: usize = 8192;

    const S: &str = "000000010000000000000003";

    fn name(s: &str) -> WalName {
        WalName::parse(s).unwrap()
    }

    #[test]
    fn an_intact_segment_passes_in_any_feed_size() {
        let mut b = Builder::new(S, 42);
        b.fill(SEG - 3000).switch();
        for chunk in [1, 7, 8192, 100_000, SEG] {
            let mut c = WalCheck::new(&name(S), Some(42));
            for part in b.data.chunks(chunk) {
                c.update(part);
            }
            let s = c.finish().unwrap();
            assert_eq!(s.records as usize, b.starts.len(), "chunk {chunk}");
            assert!(s.end.is_some());
        }
    }

    #[test]
    fn a_flipped_bit_in_any_record_is_found() {
        let mut b = Builder::new(S, 42);
        b.fill(SEG - 3000).switch();
        // Inside headers, payloads, records crossing pages, the switch record.
        let targets = [
            b.starts[0] + 30,
            b.starts[1] + 4000,
            b.starts[3] + 9000,
            b.starts[7] + 2,
            *b.starts.last().unwrap() + 18,
        ];
        for at in targets {
            let mut bad = b.data.clone();
            bad[at] ^= 0x10;
            let e = check_bytes(&name(S), &bad, Some(42)).unwrap_err();
            assert!(e.why.contains("end of WAL"), "byte {at}: {e}");
        }
    }

    #[test]
    fn the_tail_after_a_switch_record_is_not_checked() {
        let mut b = Builder::new(S, 42);
        b.fill(200_000).switch();
        let mut bad = b.data.clone();
        bad[600_000] ^= 0xFF; // a page body after the switch
        bad[SEG - BLCKSZ + 9] ^= 0x01; // a page address after the switch
        let s = check_bytes(&name(S), &bad, Some(42)).unwrap();
        assert!(s.end.unwrap() < 210_000);
    }

    #[test]
    fn end_of_wal_inside_a_complete_segment_is_damage_but_not_in_a_partial() {
        let mut b = Builder::new(S, 42);
        b.fill(300_000);
        // No switch: zeros follow, which in a complete segment means the rest is missing.
        let e = check_bytes(&name(S), &b.data, Some(42)).unwrap_err();
        assert!(
            e.why.contains("zero record length") && e.why.contains("end of WAL"),
            "{e}"
        );
        let partial = name(&format!("{S}.partial"));
        let s = check_bytes(&partial, &b.data, Some(42)).unwrap();
        assert!(s.end.unwrap() >= 300_000 && s.end.unwrap() < 330_000, "{s:?}");
    }

    #[test]
    fn headers_sizes_and_system_are_checked() {
        let mut b = Builder::new(S, 42);
        b.fill(SEG - 3000).switch();
        let e = check_bytes(&name(S), &b.data, Some(43)).unwrap_err();
        assert!(e.why.contains("database system 42"), "{e}");
        // Another segment's bytes under this name.
        let e = check_bytes(&name("000000010000000000000004"), &b.data, None).unwrap_err();
        assert!(e.why.contains("page address"), "{e}");
        // A page header damaged before the switch.
        let mut bad = b.data.clone();
        bad[5 * BLCKSZ + 9] ^= 0x04;
        assert!(check_bytes(&name(S), &bad, None)
            .unwrap_err()
            .why
            .contains("page address"));
        let mut bad = b.data.clone();
        bad[6 * BLCKSZ + 2] ^= 0x01; // continuation flag flipped
        assert!(check_bytes(&name(S), &bad, None).is_err());
        // Truncated.
        let e = check_bytes(&name(S), &b.data[..SEG / 2], None).unwrap_err();
        assert!(e.why.contains("truncated"), "{e}");
        // A timeline newer than the file's.
        let e = check_bytes(
            &name("000000010000000000000003"),
            &Builder::new("000000020000000000000003", 42).data,
            None,
        )
        .unwrap_err();
        assert!(e.why.contains("timeline"), "{e}");
    }

    #[test]
    fn a_record_from_the_previous_segment_is_skipped_not_summed() {
        let four = "000000010000000000000004";
        let mut b = Builder::new(four, 42);
        b.continued(20_000).fill(SEG - 3000).switch();
        let s = check_bytes(&name(four), &b.data, Some(42)).unwrap();
        assert_eq!(s.records as usize, b.starts.len());
        // Its bytes are not summed, but the pages it spans must say so.
        let mut bad = b.data.clone();
        bad[BLCKSZ + 16] ^= 0x01;
        assert!(check_bytes(&name(four), &bad, None)
            .unwrap_err()
            .why
            .contains("continue"));
        // A segment that ends inside a record: checked up to its end.
        let mut b = Builder::new(S, 42);
        b.fill(SEG - 100);
        b.record(30_000, 10, 0);
        assert!(b.pos >= SEG);
        let s = check_bytes(&name(S), &b.data, Some(42)).unwrap();
        assert_eq!(s.records as usize, b.starts.len() - 1);
        assert_eq!(s.end, None);
    }
}
