//! `pitrkit standby` / `cmd_standby`.

use super::{early_error, EXIT_ERROR};
use crate::cli::StandbyArgs;
use crate::config::options::{Options, STANDBY_OPTIONS};
use crate::config::IniFile;

pub fn run(program: &str, args: StandbyArgs) -> u8 {
    let file = match IniFile::load(&args.config) {
        Ok(f) => f,
        Err(e) => return early_error(program, "configuration error", &e),
    };
    if let Err(e) = Options::new(&file, STANDBY_OPTIONS) {
        return early_error(program, "configuration error", &e);
    }
    if let Some(v) = &args.failover {
        if v != "999" {
            return early_error(program, "usage", &"failover is -F999 (the number is a safety catch)");
        }
    }
    eprintln!(
        "{program}: {} is valid, but the standby actions (-I -B -S -F999 -R -P -A) are not in this build yet; \
         keep pitrtools' cmd_standby for them until the standby release",
        args.config.display()
    );
    EXIT_ERROR
}
