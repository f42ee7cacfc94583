//! The checksum sidecar of a plain archived file: `X.sum` beside `X`.
//!
//! Format (one line): `crc32c <8 lowercase hex digits> <size in bytes>\n`.
//! See [`crate::layout`] for when it is written and who reads it.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::layout::SUM_SUFFIX;

/// The CRC-32C and size of a file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sum {
    pub crc: u32,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("not a pitrkit checksum file (expected 'crc32c <8 hex digits> <size>'): {0:?}")]
pub struct BadSum(pub String);

impl Sum {
    /// Sums everything `r` yields.
    pub fn of_reader(mut r: impl Read) -> io::Result<Sum> {
        let mut buf = vec![0u8; 1 << 20];
        let mut sum = Summer::default();
        loop {
            match r.read(&mut buf) {
                Ok(0) => return Ok(sum.finish()),
                Ok(n) => sum.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub fn of_file(path: &Path) -> io::Result<Sum> {
        Sum::of_reader(File::open(path)?)
    }

    /// The sidecar's text.
    pub fn render(&self) -> String {
        format!("crc32c {:08x} {}\n", self.crc, self.size)
    }

    pub fn parse(text: &str) -> Result<Sum, BadSum> {
        let bad = || BadSum(text.chars().take(80).collect());
        let line = text.strip_suffix('\n').ok_or_else(bad)?;
        let mut words = line.split(' ');
        let (Some("crc32c"), Some(crc), Some(size), None) = (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(bad());
        };
        if crc.len() != 8 || !crc.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad());
        }
        let crc = u32::from_str_radix(crc, 16).map_err(|_| bad())?;
        let size = size.parse().map_err(|_| bad())?;
        Ok(Sum { crc, size })
    }
}

impl fmt::Display for Sum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "crc32c {:08x}, {} bytes", self.crc, self.size)
    }
}

/// Incremental [`Sum`], for data that is checked while it is copied.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summer {
    crc: u32,
    size: u64,
}

impl Summer {
    pub fn update(&mut self, data: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.size += data.len() as u64;
    }

    pub fn finish(self) -> Sum {
        Sum {
            crc: self.crc,
            size: self.size,
        }
    }
}

/// `X` → `X.sum`.
pub fn sum_name(name: &str) -> String {
    format!("{name}{SUM_SUFFIX}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_parses_and_matches_the_standard_check_value() {
        // CRC-32C of "123456789" is e3069283 (RFC 3720).
        let s = Sum::of_reader(&b"123456789"[..]).unwrap();
        assert_eq!(s.render(), "crc32c e3069283 9\n");
        assert_eq!(Sum::parse(&s.render()).unwrap(), s);
        for bad in [
            "",
            "crc32c e3069283 9",
            "crc32c E3069283 9\n",
            "crc32c e306928 9\n",
            "crc32c e3069283 -9\n",
            "crc32c e3069283 9 x\n",
            "md5 e3069283 9\n",
        ] {
            assert!(Sum::parse(bad).is_err(), "{bad:?}");
        }
        let mut inc = Summer::default();
        inc.update(b"1234");
        inc.update(b"56789");
        assert_eq!(inc.finish(), s);
    }
}
