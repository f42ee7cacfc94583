//! Sync mode's delivery ledger: `l_archivedir/.delivered/<wal>` (see
//! [`super::layout`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::layout::LEDGER_DIR;
use crate::fsutil;

/// Sync mode's record of which slaves already have a file, so a retry after
/// a partial failure does not queue (and send) it to them again. One line
/// per slave: its name and the size of the copy it received (older ledgers
/// hold the name alone).
pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    pub fn new(l_archivedir: &Path, wal: &str) -> Ledger {
        Ledger {
            path: l_archivedir.join(LEDGER_DIR).join(wal),
        }
    }

    /// The slaves recorded as having the file, with the size they got.
    pub fn delivered(&self) -> Vec<(String, Option<u64>)> {
        fs::read_to_string(&self.path)
            .map(|t| {
                t.lines()
                    .filter_map(|l| {
                        let mut w = l.split_whitespace();
                        let slave = w.next()?.to_string();
                        Some((slave, w.next().and_then(|n| n.parse().ok())))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Durably records `slaves` as having the file, `size` bytes of it.
    pub fn record(&self, slaves: &[String], size: u64) -> io::Result<()> {
        let dir = self.path.parent().expect("ledger path has a parent");
        fsutil::ensure_dir(dir, 0o700)?;
        let text: String = slaves.iter().map(|s| format!("{s} {size}\n")).collect();
        fsutil::write_durable(&self.path, text.as_bytes(), 0o600)
    }

    pub fn remove(&self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let l = Ledger::new(d.path(), "000000010000000000000001");
        assert!(l.delivered().is_empty());
        l.record(&["a".into(), "b".into()], 77).unwrap();
        assert_eq!(
            Ledger::new(d.path(), "000000010000000000000001").delivered(),
            vec![("a".to_string(), Some(77)), ("b".to_string(), Some(77))]
        );
        // A ledger written before sizes were recorded.
        fs::write(d.path().join(LEDGER_DIR).join("000000010000000000000001"), "a\n").unwrap();
        assert_eq!(l.delivered(), vec![("a".to_string(), None)]);
        l.remove();
        assert!(l.delivered().is_empty());
    }
}
