//! `pitrkit restore`.

use crate::cli::RestoreArgs;

pub fn run(program: &str, _args: RestoreArgs) -> u8 {
    eprintln!("{program}: restore is not in this build yet");
    super::EXIT_ERROR
}
