//! `pitrkit cleanup`.

use crate::cli::CleanupArgs;

pub fn run(program: &str, _args: CleanupArgs) -> u8 {
    eprintln!("{program}: cleanup is not in this build yet");
    super::EXIT_ERROR
}
