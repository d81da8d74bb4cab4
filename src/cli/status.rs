//! `promote status [RUN] [--json]`: the runs, or one run's stages.

use std::process::ExitCode;

use super::EXIT_BAD_INPUT;
use crate::clock::humanize;
use crate::exec::Summary;

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A run id (default: the latest runs).
    #[arg(value_name = "RUN")]
    pub run: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Where the state is, how to log.
    #[command(flatten)]
    pub local: super::Local,
    /// Through a server.
    #[command(flatten)]
    pub remote: super::Remote,
}

/// Runs `status`.
pub fn run(args: Args, state: &std::path::Path) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    rt.block_on(async {
        let store = super::open_store(state).await?;
        match args.run {
            None => {
                let runs = store.runs(20).await?;
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&super::items(&runs))?);
                } else if runs.is_empty() {
                    println!("no runs yet in {}", store.path());
                } else {
                    for r in runs {
                        let end = r.finished_at.unwrap_or_else(crate::clock::now_ms);
                        let took = humanize(std::time::Duration::from_millis((end - r.created_at).max(0) as u64));
                        println!("{}  {:<16} {:<12} {:<10} {took}", r.id, r.pipeline, r.version, r.state.as_str());
                    }
                }
            }
            Some(id) => {
                let run = match store.run(&id).await {
                    Ok(r) => r,
                    Err(e @ crate::store::StoreError::UnknownRun { .. }) => {
                        eprintln!("promote: error: {e}");
                        return Ok(ExitCode::from(EXIT_BAD_INPUT));
                    }
                    Err(e) => return Err(e.into()),
                };
                let stages = store.stages(&id).await?;
                let leases = crate::ops::runs::leases(&store, &run, &stages).await?;
                if args.json {
                    let events = store.events(&id).await?;
                    let j = serde_json::json!({"run": run, "stages": stages, "events": events, "leases": leases});
                    println!("{}", serde_json::to_string_pretty(&j)?);
                } else {
                    print!("{}", super::run::render_summary(&Summary { run, stages }));
                    for l in &leases {
                        println!("{}", crate::diag::printable(l.note()));
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
