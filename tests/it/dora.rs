//! The DORA figures the store keeps with each write are the figures counted again from the whole
//! history (`ops::figures::recount`, the definitions said as code), on both backends: after every
//! batch of a history of failures, run rollbacks, rollbacks by hand and fixes forward written out
//! of order, after a restart, and after an upgrade from the schema before them.

use promote::ops::figures::{figures, recount};
use promote::store::{Delivery, RunRecord, RunState, StageState, StageWrite, Store, Transition, Write};

const T0: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;

struct State {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    url: Option<String>,
    key: promote::seal::Key,
}

impl State {
    fn new() -> State {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        State { _dir: dir, path, url: crate::pg::database_for_this_test(), key: promote::seal::Key::from_bytes([3u8; 32]) }
    }

    async fn open(&self) -> Store {
        match &self.url {
            Some(url) => Store::open_url(url, self.key.clone()).await.unwrap(),
            None => Store::open_with_key(&self.path, self.key.clone()).await.unwrap(),
        }
    }
}

fn run_record(i: usize, pipeline: &str) -> RunRecord {
    RunRecord {
        id: format!("01RUN{i:05}"),
        pipeline: pipeline.into(),
        file: "p.yaml".into(),
        source: String::new(),
        version: format!("1.0.{i}"),
        state: RunState::Running,
        triggered_by: "test".into(),
        authenticated: false,
        created_at: T0 + i as i64 * 10 * MIN,
        finished_at: None,
        message: None,
        seal: None,
    }
}

fn end(run: &str, stage: &str, state: StageState, at: i64, output: Option<serde_json::Value>) -> Write {
    let t = Transition { state: Some(state), finished_at: Some(at), message: Some(String::new()), output, ..Default::default() };
    Write::Transitions { run: run.into(), items: vec![StageWrite { stage: stage.into(), transition: t, event: state.to_string() }], fence: None }
}

fn by_hand(pipeline: &str, environment: &str, at: i64) -> Write {
    Write::Audit {
        run: None,
        stage: None,
        kind: promote::store::EntryKind::Rollback,
        actor: "alice".into(),
        detail: format!("{pipeline}: rolled back {environment}: 1.0.2 -> 1.0.1 in commit abc"),
        at,
    }
}

/// A history of 60 runs of two pipelines, each deploying qa then prod, as batches of writes in
/// an order that is not the commits' (a run's deploy recorded after a later run's, rollbacks by
/// hand recorded before the deployment they undo), with ties of commit times.
fn history() -> Vec<Vec<Write>> {
    let mut creates = Vec::new();
    let mut ends = Vec::new();
    for i in 0..60usize {
        let pipeline = if i % 3 == 0 { "cart" } else { "checkout" };
        let run = run_record(i, pipeline);
        let delivery = (i % 4 == 0).then(|| Delivery {
            provider: "github".into(),
            id: format!("d-{i}"),
            body_hash: String::new(),
            // The pushed commit's time: hours before for some, after the commit (ignored) for one.
            origin_at: Some(if i == 8 { run.created_at + 600 * MIN } else { run.created_at - (i as i64 % 5) * 60 * MIN }),
        });
        let id = run.id.clone();
        let created = run.created_at;
        creates.push(Write::CreateRun {
            run: Box::new(run),
            stages: vec![("deploy-qa".into(), "deploy".into()), ("deploy-prod".into(), "deploy".into())],
            delivery,
            driver: None,
        });
        for (stage, env, after) in [("deploy-qa", "qa", 1), ("deploy-prod", "prod", 3)] {
            // Ties: runs 20 and 21 commit to prod at the same instant.
            let committed = if i == 21 && env == "prod" { T0 + 20 * 10 * MIN + 3 * MIN } else { created + after * MIN };
            let outcome = if i % 11 == 5 {
                "unchanged"
            } else if i % 13 == 7 {
                "merged"
            } else {
                "committed"
            };
            let mut out = serde_json::json!({"environment": env, "outcome": outcome, "commit": format!("{i:040x}"), "newValue": format!("1.0.{i}")});
            // An older output without `committedAt`: the stage's start, else its end.
            if i != 17 {
                out["committedAt"] = committed.into();
            }
            let mut w = vec![];
            match i % 7 {
                // Unhealthy after its commit: failed, restored by the next deployment.
                1 => w.push(end(&id, stage, StageState::Failed, committed + MIN, Some(out))),
                // Unhealthy, then rolled back by its run.
                3 => {
                    w.push(end(&id, stage, StageState::Failed, committed + MIN, Some(out)));
                    w.push(end(&id, stage, StageState::RolledBack, committed + 7 * MIN, None));
                }
                _ => w.push(end(&id, stage, StageState::Succeeded, committed + MIN, Some(out))),
            }
            ends.push(w);
        }
    }
    // Recorded out of order: every third run's ends after the rest.
    let (late, early): (Vec<_>, Vec<_>) = ends.into_iter().enumerate().partition(|(k, _)| (k / 2) % 3 == 2);
    let mut batches: Vec<Vec<Write>> = vec![creates];
    let early: Vec<Write> = early.into_iter().flat_map(|(_, w)| w).collect();
    let late: Vec<Write> = late.into_iter().flat_map(|(_, w)| w).collect();
    for chunk in early.chunks(9) {
        batches.push(chunk.to_vec());
    }
    // Rollbacks by hand: of prod after run 10's deploy (twice: the first counts), of qa just
    // after run 32's (recorded before it), one of an environment never deployed, one that did not
    // commit, one before any deployment.
    let prod_10 = T0 + 10 * 10 * MIN + 3 * MIN;
    let qa_32 = T0 + 32 * 10 * MIN + MIN;
    batches.push(vec![
        by_hand("checkout", "prod", prod_10 + 2 * MIN),
        by_hand("checkout", "prod", prod_10 + 4 * MIN),
        by_hand("checkout", "qa", qa_32 + 30_000),
        by_hand("checkout", "staging", prod_10),
        Write::Audit {
            run: None,
            stage: None,
            kind: promote::store::EntryKind::Rollback,
            actor: "bob".into(),
            detail: "cart: rollback of prod failed: refused".into(),
            at: prod_10,
        },
        by_hand("cart", "qa", T0 - MIN),
    ]);
    for chunk in late.chunks(5) {
        batches.push(chunk.to_vec());
    }
    batches
}

async fn same(store: &Store, when: &str) -> promote::ops::figures::Figures {
    let now = T0 + 1000 * MIN;
    let (kept, counted) = (figures(store, now).await.unwrap(), recount(store, now).await.unwrap());
    assert_eq!(kept, counted, "{when}: the figures kept differ from a recount");
    kept
}

crate::both_backends! {
async fn the_figures_kept_with_each_write_are_a_recount_of_the_history_after_restarts_and_upgrades() {
    let state = State::new();
    let store = state.open().await;
    for (i, batch) in history().into_iter().enumerate() {
        // Each batch at once: the writer groups them into one transaction.
        let written = futures_util::future::join_all(batch.into_iter().map(|w| store.write(w))).await;
        assert!(written.into_iter().all(|w| w.is_ok()), "batch {i}");
        same(&store, &format!("after batch {i}")).await;
    }
    let f = same(&store, "at the end").await;
    // The history is what it was meant to be: failures of each kind, restored or not.
    let prod = &f.dora[&("checkout".to_string(), "prod".to_string())];
    let qa = &f.dora[&("checkout".to_string(), "qa".to_string())];
    assert!(prod.failed > 5 && prod.time_to_restore.count > 5 && prod.lead_time.count == prod.deployments, "{prod:?}");
    assert!(qa.lead_time.buckets[4] > 0, "lead times from the pushed commit, hours before: {qa:?}");
    assert!(!f.dora.contains_key(&("checkout".to_string(), "staging".to_string())));
    // A restart: what was kept is read again as it was.
    store.close().await;
    let store = state.open().await;
    assert_eq!(same(&store, "after a restart").await, f);
    // One more deployment after the restart restores a failed one (a fix forward).
    let next = run_record(100, "checkout");
    let id = next.id.clone();
    let at = T0 + 2000 * MIN;
    store.write(Write::CreateRun { run: Box::new(next), stages: vec![("deploy-prod".into(), "deploy".into())], delivery: None, driver: None }).await.unwrap();
    store
        .write(end(&id, "deploy-prod", StageState::Succeeded, at, Some(serde_json::json!({"environment": "prod", "outcome": "committed", "commit": "f".repeat(40), "newValue": "1.0.100", "committedAt": at}))))
        .await
        .unwrap();
    let g = same(&store, "after a deployment after the restart").await;
    let prod_after = &g.dora[&("checkout".to_string(), "prod".to_string())];
    assert_eq!((prod_after.deployments, prod_after.last_deployment), (prod.deployments + 1, Some(at)));
    store.close().await;

    // The state as the schema before these tables left it: the migration counts it once.
    let store = state.open().await;
    let drop = "DROP TABLE dora_deployments; DROP TABLE dora_rollbacks; DROP TABLE dora; DROP TABLE dora_buckets; DROP INDEX stages_waiting;";
    match &state.url {
        Some(_) => store.raw_sql(&format!("{drop} DELETE FROM promote_schema WHERE version >= 7")).await.unwrap(),
        None => store.raw_sql(&format!("{drop} PRAGMA user_version = 18")).await.unwrap(),
    }
    store.close().await;
    let store = state.open().await;
    assert_eq!(store.schema_version().await.unwrap(), if state.url.is_some() { 8 } else { 19 });
    assert_eq!(same(&store, "after the upgrade").await, g);
    store.close().await;
}
}
