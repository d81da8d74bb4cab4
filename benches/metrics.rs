//! Benchmark: one `metrics` analysis of 20 checks x 60 measurements against a real Prometheus
//! (Debian's package, started here on a loopback port with backfilled series), run by the real
//! executor with durable state. Prints the analysis' wall time and the share spent outside
//! Prometheus: the same 1,200 queries sent straight to Prometheus with the same client and the
//! same concurrency (20 checks at once, each measuring in turn) give the time Prometheus and
//! HTTP take; the rest is the runner's own (judging, CEL, evidence, state).
//!
//! Two analyses: conditions on instant queries (Argo Rollouts style), and Kayenta comparisons
//! (each measurement two range queries over 10 minutes at 15 s + a Mann-Whitney test).
//!
//! "stage" is the metrics stage from its durable start to its durable end; "in queries" the
//! longest check's time waiting for answers (each measurement records it as `queryMs`).
//!
//! Run: `cargo bench --bench metrics` (9 rounds) or `cargo bench --bench metrics -- 3`.

#[path = "../tests/it/prom.rs"]
#[allow(dead_code)]
mod prom;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use promote::exec::{Executor, Metrics};
use promote::git::{Writer, WriterConfig};
use promote::providers::{MetricProvider, Prometheus};
use promote::store::{RunState, Store};

const CHECKS: usize = 20;
const COUNT: usize = 60;

fn pipeline(address: &str, compare: bool) -> String {
    let mut checks = String::new();
    for i in 0..CHECKS {
        if compare {
            checks.push_str(&format!(
                "        - name: m{i}\n          query: bench_metric_{i}\n          compare: {{baselineWindow: 30m, window: 10m, step: 15s}}\n"
            ));
        } else {
            checks.push_str(&format!("        - name: m{i}\n          query: bench_metric_{i}\n          successCondition: result[0] < 1000\n"));
        }
    }
    format!(
        "apiVersion: promote/v1\nkind: Pipeline\nname: bench\nartifact: {{image: registry.example.com/acme/bench}}\nenvironments:\n  qa: {{repo: envs/qa.git, file: k.yaml, update: {{kustomizeImage: registry.example.com/acme/bench}}}}\nstages:\n  analysis:\n    metrics:\n      provider: {{prometheus: {{address: \"{address}\"}}}}\n      interval: 0s\n      count: {COUNT}\n      score: {{pass: 0, marginal: 0}}\n      checks:\n{checks}"
    )
}

/// The same queries, straight to Prometheus: 20 at once, each 60 in turn.
async fn direct(p: Arc<Prometheus>, compare: bool) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CHECKS {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let q = format!("bench_metric_{i}");
            for _ in 0..COUNT {
                if compare {
                    let now = SystemTime::now();
                    let step = Duration::from_secs(15);
                    let (a, b) = tokio::join!(
                        p.range(&q, now - Duration::from_secs(600), now, step),
                        p.range(&q, now - Duration::from_secs(2400), now - Duration::from_secs(600), step)
                    );
                    assert!(a.unwrap().len() > 30 && b.unwrap().len() > 100);
                } else {
                    assert!(!p.instant(&q).await.unwrap().to_string().is_empty());
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// (the whole run's wall time, the metrics stage's own (durable start to durable end), the
/// longest check's time waiting for Prometheus).
async fn analysis(url: &str, compare: bool) -> (Duration, Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bench.yaml");
    let text = pipeline(url, compare);
    std::fs::write(&file, &text).unwrap();
    let checked = promote::ops::check_file(&file);
    let plan = checked.plan.unwrap_or_else(|| panic!("{:?}", checked.diagnostics));
    let exec = Executor {
        store: Store::open(&dir.path().join("state.db")).await.unwrap(),
        writer: Arc::new(Writer::new(WriterConfig::new(dir.path().join("repos")))),
        metrics: Arc::new(Metrics::default()),
        poll: Duration::from_millis(50),
        public_url: None,
        directory: None,
    };
    let id = exec.start(&file, &text, &plan, "1.0.0", "bench", false).await.unwrap().id;
    let start = Instant::now();
    let t0 = promote::clock::now_ms();
    let sum = exec.drive(&id, Arc::new(|_| {})).await.unwrap();
    let took = start.elapsed();
    if std::env::var("BREAKDOWN").is_ok() {
        let st = &sum.stages[0];
        let out = st.output.as_ref().unwrap();
        let ats: Vec<i64> = out["metrics"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["measurements"].as_array().unwrap().iter().map(|m| m["at"].as_i64().unwrap()))
            .collect();
        let (first, last) = (ats.iter().min().unwrap(), ats.iter().max().unwrap());
        eprintln!(
            "drive->start {} start->first {} first->last {} last->finished {} finished->end {}",
            st.started_at.unwrap() - t0,
            first - st.started_at.unwrap(),
            last - first,
            st.finished_at.unwrap() - last,
            t0 + took.as_millis() as i64 - st.finished_at.unwrap()
        );
    }
    assert_eq!(sum.run.state, RunState::Succeeded, "{:?}", sum.stages[0].message);
    let out = sum.stages[0].output.as_ref().unwrap();
    let measured: usize = out["metrics"]["checks"].as_array().unwrap().iter().map(|c| c["measurements"].as_array().unwrap().len()).sum();
    assert_eq!(measured, CHECKS * COUNT);
    let waited = out["metrics"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["measurements"].as_array().unwrap().iter().map(|m| m["queryMs"].as_f64().unwrap()).sum::<f64>())
        .fold(0.0, f64::max);
    let st = &sum.stages[0];
    let stage = Duration::from_millis((st.finished_at.unwrap() - st.started_at.unwrap()) as u64);
    (took, stage, Duration::from_secs_f64(waited / 1000.0))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(if quick { 1 } else { 9 });
    let mut series = Vec::new();
    for i in 0..CHECKS {
        let name = format!("bench_metric_{i}");
        let mut k = i as f64;
        let lines = prom::series(&name, "", 2400.0, 0.0, 15.0, |_| {
            k = (k * 7.0 + 3.0) % 101.0;
            100.0 + k
        });
        series.push((name, lines));
    }
    let refs: Vec<(&str, String)> = series.iter().map(|(n, l)| (n.as_str(), l.clone())).collect();
    let server = prom::Prometheus::start(&refs);
    let url = server.url();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!("metrics analysis: {CHECKS} checks x {COUNT} measurements against Prometheus {url}, {rounds} round(s), interleaved");
    println!("{:<22} {:>9} {:>13} {:>13} {:>17} {:>15}", "analysis", "stage p50", "in queries", "outside", "same queries", "runner overhead");
    println!("{:<22} {:>9} {:>13} {:>13} {:>17} {:>15}", "", "", "(longest", "Prometheus", "sent directly", "(whole run");
    println!("{:<22} {:>9} {:>13} {:>13} {:>17} {:>15}", "", "", "check)", "", "(p50)", "vs direct)");
    rt.block_on(async {
        let p = Arc::new(Prometheus::new(&url, None, Duration::from_secs(30)).unwrap());
        // Warm both paths (connections, Prometheus' caches).
        direct(p.clone(), false).await;
        analysis(&url, false).await;
        for compare in [false, true] {
            let (mut walls, mut waits, mut outside, mut directs, mut over) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                let d = direct(p.clone(), compare).await.as_secs_f64();
                let (run, stage, q) = analysis(&url, compare).await;
                let (run, w, q) = (run.as_secs_f64(), stage.as_secs_f64(), q.as_secs_f64());
                walls.push(w);
                waits.push(q);
                outside.push((w - q) / w * 100.0);
                directs.push(d);
                over.push((run - d) / run * 100.0);
            }
            let name = if compare { "Kayenta comparisons" } else { "conditions (instant)" };
            let all: Vec<String> = outside.iter().map(|s| format!("{s:.1}")).collect();
            println!(
                "{name:<22} {:>7.0}ms {:>11.0}ms {:>12.1}% {:>15.0}ms {:>14.1}%",
                median(&mut walls) * 1000.0,
                median(&mut waits) * 1000.0,
                median(&mut outside),
                median(&mut directs) * 1000.0,
                median(&mut over)
            );
            println!("{:<22} outside Prometheus per round (%): {}", "", all.join(", "));
        }
    });
}
