//! The `promote` command line: parses arguments, runs a command, maps outcomes to exit codes.

mod graph;
mod rollback;
mod validate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::diag::{Diagnostic, Diagnostics};
use crate::plan::{self, Plan};

/// Exit code for bad input (invalid pipeline files, unreadable files, refused requests).
pub const EXIT_BAD_INPUT: u8 = 2;

/// promote: release promotion pipelines for GitOps.
#[derive(Debug, Parser)]
#[command(name = "promote", version, about, long_about = None)]
pub struct Cli {
    /// State database (default `.promote/state.db` in the current folder).
    #[arg(long, global = true, value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check pipeline files (or folders of *.yaml) and print every problem.
    Validate(validate::Args),
    /// Print a pipeline's stage DAG as text (its waves), DOT or Mermaid.
    Graph(graph::Args),
    /// Revert an environment to its previous (or a given) promoted state, in a new commit.
    Rollback(rollback::Args),
}

/// Runs the command line; the exit code follows docs/cli.md.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let state = cli.state.clone().unwrap_or_else(|| PathBuf::from(".promote/state.db"));
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Graph(args) => graph::run(args),
        Command::Rollback(args) => rollback::run(args, &state),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("promote: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where the bare clones of environment repos live: `repos/` beside the state file.
pub fn cache_dir(state: &Path) -> PathBuf {
    state.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).join("repos")
}

/// One pipeline file's outcome: its diagnostics and, when valid, its plan.
pub struct Checked {
    /// The file as the user named it.
    pub file: String,
    /// Every problem found, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
    /// The plan, when there were no errors.
    pub plan: Option<Plan>,
}

/// Reads, loads and plans one file, collecting every problem.
pub fn check_file(path: &Path) -> Checked {
    let file = path.display().to_string();
    let mut diags = Diagnostics::new(file.clone());
    let plan = match std::fs::read_to_string(path) {
        Ok(src) => crate::model::load(&src, &mut diags).and_then(|p| plan::plan(p, &mut diags)),
        Err(e) => {
            diags.error(crate::diag::Pos::new(1, 1), format!("cannot read the file: {e}"));
            None
        }
    };
    let plan = if diags.has_errors() { None } else { plan };
    Checked { file, diagnostics: diags.into_sorted(), plan }
}

/// Prints diagnostics on stderr, one per line.
pub fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        eprintln!("{d}");
    }
}
