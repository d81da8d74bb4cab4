//! Benchmark: watches of promoted releases. A pipeline promotes one release into N environments
//! (each a local bare repo), each watched by one metric check against a real Prometheus that
//! scrapes a service every second.
//!
//! (1) The CPU the watches cost promote: two rounds of looks (every watch's look made due at once,
//!     then its next at the 30 s interval) over 60 s, as a share of one core; each look claims,
//!     queries, judges and records.
//! (2) The service's error rate rises: from the looks made due to each release reverted (its
//!     rollback commit pushed and the watch recorded failed): p50, p99 and the last.
//!
//! Run: `cargo bench --bench watch` (1,000 environments) or `cargo bench --bench watch -- 200`.

#[path = "../tests/it/prom.rs"]
#[allow(dead_code)]
mod prom;

#[path = "support.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use promote::exec::{Executor, Metrics, Plans};
use promote::git::{Writer, WriterConfig};
use promote::store::{RunState, Store, WatchFilter};
use support::{bare, cpu, pct};

fn pipeline(n: usize, prometheus: &str) -> String {
    let mut s = String::from("apiVersion: promote/v1\nkind: Pipeline\nname: fleet\nenvironments:\n");
    for i in 0..n {
        s.push_str(&format!(
            "  e{i}:\n    repo: envs/e{i}.git\n    file: k.yaml\n    update: {{yamlPath: image.tag}}\n    watch:\n      for: 1h\n      interval: 30s\n      metrics:\n        provider: {{prometheus: {{address: \"{prometheus}\", timeout: 5s}}}}\n        checks:\n          - {{name: error-rate, query: error_rate, successCondition: \"result[0] < 0.05\"}}\n"
        ));
    }
    s.push_str("stages:\n");
    for i in 0..n {
        s.push_str(&format!("  deploy-e{i}: {{deploy: {{environment: e{i}}}}}\n"));
    }
    s
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(if quick { 50 } else { 1000 });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("envs")).unwrap();
    for i in 0..n {
        bare(&root.join("envs"), &format!("e{i}"));
    }
    let service = prom::Exporter::start("error_rate 0.001\n");
    let prometheus = prom::Prometheus::scraping(&service.addr);
    prom::wait_for_value(&prometheus, "error_rate", 0.001);
    let file = root.join("pipeline.yaml");
    std::fs::write(&file, pipeline(n, &prometheus.url())).unwrap();
    let source = std::fs::read_to_string(&file).unwrap();
    let plan = promote::ops::check_file(&file).plan.expect("valid");
    let key = promote::seal::Key::load_or_create(&root.join("key")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let exec = Executor {
            store: Store::open_with_key(&root.join("state.db"), key).await.unwrap(),
            writer: Arc::new(Writer::new(WriterConfig::new(root.join("repos")))),
            metrics: Arc::new(Metrics::default()),
            poll: Duration::from_millis(200),
            public_url: None,
            directory: None,
        };
        let t = Instant::now();
        let run = exec.start(&file, &source, &plan, "2.0.0", "bench", false).await.unwrap();
        let summary = exec.drive(&run.id, Arc::new(|_| {})).await.unwrap();
        assert_eq!(summary.run.state, RunState::Succeeded);
        let watching = exec.store.watches(WatchFilter { state: Some(promote::store::WatchState::Watching), ..Default::default() }).await.unwrap().len();
        assert_eq!(watching, n.min(1000));
        println!("{n} environments promoted and watched in {:.1} s", t.elapsed().as_secs_f64());

        // (1) Two rounds of looks in 60 s.
        let now = promote::clock::now_ms();
        exec.store.raw_sql(&format!("UPDATE watches SET next_at = {now}")).await.unwrap();
        let plans = Plans::default();
        let (c0, t0) = (cpu(), Instant::now());
        let mut looks = 0;
        let mut slowest_round = Duration::ZERO;
        while t0.elapsed() < Duration::from_secs(60) {
            let round = Instant::now();
            let done = exec.watch_due(&plans).await.unwrap();
            if !done.is_empty() {
                slowest_round = slowest_round.max(round.elapsed());
            }
            assert!(done.iter().all(|l| l.state == promote::store::WatchState::Watching), "{:?}", done.iter().find(|l| l.state != promote::store::WatchState::Watching));
            looks += done.len();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let used = cpu() - c0;
        let wall = t0.elapsed();
        println!(
            "watching {n} releases at a 30 s interval: {looks} looks in {:.0} s, CPU {:.2} s = {:.1}% of one core ({:.2} ms per look; a round of {n} looks took {:.2} s)",
            wall.as_secs_f64(),
            used.as_secs_f64(),
            used.as_secs_f64() / wall.as_secs_f64() * 100.0,
            used.as_secs_f64() * 1e3 / looks.max(1) as f64,
            slowest_round.as_secs_f64()
        );

        // (2) The error rate rises; every look made due at once.
        service.say("error_rate 0.3\n");
        prom::wait_for_value(&prometheus, "error_rate", 0.3);
        let due = promote::clock::now_ms();
        exec.store.raw_sql(&format!("UPDATE watches SET next_at = {due}")).await.unwrap();
        let t1 = Instant::now();
        while exec.watching().await.unwrap() {
            exec.watch_due(&plans).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let all = exec.store.watches(WatchFilter { state: Some(promote::store::WatchState::Failed), ..Default::default() }).await.unwrap();
        assert_eq!(all.len(), n.min(1000), "every release reverted");
        let mut waits: Vec<f64> = all.iter().map(|w| (w.ended_at.unwrap() - due) as f64).collect();
        let repo = git2::Repository::open_bare(root.join("envs/e0.git")).unwrap();
        let held = repo.revparse_single("main:k.yaml").unwrap().peel_to_blob().unwrap().content().to_vec();
        assert!(String::from_utf8_lossy(&held).contains("tag: 1.0.0"), "e0 is back at 1.0.0");
        println!(
            "error rate risen: {} releases reverted in {:.2} s; from the look due to the revert recorded p50 {:.0} ms, p99 {:.0} ms, last {:.0} ms",
            all.len(),
            t1.elapsed().as_secs_f64(),
            pct(&mut waits, 0.5),
            pct(&mut waits, 0.99),
            pct(&mut waits, 1.0)
        );
        exec.store.close().await;
    });
}
