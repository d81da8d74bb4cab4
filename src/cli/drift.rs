//! `promote drift check|list|show|accept|reject`: changes in environment branches that promote
//! did not make (for those who run it from cron; `promote serve` looks by itself).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{EXIT_BAD_INPUT, check_file, print_diagnostics};
use crate::ops::drift::{Decision, Verdict};

/// `promote drift ...`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: DriftCommand,
    /// Where the state is, how to log.
    #[command(flatten)]
    pub local: super::Local,
    /// Through a server.
    #[command(flatten)]
    pub remote: super::Remote,
}

/// The `drift` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DriftCommand {
    /// Look at every environment of a pipeline: record, announce (and with `action: revert`,
    /// revert) each drift. Exit 0 clean, 1 when a drift is open.
    Check {
        /// The pipeline file.
        file: PathBuf,
    },
    /// The drifts recorded, newest first.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One drift: its commits and diff.
    Show {
        /// The drift's id (`d-...`).
        id: String,
    },
    /// Keep a drift: it becomes the state the next promotion builds on.
    Accept {
        /// The drift's id (`d-...`: it names its pipeline). An older form, `FILE ID`, is read too.
        #[arg(num_args = 1..=2, required = true, value_name = "ID")]
        ids: Vec<String>,
        /// The pipeline file (default: the one its pipeline's newest run was started from).
        #[arg(long, value_name = "FILE")]
        pipeline: Option<PathBuf>,
        /// Who decides (`PROMOTE_TOKEN` proves it when the users file has tokens).
        #[arg(long = "as", value_name = "USER")]
        user: String,
        /// Why (kept with it).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Revert a drift: a new commit restores the last approved state's files.
    Reject {
        /// The drift's id (`d-...`: it names its pipeline). An older form, `FILE ID`, is read too.
        #[arg(num_args = 1..=2, required = true, value_name = "ID")]
        ids: Vec<String>,
        /// The pipeline file (default: the one its pipeline's newest run was started from).
        #[arg(long, value_name = "FILE")]
        pipeline: Option<PathBuf>,
        /// Who decides.
        #[arg(long = "as", value_name = "USER")]
        user: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
}

/// Runs `drift`.
pub fn run(args: Args, state: &Path) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(async {
        let exec = super::executor(state).await?;
        let code = match args.command {
            DriftCommand::Check { file } => {
                let checked = check_file(&file);
                print_diagnostics(&checked.diagnostics);
                let Some(plan) = checked.plan else { return Ok(ExitCode::from(EXIT_BAD_INPUT)) };
                let base = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                let looked = crate::ops::drift::check(&exec.store, &exec.writer, &plan, base, exec.public_url.as_deref()).await?;
                for l in &looked {
                    println!("{}", l.line);
                }
                if looked.iter().any(|l| l.drift.as_ref().is_some_and(|d| d.state == crate::store::DriftState::Open)) {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }
            DriftCommand::List { json } => list(&exec.store.drifts(crate::store::DriftFilter::default()).await?, json),
            DriftCommand::Show { id } => show(&exec.store.drifts(crate::store::DriftFilter { id: Some(&id), ..Default::default() }).await?, &id),
            DriftCommand::Accept { ids, pipeline, user, reason } => {
                let (file, id) = file_and_id(&ids, pipeline);
                decide(&exec, file.as_deref(), id, Verdict::Accept, &user, reason.as_deref()).await?
            }
            DriftCommand::Reject { ids, pipeline, user, reason } => {
                let (file, id) = file_and_id(&ids, pipeline);
                decide(&exec, file.as_deref(), id, Verdict::Reject, &user, Some(&reason)).await?
            }
        };
        crate::exec::settle_heads().await;
        exec.store.close().await;
        Ok(code)
    })
}

/// Prints the drifts recorded, newest first.
pub fn list(all: &[crate::store::DriftRecord], json: bool) -> ExitCode {
    if json {
        println!("{}", super::items(all));
        return ExitCode::SUCCESS;
    }
    if all.is_empty() {
        println!("no drift recorded");
    }
    for d in all {
        println!("{}  {:9} {}/{}  {}", d.id, d.state, d.pipeline, d.environment, d.describe());
    }
    ExitCode::SUCCESS
}

/// Prints one drift: what, its decision, its commits and its diff.
pub fn show(all: &[crate::store::DriftRecord], id: &str) -> ExitCode {
    let Some(d) = all.iter().find(|d| d.id == id) else {
        eprintln!("promote: error: no drift `{}` (promote drift list shows them)", crate::diag::printable(id));
        return ExitCode::from(EXIT_BAD_INPUT);
    };
    println!("drift {} in {} of {}: {}", d.id, d.environment, d.pipeline, d.state);
    println!("seen {} at head {}, on top of {}", crate::clock::rfc3339(d.at), d.head, d.baseline.as_deref().unwrap_or("-"));
    if let Some(by) = &d.decided_by {
        println!("decided by {by}: {}", crate::diag::printable(d.reason.as_deref().unwrap_or("")));
    }
    for c in &d.commits {
        println!("  {} {} ({})", &c.id[..10.min(c.id.len())], crate::diag::printable(&c.summary), crate::diag::printable(&c.author));
    }
    for line in d.diff.lines() {
        println!("{}", crate::diag::printable(line));
    }
    ExitCode::SUCCESS
}

/// `ID`, or the older `FILE ID`; `--pipeline` wins.
pub fn file_and_id(ids: &[String], pipeline: Option<PathBuf>) -> (Option<PathBuf>, &str) {
    match ids {
        [file, id] => (pipeline.or_else(|| Some(PathBuf::from(file))), id),
        [id, ..] => (pipeline, id),
        [] => (pipeline, ""),
    }
}

async fn decide(exec: &crate::exec::Executor, file: Option<&Path>, id: &str, verdict: Verdict, user: &str, reason: Option<&str>) -> anyhow::Result<ExitCode> {
    let pipeline =
        exec.store.drift(id).await?.map(|d| d.pipeline).ok_or_else(|| format!("no drift `{}` (promote drift list shows them)", crate::diag::printable(id)));
    let (plan, base) = match super::plan_for(exec, pipeline, file).await? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let token = std::env::var("PROMOTE_TOKEN").ok();
    let d = Decision { id, verdict, reason, caller: super::local_caller(user, &token) };
    super::report(crate::ops::drift::decide(&exec.store, &exec.writer, &plan, &base, &d).await)
}
