//! Chaos: three `promote serve` replicas (the real binary) on one real PostgreSQL 15, under the
//! faults replicas meet, with the checks that matter afterwards. What it does:
//! - signed GitHub tag pushes (`v1.0.0`, `v1.0.1`, ...) spread over the replicas, 10% of them
//!   delivered again to another replica; a delivery refused by a dead replica is sent to another
//!   one, as GitHub retries;
//! - an approver who signs every waiting release off through the API of some replica;
//! - replicas killed with SIGKILL (and restarted a second later), the database stopped for 5 s,
//!   one replica paused with SIGSTOP for three leases (then SIGCONT: it finds its leases taken).
//!
//! The pipeline: deploy to qa, a 2 s soak, a sign-off, deploy to prod (a newer run supersedes
//! the older ones queued for qa; after the sign-off runs are served in order). Checked at the end,
//! each a failure of the bench when it does not hold:
//! - nothing lost or doubled: one run per delivery, every run ended (`succeeded` or
//!   `superseded`, never `failed`), at most one promotion commit per run and environment, and one
//!   in each environment for every run that succeeded;
//! - never backwards: in each environment's history the promoting runs come in the runs' order,
//!   so each environment ends at the newest promoted version, and the newest run is promoted;
//! - no write after a lease moved on: no stage entry after its run's end, no stage entry after
//!   that stage succeeded;
//! - the trail linear in the work (entries per run printed, at most 60 for any run) and intact
//!   (`audit verify`); `git fsck` clean.
//!
//! Run: `cargo bench --bench chaos` (150 deliveries over 3 minutes, 12 kills) or
//! `cargo bench --bench chaos -- 30` (30 deliveries over 30 s, 3 kills). Each replica's log is kept
//! in the printed folder.

#[path = "support.rs"]
mod support;

#[path = "../tests/it/pg.rs"]
#[allow(dead_code, unused_macros)]
mod pg;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use promote::store::{RunState, Store};
use sha2::Sha256;

const SECRET: &str = "It's a Secret to Everybody";
const TOKEN: &str = "prt_alice_chaos_token_0001";
const LEASE_MS: u64 = 3000;
const REPLICAS: usize = 3;

const PIPELINE: &str = "apiVersion: promote/v1
kind: Pipeline
name: chaos
artifact: {image: registry.example.com/acme/chaos}
users: users.yaml
environments:
  qa: {repo: envs/qa.git, file: k.yaml, update: {yamlPath: image.tag}}
  prod: {repo: envs/prod.git, file: k.yaml, update: {yamlPath: image.tag}}
triggers:
  - git: {provider: github, repo: acme/chaos, refs: [\"refs/tags/v*\"], version: tag}
    secretFile: hook.secret
stages:
  qa: {deploy: {environment: qa}}
  soak: {needs: [qa], wait: {duration: 2s}}
  sign-off: {needs: [soak], approval: {approvers: [alice]}}
  prod: {needs: [sign-off], deploy: {environment: prod}}
";

/// One replica: the child, its port, its log.
struct Replica {
    child: Child,
    port: u16,
}

fn start_replica(dir: &Path, url: &str, n: usize) -> Replica {
    let cwd = dir.join(format!("replica-{n}"));
    std::fs::create_dir_all(&cwd).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_promote"))
        .current_dir(&cwd)
        .env("PROMOTE_KEY_FILE", dir.join("key"))
        .env("PROMOTE_LEASE_MS", LEASE_MS.to_string())
        .env("PROMOTE_LOG", "info")
        .env("PROMOTE_DATABASE_URL", url)
        .args(["serve", "--listen", "127.0.0.1:0", "--pipelines"])
        .arg(dir.join("pipelines"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("replica-{n}.log"))).unwrap();
    let port = loop {
        let line = lines.next().expect("the replica says where it listens").unwrap();
        writeln!(log, "{line}").unwrap();
        if let Some(addr) = line.split("listening on http://").nth(1) {
            break addr.trim().rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
        }
    });
    Replica { child, port }
}

fn signal(r: &Replica, sig: i32) {
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(r.child.id() as i32, sig) };
}

fn push(tag: &str) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(&serde_json::json!({
        "ref": format!("refs/tags/{tag}"), "before": "0000000000000000000000000000000000000000",
        "after": "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "created": true, "deleted": false,
        "repository": {"id": 1, "name": "chaos", "full_name": "acme/chaos", "private": false},
        "pusher": {"name": "octocat", "email": "octocat@github.com"},
    }))
    .unwrap();
    let mut m = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    m.update(&body);
    let sig = format!("sha256={}", hex::encode(m.finalize().into_bytes()));
    (body, sig)
}

type Replicas = Arc<Mutex<Vec<Option<Replica>>>>;

fn port_of(replicas: &Replicas, n: usize) -> Option<u16> {
    replicas.lock().unwrap()[n].as_ref().map(|r| r.port)
}

/// Delivers push `i` to replica `first` (then to the others while it is refused): the run.
async fn deliver(http: &reqwest::Client, replicas: &Replicas, i: usize, first: usize) -> String {
    let (body, sig) = push(&format!("v1.0.{i}"));
    let mut n = first;
    loop {
        if let Some(port) = port_of(replicas, n % REPLICAS) {
            let sent = http
                .post(format!("http://127.0.0.1:{port}/hooks/github"))
                .header("X-GitHub-Event", "push")
                .header("X-GitHub-Delivery", format!("chaos-{i}"))
                .header("X-Hub-Signature-256", &sig)
                .body(body.clone())
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            if let Ok(r) = sent
                && r.status().is_success()
                && let Ok(answer) = r.json::<serde_json::Value>().await
                && let Some(run) = answer["runs"][0]["run"].as_str()
            {
                return run.to_string();
            }
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let deliveries: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(if quick { 30 } else { 150 });
    let spread = Duration::from_secs((deliveries as u64 * 6 / 5).max(30));
    let kills = (deliveries / 12).max(3);
    let pg = pg::Postgres::start_durable();
    let url = pg.fresh_database();
    let dir = tempfile::Builder::new().prefix("promote-chaos").tempdir().unwrap().keep();
    std::fs::create_dir_all(dir.join("pipelines/envs")).unwrap();
    support::bare(&dir.join("pipelines/envs"), "qa");
    support::bare(&dir.join("pipelines/envs"), "prod");
    std::fs::write(dir.join("pipelines/chaos.yaml"), PIPELINE).unwrap();
    std::fs::write(dir.join("pipelines/hook.secret"), format!("{SECRET}\n")).unwrap();
    std::fs::write(
        dir.join("pipelines/users.yaml"),
        format!("users:\n  alice: {{name: Alice, email: alice@example.com, token: \"{}\"}}\n", promote::governance::users::hash_token(TOKEN)),
    )
    .unwrap();
    let key = promote::seal::Key::load_or_create(&dir.join("key")).unwrap();
    println!(
        "chaos: {deliveries} deliveries over {} s to {REPLICAS} replicas (lease {} s), {kills} kills, the database stopped 5 s, a replica paused {} s; logs in {}",
        spread.as_secs(),
        LEASE_MS / 1000,
        3 * LEASE_MS / 1000,
        dir.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let replicas: Replicas = Arc::new(Mutex::new((0..REPLICAS).map(|n| Some(start_replica(&dir, &url, n))).collect()));
        let store = Store::open_url(&url, key).await.unwrap();
        let http = promote::providers::http_client();
        let began = Instant::now();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

        // The approver: every release waiting for its sign-off, through some replica's API.
        let approver = {
            let (store, replicas, http, done) = (store.clone(), replicas.clone(), http.clone(), done.clone());
            tokio::spawn(async move {
                let mut k = 0;
                let mut decisions = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    if let Ok(waiting) = store.waiting_runs().await {
                        for (run, stages) in waiting.iter() {
                            if !stages.iter().any(|s| s.name == "sign-off" && s.state == promote::store::StageState::Waiting) {
                                continue;
                            }
                            k += 1;
                            let Some(port) = port_of(&replicas, k % REPLICAS) else { continue };
                            let r = http
                                .post(format!("http://127.0.0.1:{port}/api/v1/runs/{}/stages/sign-off/approve", run.id))
                                .bearer_auth(TOKEN)
                                .json(&serde_json::json!({"comment": "chaos"}))
                                .timeout(Duration::from_secs(10))
                                .send()
                                .await;
                            if r.is_ok_and(|r| r.status().is_success()) {
                                decisions += 1;
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                decisions
            })
        };

        // The faults, spread over the deliveries: kills, then the database's outage and the pause
        // in between.
        let faults = {
            let (replicas, dir, pg_stop, url) = (replicas.clone(), dir.clone(), Arc::new(pg), url.clone());
            tokio::spawn(async move {
                let step = spread / (kills as u32 + 3);
                for f in 0..kills + 2 {
                    tokio::time::sleep(step).await;
                    if f == kills / 2 {
                        pg_stop.stop();
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        pg_stop.start_server();
                        println!("  {:>5.1} s: the database was stopped for 5 s", began.elapsed().as_secs_f64());
                        continue;
                    }
                    if f == kills / 2 + 1 {
                        let n = 1;
                        let paused = { replicas.lock().unwrap()[n].as_ref().map(|r| (signal(r, libc::SIGSTOP), r.child.id())) };
                        tokio::time::sleep(Duration::from_millis(3 * LEASE_MS)).await;
                        if let Some(r) = replicas.lock().unwrap()[n].as_ref() {
                            signal(r, libc::SIGCONT);
                        }
                        println!(
                            "  {:>5.1} s: replica {n} (pid {:?}) paused for {} s",
                            began.elapsed().as_secs_f64(),
                            paused.map(|p| p.1),
                            3 * LEASE_MS / 1000
                        );
                        continue;
                    }
                    let n = f % REPLICAS;
                    if let Some(mut r) = replicas.lock().unwrap()[n].take() {
                        let _ = r.child.kill();
                        let _ = r.child.wait();
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let fresh = start_replica(&dir, &url, n);
                    replicas.lock().unwrap()[n] = Some(fresh);
                    println!("  {:>5.1} s: replica {n} killed (SIGKILL) and restarted", began.elapsed().as_secs_f64());
                }
                pg_stop
            })
        };

        // The deliveries, evenly spread; one in ten sent again to the next replica.
        let mut runs: HashMap<usize, String> = HashMap::new();
        let mut resent = 0;
        let every = spread / deliveries as u32;
        let mut sends = tokio::task::JoinSet::new();
        for i in 0..deliveries {
            for again in 0..1 + usize::from(i % 10 == 3) {
                resent += again;
                let (h, r) = (http.clone(), replicas.clone());
                sends.spawn(async move { (i, deliver(&h, &r, i, i % REPLICAS + again).await) });
            }
            tokio::time::sleep(every).await;
        }
        let mut doubled = 0;
        while let Some(Ok((i, run))) = sends.join_next().await {
            if let Some(first) = runs.insert(i, run.clone())
                && first != run
            {
                doubled += 1;
            }
        }
        let pg = faults.await.unwrap();
        println!("  {:>5.1} s: every delivery answered ({resent} sent twice)", began.elapsed().as_secs_f64());

        // Every run ends.
        let deadline = Instant::now() + Duration::from_secs(600);
        let all = loop {
            let all: Vec<_> = store.runs(100_000).await.unwrap().into_iter().filter(|r| r.pipeline == "chaos").collect();
            if all.len() >= deliveries && all.iter().all(|r| r.state != RunState::Running) {
                break all;
            }
            assert!(Instant::now() < deadline, "runs still running after 10 minutes");
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let ended = began.elapsed();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let decisions = approver.await.unwrap();

        let mut failures = Vec::new();
        let mut check = |ok: bool, what: String| {
            println!("  [{}] {what}", if ok { "ok" } else { "FAILED" });
            if !ok {
                failures.push(what);
            }
        };
        let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
        for r in &all {
            *by_state.entry(r.state.to_string()).or_default() += 1;
        }
        println!("  {:>5.1} s: every run ended: {by_state:?}; {decisions} sign-offs given", ended.as_secs_f64());
        check(
            all.len() == deliveries && doubled == 0,
            format!("one run per delivery: {} runs for {deliveries} deliveries, {doubled} deliveries answered with a second run", all.len()),
        );
        check(
            all.iter().all(|r| matches!(r.state, RunState::Succeeded | RunState::Superseded)),
            format!(
                "no run failed: {:?}",
                all.iter().filter(|r| !matches!(r.state, RunState::Succeeded | RunState::Superseded)).map(|r| (&r.id, &r.message)).take(3).collect::<Vec<_>>()
            ),
        );
        let succeeded: Vec<&String> = all.iter().filter(|r| r.state == RunState::Succeeded).map(|r| &r.id).collect();
        for env in ["qa", "prod"] {
            let history = promotions(&dir.join(format!("pipelines/envs/{env}.git")));
            let mut per_run: HashMap<&str, usize> = HashMap::new();
            for (run, _) in &history {
                *per_run.entry(run).or_default() += 1;
            }
            check(per_run.values().all(|&n| n == 1), format!("{env}: at most one commit per run ({} commits)", history.len()));
            check(
                succeeded.iter().all(|r| per_run.contains_key(r.as_str())),
                format!("{env}: a commit for each of the {} runs that succeeded", succeeded.len()),
            );
            let backwards = history.windows(2).filter(|w| w[1].0 <= w[0].0).count();
            check(backwards == 0, format!("{env}: never backwards ({backwards} commits put an older run's version over a newer one's)"));
            let newest = all.iter().map(|r| &r.id).max().unwrap();
            let last = history.last().map(|(r, v)| (r.as_str(), v.as_str()));
            check(last.is_some_and(|(r, _)| r == newest.as_str()), format!("{env} ends at the newest run's version: {last:?}"));
            let fsck = Command::new("git").args(["fsck", "--no-progress"]).current_dir(dir.join(format!("pipelines/envs/{env}.git"))).output().unwrap();
            check(fsck.status.success(), format!("{env}: git fsck clean"));
        }
        // No write after a lease moved on: nothing after a run's end or after a stage's success.
        let mut late = Vec::new();
        let mut entries = Vec::new();
        for r in &all {
            let events = store.events(&r.id).await.unwrap();
            entries.push(events.len());
            let end = events.iter().position(|e| e.kind == "run");
            if let Some(end) = end
                && let Some(e) = events[end + 1..].iter().find(|e| e.kind == "stage")
            {
                late.push(format!("{}: `{}` after the run ended", r.id, e.detail));
            }
            for (i, e) in events.iter().enumerate() {
                if e.kind == "stage"
                    && e.detail.starts_with("succeeded")
                    && let Some(after) = events[i + 1..].iter().find(|x| x.kind == "stage" && x.stage == e.stage)
                {
                    late.push(format!("{} {:?}: `{}` after it succeeded", r.id, e.stage, after.detail));
                }
            }
        }
        check(late.is_empty(), format!("no stage written after its run ended or after it succeeded: {:?}", late.iter().take(3).collect::<Vec<_>>()));
        let total: usize = entries.iter().sum();
        let most = entries.iter().max().copied().unwrap_or(0);
        check(
            most <= 60,
            format!("the trail linear in the work: {total} entries for {} runs ({:.1} a run, at most {most})", all.len(), total as f64 / all.len() as f64),
        );
        let verdict = store.verify_audit().await.unwrap();
        check(verdict.tamper.is_none(), format!("audit verify: {} entries, intact: {}", verdict.entries, verdict.tamper.is_none()));
        let mut errors = 0;
        for n in 0..REPLICAS {
            let log = std::fs::read_to_string(dir.join(format!("replica-{n}.log"))).unwrap_or_default();
            errors += log.lines().filter(|l| l.contains(" ERROR ")).count();
        }
        println!("  ERROR lines in the replicas' logs: {errors}");
        for r in replicas.lock().unwrap().iter_mut().flatten() {
            signal(r, libc::SIGCONT);
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
        store.close().await;
        drop(pg);
        if failures.is_empty() {
            println!("chaos: every check held");
        } else {
            println!("chaos: {} checks FAILED", failures.len());
            std::process::exit(1);
        }
    });
}

/// The promotion commits on `main` of a bare repo, oldest first: (run, version).
fn promotions(bare: &PathBuf) -> Vec<(String, String)> {
    let repo = git2::Repository::open_bare(bare).unwrap();
    let mut walk = repo.revwalk().unwrap();
    walk.push_ref("refs/heads/main").unwrap();
    walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::REVERSE).unwrap();
    let mut out = Vec::new();
    for oid in walk {
        let commit = repo.find_commit(oid.unwrap()).unwrap();
        let message = commit.message().unwrap_or_default();
        if !message.starts_with("promote ") {
            continue;
        }
        let trailer = |name: &str| message.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default();
        out.push((trailer("Promote-Run:"), trailer("Promote-Version:")));
    }
    out
}
