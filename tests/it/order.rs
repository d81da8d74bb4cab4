//! The order of runs (issue 36): an environment is served to the runs queued for it one at a
//! time, oldest first; a newer run supersedes the older ones queued behind a holder; no run takes
//! an environment back to an older run's version; a run lets an environment go once the stages
//! that judge it are done, and its rollback never undoes a newer run's promotion. Real repos,
//! a real health endpoint (an HTTP server the test controls), both backends.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use promote::exec::Executor;
use promote::store::{RunState, StageState};

use crate::exec::{Setup, drive, stage, wait_for_state};

/// An app whose health per version the test decides: `/health/{version}` answers 200 once the
/// version is in the set, 503 before.
async fn app() -> (u16, Arc<Mutex<HashSet<String>>>) {
    let healthy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let h = healthy.clone();
    let app = axum::Router::new().route(
        "/health/{version}",
        axum::routing::get(move |axum::extract::Path(v): axum::extract::Path<String>| {
            let ok = h.lock().unwrap().contains(&v);
            async move { if ok { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE } }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, healthy)
}

/// A deploy to qa that holds it until the version is healthy (at most a minute).
fn qa_with_health(port: u16, extra: &str) -> String {
    format!(
        "  qa:\n    deploy:\n      environment: qa\n{extra}      health:\n        http: {{url: \"http://127.0.0.1:{port}/health/${{version}}\"}}\n        timeout: 60s\n"
    )
}

async fn until_committed(s: &Setup, env: &str, version: &str) {
    let want = format!("promote checkout {version} to {env}");
    for _ in 0..1000 {
        if s.commits(env).contains(&want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("`{want}` never landed: {:?}", s.commits(env));
}

fn spawn_drive(exec: &Arc<Executor>, id: &str) -> tokio::task::JoinHandle<promote::exec::Summary> {
    let (e, id) = (exec.clone(), id.to_string());
    tokio::spawn(async move { drive(&e, &id).await })
}

/// How many times the trail says the run's stage began waiting.
async fn waits(exec: &Executor, run: &str, stage: &str) -> usize {
    exec.store.events(run).await.unwrap().iter().filter(|e| e.stage.as_deref() == Some(stage) && e.detail.starts_with("waiting: ")).count()
}

crate::both_backends! {
async fn a_newer_run_supersedes_the_older_one_queued_for_qa_and_only_the_newest_is_promoted() {
    let (port, healthy) = app().await;
    let s = Setup::new(&qa_with_health(port, ""), "");
    let exec = Arc::new(s.executor().await);
    let (a, b, c) = (s.start(&exec, "1.1.1").await, s.start(&exec, "1.1.2").await, s.start(&exec, "1.1.3").await);
    healthy.lock().unwrap().insert("1.1.3".into());
    let wa = spawn_drive(&exec, &a);
    until_committed(&s, "qa", "1.1.1").await;
    // A holds qa while its health is judged: B queues behind it.
    let wb = spawn_drive(&exec, &b);
    wait_for_state(&exec.store, &b, "qa", StageState::Waiting).await;
    let waiting = exec.store.stages(&b).await.unwrap().into_iter().find(|x| x.name == "qa").unwrap();
    assert_eq!(waiting.message.as_deref(), Some("waiting its turn for `qa` (`promote status` shows who holds it)"));
    // C, newer, queues too and supersedes B (a deploy with no approval before it): B ends at once.
    let wc = spawn_drive(&exec, &c);
    let sb = tokio::time::timeout(Duration::from_secs(20), wb).await.expect("B ends once superseded").unwrap();
    assert_eq!(sb.run.state, RunState::Superseded);
    assert_eq!(sb.run.message.as_deref(), Some(format!("superseded by run {c}, a newer run of the pipeline, while queued for `qa`").as_str()));
    assert_eq!(stage(&sb, "qa").state, StageState::Skipped);
    // A's release is healthy: A is done, C (not B) promotes next.
    healthy.lock().unwrap().insert("1.1.1".into());
    assert_eq!(wa.await.unwrap().run.state, RunState::Succeeded);
    assert_eq!(wc.await.unwrap().run.state, RunState::Succeeded);
    assert_eq!(s.commits("qa"), ["promote checkout 1.1.3 to qa", "promote checkout 1.1.1 to qa"]);
    // Each waiting run is in the trail as waiting once, however often it looked again.
    assert_eq!(waits(&exec, &b, "qa").await, 1);
    assert!(waits(&exec, &c, "qa").await <= 1);
    let trail = exec.store.events(&b).await.unwrap();
    assert_eq!(trail.iter().filter(|e| e.kind == "superseded").count(), 1, "{trail:?}");
    exec.store.close().await;
}
}

crate::both_backends! {
async fn runs_queued_for_an_environment_are_served_oldest_first() {
    let (port, healthy) = app().await;
    // `supersede: false`: every run is promoted, in order.
    let s = Setup::new(&qa_with_health(port, "      supersede: false\n"), "");
    let exec = Arc::new(s.executor().await);
    let ids: Vec<String> = [s.start(&exec, "2.0.0").await, s.start(&exec, "2.0.1").await, s.start(&exec, "2.0.2").await, s.start(&exec, "2.0.3").await].into();
    healthy.lock().unwrap().extend(["2.0.1".to_string(), "2.0.2".to_string(), "2.0.3".to_string()]);
    let first = spawn_drive(&exec, &ids[0]);
    until_committed(&s, "qa", "2.0.0").await;
    // The newest asks first, the older ones after it: they are served by age all the same.
    let mut walkers = Vec::new();
    for id in ids[1..].iter().rev() {
        walkers.push(spawn_drive(&exec, id));
        wait_for_state(&exec.store, id, "qa", StageState::Waiting).await;
    }
    // `promote status` says, for a queued run, who holds the environment and how many go first.
    let status = crate::exec::promote(s.path(), &["status", &ids[3]]);
    let text = crate::exec::text(&status);
    assert!(text.contains(&format!("waits its turn for environment `qa`: run {} holds it; 2 earlier run(s) queued before this one", ids[0])), "{text}");
    healthy.lock().unwrap().insert("2.0.0".into());
    assert_eq!(first.await.unwrap().run.state, RunState::Succeeded);
    for w in walkers {
        assert_eq!(w.await.unwrap().run.state, RunState::Succeeded);
    }
    assert_eq!(
        s.commits("qa"),
        ["promote checkout 2.0.3 to qa", "promote checkout 2.0.2 to qa", "promote checkout 2.0.1 to qa", "promote checkout 2.0.0 to qa"]
    );
    for id in &ids[1..] {
        assert_eq!(waits(&exec, id, "qa").await, 1, "run {id} recorded as waiting once");
    }
    exec.store.close().await;
}
}

crate::both_backends! {
async fn a_failed_run_does_not_roll_back_what_a_newer_run_promoted_since() {
    let s = Setup::new(
        "  qa:\n    deploy: {environment: qa}\n  ok:\n    needs: [qa]\n    approval: {approvers: [alice]}\n  prod:\n    needs: [ok]\n    deploy: {environment: prod}\n",
        "onFailure: {rollback: true}\n",
    );
    let exec = Arc::new(s.executor().await);
    let (old, new) = (s.start(&exec, "3.0.0").await, s.start(&exec, "3.0.1").await);
    let w_old = spawn_drive(&exec, &old);
    wait_for_state(&exec.store, &old, "ok", StageState::Waiting).await;
    let w_new = spawn_drive(&exec, &new);
    wait_for_state(&exec.store, &new, "ok", StageState::Waiting).await;
    // The older release is rejected: its qa commit is under the newer one, which stays.
    exec.store.decide(&old, "ok", "alice", false, Some("not this one")).await.unwrap();
    let sum = w_old.await.unwrap();
    assert_eq!(sum.run.state, RunState::Failed);
    let qa = stage(&sum, "qa");
    assert_eq!(qa.state, StageState::Succeeded, "not rolled back");
    assert!(qa.message.as_deref().unwrap_or("").starts_with("left as it is, not rolled back:"), "{qa:?}");
    assert_eq!(s.commits("qa"), ["promote checkout 3.0.1 to qa", "promote checkout 3.0.0 to qa"]);
    // The newer one goes on to prod.
    exec.store.decide(&new, "ok", "alice", true, None).await.unwrap();
    assert_eq!(w_new.await.unwrap().run.state, RunState::Succeeded);
    assert_eq!(s.commits("prod"), ["promote checkout 3.0.1 to prod"]);
    exec.store.close().await;
}
}

#[tokio::test(flavor = "multi_thread")]
async fn with_semver_order_a_later_run_of_an_older_version_is_superseded() {
    let s = Setup::new("  qa:\n    deploy: {environment: qa}\n", "order: semver\n");
    let exec = s.executor().await;
    let newer = s.start(&exec, "v2.0.0").await;
    assert_eq!(drive(&exec, &newer).await.run.state, RunState::Succeeded);
    // Triggered later, but an older version.
    let older = s.start(&exec, "v1.9.9").await;
    let sum = drive(&exec, &older).await;
    assert_eq!(sum.run.state, RunState::Superseded);
    assert!(sum.run.message.as_deref().unwrap().contains(&format!("`qa` holds v2.0.0 from run {newer}, newer than this run's v1.9.9")), "{:?}", sum.run);
    assert_eq!(s.commits("qa"), ["promote checkout v2.0.0 to qa"]);
    // In trigger order (the default) the later run is the newer one: it is promoted.
    let text = std::fs::read_to_string(&s.file).unwrap();
    std::fs::write(&s.file, text.replace("order: semver\n", "")).unwrap();
    let later = s.start(&exec, "v1.9.8").await;
    assert_eq!(drive(&exec, &later).await.run.state, RunState::Succeeded);
    assert_eq!(s.commits("qa"), ["promote checkout v1.9.8 to qa", "promote checkout v2.0.0 to qa"]);
    exec.store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_push_landed_before_its_driver_died_finds_its_commit_under_a_newer_one() {
    let s = Setup::new("  qa:\n    deploy: {environment: qa}\n", "order: semver\n");
    let exec = s.executor().await;
    // A's driver pushed its promotion and died before recording it: the commit stands, sealed
    // with the state's key, and the state knows nothing of it (the writer stands in for that push).
    let older = s.start(&exec, "v1.9.9").await;
    let (_, plan) = s.plan();
    let env = plan.environment("qa").unwrap();
    let dest = promote::git::Destination::of(env, s.dir.path());
    let p = promote::git::Promotion {
        pipeline: "checkout",
        environment: "qa",
        run: &older,
        stage: "qa",
        version: "v1.9.9",
        value: "v1.9.9",
        approved_by: &[],
        check: None,
        seal: Some(exec.store.key()),
    };
    exec.writer.promote(&dest, &p).unwrap();
    // A newer version is promoted on top before A is taken over.
    let newer = s.start(&exec, "v2.0.0").await;
    assert_eq!(drive(&exec, &newer).await.run.state, RunState::Succeeded);
    // A, resumed, finds its own commit: it promoted, it is not superseded, and nothing is written.
    let sum = drive(&exec, &older).await;
    assert_eq!(sum.run.state, RunState::Succeeded, "{:?}", sum.run.message);
    let qa = sum.stages.iter().find(|x| x.name == "qa").unwrap();
    assert_eq!(qa.output.as_ref().unwrap()["outcome"], "already-done", "{:?}", qa.output);
    assert_eq!(s.commits("qa"), ["promote checkout v2.0.0 to qa", "promote checkout v1.9.9 to qa"]);
    // Recorded at its commit's time: qa still holds the newer run's version, and a later run of
    // an older version than that is superseded.
    assert_eq!(exec.store.last_promotion("checkout", "qa").await.unwrap(), Some((newer.clone(), "v2.0.0".to_string())));
    let between = s.start(&exec, "v1.9.10").await;
    assert_eq!(drive(&exec, &between).await.run.state, RunState::Superseded);
    exec.store.close().await;
}
