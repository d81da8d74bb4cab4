//! What the engine does with a stage's result. Which failures are retried: with `retry:
//! {attempts: 3}`, a terminal failure (a person's rejection, a policy refusal, a rewritten
//! history) ends the stage after one attempt, a transient one (a push race lost, a remote that
//! does not answer) is tried again. And waiting: a decision made by another process wakes the
//! waiting stage at once through the change feed, with no polling, and the recorded reason follows
//! what the stage still waits for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use promote::exec::Executor;
use promote::git::{Writer, WriterConfig};
use promote::store::{RunState, StageState, Store};

use crate::exec::{Setup, drive, stage, wait_for_state};
use crate::repos::{Daemon, git};

const RETRY: &str = "    retry: {attempts: 3, backoff: 10ms}\n";

/// The attempts recorded for `name`, and its message.
fn attempts(sum: &promote::exec::Summary, name: &str) -> (StageState, i64, String) {
    let s = stage(sum, name);
    (s.state, s.attempt, s.message.clone().unwrap_or_default())
}

async fn retry_events(exec: &Executor, id: &str) -> Vec<String> {
    exec.store.events(id).await.unwrap().into_iter().filter(|e| e.detail.starts_with("attempt ")).map(|e| e.detail).collect()
}

crate::both_backends! {
async fn a_rejected_approval_fails_at_once_despite_retry() {
    let s = Setup::new(&format!("  ok:\n{RETRY}    approval: {{approvers: [alice]}}\n"), "");
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "1.0.1").await;
    let (e, i) = (exec.clone(), id.clone());
    let walker = tokio::spawn(async move { drive(&e, &i).await });
    wait_for_state(&exec.store, &id, "ok", StageState::Waiting).await;
    exec.store.decide(&id, "ok", "alice", false, Some("not this week")).await.unwrap();
    let sum = walker.await.unwrap();
    assert_eq!(attempts(&sum, "ok"), (StageState::Failed, 1, "rejected by alice: not this week".into()));
    assert!(retry_events(&exec, &id).await.is_empty());
}
}

crate::both_backends! {
async fn a_commit_refused_by_policy_fails_at_once_despite_retry() {
    let s =
        Setup::new(&format!("  guard:\n    policy: {{policies: [guard.rego]}}\n  prod:\n    needs: [guard]\n{RETRY}    deploy: {{environment: prod}}\n"), "");
    std::fs::write(
        s.path().join("guard.rego"),
        "package guard\n\ndeny contains \"no 9.x in prod\" if {\n    input.phase == \"commit\"\n    startswith(input.version, \"9.\")\n}\n",
    )
    .unwrap();
    let exec = s.executor().await;
    let id = s.start(&exec, "9.0.0").await;
    let sum = drive(&exec, &id).await;
    let (state, attempt, message) = attempts(&sum, "prod");
    assert_eq!((state, attempt), (StageState::Failed, 1), "{message}");
    assert!(message.contains("refused by policy") && message.contains("no 9.x in prod"), "{message}");
    assert!(retry_events(&exec, &id).await.is_empty());
    assert!(s.commits("prod").is_empty());
}
}

crate::both_backends! {
async fn a_force_pushed_branch_fails_at_once_despite_retry() {
    let s = Setup::new(&format!("  qa:\n{RETRY}    deploy: {{environment: qa}}\n"), "");
    let exec = s.executor().await;
    let first = s.start(&exec, "2.0.0").await;
    assert_eq!(drive(&exec, &first).await.run.state, RunState::Succeeded);
    // Someone rewrites qa's main.
    let work = s.path().join("envs/qa-work");
    git(&work, &["fetch", "-q", "origin"]);
    git(&work, &["reset", "-q", "--hard", "origin/main~1"]);
    std::fs::write(work.join("README"), "rewritten\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "rewrite"]);
    git(&work, &["push", "-q", "--force", "origin", "main"]);
    let id = s.start(&exec, "2.0.1").await;
    let sum = drive(&exec, &id).await;
    let (state, attempt, message) = attempts(&sum, "qa");
    assert_eq!((state, attempt), (StageState::Failed, 1), "{message}");
    assert!(message.contains("was rewritten"), "{message}");
    assert!(retry_events(&exec, &id).await.is_empty());
}
}

crate::both_backends! {
async fn a_lost_push_race_is_retried_and_lands_once() {
    let s = Setup::new(&format!("  qa:\n{RETRY}    deploy: {{environment: qa}}\n"), "");
    // Hooks run in receive-pack, which `git daemon` runs: this one refuses the first push only, as
    // a branch that moved (or a busy server) would.
    let bare = s.path().join("envs/qa.git");
    let hook = bare.join("hooks/pre-receive");
    let marker = bare.join("refused-once");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\ncat >/dev/null\n[ -e '{m}' ] && exit 0\ntouch '{m}'\necho 'try again later' >&2\nexit 1\n", m = marker.display()),
    )
    .unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&hook).status().unwrap();
    let daemon = Daemon::start(&s.path().join("envs"));
    let text = std::fs::read_to_string(&s.file).unwrap();
    std::fs::write(&s.file, text.replace("repo: envs/qa.git", &format!("repo: {}", daemon.url("qa.git")))).unwrap();
    // One push per attempt, so that the refusal reaches the stage.
    let mut config = WriterConfig::new(s.path().join(".promote/repos"));
    config.max_attempts = 1;
    let exec = Executor { writer: Arc::new(Writer::new(config)), ..s.executor().await };
    let id = s.start(&exec, "3.0.0").await;
    let sum = drive(&exec, &id).await;
    let (state, attempt, message) = attempts(&sum, "qa");
    assert_eq!((state, attempt), (StageState::Succeeded, 2), "{message}");
    let retried = retry_events(&exec, &id).await;
    assert_eq!(retried.len(), 1, "{retried:?}");
    assert!(retried[0].starts_with("attempt 1 failed: ") && retried[0].contains("push to `main` refused"), "{retried:?}");
    assert_eq!(s.commits("qa"), ["promote checkout 3.0.0 to qa"], "exactly one commit");
}
}

crate::both_backends! {
async fn an_unreachable_remote_is_retried_with_backoff() {
    let s = Setup::new(&format!("  qa:\n{RETRY}    deploy: {{environment: qa}}\n"), "");
    // Nothing listens on port 1 of loopback: every fetch is refused at once.
    let text = std::fs::read_to_string(&s.file).unwrap();
    std::fs::write(&s.file, text.replace("repo: envs/qa.git", "repo: git://127.0.0.1:1/qa.git")).unwrap();
    let exec = s.executor().await;
    let id = s.start(&exec, "3.1.0").await;
    let sum = drive(&exec, &id).await;
    assert_eq!((stage(&sum, "qa").state, stage(&sum, "qa").attempt), (StageState::Failed, 3));
    let retried = retry_events(&exec, &id).await;
    assert_eq!(retried.len(), 2, "{retried:?}");
    assert!(retried[0].ends_with("retrying in 10ms") && retried[1].ends_with("retrying in 20ms"), "backoff doubles: {retried:?}");
}
}

crate::both_backends! {
async fn a_decision_by_another_process_wakes_the_stage_without_polling() {
    let s = Setup::new("  ok:\n    approval: {approvers: [alice]}\n  after:\n    needs: [ok]\n    wait: {duration: 0s}\n", "");
    // An hour between looks: only the change feed can wake the stage in time.
    let exec = Arc::new(Executor { poll: Duration::from_secs(3600), ..s.executor().await });
    let id = s.start(&exec, "4.0.0").await;
    let (e, i) = (exec.clone(), id.clone());
    let walker = tokio::spawn(async move { drive(&e, &i).await });
    wait_for_state(&exec.store, &id, "ok", StageState::Waiting).await;
    let state = s.state();
    let out = crate::exec::promote(s.path(), &["--state", state.to_str().unwrap(), "approve", &id, "ok", "--as", "alice"]);
    assert!(out.status.success(), "{}", crate::exec::text(&out));
    let approved = Instant::now();
    let sum = tokio::time::timeout(Duration::from_secs(30), walker).await.expect("the approval woke the stage").unwrap();
    assert_eq!(sum.run.state, RunState::Succeeded);
    assert_eq!(stage(&sum, "ok").output.as_ref().unwrap()["approvedBy"], serde_json::json!(["alice"]));
    eprintln!("woken {:?} after `promote approve` returned", approved.elapsed());
    // A second process's store sees the same feed.
    let other = Store::open(&state).await.unwrap();
    let mut feed = other.subscribe().await.unwrap();
    exec.store.audit(Some(&id), None, promote::store::EntryKind::Notification, "tester", "seen by the other").await.unwrap();
    let woken = feed.wait(|c| c.kind == promote::store::EntryKind::Notification.as_str() && c.run == id, Some(promote::clock::now_ms() + 30_000)).await;
    assert_eq!(woken, promote::store::Woken::Change);
}
}

crate::both_backends! {
async fn a_waiting_stage_says_what_it_still_waits_for_after_each_decision() {
    let s = Setup::new("  ok:\n    approval: {approvers: [alice, bob], minApprovals: 2}\n", "");
    let exec = Arc::new(Executor { poll: Duration::from_secs(3600), ..s.executor().await });
    let id = s.start(&exec, "5.0.0").await;
    let (e, i) = (exec.clone(), id.clone());
    let walker = tokio::spawn(async move { drive(&e, &i).await });
    wait_for_state(&exec.store, &id, "ok", StageState::Waiting).await;
    let message = |store: Store, id: String| async move { store.stages(&id).await.unwrap()[0].message.clone().unwrap_or_default() };
    assert!(message(exec.store.clone(), id.clone()).await.starts_with("0 of 2 approvals from alice, bob"));
    exec.store.decide(&id, "ok", "alice", true, None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !message(exec.store.clone(), id.clone()).await.starts_with("1 of 2 approvals") {
        assert!(Instant::now() < deadline, "the wait's reason was not updated: {}", message(exec.store.clone(), id.clone()).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    exec.store.decide(&id, "ok", "bob", true, None).await.unwrap();
    let sum = tokio::time::timeout(Duration::from_secs(30), walker).await.unwrap().unwrap();
    assert_eq!(stage(&sum, "ok").output.as_ref().unwrap()["approvedBy"], serde_json::json!(["alice", "bob"]));
    let waits: Vec<String> = exec.store.events(&id).await.unwrap().into_iter().map(|e| e.detail).filter(|d| d.starts_with("waiting: ")).collect();
    assert_eq!(waits.len(), 2, "one entry per reason: {waits:?}");
}
}
