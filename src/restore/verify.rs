//! The checks restore makes while it copies: the `.sum` sidecar of a plain
//! file, the page headers of every segment, the full WAL check of a segment
//! without a stored checksum (and of a record it shares with a neighbour),
//! and the contents of a timeline history file. See `crate::layout` for the
//! stored forms and `crate::walcheck` for the WAL check.

use std::io::{self, Read, Write};

use crate::integrity::{self, Sum, Summer};
use crate::storage::{read_small, Storage};
use crate::wal::WalName;
use crate::walcheck::{WalCheck, WalCheckError, WalSummary};

pub(super) type Verdict = Option<Result<WalSummary, WalCheckError>>;

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
    /// `history`: the name's timeline history, see [`super::crossing::load_history`].
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
pub fn copy(mut input: impl Read, out: &mut impl Write) -> Result<u64, CopyError> {
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

/// The stored checksum of plain `stored` (its `.sum` sidecar), if it has one.
pub fn read_sidecar(archive: &dyn Storage, stored: &str) -> Result<Option<Sum>, String> {
    let sum = integrity::sum_name(stored);
    let path = archive.locate(&sum);
    let bytes = match read_small(archive, &sum) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(None),
        Err(e) => return Err(format!("cannot read its checksum file {path}: {e}")),
    };
    // Not UTF-8 cannot parse as a checksum line either.
    Sum::parse(&String::from_utf8_lossy(&bytes)).map(Some).map_err(|e| {
        format!(
            "its checksum file {path} is damaged ({e}); if the WAL file itself is intact, move the checksum file aside and restore checks every record instead"
        )
    })
}

pub use crate::walcheck::{check_history, parse_history};

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
