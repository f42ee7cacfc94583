//! Configuration: pitrtools INI files read unchanged, validated into typed structs.

pub mod archiver;
pub mod ini;
pub mod options;
pub mod standby;
pub mod validate;

pub use archiver::ArchiverConfig;
pub use ini::{ConfigError, IniFile};
pub use options::Options;
pub use standby::StandbyConfig;
