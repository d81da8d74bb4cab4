//! The `promote` binary as a user runs it: arguments, stdout, stderr, exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::promote_bin;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

fn promote(args: &[&str]) -> Output {
    Command::new(promote_bin()).args(args).output().expect("run promote")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("promote-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn validate_a_valid_file_exits_0_and_says_ok() {
    let f = fixture("valid/checkout.yaml");
    let out = promote(&["validate", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{}: ok (6 stages in 5 waves)\n", f.display()));
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn validate_an_invalid_file_prints_every_error_with_its_place_and_exits_2() {
    let f = fixture("invalid/many-errors.yaml");
    let out = promote(&["validate", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(errors.len(), 6, "{stderr}");
    let prefix = format!("{}:", f.display());
    assert!(errors.iter().all(|l| l.starts_with(&prefix)), "{stderr}");
    assert!(stderr.contains(":8:1: error: unknown field `stage`; did you mean `stages`?"), "{stderr}");
    assert!(stderr.ends_with("1 file checked: 0 valid, 1 invalid (6 errors, 1 warning)\n"), "{stderr}");
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn validate_takes_several_files_and_folders() {
    let dir = tmpdir("folder");
    std::fs::copy(fixture("valid/minimal.yaml"), dir.join("a.yaml")).unwrap();
    std::fs::copy(fixture("valid/minimal.yaml"), dir.join("b.yml")).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a pipeline").unwrap();
    let out = promote(&["validate", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 2);
    assert!(text(&out.stderr).contains("2 files checked: 2 valid, 0 invalid"));

    let bad = fixture("invalid/cycle-three.yaml");
    let out = promote(&["validate", dir.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error: `needs` forms a cycle: a -> c -> b -> a"), "{stderr}");
    assert!(stderr.contains("3 files checked: 2 valid, 1 invalid (1 error, 2 warnings)"), "{stderr}");
}

#[test]
fn validate_a_missing_file_or_empty_folder_is_bad_input() {
    let out = promote(&["validate", "/nonexistent/pipeline.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("/nonexistent/pipeline.yaml:1:1: error: cannot read the file: "), "{}", text(&out.stderr));

    let dir = tmpdir("empty");
    let out = promote(&["validate", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("the folder holds no *.yaml or *.yml file"));

    let out = promote(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
}

#[test]
fn warnings_alone_do_not_fail_validation() {
    let f = fixture("valid/prod-without-gate.yaml");
    let out = promote(&["validate", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(":16:27: warning: stage `deploy-production` deploys to `production`, which looks like production"), "{stderr}");
}

#[test]
fn validate_json_is_machine_readable() {
    let good = fixture("valid/checkout.yaml");
    let bad = fixture("invalid/needs-unknown.yaml");
    let out = promote(&["validate", "--json", good.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(v[0]["valid"], true);
    assert_eq!(v[0]["stages"], 6);
    assert_eq!(v[1]["valid"], false);
    let d = v[1]["diagnostics"].as_array().unwrap().iter().find(|d| d["severity"] == "error").unwrap();
    assert_eq!((d["line"].as_u64(), d["col"].as_u64()), (Some(12), Some(13)));
    assert!(d["message"].as_str().unwrap().contains("did you mean `deploy-qa`?"));
}

#[test]
fn graph_prints_waves_dot_and_mermaid() {
    let f = fixture("valid/checkout.yaml");
    let f = f.to_str().unwrap();
    let out = promote(&["graph", f]);
    assert_eq!(out.status.code(), Some(0));
    let t = text(&out.stdout);
    assert!(t.starts_with("pipeline checkout: 6 stages in 5 waves\nwave 1\n  deploy-qa "), "{t}");
    assert!(t.contains("wave 2 (2 at once)\n  check-metrics "), "{t}");

    let out = promote(&["graph", f, "--format", "dot"]);
    assert_eq!(out.status.code(), Some(0));
    let dot = text(&out.stdout);
    assert!(dot.contains("\"check-metrics\" -> \"policy-approve\";") && dot.contains("\"analyse-logs\" -> \"policy-approve\";"), "{dot}");

    let out = promote(&["graph", f, "--format", "mermaid"]);
    let m = text(&out.stdout);
    assert!(m.starts_with("flowchart LR\n"));
    assert_eq!(m.matches(" --> ").count(), 6, "{m}");

    let out = promote(&["graph", f, "--format", "svg"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("possible values: text, dot, mermaid, json"));
}

#[test]
fn graph_of_an_invalid_file_prints_the_errors_not_a_graph() {
    let f = fixture("invalid/two-cycles.yaml");
    let out = promote(&["graph", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(text(&out.stderr).matches("forms a cycle").count(), 2);
}
