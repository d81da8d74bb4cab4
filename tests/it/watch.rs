//! Watches: a promoted release keeps being judged after its run, against a real Prometheus that
//! scrapes a service's `/metrics` (what the test makes the service say) and real log files; a
//! failure reverts the environment to the last compliant release, marks the run reverted and holds
//! the version until a person clears it; a watch survives a killed server and ends when a newer
//! promotion supersedes it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::exec::{Setup, promote, text};
use crate::prom::{Exporter, Prometheus, wait_for_value};
use crate::repos::git;

/// A pipeline that deploys to QA, watched `for` with one look every `interval` (after `extra`
/// YAML of the watch, indented by 8).
fn watched(prom: &Prometheus, for_: &str, extra: &str) -> Setup {
    let stages = format!(
        "  deploy-qa:\n    deploy:\n      environment: qa\n      watch:\n        for: {for_}\n        interval: 1s\n{extra}        metrics:\n          provider: {{prometheus: {{address: \"{}\", timeout: 2s}}}}\n          checks:\n            - name: error-rate\n              query: error_rate\n              successCondition: result[0] < 0.05\n",
        prom.url()
    );
    Setup::new(&stages, "")
}

/// The watch's `for` in the pipeline file, from now on (each run keeps the file it started with).
fn set_for(s: &Setup, from: &str, to: &str) {
    let text = std::fs::read_to_string(&s.file).unwrap();
    std::fs::write(&s.file, text.replace(&format!("for: {from}"), &format!("for: {to}"))).unwrap();
}

fn qa_file(s: &Setup) -> String {
    git(&s.path().join("envs/qa.git"), &["show", "main:app/kustomization.yaml"])
}

fn run_id(o: &std::process::Output) -> String {
    let all = text(o);
    all.split_whitespace().find(|w| w.len() == 26 && w.chars().all(|c| c.is_ascii_alphanumeric())).unwrap_or_else(|| panic!("no run id in {all}")).to_string()
}

fn watches(s: &Setup) -> Vec<serde_json::Value> {
    let out = promote(s.path(), &["watch", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["items"].as_array().unwrap().clone()
}

fn watch_of<'a>(all: &'a [serde_json::Value], version: &str) -> &'a serde_json::Value {
    all.iter().find(|w| w["version"] == version).unwrap_or_else(|| panic!("no watch of {version}: {all:?}"))
}

/// `promote watch run` in the background (it makes the looks until no watch is left).
fn watch_run(s: &Setup) -> Child {
    crate::exec::promote_command(s.path()).args(["watch", "run"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

#[test]
fn a_release_whose_error_rate_rises_after_its_run_is_reverted_to_the_last_compliant_one_and_held() {
    let service = Exporter::start("error_rate 0.001\n");
    let prom = Prometheus::scraping(&service.addr);
    wait_for_value(&prom, "error_rate", 0.001);
    let s = watched(&prom, "2s", "");

    // 1.2.0: promoted, watched two seconds, clean: the last compliant release.
    let first = promote(s.path(), &["run", "pipeline.yaml", "--version", "1.2.0"]);
    assert!(first.status.success(), "{}", text(&first));
    let looks = promote(s.path(), &["watch", "run"]);
    assert!(looks.status.success(), "{}", text(&looks));
    assert_eq!(watch_of(&watches(&s), "1.2.0")["state"], "passed", "{}", text(&looks));

    // 1.3.0: promoted and watched for a minute; its error rate rises after the run ended.
    set_for(&s, "2s", "60s");
    let second = promote(s.path(), &["run", "pipeline.yaml", "--version", "1.3.0"]);
    assert!(second.status.success(), "{}", text(&second));
    let run = run_id(&second);
    assert!(qa_file(&s).contains("newTag: 1.3.0"), "{}", qa_file(&s));
    let looking = watch_run(&s);
    // Clean looks first.
    let t = Instant::now();
    while watch_of(&watches(&s), "1.3.0")["passes"].as_i64().unwrap_or(0) < 2 {
        assert!(t.elapsed() < Duration::from_secs(30), "no clean look: {:?}", watches(&s));
        std::thread::sleep(Duration::from_millis(100));
    }
    service.say("error_rate 0.31\n");
    let flipped = promote::clock::now_ms();
    let done = looking.wait_with_output().unwrap();
    assert_eq!(done.status.code(), Some(1), "a failed watch: exit 1\n{}", text(&done));

    let all = watches(&s);
    let w = watch_of(&all, "1.3.0");
    assert_eq!(w["state"], "failed", "{w}");
    let message = w["message"].as_str().unwrap();
    assert!(message.contains("error-rate") && message.contains("0.31"), "the message names the check and the value: {message}");
    assert!(message.contains("reverted qa to 1.2.0") && message.contains("last compliant release"), "{message}");
    // Within a few looks of the change (one scrape, one look), long before its minute was up.
    assert!(w["endedAt"].as_i64().unwrap() - flipped < 20_000, "{w}");
    // Git holds 1.2.0 again, in a rollback commit that names the run.
    assert!(qa_file(&s).contains("newTag: 1.2.0"), "{}", qa_file(&s));
    let head = git(&s.path().join("envs/qa.git"), &["log", "-1", "--format=%B", "main"]);
    assert!(head.starts_with("roll back checkout in qa to 1.2.0"), "{head}");
    assert!(head.contains(&format!("Promote-Run: {run}")) && head.contains("Promote-Rollback-To: "), "{head}");
    // The run is shown reverted, its deploy rolled back.
    let status = promote(s.path(), &["status", &run]);
    let status_text = text(&status);
    assert!(status_text.contains("reverted"), "{status_text}");
    assert!(status_text.contains("rolled-back"), "{status_text}");

    // Held: 1.3.0 is not promoted again until a person clears it.
    let again = promote(s.path(), &["run", "pipeline.yaml", "--version", "1.3.0"]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    let id = w["id"].as_str().unwrap();
    assert!(text(&again).contains("is held") && text(&again).contains(&format!("promote watch clear {id}")), "{}", text(&again));
    let no_reason = promote(s.path(), &["watch", "clear", id, "--as", "alice", "--reason", " "]);
    assert_eq!(no_reason.status.code(), Some(2), "{}", text(&no_reason));
    let cleared = promote(s.path(), &["watch", "clear", id, "--as", "alice", "--reason", "the rate came from a load test"]);
    assert!(cleared.status.success(), "{}", text(&cleared));
    let twice = promote(s.path(), &["watch", "clear", id, "--as", "alice", "--reason", "again"]);
    assert_eq!(twice.status.code(), Some(2), "{}", text(&twice));
    set_for(&s, "60s", "1s");
    let after = promote(s.path(), &["run", "pipeline.yaml", "--version", "1.3.0"]);
    assert!(after.status.success(), "cleared: promoted again\n{}", text(&after));

    // Every step is in the trail, and the trail is intact.
    let log = text(&promote(s.path(), &["audit", "log", "--run", &run]));
    for what in ["watching 1.3.0 in qa", "reverting", "run reverted", "failed", "cleared by alice"] {
        assert!(log.contains(what), "`{what}` in the trail:\n{log}");
    }
    let verify = promote(s.path(), &["audit", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify));
}

#[test]
fn a_newer_promotion_supersedes_a_watch_and_a_failure_then_never_reverts_it() {
    let service = Exporter::start("error_rate 0.001\n");
    let prom = Prometheus::scraping(&service.addr);
    wait_for_value(&prom, "error_rate", 0.001);
    let s = watched(&prom, "60s", "");
    for v in ["2.0.0", "2.1.0"] {
        let out = promote(s.path(), &["run", "pipeline.yaml", "--version", v]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let all = watches(&s);
    let old = watch_of(&all, "2.0.0");
    assert_eq!(old["state"], "superseded", "{old}");
    assert!(old["message"].as_str().unwrap().contains("2.1.0"), "{old}");
    assert_eq!(watch_of(&all, "2.1.0")["state"], "watching");

    // A rollback by hand: the watch of 2.1.0 ends, and its failure would revert nothing.
    let back = promote(s.path(), &["rollback", "qa", "--pipeline", "pipeline.yaml"]);
    assert!(back.status.success(), "{}", text(&back));
    assert!(qa_file(&s).contains("newTag: 2.0.0"));
    let head_before = git(&s.path().join("envs/qa.git"), &["rev-parse", "main"]);
    service.say("error_rate 0.5\n");
    wait_for_value(&prom, "error_rate", 0.5);
    let looks = promote(s.path(), &["watch", "run", "--once"]);
    assert!(looks.status.success(), "{}", text(&looks));
    let w = watch_of(&watches(&s), "2.1.0").clone();
    assert_eq!(w["state"], "superseded", "{w}");
    assert!(w["message"].as_str().unwrap().contains("rollback by ci-bot"), "{w}");
    assert_eq!(git(&s.path().join("envs/qa.git"), &["rev-parse", "main"]), head_before, "nothing was committed over the rollback");
}

#[test]
fn a_watch_survives_a_killed_server_and_ends_clean_where_nothing_went_wrong() {
    let service = Exporter::start("error_rate 0.002\n");
    let prom = Prometheus::scraping(&service.addr);
    wait_for_value(&prom, "error_rate", 0.002);
    let s = watched(&prom, "8s", "");
    let out = promote(s.path(), &["run", "pipeline.yaml", "--version", "3.0.0"]);
    assert!(out.status.success(), "{}", text(&out));
    let serve = || {
        Command::new(crate::promote_bin())
            .current_dir(s.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--pipelines", "."])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // The server takes up the watch the CLI's run began.
    let mut server = serve();
    let t = Instant::now();
    while watch_of(&watches(&s), "3.0.0")["looks"].as_i64().unwrap_or(0) < 2 {
        assert!(t.elapsed() < Duration::from_secs(30), "the server made no look: {:?}", watches(&s));
        std::thread::sleep(Duration::from_millis(100));
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let looks_before = watch_of(&watches(&s), "3.0.0")["looks"].as_i64().unwrap();
    assert_eq!(watch_of(&watches(&s), "3.0.0")["state"], "watching");
    // Another server carries it on from the state, to its end.
    let mut again = serve();
    let t = Instant::now();
    loop {
        let all = watches(&s);
        let w = watch_of(&all, "3.0.0");
        if w["state"] != "watching" {
            assert_eq!(w["state"], "passed", "{w}");
            assert!(w["looks"].as_i64().unwrap() > looks_before, "looks after the restart: {w}");
            assert_eq!(w["failures"], 0);
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(40), "the watch never ended: {w}");
        std::thread::sleep(Duration::from_millis(200));
    }
    again.kill().unwrap();
    again.wait().unwrap();
    assert!(qa_file(&s).contains("newTag: 3.0.0"), "a clean watch keeps the release");
}

#[test]
fn new_error_lines_in_the_logs_after_the_run_revert_the_release() {
    let service = Exporter::start("error_rate 0.001\n");
    let prom = Prometheus::scraping(&service.addr);
    let s = watched(&prom, "2s", "");
    // A logs-only watch over the service's log file.
    let log = s.path().join("app.log");
    let mut normal = String::new();
    for i in 0..200 {
        normal.push_str(&format!("2026-12-01 10:00:{:02} INFO request {i} served in {} ms\n", i % 60, 10 + i % 7));
    }
    std::fs::write(&log, &normal).unwrap();
    let text_before = std::fs::read_to_string(&s.file).unwrap();
    let start = text_before.find("        metrics:").unwrap();
    let yaml = format!("{}        logs:\n          source: {{files: [app.log]}}\n          sensitivity: medium\n", &text_before[..start]);
    std::fs::write(&s.file, yaml).unwrap();
    let first = promote(s.path(), &["run", "pipeline.yaml", "--version", "4.0.0"]);
    assert!(first.status.success(), "{}", text(&first));
    // Traffic as before: the watch passes.
    std::fs::write(&log, format!("{normal}{normal}")).unwrap();
    let looks = promote(s.path(), &["watch", "run"]);
    assert!(looks.status.success(), "{}", text(&looks));
    assert_eq!(watch_of(&watches(&s), "4.0.0")["state"], "passed", "{}", text(&looks));

    set_for(&s, "2s", "30s");
    let second = promote(s.path(), &["run", "pipeline.yaml", "--version", "4.1.0"]);
    assert!(second.status.success(), "{}", text(&second));
    let mut lines = std::fs::read_to_string(&log).unwrap();
    for i in 0..20 {
        lines.push_str(&format!("2026-12-01 10:05:{:02} ERROR connection to db-{} refused: pool exhausted\n", i, i % 3));
    }
    std::fs::write(&log, lines).unwrap();
    let looks = promote(s.path(), &["watch", "run"]);
    assert_eq!(looks.status.code(), Some(1), "{}", text(&looks));
    let w = watch_of(&watches(&s), "4.1.0").clone();
    assert_eq!(w["state"], "failed", "{w}");
    assert!(w["message"].as_str().unwrap().contains("refused"), "the message names the new template: {w}");
    assert!(qa_file(&s).contains("newTag: 4.0.0"), "{}", qa_file(&s));
}

#[test]
fn a_watch_that_judges_nothing_or_never_looks_is_refused_at_validate() {
    let s = Setup::new(
        "  deploy-qa:\n    deploy:\n      environment: qa\n      watch: {for: 10s, interval: 1m}\n  deploy-prod:\n    needs: [deploy-qa]\n    deploy:\n      environment: prod\n      watch:\n        for: 0s\n        logs: {source: {files: [a.log]}, errorPatterns: ['(']}\n",
        "",
    );
    let out = promote(s.path(), &["validate", "pipeline.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let all = text(&out);
    for want in ["judges nothing", "is longer than `for: 10.0s`", "`for` is 0s", "not a valid regular expression"] {
        assert!(all.contains(want), "`{want}` in:\n{all}");
    }
    assert!(all.contains("pipeline.yaml:"), "the errors name the file: {all}");
}

crate::both_backends! {
async fn the_server_reverts_a_bad_release_on_its_own_and_the_held_version_waits_for_a_person_through_the_api() {
    use crate::server::{ALICE, Running, push_event, sign};
    let service = Exporter::start("error_rate 0.4\n");
    let prom = Prometheus::scraping(&service.addr);
    tokio::task::block_in_place(|| wait_for_value(&prom, "error_rate", 0.4));
    let s = crate::server::setup();
    // QA only, watched; the tag trigger and the users file of the server tests.
    let text = std::fs::read_to_string(&s.file).unwrap();
    let (head, rest) = text.split_once("stages:\n").unwrap();
    let tail = &rest[rest.find("users: users.yaml").unwrap()..];
    let stages = format!(
        "stages:\n  qa:\n    deploy:\n      environment: qa\n      watch:\n        for: 1m\n        interval: 1s\n        approvers: [alice]\n        metrics:\n          provider: {{prometheus: {{address: \"{}\", timeout: 2s}}}}\n          checks:\n            - {{name: error-rate, query: error_rate, successCondition: \"result[0] < 0.05\"}}\n",
        prom.url()
    );
    std::fs::write(&s.file, format!("{head}{stages}{tail}")).unwrap();
    let server = Running::start(&s).await;

    let (status, started) = server.api(reqwest::Method::POST, "/runs", Some(serde_json::json!({"pipeline": "checkout", "version": "v5.0.0"}))).await;
    assert_eq!(status, 201, "{started}");
    let run = started["run"]["id"].as_str().or(started["run"].as_str()).unwrap().to_string();
    // The server's watcher looks a second after the run and reverts.
    let mut watch = serde_json::Value::Null;
    crate::server::wait_for("the watch to fail", async || {
        let (_, all) = server.api(reqwest::Method::GET, "/watches", None).await;
        watch = all["watches"].as_array().and_then(|a| a.first().cloned()).unwrap_or_default();
        watch["state"] == "failed"
    })
    .await;
    let id = watch["id"].as_str().unwrap().to_string();
    assert!(qa_file(&s).contains("newTag: 1.0.0"), "back to the state before: {}", qa_file(&s));
    let (_, shown) = server.api(reqwest::Method::GET, &format!("/runs/{run}"), None).await;
    assert_eq!(shown["run"]["state"], "reverted", "{shown}");
    let (status, one) = server.api(reqwest::Method::GET, &format!("/watches/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(one["evidence"]["metrics"]["checks"][0]["phase"], "Failed", "the last look's evidence: {one}");
    // No rollback restores the held version (the commit that promoted it named as the state).
    let commit = one["commit"].as_str().unwrap().to_string();
    let (status, refused) =
        server.api(reqwest::Method::POST, "/pipelines/checkout/environments/qa/rollback", Some(serde_json::json!({"to": commit}))).await;
    assert_eq!((status, refused["rolledBack"].as_bool()), (409, Some(false)), "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("is held"), "{refused}");
    assert!(qa_file(&s).contains("newTag: 1.0.0"), "nothing written: {}", qa_file(&s));

    // Held: the API refuses the version, a webhook of it answers 409 and records nothing.
    let (status, refused) = server.api(reqwest::Method::POST, "/runs", Some(serde_json::json!({"pipeline": "checkout", "version": "v5.0.0"}))).await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("is held"), "{refused}");
    let body = push_event("acme/checkout", "refs/tags/v5.0.0");
    let sig = sign(&body);
    let headers = [("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "held-delivery-1"), ("X-Hub-Signature-256", sig.as_str())];
    let (status, answer) = server.hook(&headers, body.clone()).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["runs"][0]["held"].as_str().unwrap().contains(&id), "{answer}");

    // Alice's inbox in the web pages shows the held version; she clears it there (a reason is
    // required, through the API too), and the same delivery starts the run.
    let (status, no_reason) = server.api(reqwest::Method::POST, &format!("/watches/{id}/clear"), Some(serde_json::json!({}))).await;
    assert_eq!(status, 400, "{no_reason}");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let cookie = crate::server::sign_in(&http, &server.url, ALICE).await;
    let inbox = http.get(format!("{}/ui/", server.url)).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(inbox.contains(&format!("id=\"held-{id}\"")) && inbox.contains("held in qa") && inbox.contains("v5.0.0"), "{inbox}");
    let csrf = inbox.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let form = [("csrf", csrf.as_str()), ("id", id.as_str()), ("reason", "a bad node, drained")];
    let cleared = http.post(format!("{}/ui/watch/clear", server.url)).header("cookie", &cookie).form(&form).send().await.unwrap();
    assert_eq!(cleared.status().as_u16(), 303, "{:?}", cleared.text().await);
    let (_, one) = server.api(reqwest::Method::GET, &format!("/watches/{id}"), None).await;
    assert_eq!((one["clearedBy"].as_str(), one["clearReason"].as_str()), (Some("alice"), Some("a bad node, drained")), "{one}");
    let (status, answer) = server.hook(&headers, body).await;
    assert_eq!(status, 201, "{answer}");
    server.stop().await;
}
}

crate::both_backends! {
async fn a_revert_whose_commit_landed_before_a_crash_is_finished_not_called_superseded() {
    let service = Exporter::start("error_rate 0.3\n");
    let prom = Prometheus::scraping(&service.addr);
    tokio::task::block_in_place(|| wait_for_value(&prom, "error_rate", 0.3));
    let s = watched(&prom, "60s", "");
    let out = promote(s.path(), &["run", "pipeline.yaml", "--version", "6.0.0"]);
    assert!(out.status.success(), "{}", text(&out));
    let id = watch_of(&watches(&s), "6.0.0")["id"].as_str().unwrap().to_string();
    // As a crash would leave it: the watch recorded `reverting`, its rollback commit pushed, the
    // end not recorded.
    {
        let exec = s.executor().await;
        exec.store.end_watch(&id, promote::store::WatchState::Reverting, "look 1 of the watch failed", None, false).await.unwrap();
        let (_, plan) = s.plan();
        let env = plan.pipeline.environments.iter().find(|e| e.name.value == "qa").unwrap();
        let dest = promote::git::Destination::of(env, s.path());
        let key = exec.store.key().clone();
        let w = exec.store.watch(&id).await.unwrap().unwrap();
        let r = promote::git::RollbackRequest {
            pipeline: "checkout",
            environment: "qa",
            target: promote::git::RollbackTarget::Of(w.commit.clone()),
            run: Some(&w.run),
            stage: Some(&w.stage),
            seal: Some(&key),
            only_if: Some(&w.value),
            forbidden: &[],
        };
        exec.writer.rollback(&dest, &r).unwrap();
        exec.store.raw_sql(&format!("UPDATE watches SET next_at = 0 WHERE id = '{id}'")).await.unwrap();
        exec.store.close().await;
    }
    let head = git(&s.path().join("envs/qa.git"), &["rev-parse", "main"]);
    let looks = promote(s.path(), &["watch", "run", "--once"]);
    assert_eq!(looks.status.code(), Some(1), "{}", text(&looks));
    let w = watch_of(&watches(&s), "6.0.0").clone();
    assert_eq!(w["state"], "failed", "{w}");
    assert!(w["message"].as_str().unwrap().contains("; qa already"), "the revert found done: {w}");
    assert_eq!(git(&s.path().join("envs/qa.git"), &["rev-parse", "main"]), head, "no second commit");
}
}
