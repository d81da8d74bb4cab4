//! Snapshot tests of pipeline fixtures: each `NAME.yaml` has a `NAME.expected` beside it holding
//! the exact diagnostics (`NAME.yaml:LINE:COL: error: ...`) and, for valid files, the waves.
//! `PROMOTE_BLESS=1 cargo test` rewrites the snapshots; review the diff before committing it.

use std::path::{Path, PathBuf};

use promote::diag::Diagnostics;
use promote::plan::{Format, render};

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// What a user sees for `path`: its diagnostics, then (when valid) its waves.
fn outcome(path: &Path) -> (String, bool) {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let src = std::fs::read_to_string(path).unwrap();
    let mut diags = Diagnostics::new(name);
    let plan = promote::model::load(&src, &mut diags).and_then(|p| promote::plan::plan(p, &mut diags));
    let valid = plan.is_some() && !diags.has_errors();
    let mut out: String = diags.into_sorted().iter().map(|d| format!("{d}\n")).collect();
    if let Some(plan) = plan {
        out.push_str("---\n");
        out.push_str(&render(&plan, Format::Text));
    }
    (out, valid)
}

fn check_all(dir: &str, expect_valid: bool) -> usize {
    let bless = std::env::var_os("PROMOTE_BLESS").is_some();
    let mut failures = Vec::new();
    let files = fixtures(dir);
    for path in &files {
        let (actual, valid) = outcome(path);
        let snapshot = path.with_extension("expected");
        if bless {
            std::fs::write(&snapshot, &actual).unwrap();
        }
        let expected = std::fs::read_to_string(&snapshot).unwrap_or_else(|_| format!("(no snapshot {})", snapshot.display()));
        if valid != expect_valid {
            failures.push(format!(
                "{}: expected {}, got {}\n{actual}",
                path.display(),
                if expect_valid { "valid" } else { "invalid" },
                if valid { "valid" } else { "invalid" }
            ));
        } else if actual != expected {
            failures.push(format!("{}: output differs from its snapshot\n--- expected\n{expected}--- actual\n{actual}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{} of {} fixtures failed:\n\n{}", failures.len(), files.len(), failures.join("\n"));
    files.len()
}

#[test]
fn invalid_pipelines_report_every_problem_at_its_place() {
    let n = check_all("invalid", false);
    assert!(n >= 30, "only {n} invalid fixtures");
}

#[test]
fn valid_pipelines_plan_to_their_waves() {
    check_all("valid", true);
}

#[test]
fn every_error_line_names_file_line_and_column() {
    for path in fixtures("invalid") {
        let (out, _) = outcome(&path);
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let errors: Vec<&str> = out.lines().filter(|l| l.contains(": error: ")).collect();
        assert!(!errors.is_empty(), "{name}: no error reported");
        for line in errors {
            let rest = line.strip_prefix(&format!("{name}:")).unwrap_or_else(|| panic!("{line}"));
            let mut parts = rest.splitn(3, ':');
            let l: usize = parts.next().unwrap().parse().unwrap_or_else(|_| panic!("no line in {line}"));
            let c: usize = parts.next().unwrap().parse().unwrap_or_else(|_| panic!("no column in {line}"));
            assert!(l >= 1 && c >= 1, "{line}");
        }
    }
}

#[test]
fn the_shipped_pipelines_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue; // governance/: the users file and policies the pipelines name
        }
        let (out, valid) = outcome(&path);
        assert!(valid, "{}:\n{out}", path.display());
        assert!(!out.contains("warning"), "{}:\n{out}", path.display());
    }
}
