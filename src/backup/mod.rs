//! Backups you can recover from: `pitrkit backup` takes a set of the local
//! cluster (master or standby) into the repository (`backup_dir`), and
//! `pitrkit recover` restores one to a point in time. The repository layout
//! is in [`crate::layout::backup`].
//!
//! - `repo`: the repository (a directory or an s3:// prefix), its sets;
//! - `lock`: the repository lock (flock, or a lock object on S3);
//! - `manifest`: a set's manifest (what it holds, where it starts and stops);
//! - `files`: what is copied from the data directory (PostgreSQL's exclusions);
//! - `walrange`: the set's WAL, copied from the archive;
//! - `take`: the backup itself;
//! - `incremental`: what an incremental references instead of storing;
//! - `pool`: the workers that copy a set's files in parallel, in a fixed order;
//! - `target`: recovery targets and the choice of set;
//! - `recover`: a set restored into a new data directory, ready to recover;
//! - `pgmanifest`: PostgreSQL's `backup_manifest` for a restored copy;
//! - `catalog`: `--list` (text and JSON);
//! - `verify`: `--verify`: stored files and the archive's WAL;
//! - `expire`: `--expire`: retention, the hold, the archive's old WAL.

pub mod catalog;
pub mod expire;
pub mod files;
pub mod incremental;
pub mod lock;
pub mod manifest;
pub mod pgmanifest;
pub mod pool;
pub mod recover;
pub mod repo;
pub mod take;
pub mod target;
pub mod verify;
pub mod walrange;
