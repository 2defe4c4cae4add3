//! End-to-end tests of the `holdfast` binary against real servers: PostgreSQL, MariaDB and
//! Redis on this machine, an S3-compatible server (moto), and the stock `restic` binary reading
//! what Holdfast wrote. `scripts/test` starts them all.

mod helpers;

mod agents;
mod alert_rules;
mod alerts;
mod drills;
mod endpoints;
mod failures;
mod latest;
mod mysql;
mod oidc;
mod openapi;
mod other_sources;
mod postgres;
mod proxy;
mod repository;
mod restores;
mod server;
mod shutdown;
mod storage;
mod ui;
mod verify;
mod writer;
