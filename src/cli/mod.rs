//! The `promote` command line: parses arguments, runs a command, maps outcomes to exit codes.

mod approve;
mod audit;
mod drift;
mod graph;
mod logs;
mod probe;
mod remote;
mod rollback;
mod run;
mod serve;
mod status;
mod validate;
mod watch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::diag::Diagnostic;

/// Exit code for bad input (invalid pipeline files, unreadable files, refused requests).
pub const EXIT_BAD_INPUT: u8 = 2;

/// promote: release promotion pipelines for GitOps.
#[derive(Debug, Parser)]
#[command(name = "promote", version, about, long_about = None)]
pub struct Cli {
    /// State database (default `.promote/state.db` in the current folder).
    #[arg(long, global = true, value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// Act through a `promote serve` at this URL (run, status, approve, reject, break-glass),
    /// with `PROMOTE_TOKEN`.
    #[arg(long, global = true, env = "PROMOTE_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Log format on stderr (`PROMOTE_LOG=info` for more than warnings).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check pipeline files (or folders of *.yaml) and print every problem.
    Validate(validate::Args),
    /// Print a pipeline's stage DAG as text (its waves), DOT or Mermaid.
    Graph(graph::Args),
    /// Run a pipeline for a version: live progress on stderr, a summary on stdout.
    Run(run::RunArgs),
    /// Runs and their stages.
    Status(status::Args),
    /// Carry an interrupted run on from its last durable step.
    Resume(run::ResumeArgs),
    /// Approve an approval stage of a run.
    Approve(approve::ApproveArgs),
    /// Reject an approval stage of a run (a reason is required).
    Reject(approve::RejectArgs),
    /// Override a freeze window for one deploy stage of a run (a reason is required; only the
    /// environment's `freeze.breakGlass` people, never whoever started the run).
    BreakGlass(approve::RejectArgs),
    /// The hash-chained audit trail: `log`, `verify`.
    Audit(audit::Args),
    /// Make an API token for a user of the users file (printed once; store only its hash).
    Token(audit::TokenArgs),
    /// Revert an environment to its previous (or a given) promoted state, in a new commit.
    Rollback(rollback::Args),
    /// The log template miner, and log templates marked not a risk.
    Logs(logs::Args),
    /// Serve webhooks that start runs, the API and metrics; drive runs in process.
    Serve(serve::Args),
    /// Changes in environment branches promote did not make: check, list, show, accept, reject.
    Drift(drift::Args),
    /// Releases kept being judged after their runs: list, show, clear a held version, run.
    Watch(watch::Args),
    /// Ask a `promote serve` whether it is up (exit 0 on a 2xx answer): the image's HEALTHCHECK.
    Probe(probe::Args),
}

/// Runs the command line; the exit code follows docs/cli.md.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let state = cli.state.clone().unwrap_or_else(|| PathBuf::from(".promote/state.db"));
    let result = match (cli.command, cli.server.as_deref()) {
        (Command::Run(a), Some(url)) => remote::run(url, &a.file, &a.version, a.detach),
        (Command::Status(a), Some(url)) => remote::status(url, a.run.as_deref(), a.json),
        (Command::Approve(a), Some(url)) => remote::decide(url, &a.run, &a.stage, &a.user, "approve", a.comment.as_deref()),
        (Command::Reject(a), Some(url)) => remote::decide(url, &a.run, &a.stage, &a.user, "reject", Some(&a.reason)),
        (Command::BreakGlass(a), Some(url)) => remote::decide(url, &a.run, &a.stage, &a.user, "break-glass", Some(&a.reason)),
        (Command::Drift(a), Some(url)) => remote::drift(url, &a.command),
        (Command::Watch(a), Some(url)) => remote::watch(url, &a.command),
        (command, _) => local(command, &state),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("promote: error: {}", crate::redact::text(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn local(command: Command, state: &std::path::Path) -> anyhow::Result<ExitCode> {
    let state = state.to_path_buf();
    match command {
        Command::Validate(args) => validate::run(args),
        Command::Serve(args) => serve::run(args, &state),
        Command::Drift(args) => drift::run(args, &state),
        Command::Watch(args) => watch::run(args, &state),
        Command::Graph(args) => graph::run(args),
        Command::Rollback(args) => rollback::run(args, &state),
        Command::Run(args) => run::run(args, &state),
        Command::Status(args) => status::run(args, &state),
        Command::Resume(args) => run::resume(args, &state),
        Command::Approve(args) => approve::approve(args, &state),
        Command::Reject(args) => approve::reject(args, &state),
        Command::BreakGlass(args) => approve::break_glass(args, &state),
        Command::Audit(args) => audit::run(args, &state),
        Command::Token(args) => audit::token(args),
        Command::Logs(args) => logs::run(args, &state),
        Command::Probe(args) => probe::run(args),
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROMOTE_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(crate::redact::Stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Completes on Ctrl-C or SIGTERM (what stops `run`, `resume` and `serve` at a durable point).
pub(crate) async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => t.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
    }
}

/// A tokio runtime for the commands that need one.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Opens the state store.
pub async fn open_store(state: &Path) -> anyhow::Result<crate::store::Store> {
    Ok(crate::store::Store::open(state).await?)
}

/// An executor over the state store, with the git writer configured from the environment.
pub async fn executor(state: &Path) -> anyhow::Result<crate::exec::Executor> {
    let store = open_store(state).await?;
    let config = crate::git::WriterConfig::from_env(cache_dir(state)).map_err(|e| anyhow::anyhow!(e))?;
    Ok(crate::exec::Executor {
        store,
        writer: std::sync::Arc::new(crate::git::Writer::new(config)),
        metrics: std::sync::Arc::new(crate::exec::Metrics::default()),
        poll: std::time::Duration::from_millis(200),
        // A run driven here can take a callback through a server that shares its state.
        public_url: std::env::var("PROMOTE_PUBLIC_URL").ok().filter(|u| !u.is_empty()),
        directory: None,
    })
}

/// Where the bare clones of environment repos live: `repos/` beside the state file.
/// Where the git writer keeps its caches: beside the state file, or, for a state in a database
/// (which replicas share, while each keeps its own caches), `.promote/repos` in the working folder.
pub fn cache_dir(state: &Path) -> PathBuf {
    let location = state.to_string_lossy();
    if crate::store::database_url().is_some() || crate::store::postgres::is_url(&location) {
        return PathBuf::from(".promote/repos");
    }
    state.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).join("repos")
}

pub use crate::ops::{Checked, check_file};

/// Prints diagnostics on stderr, one per line.
/// What an operation that answers one line did: the line on stdout and 0, or its refusal on
/// stderr and 2; other errors go up.
pub fn report(done: Result<String, crate::ops::OpsError>) -> anyhow::Result<ExitCode> {
    match done {
        Ok(line) => {
            println!("{line}");
            Ok(ExitCode::SUCCESS)
        }
        Err(crate::ops::OpsError::Refused(why) | crate::ops::OpsError::Forbidden(why) | crate::ops::OpsError::Conflict(why)) => {
            eprintln!("promote: error: {why}");
            Ok(ExitCode::from(EXIT_BAD_INPUT))
        }
        Err(e) => Err(e.into()),
    }
}

pub fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        eprintln!("{d}");
    }
}
