//! `promote approve RUN STAGE --as USER [--comment TEXT]`, `promote reject ... --reason TEXT` and
//! `promote break-glass RUN STAGE --as USER --reason TEXT`.

use std::process::ExitCode;

use crate::ops::decide::Mode;

/// Arguments of `approve`.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The run id.
    pub run: String,
    /// The approval stage.
    pub stage: String,
    /// Who approves (with a token in the users file: PROMOTE_TOKEN holds it).
    #[arg(long = "as", value_name = "USER")]
    pub user: String,
    /// A comment for the record.
    #[arg(long)]
    pub comment: Option<String>,
    /// Where the state is, how to log.
    #[command(flatten)]
    pub local: super::Local,
    /// Through a server.
    #[command(flatten)]
    pub remote: super::Remote,
}

/// Arguments of `reject` and `break-glass`.
#[derive(Debug, clap::Args)]
pub struct RejectArgs {
    /// The run id.
    pub run: String,
    /// The stage.
    pub stage: String,
    /// Who decides (with a token in the users file: PROMOTE_TOKEN holds it).
    #[arg(long = "as", value_name = "USER")]
    pub user: String,
    /// Why (required).
    #[arg(long)]
    pub reason: String,
    /// Where the state is, how to log.
    #[command(flatten)]
    pub local: super::Local,
    /// Through a server.
    #[command(flatten)]
    pub remote: super::Remote,
}

/// Runs `approve`.
pub fn approve(a: ApproveArgs, state: &std::path::Path) -> anyhow::Result<ExitCode> {
    decide(&a.run, &a.stage, &a.user, Mode::Approve, a.comment.as_deref(), state)
}

/// Runs `reject`.
pub fn reject(a: RejectArgs, state: &std::path::Path) -> anyhow::Result<ExitCode> {
    decide(&a.run, &a.stage, &a.user, Mode::Reject, Some(&a.reason), state)
}

/// Runs `break-glass`: overrides the freeze of a deploy stage's environment for this run.
pub fn break_glass(a: RejectArgs, state: &std::path::Path) -> anyhow::Result<ExitCode> {
    decide(&a.run, &a.stage, &a.user, Mode::BreakGlass, Some(&a.reason), state)
}

fn decide(run: &str, stage: &str, user: &str, mode: Mode, comment: Option<&str>, state: &std::path::Path) -> anyhow::Result<ExitCode> {
    let token = std::env::var("PROMOTE_TOKEN").ok();
    let request = crate::ops::decide::Request { run, stage, mode, comment, caller: crate::ops::access::Caller::Local { user, token: token.as_deref() } };
    let rt = super::runtime()?;
    rt.block_on(async {
        let store = super::open_store(state).await?;
        let done = crate::ops::decide::decide(&store, &request).await;
        store.close().await;
        super::report(done)
    })
}
