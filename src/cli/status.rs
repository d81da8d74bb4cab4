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
                let leases = leases(&store, &run, &stages).await?;
                if args.json {
                    let events = store.events(&id).await?;
                    let j = serde_json::json!({"run": run, "stages": stages, "events": events, "leases": leases});
                    println!("{}", serde_json::to_string_pretty(&j)?);
                } else {
                    print!("{}", super::run::render_summary(&Summary { run, stages }));
                    for l in &leases {
                        println!("{}", crate::diag::printable(l["note"].as_str().unwrap_or("")));
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// What a person should know about the leases around a running run: who drives it (or that
/// nobody does), and each environment it waits for whose holder's lease lapsed (a stale holder).
async fn leases(store: &crate::store::Store, run: &crate::store::RunRecord, stages: &[crate::store::StageRecord]) -> anyhow::Result<Vec<serde_json::Value>> {
    use crate::store::{RunState, StageState};
    let mut out = Vec::new();
    if run.state != RunState::Running {
        return Ok(out);
    }
    let now = crate::clock::now_ms();
    let ago = |t: i64| humanize(std::time::Duration::from_millis((now - t).max(0) as u64));
    let note = match store.driver(&run.id).await? {
        Some(d) if d.expires_at >= now => format!("driven by {} (lease renewed until {})", d.holder, crate::clock::rfc3339(d.expires_at)),
        Some(d) => {
            format!("not driven: the lease of {} lapsed {} ago (its process stopped); `promote resume {}` carries it on", d.holder, ago(d.expires_at), run.id)
        }
        None => format!("not driven by any process: `promote resume {}` carries it on", run.id),
    };
    out.push(serde_json::json!({"kind": "driver", "note": note}));
    let waiting = stages.iter().any(|s| s.state == StageState::Waiting);
    let locks = store.env_locks().await?;
    // The environments it queues for: who holds each, and how many go before it.
    let queue = store.env_queue().await?;
    for (environment, q) in queue.iter().filter(|(_, q)| q.run == run.id && q.superseded_by.is_none()) {
        let ahead = queue.iter().filter(|(e, o)| e == environment && o.run < run.id && o.superseded_by.is_none() && o.expires_at >= now).count();
        let holder = locks.iter().find(|l| l.what == *environment).map(|l| l.holder.clone());
        let held = holder.as_deref().map_or("nobody holds it now".to_string(), |h| format!("run {h} holds it"));
        let note = format!("waits its turn for environment `{environment}`: {held}; {ahead} earlier run(s) queued before this one");
        out.push(serde_json::json!({"kind": "queued", "environment": environment, "holder": holder, "ahead": ahead, "note": note, "expiresAt": q.expires_at}));
    }
    for l in locks {
        if l.holder == run.id && l.expires_at < now {
            let note = format!(
                "holds environment `{}` as a stale holder: its lease lapsed {} ago (its driver stopped); the next run to deploy there takes it over",
                l.what,
                ago(l.expires_at)
            );
            out.push(serde_json::json!({"kind": "stale-lock", "environment": l.what, "holder": l.holder, "expiresAt": l.expires_at, "note": note}));
        } else if l.holder != run.id && l.expires_at < now && waiting {
            let note = format!(
                "environment `{}` is held by run {}, a stale holder: its lease lapsed {} ago (its driver stopped); the next deploy there takes it over",
                l.what,
                l.holder,
                ago(l.expires_at)
            );
            out.push(serde_json::json!({"kind": "stale-lock", "environment": l.what, "holder": l.holder, "expiresAt": l.expires_at, "note": note}));
        }
    }
    Ok(out)
}
