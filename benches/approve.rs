//! Benchmark: how fast a decision made in another process wakes the stage waiting for it, with
//! 1,000 runs waiting for people at once. Prints the time from `promote approve` (a separate
//! process) returning to the approved stage running again (p50, p99 over 200 decisions, one at a
//! time), and the CPU the waiting process used while nothing happened.
//!
//! Run: `cargo bench --bench approve` (1,000 runs, 200 decisions) or `cargo bench --bench approve
//! -- 100` (100 runs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use promote::exec::{Executor, Metrics, Progress};
use promote::git::{Writer, WriterConfig};
use promote::store::{StageState, Store};
use tokio::sync::Notify;

const PIPELINE: &str = "apiVersion: promote/v1
kind: Pipeline
name: bench
artifact: {image: registry.example.com/acme/bench}
environments:
  qa: {repo: envs/qa.git, file: k.yaml, update: {kustomizeImage: registry.example.com/acme/bench}}
stages:
  ok: {approval: {approvers: [alice]}}
  after: {needs: [ok], wait: {duration: 0s}}
";

/// User + system CPU time of this process.
fn cpu() -> Duration {
    // SAFETY: getrusage writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| Duration::from_secs(v.tv_sec as u64) + Duration::from_micros(v.tv_usec as u64);
    t(u.ru_utime) + t(u.ru_stime)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(if quick { 20 } else { 1000 });
    let decisions = runs.min(200);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bench.yaml");
    std::fs::write(&file, PIPELINE).unwrap();
    let checked = promote::ops::check_file(&file);
    let plan = checked.plan.expect("the bench pipeline is valid");
    let state = dir.path().join("state.db");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let exec = Arc::new(Executor {
            store: Store::open(&state).await.unwrap(),
            writer: Arc::new(Writer::new(WriterConfig::new(dir.path().join("repos")))),
            metrics: Arc::new(Metrics::default()),
            poll: Duration::from_secs(3600),
            public_url: None,
            directory: None,
        });
        let mut ids = Vec::with_capacity(runs);
        for _ in 0..runs {
            ids.push(exec.start(&file, PIPELINE, &plan, "1.0.0", "bench", false).await.unwrap().id);
        }
        // Per run: when `ok` first said waiting, and when it ran again after that (the decision).
        let waited: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let resumed: Arc<Mutex<HashMap<String, (Instant, i64)>>> = Arc::default();
        let changed = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        for id in ids.clone() {
            let (exec, waited, resumed, changed) = (exec.clone(), waited.clone(), resumed.clone(), changed.clone());
            tasks.push(tokio::spawn(async move {
                let run = id.clone();
                let progress = Arc::new(move |p: Progress| {
                    if p.stage != "ok" {
                        return;
                    }
                    match p.state {
                        StageState::Waiting => {
                            waited.lock().unwrap().entry(run.clone()).or_insert_with(Instant::now);
                        }
                        StageState::Running if waited.lock().unwrap().contains_key(&run) => {
                            resumed.lock().unwrap().entry(run.clone()).or_insert_with(|| (Instant::now(), promote::clock::now_ms()));
                            changed.notify_waiters();
                        }
                        _ => {}
                    }
                });
                exec.drive(&id, progress).await.unwrap()
            }));
        }
        let started = Instant::now();
        while waited.lock().unwrap().len() < runs {
            assert!(started.elapsed() < Duration::from_secs(120), "runs did not all reach their approval");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("runs waiting          {runs} (all waiting after {:.2} s)", started.elapsed().as_secs_f64());
        // Nothing happens for 3 s: what does waiting cost?
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (c0, t0) = (cpu(), Instant::now());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let idle = (cpu() - c0).as_secs_f64() / t0.elapsed().as_secs_f64();
        println!("idle CPU              {:.2}% of one core while {runs} runs wait", idle * 100.0);

        let bin = env!("CARGO_BIN_EXE_promote");
        let mut latencies = Vec::with_capacity(decisions);
        // From the decision's durable write (its time in the trail, in ms) to the stage running.
        let mut from_commit = Vec::with_capacity(decisions);
        for id in ids.iter().take(decisions) {
            let args = ["--state".to_string(), state.display().to_string(), "approve".into(), id.clone(), "ok".into(), "--as".into(), "alice".into()];
            let out = tokio::task::spawn_blocking(move || std::process::Command::new(bin).args(args).output().unwrap()).await.unwrap();
            let returned = Instant::now();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            // It may run again before the process has even exited: that counts as 0.
            let woke = loop {
                let notified = changed.notified();
                if let Some(&t) = resumed.lock().unwrap().get(id) {
                    break t;
                }

                tokio::time::timeout(Duration::from_secs(30), notified).await.expect("the approved stage ran again");
            };
            latencies.push(woke.0.saturating_duration_since(returned));
            let decided = exec.store.decisions(id, "ok").await.unwrap()[0].at;
            from_commit.push(woke.1 - decided);
        }
        latencies.sort();
        let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0;
        println!(
            "decision -> running   p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} decisions by `promote approve` in another process, one at a time)",
            pct(0.5),
            pct(0.99),
            latencies.last().unwrap().as_secs_f64() * 1000.0,
            latencies.len()
        );
        from_commit.sort();
        println!(
            "decision write -> running p50 {} ms, p99 {} ms (the decision's time in the trail to the stage reported running, wall clock, ms resolution)",
            from_commit[from_commit.len() / 2],
            from_commit[((from_commit.len() as f64 * 0.99) as usize).min(from_commit.len() - 1)]
        );
        for t in tasks.drain(..decisions) {
            t.await.unwrap();
        }
        for t in tasks {
            t.abort();
        }
    });
}
