//! `promote compliance check|list|show|accept|revert`: every environment's current files judged
//! by the pipeline's policies (for those who run it from cron; `promote serve` judges by itself).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{EXIT_BAD_INPUT, check_file, print_diagnostics};
use crate::ops::compliance::{Decision, Standing, Verdict};
use crate::store::{ViolationFilter, ViolationRecord};

/// `promote compliance ...`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ComplianceCommand,
    /// Where the state is, how to log.
    #[command(flatten)]
    pub local: super::Local,
    /// Through a server.
    #[command(flatten)]
    pub remote: super::Remote,
}

/// The `compliance` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ComplianceCommand {
    /// Judge every environment's current files by the pipeline's policies: record, announce (and
    /// with `action: revert`, revert) each violation. Exit 0 compliant, 1 when one is open, 2
    /// when one could not be judged.
    Check {
        /// The pipeline file.
        file: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The violations recorded, newest first.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One violation: what the policies denied, and its decision.
    Show {
        /// The violation's id (`c-...`).
        id: String,
    },
    /// Keep the files as an exception, with a reason, until an end (default 30 days); it opens
    /// again then.
    Accept {
        /// The violation's id.
        id: String,
        /// Who decides (`PROMOTE_TOKEN` proves it when the users file has tokens).
        #[arg(long = "as", value_name = "USER")]
        user: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// How long the exception lasts (`30d`, `12h`; at most 366 days).
        #[arg(long = "for", value_name = "DURATION", conflicts_with = "until")]
        for_: Option<crate::model::Duration>,
        /// When the exception ends (RFC 3339, e.g. `2027-01-31T00:00:00Z`).
        #[arg(long, value_name = "TIME")]
        until: Option<jiff::Timestamp>,
        /// The pipeline file (default: the one its newest run was started from).
        #[arg(long, value_name = "FILE")]
        pipeline: Option<PathBuf>,
    },
    /// Revert to the newest commit whose files the policies allow, in a new commit (through a
    /// pull request where the environment is protected).
    Revert {
        /// The violation's id.
        id: String,
        /// Who decides.
        #[arg(long = "as", value_name = "USER")]
        user: String,
        /// Why (kept with it).
        #[arg(long)]
        reason: Option<String>,
        /// The pipeline file (default: the one its newest run was started from).
        #[arg(long, value_name = "FILE")]
        pipeline: Option<PathBuf>,
    },
}

/// Runs `compliance`.
pub fn run(args: Args, state: &Path) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(async {
        let exec = super::executor(state).await?;
        let code = match args.command {
            ComplianceCommand::Check { file, json } => {
                let checked = check_file(&file);
                print_diagnostics(&checked.diagnostics);
                let Some(plan) = checked.plan else { return Ok(ExitCode::from(EXIT_BAD_INPUT)) };
                let base = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                let look = crate::ops::compliance::Look {
                    store: &exec.store,
                    writer: &exec.writer,
                    plan: &plan,
                    base,
                    public_url: exec.public_url.as_deref(),
                    only: None,
                };
                let judged = match crate::ops::compliance::check(&look, &Default::default()).await {
                    Ok(j) => j,
                    Err(e) => return super::report(Err(e)),
                };
                if json {
                    println!("{}", super::items(&judged));
                } else if judged.is_empty() {
                    println!("{} has no policy stage: nothing judges its environments", plan.pipeline.name.value);
                }
                if !json {
                    // A denial quotes the judged files (names a committer chose): one line each, escaped.
                    judged.iter().for_each(|j| println!("{}", crate::diag::printable(&j.line)));
                }
                // An environment that could not be judged is no pass: cron hears of it.
                if judged.iter().any(|j| j.standing == Standing::Unjudged) {
                    ExitCode::from(EXIT_BAD_INPUT)
                } else if judged.iter().any(|j| j.standing == Standing::Violation) {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }
            ComplianceCommand::List { json } => list(&exec.store.violations(ViolationFilter::default()).await?, json),
            ComplianceCommand::Show { id } => show(&exec.store.violations(ViolationFilter { id: Some(&id), ..Default::default() }).await?, &id),
            ComplianceCommand::Accept { id, user, reason, for_, until, pipeline } => {
                let until = match (for_, until) {
                    (_, Some(t)) => t.as_millisecond(),
                    (Some(d), None) => crate::clock::now_ms().saturating_add(i64::try_from(d.0.as_millis()).unwrap_or(i64::MAX)),
                    (None, None) => crate::clock::now_ms() + crate::ops::compliance::DEFAULT_EXCEPTION.as_millis() as i64,
                };
                decide(&exec, pipeline.as_deref(), &id, Verdict::Accept { until }, &user, Some(&reason)).await?
            }
            ComplianceCommand::Revert { id, user, reason, pipeline } => {
                decide(&exec, pipeline.as_deref(), &id, Verdict::Revert, &user, reason.as_deref()).await?
            }
        };
        crate::exec::settle_heads().await;
        exec.store.close().await;
        Ok(code)
    })
}

/// Prints the violations recorded, newest first.
pub fn list(all: &[ViolationRecord], json: bool) -> ExitCode {
    if json {
        println!("{}", super::items(all));
        return ExitCode::SUCCESS;
    }
    if all.is_empty() {
        println!("no compliance violation recorded");
    }
    for v in all {
        println!("{}  {:9} {}/{}", v.id, v.state, v.pipeline, crate::diag::printable(&v.describe()));
    }
    ExitCode::SUCCESS
}

/// Prints one violation: what was denied, and its decision.
pub fn show(all: &[ViolationRecord], id: &str) -> ExitCode {
    let Some(v) = all.iter().find(|v| v.id == id) else {
        eprintln!("promote: error: no compliance violation `{}` (promote compliance list shows them)", crate::diag::printable(id));
        return ExitCode::from(EXIT_BAD_INPUT);
    };
    println!("compliance violation {} in {} of {}: {}", v.id, v.environment, v.pipeline, v.state);
    println!("found {} at head {} (policies {})", crate::clock::rfc3339(v.at), v.head, v.policies);
    for d in &v.deny.0 {
        println!("  denied: {}", crate::diag::printable(d));
    }
    if let Some(by) = &v.decided_by {
        let until = v.until.map(|u| format!(" until {}", crate::clock::rfc3339(u))).unwrap_or_default();
        println!("decided by {by}{until}: {}", crate::diag::printable(v.reason.as_deref().unwrap_or("")));
    }
    if let Some(to) = &v.revert_to {
        println!("reverted to the files of {to}");
    }
    ExitCode::SUCCESS
}

async fn decide(exec: &crate::exec::Executor, named: Option<&Path>, id: &str, verdict: Verdict, user: &str, reason: Option<&str>) -> anyhow::Result<ExitCode> {
    let pipeline = exec
        .store
        .violation(id)
        .await?
        .map(|v| v.pipeline)
        .ok_or_else(|| format!("no compliance violation `{}` (promote compliance list shows them)", crate::diag::printable(id)));
    let (plan, base) = match super::plan_for(exec, pipeline, named).await? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let token = std::env::var("PROMOTE_TOKEN").ok();
    let d = Decision { id, verdict, reason, caller: super::local_caller(user, &token) };
    super::report(crate::ops::compliance::decide(&exec.store, &exec.writer, &plan, &base, &d).await)
}
