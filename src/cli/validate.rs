//! `promote validate FILE...`: checks pipeline files and prints every problem.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::{EXIT_BAD_INPUT, check_file, print_diagnostics};
use crate::diag::plural;

/// Arguments of `validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pipeline files, or folders meaning every *.yaml and *.yml file in them.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Expands folders into the pipeline files they hold, sorted.
fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot list {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            if found.is_empty() {
                anyhow::bail!("{}: the folder holds no *.yaml or *.yml file", p.display());
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Runs `validate`: exit 0 when every file is valid, 2 otherwise.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let files = match expand(&args.files) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("promote: error: {e:#}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let mut invalid = 0;
    let (mut errors, mut warnings) = (0, 0);
    let mut report = Vec::new();
    for f in &files {
        let checked = check_file(f);
        let valid = checked.plan.is_some();
        invalid += usize::from(!valid);
        errors += checked.diagnostics.iter().filter(|d| d.severity == crate::diag::Severity::Error).count();
        warnings += checked.diagnostics.iter().filter(|d| d.severity == crate::diag::Severity::Warning).count();
        print_diagnostics(&checked.diagnostics);
        if args.json {
            report.push(serde_json::json!({
                "file": checked.file,
                "valid": valid,
                "stages": checked.plan.as_ref().map(|p| p.pipeline.stages.len()),
                "waves": checked.plan.as_ref().map(|p| p.waves.len()),
                "diagnostics": checked.diagnostics,
            }));
        } else if let Some(plan) = &checked.plan {
            println!("{}: ok ({})", checked.file, plan.describe());
        }
        // A plan of thousands of stages takes milliseconds to free: on another thread, which the
        // process's exit may cut short (a small one is freed here: a thread costs more).
        if checked.plan.as_ref().is_some_and(|p| p.pipeline.stages.len() >= 1_000) {
            std::thread::spawn(move || drop(checked));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&super::items(&report))?);
    }
    if files.len() > 1 || invalid > 0 {
        eprintln!(
            "{} checked: {} valid, {invalid} invalid ({}, {})",
            plural(files.len(), "file"),
            files.len() - invalid,
            plural(errors, "error"),
            plural(warnings, "warning")
        );
    }
    Ok(if invalid > 0 { ExitCode::from(EXIT_BAD_INPUT) } else { ExitCode::SUCCESS })
}
