//! The integration tests: one binary, one module per area. Data lives in tests/fixtures.

mod access;
mod audit;
mod cli;
mod compliance;
mod conformance;
mod decisions;
mod deploy;
mod dora;
mod drift;
mod edit;
mod exec;
mod fencing;
mod fixtures;
mod generate;
mod git;
mod governance;
mod hardening;
mod health;
mod hosts;
mod loghub;
mod logstage;
mod metrics;
mod notes;
mod oci;
mod octokit;
mod oidc;
mod openapi;
mod order;
mod pages;
mod pg;
mod plan;
mod prom;
mod pullrequests;
mod registry;
mod reminders;
mod replicas;
mod report;
mod repos;
mod retry;
mod server;
mod stats;
mod ui;
mod watch;

/// The built `promote` binary.
pub fn promote_bin() -> &'static str {
    env!("CARGO_BIN_EXE_promote")
}
