use std::process::ExitCode;

use pitrkit::cli::{self, Command};
use pitrkit::commands;

fn main() -> ExitCode {
    let raw: Vec<_> = std::env::args_os().collect();
    let program = cli::program_name(&raw);
    let args = cli::multi_call_args(raw);
    let usage_error = commands::usage_error_code(&args);
    let cli = match cli::parse(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { usage_error } else { commands::EXIT_OK });
        }
    };
    let code = match cli.command {
        Command::Archiver(a) => commands::archiver::run(&program, a),
        Command::Standby(s) => commands::standby::run(&program, s),
        Command::Queue(q) => commands::queue::run(&program, q),
        Command::Restore(r) => commands::restore::run(&program, r),
        Command::Cleanup(c) => commands::cleanup::run(&program, c),
        Command::Demo(d) => commands::demo::run(&program, d),
        Command::Backup(b) => commands::backup::run(&program, b),
        Command::Recover(r) => commands::recover::run(&program, r),
    };
    ExitCode::from(code)
}
