//! Test support shared by the unit tests and (with the `test-support`
//! feature) the integration tests: synthetic WAL.

pub mod wal {
    //! Synthetic WAL segments: a long page header alone, or a segment of
    //! real record structure that passes the full WAL check.

    use crate::wal::WalName;
    use crate::walcheck::{
        maxalign, LONG_HEADER, RECORD_HEADER, RM_XLOG_ID, SHORT_HEADER, XLOG_SWITCH, XLP_FIRST_IS_CONTRECORD,
        XLP_LONG_HEADER,
    };

    /// The segment size of every synthetic segment: 1 MiB (initdb --wal-segsize=1).
    pub const SEG: usize = 1 << 20;
    const BLCKSZ: usize = 8192;

    /// A long page header: timeline `tli`, page address, system identifier,
    /// segment size; what the archiver checks a segment's name against.
    pub fn long_header(tli: u32, page_addr: u64, sysid: u64, seg_size: u32) -> [u8; LONG_HEADER] {
        let mut b = [0u8; LONG_HEADER];
        b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        b[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        b[4..8].copy_from_slice(&tli.to_le_bytes());
        b[8..16].copy_from_slice(&page_addr.to_le_bytes());
        b[24..32].copy_from_slice(&sysid.to_le_bytes());
        b[32..36].copy_from_slice(&seg_size.to_le_bytes());
        b[36..40].copy_from_slice(&(BLCKSZ as u32).to_le_bytes());
        b
    }

    /// A [`SEG`] segment whose long page header matches `header_for`
    /// (another name than the file's, to test a renamed file), of system
    /// `sysid`, with some non-zero bytes after the header. It has no valid
    /// records: fine wherever a checksum is stored, not for the full WAL check.
    pub fn segment(header_for: &str, sysid: u64) -> Vec<u8> {
        let n = WalName::parse(header_for).unwrap();
        let mut b = vec![0u8; SEG];
        b[..LONG_HEADER].copy_from_slice(&long_header(
            n.timeline,
            n.segno(SEG as u64) * SEG as u64,
            sysid,
            SEG as u32,
        ));
        for (i, x) in b[LONG_HEADER..4000].iter_mut().enumerate() {
            *x = (i * 31 % 251) as u8;
        }
        b
    }

    /// Builds a synthetic segment of real record structure: records of the
    /// given lengths (header + payload), crossing pages as PostgreSQL lays
    /// them out, optionally ending with a switch record.
    pub struct Builder {
        pub data: Vec<u8>,
        seg_start: u64,
        pub pos: usize,
        prev: u64,
        tli: u32,
        pub starts: Vec<usize>,
    }

    impl Builder {
        pub fn new(name: &str, sysid: u64) -> Builder {
            Builder::segments(name, sysid, 1)
        }

        /// `count` consecutive segments from `name` on, as one stream:
        /// records cross from one into the next.
        pub fn segments(name: &str, sysid: u64, count: usize) -> Builder {
            let n = WalName::parse(name).unwrap();
            let seg_start = n.segno(SEG as u64) * SEG as u64;
            let mut data = vec![0u8; SEG * count];
            for p in 0..data.len() / BLCKSZ {
                let o = p * BLCKSZ;
                data[o..o + 2].copy_from_slice(&0xD110u16.to_le_bytes());
                let info = if o % SEG == 0 { XLP_LONG_HEADER } else { 0 };
                data[o + 2..o + 4].copy_from_slice(&info.to_le_bytes());
                data[o + 4..o + 8].copy_from_slice(&n.timeline.to_le_bytes());
                data[o + 8..o + 16].copy_from_slice(&(seg_start + o as u64).to_le_bytes());
                if o % SEG == 0 {
                    data[o + 24..o + 32].copy_from_slice(&sysid.to_le_bytes());
                    data[o + 32..o + 36].copy_from_slice(&(SEG as u32).to_le_bytes());
                    data[o + 36..o + 40].copy_from_slice(&(BLCKSZ as u32).to_le_bytes());
                }
            }
            Builder {
                data,
                seg_start,
                pos: LONG_HEADER,
                prev: seg_start - 100,
                tli: n.timeline,
                starts: Vec::new(),
            }
        }

        /// Writes `bytes` at the insert position, skipping page headers and
        /// flagging continuation pages.
        fn put(&mut self, mut bytes: &[u8], rem_total: usize) {
            let mut rem = rem_total;
            while !bytes.is_empty() && self.pos < self.data.len() {
                if self.pos % BLCKSZ == 0 {
                    let o = self.pos;
                    let info = u16::from_le_bytes([self.data[o + 2], self.data[o + 3]]) | XLP_FIRST_IS_CONTRECORD;
                    self.data[o + 2..o + 4].copy_from_slice(&info.to_le_bytes());
                    self.data[o + 16..o + 20].copy_from_slice(&(rem as u32).to_le_bytes());
                    self.pos += if o % SEG == 0 { LONG_HEADER } else { SHORT_HEADER };
                }
                let room = BLCKSZ - self.pos % BLCKSZ;
                let n = room.min(bytes.len());
                self.data[self.pos..self.pos + n].copy_from_slice(&bytes[..n]);
                self.pos += n;
                bytes = &bytes[n..];
                rem -= n;
            }
        }

        pub fn record(&mut self, payload_len: usize, rmid: u8, info: u8) -> &mut Self {
            if self.pos % BLCKSZ == 0 {
                self.pos += if self.pos % SEG == 0 { LONG_HEADER } else { SHORT_HEADER };
            }
            let start = self.pos;
            let lsn = self.seg_start + start as u64;
            let tot = RECORD_HEADER + payload_len;
            let payload: Vec<u8> = (0..payload_len).map(|i| (i * 13 + start) as u8).collect();
            let mut h = [0u8; RECORD_HEADER];
            h[0..4].copy_from_slice(&(tot as u32).to_le_bytes());
            h[4..8].copy_from_slice(&self.tli.to_le_bytes());
            h[8..16].copy_from_slice(&self.prev.to_le_bytes());
            h[16] = info;
            h[17] = rmid;
            let crc = crc32c::crc32c_append(crc32c::crc32c_append(0, &payload), &h[..20]);
            h[20..24].copy_from_slice(&crc.to_le_bytes());
            let mut all = h.to_vec();
            all.extend_from_slice(&payload);
            self.put(&all, tot);
            self.pos = maxalign(self.pos);
            self.prev = lsn;
            self.starts.push(start);
            self
        }

        /// Records until `until` bytes of the segment are used.
        pub fn fill(&mut self, until: usize) -> &mut Self {
            let mut i = 0;
            while self.pos < until {
                let left = until - self.pos;
                self.record([30, 5000, 200, 20000][i % 4].min(left.max(30)), 10, 0);
                i += 1;
            }
            self
        }

        /// The segment starts with the last `rem` bytes of a record begun
        /// in the previous segment.
        pub fn continued(&mut self, rem: usize) -> &mut Self {
            self.data[2] |= XLP_FIRST_IS_CONTRECORD as u8;
            self.data[16..20].copy_from_slice(&(rem as u32).to_le_bytes());
            self.put(&vec![0xAB; rem], rem);
            self.pos = maxalign(self.pos);
            self
        }

        pub fn switch(&mut self) -> &mut Self {
            self.record(0, RM_XLOG_ID, XLOG_SWITCH)
        }
    }
}

pub mod fixtures {
    //! A standby's side in a temporary directory: an archive directory, a
    //! data directory with pg_wal, and a standby configuration naming them.

    use std::fs;
    use std::path::{Path, PathBuf};

    use crate::config::{ConfigFile, IniFile, StandbyConfig};

    pub struct StandbyDirs {
        pub dir: tempfile::TempDir,
        pub archive: PathBuf,
        pub pgdata: PathBuf,
        pub pg_wal: PathBuf,
        pub cfg: StandbyConfig,
    }

    impl StandbyDirs {
        /// `archivedir` and `pgdata` set, plus the lines `extra` returns for
        /// the temporary root.
        pub fn new(extra: impl FnOnce(&Path) -> String) -> StandbyDirs {
            let dir = tempfile::tempdir().unwrap();
            let archive = dir.path().join("archive");
            let pgdata = dir.path().join("pgdata");
            let pg_wal = pgdata.join("pg_wal");
            fs::create_dir(&archive).unwrap();
            fs::create_dir_all(&pg_wal).unwrap();
            let text = format!(
                "archivedir: {}\npgdata: {}\n{}",
                archive.display(),
                pgdata.display(),
                extra(dir.path())
            );
            let cfg = StandbyConfig::from_ini(&IniFile::parse(Path::new("standby.ini"), &text).unwrap()).unwrap();
            StandbyDirs {
                dir,
                archive,
                pgdata,
                pg_wal,
                cfg,
            }
        }
    }

    /// The names in `dir`, sorted (proves what was left behind).
    pub fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// The in-memory [`crate::transport::Transport`] (slaves that can be down,
/// slow, lose files, hold other forms).
pub use crate::transport::memory as transport;
