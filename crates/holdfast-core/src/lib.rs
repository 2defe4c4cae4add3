//! Holdfast's domain types and rules, shared by every other crate.
//!
//! **Architecture invariant:** this crate does no I/O: no files, no processes, no network, no clock
//! reads. It parses and validates what users write (source and repository URLs, retention
//! policies) and describes what a snapshot records about itself.

pub mod agent;
pub mod alert;
pub mod drill;
pub mod job;
pub mod lifecycle;
pub mod location;
pub mod meta;
pub mod plan;
pub mod retention;
pub mod schedule;

pub use location::{KnownHosts, RepoLocation, SourceKind, SourceSpec, StorageKind};
pub use meta::SnapshotMeta;
pub use retention::KeepPolicy;
pub use schedule::Schedule;

/// An error in what a user wrote: a URL, a flag value, a policy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what}: {reason}")]
pub struct InputError {
    /// The thing that is wrong, e.g. "source URL `foo://x`".
    pub what: String,
    /// Why, and what to write instead.
    pub reason: String,
}

impl InputError {
    pub fn new(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
