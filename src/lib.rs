//! promote: a release promotion pipeline runner for GitOps.
//!
//! # Layout
//!
//! Layers point one way, from what the user wrote to what runs:
//!
//! - [`diag`]: positioned errors and warnings (`FILE:LINE:COL: error: MESSAGE`) and "did you mean".
//! - [`model`]: the pipeline file's types, read from YAML with every position kept; no I/O.
//! - [`plan`]: checks how the parts fit (names, cycles, expressions, environments) and builds the
//!   stage DAG with its waves; renders it as text, DOT or Mermaid.
//! - [`analysis`]: judging numbers, no I/O: Argo Rollouts' measurement phases and limits, the
//!   Mann-Whitney interval and Kayenta's classification and score.
//! - [`logs`]: log lines mined into templates (masking, an online Drain-like miner); no I/O.
//! - [`git`]: what promote writes into environment repos: format-preserving YAML edits, promotion
//!   and rollback commits built in memory in a kept bare clone, pushed with retries.
//! - [`secret`]: secret values that never print.
//! - [`providers`]: where evidence comes from: Prometheus and web JSON (metrics), HTTP and
//!   Kubernetes / Argo CD (health), log sources, and Rego policies (regorus).
//! - [`store`]: durable state (runs, stages, decisions, environment locks) in SQLite, and the
//!   hash-chained audit trail (`store::audit`: chained inside SQLite, verified, exported).
//! - [`governance`]: the users file (groups, hashed tokens), freeze windows, notifications, and the
//!   checks of the files a pipeline names (users, policies) at validate time.
//! - [`stages`]: the stage kinds that run, one file each (`deploy`, `wait`, `approval`, `metrics`,
//!   `logs`, `policy`).
//! - [`exec`]: the executor: starts runs and walks their DAG on tokio, durably; metrics.
//! - [`cli`]: the `promote` command line; `main.rs` only calls it.

pub mod analysis;
pub mod cli;
pub mod clock;
pub mod diag;
pub mod exec;
pub mod git;
pub mod governance;
pub mod logs;
pub mod model;
pub mod ops;
pub mod plan;
pub mod providers;
pub mod secret;
pub mod stages;
pub mod store;
