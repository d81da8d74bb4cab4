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
//! - [`redact`]: redaction by structure and by value, the one pass for all that is stored, logged
//!   or printed as an error.
//! - [`seal`]: the key kept outside the state that seals what promote believes later (decisions,
//!   stage results, run sources, the audit chain, its own commits).
//! - [`providers`]: where evidence comes from: Prometheus and web JSON (metrics), HTTP and
//!   Kubernetes / Argo CD (health), log sources, and Rego policies (regorus).
//! - [`store`]: the state port: [`store::Store`] over a [`store::Backend`] (today
//!   [`store::sqlite`]: SQLite in WAL mode, group commit through one writer task), the records and
//!   writes every backend shares, the audit chain's hash ([`store::chain`]) and the change feed
//!   that wakes whoever waits for a write, from this process or another.
//! - [`governance`]: the users file (groups, hashed tokens), freeze windows, notifications, and the
//!   checks of the files a pipeline names (users, policies) at validate time.
//! - [`stages`]: the stage kinds that run, one file each (`deploy`, `wait`, `approval`, `metrics`,
//!   `logs`, `policy`), each an `impl stages::Run`; what deploy and policy share is
//!   `stages::policies`.
//! - [`exec`]: the executor: starts runs and walks their DAG on tokio, durably; retries what is
//!   transient; stops on a cancellation token; metrics.
//! - [`ops`]: what people and programs ask (check a file, start a run, decide, roll back), with
//!   the rules they carry, who may ask them included ([`ops::access`]); the CLI and the server
//!   both call it.
//! - [`clock`]: the one clock (jiff) and durations for people.
//! - [`files`]: reading the files a user names: regular files only, capped, UTF-8 errors placed.
//! - [`server`]: `promote serve`: webhook receivers (verified per provider) that start runs, the
//!   API over `ops`, metrics; the executor in process.
//! - [`cli`]: the `promote` command line (parse -> ops -> print); `main.rs` only calls it.

pub mod analysis;
pub mod cli;
pub mod clock;
pub mod diag;
pub mod exec;
pub mod files;
pub mod git;
pub mod governance;
pub mod logs;
pub mod model;
pub mod ops;
pub mod plan;
pub mod providers;
pub mod redact;
pub mod seal;
pub mod secret;
pub mod server;
pub mod stages;
pub mod store;
