//! Moving files between hosts: the OpenSSH client and rsync, driven as
//! subprocesses with argument vectors (no shell). Local destinations need no
//! transport: they go through `fsutil` directly.

pub mod error;
pub mod pull;
pub mod remote;
pub mod rsync;
pub mod ssh;
