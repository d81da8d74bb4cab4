//! Benchmark: the PostgreSQL state with one and three replicas. 1,000 runs of the 6-stage no-op
//! pipeline of `benches/exec.rs` at once, spread over the replicas, on a real PostgreSQL 15
//! (started here as in the tests: a temporary folder, a loopback port, `fsync` on, as a
//! production server has it). The replicas are executors in this process, each with its own
//! store (its own writer connection, its own pool, its own LISTEN): what they share is the
//! database, as separate processes would. Prints durable transitions per second in total and
//! the step latency (a need's durable start -> the stage's durable start, the need a no-op), p50
//! and p99, with all the runs in flight.
//!
//! Then failover, with the real binary: three `promote serve` replicas (default lease, 10 s) on
//! 30 runs that soak for a minute; the replica driving the most is killed with SIGKILL; printed:
//! the time from its death to the first takeover, and to the last of its runs moving again.
//!
//! Run: `cargo bench --bench replicas` (1,000 runs) or `cargo bench --bench replicas -- 200`.

#[path = "support.rs"]
mod support;

#[path = "../tests/it/pg.rs"]
#[allow(dead_code, unused_macros)]
mod pg;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use promote::exec::Progress;
use promote::store::{StageState, Store};

const PIPELINE: &str = support::NOOP_PIPELINE;

type Seen = HashMap<(String, String, StageState), Instant>;

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(if quick { 60 } else { 1000 });
    let pg = pg::Postgres::start_durable();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bench.yaml");
    std::fs::write(&file, PIPELINE).unwrap();
    let plan = promote::ops::check_file(&file).plan.expect("the bench pipeline is valid");
    let needs: HashMap<String, Vec<String>> =
        plan.pipeline.stages.iter().map(|s| (s.name.value.clone(), s.needs.iter().map(|n| n.value.clone()).collect())).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!("{runs} runs of 6 no-op stages at once, PostgreSQL 15 on loopback (fsync on)");
    for replicas in [1usize, 3] {
        let url = pg.fresh_database();
        rt.block_on(async {
            let key = promote::seal::Key::from_bytes([9u8; 32]);
            let mut execs = Vec::new();
            for r in 0..replicas {
                let store = Store::open_url(&url, key.clone()).await.unwrap();
                execs.push(Arc::new(support::executor(store, &dir.path().join(format!("repos-{replicas}-{r}")))));
            }
            let mut ids = Vec::with_capacity(runs);
            for i in 0..runs {
                ids.push((i % replicas, execs[i % replicas].start(&file, PIPELINE, &plan, "1.0.0", "bench", false).await.unwrap().id));
            }
            let seen: Arc<Mutex<Seen>> = Arc::default();
            let start = Instant::now();
            let mut tasks = Vec::new();
            for (r, id) in ids.clone() {
                let (exec, seen) = (execs[r].clone(), seen.clone());
                tasks.push(tokio::spawn(async move {
                    let run = id.clone();
                    let progress = Arc::new(move |p: Progress| {
                        seen.lock().unwrap().insert((run.clone(), p.stage, p.state), Instant::now());
                    });
                    exec.drive(&id, progress).await.unwrap()
                }));
            }
            for t in tasks {
                assert_eq!(t.await.unwrap().run.state, promote::store::RunState::Succeeded);
            }
            let took = start.elapsed();
            let seen = seen.lock().unwrap().clone();
            // The whole step: from the durable start of a stage's last need (a no-op) to the
            // durable start of the stage, which holds the need's result being written.
            let mut latencies: Vec<Duration> = Vec::new();
            for (_, id) in &ids {
                for (stage, deps) in &needs {
                    let Some(started) = seen.get(&(id.clone(), stage.clone(), StageState::Running)) else { continue };
                    if let Some(need) = deps.iter().filter_map(|d| seen.get(&(id.clone(), d.clone(), StageState::Running))).max() {
                        latencies.push(started.saturating_duration_since(*need));
                    }
                }
            }
            latencies.sort();
            let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0;
            let transitions = runs * 6 * 2;
            println!(
                "{replicas} replica(s): {:.2} s, {transitions} durable transitions ({:.0} per second in all), step (a need's start -> the stage's start) p50 {:.2} ms, p99 {:.2} ms",
                took.as_secs_f64(),
                transitions as f64 / took.as_secs_f64(),
                pct(0.5),
                pct(0.99)
            );
            let verdict = execs[0].store.verify_audit().await.unwrap();
            assert!(verdict.tamper.is_none(), "{verdict:?}");
            for e in &execs {
                e.store.close().await;
            }
        });
    }
    rt.block_on(failover(&pg, dir.path()));
}

/// Three real replicas; the one driving the most runs is killed; how long until its runs move.
async fn failover(pg: &pg::Postgres, dir: &std::path::Path) {
    const SOAK: &str = "apiVersion: promote/v1
kind: Pipeline
name: soak
artifact: {image: registry.example.com/acme/soak}
environments:
  qa: {repo: envs/qa.git, file: k.yaml, update: {kustomizeImage: registry.example.com/acme/soak}}
stages:
  soak: {wait: {duration: 60s}}
  after: {needs: [soak], wait: {duration: 0s}}
";
    let url = pg.fresh_database();
    let key_file = dir.join("key");
    let key = promote::seal::Key::load_or_create(&key_file).unwrap();
    let file = dir.join("soak.yaml");
    std::fs::write(&file, SOAK).unwrap();
    let plan = promote::ops::check_file(&file).plan.unwrap();
    let store = Store::open_url(&url, key).await.unwrap();
    let exec = support::executor(store.clone(), &dir.join("repos-failover"));
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(exec.start(&file, SOAK, &plan, &format!("1.0.{i}"), "bench", false).await.unwrap().id);
    }
    // Each replica, as it starts, drives the running runs nobody drives.
    let mut children: Vec<std::process::Child> = (0..3)
        .map(|r| {
            let cwd = dir.join(format!("replica-{r}"));
            std::fs::create_dir_all(&cwd).unwrap();
            std::process::Command::new(env!("CARGO_BIN_EXE_promote"))
                .current_dir(&cwd)
                .env("PROMOTE_KEY_FILE", &key_file)
                .env("PROMOTE_DATABASE_URL", &url)
                .args(["serve", "--listen", "127.0.0.1:0"])
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Wait until every run has a driver, then kill the replica that drives the most.
    let holders = loop {
        let mut holders: HashMap<String, Vec<String>> = HashMap::new();
        for id in &ids {
            if let Some(l) = store.driver(id).await.unwrap() {
                holders.entry(l.holder).or_default().push(id.clone());
            }
        }
        if holders.values().map(Vec::len).sum::<usize>() == ids.len() {
            break holders;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let pid_of = |holder: &str| holder.rsplit(':').next().and_then(|p| p.parse::<u32>().ok());
    let (victim, orphans) = holders.iter().max_by_key(|(_, v)| v.len()).map(|(h, v)| (h.clone(), v.clone())).unwrap();
    let pid = pid_of(&victim).expect("a holder names its process");
    let killed = promote::clock::now_ms();
    let child = children.iter_mut().find(|c| c.id() == pid).expect("the victim is one of ours");
    child.kill().unwrap();
    child.wait().unwrap();
    // Its runs move again when another replica's driver writes their next entry.
    let mut moved: HashMap<String, i64> = HashMap::new();
    let mut first_takeover = None;
    while moved.len() < orphans.len() {
        for id in &orphans {
            if moved.contains_key(id) {
                continue;
            }
            let events = store.events(id).await.unwrap();
            if let Some(e) = events.iter().find(|e| e.at >= killed && e.kind == "driver-takeover") {
                first_takeover = Some(first_takeover.map_or(e.at, |f: i64| f.min(e.at)));
                moved.insert(id.clone(), e.at);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lease = promote::store::lease_duration().as_millis();
    println!(
        "failover: replica killed driving {} of 30 runs; first taken over after {:.1} s, the last after {:.1} s (lease {:.0} s)",
        orphans.len(),
        (first_takeover.unwrap() - killed) as f64 / 1000.0,
        (moved.values().max().unwrap() - killed) as f64 / 1000.0,
        lease as f64 / 1000.0
    );
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
}
