//! The `promote` command line: parses arguments, runs a command, maps outcomes to exit codes.

mod approve;
mod audit;
mod compliance;
mod drift;
mod graph;
mod key;
mod logs;
mod probe;
mod remote;
mod report;
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
    // `--state`, `--server` and `--log-format` belong to the commands they act on (`Local`,
    // `Remote`); given before the command (`promote --state X status`), as earlier versions
    // documented, they are still taken there, and refused for a command that has no use for them.
    #[arg(long, hide = true, value_name = "PATH")]
    state: Option<PathBuf>,
    #[arg(long, hide = true, value_name = "URL")]
    server: Option<String>,
    #[arg(long, hide = true, value_enum)]
    log_format: Option<LogFormat>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The options of a command that reads or writes a state: where it is, and how to log.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Local {
    /// The state: a SQLite file (default `.promote/state.db` in the current folder) or a
    /// `postgres://` URL (or `PROMOTE_DATABASE_URL`).
    #[arg(long, global = true, value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// Log format on stderr: `text` (colours only on a terminal) or `json`, one object a line
    /// (`PROMOTE_LOG=info` for more than warnings).
    #[arg(long, global = true, value_enum, env = "PROMOTE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// The option of a command that can act through a `promote serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Remote {
    /// Act through the `promote serve` at this URL (its API, with `PROMOTE_TOKEN`).
    #[arg(long, global = true, env = "PROMOTE_SERVER", value_name = "URL")]
    pub server: Option<String>,
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
    /// The key that seals the state, the audit chain and promote's commits: `generate`.
    Key(key::Args),
    /// Revert an environment to its previous (or a given) promoted state, in a new commit.
    Rollback(rollback::Args),
    /// The log template miner, and log templates marked not a risk.
    Logs(logs::Args),
    /// Serve webhooks that start runs, the API and metrics; drive runs in process.
    Serve(serve::Args),
    /// Changes in environment branches promote did not make: check, list, show, accept, reject.
    Drift(drift::Args),
    /// Every environment's current files judged by the pipeline's policies: check, list, show,
    /// accept (an exception until an end), revert.
    Compliance(compliance::Args),
    /// What happened to a failed or reverted release, and what else changed around it.
    Report(report::Args),
    /// Releases kept being judged after their runs: list, show, clear a held version, run.
    Watch(watch::Args),
    /// Ask a `promote serve` whether it is up (exit 0 on a 2xx answer): the image's HEALTHCHECK.
    Probe(probe::Args),
    /// Print shell completions (`promote completions bash > /etc/bash_completion.d/promote`).
    Completions(CompletionsArgs),
}

/// Arguments of `completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish (also elvish, powershell).
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

impl Command {
    /// The command's name, for messages.
    fn name(&self) -> &'static str {
        match self {
            Command::Validate(_) => "validate",
            Command::Graph(_) => "graph",
            Command::Run(_) => "run",
            Command::Status(_) => "status",
            Command::Resume(_) => "resume",
            Command::Approve(_) => "approve",
            Command::Reject(_) => "reject",
            Command::BreakGlass(_) => "break-glass",
            Command::Audit(_) => "audit",
            Command::Token(_) => "token",
            Command::Key(_) => "key",
            Command::Rollback(_) => "rollback",
            Command::Logs(_) => "logs",
            Command::Serve(_) => "serve",
            Command::Drift(_) => "drift",
            Command::Compliance(_) => "compliance",
            Command::Report(_) => "report",
            Command::Watch(_) => "watch",
            Command::Probe(_) => "probe",
            Command::Completions(_) => "completions",
        }
    }

    /// Its state and log options, if it has any.
    fn local(&self) -> Option<&Local> {
        match self {
            Command::Run(a) => Some(&a.local),
            Command::Status(a) => Some(&a.local),
            Command::Resume(a) => Some(&a.local),
            Command::Approve(a) => Some(&a.local),
            Command::Reject(a) | Command::BreakGlass(a) => Some(&a.local),
            Command::Audit(a) => Some(&a.local),
            Command::Rollback(a) => Some(&a.local),
            Command::Logs(a) => a.local(),
            Command::Serve(a) => Some(&a.local),
            Command::Drift(a) => Some(&a.local),
            Command::Compliance(a) => Some(&a.local),
            Command::Report(a) => Some(&a.local),
            Command::Watch(a) => Some(&a.local),
            Command::Validate(_) | Command::Graph(_) | Command::Token(_) | Command::Key(_) | Command::Probe(_) | Command::Completions(_) => None,
        }
    }

    /// Its `--server`, if it can act through a server.
    fn remote(&self) -> Option<&Remote> {
        match self {
            Command::Run(a) => Some(&a.remote),
            Command::Status(a) => Some(&a.remote),
            Command::Approve(a) => Some(&a.remote),
            Command::Reject(a) | Command::BreakGlass(a) => Some(&a.remote),
            Command::Drift(a) => Some(&a.remote),
            Command::Compliance(a) => Some(&a.remote),
            Command::Report(a) => Some(&a.remote),
            Command::Watch(a) => Some(&a.remote),
            _ => None,
        }
    }
}

/// Runs the command line; the exit code follows docs/cli.md.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = cli.command.name();
    let local = cli.command.local().cloned();
    let remote = cli.command.remote().cloned();
    // An option the command would ignore is refused, not silently dropped.
    let misplaced = [
        ("--state", cli.state.is_some() && local.is_none()),
        ("--log-format", cli.log_format.is_some() && local.is_none()),
        ("--server", cli.server.is_some() && remote.is_none()),
    ];
    if let Some((flag, _)) = misplaced.iter().find(|(_, bad)| *bad) {
        eprintln!("promote: error: {flag} does nothing for `promote {name}`: it is not one of its options (`promote {name} --help`)");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let local = local.unwrap_or_default();
    init_logs(local.log_format.or(cli.log_format).unwrap_or(LogFormat::Text));
    let state = local.state.or(cli.state).unwrap_or_else(|| PathBuf::from(".promote/state.db"));
    let server = remote.and_then(|r| r.server).or(cli.server);
    let result = match (cli.command, server.as_deref()) {
        (Command::Run(a), Some(url)) => remote::run(url, &a.file, &a.version, a.detach),
        (Command::Status(a), Some(url)) => remote::status(url, a.run.as_deref(), a.json),
        (Command::Approve(a), Some(url)) => remote::decide(url, &a.run, &a.stage, &a.user, "approve", a.comment.as_deref()),
        (Command::Reject(a), Some(url)) => remote::decide(url, &a.run, &a.stage, &a.user, "reject", Some(&a.reason)),
        (Command::BreakGlass(a), Some(url)) => remote::decide(url, &a.run, &a.stage, &a.user, "break-glass", Some(&a.reason)),
        (Command::Drift(a), Some(url)) => remote::drift(url, &a.command),
        (Command::Compliance(a), Some(url)) => remote::compliance(url, &a.command),
        (Command::Report(a), Some(url)) => remote::report(url, &a.run, a.window, a.json),
        (Command::Watch(a), Some(url)) => remote::watch(url, &a.command),
        (command, _) => local_command(command, &state),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("promote: error: {}", crate::redact::text(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn local_command(command: Command, state: &std::path::Path) -> anyhow::Result<ExitCode> {
    let state = state.to_path_buf();
    // A command that only reads or decides never makes a state: where there is none, nothing has
    // run, and a new empty one would only hide the mistake (`audit verify` saying "intact: 0
    // entries" in the wrong folder).
    let reads_only = match &command {
        Command::Status(_) | Command::Resume(_) | Command::Approve(_) | Command::Reject(_) | Command::BreakGlass(_) | Command::Audit(_) => true,
        Command::Drift(a) => !matches!(a.command, drift::DriftCommand::Check { .. }),
        Command::Compliance(a) => !matches!(a.command, compliance::ComplianceCommand::Check { .. }),
        Command::Report(_) => true,
        Command::Watch(_) => true,
        Command::Logs(a) => a.local().is_some(),
        _ => false,
    };
    if reads_only && let Some(code) = no_state(&state) {
        return Ok(code);
    }
    match command {
        Command::Validate(args) => validate::run(args),
        Command::Serve(args) => serve::run(args, &state),
        Command::Drift(args) => drift::run(args, &state),
        Command::Compliance(args) => compliance::run(args, &state),
        Command::Report(args) => report::run(args, &state),
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
        Command::Key(args) => key::run(args),
        Command::Logs(args) => logs::run(args, &state),
        Command::Probe(args) => probe::run(args),
        Command::Completions(args) => {
            use clap::CommandFactory;
            clap_complete::generate(args.shell, &mut Cli::command(), "promote", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `Some(2)`, having said so, when `state` is a SQLite file that does not exist.
fn no_state(state: &Path) -> Option<ExitCode> {
    if crate::store::in_database(state) || state.exists() {
        return None;
    }
    eprintln!(
        "promote: error: no state at {}: nothing has run here (run this in the folder where `promote run` or `promote serve` ran, or pass --state PATH); nothing was created",
        state.display()
    );
    Some(ExitCode::from(EXIT_BAD_INPUT))
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROMOTE_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colours only for a person at a terminal: a log collector stores escape codes as text.
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(std::io::stderr().is_terminal()).with_writer(crate::redact::Stderr);
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
    if crate::store::in_database(state) {
        return PathBuf::from(".promote/repos");
    }
    state.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).join("repos")
}

pub use crate::ops::{Checked, check_file};

/// The plan and folder to decide something of `pipeline` with (`Err`: the thing is unknown, and
/// why): the file named, else the one the pipeline's newest run was started from. `Err(code)`
/// once the reason (or the file's diagnostics) is printed.
pub async fn plan_for(
    exec: &crate::exec::Executor,
    pipeline: Result<String, String>,
    named: Option<&Path>,
) -> anyhow::Result<Result<(crate::plan::Plan, PathBuf), ExitCode>> {
    let refuse = |why: &str| {
        eprintln!("promote: error: {why}");
        Ok(Err(ExitCode::from(EXIT_BAD_INPUT)))
    };
    let pipeline = match pipeline {
        Ok(p) => p,
        Err(why) => return refuse(&why),
    };
    let file = match named {
        Some(f) => f.to_path_buf(),
        None => match exec.store.runs(10_000).await?.into_iter().find(|r| r.pipeline == pipeline) {
            Some(r) => PathBuf::from(r.file),
            None => return refuse(&format!("no run of {pipeline} says where its file is: name it with --pipeline FILE")),
        },
    };
    if named.is_none() && !file.is_file() {
        return refuse(&format!(
            "{pipeline}'s newest run was started from {}, which is not there any more: name the pipeline file with --pipeline FILE",
            file.display()
        ));
    }
    let checked = check_file(&file);
    print_diagnostics(&checked.diagnostics);
    let Some(plan) = checked.plan else { return Ok(Err(ExitCode::from(EXIT_BAD_INPUT))) };
    let base = file.parent().filter(|p| !p.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    Ok(Ok((plan, base)))
}

/// A local command's caller: `--as USER`, proven by `PROMOTE_TOKEN` where the users file has tokens.
pub fn local_caller<'a>(user: &'a str, token: &'a Option<String>) -> crate::ops::access::Caller<'a> {
    crate::ops::access::Caller::Local { user, token: token.as_deref() }
}

/// Every list `--json` prints has one shape: `{"items": [...]}` (room for more fields beside it,
/// and the same for every command).
pub fn items<T: serde::Serialize>(list: &[T]) -> serde_json::Value {
    serde_json::json!({ "items": list })
}

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
