//! `-P`: connect to the master and say what was found.

use anyhow::Result;

use super::Standby;
use crate::pg::master::{Master, MasterTarget};

pub fn run(sb: &Standby) -> Result<()> {
    let target = MasterTarget::from_standby(sb.cfg)?;
    let mut m = Master::open(&target, "pitrkit ping")?;
    let version = m.version_string()?;
    let recovery = m.in_recovery()?;
    println!("master {}: {version}", target.describe());
    println!("  route: {}", m.route);
    match m.tls_version()? {
        Some(v) => println!("  TLS: {v} (sslmode {})", target.sslmode),
        None => println!("  TLS: off (sslmode {})", target.sslmode),
    }
    println!(
        "  role: {}",
        if recovery {
            "in recovery (this is a standby, not a master)"
        } else {
            "primary (accepting writes)"
        }
    );
    println!(
        "  helper functions (sql/pitrkit_helpers.sql): {}",
        if m.helpers {
            "installed"
        } else {
            "not installed (built-in functions will be used)"
        }
    );
    match m.data_directory() {
        Ok(d) => println!("  data directory: {}", d.display()),
        Err(e) => println!("  data directory: not readable by {}: {e}", target.user),
    }
    if m.version.major() != sb.version.major() {
        println!(
            "  WARNING: the master runs PostgreSQL {} but this standby's binaries are {}: a base backup cannot work",
            m.version, sb.version
        );
    }
    Ok(())
}
