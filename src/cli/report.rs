//! `promote report RUN [--json|--markdown] [--window 1h]`: what happened to a failed or reverted
//! release, and what else changed around it.

use std::path::Path;
use std::process::ExitCode;

/// `promote report ...`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run.
    pub run: String,
    /// Machine-readable output.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Markdown, for a ticket (the default output is the same text).
    #[arg(long)]
    pub markdown: bool,
    /// How far before the failure the timeline looks (default 1h, at most 7d).
    #[arg(long, value_name = "DURATION")]
    pub window: Option<crate::model::Duration>,
    /// Where the state is, how to log.
    #[command(flatten)]
    pub local: super::Local,
    /// Through a server.
    #[command(flatten)]
    pub remote: super::Remote,
}

/// Runs `report`.
pub fn run(args: Args, state: &Path) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(async {
        let exec = super::executor(state).await?;
        let window = args.window.map_or(crate::ops::report::DEFAULT_WINDOW, |w| w.0);
        let made = crate::ops::report::report(&exec.store, &exec.writer, &args.run, window).await;
        exec.store.close().await;
        match made {
            Ok(r) => Ok(print(&r, args.json)),
            Err(e) => super::report(Err(e)),
        }
    })
}

/// Prints a report as JSON or Markdown.
pub fn print(r: &crate::ops::report::Report, json: bool) -> ExitCode {
    if json {
        println!("{}", serde_json::to_string_pretty(r).unwrap_or_default());
    } else {
        print!("{}", r.markdown());
    }
    ExitCode::SUCCESS
}
