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
//! cannot be checked whole from the segment alone: its part inside is kept
//! ([`WalSummary::open_head`], [`WalSummary::open_tail`]) and checked with
//! the neighbour's part ([`check_head`], [`check_tail`]) by the caller, who
//! knows where the neighbour is. WAL older than PostgreSQL 9.5 (another
//! record format) gets its first page header checked only.
//!
//! [`WalCheck::headers_only`] checks page headers only, for files whose
//! bytes a stored checksum vouches for: their timelines.

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalSummary {
    pub header: SegmentHeader,
    /// Records whose CRC-32C was checked.
    pub records: u64,
    /// Where valid WAL ends inside the segment (after a switch record, or in
    /// a `.partial`), if it does not run to the end.
    pub end: Option<u64>,
    /// The record that runs into the next segment, not yet checked.
    pub open_tail: Option<OpenRecord>,
    /// The record that this segment finishes, not yet checked.
    pub open_head: Option<ContinuedRecord>,
}

/// A record being read: `got` of its `tot_len` bytes seen so far.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    start: u64,
    tot_len: u32,
    got: u32,
    /// The first 24 bytes: the record header, or for a record begun in the
    /// previous segment the first bytes of its continuation.
    header: [u8; RECORD_HEADER],
    /// CRC-32C of the bytes after those first 24.
    crc: u32,
    /// False for a record that started before this segment: its CRC needs
    /// the previous segment ([`check_head`]).
    whole: bool,
}

impl Record {
    fn feed(&mut self, bytes: &[u8]) {
        let mut data = bytes;
        let at = self.got as usize;
        if at < RECORD_HEADER {
            let h = (RECORD_HEADER - at).min(data.len());
            self.header[at..at + h].copy_from_slice(&data[..h]);
            data = &data[h..];
        }
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.got += bytes.len() as u32;
    }

    /// The stored and the computed CRC of a complete whole record.
    fn crcs(&self) -> (u32, u32) {
        let h = &self.header;
        let stored = u32::from_le_bytes(h[20..24].try_into().unwrap());
        (stored, crc32c::crc32c_append(self.crc, &h[..20]))
    }
}

/// A record that starts in this segment and runs past its end: its CRC is
/// checked with the next segment's first pages ([`check_tail`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRecord(Record);

impl OpenRecord {
    /// Its LSN.
    pub fn start(&self) -> u64 {
        self.0.start
    }

    /// How many of its bytes lie in the next segment.
    pub fn rest(&self) -> u32 {
        self.0.tot_len - self.0.got
    }
}

/// The end of a record begun in the previous segment, with which this
/// segment starts: its CRC is checked with the previous segment's last
/// bytes ([`check_head`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContinuedRecord {
    rest: Record,
    /// Where the record starts: the back link of the first record after it.
    start: Option<u64>,
}

impl ContinuedRecord {
    /// The LSN the record starts at, if a record after it in this segment says so.
    pub fn start(&self) -> Option<u64> {
        self.start
    }
}

/// The fields of a page header the check reads.
struct PageHeader {
    magic: u16,
    info: u16,
    tli: u32,
    addr: u64,
    rem_len: u32,
}

impl PageHeader {
    fn read(page: &[u8]) -> PageHeader {
        let u16le = |o: usize| u16::from_le_bytes([page[o], page[o + 1]]);
        let u32le = |o: usize| u32::from_le_bytes(page[o..o + 4].try_into().unwrap());
        PageHeader {
            magic: u16le(0),
            info: u16le(2),
            tli: u32le(4),
            addr: u64::from_le_bytes(page[8..16].try_into().unwrap()),
            rem_len: u32le(16),
        }
    }
}

/// The streaming checker; see the module documentation.
pub struct WalCheck {
    name: WalName,
    timeline: u32,
    partial: bool,
    /// False: page headers only (a file whose bytes a stored checksum vouches for).
    walk_records: bool,
    /// The timeline's history (parent, switch point), if known.
    history: Vec<(u32, u64)>,
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
    head: Option<ContinuedRecord>,
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
            walk_records: true,
            history: Vec::new(),
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
            head: None,
            error: None,
            total: 0,
        }
    }

    /// A checker of page headers only, for a file whose bytes a stored
    /// checksum vouches for: the timeline of every page, which no checksum
    /// taken at archive time can vouch for. It stops at the first page that
    /// is not a valid header of this segment (the end of WAL, for all it
    /// knows).
    pub fn headers_only(name: &WalName, expected_sysid: Option<u64>) -> WalCheck {
        WalCheck {
            walk_records: false,
            ..WalCheck::new(name, expected_sysid)
        }
    }

    /// The history of the name's timeline: (parent timeline, switch point)
    /// as its `.history` file lists them. Then every page must carry a
    /// timeline of that history, and a page at or past a switch point a
    /// timeline newer than that parent.
    pub fn with_history(mut self, history: &[(u32, u64)]) -> WalCheck {
        self.history = history.to_vec();
        self
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
        // A record still open at the end: one that started here runs into
        // the next segment; one that started before spans all of this one
        // (bigger than a segment), which is not checked.
        let open_tail = match self.rec {
            Some(r) if r.whole && self.records_checked() => Some(OpenRecord(r)),
            _ => None,
        };
        Ok(WalSummary {
            header,
            records: self.records,
            end: self.end,
            open_tail,
            open_head: self.head,
        })
    }

    fn records_checked(&self) -> bool {
        self.walk_records && self.magic >= FIRST_MAGIC_WITH_THIS_FORMAT
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
        // A `.partial` may end right after its long header (a promotion
        // just after a segment switch); before that, and for page headers
        // of a complete segment's first page, it is the wrong file.
        let first_valid = if self.partial { LONG_HEADER } else { self.block };
        if (self.partial || !self.walk_records) && offset >= first_valid as u64 {
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

    /// PostgreSQL's rules for a page's timeline: not above the file's, not
    /// going back, one of the file timeline's history (tliInHistory), and
    /// past a switch point newer than the parent that switched there.
    fn check_timeline(&self, tli: u32, addr: u64) -> Result<(), String> {
        let own = self.timeline;
        if tli > own {
            return Err(format!("page timeline {tli} is above the file name's timeline {own}"));
        }
        if tli < self.last_tli {
            return Err(format!(
                "page timeline {tli} goes back (the previous page has timeline {})",
                self.last_tli
            ));
        }
        if self.history.is_empty() || tli == own {
            return Ok(());
        }
        if !self.history.iter().any(|&(p, _)| p == tli) {
            return Err(format!(
                "page timeline {tli} is not in the history of timeline {own} ({own:08X}.history in the archive lists {:?}; if that file was cut short, it is the one to replace)",
                self.history.iter().map(|h| h.0).collect::<Vec<_>>()
            ));
        }
        // The page may not be older than the timeline whose WAL holds it.
        let (owner, at, ended) = timeline_of_point(&self.history, own, addr);
        if tli < owner {
            return Err(format!(
                "page timeline {tli} at {:X}/{:X}, past the point {:X}/{:X} where timeline {} ended ({own:08X}.history in the archive)",
                addr >> 32,
                addr & 0xFFFF_FFFF,
                at >> 32,
                at & 0xFFFF_FFFF,
                ended.unwrap_or(tli)
            ));
        }
        Ok(())
    }

    /// One page: its header, what continues from the page before, then
    /// each record that begins or ends on it.
    fn check_page(&mut self, page: &[u8]) -> Result<(), WalCheckError> {
        if self.end.is_some() {
            return Ok(()); // never read by recovery
        }
        let off = self.pages * self.block as u64;
        if off > 0 && self.magic < FIRST_MAGIC_WITH_THIS_FORMAT {
            return Ok(());
        }
        let h = PageHeader::read(page);
        if !self.page_header_holds(&h, off)? {
            return Ok(());
        }
        self.last_tli = h.tli;
        if !self.records_checked() || !self.continue_from_previous_page(&h, off)? {
            return Ok(());
        }
        let mut pos = if off == 0 { LONG_HEADER } else { SHORT_HEADER };
        while pos < self.block {
            if self.rec.is_none() && !self.begin_record(page, off, pos)? {
                return Ok(());
            }
            let rec = self.rec.as_mut().expect("set above");
            let n = ((rec.tot_len - rec.got) as usize).min(self.block - pos);
            rec.feed(&page[pos..pos + n]);
            pos += n;
            if rec.got < rec.tot_len {
                break; // continues on the next page
            }
            let rec = self.rec.take().expect("present");
            pos = maxalign(pos);
            if !self.record_complete(rec)? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// [`WalCheck::ends`] for a step that stops the page there: false.
    fn ended(&mut self, offset: u64, why: String) -> Result<bool, WalCheckError> {
        self.ends(offset, why).map(|()| false)
    }

    /// The page header at segment offset `off`: its magic, address, flags
    /// and timeline. False if valid WAL ends there.
    fn page_header_holds(&mut self, h: &PageHeader, off: u64) -> Result<bool, WalCheckError> {
        let want_addr = self.seg_start + off;
        if h.magic != self.magic {
            let why = format!(
                "page magic {:04X} differs from the first page's {:04X}",
                h.magic, self.magic
            );
            return self.ended(off, why);
        }
        if h.addr != want_addr {
            let why = format!(
                "page address {:X}/{:X} where {:X}/{:X} belongs",
                h.addr >> 32,
                h.addr & 0xFFFF_FFFF,
                want_addr >> 32,
                want_addr & 0xFFFF_FFFF
            );
            return self.ended(off, why);
        }
        if h.info & !XLP_ALL_FLAGS != 0 || ((h.info & XLP_LONG_HEADER != 0) != (off == 0)) {
            return self.ended(off, format!("invalid page flags {:04X}", h.info));
        }
        if let Err(why) = self.check_timeline(h.tli, h.addr) {
            // Never the end of WAL for a checker of headers only: the page
            // is one of this segment's, under the wrong timeline.
            return if self.walk_records || self.partial {
                self.ended(off + 4, why)
            } else {
                Err(self.err(off + 4, why))
            };
        }
        Ok(true)
    }

    /// What continues from the previous page (or segment), by the page
    /// header's flags and remainder. False if valid WAL ends there.
    fn continue_from_previous_page(&mut self, h: &PageHeader, off: u64) -> Result<bool, WalCheckError> {
        match self.rec.take() {
            Some(rec) if h.info & XLP_FIRST_IS_CONTRECORD != 0 => {
                let left = rec.tot_len - rec.got;
                if h.rem_len != left {
                    let why = format!(
                        "page says {} bytes of a record continue here, but the record at {} has {left} left",
                        h.rem_len, rec.start
                    );
                    return self.ended(off + 16, why);
                }
                self.rec = Some(rec);
            }
            Some(_) if h.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 => {
                // Crash recovery abandoned this record (PostgreSQL 15+): the
                // page starts afresh, and xl_prev points before the abandoned record.
                self.prev = None;
            }
            Some(rec) => {
                let why = format!(
                    "the record at byte {} continues on this page, but the page does not say so",
                    rec.start - self.seg_start
                );
                return self.ended(off, why);
            }
            None if off == 0 && h.info & XLP_FIRST_IS_CONTRECORD != 0 => {
                // Started in the previous segment: summed here, checked with
                // the previous segment's part afterwards.
                self.rec = Some(Record {
                    start: self.seg_start,
                    tot_len: h.rem_len,
                    got: 0,
                    header: [0; RECORD_HEADER],
                    crc: 0,
                    whole: false,
                });
            }
            None => {}
        }
        Ok(true)
    }

    /// A record starting at `pos` of the page at segment offset `off`, by
    /// its length. False if valid WAL ends there.
    fn begin_record(&mut self, page: &[u8], off: u64, pos: usize) -> Result<bool, WalCheckError> {
        let tot_len = u32::from_le_bytes(page[pos..pos + 4].try_into().unwrap());
        if tot_len == 0 {
            return self.ended(off + pos as u64, "a zero record length".into());
        }
        if (tot_len as usize) < RECORD_HEADER || tot_len > MAX_RECORD {
            return self.ended(off + pos as u64, format!("invalid record length {tot_len}"));
        }
        self.rec = Some(Record {
            start: self.seg_start + off + pos as u64,
            tot_len,
            got: 0,
            header: [0; RECORD_HEADER],
            crc: 0,
            whole: true,
        });
        Ok(true)
    }

    /// A record whose bytes are all in: its CRC and back link, or, for the
    /// part of one begun in the previous segment, kept for
    /// [`check_head`]. False if nothing after it is read (the WAL ends, or
    /// it is a segment switch).
    fn record_complete(&mut self, rec: Record) -> Result<bool, WalCheckError> {
        if !rec.whole {
            self.head = Some(ContinuedRecord { rest: rec, start: None });
            return Ok(true);
        }
        let at = rec.start - self.seg_start;
        let h = &rec.header;
        let (stored, crc) = rec.crcs();
        if crc != stored {
            let why = format!(
                "record of {} bytes fails its CRC-32C (stored {stored:08x}, computed {crc:08x}): the data is damaged",
                rec.tot_len
            );
            return self.ended(at, why);
        }
        let xl_prev = u64::from_le_bytes(h[8..16].try_into().unwrap());
        if let Some(p) = self.prev {
            if xl_prev != p {
                let why = format!("record's back link xl_prev {xl_prev:X} does not point at the previous record {p:X}");
                return self.ended(at, why);
            }
        }
        if self.records == 0 {
            if let Some(head) = self.head.as_mut() {
                head.start = Some(xl_prev);
            }
        }
        self.prev = Some(rec.start);
        self.records += 1;
        let (xl_info, xl_rmid) = (h[16], h[17]);
        if xl_rmid == RM_XLOG_ID && xl_info & 0xF0 == XLOG_SWITCH {
            // The rest of the segment is never read by recovery.
            self.end = Some(at + rec.tot_len as u64);
            return Ok(false);
        }
        Ok(true)
    }
}

/// The timeline whose WAL holds `ptr`, read from `history` (the entries of
/// timeline `own`'s `.history`, oldest first) exactly as PostgreSQL's
/// tliOfPointInHistory reads it: each entry's range begins where the one
/// before it ends (the first at the start of WAL), `own`'s where the last
/// ends, and the newest range that holds the point wins. A switch point
/// that goes back (a PITR that stopped on an older timeline before a newer
/// one's switch) leaves an empty range. Returns the timeline, where its
/// range begins, and the timeline that ended there.
pub fn timeline_of_point(history: &[(u32, u64)], own: u32, ptr: u64) -> (u32, u64, Option<u32>) {
    let mut ranges = Vec::with_capacity(history.len() + 1);
    let mut begin = 0;
    for &(tli, end) in history {
        ranges.push((tli, begin, end));
        begin = end;
    }
    // 0 is InvalidXLogRecPtr: no bound, as PostgreSQL reads it.
    ranges.push((own, begin, 0));
    for (i, &(tli, b, e)) in ranges.iter().enumerate().rev() {
        if (b == 0 || b <= ptr) && (e == 0 || ptr < e) {
            return (tli, b, i.checked_sub(1).map(|j| ranges[j].0));
        }
    }
    // Not reached: the ranges cover every point (PostgreSQL: "timeline
    // history was not contiguous").
    (own, begin, history.last().map(|h| h.0))
}

/// How many bytes from the start of the next segment [`check_tail`] needs:
/// the pages that hold the rest of `open`.
pub fn tail_bytes(open: &OpenRecord, block: usize, seg_size: u64) -> usize {
    let rest = open.rest() as usize;
    let first = block - LONG_HEADER;
    let more = rest.saturating_sub(first).div_ceil(block - SHORT_HEADER);
    ((1 + more) * block).min(seg_size as usize)
}

/// The header of a page that a record continues on: it must belong at
/// `addr` and say that `rest` bytes of a record continue on it, or that the
/// record was abandoned (false: crash recovery in PostgreSQL 15+ wrote over
/// a record whose end never reached disk).
fn continuation_page(page: &[u8], long: bool, addr: u64, rest: u32) -> Result<bool, String> {
    let hl = if long { LONG_HEADER } else { SHORT_HEADER };
    if page.len() < hl {
        return Err("it ends inside a page header".into());
    }
    let info = u16::from_le_bytes([page[2], page[3]]);
    let got = u64::from_le_bytes(page[8..16].try_into().unwrap());
    let rem_len = u32::from_le_bytes(page[16..20].try_into().unwrap());
    if got != addr {
        return Err(format!(
            "the page at {:X}/{:X} has the address {:X}/{:X}",
            addr >> 32,
            addr & 0xFFFF_FFFF,
            got >> 32,
            got & 0xFFFF_FFFF
        ));
    }
    if info & XLP_FIRST_IS_CONTRECORD == 0 && info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 {
        return Ok(false);
    }
    if info & XLP_FIRST_IS_CONTRECORD == 0 || rem_len != rest {
        return Err(format!(
            "the page at {:X}/{:X} should continue the record with {rest} bytes, but says {} (flags {info:04X})",
            addr >> 32,
            addr & 0xFFFF_FFFF,
            rem_len
        ));
    }
    Ok(true)
}

/// Feeds `rec` from segment bytes `data` (segment offset `from`, segment
/// at LSN `seg_start`) until `until` of its bytes are in or the data ends,
/// checking the headers of the pages it continues on: each must say the
/// record's real remainder (`tot_len - got`), even when `until` stops short
/// of the record's end (its part in the previous segment). The bytes used,
/// or None if a page says the record was abandoned.
fn feed_across_pages(
    rec: &mut Record,
    until: u32,
    data: &[u8],
    from: usize,
    block: usize,
    seg_start: u64,
) -> Result<Option<usize>, String> {
    let mut i = 0;
    while rec.got < until && i < data.len() {
        let off = from + i;
        if off % block == 0 {
            let hl = if off == 0 { LONG_HEADER } else { SHORT_HEADER };
            if !continuation_page(&data[i..], off == 0, seg_start + off as u64, rec.tot_len - rec.got)? {
                return Ok(None);
            }
            i += hl;
        }
        let n = (block - (from + i) % block)
            .min(data.len() - i)
            .min((until - rec.got) as usize);
        rec.feed(&data[i..i + n]);
        i += n;
    }
    Ok(Some(i))
}

fn crc_verdict(rec: &Record) -> Result<(), String> {
    let (stored, crc) = rec.crcs();
    if crc != stored {
        return Err(format!(
            "the record of {} bytes at {:X}/{:X} that crosses the segment boundary fails its CRC-32C (stored {stored:08x}, computed {crc:08x})",
            rec.tot_len,
            rec.start >> 32,
            rec.start & 0xFFFF_FFFF
        ));
    }
    Ok(())
}

/// Checks the record that runs past the end of a segment with the first
/// bytes of the next segment (`next`, at least [`tail_bytes`] of them
/// unless the file is shorter): the pages it continues on and its CRC.
/// Passes unchecked a record that runs past the next segment too (bigger
/// than a segment) and one the next segment says was abandoned.
pub fn check_tail(open: &OpenRecord, next: &[u8], block: usize, seg_size: u64) -> Result<(), String> {
    let room = seg_size as usize - LONG_HEADER - (seg_size as usize / block - 1) * SHORT_HEADER;
    if open.rest() as usize > room {
        return Ok(());
    }
    let mut rec = open.0.clone();
    let next_start = (rec.start / seg_size + 1) * seg_size;
    let all = rec.tot_len;
    if feed_across_pages(&mut rec, all, next, 0, block, next_start)?.is_none() {
        return Ok(());
    }
    if rec.got < rec.tot_len {
        return Err(format!(
            "it ends before the record's last {} bytes",
            rec.tot_len - rec.got
        ));
    }
    crc_verdict(&rec)
}

/// Checks the record that a segment starts with (the rest of one begun in
/// the previous segment) with the previous segment's bytes from the
/// record's start (`prev`: its bytes from segment offset `from` to the end).
pub fn check_head(head: &ContinuedRecord, prev: &[u8], block: usize, seg_size: u64) -> Result<(), String> {
    let start = head.start.ok_or("the record's start is not known")?;
    let from = (start % seg_size) as usize;
    let seg_start = start - from as u64;
    let hl = if from < block { LONG_HEADER } else { SHORT_HEADER };
    if from % block < hl || from % 8 != 0 || prev.len() < 4 {
        return Err(format!(
            "the back link {:X}/{:X} cannot be a record's start",
            start >> 32,
            start & 0xFFFF_FFFF
        ));
    }
    // The length is on the record's first page: it starts MAXALIGNed.
    let tot_len = u32::from_le_bytes(prev[..4].try_into().unwrap());
    if (tot_len as usize) < RECORD_HEADER || tot_len > MAX_RECORD || tot_len <= head.rest.tot_len {
        return Err(format!("the record there has an impossible length {tot_len}"));
    }
    let mut rec = Record {
        start,
        tot_len,
        got: 0,
        header: [0; RECORD_HEADER],
        crc: 0,
        whole: true,
    };
    // Stop where the previous segment should end; its pages still say the
    // whole record's remainder.
    let in_prev = tot_len - head.rest.tot_len;
    let used = feed_across_pages(&mut rec, in_prev, prev, from, block, seg_start)?
        .ok_or("a page the record continues on says it was abandoned")?;
    if rec.got < in_prev || from + used != seg_size as usize {
        return Err(format!(
            "the record there is {tot_len} bytes, {} of which this segment continues, but {} of them lie before the boundary",
            head.rest.tot_len,
            rec.got as usize + (seg_size as usize - from - used)
        ));
    }
    // This segment's part: its first 24 bytes as they are, the rest by its CRC.
    let rest = &head.rest;
    let first = (rest.tot_len as usize).min(RECORD_HEADER);
    rec.feed(&rest.header[..first]);
    if rest.tot_len as usize > RECORD_HEADER {
        rec.crc = crc32c::crc32c_combine(rec.crc, rest.crc, rest.tot_len as usize - RECORD_HEADER);
        rec.got = tot_len;
    }
    crc_verdict(&rec)
}

/// Checks a whole segment in memory (tests and small callers).
pub fn check_bytes(name: &WalName, data: &[u8], expected_sysid: Option<u64>) -> Result<WalSummary, WalCheckError> {
    let mut c = WalCheck::new(name, expected_sysid);
    c.update(data);
    c.finish()
}

/// A timeline history file as PostgreSQL writes it: UTF-8 text, each line
/// blank, a `#` comment, or `<parent tli>\t<switch LSN X/X>\t<reason>`,
/// parent timelines strictly increasing and below the file's own timeline,
/// and a final newline (so a truncated file is caught). Switch points may
/// go back (see [`timeline_of_point`]).
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

    /// Segments 3 and 4 of one stream, a record of `len` bytes crossing
    /// from 3 into 4 that starts about `before` bytes before the boundary,
    /// or whose first `split` bytes lie in 3 (fewer than 24: its header is
    /// split). With `before` over a few pages and `len` bigger still, both
    /// parts span several pages (as a gin or gist index build logs them).
    fn crossing(before: usize, split: Option<usize>, len: usize) -> (Vec<u8>, Vec<u8>, usize) {
        let mut b = Builder::segments(S, 42, 2);
        b.fill(SEG - before);
        if let Some(k) = split {
            let end = SEG - k;
            b.record(end - b.pos - RECORD_HEADER, 10, 0);
            assert_eq!(b.pos, end);
        }
        b.record(len, 10, 0);
        let at = *b.starts.last().unwrap();
        b.fill(2 * SEG - 3000).switch();
        (b.data[..SEG].to_vec(), b.data[SEG..].to_vec(), at)
    }

    fn both_sides(a: &[u8], b: &[u8]) -> (Result<(), String>, Result<(), String>) {
        let sa = check_bytes(&name(S), a, Some(42)).unwrap();
        let sb = check_bytes(&name("000000010000000000000004"), b, Some(42)).unwrap();
        let tail = sa.open_tail.expect("a record runs into 4");
        let head = sb.open_head.expect("4 finishes a record");
        assert_eq!(head.start(), Some(tail.start()));
        let need = tail_bytes(&tail, BLCKSZ, SEG as u64);
        assert!(
            need < tail.rest() as usize + 2 * BLCKSZ,
            "only the pages it continues on: {need}"
        );
        let from = (tail.start() % SEG as u64) as usize;
        (
            check_tail(&tail, &b[..need], BLCKSZ, SEG as u64),
            check_head(&head, &a[from..], BLCKSZ, SEG as u64),
        )
    }

    #[test]
    fn a_record_crossing_the_segment_boundary_is_checked_from_both_sides() {
        // Near the boundary (the header split too), and several pages on
        // both sides of it.
        let cases = [
            (200, None, 30_000),
            (200, Some(16), 30_000),
            (200, Some(8), 30_000),
            (3 * BLCKSZ + 500, None, 60_000),
            (5 * BLCKSZ, None, 9 * BLCKSZ),
        ];
        for (before, split, len) in cases {
            let (a, b, at) = crossing(before, split, len);
            let (t, h) = both_sides(&a, &b);
            t.unwrap();
            h.unwrap();
            let mut paired = 0;
            // A flipped bit in either part (the header too, a page of
            // its own before the boundary), seen from either side.
            let mut flips = vec![(true, SEG - 1), (true, at + 2), (false, 40 + 3), (false, 40 + 20_000)];
            if at + 2 * BLCKSZ < SEG - 1 {
                flips.push((true, at + 2 * BLCKSZ + 100));
            }
            for (in_a, off) in flips {
                let (mut a2, mut b2) = (a.clone(), b.clone());
                if in_a {
                    a2[off] ^= 0x04;
                } else {
                    b2[off] ^= 0x04;
                }
                // The side holding the flip fails its own walk only if the
                // flip hits its record header or page headers; the pair fails always.
                let (sa, sb) = (
                    check_bytes(&name(S), &a2, Some(42)),
                    check_bytes(&name("000000010000000000000004"), &b2, Some(42)),
                );
                if let (Ok(sa), Ok(sb)) = (sa, sb) {
                    let tail = sa.open_tail.unwrap();
                    let head = sb.open_head.unwrap();
                    let from = (head.start().unwrap() % SEG as u64) as usize;
                    let t = check_tail(&tail, &b2[..tail_bytes(&tail, BLCKSZ, SEG as u64)], BLCKSZ, SEG as u64);
                    let h = check_head(&head, &a2[from..], BLCKSZ, SEG as u64);
                    assert!(
                        t.is_err() && h.is_err(),
                        "{before} {split:?}, flip in a {in_a} at {off}: {t:?} {h:?}"
                    );
                    paired += 1;
                }
            }
            assert!(
                paired >= 3,
                "{before} {split:?}: only {paired} flips reached the pair check"
            );
        }
        // The next segment's continuation page says otherwise.
        let (a, good, _) = crossing(200, None, 30_000);
        let mut b = good.clone();
        b[16] ^= 0x01;
        let tail = check_bytes(&name(S), &a, None).unwrap().open_tail.unwrap();
        let e = check_tail(&tail, &b[..40_000], BLCKSZ, SEG as u64).unwrap_err();
        assert!(e.contains("should continue the record"), "{e}");
        let e = check_tail(&tail, &good[..9000], BLCKSZ, SEG as u64).unwrap_err();
        assert!(e.contains("ends before"), "{e}");
        // Crash recovery (PostgreSQL 15+) abandoned the record: the next
        // segment starts afresh and says so. Nothing to check.
        let mut over = good.clone();
        over[2..4].copy_from_slice(&(XLP_LONG_HEADER | XLP_FIRST_IS_OVERWRITE_CONTRECORD).to_le_bytes());
        check_tail(&tail, &over[..40_000], BLCKSZ, SEG as u64).unwrap();
        // A record bigger than a segment runs through the next one: not checked.
        let mut b = Builder::segments(S, 42, 3);
        b.fill(SEG - 200);
        b.record(SEG + 300_000, 10, 0);
        b.fill(3 * SEG - 3000).switch();
        let s3 = check_bytes(&name(S), &b.data[..SEG], Some(42)).unwrap();
        let s4 = check_bytes(&name("000000010000000000000004"), &b.data[SEG..2 * SEG], Some(42)).unwrap();
        let s5 = check_bytes(&name("000000010000000000000005"), &b.data[2 * SEG..], Some(42)).unwrap();
        let tail = s3.open_tail.unwrap();
        check_tail(&tail, &b.data[SEG..2 * SEG], BLCKSZ, SEG as u64).unwrap();
        assert!(s4.open_tail.is_none() && s4.open_head.is_none() && s4.records == 0);
        assert_eq!(s5.open_head.unwrap().start(), Some(tail.start()));
    }

    /// A valid record that starts several pages before the segment
    /// boundary (CREATE INDEX USING gin/gist logs 32-page records) passes
    /// check_head, as PostgreSQL replays it (review 2: s5.sh exited 200).
    #[test]
    fn a_valid_record_spanning_pages_before_the_boundary_passes_check_head() {
        let mut b = Builder::segments(S, 42, 2);
        b.fill(SEG - 20_000);
        b.record(36_000, 10, 0);
        b.fill(2 * SEG - 3000).switch();
        let (a, bb) = (b.data[..SEG].to_vec(), b.data[SEG..].to_vec());
        let (t, h) = both_sides(&a, &bb);
        t.unwrap();
        h.unwrap();
    }

    /// A `.partial` whose WAL ends on its first page (a promotion right
    /// after a segment switch; PostgreSQL archived one ending at byte 160).
    #[test]
    fn a_partial_ending_on_its_first_page_passes() {
        let p = "000000010000000000000003.partial";
        let mut b = Builder::new(p, 42);
        b.record(96, 10, 0);
        let s = check_bytes(&name(p), &b.data, Some(42)).unwrap();
        assert_eq!(s.end, Some(160));
        // A complete segment ending there is still damage, and so is a
        // partial whose first page header is wrong.
        assert!(check_bytes(&name(S), &b.data, Some(42)).is_err());
        let mut bad = b.data.clone();
        bad[9] ^= 0x01;
        assert!(check_bytes(&name(p), &bad, Some(42)).is_err());
    }

    /// The page rule with the history PostgreSQL writes for a PITR before a
    /// later timeline's switch (3.history: 1 until 0/500000, 2 "until"
    /// 0/380000, the end of recovery on timeline 1 in segment 3): timeline
    /// 3's segment 3 holds timeline 1 pages up to 0/380000, then timeline 3
    /// pages. Valid WAL; timeline 1 pages past 0/380000 are not.
    #[test]
    fn page_rule_with_a_history_going_back() {
        let three = "000000030000000000000003";
        let history = [(1, 0x50_0000), (2, 0x38_0000)];
        let mut b = Builder::new(three, 42);
        b.fill(SEG - 3000).switch();
        for p in 0..(0x80000 / BLCKSZ) {
            let o = p * BLCKSZ;
            b.data[o + 4..o + 8].copy_from_slice(&1u32.to_le_bytes());
        }
        let headers = |data: &[u8]| {
            let mut c = WalCheck::headers_only(&name(three), Some(42)).with_history(&history);
            c.update(data);
            c.finish()
        };
        headers(&b.data).unwrap();
        let mut late = b.data.clone();
        late[0x80000 + 4..0x80000 + 8].copy_from_slice(&1u32.to_le_bytes());
        let e = headers(&late).unwrap_err();
        assert!(
            e.why.contains("where timeline 2 ended") && e.offset == 0x80000 + 4,
            "{e}"
        );
    }

    /// PostgreSQL's tliOfPointInHistory: the newest range holding the
    /// point wins, each range beginning where the one before it ends.
    #[test]
    fn the_timeline_of_a_point_is_found_as_postgresql_finds_it() {
        let tli = |h: &[(u32, u64)], own, p| timeline_of_point(h, own, p).0;
        assert_eq!(tli(&[], 1, 5), 1);
        let up = [(1, 0x100), (2, 0x200)];
        assert_eq!((tli(&up, 3, 0xFF), tli(&up, 3, 0x100), tli(&up, 3, 0x200)), (1, 2, 3));
        // 3.history of a PITR on timeline 1 before timeline 2's switch.
        let back = [(1, 0x14000A0), (2, 0x1300000)];
        assert_eq!(tli(&back, 3, 0x12F_FFFF), 1);
        assert_eq!(tli(&back, 3, 0x130_0000), 3);
        assert_eq!(tli(&back, 3, 0x140_00A0), 3);
        assert_eq!(timeline_of_point(&back, 3, 0x135_0000), (3, 0x130_0000, Some(2)));
    }

    #[test]
    fn page_timelines_are_checked_for_files_with_a_stored_checksum_too() {
        let mut b = Builder::new(S, 42);
        b.fill(SEG - 3000).switch();
        let headers = |data: &[u8], n: &str, history: &[(u32, u64)]| {
            let mut c = WalCheck::headers_only(&name(n), Some(42)).with_history(history);
            c.update(data);
            c.finish()
        };
        headers(&b.data, S, &[]).unwrap();
        // Timeline 2's bytes under timeline 1's name: the first page says so.
        let mut tl2 = b.data.clone();
        for p in (0..SEG).step_by(BLCKSZ) {
            tl2[p + 4..p + 8].copy_from_slice(&2u32.to_le_bytes());
        }
        let e = headers(&tl2, S, &[]).unwrap_err();
        assert!(
            e.why.contains("above the file name's timeline 1") && e.offset == 4,
            "{e}"
        );
        // Going back mid-file; a bad page header instead only ends the check.
        let tl2_name = "000000020000000000000003";
        let mut back = tl2.clone();
        back[10 * BLCKSZ + 4] = 1;
        assert!(headers(&back, tl2_name, &[]).unwrap_err().why.contains("goes back"));
        let mut junk = tl2.clone();
        junk[10 * BLCKSZ + 9] ^= 0x10;
        headers(&junk, tl2_name, &[]).unwrap();
        // With the history: timeline 1 ended at 0/380000, so timeline 1
        // pages from there on under the timeline 2 name are refused ...
        let seg3 = 3 * SEG as u64;
        let e = headers(&b.data, tl2_name, &[(1, seg3 + 0x80000)]).unwrap_err();
        assert!(
            e.why.contains("where timeline 1 ended") && e.offset == 0x80000 + 4,
            "{e}"
        );
        // ... while pages before it may carry timeline 1 ...
        let mut mixed = b.data.clone();
        for p in (0x80000..SEG).step_by(BLCKSZ) {
            mixed[p + 4..p + 8].copy_from_slice(&2u32.to_le_bytes());
        }
        headers(&mixed, tl2_name, &[(1, seg3 + 0x80000)]).unwrap();
        // ... and a timeline the history does not list is refused.
        let e = headers(&mixed, "000000030000000000000003", &[(2, seg3 + SEG as u64)]).unwrap_err();
        assert!(e.why.contains("not in the history"), "{e}");
        // The full check applies the same rules.
        let e = check_bytes(&name(S), &tl2, None).unwrap_err();
        assert!(e.why.contains("above the file name's timeline"), "{e}");
    }
}
