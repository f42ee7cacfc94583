//! `-P`: connect to the master and say what was found.

use anyhow::Result;

use super::report::PingReport;
use super::Standby;
use crate::pg::master::{Master, MasterTarget};

pub fn run(sb: &Standby) -> Result<PingReport> {
    let target = MasterTarget::from_standby(sb.cfg)?;
    let mut m = Master::open(&target, "pitrkit ping")?;
    Ok(PingReport {
        master: target.describe(),
        user: target.user.clone(),
        version: m.version_string()?,
        in_recovery: m.in_recovery()?,
        helpers: m.helpers,
        data_directory: m.data_directory().map_err(|e| e.to_string()),
        major_mismatch: (m.version.major() != sb.version.major())
            .then(|| (m.version.to_string(), sb.version.to_string())),
    })
}
