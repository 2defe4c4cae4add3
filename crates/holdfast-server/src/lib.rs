//! `holdfast serve`: the REST API (with its OpenAPI document), the cron scheduler, the job
//! queue's reaper, and the API agents use, over the metadata store. Its embedded agent is a
//! `holdfast-agent` like any other, talking to this server over loopback.
//!
//! **Architecture invariant:** this is the only crate that serves HTTP. It reads and writes
//! metadata only through `holdfast-store`, and moves data only through `holdfast-engine`.

mod access;
mod api;
mod audit;
mod loops;
mod metrics;
mod model;
pub mod notify;
mod proxy;
mod repository;
mod retention;
pub mod scheduler;
mod secrets;
mod setup;
mod startup;
mod state;
mod ui;
mod worker;

pub use access::Role;
pub use access::oidc::OidcConfig;
pub use setup::{FirstStart, MIN_ADMIN_TOKEN_LEN, reset_admin_token};
pub use startup::{ServeError, Server, serve};
pub use state::{AppState, EndpointStats, ServerConfig};
