//! `promote rollback ENV --pipeline FILE [--to COMMIT]`: a new commit that restores an
//! environment's promoted value.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{EXIT_BAD_INPUT, check_file, print_diagnostics};
use crate::git::{GitError, Outcome, RollbackTarget, Writer, WriterConfig};
use crate::ops::OpsError;

/// Arguments of `rollback`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The environment to roll back.
    #[arg(value_name = "ENV")]
    pub environment: String,
    /// The pipeline file that defines the environment.
    #[arg(long, value_name = "FILE")]
    pub pipeline: PathBuf,
    /// Restore the value as it was at this commit (default: as it was before the newest promotion
    /// that is not rolled back yet).
    #[arg(long, value_name = "COMMIT")]
    pub to: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where the state is, how to log.
    #[command(flatten)]
    pub local: super::Local,
}

/// Runs `rollback`: 0 when the environment holds the earlier value, 1 when it could not be
/// restored, 2 for bad input.
pub fn run(args: Args, state: &Path) -> anyhow::Result<ExitCode> {
    let checked = check_file(&args.pipeline);
    print_diagnostics(&checked.diagnostics);
    let Some(plan) = checked.plan else { return Ok(ExitCode::from(EXIT_BAD_INPUT)) };
    let base = args.pipeline.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let config = WriterConfig::from_env(super::cache_dir(state)).map_err(|e| anyhow::anyhow!(e))?;
    let writer = std::sync::Arc::new(Writer::new(config));
    let target = match args.to {
        Some(c) => RollbackTarget::To(c),
        None => RollbackTarget::Latest,
    };
    let who = super::run::current_user();
    let rt = super::runtime()?;
    let done = rt.block_on(async {
        let store = super::open_store(state).await?;
        let request = crate::ops::rollback::Request {
            plan: &plan,
            shown: &checked.file,
            base,
            environment: &args.environment,
            target,
            caller: crate::ops::access::Caller::Local { user: &who, token: None },
        };
        let done = crate::ops::rollback::rollback(&store, &writer, request).await;
        store.close().await;
        Ok::<_, anyhow::Error>(done)
    })?;
    let done = match done {
        Ok(d) => d,
        Err(OpsError::Refused(why)) => {
            eprintln!("promote: error: {why}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
        Err(e) => return Err(e.into()),
    };
    let env = &args.environment;
    let (json, code) = match &done.result {
        Ok(report) => (
            match &report.outcome {
                Outcome::Committed(w) => serde_json::json!({"environment": env, "outcome": "committed", "commit": w.commit.to_string(),
                    "oldValue": w.old_value, "newValue": w.new_value, "undoes": w.undoes.map(|u| u.to_string())}),
                Outcome::AlreadyDone { commit } => serde_json::json!({"environment": env, "outcome": "already-done", "commit": commit.to_string()}),
                Outcome::Unchanged { value } => serde_json::json!({"environment": env, "outcome": "unchanged", "value": value}),
            },
            ExitCode::SUCCESS,
        ),
        Err(e) => {
            let kind = match e {
                GitError::HistoryRewritten(_) => "history-rewritten",
                GitError::Conflict { .. } => "conflict",
                _ => "failed",
            };
            (serde_json::json!({"environment": env, "outcome": kind, "error": e.to_string()}), ExitCode::FAILURE)
        }
    };
    if args.json {
        println!("{json}");
    } else if done.result.is_ok() {
        println!("{}", done.line);
    } else {
        eprintln!("{}", done.line);
    }
    Ok(code)
}
