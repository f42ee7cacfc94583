//! pitrkit: WAL archiving, shipping and standby management for PostgreSQL.
//!
//! The file tree mirrors the concerns: `config` (INI files, every option
//! defined once), `wal` (names and arithmetic), `fsutil` (durable writes),
//! `compress` (codecs), `archive` (archive_command, queues, delivery state),
//! `restore` (restore_command), `cleanup` (archive_cleanup_command),
//! `transport` (ssh and rsync argument vectors), `notify` (user hooks),
//! `logging`, `tools` (finding programs), `pg` (talking to PostgreSQL) and
//! `commands` (one thin file per subcommand).

pub mod archive;
pub mod backup;
pub mod cleanup;
pub mod cli;
pub mod commands;
pub mod compress;
pub mod config;
pub mod fsutil;
pub mod integrity;
pub mod layout;
pub mod logging;
pub mod notify;
pub mod pg;
pub mod restore;
pub mod standby;
pub mod storage;
#[cfg(any(test, feature = "test-support"))]
pub mod testsupport;
pub mod tools;
pub mod transport;
pub mod wal;
pub mod walcheck;
