//! Benchmark: 1,000 runs of a 6-stage pipeline of no-op stages (`wait: 0s`) at once, with durable
//! SQLite state (WAL). Prints durable stage transitions per second, the time from a stage's needs
//! being met to its start (p50, p99: from the durable `succeeded` of its last need to the durable
//! `running` of the stage), and the peak memory of the process.
//!
//! Two ways of driving, each measured on a fresh state:
//! - `server`: as `promote serve` starts a run (API, webhook, poll): recorded with its driver's
//!   lease in one write and driven from that record with the server's loaded plan
//!   ([`Executor::drive_started`]);
//! - `resume`: as `promote resume` drives a recorded run: the lease claimed, the run and its stages
//!   read back, the stored text planned again ([`Executor::drive`]).
//!
//! To profile the timed part only: `mkfifo ctl ack; perf record --control fifo:ctl,ack -D -1 -g --
//! env PROMOTE_PERF_CONTROL=ctl,ack target/release/deps/exec-* --bench server`.
//!
//! Run: `cargo bench --bench exec` (1,000 runs, both ways), `cargo bench --bench exec -- 200`, or
//! `cargo bench --bench exec -- --bench server` (one way).
//!
//! [`Executor::drive_started`]: promote::exec::Executor::drive_started
//! [`Executor::drive`]: promote::exec::Executor::drive

#[path = "support.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use promote::exec::Progress;
use promote::store::{StageState, Store};

const PIPELINE: &str = support::NOOP_PIPELINE;

/// (run, stage, state) -> when the walker reported it.
type Seen = HashMap<(String, String, StageState), Instant>;

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(if quick { 20 } else { 1000 });
    let ways: Vec<&str> =
        ["server", "resume"].into_iter().filter(|w| !std::env::args().any(|a| a == "server" || a == "resume") || std::env::args().any(|a| a == *w)).collect();
    for (k, way) in ways.iter().enumerate() {
        if k > 0 {
            println!();
        }
        bench(runs, way == &"server");
    }
}

fn bench(runs: usize, server: bool) {
    println!(
        "driven as             {}",
        if server { "the server drives (recorded with its lease, the loaded plan)" } else { "`promote resume` drives (claimed, read back, planned again)" }
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bench.yaml");
    std::fs::write(&file, PIPELINE).unwrap();
    let checked = promote::ops::check_file(&file);
    let plan = checked.plan.expect("the bench pipeline is valid");
    let needs: HashMap<String, Vec<String>> =
        plan.pipeline.stages.iter().map(|s| (s.name.value.clone(), s.needs.iter().map(|n| n.value.clone()).collect())).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let exec = Arc::new(support::executor(Store::open(&dir.path().join("state.db")).await.unwrap(), &dir.path().join("repos")));
        let planned = promote::exec::Planned { source: PIPELINE.into(), plan: Arc::new(plan.clone()), users: None };
        let mut started = Vec::with_capacity(runs);
        for _ in 0..runs {
            let run = exec.start_delivered(&file, PIPELINE, &plan, "1.0.0", "bench", false, None, server).await.unwrap().unwrap();
            started.push(run);
        }
        let ids: Vec<String> = started.iter().map(|r| r.id.clone()).collect();
        // Each run's transitions (stage, state, when), as its walker reported them (after the
        // durable write): a list per run, so that the bench's own bookkeeping takes no lock shared
        // by the 1,000 walkers and hashes nothing while they run.
        type Heard = Arc<Mutex<Vec<(String, StageState, Instant)>>>;
        support::perf_control("enable");
        let start = Instant::now();
        let mut tasks = Vec::new();
        for run in started {
            let (exec, planned) = (exec.clone(), planned.clone());
            let heard: Heard = Arc::new(Mutex::new(Vec::with_capacity(12)));
            tasks.push(tokio::spawn(async move {
                let id = run.id.clone();
                let progress = {
                    let heard = heard.clone();
                    Arc::new(move |p: Progress| heard.lock().unwrap().push((p.stage, p.state, Instant::now())))
                };
                let state = if server {
                    exec.drive_started(run, Some(planned), progress, Default::default()).await.unwrap()
                } else {
                    exec.drive(&run.id, progress).await.unwrap().run.state
                };
                (id, state, heard)
            }));
        }
        // (run, stage, state) -> when.
        let mut seen = Seen::new();
        let mut ended = Vec::new();
        for t in tasks {
            let (id, state, heard) = t.await.unwrap();
            assert_eq!(state, promote::store::RunState::Succeeded);
            ended.push((id, heard));
        }
        let took = start.elapsed();
        support::perf_control("disable");
        for (id, heard) in ended {
            for (stage, state, at) in std::mem::take(&mut *heard.lock().unwrap()) {
                seen.insert((id.clone(), stage, state), at);
            }
        }
        let mut latencies: Vec<Duration> = Vec::new();
        // The whole step, for honesty: from the durable start of the last need (a no-op) to the
        // durable start of the stage, which includes the wait for the need's result to be written.
        let mut steps: Vec<Duration> = Vec::new();
        for id in &ids {
            for (stage, deps) in &needs {
                let Some(started) = seen.get(&(id.clone(), stage.clone(), StageState::Running)) else { continue };
                let met = deps.iter().filter_map(|d| seen.get(&(id.clone(), d.clone(), StageState::Succeeded))).max();
                if let Some(met) = met {
                    latencies.push(started.saturating_duration_since(*met));
                }
                let need_started = deps.iter().filter_map(|d| seen.get(&(id.clone(), d.clone(), StageState::Running))).max();
                if let Some(s) = need_started {
                    steps.push(started.saturating_duration_since(*s));
                }
            }
        }
        latencies.sort();
        let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        // Two durable transitions per stage (running, succeeded), plus the run's start and end.
        let transitions = runs * 6 * 2;
        println!("runs at once          {runs}");
        println!("wall time             {:.2} s", took.as_secs_f64());
        println!("stage transitions     {transitions} durable ({:.0} per second)", transitions as f64 / took.as_secs_f64());
        println!(
            "start latency         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (needs met -> running, {} samples)",
            pct(0.5).as_secs_f64() * 1000.0,
            pct(0.99).as_secs_f64() * 1000.0,
            latencies.last().unwrap().as_secs_f64() * 1000.0,
            latencies.len()
        );
        steps.sort();
        let spct = |p: f64| steps[((steps.len() as f64 * p) as usize).min(steps.len() - 1)];
        println!(
            "step                  p50 {:.2} ms, p99 {:.2} ms (a need's start -> the stage's start, the need being a no-op)",
            spct(0.5).as_secs_f64() * 1000.0,
            spct(0.99).as_secs_f64() * 1000.0
        );
        println!("peak RSS              {} MB", peak_rss_kb() / 1024);
        // The runs' ends asked for the trail's head to be pushed to Git, off their path.
        let t = Instant::now();
        promote::exec::settle_heads().await;
        println!("audit head in Git     settled {:.0} ms after the last run ended", t.elapsed().as_secs_f64() * 1000.0);
    });
}
