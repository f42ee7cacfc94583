//! The dot-names under `l_archivedir`: defined in [`crate::layout::queue`]
//! (one place for every name pitrkit gives its own files) and re-exported
//! here for the archive code.

pub use crate::layout::queue::*;
