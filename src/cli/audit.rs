//! `promote audit log [--run RUN] [--json]`, `promote audit verify [--json]` and
//! `promote token --for USER`.

use std::io::Write;
use std::process::ExitCode;

use super::EXIT_BAD_INPUT;

/// Arguments of `audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: AuditCommand,
    /// Where the state is, how to log.
    #[command(flatten)]
    pub local: super::Local,
}

/// The audit commands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// The trail, oldest first (`--json`: `{"items": [...]}`, each entry with its hashes).
    Log {
        /// Only this run's entries.
        #[arg(long)]
        run: Option<String>,
        /// Machine-readable output: `{"items": [...]}`.
        #[arg(long)]
        json: bool,
    },
    /// Checks every entry's hash and link; exit 0 intact, 1 tampered (naming the first bad entry).
    Verify {
        /// The verdict as JSON.
        #[arg(long)]
        json: bool,
        /// A head printed by an earlier verify and kept elsewhere: it must still be in the trail
        /// (catches a rewrite that recomputed every hash). Repeatable.
        #[arg(long, value_name = "HASH")]
        known: Vec<String>,
        /// A pipeline file whose head repo (its first environment's, `refs/promote/audit`) keeps
        /// the trail's head; default: every pipeline this state has run. Name it when the state
        /// may have been wiped. Repeatable.
        #[arg(long, value_name = "PIPELINE")]
        against: Vec<std::path::PathBuf>,
    },
}

/// Arguments of `token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The user the token is for.
    #[arg(long = "for", value_name = "USER")]
    pub user: String,
}

/// Runs `token`: prints a new token once, and the line to store in the users file.
pub fn token(a: TokenArgs) -> anyhow::Result<ExitCode> {
    let token = crate::governance::users::new_token()?;
    println!("token for {}: {token}", a.user);
    println!("give it to {} once (as PROMOTE_TOKEN); store only this line under the user in the users file:", a.user);
    println!("    token: {}", crate::governance::users::hash_token(&token));
    Ok(ExitCode::SUCCESS)
}

/// Runs `audit`.
pub fn run(a: Args, state: &std::path::Path) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    rt.block_on(async {
        let store = super::open_store(state).await?;
        match a.command {
            AuditCommand::Log { run, json } => {
                let out = std::io::stdout();
                let mut out = std::io::BufWriter::new(out.lock());
                let mut after = 0;
                let mut first = true;
                // Written as it is read (a trail may be long): `{"items": [` ... `]}`.
                if json && write!(out, "{{\"items\": [").is_err() {
                    return Ok(ExitCode::SUCCESS);
                }
                loop {
                    let page = crate::ops::audit::entries(&store, run.as_deref(), after, 10_000).await?;
                    let Some(last) = page.last() else { break };
                    after = last.seq;
                    for e in &page {
                        let r = if json {
                            let sep = if first { "\n  " } else { ",\n  " };
                            first = false;
                            write!(out, "{sep}{}", serde_json::to_string(e)?)
                        } else {
                            let stage = e.stage.as_deref().unwrap_or("-");
                            let p = crate::diag::printable;
                            writeln!(out, "#{:<6} {} {} {:<12} {:<18} {:<10} {}", e.seq, e.time, p(&e.run), p(&e.kind), p(stage), p(&e.actor), p(&e.detail))
                        };
                        if r.is_err() {
                            return Ok(ExitCode::SUCCESS); // the reader went away (| head)
                        }
                    }
                }
                if json {
                    let _ = writeln!(out, "{}]}}", if first { "" } else { "\n" });
                }
                let _ = out.flush();
                Ok(ExitCode::SUCCESS)
            }
            AuditCommand::Verify { json, known, against } => {
                store.close().await;
                let exec = super::executor(state).await?;
                let v = match crate::ops::audit::verify(&exec, &known, &against).await {
                    Ok(v) => v,
                    Err(crate::ops::OpsError::Refused(why)) => {
                        eprintln!("promote: error: {why}");
                        return Ok(ExitCode::from(EXIT_BAD_INPUT));
                    }
                    Err(e) => return Err(e.into()),
                };
                exec.store.close().await;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&serde_json::json!({
                            "intact": v.tamper.is_none(), "entries": v.entries, "head": v.head,
                            "firstBad": v.tamper.as_ref().map(|t| t.seq()), "problem": v.tamper.as_ref().map(|t| t.to_string()), "detail": v.tamper,
                            "keptInGit": v.kept,
                        }))?
                    );
                } else {
                    match &v.tamper {
                        None => println!("audit trail intact: {} entries, head {}", v.entries, v.head.as_deref().unwrap_or("(empty)")),
                        Some(t) => println!("audit trail TAMPERED: {t} ({} entries)", v.entries),
                    }
                    for line in &v.kept {
                        println!("  {line}");
                    }
                }
                Ok(if v.tamper.is_none() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
        }
    })
}
