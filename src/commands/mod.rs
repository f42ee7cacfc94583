//! One file per command; each parses nothing and decides little: it loads
//! the typed config, calls the library, and turns the outcome into output and
//! an exit code.

pub mod archiver;
pub mod backup;
pub mod cleanup;
pub mod demo;
pub mod queue;
pub mod recover;
pub mod restore;
pub mod standby;

/// Exit codes shared by the commands (pitrtools: 0 ok, 1 action failed, 2 error).
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

/// Exit status for a command line that does not parse. restore_command's
/// must be above 125: status 2 would tell PostgreSQL "file not in the
/// archive", and a typo in restore_command would end archive recovery early.
pub fn usage_error_code(args: &[std::ffi::OsString]) -> u8 {
    // Both are PostgreSQL's restore_command (recover's for a recovered copy).
    let restore_command = args.get(1).is_some_and(|a| a == "restore")
        || (args.get(1).is_some_and(|a| a == "recover") && args.iter().any(|a| a == "--restore-wal"));
    if restore_command {
        crate::restore::EXIT_FATAL
    } else {
        EXIT_ERROR
    }
}

/// For errors before logging is set up (bad config, bad arguments).
pub fn early_error(program: &str, what: &str, err: &dyn std::fmt::Display) -> u8 {
    eprintln!("{program}: {what}: {err}");
    EXIT_ERROR
}

/// Configuration warnings (legacy keys, unknown keys, rsync options with no
/// effect), on stderr. Only for commands a person runs: archive, restore and
/// cleanup calls go to PostgreSQL's log once per segment and print none.
pub fn print_warnings(program: &str, warnings: &[crate::config::ConfigWarning]) {
    for w in warnings {
        eprintln!("{program}: configuration warning: {w}");
    }
}

/// Refuses root: a WAL archive written by root is unreadable by the
/// postgres user on the standby, and a hook run as root is a liability.
pub fn refuse_root(program: &str) -> Result<(), String> {
    if nix::unistd::geteuid().is_root() {
        return Err(format!(
            "{program} must not run as root; run it as the PostgreSQL OS user (usually postgres), e.g. `runuser -u postgres -- {program} ...`"
        ));
    }
    Ok(())
}

/// Name of the effective OS user.
pub fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid {}", nix::unistd::geteuid()))
}
