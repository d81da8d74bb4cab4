//! `promote watch list|show|clear|run`: releases kept being judged after their runs (`promote
//! serve` makes the looks by itself; `watch run` makes them for those without a server).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::EXIT_BAD_INPUT;
use crate::store::WatchRecord;

/// `promote watch ...`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: WatchCommand,
    /// Where the state is, how to log.
    #[command(flatten)]
    pub local: super::Local,
    /// Through a server.
    #[command(flatten)]
    pub remote: super::Remote,
}

/// The `watch` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum WatchCommand {
    /// The watches, newest first: watching, passed, failed (held), superseded.
    List {
        /// Only this pipeline's.
        #[arg(long)]
        pipeline: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One watch: what it watches, its looks, its last look's findings.
    Show {
        /// The watch's id (`w-...`).
        id: String,
    },
    /// Let a version a failed watch holds be promoted again.
    Clear {
        /// The watch's id.
        id: String,
        /// Who (`PROMOTE_TOKEN` proves it when the users file has tokens).
        #[arg(long = "as", value_name = "USER")]
        user: String,
        /// Why (required; kept in the trail).
        #[arg(long)]
        reason: String,
    },
    /// Make the looks of every active watch of this state until none is left (or one round with
    /// --once): for those who run promote without `promote serve`. Exit 1 when a watch failed.
    Run {
        /// One round of the looks due now, then exit.
        #[arg(long)]
        once: bool,
    },
}

/// Runs `watch`.
pub fn run(args: Args, state: &Path) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(async {
        let exec = super::executor(state).await?;
        let code = match args.command {
            WatchCommand::List { pipeline, json } => list(&crate::ops::watch::list(&exec.store, pipeline.as_deref()).await?, json),
            WatchCommand::Show { id } => show(exec.store.watch(&id).await?.as_ref(), &id),
            WatchCommand::Clear { id, user, reason } => {
                let token = std::env::var("PROMOTE_TOKEN").ok();
                let c =
                    crate::ops::watch::Clear { id: &id, reason: &reason, caller: crate::ops::access::Caller::Local { user: &user, token: token.as_deref() } };
                super::report(crate::ops::watch::clear(&exec.store, &c).await)?
            }
            WatchCommand::Run { once } => {
                let mut failed = false;
                let plans = crate::exec::Plans::default();
                loop {
                    for l in exec.watch_due(&plans).await? {
                        failed |= l.state == crate::store::WatchState::Failed;
                        println!("{} {}/{} {}: {}: {}", l.watch, l.pipeline, l.environment, l.version, l.state, crate::diag::printable(&l.message));
                    }
                    if once || !exec.watching().await? {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
            }
        };
        crate::exec::settle_heads().await;
        exec.store.close().await;
        Ok(code)
    })
}

/// Prints the watches, newest first.
pub fn list(all: &[WatchRecord], json: bool) -> ExitCode {
    if json {
        println!("{}", super::items(all));
        return ExitCode::SUCCESS;
    }
    if all.is_empty() {
        println!("no watch recorded");
    }
    for w in all {
        println!("{}  {}", w.id, crate::diag::printable(&crate::ops::watch::describe(w)));
    }
    ExitCode::SUCCESS
}

/// Prints one watch.
pub fn show(w: Option<&WatchRecord>, id: &str) -> ExitCode {
    let Some(w) = w else {
        eprintln!("promote: error: no watch `{}` (promote watch list shows them)", crate::diag::printable(id));
        return ExitCode::from(EXIT_BAD_INPUT);
    };
    let clock = crate::clock::rfc3339;
    println!("watch {} of {} {} in {}: {}", w.id, w.pipeline, w.version, w.environment, w.state);
    println!("run {} stage {}, commit {} ({})", w.run, w.stage, w.commit, crate::diag::printable(&w.value));
    println!("from {} until {}, every {}", clock(w.started_at), clock(w.ends_at), crate::clock::humanize(Duration::from_millis(w.interval_ms.max(0) as u64)));
    println!("{} looks: {} passed, {} failed", w.looks, w.passes, w.failures);
    if let Some(m) = &w.message {
        println!("{}", crate::diag::printable(m));
    }
    if let Some(c) = &w.reverted_to {
        println!("reverted in {c}");
    }
    if w.holds() {
        println!("{} is held: promote watch clear {} --as USER --reason TEXT", w.version, w.id);
    }
    if let (Some(by), Some(at)) = (&w.cleared_by, w.cleared_at) {
        println!("hold cleared by {by} at {}: {}", clock(at), crate::diag::printable(w.clear_reason.as_deref().unwrap_or("")));
    }
    ExitCode::SUCCESS
}
