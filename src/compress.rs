//! In-process compression codecs for archived WAL: zstd, lz4 (frame format)
//! and gzip, told apart by the file-name suffix (`.zst`, `.lz4`, `.gz`).
//!
//! Everything runs inside pitrkit: no `gzip` or `zstd` process per WAL file,
//! no shell, no PATH lookup.
//!
//! Decompression never returns silently short output. Each format's own
//! integrity check is used (zstd and lz4 content checksums, the gzip CRC-32
//! and length trailer), and input that stops in the middle of a frame is an
//! error, not end of data: a truncated archive file must never become a
//! shorter WAL file. Compression turns the checksums on.

use std::fmt;
use std::io::{self, Read, Write};

/// How an archived file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    None,
    Zstd,
    Lz4,
    Gzip,
}

/// Bytes consumed and produced by one compress or decompress call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteCounts {
    pub read: u64,
    pub written: u64,
    /// Decompression: every frame carried a checksum of its content, and it
    /// matched (always for gzip; zstd and lz4 frames made by other tools may
    /// have none, and then the caller must check the data another way).
    pub checksummed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot read the input: {0}")]
    Read(#[source] io::Error),
    #[error("cannot write the output: {0}")]
    Write(#[source] io::Error),
    #[error("corrupt {codec} data: {why}")]
    Corrupt { codec: Codec, why: String },
    #[error("{codec} does not take compression level {level} ({allowed})")]
    BadLevel { codec: Codec, level: i32, allowed: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression '{0}': use zstd, lz4, gzip or none")]
pub struct UnknownCodec(pub String);

impl Codec {
    /// Every codec, in the order restore looks for an archived file: plain
    /// first, then the compressed forms.
    pub const ALL: [Codec; 4] = [Codec::None, Codec::Zstd, Codec::Lz4, Codec::Gzip];

    /// The name used in configuration files and messages.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Zstd => "zstd",
            Codec::Lz4 => "lz4",
            Codec::Gzip => "gzip",
        }
    }

    /// The file-name suffix of files in this format ("" for none).
    pub fn suffix(self) -> &'static str {
        match self {
            Codec::None => "",
            Codec::Zstd => ".zst",
            Codec::Lz4 => ".lz4",
            Codec::Gzip => ".gz",
        }
    }

    /// The codec whose suffix is exactly `suffix` ("" is `Codec::None`).
    pub fn from_suffix(suffix: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.suffix() == suffix)
    }

    /// The codec a file name says it uses, and the name without that suffix:
    /// `000000010000000000000003.zst` is zstd of `000000010000000000000003`.
    pub fn detect(file_name: &str) -> (Codec, &str) {
        for c in [Codec::Zstd, Codec::Lz4, Codec::Gzip] {
            if let Some(base) = file_name.strip_suffix(c.suffix()) {
                return (c, base);
            }
        }
        (Codec::None, file_name)
    }

    /// Reads a configuration value: `zstd`, `lz4`, `gzip` or `none`.
    pub fn parse(value: &str) -> Result<Codec, UnknownCodec> {
        let v = value.trim();
        Codec::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(v))
            .ok_or_else(|| UnknownCodec(value.to_string()))
    }

    /// The level used when none is configured: cheap ones, because WAL is
    /// compressed on the archive_command path where latency matters.
    pub fn default_level(self) -> Option<i32> {
        match self {
            Codec::Zstd => Some(1),
            Codec::Gzip => Some(6),
            Codec::None | Codec::Lz4 => None,
        }
    }

    /// The level to use, or why `level` is not one this codec has.
    pub fn check_level(self, level: Option<i32>) -> Result<Option<i32>, CodecError> {
        let Some(level) = level else {
            return Ok(self.default_level());
        };
        let bad = |allowed: String| CodecError::BadLevel {
            codec: self,
            level,
            allowed,
        };
        match self {
            Codec::Zstd => {
                let r = zstd::compression_level_range();
                if r.contains(&level) {
                    Ok(Some(level))
                } else {
                    Err(bad(format!("zstd levels are {}..={}", r.start(), r.end())))
                }
            }
            Codec::Gzip if (0..=9).contains(&level) => Ok(Some(level)),
            Codec::Gzip => Err(bad("gzip levels are 0..=9".into())),
            Codec::None | Codec::Lz4 => Err(bad(format!("{self} has no levels; remove the level"))),
        }
    }

    /// Compresses all of `input` into `output` as one frame (one gzip member).
    /// `level: None` takes [`Codec::default_level`].
    pub fn compress<R: Read, W: Write>(
        self,
        input: R,
        output: W,
        level: Option<i32>,
    ) -> Result<ByteCounts, CodecError> {
        let level = self.check_level(level)?;
        let mut src = Source::new(input);
        let mut dst = Counted {
            inner: output,
            count: 0,
        };
        let written = match self {
            Codec::None => pump(&mut src, &mut dst).map(drop),
            Codec::Zstd => (|| {
                let mut enc = zstd::stream::write::Encoder::new(&mut dst, level.unwrap_or(1)).map_err(Pumped::Write)?;
                // Off by default in the library (on in the zstd program): without
                // it a flipped bit can decode to wrong WAL without complaint.
                enc.include_checksum(true).map_err(Pumped::Write)?;
                pump(&mut src, &mut enc)?;
                enc.finish().map_err(Pumped::Write)?;
                Ok(())
            })(),
            Codec::Lz4 => (|| {
                // 256 KiB blocks, independent: the fastest setting on WAL
                // (benches/settings.rs; "auto" would follow the size of the
                // first write, up to 4 MiB blocks: slower, 8 MiB more memory).
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max256KB)
                    .block_mode(lz4_flex::frame::BlockMode::Independent)
                    .content_checksum(true);
                let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, &mut dst);
                pump(&mut src, &mut enc)?;
                enc.finish().map_err(|e| Pumped::Write(e.into()))?;
                Ok(())
            })(),
            Codec::Gzip => (|| {
                let level = flate2::Compression::new(level.unwrap_or(6) as u32);
                let mut enc = flate2::write::GzEncoder::new(&mut dst, level);
                pump(&mut src, &mut enc)?;
                enc.finish().map_err(Pumped::Write)?;
                Ok(())
            })(),
        };
        written
            .and_then(|()| dst.flush().map_err(Pumped::Write))
            .map_err(|p| match p {
                Pumped::Read(e) => CodecError::Read(e),
                Pumped::Write(e) => CodecError::Write(e),
            })?;
        Ok(ByteCounts {
            read: src.count,
            written: dst.count,
            checksummed: self != Codec::None,
        })
    }

    /// Decompresses all of `input` into `output`. Corrupt, truncated or empty
    /// input is [`CodecError::Corrupt`]; `output` may then hold a prefix of
    /// the data, so write it somewhere you can throw away.
    pub fn decompress<R: Read, W: Write>(self, input: R, mut output: W) -> Result<ByteCounts, CodecError> {
        let mut src = Source::new(input);
        let mut lz4_end = Ok(());
        let mut checksummed = false;
        let result = match self {
            Codec::None => pump(&mut src, &mut output),
            Codec::Zstd => match zstd::stream::read::Decoder::new(ZstdWalker::new(&mut src)) {
                Ok(mut dec) => {
                    let r = pump(&mut dec, &mut output);
                    checksummed = dec.get_ref().get_ref().all_checksummed();
                    r
                }
                Err(e) => Err(Pumped::Read(e)),
            },
            Codec::Lz4 => {
                let mut dec = lz4_flex::frame::FrameDecoder::new(Lz4Walker::new(&mut src));
                // The decoder reports end of data after every frame (and after
                // an empty block): go on until the input itself has ended, so
                // that a second frame or trailing garbage is not ignored.
                let mut total = 0;
                let r = loop {
                    match pump(&mut dec, &mut output) {
                        Ok(n) if dec.get_ref().input_ended => break Ok(total + n),
                        Ok(n) => total += n,
                        Err(e) => break Err(e),
                    }
                };
                lz4_end = dec.get_ref().finish();
                checksummed = dec.get_ref().unchecked == 0;
                r
            }
            Codec::Gzip => {
                // Every member ends with the CRC-32 of its content.
                checksummed = true;
                // Multi: `cat a.gz b.gz` is valid gzip, and trailing bytes after
                // the first member must be read (and refused), not ignored.
                pump(&mut flate2::read::MultiGzDecoder::new(&mut src), &mut output)
            }
        };
        let corrupt = |why: String| CodecError::Corrupt { codec: self, why };
        let empty = || corrupt(format!("the file is empty: no {} (truncated to 0 bytes?)", self.unit()));
        let written = match result {
            Ok(n) => n,
            Err(Pumped::Write(e)) => return Err(CodecError::Write(e)),
            Err(Pumped::Read(e)) => {
                // The decoders report our input's I/O errors and their own
                // findings the same way; the Source knows which it was.
                if let Some(io) = src.error.take() {
                    return Err(CodecError::Read(io));
                }
                if src.count == 0 && self != Codec::None {
                    return Err(empty());
                }
                return Err(corrupt(self.explain(&e)));
            }
        };
        output.flush().map_err(CodecError::Write)?;
        if self != Codec::None && src.count == 0 {
            return Err(empty());
        }
        lz4_end.map_err(|why| corrupt(why.to_string()))?;
        Ok(ByteCounts {
            read: src.count,
            written,
            checksummed,
        })
    }

    fn unit(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip member",
            Codec::Zstd => "zstd frame",
            Codec::Lz4 => "lz4 frame",
            Codec::None => "data",
        }
    }

    /// A decoder's error, in words that say what happened to the file.
    fn explain(self, e: &io::Error) -> String {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            let article = if self == Codec::Lz4 { "an" } else { "a" };
            format!("truncated: the file ends inside {article} {} ({e})", self.unit())
        } else {
            format!("not a valid {} ({e})", self.unit())
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Codec {
    type Err = UnknownCodec;
    fn from_str(s: &str) -> Result<Codec, UnknownCodec> {
        Codec::parse(s)
    }
}

enum Pumped {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `r` to `w` until `r` ends; errors say which side failed.
fn pump(r: &mut impl Read, w: &mut impl Write) -> Result<u64, Pumped> {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Pumped::Read(e)),
        };
        w.write_all(&buf[..n]).map_err(Pumped::Write)?;
        total += n as u64;
    }
}

/// The input side: counts bytes and keeps a copy of its own I/O error, so an
/// unreadable disk is not reported as corrupt data.
struct Source<R> {
    inner: R,
    count: u64,
    error: Option<io::Error>,
}

impl<R: Read> Source<R> {
    fn new(inner: R) -> Self {
        Source {
            inner,
            count: 0,
            error: None,
        }
    }
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.count += n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.error = Some(io::Error::new(e.kind(), e.to_string()));
                }
                Err(e)
            }
        }
    }
}

struct Counted<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

const LZ4_MAGIC: u32 = 0x184D_2204;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lz4Field {
    Magic,
    Flags,
    BlockSize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lz4State {
    /// Collecting a fixed-size field.
    Field(Lz4Field),
    /// Skipping opaque bytes (header rest, block data, checksums), then `next`.
    Skip {
        left: u64,
        next: Lz4Field,
        ends_frame: bool,
    },
    /// Not the lz4 frame format.
    Foreign,
}

/// Follows the lz4 frame structure of the bytes the decoder reads.
///
/// lz4_flex's `FrameDecoder` treats end of input where a block header should
/// be as a clean end, so a file cut at a block boundary would decode to a
/// silently shorter file. Walking the block headers alongside tells "ended
/// after a frame's end mark and checksum" from "cut off inside a frame".
struct Lz4Walker<R> {
    inner: R,
    state: Lz4State,
    field: [u8; 4],
    have: usize,
    block_checksums: bool,
    content_checksum: bool,
    frames: u64,
    /// Frames without a content checksum.
    unchecked: u64,
    input_ended: bool,
}

impl<R: Read> Lz4Walker<R> {
    fn new(inner: R) -> Self {
        Lz4Walker {
            inner,
            state: Lz4State::Field(Lz4Field::Magic),
            field: [0; 4],
            have: 0,
            block_checksums: false,
            content_checksum: false,
            frames: 0,
            unchecked: 0,
            input_ended: false,
        }
    }

    fn finish(&self) -> Result<(), &'static str> {
        match self.state {
            Lz4State::Foreign => {
                Err("not in the lz4 frame format (the legacy format, lz4 -l, has no end mark or checksum to check)")
            }
            Lz4State::Field(Lz4Field::Magic) if self.have == 0 && self.frames > 0 => Ok(()),
            _ => Err("truncated: the file ends inside an lz4 frame"),
        }
    }

    fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                Lz4State::Foreign => return,
                Lz4State::Skip { left, next, ends_frame } => {
                    let n = left.min(data.len() as u64);
                    data = &data[n as usize..];
                    self.skip_to(left - n, next, ends_frame);
                }
                Lz4State::Field(f) => {
                    let size = if f == Lz4Field::Flags { 1 } else { 4 };
                    let n = (size - self.have).min(data.len());
                    self.field[self.have..self.have + n].copy_from_slice(&data[..n]);
                    self.have += n;
                    data = &data[n..];
                    if self.have == size {
                        self.have = 0;
                        self.field_done(f);
                    }
                }
            }
        }
    }

    fn skip_to(&mut self, left: u64, next: Lz4Field, ends_frame: bool) {
        if left > 0 {
            self.state = Lz4State::Skip { left, next, ends_frame };
            return;
        }
        if ends_frame {
            self.frames += 1;
        }
        self.state = Lz4State::Field(next);
    }

    fn field_done(&mut self, f: Lz4Field) {
        let v = u32::from_le_bytes(self.field);
        match f {
            Lz4Field::Magic if v == LZ4_MAGIC => self.state = Lz4State::Field(Lz4Field::Flags),
            Lz4Field::Magic => self.state = Lz4State::Foreign,
            Lz4Field::Flags => {
                let flg = self.field[0];
                self.block_checksums = flg & 0x10 != 0;
                self.content_checksum = flg & 0x04 != 0;
                self.unchecked += u64::from(!self.content_checksum);
                // BD byte, optional content size and dictionary id, header checksum.
                let rest = 1 + if flg & 0x08 != 0 { 8 } else { 0 } + if flg & 0x01 != 0 { 4 } else { 0 } + 1;
                self.skip_to(rest, Lz4Field::BlockSize, false);
            }
            Lz4Field::BlockSize if v == 0 => {
                // End mark, then the optional content checksum ends the frame.
                let tail = if self.content_checksum { 4 } else { 0 };
                self.skip_to(tail, Lz4Field::Magic, true);
            }
            Lz4Field::BlockSize => {
                let len = (v & 0x7FFF_FFFF) as u64 + if self.block_checksums { 4 } else { 0 };
                self.skip_to(len, Lz4Field::BlockSize, false);
            }
        }
    }
}

impl<R: Read> Read for Lz4Walker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.input_ended |= n == 0 && !buf.is_empty();
        self.observe(&buf[..n]);
        Ok(n)
    }
}

const ZSTD_MAGIC: u32 = 0xFD2F_B528;

/// Follows the zstd frame structure of the bytes the decoder reads, to tell
/// whether every frame carries a content checksum (the zstd program writes
/// one by default, the library does not). A structure it cannot follow
/// counts as unchecked, so the caller checks the data itself.
struct ZstdWalker<R> {
    inner: R,
    field: [u8; 4],
    have: usize,
    /// Bytes of the field being collected: 4 (magic, skippable size), 1
    /// (frame header descriptor) or 3 (block header).
    want: usize,
    state: ZstdState,
    checksum: bool,
    frames: u64,
    unchecked: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ZstdState {
    Magic,
    Descriptor,
    SkippableSize,
    BlockHeader,
    Skip { left: u64, then: ZstdNext },
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ZstdNext {
    Magic,
    BlockHeader,
}

impl<R: Read> ZstdWalker<R> {
    fn new(inner: R) -> Self {
        ZstdWalker {
            inner,
            field: [0; 4],
            have: 0,
            want: 4,
            state: ZstdState::Magic,
            checksum: false,
            frames: 0,
            unchecked: 0,
        }
    }

    fn all_checksummed(&self) -> bool {
        self.state != ZstdState::Lost && self.frames > 0 && self.unchecked == 0
    }

    fn expect(&mut self, state: ZstdState, want: usize) {
        self.state = state;
        self.want = want;
        self.have = 0;
    }

    fn skip(&mut self, left: u64, then: ZstdNext) {
        if left > 0 {
            self.state = ZstdState::Skip { left, then };
        } else {
            self.after_skip(then);
        }
    }

    fn after_skip(&mut self, then: ZstdNext) {
        match then {
            ZstdNext::Magic => self.expect(ZstdState::Magic, 4),
            ZstdNext::BlockHeader => self.expect(ZstdState::BlockHeader, 3),
        }
    }

    fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                ZstdState::Lost => return,
                ZstdState::Skip { left, then } => {
                    let n = left.min(data.len() as u64);
                    data = &data[n as usize..];
                    self.skip(left - n, then);
                }
                _ => {
                    let n = (self.want - self.have).min(data.len());
                    self.field[self.have..self.have + n].copy_from_slice(&data[..n]);
                    self.have += n;
                    data = &data[n..];
                    if self.have == self.want {
                        self.field_done();
                    }
                }
            }
        }
    }

    fn field_done(&mut self) {
        let f = self.field;
        match self.state {
            ZstdState::Magic => match u32::from_le_bytes(f) {
                ZSTD_MAGIC => self.expect(ZstdState::Descriptor, 1),
                0x184D_2A50..=0x184D_2A5F => self.expect(ZstdState::SkippableSize, 4),
                _ => self.state = ZstdState::Lost,
            },
            ZstdState::SkippableSize => self.skip(u32::from_le_bytes(f) as u64, ZstdNext::Magic),
            ZstdState::Descriptor => {
                let fhd = f[0];
                let single = fhd & 0x20 != 0;
                self.checksum = fhd & 0x04 != 0;
                self.frames += 1;
                self.unchecked += u64::from(!self.checksum);
                let window = if single { 0 } else { 1 };
                let dict = [0, 1, 2, 4][(fhd & 3) as usize];
                let fcs = [if single { 1 } else { 0 }, 2, 4, 8][(fhd >> 6) as usize];
                self.skip(window + dict + fcs, ZstdNext::BlockHeader);
            }
            ZstdState::BlockHeader => {
                let b = u32::from_le_bytes([f[0], f[1], f[2], 0]);
                let (last, kind, size) = (b & 1 != 0, (b >> 1) & 3, (b >> 3) as u64);
                let body = match kind {
                    1 => 1, // RLE: one byte repeated
                    3 => {
                        self.state = ZstdState::Lost;
                        return;
                    }
                    _ => size,
                };
                if last {
                    let tail = if self.checksum { 4 } else { 0 };
                    self.skip(body + tail, ZstdNext::Magic);
                } else {
                    self.skip(body, ZstdNext::BlockHeader);
                }
            }
            ZstdState::Skip { .. } | ZstdState::Lost => unreachable!("no field collected"),
        }
    }
}

impl<R: Read> Read for ZstdWalker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n]);
        Ok(n)
    }
}

/// Does `compressed` (in `codec`) decompress to exactly the bytes of `raw`?
/// Archives are compared by content, never by compressed bytes: another
/// zstd build may compress the same WAL differently. Corrupt data is "not
/// the same", which the caller reports as a conflict.
pub fn same_content(compressed: &std::path::Path, codec: Codec, raw: &std::path::Path) -> std::io::Result<bool> {
    same_content_of(std::fs::File::open(compressed)?, codec, raw)
}

/// [`same_content`] of compressed data read from anywhere (a [`crate::storage::Storage`]).
pub fn same_content_of(compressed: impl Read, codec: Codec, raw: &std::path::Path) -> std::io::Result<bool> {
    struct Compare<R: Read> {
        other: R,
        equal: bool,
        buf: Vec<u8>,
    }
    impl<R: Read> Write for Compare<R> {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            if self.equal {
                self.buf.resize(data.len(), 0);
                let mut got = 0;
                while got < data.len() {
                    match self.other.read(&mut self.buf[got..])? {
                        0 => break,
                        n => got += n,
                    }
                }
                self.equal = got == data.len() && self.buf[..got] == *data;
            }
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let raw_file = std::fs::File::open(raw)?;
    let mut cmp = Compare {
        other: std::io::BufReader::with_capacity(1 << 20, raw_file),
        equal: true,
        buf: Vec::new(),
    };
    match codec.decompress(compressed, &mut cmp) {
        Ok(_) => {}
        Err(CodecError::Read(e)) => return Err(e),
        Err(_) => return Ok(false),
    }
    // Equal so far, and nothing left over in the raw file.
    let mut rest = [0u8; 1];
    Ok(cmp.equal && cmp.other.read(&mut rest)? == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 16 MiB that look like WAL: 8 KiB pages, each with a few hundred
    /// bytes of record-like noise and the rest zeros.
    fn wal_like(len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for page in data.chunks_mut(8192) {
            let used = (64 + (x % 1500) as usize).min(page.len());
            for b in page[..used].iter_mut() {
                // xorshift64: cheap, deterministic, poorly compressible.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
        }
        data
    }

    fn compressed(codec: Codec, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let c = codec.compress(data, &mut out, None).unwrap();
        assert_eq!((c.read, c.written), (data.len() as u64, out.len() as u64));
        out
    }

    #[test]
    fn names_suffixes_and_levels() {
        for c in Codec::ALL {
            assert_eq!(Codec::parse(c.name()), Ok(c));
            assert_eq!(Codec::from_suffix(c.suffix()), Some(c));
        }
        assert_eq!(Codec::parse(" ZSTD "), Ok(Codec::Zstd));
        assert!(Codec::parse("bzip2").unwrap_err().to_string().contains("use zstd"));
        assert_eq!(Codec::from_suffix(".bz2"), None);
        assert_eq!(
            Codec::detect("000000010000000000000003.zst"),
            (Codec::Zstd, "000000010000000000000003")
        );
        assert_eq!(Codec::detect("00000002.history.gz"), (Codec::Gzip, "00000002.history"));
        assert_eq!(Codec::detect("00000002.history"), (Codec::None, "00000002.history"));
        assert_eq!(Codec::Zstd.default_level(), Some(1));
        assert_eq!(Codec::Gzip.default_level(), Some(6));
        assert_eq!(Codec::Lz4.default_level(), None);
        assert_eq!(Codec::Gzip.check_level(Some(9)).unwrap(), Some(9));
        assert!(Codec::Gzip.check_level(Some(10)).is_err());
        assert!(Codec::Zstd.check_level(Some(99)).is_err());
        let e = Codec::Lz4.check_level(Some(3)).unwrap_err().to_string();
        assert!(e.contains("lz4 has no levels"), "{e}");
    }

    #[test]
    fn tells_frames_with_a_content_checksum_from_frames_without() {
        let data = wal_like(1 << 20);
        for codec in [Codec::Zstd, Codec::Lz4, Codec::Gzip] {
            let c = codec
                .decompress(&compressed(codec, &data)[..], std::io::sink())
                .unwrap();
            assert!(c.checksummed, "{codec}: ours always carry one");
        }
        // zstd without a checksum (the library's default), and two frames
        // of which only one has one.
        let bare = zstd::bulk::compress(&data, 3).unwrap();
        let c = Codec::Zstd.decompress(&bare[..], std::io::sink()).unwrap();
        assert!(!c.checksummed && c.written == data.len() as u64);
        let mut two = compressed(Codec::Zstd, &data[..1000]);
        two.extend_from_slice(&bare);
        assert!(!Codec::Zstd.decompress(&two[..], std::io::sink()).unwrap().checksummed);
        let mut two = compressed(Codec::Zstd, &data[..1000]);
        two.extend_from_slice(&compressed(Codec::Zstd, &data));
        assert!(Codec::Zstd.decompress(&two[..], std::io::sink()).unwrap().checksummed);
        // An RLE-friendly input (zstd RLE and raw blocks).
        let zeros = compressed(Codec::Zstd, &vec![0u8; 3 << 20]);
        assert!(Codec::Zstd.decompress(&zeros[..], std::io::sink()).unwrap().checksummed);
        // lz4 without a content checksum.
        let mut plain = Vec::new();
        let mut enc = lz4_flex::frame::FrameEncoder::new(&mut plain);
        std::io::Write::write_all(&mut enc, &data).unwrap();
        enc.finish().unwrap();
        let c = Codec::Lz4.decompress(&plain[..], std::io::sink()).unwrap();
        assert!(!c.checksummed && c.written == data.len() as u64);
    }

    #[test]
    fn round_trip_16mib_every_codec() {
        let data = wal_like(16 << 20);
        for codec in Codec::ALL {
            let packed = compressed(codec, &data);
            if codec != Codec::None {
                assert!(packed.len() < data.len() / 2, "{codec}: {} bytes", packed.len());
            }
            let mut out = Vec::new();
            let c = codec.decompress(&packed[..], &mut out).unwrap();
            assert_eq!((c.read, c.written), (packed.len() as u64, data.len() as u64), "{codec}");
            assert!(out == data, "{codec}: round trip changed the data");
        }
    }

    #[test]
    fn empty_input_round_trips_but_an_empty_file_is_corrupt() {
        for codec in [Codec::Zstd, Codec::Lz4, Codec::Gzip] {
            let packed = compressed(codec, b"");
            let mut out = Vec::new();
            codec.decompress(&packed[..], &mut out).unwrap();
            assert!(out.is_empty());
            let e = codec.decompress(&b""[..], &mut out).unwrap_err().to_string();
            assert!(e.contains("empty"), "{codec}: {e}");
        }
    }

    fn assert_corrupt(codec: Codec, input: &[u8], what: &str) -> String {
        let mut out = Vec::new();
        match codec.decompress(input, &mut out) {
            Err(e @ CodecError::Corrupt { .. }) => e.to_string(),
            Err(e) => panic!("{codec} {what}: wrong kind of error: {e}"),
            Ok(_) => panic!("{codec} {what}: accepted, {} bytes out", out.len()),
        }
    }

    #[test]
    fn truncation_is_an_error_never_short_output() {
        let data = wal_like(1 << 20);
        for codec in [Codec::Zstd, Codec::Lz4, Codec::Gzip] {
            let packed = compressed(codec, &data);
            for cut in [
                1,
                4,
                8,
                12,
                packed.len() / 2,
                packed.len() - 8,
                packed.len() - 4,
                packed.len() - 1,
            ] {
                let e = assert_corrupt(codec, &packed[..cut], &format!("cut at {cut}"));
                assert!(e.starts_with(&format!("corrupt {codec} data")), "{e}");
            }
        }
        let e = assert_corrupt(Codec::Zstd, &compressed(Codec::Zstd, &data)[..1000], "cut mid-frame");
        assert!(e.contains("truncated"), "{e}");
    }

    /// The cut lz4_flex alone would miss: right after a complete block.
    #[test]
    fn lz4_cut_at_every_block_boundary_is_an_error() {
        let packed = compressed(Codec::Lz4, &wal_like(1 << 20));
        // Header: magic 4, FLG, BD, HC (no content size or dictionary id).
        let mut at = 7;
        let mut cuts = 0;
        loop {
            let size = u32::from_le_bytes(packed[at..at + 4].try_into().unwrap());
            if size == 0 {
                break;
            }
            at += 4 + (size & 0x7FFF_FFFF) as usize;
            let e = assert_corrupt(Codec::Lz4, &packed[..at], "cut at a block boundary");
            assert!(e.contains("truncated"), "{e}");
            cuts += 1;
        }
        assert!(cuts >= 3, "only {cuts} blocks");
        // End mark present but the content checksum cut off.
        assert_corrupt(Codec::Lz4, &packed[..packed.len() - 4], "checksum cut off");
    }

    #[test]
    fn flipped_bits_and_trailing_garbage_are_errors() {
        let data = wal_like(1 << 20);
        for codec in [Codec::Zstd, Codec::Lz4, Codec::Gzip] {
            let packed = compressed(codec, &data);
            // Inside the compressed data, and in the checksum at the end.
            for at in [packed.len() / 3, packed.len() / 2, packed.len() - 1] {
                let mut bad = packed.clone();
                bad[at] ^= 0x10;
                assert_corrupt(codec, &bad, &format!("bit flipped at {at}"));
            }
            let mut longer = packed.clone();
            longer.extend_from_slice(b"garbage!");
            assert_corrupt(codec, &longer, "trailing garbage");
            assert_corrupt(codec, &data[..4096], "uncompressed input");
        }
    }

    #[test]
    fn concatenated_frames_decode_whole() {
        for codec in [Codec::Zstd, Codec::Lz4, Codec::Gzip] {
            let mut both = compressed(codec, b"first ");
            both.extend(compressed(codec, b"second"));
            let mut out = Vec::new();
            codec.decompress(&both[..], &mut out).unwrap();
            assert_eq!(out, b"first second", "{codec}");
        }
    }

    #[test]
    fn read_and_write_failures_are_not_called_corruption() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        impl Write for Failing {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let packed = compressed(Codec::Zstd, &wal_like(1 << 20));
        for codec in Codec::ALL {
            assert!(matches!(
                codec.decompress(Failing, Vec::new()),
                Err(CodecError::Read(_))
            ));
            assert!(matches!(
                codec.compress(Failing, Vec::new(), None),
                Err(CodecError::Read(_))
            ));
            assert!(matches!(
                codec.compress(&b"x"[..], Failing, None),
                Err(CodecError::Write(_))
            ));
        }
        assert!(matches!(
            Codec::Zstd.decompress(&packed[..], Failing),
            Err(CodecError::Write(_))
        ));
    }

    #[test]
    fn same_content_judges_decompressed_bytes() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("raw");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&raw, &data).unwrap();
        for codec in [Codec::Zstd, Codec::Lz4, Codec::Gzip] {
            let packed = d.path().join(format!("p{}", codec.suffix()));
            let mut out = Vec::new();
            codec.compress(&data[..], &mut out, None).unwrap();
            std::fs::write(&packed, &out).unwrap();
            assert!(same_content(&packed, codec, &raw).unwrap(), "{codec}");
            // Another level gives other bytes but the same content.
            if codec == Codec::Zstd {
                let mut other = Vec::new();
                codec.compress(&data[..], &mut other, Some(19)).unwrap();
                assert_ne!(other, out);
                std::fs::write(&packed, &other).unwrap();
                assert!(same_content(&packed, codec, &raw).unwrap());
            }
            let mut longer = data.clone();
            longer.push(1);
            let mut o2 = Vec::new();
            codec.compress(&longer[..], &mut o2, None).unwrap();
            std::fs::write(&packed, &o2).unwrap();
            assert!(!same_content(&packed, codec, &raw).unwrap(), "{codec}: longer content");
            std::fs::write(&packed, &out[..out.len() / 2]).unwrap();
            assert!(
                !same_content(&packed, codec, &raw).unwrap(),
                "{codec}: corrupt is not the same"
            );
        }
    }
}
