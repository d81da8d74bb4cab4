//! `promote rollback ENV --pipeline FILE [--to COMMIT]`: a new commit that restores an
//! environment's promoted value.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{EXIT_BAD_INPUT, check_file, print_diagnostics};
use crate::diag::did_you_mean;
use crate::git::{Destination, GitError, Outcome, RollbackRequest, RollbackTarget, Writer, WriterConfig};

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
}

/// Runs `rollback`: 0 when the environment holds the earlier value, 1 when it could not be
/// restored, 2 for bad input.
pub fn run(args: Args, state: &Path) -> anyhow::Result<ExitCode> {
    let checked = check_file(&args.pipeline);
    print_diagnostics(&checked.diagnostics);
    let Some(plan) = checked.plan else { return Ok(ExitCode::from(EXIT_BAD_INPUT)) };
    let pipeline = &plan.pipeline;
    let Some(env) = pipeline.environments.iter().find(|e| e.name.value == args.environment) else {
        let names: Vec<&str> = pipeline.environments.iter().map(|e| e.name.value.as_str()).collect();
        let hint = did_you_mean(&args.environment, names.iter().copied());
        eprintln!("promote: error: {} has no environment `{}`{hint} (its environments: {})", checked.file, args.environment, names.join(", "));
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    };
    let base = args.pipeline.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dest = Destination::of(env, base);
    let config = WriterConfig::from_env(super::cache_dir(state)).map_err(|e| anyhow::anyhow!(e))?;
    let target = match args.to {
        Some(c) => RollbackTarget::To(c),
        None => RollbackTarget::Latest,
    };
    let request = RollbackRequest { pipeline: &pipeline.name.value, environment: &args.environment, target, run: None, stage: None };
    let result = Writer::new(config).rollback(&dest, &request);
    let (line, json, code) = match &result {
        Ok(report) => match &report.outcome {
            Outcome::Committed(w) => (
                format!(
                    "rolled back {}: {} -> {} in commit {}{}",
                    args.environment,
                    w.old_value.as_deref().unwrap_or("(absent)"),
                    w.new_value,
                    w.commit,
                    w.undoes.map(|u| format!(" (undoes {u})")).unwrap_or_default()
                ),
                serde_json::json!({"environment": args.environment, "outcome": "committed", "commit": w.commit.to_string(),
                    "oldValue": w.old_value, "newValue": w.new_value, "undoes": w.undoes.map(|u| u.to_string())}),
                ExitCode::SUCCESS,
            ),
            Outcome::AlreadyDone { commit } => (
                format!("{} is already rolled back (commit {commit})", args.environment),
                serde_json::json!({"environment": args.environment, "outcome": "already-done", "commit": commit.to_string()}),
                ExitCode::SUCCESS,
            ),
            Outcome::Unchanged { value } => (
                format!("{} already holds {value}: nothing to commit", args.environment),
                serde_json::json!({"environment": args.environment, "outcome": "unchanged", "value": value}),
                ExitCode::SUCCESS,
            ),
        },
        Err(e) => {
            let kind = match e {
                GitError::HistoryRewritten(_) => "history-rewritten",
                GitError::Conflict { .. } => "conflict",
                _ => "failed",
            };
            (format!("promote: error: {e}"), serde_json::json!({"environment": args.environment, "outcome": kind, "error": e.to_string()}), ExitCode::FAILURE)
        }
    };
    // The trail keeps every manual rollback, done or not (run `-`: no run).
    let who = super::run::current_user();
    let detail = match &result {
        Ok(_) => format!("{}: {line}", pipeline.name.value),
        Err(e) => format!("{}: rollback of {} failed: {e}", pipeline.name.value, args.environment),
    };
    let rt = super::runtime()?;
    rt.block_on(async {
        let store = super::open_store(state).await?;
        store.audit("-", None, "rollback", &who, &detail).await?;
        // The pipeline's channels hear of it as of a run's rollback.
        if let Ok(Some(Outcome::Committed(_))) = result.as_ref().map(|r| Some(&r.outcome)) {
            match crate::governance::notify::Notifier::new(&pipeline.notifications, vec![]) {
                Ok(n) => {
                    let n = std::sync::Arc::new(n);
                    n.send(crate::governance::notify::Note {
                        event: "rollback".into(),
                        pipeline: pipeline.name.value.clone(),
                        run: "-".into(),
                        version: String::new(),
                        stage: None,
                        message: format!("{line} (by {who}, `promote rollback`)"),
                    });
                    n.finish_audited(&store, "-").await?;
                }
                Err(e) => store.audit("-", None, "notification", "promote", &format!("notifications are off: {e}")).await?,
            }
        }
        store.close().await;
        Ok::<(), anyhow::Error>(())
    })?;
    if args.json {
        println!("{json}");
    } else if result.is_ok() {
        println!("{line}");
    } else {
        eprintln!("{line}");
    }
    Ok(code)
}
