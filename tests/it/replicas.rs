//! Several `promote serve` replicas (the real binary, as children) on one real PostgreSQL: runs
//! started by webhooks spread across them, a replica killed with SIGKILL mid-run, the database
//! restarted mid-run, a decision posted to one replica waking a run another drives.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use promote::store::{RunState, Store};

use crate::exec::Setup;
use crate::pg::{Postgres, shared};
use crate::server::{ALICE, push_event, sign};

/// The lease of these tests: a replica that stops is taken over within two of them.
const LEASE_MS: u64 = 1500;

/// One `promote serve` child: its port, killed when dropped.
struct Replica {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Replica {
    /// Starts a replica on `url`, in a working folder of its own (its git caches), serving the
    /// pipelines of `s`, sealing with the key file of `s`.
    fn start(s: &Setup, url: &str) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(crate::promote_bin())
            .current_dir(dir.path())
            .env("PROMOTE_KEY_FILE", key_file(s))
            .env("PROMOTE_LEASE_MS", LEASE_MS.to_string())
            .env("PROMOTE_LOG", "info")
            .env("PROMOTE_DATABASE_URL", url)
            .args(["serve", "--listen", "127.0.0.1:0", "--pipelines"])
            .arg(s.path())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr).lines();
        let port = loop {
            let line = lines.next().expect("the replica says where it listens").unwrap();
            if let Some(addr) = line.split("listening on http://").nth(1) {
                break addr.trim().rsplit(':').next().unwrap().parse().unwrap();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Replica { child, port, _dir: dir }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sends the signed push of `tag` as delivery `id`: the run it started.
    async fn push(&self, http: &reqwest::Client, tag: &str, id: &str) -> String {
        let body = push_event("acme/checkout", &format!("refs/tags/{tag}"));
        let r = http
            .post(format!("{}/hooks/github", self.url()))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", id)
            .header("X-Hub-Signature-256", sign(&body))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let answer: serde_json::Value = r.json().await.unwrap();
        assert_eq!(status, 201, "{answer}");
        answer["runs"][0]["run"].as_str().unwrap().to_string()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

fn key_file(s: &Setup) -> std::path::PathBuf {
    s.path().join("key")
}

/// A pipeline whose runs soak for `soak`, then promote to QA (and, with `approval`, wait for
/// alice, then promote to prod), started by signed tag pushes.
fn pipeline(soak: &str, approval: bool) -> Setup {
    let tail = if approval {
        "  sign-off:\n    needs: [qa]\n    approval: {approvers: [alice]}\n  prod:\n    needs: [sign-off]\n    deploy: {environment: prod}\n"
    } else {
        ""
    };
    let s = Setup::new(
        // Every run promoted, in order (no newer run supersedes the older ones queued for qa):
        // what these tests count is that nothing is lost or done twice.
        &format!("  soak:\n    wait: {{duration: {soak}}}\n  qa:\n    needs: [soak]\n    deploy: {{environment: qa, supersede: false}}\n{tail}"),
        "users: users.yaml\ntriggers:\n  - git: {provider: github, repo: acme/checkout, refs: [\"refs/tags/v*\"], version: tag}\n    secretFile: hook.secret\n",
    );
    std::fs::write(s.path().join("hook.secret"), "It's a Secret to Everybody\n").unwrap();
    std::fs::write(
        s.path().join("users.yaml"),
        format!("users:\n  alice: {{name: Alice, email: alice@example.com, token: \"{}\"}}\n", promote::governance::users::hash_token(ALICE)),
    )
    .unwrap();
    // One key for every replica, made before any starts.
    promote::seal::Key::load_or_create(&key_file(&s)).unwrap();
    s
}

async fn store(s: &Setup, url: &str) -> Store {
    Store::open_url(url, promote::seal::Key::load_or_create(&key_file(s)).unwrap()).await.unwrap()
}

/// Waits until every run of `ids` has ended; their states.
async fn ended(store: &Store, ids: &[String], within: Duration) -> Vec<RunState> {
    let deadline = Instant::now() + within;
    loop {
        let mut states = Vec::new();
        for id in ids {
            states.push(store.run(id).await.unwrap().state);
        }
        if states.iter().all(|s| *s != RunState::Running) {
            return states;
        }
        assert!(Instant::now() < deadline, "runs still running: {states:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each version's promotion commits in `env` (every one must be there exactly once).
fn commits_per_version(s: &Setup, env: &str) -> std::collections::HashMap<String, usize> {
    let mut out = std::collections::HashMap::new();
    for c in s.commits(env) {
        *out.entry(c).or_default() += 1;
    }
    out
}

/// Every run of `runs` (version, id) ended promoted (one commit in `env`) or superseded (none),
/// and the promotions came in the runs' order: `env` never went backwards.
async fn promoted_once_in_order(s: &Setup, st: &Store, runs: &[(String, String)], env: &str) {
    let counts = commits_per_version(s, env);
    for (version, id) in runs {
        let run = st.run(id).await.unwrap();
        let commits = counts.get(&format!("promote checkout {version} to {env}")).copied().unwrap_or(0);
        match run.state {
            RunState::Succeeded => assert_eq!(commits, 1, "{version} succeeded: one commit in {env}, {counts:?}"),
            RunState::Superseded => assert_eq!(commits, 0, "{version} superseded: {:?}", run.message),
            other => panic!("{version} ended {other}: {:?}", run.message),
        }
    }
    let id_of: std::collections::HashMap<String, &String> = runs.iter().map(|(v, id)| (format!("promote checkout {v} to {env}"), id)).collect();
    let order: Vec<&String> = s.commits(env).iter().rev().filter_map(|c| id_of.get(c).copied()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{env} went backwards: {order:?}");
    let newest = runs.iter().map(|(_, id)| id).max().unwrap();
    assert_eq!(order.last(), Some(&newest), "{env} ends at the newest run's version");
}

fn audit_verify(s: &Setup, url: &str) -> std::process::Output {
    Command::new(crate::promote_bin()).env("PROMOTE_KEY_FILE", key_file(s)).args(["--state", url, "audit", "verify"]).output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_share_the_runs_and_finish_a_killed_ones() {
    let s = pipeline("3s", false);
    let url = shared().fresh_database();
    let mut replicas: Vec<Replica> = (0..3).map(|_| Replica::start(&s, &url)).collect();
    let http = promote::providers::http_client();
    let mut runs = Vec::new();
    for i in 0..50 {
        let r = &replicas[i % 3];
        runs.push((i % 3, r.push(&http, &format!("v2.0.{i}"), &format!("delivery-{i}")).await));
        // Triggers a few milliseconds apart, as people push tags: their runs' order is theirs.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // While the runs soak (mid-wait), and the first of them deploy, replica 0 dies.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let killed_at = promote::clock::now_ms();
    replicas[0].kill();
    let st = store(&s, &url).await;
    let ids: Vec<String> = runs.iter().map(|(_, id)| id.clone()).collect();
    ended(&st, &ids, Duration::from_secs(120)).await;
    // No run lost, none started twice, at most one commit per deploy, never backwards (a run
    // that reaches qa after a newer one promoted it, as the killed replica's do once taken over,
    // is superseded).
    assert_eq!(st.runs(1000).await.unwrap().len(), 50);
    let versions: Vec<(String, String)> = ids.iter().enumerate().map(|(i, id)| (format!("v2.0.{i}"), id.clone())).collect();
    promoted_once_in_order(&s, &st, &versions, "qa").await;
    // The killed replica's runs were taken over, and the trail says so, soon after its death.
    let trail = st.audit_entries(None, 0, 100_000).await.unwrap();
    let takeovers: Vec<_> = trail.iter().filter(|e| e.kind == "driver-takeover").collect();
    let orphans = runs.iter().filter(|(r, _)| *r == 0).count();
    assert!(!takeovers.is_empty() && takeovers.len() <= orphans + 2, "{} takeovers of {orphans} runs", takeovers.len());
    let first = takeovers.iter().map(|e| e.at).min().unwrap();
    println!("failover: {} ms from the replica's death to the first takeover (lease {LEASE_MS} ms)", first - killed_at);
    assert!(first - killed_at < 4 * LEASE_MS as i64, "failover took {} ms", first - killed_at);
    let out = audit_verify(&s, &url);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decision_posted_to_one_replica_wakes_the_run_another_drives() {
    let s = pipeline("0s", true);
    let url = shared().fresh_database();
    let (a, b) = (Replica::start(&s, &url), Replica::start(&s, &url));
    let http = promote::providers::http_client();
    let id = b.push(&http, "v3.1.0", "delivery-wake").await;
    let st = store(&s, &url).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while st.stages(&id).await.unwrap()[2].state != promote::store::StageState::Waiting {
        assert!(Instant::now() < deadline, "the run did not reach its sign-off");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = http.post(format!("{}/api/v1/runs/{id}/stages/sign-off/approve", a.url())).bearer_auth(ALICE).json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    assert_eq!(ended(&st, std::slice::from_ref(&id), Duration::from_secs(30)).await, [RunState::Succeeded]);
    // From the decision's entry (written by A) to the stage's success (written by B, which drives it).
    let events = st.events(&id).await.unwrap();
    let decided = events.iter().find(|e| e.kind == "decision").unwrap().at;
    let woke = events.iter().find(|e| e.stage.as_deref() == Some("sign-off") && e.detail.contains("succeeded")).map(|e| e.at).unwrap();
    println!("a decision on replica A woke the run on replica B in {} ms", woke - decided);
    assert!(woke - decided < 1000, "{} ms: the change feed crosses replicas", woke - decided);
    assert_eq!(commits_per_version(&s, "prod").get("promote checkout v3.1.0 to prod"), Some(&1));
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_pause_while_the_database_restarts_and_carry_on_with_one_commit_each() {
    let pg = Postgres::start();
    let s = pipeline("2s", false);
    let url = pg.fresh_database();
    let replica = Replica::start(&s, &url);
    let http = promote::providers::http_client();
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(replica.push(&http, &format!("v4.0.{i}"), &format!("delivery-r{i}")).await);
    }
    // The database goes away while the runs soak, for longer than a lease, and comes back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.stop();
    tokio::time::sleep(Duration::from_millis(2 * LEASE_MS)).await;
    pg.start_server();
    let st = store(&s, &url).await;
    ended(&st, &ids, Duration::from_secs(120)).await;
    let versions: Vec<(String, String)> = ids.iter().enumerate().map(|(i, id)| (format!("v4.0.{i}"), id.clone())).collect();
    promoted_once_in_order(&s, &st, &versions, "qa").await;
    let out = audit_verify(&s, &url);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    drop(replica);
    let _ = Path::new(".");
}
