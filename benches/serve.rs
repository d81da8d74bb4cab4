//! Benchmark: a signed GitHub push webhook accepted by `promote serve` -> the promotion commit
//! pushed into the QA repo. Prints p50 and p99 over N deliveries sent one after another (each a new
//! tag), from the request being sent to the deploy stage's commit being durable, and the same for
//! the webhook's answer alone (verify, record the delivery with its run, 201).
//!
//! Run: `cargo bench --bench serve` (1,000 deliveries) or `cargo bench --bench serve -- 100`.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use promote::exec::{Executor, Metrics};
use promote::git::{Writer, WriterConfig};
use promote::store::Store;
use sha2::Sha256;

const SECRET: &str = "bench-secret";

fn git(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("git").current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(if quick { 20 } else { 1000 });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // The QA repo: a bare repo with a kustomization.
    let work = root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("k.yaml"), "images:\n  - name: registry.example.com/acme/bench\n    newTag: 0.0.0\n").unwrap();
    git(&work, &["add", "k.yaml"]);
    git(&work, &["-c", "user.name=b", "-c", "user.email=b@example.com", "commit", "-q", "-m", "initial"]);
    git(root, &["clone", "-q", "--bare", work.to_str().unwrap(), "qa.git"]);
    std::fs::write(root.join("hook.secret"), SECRET).unwrap();
    std::fs::write(
        root.join("bench.yaml"),
        "apiVersion: promote/v1\nkind: Pipeline\nname: bench\nartifact: {image: registry.example.com/acme/bench}\n\
         triggers:\n  - git: {provider: github, repo: acme/bench, refs: [\"refs/tags/v*\"]}\n    secretFile: hook.secret\n\
         environments:\n  qa: {repo: qa.git, file: k.yaml, update: {kustomizeImage: registry.example.com/acme/bench}}\n\
         stages:\n  deploy-qa: {deploy: {environment: qa}}\n",
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let exec = Executor {
            store: Store::open(&root.join("state.db")).await.unwrap(),
            writer: Arc::new(Writer::new(WriterConfig::new(root.join("repos")))),
            metrics: Arc::new(Metrics::default()),
            poll: Duration::from_millis(200),
            public_url: None,
            directory: None,
        };
        let store = exec.store.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/github", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let config = promote::server::Config { pipelines: vec![root.to_path_buf()], repos: vec![], reload: Duration::from_secs(3600), ..Default::default() };
        let server = tokio::spawn(promote::server::serve(listener, exec, config, async move {
            let _ = rx.await;
        }));
        let http = promote::providers::http_client();
        let (mut answered, mut committed) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let wall = Instant::now();
        for i in 0..n {
            let body = serde_json::to_vec(&serde_json::json!({
                "ref": format!("refs/tags/v1.0.{i}"), "after": format!("{i:040x}"), "deleted": false,
                "repository": {"full_name": "acme/bench"}
            }))
            .unwrap();
            let mut m = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            m.update(&body);
            let sig = format!("sha256={}", hex::encode(m.finalize().into_bytes()));
            let sent = Instant::now();
            let r = http
                .post(&url)
                .header("X-GitHub-Event", "push")
                .header("X-GitHub-Delivery", format!("d-{i}"))
                .header("X-Hub-Signature-256", sig)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201);
            answered.push(sent.elapsed());
            let v: serde_json::Value = r.json().await.unwrap();
            let id = v["runs"][0]["run"].as_str().unwrap().to_string();
            // Woken by the store's change feed when the deploy's result is durable.
            let mut sub = store.subscribe().await.unwrap();
            loop {
                let stages = store.stages(&id).await.unwrap();
                if stages[0].state == promote::store::StageState::Succeeded {
                    break;
                }
                let run = id.clone();
                sub.wait(move |c| c.run == run, Some(promote::clock::now_ms() + 1000)).await;
            }
            committed.push(sent.elapsed());
        }
        let wall = wall.elapsed();
        println!("deliveries            {n}, one after another, each a new tag ({:.1} s)", wall.as_secs_f64());
        println!("webhook answered      p50 {:.2} ms, p99 {:.2} ms (verify, record delivery + run, 201)", pct(&mut answered, 0.5), pct(&mut answered, 0.99));
        println!(
            "commit pushed         p50 {:.2} ms, p99 {:.2} ms (request sent -> the QA promotion commit durable)",
            pct(&mut committed, 0.5),
            pct(&mut committed, 0.99)
        );
        let _ = tx.send(());
        server.await.unwrap().unwrap();
    });
}
