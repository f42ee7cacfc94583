//! PostgreSQL's own `backup_manifest` (documentation: "Backup Manifest
//! Format", version 1), written into a restored data directory so that
//! `pg_verifybackup` checks the copy before it is started. The layout is
//! pg_basebackup's: one line per file, and the SHA-256 `Manifest-Checksum`
//! covering everything up to and including the newline before its line.

use std::fmt::Write as _;

use super::manifest::{format_lsn, Manifest};

/// JSON string contents for `s`.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// "2026-11-30 10:15:00 GMT", as PostgreSQL writes Last-Modified.
fn last_modified(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S GMT")
        .to_string()
}

/// The manifest text for the files of `m`.
pub fn render(m: &Manifest) -> String {
    let mut s = String::from("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [");
    for (i, f) in m.files.iter().enumerate() {
        // PostgreSQL stores the CRC-32C in host byte order and prints its bytes.
        let crc: String = f.crc.to_ne_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let _ = write!(
            s,
            "{}\n{{ \"Path\": \"{}\", \"Size\": {}, \"Last-Modified\": \"{}\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{crc}\" }}",
            if i == 0 { "" } else { "," },
            escape(&f.path),
            f.size,
            last_modified(f.mtime)
        );
    }
    let _ = write!(
        s,
        " ],\n\"WAL-Ranges\": [\n{{ \"Timeline\": {}, \"Start-LSN\": \"{}\", \"End-LSN\": \"{}\" }}\n],\n",
        m.timeline,
        format_lsn(m.start_lsn),
        format_lsn(m.stop_lsn)
    );
    let digest = openssl::sha::sha256(s.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let _ = writeln!(s, "\"Manifest-Checksum\": \"{hex}\"}}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_basebackup_layout_and_checksum() {
        let mut m = super::super::manifest::tests::sample();
        m.files[0].path = "a\"b".into();
        let text = render(&m);
        assert!(text.starts_with("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{ \"Path\": \"a\\\"b\", \"Size\": 8192, \"Last-Modified\": \"2025-11-30 10:13:20 GMT\""), "{text}");
        assert!(
            text.contains("\"Start-LSN\": \"0/2000028\", \"End-LSN\": \"1/2000138\""),
            "{text}"
        );
        // The checksum covers the text up to the newline before its own line.
        let cut = text[..text.len() - 1].rfind('\n').unwrap() + 1;
        let digest = openssl::sha::sha256(&text.as_bytes()[..cut]);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            text.ends_with(&format!("\"Manifest-Checksum\": \"{hex}\"}}\n")),
            "{text}"
        );
    }
}
