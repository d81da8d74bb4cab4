//! `promote graph FILE`: prints the stage DAG.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{EXIT_BAD_INPUT, check_file, print_diagnostics};
use crate::plan::{Format, render};

/// Arguments of `graph`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Runs `graph`: exit 0 with the picture on stdout, or 2 with the problems on stderr.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let checked = check_file(&args.file);
    print_diagnostics(&checked.diagnostics);
    match checked.plan {
        Some(plan) => {
            print!("{}", render(&plan, args.format));
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(ExitCode::from(EXIT_BAD_INPUT)),
    }
}
