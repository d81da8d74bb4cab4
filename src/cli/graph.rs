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
    pub format: GraphFormat,
}

/// `--format` (the plan's formats, as the command line names them: `plan` knows no clap).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum GraphFormat {
    /// The waves, one line a stage, with what each needs.
    Text,
    /// Graphviz: `promote graph p.yaml --format dot | dot -Tsvg > p.svg`.
    Dot,
    /// Mermaid flowchart (renders on GitHub and GitLab inside a ```mermaid block).
    Mermaid,
    /// The waves and edges as JSON.
    Json,
}

impl From<GraphFormat> for Format {
    fn from(f: GraphFormat) -> Format {
        match f {
            GraphFormat::Text => Format::Text,
            GraphFormat::Dot => Format::Dot,
            GraphFormat::Mermaid => Format::Mermaid,
            GraphFormat::Json => Format::Json,
        }
    }
}

/// Runs `graph`: exit 0 with the picture on stdout, or 2 with the problems on stderr.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let checked = check_file(&args.file);
    print_diagnostics(&checked.diagnostics);
    match checked.plan {
        Some(plan) => {
            print!("{}", render(&plan, args.format.into()));
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(ExitCode::from(EXIT_BAD_INPUT)),
    }
}
