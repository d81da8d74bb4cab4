//! Benchmark: runs started through the API, as a user's traffic. `promote serve` (the real
//! binary, children) over one pipeline, a chain of six `wait: 0s` stages; 8 HTTP clients start
//! N runs at once through `POST /api/v1/runs` (bearer token, `access.run`), spread over the
//! servers; timed from the first start until every run has finished (once the starts are all
//! answered, the 8 clients follow the runs through `GET /api/v1/runs/{id}`, each its share, oldest
//! first, a request every 5 ms while one runs). Printed: the wall
//! time, runs a second, the starts' p50/p99 latency, when the last start was answered and when the
//! last run ended by the servers' clocks (its `finishedAt`). Every run must succeed.
//! `PROMOTE_BENCH_CLIENTS` sets the number of clients (8). `PROMOTE_BENCH_CPU=0.15` gives each
//! server 15% of one core in a cgroup of its own (as replicas on small machines of their own:
//! on one 2-core machine, one server and PostgreSQL already keep the cores 60% busy, so added
//! servers have no CPU to add); the bench prints the setting with its figures.
//! `PROMOTE_BENCH_LOG` sets the servers' `PROMOTE_LOG` (`warn`; `warn,sqlx::query=debug` lists
//! every statement).
//!
//! Configurations: SQLite with one server; PostgreSQL 15 (started here, `fsync` on, as in
//! `benches/replicas.rs`) with one server; the same with three servers on one database.
//!
//! Run: `cargo bench --bench api` (1,000 runs) or `cargo test --bench api -- 100` (100 runs);
//! `-- 1000 sqlite` (or `pg1`, `pg3`) for one configuration; `PROMOTE_BIN=PATH` runs another
//! build of `promote` (to alternate before and after).

#[path = "support.rs"]
mod support;

#[path = "../tests/it/pg.rs"]
#[allow(dead_code, unused_macros)]
mod pg;

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const TOKEN: &str = "prt_alice_api_bench_token_0001";
/// Clients at once (the measure: 8); `PROMOTE_BENCH_CLIENTS` sets another number.
fn client_count() -> usize {
    std::env::var("PROMOTE_BENCH_CLIENTS").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(8)
}

const PIPELINE: &str = "apiVersion: promote/v1
kind: Pipeline
name: chain
artifact: {image: registry.example.com/acme/chain}
users: users.yaml
access: {run: [alice]}
environments:
  qa: {repo: envs/qa.git, file: k.yaml, update: {yamlPath: image.tag}}
stages:
  s1: {wait: {duration: 0s}}
  s2: {needs: [s1], wait: {duration: 0s}}
  s3: {needs: [s2], wait: {duration: 0s}}
  s4: {needs: [s3], wait: {duration: 0s}}
  s5: {needs: [s4], wait: {duration: 0s}}
  s6: {needs: [s5], wait: {duration: 0s}}
";

/// Where the servers keep their state.
#[derive(Clone)]
enum State {
    Sqlite,
    Postgres(String),
}

/// `PROMOTE_BENCH_CPU`: the share of one core each server may use (e.g. `0.15`), as if each
/// replica ran on a small machine of its own; unset, the servers share the machine's cores.
fn cpu_share() -> Option<f64> {
    std::env::var("PROMOTE_BENCH_CPU").ok().map(|v| v.parse::<f64>().ok().filter(|s| *s > 0.0).expect("PROMOTE_BENCH_CPU: a share of one core, such as 0.15"))
}

/// Puts process `pid` in a cgroup of its own with `share` of one core (cgroup v2's `cpu.max`, or
/// v1's CFS quota): the bench fails rather than measure unlimited servers as limited ones.
fn limit_cpu(pid: u32, share: f64) {
    let period = 100_000u64;
    let quota = ((share * period as f64) as u64).max(1000);
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
    let (group, limits): (std::path::PathBuf, Vec<(&str, String)>) = if v2.exists() {
        (Path::new("/sys/fs/cgroup").join(format!("promote-bench-{pid}")), vec![("cpu.max", format!("{quota} {period}"))])
    } else {
        (
            Path::new("/sys/fs/cgroup/cpu").join(format!("promote-bench-{pid}")),
            vec![("cpu.cfs_period_us", period.to_string()), ("cpu.cfs_quota_us", quota.to_string())],
        )
    };
    // The groups of servers gone (earlier configurations or runs) are removed: an empty group
    // is removed, one with a live process is refused, and that is ignored.
    if let Some(parent) = group.parent()
        && let Ok(entries) = std::fs::read_dir(parent)
    {
        for e in entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("promote-bench-")) {
            let _ = std::fs::remove_dir(e.path());
        }
    }
    let set = || -> std::io::Result<()> {
        std::fs::create_dir_all(&group)?;
        for (file, value) in &limits {
            std::fs::write(group.join(file), value)?;
        }
        std::fs::write(group.join("cgroup.procs"), pid.to_string())
    };
    if let Err(e) = set() {
        panic!("PROMOTE_BENCH_CPU: could not limit the server's CPU in {}: {e} (needs a writable cgroup cpu controller)", group.display());
    }
}

/// `promote serve` as a child in `cwd`; returns it and its port once it listens.
fn serve(dir: &Path, cwd: &Path, state: &State) -> (Child, u16) {
    std::fs::create_dir_all(cwd).unwrap();
    // `PROMOTE_BIN`: another build to compare with (alternating before and after on a noisy machine).
    let bin = std::env::var("PROMOTE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_promote").to_string());
    let mut cmd = Command::new(bin);
    cmd.current_dir(cwd).env("PROMOTE_KEY_FILE", dir.join("key")).env("PROMOTE_LOG", std::env::var("PROMOTE_BENCH_LOG").unwrap_or_else(|_| "warn".into()));
    match state {
        State::Sqlite => {
            cmd.arg("--state").arg(dir.join("state.db"));
        }
        State::Postgres(url) => {
            cmd.env("PROMOTE_DATABASE_URL", url);
        }
    }
    let mut child = cmd.args(["serve", "--listen", "127.0.0.1:0", "--pipelines"]).arg(dir.join("pipelines")).stderr(Stdio::piped()).spawn().unwrap();
    if let Some(share) = cpu_share() {
        limit_cpu(child.id(), share);
    }
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let port = loop {
        let line = lines.next().expect("the server says where it listens").unwrap();
        if let Some(addr) = line.split("listening on http://").nth(1) {
            break addr.trim().rsplit(':').next().unwrap().parse().unwrap();
        }
        eprintln!("  server: {line}");
    };
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("  server: {line}");
        }
    });
    (child, port)
}

/// What one configuration measured.
struct Measured {
    wall: Duration,
    /// Until the last start was answered.
    started: Duration,
    /// Until the last run ended, by the servers' clocks (its `finished_at`): the wall time without
    /// the following, which comes after.
    ended: Duration,
    starts: Vec<f64>,
}

async fn measure(runs: usize, ports: &[u16]) -> Measured {
    let clients_at_once = client_count();
    let http = promote::providers::http_client();
    for port in ports {
        let r = http.get(format!("http://127.0.0.1:{port}/readyz")).send().await.unwrap();
        assert!(r.status().is_success(), "server on {port} not ready");
    }
    let next = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();
    let began_ms = promote::clock::now_ms();
    let mut last_end = began_ms;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..clients_at_once {
        let (http, next, ports) = (http.clone(), next.clone(), ports.to_vec());
        clients.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= runs {
                    return mine;
                }
                let port = ports[i % ports.len()];
                let at = Instant::now();
                let r = http
                    .post(format!("http://127.0.0.1:{port}/api/v1/runs"))
                    .bearer_auth(TOKEN)
                    .json(&serde_json::json!({"pipeline": "chain", "version": format!("1.0.{i}")}))
                    .send()
                    .await
                    .unwrap();
                let took = at.elapsed().as_secs_f64() * 1000.0;
                let status = r.status();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                assert_eq!(status.as_u16(), 201, "start {i}: {body}");
                let id = body["run"]["id"].as_str().expect("the answer names the run").to_string();
                mine.push((i, id, port, took));
            }
        });
    }
    let mut started = Vec::with_capacity(runs);
    while let Some(done) = clients.join_next().await {
        started.extend(done.unwrap());
    }
    let answered = began.elapsed();
    started.sort_by_key(|s| s.0);
    let starts: Vec<f64> = started.iter().map(|s| s.3).collect();
    // Then every run, by the 8 clients at once (each its own runs, oldest first): the next is
    // asked for only once the one before has finished.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut followers = tokio::task::JoinSet::new();
    for k in 0..clients_at_once {
        let mine: Vec<(usize, String, u16)> = started.iter().skip(k).step_by(clients_at_once).map(|(i, id, port, _)| (*i, id.clone(), *port)).collect();
        let http = http.clone();
        followers.spawn(async move {
            let mut last_end = 0;
            for (i, id, port) in mine {
                loop {
                    let r = http.get(format!("http://127.0.0.1:{port}/api/v1/runs/{id}")).bearer_auth(TOKEN).send().await.unwrap();
                    let v: serde_json::Value = r.json().await.unwrap();
                    let state = v["run"]["state"].as_str().unwrap_or_default().to_string();
                    if state != "running" {
                        assert_eq!(state, "succeeded", "run {i} ({id}): {}", v["run"]["message"]);
                        last_end = v["run"]["finishedAt"].as_i64().expect("an ended run says when").max(last_end);
                        break;
                    }
                    assert!(Instant::now() < deadline, "run {i} still running after 10 minutes");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            last_end
        });
    }
    while let Some(end) = followers.join_next().await {
        last_end = last_end.max(end.unwrap());
    }
    Measured { wall: began.elapsed(), started: answered, ended: Duration::from_millis((last_end - began_ms) as u64), starts }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn setup(dir: &Path) {
    std::fs::create_dir_all(dir.join("pipelines/envs")).unwrap();
    support::bare(&dir.join("pipelines/envs"), "qa");
    std::fs::write(dir.join("pipelines/chain.yaml"), PIPELINE).unwrap();
    std::fs::write(
        dir.join("pipelines/users.yaml"),
        format!("users:\n  alice: {{name: Alice, email: alice@example.com, token: \"{}\"}}\n", promote::governance::users::hash_token(TOKEN)),
    )
    .unwrap();
    promote::seal::Key::load_or_create(&dir.join("key")).unwrap();
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(if quick { 100 } else { 1000 });
    let only: Option<String> = std::env::args().skip(1).find(|a| ["sqlite", "pg1", "pg3"].contains(&a.as_str()));
    println!(
        "{runs} runs of a chain of 6 `wait: 0s` stages started through POST /api/v1/runs by {} clients{}; load average {}",
        client_count(),
        cpu_share().map(|s| format!(", each server limited to {:.0}% of one core", s * 100.0)).unwrap_or_default(),
        loadavg()
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    // Started when the first PostgreSQL configuration comes, not before SQLite's: a database
    // server starting up (its files written and flushed) slowed the SQLite runs beside it by a
    // quarter to a half.
    let mut pg: Option<pg::Postgres> = None;
    let mut one_pg = None;
    for (name, servers) in [("sqlite", 1usize), ("pg1", 1), ("pg3", 3)] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let dir = tempfile::Builder::new().prefix("promote-api-bench").tempdir().unwrap();
        setup(dir.path());
        let state = match name {
            "sqlite" => State::Sqlite,
            _ => State::Postgres(pg.get_or_insert_with(pg::Postgres::start_durable).fresh_database()),
        };
        let mut children = Vec::new();
        let mut ports = Vec::new();
        for n in 0..servers {
            let (child, port) = serve(dir.path(), &dir.path().join(format!("server-{n}")), &state);
            children.push(child);
            ports.push(port);
        }
        let mut m = rt.block_on(measure(runs, &ports));
        let rate = runs as f64 / m.wall.as_secs_f64();
        let label = match name {
            "sqlite" => "SQLite, 1 server".to_string(),
            _ => format!("PostgreSQL, {servers} server{}", if servers > 1 { "s" } else { "" }),
        };
        let vs = match (name, one_pg) {
            ("pg1", _) => {
                one_pg = Some(rate);
                String::new()
            }
            ("pg3", Some(one)) => format!(" ({:.2}x one server)", rate / one),
            _ => String::new(),
        };
        println!(
            "  {label:<22} {:>7.2} s   {:>7.0} runs/s{vs}   starts p50 {:.2} ms, p99 {:.2} ms, all answered at {:.2} s, the last run ended at {:.2} s   load average {}",
            m.wall.as_secs_f64(),
            rate,
            support::pct(&mut m.starts, 0.5),
            support::pct(&mut m.starts, 0.99),
            m.started.as_secs_f64(),
            m.ended.as_secs_f64(),
            loadavg()
        );
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    drop(pg);
}
