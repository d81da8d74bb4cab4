//! Benchmark: a scrape of `/metrics` over a long history. A SQLite state is filled with `N`
//! finished runs (100,000 by default) of 10 pipelines, each run deploying `qa` then `prod`: 5% of
//! the deploys fail after their commit, 5% are rolled back by their run, one in 500 is rolled back
//! by hand (a `rollback` entry), a third were started by a webhook delivery that gave the pushed
//! commit's time. The runs and stages are inserted by SQL (running, no output); every deploy's end
//! (its promotion commit's output, its failure, its rollback) goes through the store's own
//! writes, as the executor's would, so whatever the store keeps for the figures is kept by the
//! real write path. Then `promote serve` is started in this process on 127.0.0.1:0 and `/metrics`
//! is scraped 100 times, one after the other; printed: the fill's time, each scrape's p50 and p99
//! and the answer's size.
//!
//! Run: `cargo bench --bench figures` (100,000 runs) or `cargo bench --bench figures -- 20000`;
//! `cargo test --bench figures -- 2000` is a quick run (2,000 runs by default).

use std::time::{Duration, Instant};

use promote::store::{StageState, StageWrite, Store, Transition, Write};

mod support;

const PIPELINES: usize = 10;
const SCRAPES: usize = 100;
/// Every run starts 10 minutes after the one before (of its pipeline: they interleave).
const GAP_MS: i64 = 60_000;
const T0: i64 = 1_700_000_000_000;

/// The runs and their stages, inserted by SQL: running, their deploys running with no output.
fn fill_sql(n: usize) -> String {
    format!(
        "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < {last})
         INSERT INTO runs (id, pipeline, file, source, version, state, triggered_by, created_at)
           SELECT printf('R%08d', i), 'p' || (i % {PIPELINES}), 'p.yaml', '', '1.0.' || i, 'running', 'bench', {T0} + i * {GAP_MS} FROM k;
         INSERT INTO stages (run_id, name, kind, position, state, attempt, started_at)
           SELECT id, 'deploy-qa', 'deploy', 0, 'running', 1, created_at + 1000 FROM runs;
         INSERT INTO stages (run_id, name, kind, position, state, attempt, started_at)
           SELECT id, 'approve', 'approval', 1, 'succeeded', 1, created_at + 2000 FROM runs;
         INSERT INTO stages (run_id, name, kind, position, state, attempt, started_at)
           SELECT id, 'deploy-prod', 'deploy', 2, 'running', 1, created_at + 3000 FROM runs;
         INSERT INTO deliveries (provider, delivery_id, body_hash, pipeline, version, run_id, at, origin_at)
           SELECT 'github', 'd-' || id, '', pipeline, version, id, created_at, created_at - 600000 FROM runs WHERE CAST(substr(id, 2) AS INTEGER) % 3 = 0;",
        last = n - 1
    )
}

/// The end of run `i`'s deploy into `env`, as the executor writes it: the commit's output, and
/// how it ended (a failure after the commit, or its run's rollback a while later).
fn ends(i: usize, env: &str, offset: i64) -> Vec<Write> {
    let run = format!("R{i:08}");
    let created = T0 + i as i64 * GAP_MS;
    let committed = created + offset + 20_000 + (i as i64 % 7) * 1_000;
    let finished = committed + 30_000;
    let output = serde_json::json!({"environment": env, "outcome": "committed", "commit": format!("{i:040x}"), "newValue": format!("1.0.{i}"), "committedAt": committed});
    let stage = format!("deploy-{env}");
    let (state, message) = match i % 20 {
        0 => (StageState::Failed, "health: 3 of 3 checks failed"),
        10 => (StageState::Failed, "health: the Deployment did not become ready"),
        _ => (StageState::Succeeded, ""),
    };
    let end = Transition { state: Some(state), finished_at: Some(finished), message: Some(message.into()), output: Some(output), ..Default::default() };
    let mut writes =
        vec![Write::Transitions { run: run.clone(), items: vec![StageWrite { stage: stage.clone(), transition: end, event: state.to_string() }], fence: None }];
    if i % 20 == 10 {
        let back =
            Transition { state: Some(StageState::RolledBack), finished_at: Some(finished + 45_000), message: Some("rolled back".into()), ..Default::default() };
        writes.push(Write::Transitions { run, items: vec![StageWrite { stage, transition: back, event: "rolled-back".into() }], fence: None });
    }
    writes
}

/// Sends `writes` through the store, many at once (the writer groups them as it does a server's).
async fn send(store: &Store, writes: Vec<Write>) {
    let mut set = tokio::task::JoinSet::new();
    for w in writes {
        let s = store.clone();
        set.spawn(async move { s.write(w).await.unwrap() });
        if set.len() >= 2048 {
            set.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

#[tokio::main]
async fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(if quick { 2_000 } else { 100_000 }).max(PIPELINES);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("pipelines")).unwrap();
    let key = promote::seal::Key::load_or_create(&root.join("key")).unwrap();
    let store = Store::open_with_key(&root.join("state.db"), key).await.unwrap();
    println!("figures: {n} finished runs of {PIPELINES} pipelines, each deploying qa then prod (SQLite), then {SCRAPES} scrapes of /metrics");

    let t = Instant::now();
    store.raw_sql(&fill_sql(n)).await.unwrap();
    let inserted = t.elapsed();
    let t = Instant::now();
    let mut writes = Vec::with_capacity(n * 2 + n / 5);
    for i in 0..n {
        writes.extend(ends(i, "qa", 1_000));
        writes.extend(ends(i, "prod", 3_000));
    }
    send(&store, writes).await;
    // One prod deploy in 500 rolled back by hand, an hour after its commit.
    let manual: Vec<Write> = (0..n)
        .filter(|i| i % 500 == 250)
        .map(|i| Write::Audit {
            run: None,
            stage: None,
            kind: promote::store::EntryKind::Rollback,
            actor: "alice".into(),
            detail: format!("p{}: rolled back prod: 1.0.{i} -> 1.0.{} in commit {i:040x}", i % PIPELINES, i.saturating_sub(PIPELINES)),
            at: T0 + i as i64 * GAP_MS + 3_600_000,
        })
        .collect();
    let rollbacks = manual.len();
    send(&store, manual).await;
    store.raw_sql("UPDATE runs SET state = 'succeeded', finished_at = created_at + 120000").await.unwrap();
    let written = t.elapsed();
    println!(
        "fill: runs and stages by SQL in {:.1} s; {} deploy ends and {rollbacks} rollbacks by hand through the store's writes in {:.1} s",
        inserted.as_secs_f64(),
        n * 2 + n / 20,
        written.as_secs_f64()
    );

    let exec = support::executor(store.clone(), &root.join("repos"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let config = promote::server::Config { pipelines: vec![root.join("pipelines")], repos: vec![], reload: Duration::from_secs(3600), ..Default::default() };
    let server = tokio::spawn(promote::server::serve(listener, exec, config, async move {
        let _ = rx.await;
    }));
    let http = promote::providers::http_client();
    let mut took = Vec::with_capacity(SCRAPES);
    let mut size = 0;
    let mut body = String::new();
    for _ in 0..SCRAPES {
        let t = Instant::now();
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        body = r.text().await.unwrap();
        took.push(t.elapsed().as_secs_f64() * 1000.0);
        size = body.len();
    }
    let deployments: f64 = body.lines().filter(|l| l.starts_with("promote_deployments_total{")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum();
    assert_eq!(deployments as usize, n * 2, "every deploy counted once");
    let (p50, p99) = (support::pct(&mut took, 0.5), support::pct(&mut took, 0.99));
    println!("scrape of /metrics with {n} runs of history: p50 {p50:.1} ms, p99 {p99:.1} ms ({size} bytes, {deployments} deployments counted)");
    let _ = tx.send(());
    let _ = server.await;
}
