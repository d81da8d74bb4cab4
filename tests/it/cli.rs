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
    let v = &v["items"];
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

fn promote_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(promote_bin()).current_dir(dir).env_remove("PROMOTE_DATABASE_URL").env_remove("PROMOTE_SERVER").args(args).output().expect("run promote")
}

#[test]
fn commands_that_read_or_decide_in_a_folder_without_a_state_say_so_exit_2_and_make_none() {
    let dir = tmpdir("no-state");
    let cases: &[&[&str]] = &[
        &["status"],
        &["status", "--json"],
        &["status", "01HZZZZZZZZZZZZZZZZZZZZZZZ"],
        &["approve", "01HZZZZZZZZZZZZZZZZZZZZZZZ", "sign-off", "--as", "alice"],
        &["reject", "01HZZZZZZZZZZZZZZZZZZZZZZZ", "sign-off", "--as", "alice", "--reason", "no"],
        &["break-glass", "01HZZZZZZZZZZZZZZZZZZZZZZZ", "deploy", "--as", "alice", "--reason", "fire"],
        &["resume", "01HZZZZZZZZZZZZZZZZZZZZZZZ"],
        &["audit", "verify"],
        &["audit", "log", "--json"],
        &["drift", "list"],
        &["watch", "list", "--json"],
        &["watch", "run", "--once"],
        &["logs", "not-a-risk", "01HZZZZZZZZZZZZZZZZZZZZZZZ", "logs", "1", "--as", "alice", "--reason", "known"],
    ];
    for args in cases {
        let out = promote_in(&dir, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}{}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stderr).starts_with("promote: error: no state at .promote/state.db: nothing has run here"), "{args:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "", "{args:?}: `audit verify` must not say \"intact: 0 entries\"");
        assert!(!dir.join(".promote").exists(), "{args:?} made a state");
    }
    // `--state` names where to look, after the command or (as before) ahead of it.
    let out = promote_in(&dir, &["audit", "verify", "--state", "elsewhere/state.db"]);
    assert!(text(&out.stderr).contains("no state at elsewhere/state.db"), "{}", text(&out.stderr));
    let out = promote_in(&dir, &["--state", "elsewhere/state.db", "status"]);
    assert!(text(&out.stderr).contains("no state at elsewhere/state.db"), "{}", text(&out.stderr));
    assert!(!dir.join("elsewhere").exists());
}

#[test]
fn state_server_and_log_format_are_offered_only_where_they_do_something() {
    let help = |args: &[&str]| text(&promote(args).stdout);
    for args in [
        &["validate", "--help"][..],
        &["graph", "--help"],
        &["probe", "--help"],
        &["token", "--help"],
        &["completions", "--help"],
        &["logs", "mine", "--help"],
        &["key", "generate", "--help"],
    ] {
        let h = help(args);
        for flag in ["--state", "--server", "--log-format"] {
            assert!(!h.contains(flag), "{args:?} offers {flag}:\n{h}");
        }
    }
    for args in [&["status", "--help"][..], &["approve", "--help"], &["run", "--help"], &["drift", "list", "--help"], &["watch", "clear", "--help"]] {
        let h = help(args);
        for flag in ["--state", "--server", "--log-format"] {
            assert!(h.contains(flag), "{args:?} lacks {flag}:\n{h}");
        }
    }
    for args in [&["serve", "--help"][..], &["resume", "--help"], &["audit", "verify", "--help"], &["rollback", "--help"], &["logs", "not-a-risk", "--help"]] {
        let h = help(args);
        assert!(h.contains("--state") && h.contains("--log-format"), "{args:?}:\n{h}");
        assert!(!h.contains("--server"), "{args:?} offers --server, which it ignores:\n{h}");
    }
    assert!(!help(&["--help"]).contains("--state"), "the top level offers no --state");
    // Given where the command would ignore it: refused, exit 2, not dropped silently.
    let f = fixture("valid/checkout.yaml");
    let out = promote(&["--state", "x.db", "validate", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stderr), "promote: error: --state does nothing for `promote validate`: it is not one of its options (`promote validate --help`)\n");
    let out = promote(&["--server", "http://127.0.0.1:9", "graph", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = promote(&["validate", "--log-format", "json", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "clap refuses an option the command does not have");
}

#[test]
fn completions_for_bash_zsh_and_fish_name_the_commands() {
    for (shell, marker) in [("bash", "complete -F _promote"), ("zsh", "#compdef promote"), ("fish", "complete -c promote")] {
        let out = promote(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        for cmd in ["validate", "approve", "completions", "generate"] {
            assert!(script.contains(cmd), "{shell} completes {cmd}");
        }
    }
    // bash reads it without a syntax error.
    let out = promote(&["completions", "bash"]);
    let dir = tmpdir("completions");
    std::fs::write(dir.join("promote.bash"), &out.stdout).unwrap();
    let checked = Command::new("bash").arg("-n").arg(dir.join("promote.bash")).output().unwrap();
    assert!(checked.status.success(), "{}", text(&checked.stderr));
    let out = promote(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn key_generate_writes_a_key_the_loader_takes_and_never_replaces_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmpdir("key");
    let key = dir.join("secrets/promote.key");
    let out = promote(&["key", "generate", key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&format!("wrote a new key to {}", key.display())), "{}", text(&out.stdout));
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(key.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
    let written = std::fs::read_to_string(&key).unwrap();
    assert!(written.trim().len() == 64 && written.trim().chars().all(|c| c.is_ascii_hexdigit()), "{written:?}");
    // The key loader takes it: a run sealed with it succeeds and its trail verifies.
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join("tiny.yaml"),
        "apiVersion: promote/v1\nkind: Pipeline\nname: tiny\nartifact: {image: registry.example.com/acme/tiny}\nstages:\n  pause:\n    wait: {duration: 1ms}\n",
    )
    .unwrap();
    for args in [&["run", "tiny.yaml", "--version", "1.0.0"][..], &["audit", "verify"]] {
        let out = Command::new(promote_bin()).current_dir(&work).env("PROMOTE_KEY_FILE", &key).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
    }
    // A second generate leaves the key as it was.
    let out = promote(&["key", "generate", key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("already exists; it is left as it is"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&key).unwrap(), written);
    // Without PATH: PROMOTE_KEY_FILE.
    let other = dir.join("other.key");
    let out = Command::new(promote_bin()).env("PROMOTE_KEY_FILE", &other).args(["key", "generate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(other.exists());
}

#[test]
fn every_json_list_is_an_object_with_items() {
    let dir = tmpdir("json-lists");
    std::fs::write(
        dir.join("tiny.yaml"),
        "apiVersion: promote/v1\nkind: Pipeline\nname: tiny\nartifact: {image: registry.example.com/acme/tiny}\nstages:\n  pause:\n    wait: {duration: 1ms}\n",
    )
    .unwrap();
    let key = dir.join("key");
    let run = |args: &[&str]| Command::new(promote_bin()).current_dir(&dir).env("PROMOTE_KEY_FILE", &key).args(args).output().unwrap();
    assert!(run(&["run", "tiny.yaml", "--version", "1.0.0"]).status.success());
    for (args, at_least) in [
        (&["status", "--json"][..], 1),
        (&["audit", "log", "--json"], 3),
        (&["drift", "list", "--json"], 0),
        (&["watch", "list", "--json"], 0),
        (&["validate", "--json", "tiny.yaml"], 1),
    ] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out.stdout)));
        let items = v["items"].as_array().unwrap_or_else(|| panic!("{args:?}: no items list: {v}"));
        assert!(items.len() >= at_least, "{args:?}: {v}");
        assert!(items.iter().all(|i| i.is_object()), "{args:?}: {v}");
    }
}

#[test]
fn the_tutorials_pipeline_validates_beside_the_shipped_governance_folder() {
    let tutorial = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/tutorial.md")).unwrap();
    let step = &tutorial[tutorial.find("## 3. Point the pipeline at them").expect("step 3")..];
    let start = step.find("```yaml\n").expect("step 3 shows a pipeline") + "```yaml\n".len();
    let yaml = &step[start..start + step[start..].find("```").unwrap()];
    assert!(yaml.contains("apiVersion: promote/v1") && yaml.contains("kind: Pipeline"), "a whole file, not a fragment:\n{yaml}");
    let dir = tmpdir("tutorial");
    let pipelines = dir.join("pipelines");
    std::fs::create_dir_all(pipelines.join("governance/policies")).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/governance");
    std::fs::copy(shipped.join("users.yaml"), pipelines.join("governance/users.yaml")).unwrap();
    std::fs::copy(shipped.join("policies/production.rego"), pipelines.join("governance/policies/production.rego")).unwrap();
    std::fs::write(pipelines.join("checkout.yaml"), yaml).unwrap();
    let out = Command::new(promote_bin()).current_dir(&dir).args(["validate", "pipelines/checkout.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(tutorial.contains(text(&out.stdout).trim()), "the tutorial shows what validate prints: {}", text(&out.stdout));
}
