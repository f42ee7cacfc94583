//! The `pitrkit.promoting` marker ([`crate::layout::PROMOTING_FILE`]): tied
//! to the one postmaster `-F999` promotes, so that a marker left behind
//! (a -F999 killed mid-way, then a restart by systemd or pg_ctl) never
//! makes a later, delayed standby apply WAL at once.

use std::fs;
use std::io;
use std::path::Path;

use crate::fsutil;
use crate::layout::PROMOTING_FILE;

/// A postmaster's identity: its pid and start time (lines 1 and 3 of
/// `postmaster.pid`); a restarted server never has both again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Postmaster {
    pub pid: String,
    pub start: String,
}

impl Postmaster {
    fn from_lines(text: &str) -> Option<Postmaster> {
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let (pid, start) = (*lines.first()?, *lines.get(2)?);
        let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        (ok(pid) && ok(start)).then(|| Postmaster {
            pid: pid.into(),
            start: start.into(),
        })
    }

    /// The postmaster `pgdata/postmaster.pid` names, if any.
    pub fn of(pgdata: &Path) -> Option<Postmaster> {
        Postmaster::from_lines(&fs::read_to_string(pgdata.join("postmaster.pid")).ok()?)
    }
}

/// The marker's content: the promoted postmaster's pid and start time, as
/// in postmaster.pid, then a line for whoever finds it.
pub fn content(pm: &Postmaster) -> String {
    format!(
        "{}\n\n{}\ncmd_standby -F999 is promoting the postmaster above: restore ignores restore_delay while it runs\n",
        pm.pid, pm.start
    )
}

/// Writes the marker for the postmaster running in `pgdata`.
pub fn write(pgdata: &Path, pm: &Postmaster) -> io::Result<()> {
    fsutil::write_durable(&pgdata.join(PROMOTING_FILE), content(pm).as_bytes(), 0o600)
}

/// Is `-F999` promoting the postmaster that runs in `pgdata` now? Only a
/// marker naming that very postmaster (pid and start time) counts.
pub fn is_current(pgdata: &Path) -> bool {
    let Ok(text) = fs::read_to_string(pgdata.join(PROMOTING_FILE)) else {
        return false;
    };
    matches!((Postmaster::from_lines(&text), Postmaster::of(pgdata)), (Some(m), Some(p)) if m == p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_counts_only_for_the_postmaster_it_names() {
        let d = tempfile::tempdir().unwrap();
        let pg = d.path();
        let pidfile = |pid: u32, start: u64| {
            fs::write(
                pg.join("postmaster.pid"),
                format!(
                    "{pid}\n{}\n{start}\n5432\n/tmp\n*\n  1234 5678\nready   \n",
                    pg.display()
                ),
            )
            .unwrap()
        };
        assert!(!is_current(pg), "no marker");
        pidfile(4242, 1_700_000_000);
        let pm = Postmaster::of(pg).unwrap();
        assert_eq!((pm.pid.as_str(), pm.start.as_str()), ("4242", "1700000000"));
        write(pg, &pm).unwrap();
        assert!(is_current(pg));
        // A restart (by systemd, pg_ctl, -A start): another pid or start time.
        pidfile(4243, 1_700_000_000);
        assert!(!is_current(pg));
        pidfile(4242, 1_700_000_900);
        assert!(!is_current(pg));
        // Stopped: no postmaster.pid.
        fs::remove_file(pg.join("postmaster.pid")).unwrap();
        assert!(!is_current(pg));
        // A marker of the old format (no identity) never counts.
        pidfile(4242, 1_700_000_000);
        fs::write(pg.join(PROMOTING_FILE), "cmd_standby -F999 is promoting this server\n").unwrap();
        assert!(!is_current(pg));
        fs::write(pg.join(PROMOTING_FILE), "").unwrap();
        assert!(!is_current(pg));
    }
}
