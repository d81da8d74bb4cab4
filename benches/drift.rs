//! Benchmark: drift. (1) From a hand-edit's push webhook to the drift recorded, and from a
//! reject through the API to its revert commit pushed, in `promote serve` on loopback (p50, p99
//! over N drifts one after another). (2) The CPU one look at 1,000 environments takes (each a
//! local bare repo with a sealed promotion and a commit on top in a tenth of them), and what that
//! costs at a 30 s poll interval.
//!
//! Run: `cargo bench --bench drift` (20 drifts, 1,000 environments) or `cargo bench --bench drift -- 100`.

#[path = "support.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use promote::exec::{Executor, Metrics};
use promote::git::{Destination, Promotion, Writer, WriterConfig};
use promote::store::Store;
use sha2::Sha256;
use support::{bare, cpu, pct};

const SECRET: &str = "drift-bench-secret";
const TOKEN: &str = "prt_alice_drift_bench_0001";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn pipeline(envs: &[String], trigger: bool) -> String {
    let mut s = String::from("apiVersion: promote/v1\nkind: Pipeline\nname: fleet\nusers: users.yaml\n");
    if trigger {
        s.push_str("triggers:\n  - git: {provider: github, repo: acme/app, refs: [\"refs/tags/*\"]}\n    secretFile: hook.secret\n");
    }
    s.push_str("environments:\n");
    for e in envs {
        s.push_str(&format!("  {e}: {{repo: envs/{e}.git, file: k.yaml, update: {{yamlPath: image.tag}}}}\n"));
    }
    s.push_str("stages:\n  soak: {wait: {duration: 0s}}\n");
    s
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let drifts: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(if quick { 3 } else { 20 });
    let fleet = if quick { 50 } else { 1000 };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("envs")).unwrap();
    std::fs::write(root.join("hook.secret"), SECRET).unwrap();
    std::fs::write(
        root.join("users.yaml"),
        format!("users:\n  alice: {{name: Alice, email: alice@example.com, token: \"{}\"}}\n", promote::governance::users::hash_token(TOKEN)),
    )
    .unwrap();
    let key = promote::seal::Key::load_or_create(&root.join("key")).unwrap();
    let writer = Arc::new(Writer::new(WriterConfig::new(root.join("repos"))));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();

    // (1) Webhook -> alert, reject -> revert, through a server.
    bare(&root.join("envs"), "qa");
    std::fs::write(root.join("pipeline.yaml"), pipeline(&["qa".to_string()], true)).unwrap();
    let plan = promote::ops::check_file(&root.join("pipeline.yaml")).plan.expect("valid");
    let qa = Destination::of(&plan.pipeline.environments[0], root);
    let promo = |env: &str, dest: &Destination| {
        let p = Promotion {
            pipeline: "fleet",
            environment: env,
            run: "01BENCH",
            stage: "deploy",
            version: "1.1.0",
            value: "1.1.0",
            approved_by: &[],
            check: None,
            seal: Some(&key),
        };
        writer.promote(dest, &p).unwrap();
    };
    promo("qa", &qa);
    let work = root.join("work");
    git(root, &["clone", "-q", root.join("envs/qa.git").to_str().unwrap(), work.to_str().unwrap()]);
    rt.block_on(async {
        let exec = Executor {
            store: Store::open_with_key(&root.join("state.db"), key.clone()).await.unwrap(),
            writer: writer.clone(),
            metrics: Arc::new(Metrics::default()),
            poll: Duration::from_millis(200),
            public_url: None,
            directory: None,
        };
        let store = exec.store.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // The poll is an hour: only the webhook raises the drift.
        let config = promote::server::Config {
            pipelines: vec![root.to_path_buf()],
            reload: Duration::from_secs(3600),
            drift_poll: Duration::from_secs(3600),
            ..Default::default()
        };
        let server = tokio::spawn(promote::server::serve(listener, exec, config, async move {
            let _ = rx.await;
        }));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let http = promote::providers::http_client();
        let (mut alert, mut revert) = (Vec::new(), Vec::new());
        for i in 0..drifts {
            let w = work.clone();
            let head = tokio::task::spawn_blocking(move || {
                git(&w, &["pull", "-q", "--rebase", "origin", "main"]);
                std::fs::write(w.join("k.yaml"), format!("image:\n  tag: 9.9.{i}-hotfix\n")).unwrap();
                git(&w, &["-c", "user.name=Dev", "-c", "user.email=dev@example.com", "commit", "-qam", &format!("hotfix {i}")]);
                git(&w, &["push", "-q", "origin", "HEAD:main"]);
                git(&w, &["rev-parse", "HEAD"]).trim().to_string()
            })
            .await
            .unwrap();
            let body =
                serde_json::to_vec(&serde_json::json!({"ref": "refs/heads/main", "after": head, "deleted": false, "repository": {"full_name": "envs/qa"}}))
                    .unwrap();
            let mut m = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            m.update(&body);
            let sig = format!("sha256={}", hex::encode(m.finalize().into_bytes()));
            let mut sub = store.subscribe().await.unwrap();
            let t0 = Instant::now();
            let r =
                http.post(format!("{url}/hooks/github")).header("X-GitHub-Event", "push").header("X-Hub-Signature-256", sig).body(body).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 202);
            let id = loop {
                if let Some(d) = store.drifts(promote::store::DriftFilter::default()).await.unwrap().into_iter().find(|d| d.head == head) {
                    break d.id;
                }
                sub.wait(|c| c.kind == "drift", Some(promote::clock::now_ms() + 200)).await;
            };
            alert.push(t0.elapsed().as_secs_f64() * 1000.0);
            let t1 = Instant::now();
            let r =
                http.post(format!("{url}/api/v1/drifts/{id}/reject")).bearer_auth(TOKEN).json(&serde_json::json!({"reason": "bench"})).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap_or_default());
            revert.push(t1.elapsed().as_secs_f64() * 1000.0);
        }
        println!("{drifts} drifts, one after another:");
        println!("  push webhook -> drift recorded     p50 {:.1} ms, p99 {:.1} ms", pct(&mut alert, 0.5), pct(&mut alert, 0.99));
        println!("  reject (API) -> revert pushed      p50 {:.1} ms, p99 {:.1} ms", pct(&mut revert, 0.5), pct(&mut revert, 0.99));
        let _ = tx.send(());
        server.await.unwrap().unwrap();
    });

    // (2) One look at a fleet of environments.
    let fleet_dir = root.join("fleet");
    std::fs::create_dir_all(fleet_dir.join("envs")).unwrap();
    std::fs::copy(root.join("users.yaml"), fleet_dir.join("users.yaml")).unwrap();
    let envs: Vec<String> = (0..fleet).map(|i| format!("e{i}")).collect();
    let made = Instant::now();
    for e in &envs {
        bare(&fleet_dir.join("envs"), e);
    }
    std::fs::write(fleet_dir.join("pipeline.yaml"), pipeline(&envs, false)).unwrap();
    let plan = promote::ops::check_file(&fleet_dir.join("pipeline.yaml")).plan.expect("valid");
    for (i, env) in plan.pipeline.environments.iter().enumerate() {
        let dest = Destination::of(env, &fleet_dir);
        promo(&env.name.value, &dest);
        if i % 10 == 0 {
            // A commit on top nobody promoted.
            let repo = git2::Repository::open_bare(fleet_dir.join(format!("envs/{}.git", env.name.value))).unwrap();
            let parent = repo.find_reference("refs/heads/main").unwrap().peel_to_commit().unwrap();
            let blob = repo.blob(b"image:\n  tag: 6.6.6\n").unwrap();
            let mut tb = repo.treebuilder(Some(&parent.tree().unwrap())).unwrap();
            tb.insert("k.yaml", blob, 0o100644).unwrap();
            let tree = repo.find_tree(tb.write().unwrap()).unwrap();
            let sig = git2::Signature::now("Dev", "dev@example.com").unwrap();
            repo.commit(Some("refs/heads/main"), &sig, &sig, "hand edit", &tree, &[&parent]).unwrap();
        }
    }
    println!("{fleet} environments made and promoted in {:.1} s", made.elapsed().as_secs_f64());
    rt.block_on(async {
        let store = Store::open_with_key(&fleet_dir.join("state.db"), key.clone()).await.unwrap();
        for round in 0..3 {
            let (c0, t0) = (cpu(), Instant::now());
            let looked = promote::ops::drift::check(&store, &writer, &plan, &fleet_dir, None).await.unwrap();
            let (cpu_s, wall) = ((cpu() - c0).as_secs_f64(), t0.elapsed().as_secs_f64());
            let found = looked.iter().filter(|l| l.drift.is_some()).count();
            println!(
                "  look {}: {fleet} environments in {wall:.2} s wall, {cpu_s:.2} s CPU ({found} with drift): at a 30 s interval {:.1}% of one core",
                round + 1,
                cpu_s / 30.0 * 100.0
            );
        }
        store.close().await;
    });
}
