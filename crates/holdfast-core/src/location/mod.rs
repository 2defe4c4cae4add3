//! Where data comes from (sources) and where it goes (repositories), parsed from the URLs users
//! write on the command line and in config files.

pub mod confine;
mod repository;
mod source;

pub use repository::{KnownHosts, RepoLocation, StorageKind};
pub use source::{DbAddr, SourceKind, SourceSpec, redact_url};
