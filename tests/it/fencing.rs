//! A process that lost the lease of a run (paused, cut off) writes nothing after another process
//! took the run over: its transitions and its run's end are refused by the store (both
//! backends), and the driver stops saying so.

use std::time::Duration;

use promote::store::{RunState, StageState, StoreError, Transition};

use crate::exec::{Setup, promote, promote_command, text};

fn running() -> Transition {
    Transition { state: Some(StageState::Running), attempt: Some(1), started_at: Some(promote::clock::now_ms()), ..Default::default() }
}

crate::both_backends! {
async fn a_driver_whose_lease_moved_on_is_refused_every_write() {
    let s = Setup::new("  qa:\n    deploy: {environment: qa}\n  ok:\n    needs: [qa]\n    approval: {approvers: [alice]}\n", "");
    let mut a = s.executor().await;
    a.store = a.store.with_lease(Duration::from_millis(300));
    let id = s.start(&a, "1.0.0").await;
    assert_eq!(a.store.take_drive(&id).await.unwrap(), None);
    // While it holds the lease, its writes are taken.
    a.store.transition(&id, "qa", running(), "started (attempt 1)").await.unwrap();
    // It pauses past its lease; another process takes the run over.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let b = s.executor().await;
    assert_eq!(b.store.take_drive(&id).await.unwrap(), None, "the lapsed lease is taken over");
    let entries = b.store.events(&id).await.unwrap().len();
    // Everything the first one had in flight is refused, and nothing of it is recorded.
    let done = Transition { state: Some(StageState::Succeeded), finished_at: Some(promote::clock::now_ms()), ..Default::default() };
    let refused = a.store.transition(&id, "qa", done.clone(), "succeeded").await;
    assert!(matches!(refused, Err(StoreError::Fenced { .. })), "{refused:?}");
    let refused = a.store.finish_run(&id, RunState::Failed, Some("late")).await;
    assert!(matches!(refused, Err(StoreError::Fenced { .. })), "{refused:?}");
    assert_eq!(b.store.events(&id).await.unwrap().len(), entries, "not an entry from the process that lost the lease");
    assert_eq!(b.store.stages(&id).await.unwrap()[0].state, StageState::Running);
    assert_eq!(b.store.run(&id).await.unwrap().state, RunState::Running);
    // The new driver writes; once it ended the run, the old one is still refused.
    b.store.transition(&id, "qa", done.clone(), "succeeded").await.unwrap();
    b.store.finish_run(&id, RunState::Succeeded, None).await.unwrap();
    let refused = a.store.transition(&id, "ok", running(), "started (attempt 1)").await;
    assert!(matches!(refused, Err(StoreError::Fenced { .. })), "{refused:?}");
    assert_eq!(b.store.run(&id).await.unwrap().state, RunState::Succeeded);
    // A write of no driver (a watch's revert of a stage) is not fenced.
    let watch = s.executor().await;
    watch.store.transition(&id, "qa", Transition { message: Some("rolled back by its watch".into()), ..Default::default() }, "rolled back").await.unwrap();
}
}

crate::both_backends! {
async fn a_run_recorded_with_its_drivers_lease_is_never_free_for_another_process() {
    // A server records a run it drives at once with its lease, in one transaction: no moment in
    // which another replica's adopt loop finds it without a driver.
    let s = Setup::new("  qa:\n    deploy: {environment: qa}\n  ok:\n    needs: [qa]\n    wait: {duration: 0s}\n", "");
    let a = s.executor().await;
    let (source, plan) = s.plan();
    let run = a.start_delivered(&s.file, &source, &plan, "1.1.0", "ci-bot", true, None, true).await.unwrap().unwrap();
    let b = s.executor().await;
    assert!(b.store.take_drive(&run.id).await.unwrap().is_some(), "another process finds it driven");
    assert!(b.store.orphans(promote::clock::now_ms(), 10).await.unwrap().is_empty(), "and not an orphan");
    // Its recorder drives it without a claim, from the record it wrote.
    let id = run.id.clone();
    let end = a.drive_started(run, None, std::sync::Arc::new(|_| {}), tokio_util::sync::CancellationToken::new()).await.unwrap();
    assert_eq!(end, RunState::Succeeded);
    let summary = a.summary(&id).await.unwrap();
    assert!(summary.stages.iter().all(|st| st.state == StageState::Succeeded), "{:?}", summary.stages);
    assert_eq!(a.store.driver(&id).await.unwrap(), None, "the lease given back at its end");
    assert_eq!(s.commits("qa"), ["promote checkout 1.1.0 to qa"]);
}
}

crate::both_backends! {
fn a_paused_process_resumed_after_another_finished_its_run_writes_nothing() {
    // `promote run`, paused (SIGSTOP) while it soaks, past its lease; `promote resume` in another
    // process takes the run over and finishes it; then the first is let go (SIGCONT).
    let s = Setup::new("  soak:\n    wait: {duration: 1500ms}\n  qa:\n    needs: [soak]\n    deploy: {environment: qa}\n", "");
    let lease = [("PROMOTE_LEASE_MS", "400")];
    let mut first = promote_command(s.path())
        .envs(lease)
        .args(["run", "pipeline.yaml", "--version", "7.0.0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = |s: &Setup| -> serde_json::Value { serde_json::from_slice(&promote(s.path(), &["status", "--json"]).stdout).unwrap_or_default() };
    let id = loop {
        let runs = status(&s);
        if let Some(id) = runs["items"].get(0).and_then(|r| r["id"].as_str()) {
            let one: serde_json::Value = serde_json::from_slice(&promote(s.path(), &["status", id, "--json"]).stdout).unwrap();
            if one["stages"][0]["state"] == "running" {
                break id.to_string();
            }
        }
        assert!(first.try_wait().unwrap().is_none(), "`promote run` ended before its soak began");
        std::thread::sleep(Duration::from_millis(20));
    };
    let pid = first.id() as libc::pid_t;
    // SAFETY: a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    std::thread::sleep(Duration::from_millis(1000));
    let second = promote_command(s.path()).envs(lease).env("PROMOTE_USER", "ci-bot").args(["resume", &id]).output().unwrap();
    assert!(second.status.success(), "the second process took the run over and finished it: {}", text(&second));
    let after: serde_json::Value = serde_json::from_slice(&promote(s.path(), &["status", &id, "--json"]).stdout).unwrap();
    assert_eq!(after["run"]["state"], "succeeded", "{after}");
    let entries = after["events"].as_array().unwrap().len();
    assert!(after["events"].as_array().unwrap().iter().any(|e| e["kind"] == "driver-takeover"), "{after}");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let out = first.wait_with_output().unwrap();
    let said = text(&out);
    assert!(!out.status.success(), "the paused process does not claim the run: {said}");
    // It says why it stopped: it lost the lease (or, on PostgreSQL, when it was paused in the
    // middle of a transaction, the server ended that session after a lease and its write failed).
    let why = said.contains("another process drives it now") || (said.contains("connection") || said.contains("terminat"));
    assert!(why, "it says why it stopped: {said}");
    let last: serde_json::Value = serde_json::from_slice(&promote(s.path(), &["status", &id, "--json"]).stdout).unwrap();
    assert_eq!(last["events"].as_array().unwrap().len(), entries, "nothing written after it lost its lease: {last}");
    assert_eq!(last["run"]["state"], "succeeded");
    assert!(last["stages"].as_array().unwrap().iter().all(|st| st["state"] == "succeeded"), "{last}");
    assert_eq!(s.commits("qa"), ["promote checkout 7.0.0 to qa"], "one commit");
    let verify = promote(s.path(), &["audit", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify));
}
}
